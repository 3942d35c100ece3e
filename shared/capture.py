"""SageMaker's data capture format, written by the local model server and read by the drift job.

One JSON line per request: the request and the response as the endpoint saw them, with the
event's id and time, under ``<root>/<endpoint>/<variant>/yyyy/mm/dd/hh/``, as SageMaker writes them
to S3. Reading the same format in both places keeps the local and AWS monitors one program.
"""

from __future__ import annotations

import atexit
import base64
import csv
import hashlib
import hmac
import io
import json
import logging
import queue
import random
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal

if TYPE_CHECKING:  # annotations only: the drift job reads captures without the feature spec's imports
    from shared.feature_spec import FeatureSpec

EVENT_VERSION = "0"
log = logging.getLogger("claims_risk.capture")

try:  # orjson when present (the model server has it): the writer thread then holds the GIL ~5x less
    import orjson

    def _loads(text: str) -> Any:
        return orjson.loads(text)

    def _dumps(value: Any) -> str:
        return orjson.dumps(value).decode("utf-8")

    def _line_bytes(value: Any) -> bytes:
        """``_dumps(value) + "\\n"`` in UTF-8, without decoding and encoding again."""
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)

except ImportError:  # pragma: no cover (the standard library, for jobs without orjson)

    def _loads(text: str) -> Any:
        return json.loads(text)

    def _dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    def _line_bytes(value: Any) -> bytes:
        return (_dumps(value) + "\n").encode("utf-8")


def _encoding(content_type: str) -> str:
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media in {"application/json", "application/jsonlines"}:
        return "JSON"
    if media == "text/csv":
        return "CSV"
    return "BASE64"


def _encoded(body: bytes, content_type: str) -> tuple[str, str]:
    encoding = _encoding(content_type)
    if encoding == "BASE64":
        return base64.b64encode(body).decode("ascii"), encoding
    return body.decode("utf-8", errors="replace"), encoding


def capture_record(
    request: bytes,
    request_type: str,
    response: bytes,
    response_type: str,
    *,
    event_id: str,
    when: datetime,
) -> dict[str, Any]:
    """One exchange as a capture line's JSON object."""
    input_data, input_encoding = _encoded(request, request_type)
    output_data, output_encoding = _encoded(response, response_type)
    return {
        "captureData": {
            "endpointInput": {
                "observedContentType": request_type,
                "mode": "INPUT",
                "data": input_data,
                "encoding": input_encoding,
            },
            "endpointOutput": {
                "observedContentType": response_type,
                "mode": "OUTPUT",
                "data": output_data,
                "encoding": output_encoding,
            },
        },
        "eventMetadata": {
            "eventId": event_id,
            "inferenceTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        },
        "eventVersion": EVENT_VERSION,
    }


def capture_folder(root: Path, endpoint: str, variant: str, when: datetime) -> Path:
    """Where SageMaker would put the exchange: one folder an hour."""
    return root / endpoint / variant / when.astimezone(UTC).strftime("%Y/%m/%d/%H")


@dataclass(frozen=True)
class CapturedExchange:
    event_id: str
    inference_time: str
    request: bytes
    request_type: str
    response: bytes
    response_type: str


def _decoded(part: dict[str, Any]) -> bytes:
    data = str(part.get("data", ""))
    if part.get("encoding") == "BASE64":
        return base64.b64decode(data)
    return data.encode("utf-8")


def parse_capture_line(line: str) -> CapturedExchange:
    """One capture line; raises ValueError when it is not in SageMaker's capture format."""
    try:
        row = json.loads(line)
        data = row["captureData"]
        request, response = data["endpointInput"], data.get("endpointOutput", {})
        return CapturedExchange(
            event_id=str(row.get("eventMetadata", {}).get("eventId", "")),
            inference_time=str(row.get("eventMetadata", {}).get("inferenceTime", "")),
            request=_decoded(request),
            request_type=str(request.get("observedContentType", "")),
            response=_decoded(response),
            response_type=str(response.get("observedContentType", "")),
        )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not a data capture line: {error}") from error


def iter_capture_files(root: Path) -> Iterator[Path]:
    """Capture files under ``root`` in time order (their folders are yyyy/mm/dd/hh)."""
    yield from sorted(p for p in root.rglob("*.jsonl") if p.is_file())


# --- Capture policy: sampling and personal fields --------------------------------------------------

PiiMode = Literal["drop", "pseudonymize"]
PII_MODES: Final[tuple[str, ...]] = ("drop", "pseudonymize")
PSEUDONYM_PREFIX: Final = "pii:"


@dataclass(frozen=True)
class CapturePolicy:
    """Which exchanges are kept (a percentage, as SageMaker samples) and what of a request is kept.

    Capture is by allow-list: only ``raw_fields`` (the spec's non-personal model inputs and the
    claim id, :func:`captured_fields`) are kept as sent, and only when the value is a plain value.
    Personal fields are dropped or pseudonymized (``pii``). Anything else (a key the spec does not
    know, a nested value, another top-level key beside ``instances``) is dropped in both modes: its
    name or contents may be personal, and nothing downstream reads it. ``raw_fields=None`` keeps
    every non-personal field: only for captures made without a spec (tests of the format).
    """

    percent: float = 100.0
    pii: PiiMode = "drop"
    key: bytes = b""
    personal_fields: frozenset[str] = frozenset()
    raw_fields: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.percent <= 100:
            raise ValueError(f"capture percent must be within 0..100, got {self.percent}")
        if self.pii not in PII_MODES:
            raise ValueError(f"personal fields are dropped or pseudonymized, not {self.pii!r}")
        if self.pii == "pseudonymize" and not self.key:
            # A random key would change every token on each restart: tokens could no longer be matched.
            raise ValueError("pseudonymizing personal fields needs a key (CLAIMS_RISK_CAPTURE_KEY)")


def personal_fields(spec: FeatureSpec) -> frozenset[str]:
    """Free text (it may name people) and protected attributes (gender, age, ...), as the spec marks them."""
    from shared.feature_spec import ColumnKind, ColumnRole

    return frozenset(
        c.name for c in spec.columns if c.kind == ColumnKind.TEXT or c.role == ColumnRole.PROTECTED
    )


def captured_fields(spec: FeatureSpec, personal: frozenset[str] | None = None) -> frozenset[str]:
    """What a capture keeps as sent: the id and the model's inputs, without the personal fields."""
    from shared.feature_spec import ColumnRole

    kept_roles = {ColumnRole.ID, ColumnRole.FEATURE, ColumnRole.CONTEXT}
    personal = personal_fields(spec) if personal is None else personal
    return frozenset(c.name for c in spec.columns if c.role in kept_roles and c.name not in personal)


def pseudonym(value: Any, key: bytes) -> str:
    """A keyed hash of the value: equal values give equal tokens under one key; without it, no way back."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:32]  # 128 bits: no collisions at any capture volume


def _kept_raw(name: str, policy: CapturePolicy) -> bool:
    return name not in policy.personal_fields and (policy.raw_fields is None or name in policy.raw_fields)


def redact_claim(claim: Mapping[str, Any], policy: CapturePolicy) -> dict[str, Any]:
    """The claim's allow-listed fields as sent, its personal fields dropped or pseudonymized."""
    # _kept_raw's test and the plain-value test written inline: this runs for every field of every
    # captured claim.
    personal, raw, pseudonymize = policy.personal_fields, policy.raw_fields, policy.pii == "pseudonymize"
    kept: dict[str, Any] = {}
    for name, value in claim.items():
        if name in personal:
            if pseudonymize:
                kept[name] = None if value is None else pseudonym(value, policy.key)
        elif (raw is None or name in raw) and (value is None or isinstance(value, str | int | float | bool)):
            kept[name] = value
    return kept


def claims_in(payload: Any) -> list[Any]:
    """The claims of a JSON body in every shape the model server reads (see
    :func:`shared.payloads.parse_records`): ``{"instances": [...]}``, ``{"instances": {...}}``, a list
    or one object."""
    if isinstance(payload, dict) and "instances" in payload:
        payload = payload["instances"]
    return payload if isinstance(payload, list) else [payload]


def _redact_json(payload: Any, policy: CapturePolicy) -> dict[str, Any]:
    """Always ``{"instances": [...]}``, whatever the shape sent: a shape the redaction did not
    expect can then never carry a field past it."""
    return {"instances": [redact_claim(c, policy) for c in claims_in(payload) if isinstance(c, dict)]}


def _redact_csv(text: str, policy: CapturePolicy, csv_columns: Sequence[str]) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    header = list(csv_columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # A header row is recognised as the model server recognises it: its first cell is the id column.
    has_header = bool(rows and csv_columns and rows[0] and rows[0][0].strip() == csv_columns[0])
    if has_header:
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
        # A column the spec does not know keeps its place (the server reads by position) but not its
        # name, which could be anything.
        writer.writerow([n if n in policy.personal_fields or _kept_raw(n, policy) else "" for n in header])
    for row in rows:
        writer.writerow([_csv_cell(name, cell, policy) for name, cell in zip(header, row, strict=False)])
    return out.getvalue()


def _csv_cell(name: str, cell: str, policy: CapturePolicy) -> str:
    """Cells beyond the header are dropped by the caller; a dropped cell is emptied, not removed,
    because CSV without a header is read by position."""
    if name in policy.personal_fields:
        return "" if policy.pii == "drop" or cell == "" else pseudonym(cell, policy.key)
    return cell if _kept_raw(name, policy) else ""


def redact_body(
    body: bytes, content_type: str, policy: CapturePolicy, csv_columns: Sequence[str] = ()
) -> bytes | None:
    """The request body with its personal fields handled, in its own format; None when it cannot be read
    (an unreadable body might hold anything, so it is not captured)."""
    if not policy.personal_fields and policy.raw_fields is None:
        return body
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
        if media == "application/json":
            return _dumps(_redact_json(_loads(text), policy)).encode("utf-8")
        if media in {"application/jsonlines", "application/x-jsonlines", "application/jsonl"}:
            records = [_loads(x) for x in text.splitlines() if x.strip()]
            lines = [_dumps(redact_claim(r, policy)) for r in records if isinstance(r, dict)]
            return ("\n".join(lines) + "\n").encode()
        if media == "text/csv":
            return _redact_csv(text, policy, csv_columns).encode()
    except (UnicodeDecodeError, ValueError, csv.Error):  # JSON decode errors are ValueErrors
        return None
    return None


def redact(
    record: dict[str, Any], policy: CapturePolicy, csv_columns: Sequence[str] = ()
) -> dict[str, Any] | None:
    """A capture record (see :func:`capture_record`) with the request's personal fields handled."""
    endpoint_input = record["captureData"]["endpointInput"]
    request_type = str(endpoint_input.get("observedContentType", ""))
    body = redact_body(_decoded(endpoint_input), request_type, policy, csv_columns)
    if body is None:
        return None
    data, encoding = _encoded(body, request_type)
    endpoint_input = {**endpoint_input, "data": data, "encoding": encoding}
    return {**record, "captureData": {**record["captureData"], "endpointInput": endpoint_input}}


# --- The writer: sampling and encoding on the caller's thread, writing on a background thread ------

# The writer thread lets lines gather for this long after a first one, then writes them all and
# flushes once. Woken per exchange (and encoding it there), it took the GIL from the request thread
# at every request and made a write and a flush syscall each: about 0.2 ms of the server's CPU a
# request.
GATHER_S: Final = 0.05
# More lines than this waiting cut the gathering short, so a burst is not held in memory for long.
GATHER_MAX: Final = 512
_FOLDERS_KEPT: Final = 64  # hours x endpoints whose folder is remembered


@dataclass(frozen=True, slots=True)
class _Line:
    """An exchange's capture line, encoded, and the hour's folder it goes to."""

    folder: Path
    when: datetime  # names the hour's file when its line is the first there
    data: bytes


_STOP: Final = object()


class CaptureWriter:
    """Appends sampled exchanges in the capture format under ``root``, one file per hour and process.

    :meth:`submit` decides the sample, redacts and encodes the exchange on the caller's thread (about
    15 µs; the model server calls it once its answer is on its way) and queues the line. A
    background thread writes what gathered in a short window (:data:`GATHER_S`) at once, whole lines
    only, and flushes after each window: readers see an exchange on disk within about that window.
    The thread only joins and writes bytes, so it holds the GIL for moments, never across a request.
    :meth:`flush` and :meth:`close` do not wait for the window.
    """

    def __init__(
        self,
        root: Path,
        policy: CapturePolicy,
        *,
        variant: str = "AllTraffic",
        csv_columns: Sequence[str] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.root, self.policy, self.variant = root, policy, variant
        self.csv_columns = list(csv_columns)
        self._threshold = policy.percent / 100.0
        self._rng = rng or random.Random()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._hurry = threading.Event()  # set by flush() and close(): stop gathering, write now
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._folders: dict[tuple[str, int, int, int, int], Path] = {}
        self._files: dict[Path, BinaryIO] = {}
        self._file_id = uuid.uuid4().hex[:12]
        self.written = 0
        self.skipped = 0  # bodies that could not be redacted

    def sampled(self) -> bool:
        if self._threshold >= 1.0:
            return True
        return self._threshold > 0.0 and self._rng.random() < self._threshold

    def submit(
        self,
        endpoint: str,
        request: bytes,
        request_type: str,
        response: bytes,
        response_type: str,
        when: datetime | None = None,
    ) -> bool:
        """Encode and queue the exchange if the sample keeps it; whether it was kept (a body that
        cannot be redacted is kept by the sample but not captured: it might hold anything)."""
        if not self.sampled():
            return False
        when = when or datetime.now(UTC)
        try:
            data = self._encode(request, request_type, response, response_type, when)
        except ValueError:
            log.exception("data capture: an exchange could not be encoded")
            return True
        if data is None:
            self.skipped += 1
            return True
        if self._thread is None:
            self._start()
        self._queue.put(_Line(self._folder(endpoint, when), when, data))
        if self._queue.qsize() > GATHER_MAX:
            self._hurry.set()
        return True

    def flush(self, timeout_s: float = 10.0) -> None:
        """Returns once everything submitted so far is on disk."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(done)
        self._hurry.set()
        done.wait(timeout_s)

    def close(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            self._hurry.set()
            thread.join(timeout=10)

    def _encode(
        self, request: bytes, request_type: str, response: bytes, response_type: str, when: datetime
    ) -> bytes | None:
        """The exchange's capture line in UTF-8, None when its request cannot be redacted."""
        record = capture_record(
            request, request_type, response, response_type, event_id=str(uuid.uuid4()), when=when
        )
        redacted = redact(record, self.policy, self.csv_columns)
        return None if redacted is None else _line_bytes(redacted)

    def _folder(self, endpoint: str, when: datetime) -> Path:
        """:func:`capture_folder`, remembered per endpoint and hour (building the path cost more
        than the rest of queueing)."""
        utc = when.astimezone(UTC)
        key = (endpoint, utc.year, utc.month, utc.day, utc.hour)
        folder = self._folders.get(key)
        if folder is None:
            if len(self._folders) >= _FOLDERS_KEPT:
                self._folders.clear()
            folder = self._folders[key] = capture_folder(self.root, endpoint, self.variant, when)
        return folder

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="data-capture", daemon=True)
                self._thread.start()
                atexit.register(self.close)  # lines still queued at exit are written, not lost

    def _run(self) -> None:
        try:
            while True:
                items = [self._queue.get()]  # asleep until there is something to do
                if isinstance(items[0], _Line):
                    self._hurry.wait(GATHER_S)  # not woken by the puts meanwhile: they only queue
                # Cleared before draining: a flush() or close() item queued before the clear is taken
                # now, one queued after it sets the event again and cuts the next wait short.
                self._hurry.clear()
                items += self._drain()
                if not self._handle(items):
                    return
        finally:
            for handle in self._files.values():
                handle.close()
            self._files.clear()

    def _drain(self) -> list[object]:
        items: list[object] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _handle(self, items: list[object]) -> bool:
        """Write the lines in order, answering a flush where it was asked; False at the stop."""
        run: list[_Line] = []
        for item in items:
            if isinstance(item, _Line):
                run.append(item)
                continue
            self._write_all(run)
            run = []
            if item is _STOP:
                return False
            if isinstance(item, threading.Event):
                self._flush_files()
                item.set()
        self._write_all(run)
        self._flush_files()  # readers see whole lines as soon as the window is written
        return True

    def _write_all(self, lines: list[_Line]) -> None:
        """The lines, in order, each hour's run of them in one write."""
        start = 0
        for end in range(1, len(lines) + 1):
            if end == len(lines) or lines[end].folder != lines[start].folder:
                # Written before another hour's file is opened, which closes this one.
                self._append(lines[start], [line.data for line in lines[start:end]])
                start = end

    def _append(self, first: _Line, data: list[bytes]) -> None:
        try:
            handle = self._files.get(first.folder)
            if handle is None:
                # A new hour: the previous hour's file is finished, as SageMaker rolls its files.
                for old in self._files.values():
                    old.close()
                self._files.clear()
                first.folder.mkdir(parents=True, exist_ok=True)
                name = first.when.astimezone(UTC).strftime("%M-%S-%f")[:-3] + f"-{self._file_id}.jsonl"
                handle = self._files[first.folder] = (first.folder / name).open("ab")
            handle.write(b"".join(data))
        except OSError:
            log.exception("data capture: %d exchanges could not be written", len(data))
            return
        self.written += len(data)

    def _flush_files(self) -> None:
        for handle in self._files.values():
            handle.flush()


def capture_policy_from_env(spec: FeatureSpec | None = None) -> CapturePolicy:
    """The policy :class:`shared.settings.CaptureSettings` reads: ``CLAIMS_RISK_CAPTURE_PERCENT``
    (default 100), ``CLAIMS_RISK_CAPTURE_PII`` (drop|pseudonymize, default drop),
    ``CLAIMS_RISK_CAPTURE_KEY`` and ``CLAIMS_RISK_CAPTURE_PII_FIELDS`` (comma-separated; default: the
    spec's text and protected columns). A bad value raises ValueError naming its variable."""
    from shared.settings import CaptureSettings  # here: readers of captures (the drift job) skip it

    settings = CaptureSettings.load()
    personal = settings.personal_field_names()
    if personal is None:
        personal = personal_fields(spec) if spec is not None else frozenset()
    return CapturePolicy(
        percent=settings.percent,
        pii=settings.pii,
        key=settings.key.get_secret_value().encode("utf-8"),
        personal_fields=personal,
        raw_fields=captured_fields(spec, personal) if spec is not None else None,
    )
