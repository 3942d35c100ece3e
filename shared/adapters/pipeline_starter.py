"""Pipeline starters: Step Functions ``StartExecution`` in AWS; a background local run here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.ports import PipelineStarter, PipelineStartError
from shared.settings import PipelineStarterSettings


class StepFunctionsStarter:
    def __init__(self, state_machine_arn: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("stepfunctions")
        self.state_machine_arn, self.client = state_machine_arn, client

    def start(self, execution_id: str, inputs: Mapping[str, Any]) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=execution_id, input=json.dumps(dict(inputs))
            )
        except (ClientError, BotoCoreError) as error:
            raise PipelineStartError(f"StartExecution failed: {error}") from error
        return str(answer["executionArn"])


# Pipeline inputs that the local command line takes, and their flags.
_LOCAL_FLAGS = {"tuning_trials": "--trials", "cv_folds": "--cv-folds"}


class LocalPipelineStarter:
    """Runs ``claims-risk pipeline run`` in the background, its output in ``<home>/logs/``."""

    def __init__(self, home: Path, command: Sequence[str] | None = None) -> None:
        self.home = home
        self.command = list(command or [sys.executable, "-m", "local.cli", "pipeline", "run"])

    def start(self, execution_id: str, inputs: Mapping[str, Any]) -> str:
        arguments = ["--run-id", execution_id]
        for name, flag in _LOCAL_FLAGS.items():
            if inputs.get(name) is not None:
                arguments += [flag, str(inputs[name])]
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            with (logs / f"retrain-{execution_id}.log").open("ab") as out:
                subprocess.Popen(
                    [*self.command, *arguments],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "CLAIMS_RISK_HOME": str(self.home)},
                    start_new_session=True,  # the run outlives the request that started it
                )
        except OSError as error:
            raise PipelineStartError(f"cannot start the local pipeline: {error}") from error
        return execution_id


def starter_from(settings: PipelineStarterSettings) -> PipelineStarter:
    """Step Functions when the settings name the state machine (always in Lambda); else a local run."""
    if settings.state_machine_arn:
        return StepFunctionsStarter(settings.state_machine_arn)
    return LocalPipelineStarter(settings.home.resolve())
