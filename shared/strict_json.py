"""JSON as the API reads request bodies: strict, and every way a body can break the parser is a
``json.JSONDecodeError`` (so a 400 the client can act on), never a crash.

Python's parser accepts ``NaN`` and ``Infinity``, turns ``1e400`` into infinity, raises ValueError
for an integer of more than 4300 digits and RecursionError for deep nesting (even inside a field
the API ignores). Each of those becomes a decode error here. Standard library only: the API Lambda
has no orjson.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

# Deeper than any claim (a claim is flat; a batch is two levels); far below the interpreter's limit.
MAX_DEPTH: Final = 64
MAX_INTEGER_DIGITS: Final = 30  # no field comes near; a claim amount is a float below 10^12


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ValueError(f"integer of {len(text.lstrip('-'))} digits; at most {MAX_INTEGER_DIGITS}")
    return int(text)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def nesting_depth_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (a linear scan, no recursion)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def loads(text: str | bytes) -> Any:
    """Parse a request body; raises ``json.JSONDecodeError`` for anything that is not plain JSON."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if nesting_depth_exceeds(text):
        raise json.JSONDecodeError(f"nested more than {MAX_DEPTH} levels deep", text, 0)
    try:
        return json.loads(text, parse_float=_finite, parse_int=_integer, parse_constant=_no_constants)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as error:
        raise json.JSONDecodeError(str(error), text, 0) from None
