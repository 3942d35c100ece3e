"""The capture writer writes what gathered in a short window at once: every exchange still reaches
the disk, whole and in order, flush() and close() do not wait for the window, and an hour's file is
finished before the next hour's is opened."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared import capture
from shared.capture import CapturePolicy, CaptureWriter, iter_capture_files, parse_capture_line

RESPONSE = b'{"predictions":[{"claim_id":"C-1","risk_level":"low"}]}'


def body(number: int) -> bytes:
    return json.dumps({"instances": [{"claim_id": f"C-{number}", "claim_amount": 1000 + number}]}).encode()


def captured_ids(root: Path) -> list[str]:
    ids = []
    for path in iter_capture_files(root):
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n")  # whole lines only
        for line in text.splitlines():
            exchange = parse_capture_line(line)
            ids.append(json.loads(exchange.request)["instances"][0]["claim_id"])
    return ids


def submit(writer: CaptureWriter, numbers: range, when: datetime | None = None) -> None:
    for n in numbers:
        writer.submit("claims-risk", body(n), "application/json", RESPONSE, "application/json", when=when)


@pytest.fixture
def long_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window far longer than flush()'s own timeout: only an early wake-up can pass these tests."""
    monkeypatch.setattr(capture, "GATHER_S", 60.0)


@pytest.mark.usefixtures("long_window")
def test_flush_writes_everything_submitted_without_waiting_for_the_window(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, CapturePolicy())
    submit(writer, range(100))
    writer.flush(timeout_s=10)
    assert captured_ids(tmp_path) == [f"C-{n}" for n in range(100)]
    submit(writer, range(100, 150))
    writer.flush(timeout_s=10)
    assert captured_ids(tmp_path) == [f"C-{n}" for n in range(150)]
    assert writer.written == 150
    writer.close()


@pytest.mark.usefixtures("long_window")
def test_close_writes_what_is_still_queued(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, CapturePolicy())
    submit(writer, range(1000))
    writer.close()
    assert writer._thread is not None and not writer._thread.is_alive()
    assert captured_ids(tmp_path) == [f"C-{n}" for n in range(1000)]


def test_lines_reach_the_disk_after_the_window_without_a_flush(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, CapturePolicy())
    submit(writer, range(20))
    deadline = time.monotonic() + 10  # the window is 50 ms; generous for a loaded machine
    while len(captured_ids(tmp_path)) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert captured_ids(tmp_path) == [f"C-{n}" for n in range(20)]
    writer.close()


@pytest.mark.usefixtures("long_window")
def test_a_window_across_hours_goes_to_each_hours_file_in_order(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, CapturePolicy())
    first = datetime(2026, 3, 1, 9, 59, 58, tzinfo=UTC)
    submit(writer, range(3), when=first)
    submit(writer, range(3, 6), when=first + timedelta(seconds=5))  # the next hour
    submit(writer, range(6, 8), when=first)  # late ones of the earlier hour: a new file there
    writer.close()
    files = list(iter_capture_files(tmp_path))
    hours = sorted({p.parent.relative_to(tmp_path).as_posix() for p in files})
    assert hours == ["claims-risk/AllTraffic/2026/03/01/09", "claims-risk/AllTraffic/2026/03/01/10"]
    assert sorted(captured_ids(tmp_path)) == sorted(f"C-{n}" for n in range(8))
    by_file: dict[str, list[str]] = {p.parent.name: [] for p in files}
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            by_file[path.parent.name].append(
                json.loads(parse_capture_line(line).request)["instances"][0]["claim_id"]
            )
    assert by_file["10"] == ["C-3", "C-4", "C-5"]
    assert by_file["09"] == ["C-0", "C-1", "C-2", "C-6", "C-7"]


@pytest.mark.usefixtures("long_window")
def test_a_long_burst_is_written_without_waiting_for_the_window(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, CapturePolicy())
    submit(writer, range(capture.GATHER_MAX + 10))  # more than a window holds: written at once
    deadline = time.monotonic() + 10
    while len(captured_ids(tmp_path)) < capture.GATHER_MAX and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(captured_ids(tmp_path)) >= capture.GATHER_MAX
    writer.close()
    assert captured_ids(tmp_path) == [f"C-{n}" for n in range(capture.GATHER_MAX + 10)]


def test_each_line_is_the_redacted_capture_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window changes when lines are written, not what they say: each is the JSON of
    redact(capture_record(...)), personal fields handled, and a newline."""
    ids = iter(uuid.UUID(int=n) for n in range(1000))
    monkeypatch.setattr(uuid, "uuid4", lambda: next(ids))  # the module the writer calls
    policy = CapturePolicy(
        personal_fields=frozenset({"description"}), raw_fields=frozenset({"claim_id", "claim_amount"})
    )
    when = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
    writer = CaptureWriter(tmp_path, policy)  # its file id took the first uuid
    sent = [
        json.dumps(
            {"instances": [{"claim_id": f"C-{n}", "claim_amount": n, "description": "Jane", "x": [1]}]}
        ).encode()
        for n in range(30)
    ]
    for request in sent:
        writer.submit("claims-risk", request, "application/json", RESPONSE, "application/json", when=when)
    writer.close()
    [path] = iter_capture_files(tmp_path)
    expected = b""
    for n, request in enumerate(sent, start=1):
        record = capture.capture_record(
            request,
            "application/json",
            RESPONSE,
            "application/json",
            event_id=str(uuid.UUID(int=n)),
            when=when,
        )
        redacted = capture.redact(record, policy)
        assert redacted is not None
        expected += (json.dumps(redacted, separators=(",", ":")) + "\n").encode("utf-8")
    assert path.read_bytes() == expected
    assert b"Jane" not in expected and b'"x"' not in expected
