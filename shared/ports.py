"""Ports: the interfaces through which handlers and jobs reach outside services.

Each port has an AWS adapter and a local adapter (:mod:`shared.adapters`); unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class EndpointError(RuntimeError):
    """The model endpoint failed or could not be reached."""


class EndpointRejectedInput(EndpointError):
    """The endpoint refused the input (its 4xx); the message says why."""


class ModelEndpoint(Protocol):
    """A deployed model that scores claims (SageMaker endpoint, or the local model server)."""

    def invoke(self, claims: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Score claims given as JSON-ready dicts; one prediction dict per claim, in order."""
        ...

    def describe(self) -> str:
        """A short name of the target, for health output and logs."""
        ...
