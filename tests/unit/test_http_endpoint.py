"""The local model server's adapter: a server that goes away is "unavailable" (503), not a failure (502)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from shared.adapters.endpoint import HttpEndpoint
from shared.ports import EndpointUnavailable

HEADERS_THEN_GONE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 800\r\n\r\n{"


@pytest.fixture
def dying_server() -> Iterator[str]:
    """Answers one request with headers and the first byte of the body, then closes (a killed server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer_once() -> None:
        connection, _ = listener.accept()
        with connection:
            # The whole request first: closing with unread bytes sends a reset, which the client
            # would see as an unreachable server rather than an answer broken off.
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(body) < length:
                body += connection.recv(65536)
            connection.sendall(HEADERS_THEN_GONE)

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        thread.join(timeout=5)
        listener.close()


def test_a_model_server_killed_mid_answer_is_unavailable(dying_server: str) -> None:
    with pytest.raises(EndpointUnavailable, match="broke off its answer"):
        HttpEndpoint(dying_server, timeout_s=5).invoke([{"claim_id": "C1"}])


def test_a_model_server_that_is_down_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(EndpointUnavailable, match="unreachable"):
        HttpEndpoint(f"http://127.0.0.1:{port}", timeout_s=5).invoke([{"claim_id": "C1"}])
