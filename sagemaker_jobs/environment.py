"""Where SageMaker puts things inside a training container, read from the environment.

Every path has SageMaker's default under ``/opt/ml`` and can be moved through the same environment
variables SageMaker sets, which is how the local runner and the tests run the same scripts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPT_ML = "/opt/ml"


@dataclass(frozen=True)
class TrainingEnvironment:
    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    input_config_dir: Path
    channels: dict[str, Path]
    hyperparameters: dict[str, Any]

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    def channel(self, name: str) -> Path | None:
        return self.channels.get(name)


def training_environment(env: dict[str, str] | None = None) -> TrainingEnvironment:
    env = dict(os.environ if env is None else env)
    root = Path(env.get("SM_OPT_ML", OPT_ML))
    input_config = Path(env.get("SM_INPUT_CONFIG_DIR", root / "input" / "config"))
    data_root = Path(env.get("SM_INPUT_DATA_DIR", root / "input" / "data"))
    channels: dict[str, Path] = {}
    names = json.loads(env["SM_CHANNELS"]) if "SM_CHANNELS" in env else []
    if data_root.is_dir():
        names += [p.name for p in data_root.iterdir() if p.is_dir()]
    names += [k[len("SM_CHANNEL_") :].lower() for k in env if k.startswith("SM_CHANNEL_")]
    for name in dict.fromkeys(names):
        channels[name] = Path(env.get(f"SM_CHANNEL_{name.upper()}", data_root / name))
    if "SM_HPS" in env:
        hyperparameters = json.loads(env["SM_HPS"])
    else:
        hp_file = input_config / "hyperparameters.json"
        hyperparameters = json.loads(hp_file.read_text(encoding="utf-8")) if hp_file.is_file() else {}
    output_dir = Path(env.get("SM_OUTPUT_DIR", root / "output"))
    return TrainingEnvironment(
        model_dir=Path(env.get("SM_MODEL_DIR", root / "model")),
        output_dir=output_dir,
        output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", output_dir / "data")),
        input_config_dir=input_config,
        channels=channels,
        hyperparameters=hyperparameters,
    )


def processing_job_name(env: dict[str, str] | None = None) -> str | None:
    """The processing job's name, from the config file SageMaker gives a processing container
    (``/opt/ml/config/processingjobconfig.json``; ``CLAIMS_RISK_JOB_CONFIG`` moves it)."""
    env = dict(os.environ if env is None else env)
    config = Path(env.get("CLAIMS_RISK_JOB_CONFIG", f"{OPT_ML}/config/processingjobconfig.json"))
    if not config.is_file():
        return None
    name = json.loads(config.read_text(encoding="utf-8")).get("ProcessingJobName")
    return str(name) if name else None
