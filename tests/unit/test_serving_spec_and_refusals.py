"""Whose spec a dropped CSV's header is checked against (the serving model's), and the note a refused
file's sender gets under rejected/; the domain with fakes, the publish step on a local store."""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from shared.adapters.artifacts import LocalArtifactStore, S3ArtifactStore
from shared.batch_jobs import (
    REFUSAL_NOTE,
    BatchSettings,
    ClaimsFile,
    NotAClaimsFile,
    claims_format,
    inspect_claims_file,
    refusal_note,
    refusal_note_uri,
    serving_spec,
    write_refusal_note,
)
from shared.feature_spec import (
    ColumnKind,
    ColumnRole,
    ColumnSpec,
    FeatureSpec,
    TargetSpec,
    claims_spec,
)
from shared.ports import TransformJobError
from tests.factories import minimal_claim

BUCKET = "claims-drop"
SETTINGS = BatchSettings()
SPEC_URI = f"s3://{BUCKET}/models/current/feature_spec.json"
AT = dt.datetime(2026, 11, 2, 10, 30, 5, tzinfo=dt.UTC)


def fleet_spec() -> FeatureSpec:
    """A bring-your-own-data spec: it shares claim_amount with the claims spec, but requires columns
    the claims spec does not have, so a claims header names one of its columns and lacks others."""
    return FeatureSpec(
        name="fleet_claims",
        version="2",
        id_column="policy_number",
        target=TargetSpec(column="fraud_reported", positive=["Y"], negative=["N"]),
        columns=[
            ColumnSpec(name="policy_number", kind=ColumnKind.IDENTIFIER, role=ColumnRole.ID, required=True),
            ColumnSpec(name="claim_amount", kind=ColumnKind.NUMERIC, required=True, minimum=0),
            ColumnSpec(name="vehicle_count", kind=ColumnKind.INTEGER, required=True, minimum=1),
            ColumnSpec(name="region", kind=ColumnKind.CATEGORICAL),
        ],
    )


FLEET_HEADER = ["vehicle_count", "region", "policy_number", "claim_amount"]  # not the spec's order
FLEET_CSV = (",".join(FLEET_HEADER) + "\n3,north,POL-1,1200\n").encode()
CLAIMS_HEADER = list(minimal_claim())
CLAIMS_CSV = (",".join(CLAIMS_HEADER) + "\n" + ",".join(str(v) for v in minimal_claim().values())).encode()
# A claims header names one fleet column of seven: another spec's file, refused naming what differs.
FLEET_REFUSAL = (
    "not a claims file: the header does not fit spec 'fleet_claims': 6 of its 7 columns are not in the "
    "spec (a file for another spec?); missing required columns: policy_number, vehicle_count; missing "
    "optional columns: region; unexpected columns: claim_id, claim_type, customer_age, policy_tenure, "
    "claim_history, location"
)


@dataclass
class FakeStore:
    """An :class:`shared.ports.ArtifactStore` in memory; reads and writes are recorded."""

    objects: dict[str, bytes] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    fail_with: Exception | None = None

    def read_bytes(self, uri: str) -> bytes:
        self.reads.append(uri)
        if self.fail_with is not None:
            raise self.fail_with
        if uri not in self.objects:
            raise FileNotFoundError(uri)
        return self.objects[uri]

    def read_json(self, uri: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.read_bytes(uri))
        return document

    def read_tar_member(self, uri: str, name: str) -> bytes:
        raise NotImplementedError

    def write_json(self, uri: str, document: Mapping[str, Any]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.objects[uri] = json.dumps(document).encode()

    def copy(self, source: str, target: str) -> None:
        self.objects[target] = self.objects[source]

    def write_bytes(self, uri: str, body: bytes) -> None:
        self.objects[uri] = body

    def exists_under(self, prefix_uri: str) -> bool:
        return any(uri.startswith(prefix_uri) for uri in self.objects)


@dataclass
class FakeHeads:
    body: bytes

    def read_head(self, bucket: str, key: str, version_id: str | None, limit: int) -> bytes:
        return self.body[:limit]


def inspect(body: bytes, spec: Any, key: str = "incoming/2026/11/a.csv") -> ClaimsFile | NotAClaimsFile:
    return inspect_claims_file(
        BUCKET, key, len(body), "v1", settings=SETTINGS, heads=FakeHeads(body), spec=spec
    )


# ---------------------------------------------------------------------------------------------
# The serving model's spec.


def test_the_published_spec_of_the_serving_model_is_read() -> None:
    store = FakeStore({SPEC_URI: fleet_spec().to_json().encode()})
    found = serving_spec(store, SPEC_URI)
    assert found.spec == fleet_spec() and found.published_at == SPEC_URI


def test_without_a_published_spec_or_a_location_the_default_claims_spec_applies() -> None:
    store = FakeStore()
    assert serving_spec(store, SPEC_URI).spec == claims_spec()
    assert serving_spec(store, SPEC_URI).published_at is None
    assert serving_spec(store, None).spec == claims_spec()
    assert store.reads == [SPEC_URI, SPEC_URI], "no location configured: nothing is read"


def test_a_spec_that_cannot_be_read_now_or_is_no_spec_fails_rather_than_guess() -> None:
    with pytest.raises(TransformJobError, match=r"could not read the serving model's spec .*: throttled"):
        serving_spec(FakeStore(fail_with=RuntimeError("throttled")), SPEC_URI)
    with pytest.raises(TransformJobError, match="is not a feature spec"):
        serving_spec(FakeStore({SPEC_URI: b'{"name": "half a spec"}'}), SPEC_URI)


def test_a_header_of_the_serving_spec_is_accepted_with_its_column_order() -> None:
    found = inspect(FLEET_CSV, fleet_spec())
    assert found == ClaimsFile(found.format, tuple(FLEET_HEADER))  # type: ignore[union-attr]


def test_a_claims_spec_header_is_refused_against_another_serving_spec() -> None:
    found = inspect(CLAIMS_CSV, fleet_spec())
    assert isinstance(found, NotAClaimsFile) and found.refused
    assert found.reason == FLEET_REFUSAL
    assert found.spec == fleet_spec(), "the refusal names the spec it was checked against"
    # The same files against the default claims spec: the other way round.
    assert isinstance(inspect(CLAIMS_CSV, None), ClaimsFile)
    refused = inspect(FLEET_CSV, None)
    assert isinstance(refused, NotAClaimsFile) and refused.refused and refused.spec == claims_spec()


def test_the_spec_is_loaded_for_a_csv_only() -> None:
    calls: list[str] = []

    def load() -> FeatureSpec:
        calls.append("load")
        return fleet_spec()

    for key in ("incoming/a.jsonl", "incoming/a.parquet", "incoming/readme.txt"):
        inspect(b'{"policy_number": "POL-1"}\n', load, key=key)
    assert calls == []
    assert isinstance(inspect(FLEET_CSV, load), ClaimsFile)
    assert calls == ["load"]


def test_the_drop_folder_refuses_the_same_headers_with_the_same_words() -> None:
    """Locally the loaded model's spec checks the header (shared.ml.batch_scoring.read_chunks is given
    ``model.spec``); with the same spec both sides accept and refuse alike."""
    from shared.ml.batch_scoring import BatchFileError, csv_header

    assert csv_header(FLEET_CSV.splitlines()[0], fleet_spec()) == (FLEET_HEADER, True)
    with pytest.raises(BatchFileError) as local:
        csv_header(CLAIMS_CSV.splitlines()[0], fleet_spec())
    refused = inspect(CLAIMS_CSV, fleet_spec())
    assert isinstance(refused, NotAClaimsFile)
    assert refused.reason == f"not a claims file: {local.value}"


# ---------------------------------------------------------------------------------------------
# The refusal note.


def test_the_note_lies_where_the_files_rejected_rows_would_go() -> None:
    key = "incoming/2026/11/claims batch+1.csv"
    assert (
        refusal_note_uri(BUCKET, key, SETTINGS)
        == f"s3://{BUCKET}/rejected/2026/11/claims batch+1.csv/refused.json"
    )
    assert REFUSAL_NOTE == "refused.json"
    custom = BatchSettings(incoming_prefix="drop/in/", rejected_prefix="drop-out/rejected/")
    assert (
        refusal_note_uri(BUCKET, "drop/in/a.csv", custom)
        == f"s3://{BUCKET}/drop-out/rejected/a.csv/refused.json"
    )


def test_the_note_names_the_version_the_reason_the_spec_and_the_time() -> None:
    refused = inspect(CLAIMS_CSV, fleet_spec())
    assert isinstance(refused, NotAClaimsFile)
    note = refusal_note(refused, "v1", at=AT)
    assert note == {
        "file": "a.csv",
        "source": f"s3://{BUCKET}/incoming/2026/11/a.csv",
        "version_id": "v1",
        "state": "refused",
        "reason": FLEET_REFUSAL,
        "refused_at": "2026-11-02T10:30:05+00:00",
        "kept": "the file stays where it was dropped; drop a corrected file to score it",
        "spec": {"name": "fleet_claims", "version": "2"},
    }
    assert json.loads(json.dumps(note)) == note


def test_writing_the_note_goes_through_the_store_and_a_failure_is_a_retryable_error() -> None:
    refused = inspect(CLAIMS_CSV, fleet_spec())
    assert isinstance(refused, NotAClaimsFile)
    store = FakeStore()
    uri = write_refusal_note(store, refused, "v1", settings=SETTINGS, at=AT)
    assert uri == f"s3://{BUCKET}/rejected/2026/11/a.csv/refused.json"
    assert json.loads(store.objects[uri])["reason"] == FLEET_REFUSAL
    with pytest.raises(TransformJobError, match=r"could not write the refusal note .*refused\.json: denied"):
        write_refusal_note(
            FakeStore(fail_with=PermissionError("denied")), refused, "v1", settings=SETTINGS, at=AT
        )


def test_a_parquet_file_too_large_to_send_whole_is_refused_not_ignored() -> None:
    found = claims_format(BUCKET, "incoming/big.parquet", 7 * 1024 * 1024, settings=SETTINGS)
    assert isinstance(found, NotAClaimsFile) and found.refused and found.spec is None
    assert "exceeds the 6 MB payload limit" in found.reason
    assert "spec" not in refusal_note(found, "v3", at=AT)


def test_a_key_whose_note_would_not_fit_is_skipped_as_too_long() -> None:
    # The rejected folder's URI fits SageMaker's 1024 characters, the note's does not.
    key = "incoming/" + "x" * (1024 - len(f"s3://{BUCKET}/rejected/") - len("/") - 4 - 2) + ".csv"
    assert len(f"s3://{BUCKET}/rejected/{key.removeprefix('incoming/')}/") <= 1024
    assert len(refusal_note_uri(BUCKET, key, SETTINGS)) > 1024
    found = claims_format(BUCKET, key, 10, settings=SETTINGS)
    assert isinstance(found, NotAClaimsFile) and not found.refused and "key too long" in found.reason


# ---------------------------------------------------------------------------------------------
# The deploy step publishes the serving model's spec beside its card.


def model_archive(path: Path, *, spec: bytes | None) -> str:
    manifest = {"model_version": "v9", "family": "xgboost", "threshold": 0.3}
    members = [("v9/model.ubj", b"x" * 10), ("v9/manifest.json", json.dumps(manifest).encode())]
    if spec is not None:
        members.append(("v9/feature_spec.json", spec))
    with tarfile.open(path, "w:gz") as archive:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return str(path)


def publish(tmp_path: Path, archive: str, *, with_spec: bool = True) -> dict[str, Any]:
    from shared.pipeline_tasks import PublishCardTask, run_publish_card

    current = tmp_path / "models" / "current"
    payload = {
        "model": archive,
        "card": str(current / "manifest.json"),
        "champion": str(current / "model.tar.gz"),
        **({"spec": str(current / "feature_spec.json")} if with_spec else {}),
    }
    return run_publish_card(PublishCardTask.model_validate(payload), LocalArtifactStore())


def test_publish_card_writes_the_models_spec_beside_the_card(tmp_path: Path) -> None:
    archive = model_archive(tmp_path / "model.tar.gz", spec=fleet_spec().to_json().encode())
    answer = publish(tmp_path, archive)
    current = tmp_path / "models" / "current"
    assert answer["spec"] == str(current / "feature_spec.json")
    assert FeatureSpec.model_validate_json((current / "feature_spec.json").read_bytes()) == fleet_spec()
    assert json.loads((current / "manifest.json").read_text())["model_version"] == "v9"
    # What the trigger then checks headers against.
    found = serving_spec(LocalArtifactStore(), str(current / "feature_spec.json"))
    assert found.spec == fleet_spec()


def test_an_archive_without_a_spec_publishes_the_default_one_so_no_older_spec_stays(tmp_path: Path) -> None:
    current = tmp_path / "models" / "current"
    current.mkdir(parents=True)
    (current / "feature_spec.json").write_text(fleet_spec().to_json())  # an earlier model's
    publish(tmp_path, model_archive(tmp_path / "model.tar.gz", spec=None))
    assert FeatureSpec.model_validate_json((current / "feature_spec.json").read_bytes()) == claims_spec()


def test_an_archive_with_a_broken_spec_publishes_nothing(tmp_path: Path) -> None:
    archive = model_archive(tmp_path / "model.tar.gz", spec=b'{"name": "broken"}')
    with pytest.raises(ValueError, match=r"the feature_spec\.json in .* is not a feature spec"):
        publish(tmp_path, archive)
    assert not (tmp_path / "models").exists(), "neither card, champion nor spec"


def test_a_payload_without_the_spec_location_publishes_the_card_only(tmp_path: Path) -> None:
    publish(tmp_path, model_archive(tmp_path / "model.tar.gz", spec=b"{}"), with_spec=False)
    current = tmp_path / "models" / "current"
    assert (current / "manifest.json").is_file() and not (current / "feature_spec.json").exists()


def test_the_spec_key_is_defined_once_beside_the_card_and_the_state_machine_passes_it() -> None:
    from shared.ml.model import SPEC_FILE
    from shared.pipeline_tasks import SPEC_FILE as TASKS_SPEC_FILE
    from step_functions.state_machine import (
        MODEL_CARD_KEY,
        MODEL_SPEC_KEY,
        DeploymentGuardrails,
        definition,
    )

    assert TASKS_SPEC_FILE == SPEC_FILE
    assert MODEL_SPEC_KEY == MODEL_CARD_KEY.rsplit("/", 1)[0] + "/" + SPEC_FILE
    guardrails = DeploymentGuardrails(10, 300, 600, ("a",), "ml.m5.large", 1, 20)
    payload = definition(guardrails)["States"]["deploy: model card"]["Parameters"]["Payload"]
    assert payload["spec"] == "s3://${DataBucket}/" + MODEL_SPEC_KEY


# ---------------------------------------------------------------------------------------------
# S3 answers a missing key with 403 to a caller who may not list: absent, not an error.


def stubbed_store() -> tuple[S3ArtifactStore, Stubber]:
    client = boto3.client(
        "s3", region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return S3ArtifactStore(client), Stubber(client)


def test_access_denied_on_a_key_that_is_not_listed_reads_as_absent() -> None:
    store, stub = stubbed_store()
    key = "models/current/feature_spec.json"
    with stub:
        stub.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
        stub.add_response("list_objects_v2", {"KeyCount": 0}, {"Bucket": BUCKET, "Prefix": key, "MaxKeys": 1})
        with pytest.raises(FileNotFoundError, match="does not exist"):
            store.read_bytes(f"s3://{BUCKET}/{key}")
        stub.assert_no_pending_responses()


def test_access_denied_on_a_key_that_exists_or_cannot_be_listed_stays_an_error() -> None:
    from botocore.exceptions import ClientError

    store, stub = stubbed_store()
    key = "models/current/feature_spec.json"
    with stub:
        stub.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
        stub.add_response(
            "list_objects_v2",
            {"KeyCount": 1, "Contents": [{"Key": key}]},
            {"Bucket": BUCKET, "Prefix": key, "MaxKeys": 1},
        )
        stub.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
        stub.add_client_error("list_objects_v2", "AccessDenied", "Access Denied", 403)
        for _ in range(2):
            with pytest.raises(ClientError, match="AccessDenied"):
                store.read_bytes(f"s3://{BUCKET}/{key}")
