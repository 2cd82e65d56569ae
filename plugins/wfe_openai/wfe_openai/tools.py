"""Tools the model may call: functions whose JSON schema comes from signature and docstring."""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import inspect
import json
import pathlib
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin, overload

import jsonschema

from wfcore import ECSWorkflowEngine, Task
from wfcore.adapters import run_blocking
from wfcore.wire import json_kind

from .records import _schema_error_text

__all__ = ["Tool", "ToolArgumentsError", "as_tool", "tool"]

# What the API allows in a function name; matched whole (fullmatch): "$" alone
# would let a trailing newline through, which the API refuses with every request.
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ToolArgumentsError(ValueError):
    """The model called a tool with arguments that do not fit its schema."""


class Tool:
    """A function the model may call, with the JSON schema of its arguments.

    :param function: a plain or ``async def`` function. Its arguments arrive as
        keyword arguments; a parameter annotated :class:`~wfcore.Task` or
        :class:`~wfcore.ECSWorkflowEngine` receives the running task or engine
        instead and is left out of the schema.
    :param name: the name the model sees; the function's name by default.
    :param description: what the tool does; the docstring's first paragraph by default.
    :param parameters: a JSON Schema object for the arguments; derived from the
        signature (type hints, defaults) and the docstring's parameter
        descriptions (``:param x:`` or an ``Args:`` section) by default.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if not callable(function):
            raise TypeError(f"a tool needs a callable, not {function!r}")
        self.function = function
        self.name: str = name if name else getattr(function, "__name__", "")
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ValueError(
                f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-' (pass name=...)"
            )
        summary, param_docs = _parse_docstring(inspect.getdoc(function) or "")
        self.description = description if description is not None else summary
        self._injected = _injected_parameters(function)
        self._converters = _converters(function)
        if parameters is None:
            self.parameters = _schema_from_signature(function, param_docs, self._injected)
        else:
            if not isinstance(parameters, Mapping):
                raise TypeError(f"tool {self.name!r}: parameters must be a JSON Schema object")
            # The copy is checked: jsonschema's "object" is a dict, not any Mapping.
            self.parameters = dict(parameters)
            jsonschema.validators.validator_for(self.parameters).check_schema(self.parameters)
        self._validator = jsonschema.validators.validator_for(self.parameters)(self.parameters)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, so a decorated function stays usable."""
        return self.function(*args, **kwargs)

    def spec(self) -> dict[str, Any]:
        """The tool as the chat completions API describes it (``tools=[...]``)."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    def parse_arguments(self, raw: str | Mapping[str, Any] | None) -> dict[str, Any]:
        """Decode and check the arguments the model sent; ToolArgumentsError if unfit.

        ``raw`` is the JSON text the API sends, or an object already decoded (as some
        OpenAI-compatible servers send it); either is checked against the schema.
        """
        if isinstance(raw, Mapping):
            arguments: Any = dict(raw)
        elif raw is None or isinstance(raw, str):
            try:
                arguments = json.loads(raw) if raw and raw.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolArgumentsError(f"arguments are not valid JSON: {exc}") from None
        else:
            arguments = raw
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(f"arguments must be a JSON object, not {json_kind(arguments)}")
        problems = sorted(
            self._validator.iter_errors(arguments), key=lambda e: list(e.absolute_path)
        )
        if problems:
            raise ToolArgumentsError(
                "; ".join(
                    f"{'/'.join(str(p) for p in e.absolute_path) or '(arguments)'}: "
                    f"{self._problem_text(e)}"
                    for e in problems
                )
            )
        return arguments

    def _problem_text(self, error: jsonschema.ValidationError) -> str:
        """A schema error as the model should read it: extra arguments by name, with
        the ones the tool takes."""
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        if (
            error.validator != "additionalProperties"
            or error.validator_value is not False
            or "patternProperties" in schema
            or not isinstance(error.instance, dict)
        ):
            return _schema_error_text(error)
        allowed = list(schema.get("properties") or {})
        extra = ", ".join(repr(k) for k in sorted(error.instance) if k not in allowed)
        if error.absolute_path:  # inside an argument: an object's fields
            known = f"allowed: {', '.join(allowed)}" if allowed else "no fields allowed"
        else:
            known = f"takes {', '.join(allowed)}" if allowed else "takes no arguments"
            known = f"{self.name} {known}"
        return f"unexpected {extra} ({known})"

    async def invoke(self, arguments: dict[str, Any], task: Task, engine: ECSWorkflowEngine) -> Any:
        """Run the tool: await an async function, run a plain one in a thread."""
        kwargs = dict(arguments)
        for param, convert in self._converters.items():
            if kwargs.get(param) is not None:
                try:
                    kwargs[param] = convert(kwargs[param])
                except (TypeError, ValueError) as exc:  # pydantic's ValidationError too
                    raise ToolArgumentsError(f"{param}: {exc}") from None
        for param, kind in self._injected.items():
            kwargs[param] = task if kind is Task else engine
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**kwargs)
        # A daemon thread of wfcore's: a tool blocked for good does not keep a
        # stopped worker's process from exiting.
        result = await run_blocking(self.function, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function a :class:`Tool`: ``@tool`` or ``@tool(name=..., parameters=...)``."""
    if function is not None:
        return Tool(function, name=name, description=description, parameters=parameters)

    def decorate(fn: Callable[..., Any]) -> Tool:
        return Tool(fn, name=name, description=description, parameters=parameters)

    return decorate


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    """A Tool as is, or a function wrapped in one."""
    return obj if isinstance(obj, Tool) else Tool(obj)


# -- schema from a signature ---------------------------------------------------------


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:
        pass
    # Some forward reference does not resolve (a class local to a function, say):
    # resolve the annotations one by one, keeping the others.
    hints: dict[str, Any] = {}
    namespace = getattr(function, "__globals__", {})
    for name, annotation in getattr(function, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)
            except Exception:
                pass
        hints[name] = annotation
    return hints


def _injected_parameters(function: Callable[..., Any]) -> dict[str, type]:
    hints = _hints(function)
    injected: dict[str, type] = {}
    for name in inspect.signature(function).parameters:
        hint = hints.get(name)
        if hint is Task or hint == "Task":
            injected[name] = Task
        elif hint is ECSWorkflowEngine or hint == "ECSWorkflowEngine":
            injected[name] = ECSWorkflowEngine
    return injected


def _converters(function: Callable[..., Any]) -> dict[str, Callable[[Any], Any]]:
    """Parameters whose JSON value must become other objects: enum members, pydantic
    models, tuples and sets, also inside lists, dicts and ``X | None``."""
    return {
        name: functools.partial(_convert, hint)
        for name, hint in _hints(function).items()
        if name != "return" and _needs_conversion(hint)
    }


def _is_model(hint: Any) -> bool:
    """True for a pydantic (v2) model class."""
    return isinstance(hint, type) and callable(getattr(hint, "model_validate", None))


def _needs_conversion(hint: Any) -> bool:
    """True if a JSON value for ``hint`` is not already what the function expects."""
    if _text_parser(hint) is not None:
        return True
    if isinstance(hint, type) and (issubclass(hint, enum.Enum) or _is_model(hint)):
        return True
    if isinstance(hint, type) and issubclass(hint, (tuple, set, frozenset)):
        return True
    if typing.is_typeddict(hint):
        return any(_needs_conversion(h) for h in _typeddict_hints(hint).values())
    origin = get_origin(hint)
    if origin is Literal or origin is None:
        return False
    args = get_args(hint)
    if (origin is dict or _is_mapping(origin)) and len(args) == 2 and args[0] not in (str, Any):
        return True  # JSON object keys are text: dict[int, ...] wants them as numbers
    return origin in (tuple, set, frozenset) or any(_needs_conversion(a) for a in args)


def _convert(hint: Any, value: Any) -> Any:
    """``value`` (checked against the schema of ``hint``) as the object ``hint`` asks for.

    Raises TypeError or ValueError (pydantic's ValidationError is one) when it cannot.
    """
    if value is None:
        return None
    origin = get_origin(hint)
    args = get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value)
        for option in options:
            # The first option the value fits, as the schema's anyOf lists them.
            try:
                return _convert(option, value)
            except (TypeError, ValueError):
                continue
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if _is_model(hint):
        return hint.model_validate(value)
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, not {json_kind(value)}")
        fields = _typeddict_hints(hint)
        return {k: _convert(fields[k], v) if k in fields else v for k, v in value.items()}
    container = origin if origin is not None else hint
    if isinstance(container, type) and issubclass(container, (list, tuple, set, frozenset)):
        if not isinstance(value, list):
            raise TypeError(f"expected an array, not {json_kind(value)}")
        if container is tuple and args and args[-1] is not Ellipsis:
            return tuple(_convert(a, v) for a, v in zip(args, value, strict=False))
        items = [_convert(args[0], v) for v in value] if args else list(value)
        return items if container is list else container(items)
    if origin is not None and _is_sequence(origin):
        if not isinstance(value, list):
            raise TypeError(f"expected an array, not {json_kind(value)}")
        return [_convert(args[0], v) for v in value] if args else value
    if origin is not None and (origin is dict or _is_mapping(origin)):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, not {json_kind(value)}")
        if len(args) != 2:
            return value
        return {_convert_key(args[0], k): _convert(args[1], v) for k, v in value.items()}
    parse = _text_parser(hint)
    if parse is not None:
        return parse(value)
    plain = _PLAIN_TYPES.get(hint)
    if plain is not None and not isinstance(value, plain):
        # Lets a union try its next option (str | Colour given "red", say).
        raise TypeError(f"expected {hint.__name__}, not {json_kind(value)}")
    return value


def _convert_key(hint: Any, key: str) -> Any:
    """A JSON object's key (always text) as the dict key type ``hint`` asks for: a
    number, an enum member, a date, ...; ValueError naming a key that is none."""
    if hint in (str, Any) or isinstance(hint, str):
        return key
    if hint is int or hint is float:
        try:
            return hint(key) if key.strip() == key else hint("")
        except ValueError:
            what = "a whole number" if hint is int else "a number"
            raise ValueError(f"the key {key!r} is not {what}") from None
    if hint is bool:
        if key not in ("true", "false"):
            raise ValueError(f"the key {key!r} is not true or false")
        return key == "true"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        for member in hint:
            if key in (member.value, str(member.value)):
                return member
        raise ValueError(f"the key {key!r} is not one of {[str(m.value) for m in hint]}")
    if get_origin(hint) is Literal:
        for choice in get_args(hint):
            if key == str(choice):
                return choice
        raise ValueError(f"the key {key!r} is not one of {[str(c) for c in get_args(hint)]}")
    if _text_parser(hint) is not None:
        return _convert(hint, key)
    return key


#: The JSON values a plain type hint takes (JSON has no separate int and bool).
_PLAIN_TYPES: dict[Any, type | tuple[type, ...]] = {
    str: str,
    int: int,
    float: (int, float),
    bool: bool,
    dict: dict,
    list: list,
}


def _from_text(parse: Callable[[str], Any], form: str) -> Callable[[Any], Any]:
    """A parser of the JSON text for a type, whose error names the form it needs."""

    def parse_text(value: Any) -> Any:
        try:
            return parse(str(value))
        except (ValueError, ArithmeticError):  # Decimal's InvalidOperation is the latter
            raise ValueError(f"{value!r} is not {form}") from None

    return parse_text


def _iso_datetime(text: str) -> datetime.datetime:
    # Python before 3.11 does not read the "Z" (UTC) that models often send.
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    return datetime.datetime.fromisoformat(text)


#: Types whose values arrive as JSON text (or, for Decimal, a number too), made
#: into objects of the type before the tool is called.
_TEXT_TYPES: dict[Any, Callable[[Any], Any]] = {
    datetime.datetime: _from_text(_iso_datetime, "an ISO 8601 date and time"),
    datetime.date: _from_text(datetime.date.fromisoformat, "an ISO 8601 date (YYYY-MM-DD)"),
    datetime.time: _from_text(datetime.time.fromisoformat, "an ISO 8601 time (HH:MM[:SS])"),
    uuid.UUID: _from_text(uuid.UUID, "a UUID"),
    decimal.Decimal: _from_text(decimal.Decimal, "a decimal number"),
}


def _text_parser(hint: Any) -> Callable[[Any], Any] | None:
    """How a JSON value becomes a ``hint`` given as text (a date, a path, ...); None
    for other hints."""
    if hint in _TEXT_TYPES:
        return _TEXT_TYPES[hint]
    if isinstance(hint, type) and issubclass(hint, pathlib.PurePath):
        return hint
    return None


def _typeddict_hints(hint: Any) -> dict[str, Any]:
    return typing.get_type_hints(hint)


def _schema_from_signature(
    function: Callable[..., Any], param_docs: dict[str, str], injected: Mapping[str, type]
) -> dict[str, Any]:
    hints = _hints(function)
    properties: dict[str, Any] = {}
    required: list[str] = []
    takes_any = False
    # The definitions pydantic models refer to ("$ref": "#/$defs/Address"), which
    # resolve only from the root of the parameters' schema.
    defs: dict[str, Any] = {}
    for name, param in inspect.signature(function).parameters.items():
        if name in injected or name == "self":
            continue
        if param.kind is param.VAR_KEYWORD:
            takes_any = True
            continue
        if param.kind is param.VAR_POSITIONAL:
            continue
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(
                f"tool {function.__name__!r}: positional-only parameter {name!r} cannot "
                "receive a JSON argument"
            )
        schema = _type_schema(hints.get(name, param.annotation), defs, function)
        if name in param_docs:
            schema = {**schema, "description": param_docs[name]}
        if param.default is param.empty:
            required.append(name)
        elif _jsonable(param.default) and param.default is not None:
            schema = {**schema, "default": param.default}
        properties[name] = schema
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if defs:
        schema["$defs"] = defs
    if not takes_any:
        # An argument the function does not take would fail the call with a
        # TypeError; refused by the schema check, the model is told which it takes.
        schema["additionalProperties"] = False
    return schema


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    dict: {"type": "object"},
    list: {"type": "array"},
    tuple: {"type": "array"},
    set: {"type": "array"},
    type(None): {"type": "null"},
    Any: {},
    # The form tells the model what the function's type takes (_TEXT_TYPES).
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    uuid.UUID: {"type": "string", "format": "uuid"},
    decimal.Decimal: {"type": ["number", "string"]},
}


def _type_schema(hint: Any, defs: dict[str, Any], function: Callable[..., Any]) -> dict[str, Any]:
    """A JSON Schema for a type hint; unannotated parameters are strings.

    The definitions of models go into ``defs``, for the root of the tool's schema.
    """
    if hint is inspect.Parameter.empty:
        return {"type": "string"}
    if isinstance(hint, str):
        return {}  # an annotation that did not resolve: accept any value
    if hint in _SIMPLE:
        return dict(_SIMPLE[hint])
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [m.value for m in hint]}
    if isinstance(hint, type) and issubclass(hint, pathlib.PurePath):
        return {"type": "string"}
    model_schema = getattr(hint, "model_json_schema", None)
    if isinstance(hint, type) and callable(model_schema):
        return _lift_defs(dict(model_schema()), defs, function)  # a pydantic model
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        options = [_type_schema(a, defs, function) for a in args if a is not type(None)]
        nullable = len(options) < len(args)
        if len(options) == 1 and not nullable:
            return options[0]
        if len(options) == 1 and "type" in options[0] and isinstance(options[0]["type"], str):
            return {**options[0], "type": [options[0]["type"], "null"]}
        if nullable:
            options.append({"type": "null"})
        return {"anyOf": options}
    if origin in (list, tuple, set, frozenset) or (origin is not None and _is_sequence(origin)):
        schema: dict[str, Any] = {"type": "array"}
        if origin is tuple and args and args[-1] is not Ellipsis:
            schema["prefixItems"] = [_type_schema(a, defs, function) for a in args]
        elif args:
            schema["items"] = _type_schema(args[0], defs, function)
        return schema
    if origin is dict or (origin is not None and _is_mapping(origin)):
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = _type_schema(args[1], defs, function)
        return schema
    if typing.is_typeddict(hint):
        hints = typing.get_type_hints(hint)
        return {
            "type": "object",
            "properties": {k: _type_schema(v, defs, function) for k, v in hints.items()},
            "required": sorted(getattr(hint, "__required_keys__", hints)),
        }
    return {}


def _lift_defs(
    schema: dict[str, Any], defs: dict[str, Any], function: Callable[..., Any]
) -> dict[str, Any]:
    """``schema`` without its ``$defs``, which join ``defs``."""
    for name, definition in schema.pop("$defs", {}).items():
        if name in defs and defs[name] != definition:
            raise TypeError(
                f"tool {getattr(function, '__name__', function)!r}: two different types "
                f"are named {name!r} in its parameters; rename one, or pass parameters="
            )
        defs[name] = definition
    return schema


def _is_sequence(origin: Any) -> bool:
    import collections.abc as abc

    return isinstance(origin, type) and issubclass(origin, abc.Sequence) and origin is not str


def _is_mapping(origin: Any) -> bool:
    import collections.abc as abc

    return isinstance(origin, type) and issubclass(origin, abc.Mapping)


# -- docstrings ----------------------------------------------------------------------

_REST_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+):\s*(.*)$")
_GOOGLE_ENTRY = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?):\s*$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (first paragraph) and per-parameter descriptions of a docstring.

    Understands reST (``:param name: text``) and Google style (an ``Args:`` section
    of ``name (type): text`` entries); continuation lines are joined.
    """
    lines = doc.splitlines()
    summary: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(":") or _SECTION.match(line):
            break
        summary.append(line)
    params: dict[str, str] = {}
    current: str | None = None
    in_args = False
    entry_indent = 0
    for raw in lines:
        line = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        rest = _REST_PARAM.match(line)
        section = _SECTION.match(line)
        if rest:
            current, in_args = rest.group(1), False
            params[current] = rest.group(2)
        elif section:
            in_args = section.group(1) in ("Args", "Arguments", "Parameters")
            current, entry_indent = None, -1
        elif not line or line.startswith(":"):
            current = None if not in_args or line.startswith(":") else current
        elif in_args and (entry_indent < 0 or indent <= entry_indent) and _GOOGLE_ENTRY.match(line):
            match = _GOOGLE_ENTRY.match(line)
            assert match is not None
            entry_indent = indent
            current = match.group(1)
            params[current] = match.group(2)
        elif current is not None:
            params[current] = f"{params[current]} {line}".strip()
    return " ".join(summary), {k: v.strip() for k, v in params.items() if v.strip()}
