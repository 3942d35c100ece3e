"""The model a user runs, for the benchmarks that time serving it.

``make run`` publishes the model of ``claims-risk train``: the quick pipeline (XGBoost's defaults, no
tuning, no cross-validation) on 100,000 generated claims, seed 0. :func:`published_model` trains
exactly that, by running that command into a data folder of its own, once per ``make bench``. Set
``CLAIMS_RISK_BENCH_HOME`` to a data folder with a published model (``data`` after ``make run``, or
after ``claims-risk pipeline run`` for the pipeline's champion) to measure that model instead; the
figures name the model they measured either way.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

from local.jobs import REPO_ROOT

HOME_ENV: Final = "CLAIMS_RISK_BENCH_HOME"


@dataclass(frozen=True)
class PublishedModel:
    home: Path  # the data folder: serve it as `claims-risk up` does
    model_dir: Path
    label: str  # which model this is, for the table

    def describe(self) -> str:
        from shared.ml.model import RiskModel

        model = RiskModel.load(self.model_dir)
        booster = getattr(model.family, "booster", None)
        trees = f", {booster.num_boosted_rounds()} trees" if booster is not None else ""
        rows = model.manifest.lineage.train_rows
        return f"{self.label}: {model.version} ({model.manifest.family}{trees}, {rows:,} training rows)"


def _current(home: Path) -> Path | None:
    from local.pipeline_runner import LocalModelStore

    return LocalModelStore(home / "models").current_dir()


@cache
def published_model() -> PublishedModel:
    given = os.environ.get(HOME_ENV)
    if given:
        home = Path(given).resolve()
        model_dir = _current(home)
        if model_dir is None:
            raise RuntimeError(f"{HOME_ENV}={given} has no published model")
        return PublishedModel(home, model_dir, f"the model published in {home}")
    home = Path(tempfile.mkdtemp(prefix="claims-risk-bench-home-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "local.cli", "train"],  # what `make run` runs on a fresh clone
        cwd=REPO_ROOT,
        env={**os.environ, "CLAIMS_RISK_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        check=True,
    )
    model_dir = _current(home)
    if model_dir is None:  # pragma: no cover - train exits non-zero when it publishes nothing
        raise RuntimeError("claims-risk train published no model")
    return PublishedModel(
        home, model_dir, "make run's model (claims-risk train: quick pipeline, 100k claims, seed 0)"
    )
