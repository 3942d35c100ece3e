"""A small interpreter of the Amazon States Language (JSONPath mode), for tests.

It runs the part of the language the retraining state machine uses, the way Step Functions
documents it (https://states-language.net/spec.html and the Step Functions developer guide):

- reference paths and JSONPath (``$.a.b``, ``$.a[0]``, ``$.a[*].b``, ``$['a b']``, the equality
  filter ``$.a[?(@.b == 'x')]``) and the context object (``$$.Execution.Name``,
  ``$$.Execution.Input``, ``$$.State.Name``, ...);
- payload templates (``Parameters``, ``ResultSelector``, a Pass state's ``Parameters``) with ``".$"``
  keys, nested in objects and arrays;
- the intrinsic functions ``States.Format``, ``States.JsonMerge``, ``States.StringSplit``,
  ``States.ArrayGetItem``, ``States.Array``, ``States.ArrayLength``, ``States.UUID``,
  ``States.StringToJson``, ``States.JsonToString`` and ``States.MathAdd``;
- ``InputPath``, ``Parameters``, ``ResultSelector``, ``ResultPath`` and ``OutputPath`` (``null``
  included), in that order;
- Task (through a caller-supplied function that plays the integration), Pass, Choice (every
  comparison operator, the type tests, ``And``/``Or``/``Not``, short-circuited), Wait, Succeed and Fail;
- ``Catch`` (``States.ALL``, ``States.TaskFailed`` and exact names). ``Retry`` is not replayed: a
  task's outcome is what the caller's function says. A ``States.Runtime`` error (a path that is not
  there, a ResultPath that cannot be applied) fails the execution, as Step Functions does: no Catch
  catches it.

Nothing runs in parallel: Map and Parallel states are refused, as are JSONPath filters other than
equality with a literal.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import uuid as uuid_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

JSON = Any

# -- errors ------------------------------------------------------------------------------------------


class StatesError(Exception):
    """An error as Step Functions names it (``States.Runtime``, ``States.TaskFailed``, ...)."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


class TaskFailure(StatesError):
    """What a task's integration answers with instead of a result (the error its Catch sees)."""


# Errors no Catch or Retry sees: the execution fails (the developer guide's "Error names").
UNCATCHABLE: Final = frozenset({"States.Runtime", "States.IntrinsicFailure"})


def runtime_error(cause: str) -> StatesError:
    return StatesError("States.Runtime", cause)


# -- JSONPath ---------------------------------------------------------------------------------------


class _Wildcard:
    def __repr__(self) -> str:
        return "[*]"


WILDCARD: Final = _Wildcard()


@dataclass(frozen=True)
class _Filter:
    """``[?(@.a.b == 'x')]``: the items whose field equals a literal (the only filter supported)."""

    field: tuple[str, ...]
    value: Any


Step = str | int | _Wildcard | _Filter

_NAME = re.compile(r"\.([^.\[\]]+)")
_INDEX = re.compile(r"\[(-?\d+)\]")
_QUOTED = re.compile(r"\[\s*'((?:[^'\\]|\\.)*)'\s*\]")
_STAR = re.compile(r"\[\*\]|\.\*")
_FILTER = re.compile(
    r"\[\?\(\s*@((?:\.[A-Za-z0-9_]+)+)\s*==\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|-?\d+(?:\.\d+)?)\s*\)\]"
)


@dataclass(frozen=True)
class Path:
    """A parsed JSONPath: whether it starts at the context object (``$$``), and its steps."""

    text: str
    context: bool
    steps: tuple[Step, ...]

    @property
    def definite(self) -> bool:
        return not any(isinstance(s, _Wildcard | _Filter) for s in self.steps)


def parse_path(text: str) -> Path:
    """``$``, ``$.a.b``, ``$.a[0]``, ``$.a[*].b``, ``$['a b']`` and the same from ``$$``."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise runtime_error(f"{text!r} is not a path: paths start with $")
    context = text.startswith("$$")
    rest = text[2:] if context else text[1:]
    steps: list[Step] = []
    position = 0
    while position < len(rest):
        for pattern in (_STAR, _FILTER, _NAME, _INDEX, _QUOTED):
            found = pattern.match(rest, position)
            if found:
                break
        else:
            raise runtime_error(f"unsupported JSONPath {text!r} (at {rest[position:]!r})")
        if pattern is _STAR:
            steps.append(WILDCARD)
        elif pattern is _FILTER:
            literal = found.group(2)
            value: Any = literal[1:-1] if literal[0] in "'\"" else json.loads(literal)
            steps.append(_Filter(tuple(found.group(1).strip(".").split(".")), value))
        elif pattern is _INDEX:
            steps.append(int(found.group(1)))
        elif pattern is _QUOTED:
            steps.append(re.sub(r"\\(.)", r"\1", found.group(1)))
        else:
            steps.append(found.group(1))
        position = found.end()
    return Path(text, context, tuple(steps))


_MISSING: Final = object()


def _select(value: JSON, steps: tuple[Step, ...]) -> JSON:
    """The value at ``steps``, ``_MISSING`` if it is not there; a wildcard collects a list."""
    for position, step in enumerate(steps):
        if isinstance(step, _Filter):
            if not isinstance(value, list):
                return _MISSING
            kept = [item for item in value if _select(item, step.field) == step.value]
            found = [_select(item, steps[position + 1 :]) for item in kept]
            return [item for item in found if item is not _MISSING]
        if isinstance(step, _Wildcard):
            if isinstance(value, dict):
                items = list(value.values())
            elif isinstance(value, list):
                items = value
            else:
                return _MISSING
            found = [_select(item, steps[position + 1 :]) for item in items]
            return [item for item in found if item is not _MISSING]
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return _MISSING
            value = value[step]
        else:
            if not isinstance(value, dict) or step not in value:
                return _MISSING
            value = value[step]
    return value


def read_path(data: JSON, path: str, context: JSON) -> JSON:
    """The value a path names (a copy); a path that names nothing is a ``States.Runtime`` error."""
    parsed = parse_path(path)
    found = _select(context if parsed.context else data, parsed.steps)
    if found is _MISSING:
        raise runtime_error(f"the JSONPath {path!r} could not be found in the input {_brief(data)}")
    return copy.deepcopy(found)


def path_exists(data: JSON, path: str, context: JSON) -> bool:
    parsed = parse_path(path)
    return _select(context if parsed.context else data, parsed.steps) is not _MISSING


def write_path(data: JSON, path: str | None, value: JSON) -> JSON:
    """``ResultPath``: ``$`` replaces the input, ``$.a.b`` sets (creating objects), ``null`` discards."""
    if path is None:
        return data
    parsed = parse_path(path)
    if parsed.context or not parsed.definite or any(isinstance(s, int) for s in parsed.steps):
        raise runtime_error(f"ResultPath {path!r} is not a reference path to an object field")
    if not parsed.steps:
        return copy.deepcopy(value)
    if not isinstance(data, dict):
        raise runtime_error(f"ResultPath {path!r} cannot be applied to a non-object input {_brief(data)}")
    result = copy.deepcopy(data)
    node = result
    for step in parsed.steps[:-1]:
        assert isinstance(step, str)
        child = node.setdefault(step, {})
        if not isinstance(child, dict):
            raise runtime_error(f"ResultPath {path!r}: {step!r} holds {_brief(child)}, not an object")
        node = child
    last = parsed.steps[-1]
    assert isinstance(last, str)
    node[last] = copy.deepcopy(value)
    return result


def _brief(value: JSON, limit: int = 300) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


# -- intrinsic functions ----------------------------------------------------------------------------

# Escaped braces in a string literal stay literal in States.Format.
_LBRACE, _RBRACE = "\ue000", "\ue001"


def _plain(value: JSON) -> JSON:
    if isinstance(value, str):
        return value.replace(_LBRACE, "{").replace(_RBRACE, "}")
    return value


@dataclass
class _Call:
    name: str
    arguments: list[Any]


@dataclass
class _PathArgument:
    path: str


@dataclass
class _Literal:
    value: JSON


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def fail(self, why: str) -> StatesError:
        return StatesError("States.IntrinsicFailure", f"{why} at {self.position} in {self.text!r}")

    def skip_space(self) -> None:
        while self.position < len(self.text) and self.text[self.position].isspace():
            self.position += 1

    def call(self) -> _Call:
        found = re.compile(r"States\.([A-Za-z0-9]+)\(").match(self.text, self.position)
        if not found:
            raise self.fail("expected States.<Function>(")
        self.position = found.end()
        arguments: list[Any] = []
        self.skip_space()
        if self.text[self.position : self.position + 1] == ")":
            self.position += 1
            return _Call(found.group(1), arguments)
        while True:
            self.skip_space()
            arguments.append(self.argument())
            self.skip_space()
            token = self.text[self.position : self.position + 1]
            self.position += 1
            if token == ")":
                return _Call(found.group(1), arguments)
            if token != ",":
                raise self.fail("expected , or )")

    def argument(self) -> Any:
        head = self.text[self.position : self.position + 1]
        if head == "'":
            return _Literal(self.string())
        if head == "$":
            start = self.position
            depth = 0
            while self.position < len(self.text):
                char = self.text[self.position]
                if char == "[":
                    depth += 1
                elif char == "]":
                    depth -= 1
                elif char in ",)" and depth == 0:
                    break
                self.position += 1
            return _PathArgument(self.text[start : self.position].strip())
        if self.text.startswith("States.", self.position):
            return self.call()
        found = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null").match(self.text, self.position)
        if not found:
            raise self.fail("expected an argument")
        self.position = found.end()
        return _Literal(json.loads(found.group(0)))

    def string(self) -> str:
        self.position += 1  # the opening quote
        chars: list[str] = []
        while self.position < len(self.text):
            char = self.text[self.position]
            if char == "\\":
                escaped = self.text[self.position + 1 : self.position + 2]
                chars.append({"{": _LBRACE, "}": _RBRACE}.get(escaped, escaped))
                self.position += 2
                continue
            if char == "'":
                self.position += 1
                return "".join(chars)
            chars.append(char)
            self.position += 1
        raise self.fail("unterminated string")


def is_intrinsic(text: JSON) -> bool:
    return isinstance(text, str) and text.startswith("States.")


@dataclass
class Runtime:
    """What intrinsic functions and paths draw on besides the data: the context object, UUIDs."""

    context: JSON = field(default_factory=dict)
    uuid: Callable[[], str] = field(default_factory=lambda: lambda: str(uuid_module.uuid4()))


def evaluate_intrinsic(expression: str, data: JSON, runtime: Runtime) -> JSON:
    parser = _Parser(expression.strip())
    call = parser.call()
    parser.skip_space()
    if parser.position != len(parser.text):
        raise parser.fail("text after the function call")
    return _plain(_evaluate_call(call, data, runtime))


def _evaluate_argument(argument: Any, data: JSON, runtime: Runtime) -> JSON:
    if isinstance(argument, _Literal):
        return argument.value
    if isinstance(argument, _PathArgument):
        return read_path(data, argument.path, runtime.context)
    return _evaluate_call(argument, data, runtime)


def _format_value(value: JSON, expression: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    raise StatesError(
        "States.IntrinsicFailure", f"States.Format cannot format {_brief(value)} ({expression})"
    )


def _evaluate_call(call: _Call, data: JSON, runtime: Runtime) -> JSON:
    name = f"States.{call.name}"
    values = [_evaluate_argument(a, data, runtime) for a in call.arguments]

    def need(count: int) -> None:
        if len(values) != count:
            raise StatesError("States.IntrinsicFailure", f"{name} takes {count} arguments, not {len(values)}")

    def fail(why: str) -> StatesError:
        return StatesError("States.IntrinsicFailure", f"{name}: {why}")

    if call.name == "Format":
        if not values or not isinstance(values[0], str):
            raise fail("the first argument must be a string")
        template, arguments = values[0], values[1:]
        pieces = template.split("{}")
        if len(pieces) - 1 != len(arguments):
            raise fail(f"{len(pieces) - 1} placeholders for {len(arguments)} arguments")
        text = pieces[0]
        for argument, piece in zip(arguments, pieces[1:], strict=True):
            text += _plain(_format_value(argument, name)) + piece
        return text
    values = [_plain(v) for v in values]
    if call.name == "JsonMerge":
        need(3)
        first, second, deep = values
        if not isinstance(first, dict) or not isinstance(second, dict) or not isinstance(deep, bool):
            raise fail("takes two objects and a boolean")
        return _deep_merge(first, second) if deep else {**first, **second}
    if call.name == "StringSplit":
        need(2)
        text, separators = values
        if not isinstance(text, str) or not isinstance(separators, str) or not separators:
            raise fail("takes a string and a non-empty string of separator characters")
        return [token for token in re.split("[" + re.escape(separators) + "]", text) if token]
    if call.name == "ArrayGetItem":
        need(2)
        array, index = values
        if not isinstance(array, list) or not isinstance(index, int) or isinstance(index, bool):
            raise fail("takes an array and an integer index")
        if not 0 <= index < len(array):
            raise fail(f"index {index} is outside an array of {len(array)}")
        return array[index]
    if call.name == "Array":
        return values
    if call.name == "ArrayLength":
        need(1)
        if not isinstance(values[0], list):
            raise fail("takes an array")
        return len(values[0])
    if call.name == "UUID":
        need(0)
        return runtime.uuid()
    if call.name == "StringToJson":
        need(1)
        if not isinstance(values[0], str):
            raise fail("takes a string")
        try:
            return json.loads(values[0])
        except json.JSONDecodeError as error:
            raise fail(f"not JSON: {error}") from None
    if call.name == "JsonToString":
        need(1)
        return json.dumps(values[0], separators=(",", ":"), ensure_ascii=False)
    if call.name == "MathAdd":
        need(2)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise fail("takes two integers")
        return values[0] + values[1]
    raise NotImplementedError(f"intrinsic function {name} is not implemented by this interpreter")


def _deep_merge(first: dict[str, JSON], second: dict[str, JSON]) -> dict[str, JSON]:
    merged = dict(first)
    for key, value in second.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# -- payload templates ------------------------------------------------------------------------------


def apply_template(template: JSON, data: JSON, runtime: Runtime) -> JSON:
    """A payload template: ``"key.$"`` values are paths or intrinsic functions, evaluated on ``data``."""
    if isinstance(template, dict):
        result: dict[str, JSON] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if not isinstance(value, str):
                    raise runtime_error(f"the value of {key!r} must be a path or an intrinsic function")
                name = key[:-2]
                if name in result:
                    raise runtime_error(f"{name!r} is given twice")
                if is_intrinsic(value):
                    result[name] = evaluate_intrinsic(value, data, runtime)
                else:
                    result[name] = read_path(data, value, runtime.context)
            else:
                if key in result:
                    raise runtime_error(f"{key!r} is given twice")
                result[key] = apply_template(value, data, runtime)
        return result
    if isinstance(template, list):
        return [apply_template(item, data, runtime) for item in template]
    return copy.deepcopy(template)


# -- Choice rules -----------------------------------------------------------------------------------

_COMPARISONS: Final[dict[str, tuple[Callable[[JSON], bool], Callable[[Any, Any], bool]]]] = {}


def _is_number(value: JSON) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_timestamp(value: JSON) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def _timestamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


for _prefix, _check in (("String", lambda v: isinstance(v, str)), ("Numeric", _is_number)):
    _COMPARISONS[f"{_prefix}Equals"] = (_check, lambda a, b: a == b)
    _COMPARISONS[f"{_prefix}LessThan"] = (_check, lambda a, b: a < b)
    _COMPARISONS[f"{_prefix}GreaterThan"] = (_check, lambda a, b: a > b)
    _COMPARISONS[f"{_prefix}LessThanEquals"] = (_check, lambda a, b: a <= b)
    _COMPARISONS[f"{_prefix}GreaterThanEquals"] = (_check, lambda a, b: a >= b)
_COMPARISONS["BooleanEquals"] = (lambda v: isinstance(v, bool), lambda a, b: a is b)
_COMPARISONS["TimestampEquals"] = (_is_timestamp, lambda a, b: _timestamp(a) == _timestamp(b))
_COMPARISONS["TimestampLessThan"] = (_is_timestamp, lambda a, b: _timestamp(a) < _timestamp(b))
_COMPARISONS["TimestampGreaterThan"] = (_is_timestamp, lambda a, b: _timestamp(a) > _timestamp(b))
_COMPARISONS["TimestampLessThanEquals"] = (_is_timestamp, lambda a, b: _timestamp(a) <= _timestamp(b))
_COMPARISONS["TimestampGreaterThanEquals"] = (_is_timestamp, lambda a, b: _timestamp(a) >= _timestamp(b))

_TYPE_TESTS: Final[dict[str, Callable[[JSON], bool]]] = {
    "IsNull": lambda v: v is None,
    "IsString": lambda v: isinstance(v, str),
    "IsNumeric": _is_number,
    "IsBoolean": lambda v: isinstance(v, bool),
    "IsTimestamp": _is_timestamp,
}


def _string_matches(value: str, pattern: str) -> bool:
    """``StringMatches``: ``*`` is any run of characters; ``\\*`` and ``\\\\`` are literal."""
    regex = ""
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "\\" and position + 1 < len(pattern):
            regex += re.escape(pattern[position + 1])
            position += 2
            continue
        regex += ".*" if char == "*" else re.escape(char)
        position += 1
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def evaluate_rule(rule: Mapping[str, JSON], data: JSON, runtime: Runtime) -> bool:
    """One Choice rule (without its ``Next``): true or false, or a ``States.Runtime`` error."""
    if "And" in rule:
        return all(evaluate_rule(r, data, runtime) for r in rule["And"])  # short-circuits
    if "Or" in rule:
        return any(evaluate_rule(r, data, runtime) for r in rule["Or"])
    if "Not" in rule:
        return not evaluate_rule(rule["Not"], data, runtime)
    variable = rule.get("Variable")
    if not isinstance(variable, str):
        raise runtime_error(f"a Choice rule without a Variable: {_brief(rule)}")
    operators = [k for k in rule if k not in ("Variable", "Next", "Comment")]
    if len(operators) != 1:
        raise runtime_error(f"a Choice rule needs exactly one operator: {_brief(rule)}")
    [operator] = operators
    expected = rule[operator]
    if operator == "IsPresent":
        return path_exists(data, variable, runtime.context) is bool(expected)
    value = read_path(data, variable, runtime.context)  # a missing variable fails the execution
    if operator in _TYPE_TESTS:
        return _TYPE_TESTS[operator](value) is bool(expected)
    if operator == "StringMatches":
        return isinstance(value, str) and _string_matches(value, str(expected))
    if operator.endswith("Path"):
        base = operator[: -len("Path")]
        if base not in _COMPARISONS:
            raise runtime_error(f"unknown Choice operator {operator}")
        expected = read_path(data, str(expected), runtime.context)
        operator = base
    if operator not in _COMPARISONS:
        raise runtime_error(f"unknown Choice operator {operator}")
    check, compare = _COMPARISONS[operator]
    # A value of another type than the operator's is no match (and no error).
    return check(value) and check(expected) and compare(value, expected)


# -- execution --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskCall:
    """What a Task state asks its integration: the resolved ``Parameters`` (the request)."""

    state: str
    resource: str
    parameters: JSON
    context: JSON


TaskHandler = Callable[[TaskCall], JSON]


@dataclass
class Entered:
    """One state as the execution met it."""

    name: str
    type: str
    input: JSON
    output: JSON = None
    next: str | None = None
    via: str | None = None  # how it left: "Choices[i]", "Default", "Catch[i]", "Next", or None at the end
    parameters: JSON = None  # a Task's resolved request
    result: JSON = None  # a Task's raw result
    error: StatesError | None = None


@dataclass
class Execution:
    status: str  # SUCCEEDED or FAILED
    states: list[Entered]
    output: JSON = None
    error: str | None = None
    cause: str | None = None

    @property
    def entered(self) -> list[str]:
        return [s.name for s in self.states]

    @property
    def transitions(self) -> set[tuple[str, str]]:
        """(state, how it left): every Choice branch and Catch taken."""
        return {(s.name, s.via) for s in self.states if s.via is not None}

    def first(self, name: str) -> Entered:
        for state in self.states:
            if state.name == name:
                return state
        raise KeyError(f"{name!r} was not entered: {self.entered}")


def _effective_input(state: Mapping[str, JSON], data: JSON, context: JSON) -> JSON:
    if "InputPath" in state and state["InputPath"] is None:
        return {}
    return read_path(data, state.get("InputPath", "$"), context)


def _output(state: Mapping[str, JSON], data: JSON, context: JSON) -> JSON:
    if "OutputPath" in state and state["OutputPath"] is None:
        return {}
    return read_path(data, state.get("OutputPath", "$"), context)


def _matches(error: str, names: list[str]) -> bool:
    if error in UNCATCHABLE:
        return False
    return any(
        name in (error, "States.ALL") or (name == "States.TaskFailed" and error != "States.Timeout")
        for name in names
    )


REFUSED_TYPES: Final = frozenset({"Map", "Parallel"})


def run(
    definition: Mapping[str, JSON],
    start_input: JSON,
    tasks: TaskHandler,
    *,
    name: str = "run-1",
    uuid: Callable[[], str] | None = None,
    role_arn: str = "arn:aws:iam::123456789012:role/state-machine",
    state_machine_arn: str = "arn:aws:states:eu-west-1:123456789012:stateMachine:machine",
    max_states: int = 1000,
) -> Execution:
    """Run the machine from ``start_input`` to its end, calling ``tasks`` for each Task state."""
    states: Mapping[str, Mapping[str, JSON]] = definition["States"]
    execution_arn = state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
    context: dict[str, JSON] = {
        "Execution": {
            "Id": execution_arn,
            "Input": copy.deepcopy(start_input),
            "Name": name,
            "RoleArn": role_arn,
            "StartTime": "2026-12-01T09:00:00.000Z",
        },
        "StateMachine": {"Id": state_machine_arn, "Name": state_machine_arn.rsplit(":", 1)[-1]},
        "State": {},
    }
    runtime = Runtime(context=context, uuid=uuid or (lambda: str(uuid_module.uuid4())))
    record: list[Entered] = []
    data = copy.deepcopy(start_input)
    current: str | None = definition["StartAt"]
    while current is not None:
        if len(record) >= max_states:
            raise RuntimeError(
                f"more than {max_states} states entered: a loop? {[s.name for s in record[-20:]]}"
            )
        if current not in states:
            raise runtime_error(f"no state named {current!r}")
        state = states[current]
        kind = str(state["Type"])
        if kind in REFUSED_TYPES:
            raise NotImplementedError(f"{kind} states are not implemented by this interpreter")
        context["State"] = {"Name": current, "EnteredTime": "2026-12-01T09:00:00.000Z", "RetryCount": 0}
        entered = Entered(current, kind, copy.deepcopy(data))
        record.append(entered)
        try:
            data, current = _step(state, kind, data, runtime, tasks, entered)
        except StatesError as error:
            entered.error = error
            return Execution("FAILED", record, None, error.error, error.cause)
        entered.output = copy.deepcopy(data)
        entered.next = current
        if kind == "Fail":
            return Execution("FAILED", record, None, str(state.get("Error")), state.get("Cause"))
    return Execution("SUCCEEDED", record, data)


def _step(
    state: Mapping[str, JSON],
    kind: str,
    data: JSON,
    runtime: Runtime,
    tasks: TaskHandler,
    entered: Entered,
) -> tuple[JSON, str | None]:
    """One state: its output and the next state's name (None at the end)."""
    context = runtime.context

    def leave(output: JSON) -> tuple[JSON, str | None]:
        if state.get("End"):
            entered.via = None
            return output, None
        entered.via = "Next"
        return output, str(state["Next"])

    if kind == "Succeed":
        entered.via = None
        return _output(state, _effective_input(state, data, context), context), None
    if kind == "Fail":
        entered.via = None
        return data, None
    if kind == "Wait":
        return leave(_output(state, _effective_input(state, data, context), context))
    if kind == "Choice":
        effective = _effective_input(state, data, context)
        for position, rule in enumerate(state.get("Choices", [])):
            if evaluate_rule(rule, effective, runtime):
                entered.via = f"Choices[{position}]"
                return _output(state, effective, context), str(rule["Next"])
        if "Default" not in state:
            raise StatesError("States.NoChoiceMatched", f"no Choice rule matched in {entered.name!r}")
        entered.via = "Default"
        return _output(state, effective, context), str(state["Default"])
    if kind == "Pass":
        effective = _effective_input(state, data, context)
        if "Result" in state:
            result = copy.deepcopy(state["Result"])
        elif "Parameters" in state:
            result = apply_template(state["Parameters"], effective, runtime)
        else:
            result = effective
        combined = write_path(data, state.get("ResultPath", "$"), result)
        return leave(_output(state, combined, context))
    if kind == "Task":
        effective = _effective_input(state, data, context)
        parameters = (
            apply_template(state["Parameters"], effective, runtime) if "Parameters" in state else effective
        )
        entered.parameters = copy.deepcopy(parameters)
        call = TaskCall(
            entered.name, str(state["Resource"]), copy.deepcopy(parameters), copy.deepcopy(context)
        )
        try:
            result = tasks(call)
        except TaskFailure as failure:
            entered.error = failure
            for position, catcher in enumerate(state.get("Catch", [])):
                if _matches(failure.error, catcher["ErrorEquals"]):
                    caught = write_path(
                        data, catcher.get("ResultPath", "$"), {"Error": failure.error, "Cause": failure.cause}
                    )
                    entered.via = f"Catch[{position}]"
                    return caught, str(catcher["Next"])
            raise
        entered.result = copy.deepcopy(result)
        if "ResultSelector" in state:
            result = apply_template(state["ResultSelector"], result, runtime)
        combined = write_path(data, state.get("ResultPath", "$"), result)
        return leave(_output(state, combined, context))
    raise runtime_error(f"unknown state type {kind!r}")
