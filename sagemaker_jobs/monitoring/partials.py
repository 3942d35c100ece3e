"""The drift job's partial statistics: what one instance of a sharded (map) job knows of its shard,
in a form the reduce merges into exactly the figures one instance computes over the whole window.

Every drift figure is a function of counts against the baseline's fixed bins (shared/ml/drift.py):
per feature the values in each bin or level, the rows, the missing and the wrongly typed values;
the claims and scores read. Counts add up, so the merged counts of the shards are the counts of the
whole window, and PSI, KS, chi-square and the missing rates computed from them are the one-pass
figures. A partial therefore holds those counts, never a figure, and the baseline they were binned
against, so the reduce computes from the very bins the map used (the champion may have changed
in between).

Each instance learns its host and the cluster from ``/opt/ml/config/resourceconfig.json``
(``current_host``, ``hosts``: "Build Your Own Processing Container (Advanced Scenario)", SageMaker
developer guide) and writes under ``<output>/<host>/``, so no two instances upload the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from shared.lake import INFERENCES
from shared.ml.drift import DriftAccumulator

if TYPE_CHECKING:
    import pandas as pd

    from shared.feature_spec import FeatureSpec

PARTIAL_FILE: Final = "partial.json"
FORMAT: Final = "claims-risk/drift-partial"
VERSION: Final = 1
RESOURCE_CONFIG: Final = "/opt/ml/config/resourceconfig.json"
RESOURCE_CONFIG_VARIABLE: Final = "CLAIMS_RISK_RESOURCE_CONFIG"  # moves it, for offline runs
SHARD_LAKE: Final = "lake"  # under a host's folder: its shard's inferences rows, as the lake lays them out
_HOST: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # a host name is a folder name here


class PartialsError(ValueError):
    """Partials that cannot be merged into the window's figures; the message says why."""


@dataclass(frozen=True)
class Cluster:
    current_host: str
    hosts: tuple[str, ...]


def cluster_from(path: Path) -> Cluster:
    """This instance and its cluster; without the file (a run outside SageMaker) one host, algo-1."""
    if not path.is_file():
        return Cluster("algo-1", ("algo-1",))
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        host = str(document["current_host"])
        hosts = tuple(str(h) for h in document["hosts"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PartialsError(f"{path} is not SageMaker's resource config: {error}") from error
    bad = [h for h in hosts if not _HOST.match(h)]
    if bad or host not in hosts or len(set(hosts)) != len(hosts):
        raise PartialsError(f"{path}: current_host {host!r} among hosts {list(hosts)} is not a cluster")
    return Cluster(host, hosts)


def baseline_digest(spec_json: str, statistics: Mapping[str, Any]) -> str:
    """The baseline's identity: two partials merge only when binned against the same one."""
    canonical = json.dumps(statistics, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{spec_json}\0{canonical}".encode()).hexdigest()


def _counts_of(accumulator: Any) -> dict[str, Any]:
    return {
        "counts": [int(c) for c in accumulator.counts],
        "rows": int(accumulator.rows),
        "missing": int(accumulator.missing),
        "wrong_type": int(accumulator.wrong_type),
    }


def accumulator_state(accumulator: DriftAccumulator) -> dict[str, Any]:
    """The accumulator's counts (every one the report is computed from), as JSON."""
    features = {name: _counts_of(a) for name, a in accumulator.numeric.items()}
    features |= {name: _counts_of(a) for name, a in accumulator.levels.items()}
    prediction = accumulator.prediction
    return {
        "claims": accumulator.claims,
        "scored": accumulator.scored,
        "features": features,
        "prediction": _counts_of(prediction) if prediction is not None else None,
    }


def _restore_counts(target: Any, state: Mapping[str, Any], name: str) -> None:
    counts = [int(c) for c in state["counts"]]
    if len(counts) != len(target.counts):
        raise PartialsError(
            f"{name}: {len(counts)} bins in the partial, {len(target.counts)} in the baseline"
        )
    target.counts[:] = counts
    target.rows, target.missing, target.wrong_type = (
        int(state["rows"]),
        int(state["missing"]),
        int(state["wrong_type"]),
    )


def restore_accumulator(
    state: Mapping[str, Any],
    spec: FeatureSpec,
    statistics: Mapping[str, Any],
    model_version: str,
    unmonitored: Iterable[str],
) -> DriftAccumulator:
    """An accumulator holding a partial's counts, built on the baseline the partial was binned against."""
    accumulator = DriftAccumulator(spec, statistics, model_version, unmonitored)
    features: Mapping[str, Any] = state["features"]
    expected = set(accumulator.numeric) | set(accumulator.levels)
    if set(features) != expected:
        raise PartialsError(
            f"the partial's features {sorted(features)} are not the baseline's {sorted(expected)}"
        )
    for name, numeric in accumulator.numeric.items():
        _restore_counts(numeric, features[name], name)
    for name, levels in accumulator.levels.items():
        _restore_counts(levels, features[name], name)
    if (accumulator.prediction is None) != (state["prediction"] is None):
        raise PartialsError("the partial and the baseline disagree on the risk score's statistics")
    if accumulator.prediction is not None:
        _restore_counts(accumulator.prediction, state["prediction"], "risk_score")
    accumulator.claims, accumulator.scored = int(state["claims"]), int(state["scored"])
    return accumulator


@dataclass(frozen=True)
class Partial:
    """One map instance's share of the window."""

    host: str
    hosts: tuple[str, ...]
    window: dict[str, str]  # start and end as the job was told (ISO 8601, or empty)
    model_version: str
    spec_json: str
    statistics: dict[str, Any]
    state: dict[str, Any]  # accumulator_state
    capture: dict[str, Any]  # the reading's counts: files, lines, in window, unreadable, first error
    lake_hours: tuple[str, ...] = ()  # hours (yyyy-mm-ddThh) of inferences rows under lake/
    lake_rows: int = 0
    folder: Path = Path()  # where it was read from

    @property
    def digest(self) -> str:
        return baseline_digest(self.spec_json, self.statistics)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        del document["folder"]
        return {"format": FORMAT, "version": VERSION, "baseline_digest": self.digest, **document}


def write_partial(output: Path, partial: Partial) -> Path:
    """``<output>/<host>/partial.json``; the host's folder also holds its shard's lake rows."""
    folder = output / partial.host
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PARTIAL_FILE
    path.write_text(json.dumps(partial.to_json(), separators=(",", ":")), encoding="utf-8")
    return path


def _read_one(path: Path) -> Partial:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != FORMAT or document.get("version") != VERSION:
            raise PartialsError(f"{path} is not a drift partial of version {VERSION}")
        partial = Partial(
            host=str(document["host"]),
            hosts=tuple(str(h) for h in document["hosts"]),
            window={str(k): str(v) for k, v in document["window"].items()},
            model_version=str(document["model_version"]),
            spec_json=str(document["spec_json"]),
            statistics=dict(document["statistics"]),
            state=dict(document["state"]),
            capture=dict(document["capture"]),
            lake_hours=tuple(str(h) for h in document.get("lake_hours", ())),
            lake_rows=int(document.get("lake_rows", 0)),
            folder=path.parent,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise PartialsError(f"cannot read the partial {path}: {error}") from error
    if partial.digest != document.get("baseline_digest"):
        raise PartialsError(f"{path}: its baseline does not match its digest (altered or truncated)")
    return partial


def read_partials(root: Path) -> list[Partial]:
    """Every host's partial under ``root``, in the cluster's host order; refused unless they are one
    cluster's complete set over one window and one baseline: a missing shard would leave claims out
    of the figures, which must be the whole window's."""
    paths = sorted(root.rglob(PARTIAL_FILE)) if root.is_dir() else []
    if not paths:
        raise PartialsError(f"no {PARTIAL_FILE} under {root}: did the map job run?")
    partials = [_read_one(p) for p in paths]
    first = partials[0]
    for other in partials[1:]:
        if other.hosts != first.hosts:
            raise PartialsError(f"partials of two clusters: {list(first.hosts)} and {list(other.hosts)}")
        if other.window != first.window:
            raise PartialsError(f"partials of two windows: {first.window} and {other.window}")
        if other.digest != first.digest:
            raise PartialsError(f"{other.host} binned against another baseline than {first.host}")
    by_host: dict[str, Partial] = {}
    for partial in partials:
        if partial.host in by_host:
            raise PartialsError(f"two partials of {partial.host}")
        by_host[partial.host] = partial
    missing = [h for h in first.hosts if h not in by_host]
    if missing or set(by_host) != set(first.hosts):
        raise PartialsError(
            f"the partials of {missing or sorted(set(by_host) - set(first.hosts))} are missing"
        )
    return [by_host[h] for h in first.hosts]


def merge(partials: Sequence[Partial], unmonitored: Iterable[str]) -> DriftAccumulator:
    """One accumulator holding the sum of the partials' counts: the whole window's."""
    spec = _spec(partials[0].spec_json)
    left_out = list(unmonitored)
    merged: DriftAccumulator | None = None
    for partial in partials:
        accumulator = restore_accumulator(
            partial.state, spec, partial.statistics, partial.model_version, left_out
        )
        if merged is None:
            merged = accumulator
        else:
            merged.merge(accumulator)
    assert merged is not None
    return merged


def _spec(spec_json: str) -> FeatureSpec:
    from shared.feature_spec import FeatureSpec

    return FeatureSpec.model_validate_json(spec_json)


def shard_inference_files(partials: Sequence[Partial], hour: str) -> list[Path]:
    """The shards' Parquet files of one hour's ``inferences`` partition, host by host."""
    day, hh = hour.split("T")
    relative = Path(SHARD_LAKE) / INFERENCES.name / INFERENCES.partition_path({"dt": day, "hour": hh})
    files: list[Path] = []
    for partial in partials:
        if hour in partial.lake_hours:
            files += sorted((partial.folder / relative).glob("*.parquet"))
    return files


def parquet_frames(files: Sequence[Path], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The files' rows, chunk by chunk (a shard's hour is read in bounded memory)."""
    from shared.parquet_batches import parquet_batches

    for path in files:
        for batch in parquet_batches(path, chunk_rows):
            yield batch.to_pandas()
