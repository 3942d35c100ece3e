"""The drift job's map/reduce is exact: a window split into shards, each binned on its own, written
as a partial (JSON), read back and merged, gives the figures one pass over the whole window gives,
missing values, wrong types, unseen levels and booleans included."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.bench_monitoring import Reference, claim_records, reference
from sagemaker_jobs.monitoring.partials import (
    Cluster,
    Partial,
    PartialsError,
    accumulator_state,
    cluster_from,
    merge,
    read_partials,
    restore_accumulator,
    write_partial,
)
from shared.capture import personal_fields
from shared.ml.drift import OTHER_LEVEL, DriftAccumulator, DriftReport
from shared.ml.synthetic import generate_claims

WINDOW = {"start": "2026-12-01T08:00:00+00:00", "end": "2026-12-01T09:00:00+00:00", "endpoint": "claims-risk"}


@pytest.fixture(scope="module")
def ref() -> Reference:
    return reference(rows=20_000, seed=3)


def dirty(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Traffic with everything a count can record: absent, null and empty fields, numbers and dates
    that are not, levels the baseline never saw, booleans as text and as garbage."""
    rng = random.Random(seed)
    out = []
    for record in records:
        claim = dict(record)
        roll = rng.random()
        if roll < 0.08:
            claim.pop("sum_insured", None)
        elif roll < 0.12:
            claim["sum_insured"] = None
        elif roll < 0.14:
            claim["sum_insured"] = "a lot"  # wrong type
        if rng.random() < 0.1:
            claim["claim_type"] = rng.choice(["pet", "cyber", ""])  # unseen levels, an empty one
        if rng.random() < 0.05:
            claim.pop("region", None)
        if rng.random() < 0.1:
            claim["police_report"] = rng.choice(["yes", "no", "maybe", None, 1, 0])
        if rng.random() < 0.05:
            claim["incident_date"] = rng.choice(["not a date", "", None])
        if rng.random() < 0.03:
            claim["witnesses"] = "several"
        out.append(claim)
    return out


def scores_for(n: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    values: list[Any] = list(rng.beta(2, 5, n))
    for i in range(0, n, 37):
        values[i] = None  # a response without a score
    for i in range(5, n, 91):
        values[i] = "n/a"  # a score that is not a number
    return values


def one_pass(ref: Reference, records: list[dict[str, Any]], scores: list[Any]) -> DriftReport:
    accumulator = DriftAccumulator(ref.spec, ref.statistics, "v1", personal_fields(ref.spec))
    accumulator.add_records(records)
    accumulator.add_scores(scores)
    return accumulator.report()


def sharded(
    ref: Reference, records: list[dict[str, Any]], scores: list[Any], shards: int, tmp: Path, seed: int
) -> DriftReport:
    """Each exchange dealt to a shard at random (as objects are to instances), each shard binned in
    chunks, written as its host's partial, read back and merged."""
    rng = random.Random(seed)
    hosts = tuple(f"algo-{i + 1}" for i in range(shards))
    dealt: list[list[int]] = [[] for _ in hosts]
    for i in range(len(records)):
        dealt[rng.randrange(shards - 1) if shards > 1 else 0].append(i)  # the last host gets nothing
    unmonitored = personal_fields(ref.spec)
    for host, positions in zip(hosts, dealt, strict=True):
        accumulator = DriftAccumulator(ref.spec, ref.statistics, "v1", unmonitored)
        for start in range(0, len(positions), 500):
            chunk = positions[start : start + 500]
            accumulator.add_records([records[i] for i in chunk])
            accumulator.add_scores([scores[i] for i in chunk])
        partial = Partial(
            host=host,
            hosts=hosts,
            window=WINDOW,
            model_version="v1",
            spec_json=ref.spec.to_json(),
            statistics=ref.statistics,
            state=accumulator_state(accumulator),
            capture={"lines": len(positions)},
        )
        write_partial(tmp, partial)
    partials = read_partials(tmp)
    assert [p.host for p in partials] == list(hosts)
    return merge(partials, unmonitored).report()


def flat(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{path}[{i}]").items()}
    return {path: value}


def assert_same_figures(merged: DriftReport, whole: DriftReport) -> None:
    got, want = flat(merged.to_dict()), flat(whole.to_dict())
    assert got.keys() == want.keys()
    for key, expected in want.items():
        if isinstance(expected, float) and not isinstance(expected, bool):
            assert got[key] == pytest.approx(expected, rel=1e-12, abs=1e-15) or (
                math.isnan(expected) and math.isnan(got[key])
            ), key
        else:
            assert got[key] == expected, key
    assert merged.constraint_violations() == whole.constraint_violations()
    assert merged.metric_values() == pytest.approx(whole.metric_values(), rel=1e-12)


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_merged_partials_give_the_one_pass_figures(ref: Reference, shards: int, tmp_path: Path) -> None:
    claims = generate_claims(4_000, seed=21, drift=0.6)
    records = dirty(claim_records(claims.frame), seed=shards)
    scores = scores_for(len(records), seed=shards)
    whole = one_pass(ref, records, scores)
    merged = sharded(ref, records, scores, shards, tmp_path, seed=shards)
    assert_same_figures(merged, whole)
    # The traffic did exercise every count the merge has to carry.
    by_name = {f.name: f for f in whole.features}
    assert by_name["sum_insured"].current_missing_rate > 0.05 and by_name["sum_insured"].wrong_type > 0
    assert by_name["claim_type"].bins[-1] == OTHER_LEVEL and by_name["claim_type"].unseen_share > 0
    assert by_name["police_report"].kind == "boolean" and by_name["police_report"].wrong_type > 0
    assert whole.prediction is not None and whole.prediction.wrong_type > 0
    assert whole.alarmed and whole.violations()


def test_a_partial_survives_json_with_every_count(ref: Reference) -> None:
    records = dirty(claim_records(generate_claims(500, seed=4).frame), seed=4)
    accumulator = DriftAccumulator(ref.spec, ref.statistics, "v1", personal_fields(ref.spec))
    accumulator.add_records(records)
    accumulator.add_scores(scores_for(len(records), seed=4))
    state = json.loads(json.dumps(accumulator_state(accumulator)))
    restored = restore_accumulator(state, ref.spec, ref.statistics, "v1", personal_fields(ref.spec))
    assert restored.report() == accumulator.report()


def test_a_partial_binned_against_other_bins_is_refused(ref: Reference) -> None:
    accumulator = DriftAccumulator(ref.spec, ref.statistics, "v1", personal_fields(ref.spec))
    state = accumulator_state(accumulator)
    other = json.loads(json.dumps(ref.statistics))
    other["features"]["sum_insured"]["bin_edges"] = other["features"]["sum_insured"]["bin_edges"][:-2]
    other["features"]["sum_insured"]["bin_shares"] = other["features"]["sum_insured"]["bin_shares"][:-2]
    with pytest.raises(PartialsError, match=r"sum_insured: .* bins in the partial"):
        restore_accumulator(state, ref.spec, other, "v1", personal_fields(ref.spec))


def _partial(ref: Reference, host: str, hosts: tuple[str, ...], **changes: Any) -> Partial:
    accumulator = DriftAccumulator(ref.spec, ref.statistics, "v1", personal_fields(ref.spec))
    fields: dict[str, Any] = {
        "host": host,
        "hosts": hosts,
        "window": WINDOW,
        "model_version": "v1",
        "spec_json": ref.spec.to_json(),
        "statistics": ref.statistics,
        "state": accumulator_state(accumulator),
        "capture": {},
    }
    return Partial(**(fields | changes))


def test_the_reduce_refuses_an_incomplete_or_mixed_set_of_partials(ref: Reference, tmp_path: Path) -> None:
    hosts = ("algo-1", "algo-2", "algo-3")
    write_partial(tmp_path / "a", _partial(ref, "algo-1", hosts))
    write_partial(tmp_path / "a", _partial(ref, "algo-3", hosts))
    with pytest.raises(PartialsError, match=r"the partials of \['algo-2'\] are missing"):
        read_partials(tmp_path / "a")
    write_partial(tmp_path / "b", _partial(ref, "algo-1", hosts[:2]))
    write_partial(tmp_path / "b", _partial(ref, "algo-2", hosts[:2], window=WINDOW | {"end": ""}))
    with pytest.raises(PartialsError, match="partials of two windows"):
        read_partials(tmp_path / "b")
    other = json.loads(json.dumps(ref.statistics))
    other["features"]["sum_insured"]["missing_rate"] = 0.5
    write_partial(tmp_path / "c", _partial(ref, "algo-1", hosts[:2]))
    write_partial(tmp_path / "c", _partial(ref, "algo-2", hosts[:2], statistics=other))
    with pytest.raises(PartialsError, match="binned against another baseline"):
        read_partials(tmp_path / "c")
    with pytest.raises(PartialsError, match="did the map job run"):
        read_partials(tmp_path / "nothing")
    tampered = write_partial(tmp_path / "d", _partial(ref, "algo-1", hosts[:1]))
    tampered.write_text(tampered.read_text(encoding="utf-8").replace('"v1"', '"v2"', 1), encoding="utf-8")
    assert read_partials(tmp_path / "d")[0].model_version == "v2"  # the version is not the baseline
    document = json.loads(tampered.read_text(encoding="utf-8"))
    document["statistics"]["features"]["sum_insured"]["missing_rate"] = 0.9
    tampered.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(PartialsError, match="does not match its digest"):
        read_partials(tmp_path / "d")


def test_each_instance_knows_its_host_from_sagemakers_resource_config(tmp_path: Path) -> None:
    config = tmp_path / "resourceconfig.json"
    config.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}), encoding="utf-8")
    assert cluster_from(config) == Cluster("algo-2", ("algo-1", "algo-2"))
    assert cluster_from(tmp_path / "absent.json") == Cluster("algo-1", ("algo-1",))  # outside SageMaker
    for bad in (
        {"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]},
        {"current_host": "../x", "hosts": ["../x"]},
        {"hosts": ["algo-1"]},
    ):
        config.write_text(json.dumps(bad), encoding="utf-8")
        with pytest.raises(PartialsError):
            cluster_from(config)
