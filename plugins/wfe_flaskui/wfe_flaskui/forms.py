"""HTML forms from JSON Schemas: the fields an answer needs, and the answer read back from a post.

A phase's ``input_schema`` becomes one field per property when it describes an
object, or a single ``answer`` field otherwise; each field's inputs are named
``field.<name>`` (:data:`FIELD_PREFIX`), apart from the form's own fields. Widgets
by schema:

* ``enum`` -> a select (an array whose ``items`` has an ``enum`` -> checkboxes);
* ``boolean`` -> a checkbox; ``integer``/``number`` -> a number input;
* ``string`` -> a text input (``format: email``/``date``/``uri`` pick the matching
  input type), or a textarea when ``maxLength`` is over 200 or
  ``format`` is ``textarea``;
* an array of strings or numbers -> a textarea, one item a line;
* anything else (nested objects, mixed arrays) -> a JSON textarea, which takes
  text that is not JSON as a string when the schema accepts one.

A checkbox always answers (unticked is false, no box ticked is an empty list), so
one is marked required only when the schema asks for more (``const: true``,
``minItems``); otherwise a required one says what unticked means.

Parsing converts each value to its type, then validates the whole answer with
the schema; every problem is reported against the field it belongs to.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import jsonschema

from wfcore.model import answer_validator, resolve_ref
from wfcore.wire import object_without_repeats

__all__ = [
    "AnswerForm",
    "FormField",
    "answer_form",
    "parse_answer",
    "parse_json_text",
    "sent_answer",
    "typed_values",
]

#: The name of the single field used when the schema is not an object.
ANSWER = "answer"
#: What every schema field's input name starts with, so that a property may be
#: called anything, ``csrf_token`` and ``next`` included, without meeting the
#: form's own hidden fields.
FIELD_PREFIX = "field."
_TEXTAREA_OVER = 200
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_INPUT_TYPES = {"email": "email", "date": "date", "uri": "url", "time": "time"}


@attrs.define
class FormField:
    """One input of a generated form."""

    name: str
    label: str
    widget: str  # text, textarea, number, checkbox, select, checkboxes, lines, json
    required: bool = False
    description: str | None = None
    input_type: str = "text"
    options: list[tuple[str, str]] = attrs.field(factory=list)
    step: str | None = None
    minimum: Any = None
    maximum: Any = None
    max_length: int | None = None
    value: Any = None  # what the widget shows: a string, a bool, or a list of option values
    error: str | None = None
    #: What the form adds to the schema's description: how the widget is read.
    hint: str | None = None
    #: A JSON field whose schema accepts a string: text that is not JSON is one.
    text_ok: bool = False

    @property
    def input_name(self) -> str:
        """The name of the field's input(s) in the HTML form."""
        return FIELD_PREFIX + self.name

    def posted_name(self, form: Mapping[str, Any]) -> str:
        """The name the post carries this field's input under.

        Browsers send every line break in an input's name as CRLF, so a property
        named ``"a\nb"`` comes back as ``field.a\r\nb``; it still answers ``a\nb``.
        A multipart form (a task page's answer form, which takes a file) escapes that
        CRLF as ``%0D%0A`` (and ``"`` as ``%22``, which Werkzeug decodes), as the HTML
        standard says.
        """
        if self.input_name in form:
            return self.input_name
        sent = _LINE_BREAK.sub("\r\n", self.input_name)
        if sent in form:
            return sent
        return _LINE_BREAK.sub("%0D%0A", self.input_name)


@attrs.define
class AnswerForm:
    """The form for answering one waiting task.

    ``kind`` is ``"schema"`` (fields from the phase's ``input_schema``) or
    ``"free"`` (one answer box, read as text or JSON).
    """

    kind: str
    fields: list[FormField] = attrs.field(factory=list)
    free_text: str = ""
    free_format: str = "text"
    error: str | None = None
    #: Why the file sent with the answer was not stored (or must be chosen again).
    file_error: str | None = None

    @property
    def has_errors(self) -> bool:
        """True when the form or any field carries an error."""
        return bool(self.error or self.file_error) or any(f.error for f in self.fields)


def _main_type(schema: Mapping[str, Any]) -> str | None:
    """The one type a widget is chosen by: ``type`` itself, or the one non-null type
    of a list (a nullable field). None when the list gives a choice of types (a
    number input could not take the string ``["integer", "string"]`` also allows),
    except integer or number, which is a number."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = {k for k in kind if k != "null"}
        if kinds == {"integer", "number"}:
            return "number"
        return kinds.pop() if len(kinds) == 1 else None
    if kind is None and "enum" in schema:
        return "enum"
    return kind if isinstance(kind, str) else None


def _option_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _option_label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _accepts_string(schema: Any, root: Mapping[str, Any], depth: int = 0) -> bool:
    """True when a string may be valid under ``schema``: its type says so, one of its
    ``anyOf``/``oneOf`` options does, or it says nothing about the type at all."""
    if not isinstance(schema, Mapping) or depth > _MAX_REFS:
        return False
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        return _accepts_string(_pointer(root, ref), root, depth + 1)
    kind = schema.get("type")
    if kind is not None:
        return kind == "string" or (isinstance(kind, list) and "string" in kind)
    options = [o for key in ("anyOf", "oneOf") for o in schema.get(key) or ()]
    if options:
        return any(_accepts_string(o, root, depth + 1) for o in options)
    if "const" in schema or "enum" in schema:
        return any(isinstance(v, str) for v in schema.get("enum", [schema.get("const")]))
    return not any(k in schema for k in ("properties", "items", "allOf", "not", "$ref"))


def _field_for(
    name: str, schema: Mapping[str, Any], required: bool, root: Mapping[str, Any] | None = None
) -> FormField:
    label = str(schema.get("title") or name.replace("_", " ").strip().capitalize() or name)
    field = FormField(
        name=name,
        label=label,
        widget="json",
        required=required,
        description=schema.get("description"),
    )
    kind = _main_type(schema)
    if "enum" in schema and isinstance(schema["enum"], list):
        field.widget = "select"
        field.options = [(_option_value(v), _option_label(v)) for v in schema["enum"]]
    elif kind == "boolean":
        field.widget = "checkbox"
        # Unticked answers false, which "required" alone accepts: the asterisk would
        # promise a check the answer does not get.
        field.required = required and schema.get("const") is True
        if required and not field.required:
            field.hint = "Unticked means no."
    elif kind in ("integer", "number"):
        field.widget = "number"
        field.input_type = "number"
        field.step = "1" if kind == "integer" else "any"
        field.minimum = schema.get("minimum")
        field.maximum = schema.get("maximum")
    elif kind == "string":
        fmt = schema.get("format")
        max_length = schema.get("maxLength")
        field.max_length = max_length if isinstance(max_length, int) else None
        if fmt == "textarea" or (field.max_length or 0) > _TEXTAREA_OVER:
            field.widget = "textarea"
        else:
            field.widget = "text"
            field.input_type = _INPUT_TYPES.get(str(fmt), "text")
    elif kind == "array":
        items = schema.get("items")
        items = items if isinstance(items, Mapping) else {}
        if isinstance(items.get("enum"), list):
            field.widget = "checkboxes"
            field.options = [(_option_value(v), _option_label(v)) for v in items["enum"]]
            # No box ticked answers [], which "required" alone accepts.
            least = schema.get("minItems")
            field.required = required and isinstance(least, int) and least > 0
            if required and not field.required:
                field.hint = "None ticked means none."
        elif _main_type(items) in ("string", "integer", "number"):
            field.widget = "lines"
    if field.widget == "json":
        field.text_ok = _accepts_string(schema, root if root is not None else schema)
    field.value = _initial_value(field, schema.get("default"))
    return field


def _initial_value(field: FormField, default: Any) -> Any:
    if field.widget == "checkbox":
        return bool(default)
    if field.widget == "checkboxes":
        return [_option_value(v) for v in default] if isinstance(default, list) else []
    if default is None:
        return ""
    if field.widget == "select":
        return _option_value(default)
    if field.widget == "lines":
        return "\n".join(str(v) for v in default) if isinstance(default, list) else ""
    if field.widget == "json":
        return json.dumps(default, indent=2)
    return str(default)


def _is_object_schema(schema: Mapping[str, Any]) -> bool:
    return _main_type(schema) == "object" and isinstance(schema.get("properties"), Mapping)


#: How many ``$ref``s (or nullable unions) in a row are followed for one field.
_MAX_REFS = 20
_NULL = {"type": "null"}


def _pointer(root: Any, ref: str) -> Mapping[str, Any] | None:
    """The schema a local ``$ref`` names in ``root``, or None."""
    try:
        found = resolve_ref(root, ref)
    except LookupError:
        return None
    return found if isinstance(found, Mapping) else None


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema a field's widget is chosen by, as tools such as pydantic write them.

    A local ``$ref`` (``#/$defs/Name``) is followed, and ``anyOf``/``oneOf`` of one
    schema and ``{"type": "null"}`` is taken as that schema; the field's own keys
    (title, description, default) win over those of the schema it names. An
    array's ``items`` is resolved the same way. The answer is still validated
    against the schema as written.
    """
    for _ in range(_MAX_REFS):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            target = _pointer(root, ref)
            if target is None:
                break
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            continue
        nullable = None
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            others = [o for o in options if o != _NULL] if isinstance(options, list) else []
            if isinstance(options, list) and len(options) == 2 and len(others) == 1:
                nullable = key, others[0]
        if nullable is None or not isinstance(nullable[1], Mapping):
            break
        key, chosen = nullable
        schema = {**chosen, **{k: v for k, v in schema.items() if k != key}}
    items = schema.get("items")
    if isinstance(items, Mapping) and "$ref" in items:
        schema = {**schema, "items": _resolve(items, root)}
    return schema


def _field_schemas(schema: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], bool]]:
    """``(name, schema, required)`` of each field: one per property of an object
    schema, else the single ``answer`` field."""
    if not _is_object_schema(schema):
        return [(ANSWER, _resolve(schema, schema), True)]
    required = set(schema.get("required") or ())
    return [
        (name, _resolve(sub if isinstance(sub, Mapping) else {}, schema), name in required)
        for name, sub in schema["properties"].items()
    ]


def answer_form(schema: Mapping[str, Any] | None) -> AnswerForm:
    """An empty form for a phase with this ``input_schema`` (None: a free answer)."""
    if schema is None:
        return AnswerForm(kind="free")
    fields = [
        _field_for(name, sub, required, schema) for name, sub, required in _field_schemas(schema)
    ]
    if not _is_object_schema(schema):
        fields[0].label = str(schema.get("title") or "Answer")
    return AnswerForm(kind="schema", fields=fields)


class _Invalid(ValueError):
    pass


#: The deepest nesting of arrays and objects accepted in JSON input. Python's own
#: limit (about 1000 levels) would fail later, where the task is written or read.
MAX_JSON_DEPTH = 200


def parse_json_text(text: str) -> Any:
    """Parse JSON input; ValueError, with the reason, on anything that cannot be stored.

    Refused: NaN and Infinity (they are not JSON), a key given twice in one object
    (json.loads would keep the last value silently), nesting deeper than
    :data:`MAX_JSON_DEPTH`, and strings holding half of a UTF-16 surrogate pair
    (``"\\ud800"`` is valid JSON text but no character, so it cannot be saved).
    """

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not valid JSON")

    try:
        value = json.loads(text, parse_constant=refuse, object_pairs_hook=object_without_repeats)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_storable(value)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_storable(value: Any) -> None:
    """Walk parsed JSON without recursion; ValueError for deep nesting or a lone surrogate."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            strings = [item]
        elif isinstance(item, (list, dict)):
            if depth >= MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
            strings = list(item) if isinstance(item, dict) else []
        else:
            continue
        for text in strings:
            found = _SURROGATE.search(text)
            if found:
                raise ValueError(
                    f"the string {_short(text)!r} holds a lone surrogate "
                    f"\\u{ord(found.group()):04x}, half of a UTF-16 pair and no character"
                )


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_INTEGER_LITERAL = re.compile(r"[+-]?[0-9]+")


def _parse_number(text: str, integer: bool) -> int | float:
    """The number typed: an int for digits alone (exact, however large), else a float.

    ``integer`` fields also take a float that is whole (``1e3``, ``2.0``).
    """
    if _INTEGER_LITERAL.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise _Invalid("has too many digits") from None
    # float() also reads other scripts' digits and 1_000, which no number field sends.
    if not text.isascii() or "_" in text:
        raise _Invalid("must be a number")
    try:
        value = float(text)
    except ValueError:
        raise _Invalid("must be a number") from None
    if not math.isfinite(value):
        raise _Invalid("must be a finite number")
    if integer:
        if not value.is_integer():
            raise _Invalid("must be a whole number")
        return int(value)
    return value


def _read_field(field: FormField, schema: Mapping[str, Any], form: Mapping[str, Any]) -> Any:
    """Set ``field.value`` from the post; return the typed value, or _MISSING."""
    getlist = getattr(form, "getlist", None)
    name = field.posted_name(form)
    if field.widget == "checkbox":
        field.value = form.get(name) is not None
        return field.value
    if field.widget == "checkboxes":
        chosen = list(getlist(name)) if getlist else []
        field.value = chosen
        allowed = dict(field.options)
        if any(c not in allowed for c in chosen):
            raise _Invalid("choose from the listed options")
        return [json.loads(c) for c in chosen]
    raw = form.get(name)
    text = "" if raw is None else str(raw)
    field.value = text
    if field.widget == "select":
        if text == "":
            return _MISSING
        if text not in dict(field.options):
            raise _Invalid("choose one of the listed options")
        return json.loads(text)
    if field.widget in ("text", "textarea"):
        # An empty box means "no value", so a required one is reported as missing.
        return text if text != "" else _MISSING
    if text.strip() == "":
        return _MISSING
    if field.widget == "number":
        return _parse_number(text.strip(), _main_type(schema) == "integer")
    if field.widget == "lines":
        items = schema.get("items")
        item_type = _main_type(items if isinstance(items, Mapping) else {})
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if item_type in ("integer", "number"):
            try:
                return [_parse_number(line, item_type == "integer") for line in lines]
            except _Invalid as exc:
                raise _Invalid(f"each line {exc}") from None
        return lines
    try:
        return parse_json_text(text)
    except ValueError as exc:
        if field.text_ok:
            return text  # plain words for a field that takes a string: that string
        raise _Invalid(f"not valid JSON: {exc}") from None


_MISSING = object()


def parse_answer(
    schema: Mapping[str, Any] | None, form: Mapping[str, Any]
) -> tuple[Any, AnswerForm]:
    """Read an answer from posted form data.

    Returns ``(answer, form)``; ``form`` holds the posted values and, when the
    answer is unusable, an error beside each offending field (``form.has_errors``).
    """
    if schema is None:
        return _parse_free(form)
    result = answer_form(schema)
    single = not _is_object_schema(schema)
    answer: Any = {}
    left_empty = False  # the single field, when there is one, was left empty
    for field, (_, sub, _) in zip(result.fields, _field_schemas(schema), strict=True):
        try:
            value = _read_field(field, sub, form)
        except _Invalid as exc:
            field.error = str(exc)
            continue
        if single:
            left_empty = value is _MISSING
            answer = None if left_empty else value
        elif value is not _MISSING:
            answer[field.name] = value
    if single and result.has_errors:
        return None, result
    # Fields that could not be read are left out of the answer, and keep their own
    # error; the schema still judges the others, so that every problem shows at once.
    by_name = {f.name: f for f in result.fields}
    # Formats (email, date, ...) are checked as the engine checks them when it takes
    # the answer (with the same validator), so that they too show by their field.
    validator = answer_validator(dict(schema))
    for error in sorted(validator.iter_errors(answer), key=lambda e: list(e.absolute_path)):
        path = list(error.absolute_path)
        if single:
            target = by_name[ANSWER]
        elif error.validator == "required" and not path:
            # The "required" keyword's value, which jsonschema went through to find
            # the missing names (a list, in a schema that passes check_schema).
            required = error.validator_value
            assert isinstance(required, Iterable)
            missing = [n for n in required if n not in answer]
            for name in missing:
                if name in by_name and by_name[name].error is None:
                    by_name[name].error = "required"
            if missing and all(n in by_name for n in missing):
                continue
            target = None
        else:
            target = by_name.get(str(path[0])) if path else None
        message = _message(error, single or not path)
        if left_empty:
            # The schema refused the None an empty box stands for ("None is not of
            # type 'string'"): say what the person has to do.
            message = "an answer is required"
        if target is None:
            result.error = result.error or message
        elif target.error is None:
            target.error = message
    return (None if result.has_errors else answer), result


def _message(error: jsonschema.ValidationError, top: bool) -> str:
    path = list(error.absolute_path)
    if error.validator in ("anyOf", "oneOf"):
        # "9 is not valid under any of the given schemas" says nothing of why: name
        # the problem of an option the value has the type of (9 > a maximum of 5,
        # rather than 9 not being null), when there is one.
        typed = [e for e in error.context or () if e.validator != "type"]
        if typed:
            error = jsonschema.exceptions.best_match(typed) or error
    inner = "/".join(str(p) for p in path[1:]) if not top else ""
    if error.validator == "enum":
        text = "choose one of the listed options"
    elif error.validator == "format":
        # jsonschema says "'x' is not a 'email'"; the field already shows the 'x'.
        text = f"must be a valid {error.validator_value}"
    else:
        text = error.message
    return f"{inner}: {text}" if inner else text


def typed_values(
    schema: Mapping[str, Any] | None, form: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """What a person typed into an answer form for this schema, as ``(label, text)``
    pairs to show back to them when the answer cannot be taken (its question is gone).

    Fields left empty are left out. A post with no schema field in it was a free answer.
    """
    if schema is None or not any(str(k).startswith(FIELD_PREFIX) for k in form):
        text = str(form.get(ANSWER) or "")
        return [("Answer", text)] if text.strip() else []
    shown = []
    result = answer_form(schema)
    for field, (_, sub, _) in zip(result.fields, _field_schemas(schema), strict=True):
        try:
            _read_field(field, sub, form)
        except _Invalid:
            pass  # field.value still holds what was typed
        labels = dict(field.options)
        if field.widget == "checkbox":
            text = "yes" if field.value else "no"
        elif field.widget == "checkboxes":
            text = ", ".join(labels.get(v, v) for v in field.value)
        elif field.widget == "select":
            text = labels.get(field.value, field.value)
        else:
            text = str(field.value)
        if text.strip():
            shown.append((field.label, text))
    return shown


def sent_answer(schema: Mapping[str, Any] | None, form: Mapping[str, Any]) -> tuple[Any] | None:
    """The answer a post carries, read as the form for this schema reads it: ``(value,)``,
    or None when it cannot be read (an invalid one). A post with no schema field in it
    was a free answer."""
    if schema is None or not any(str(k).startswith(FIELD_PREFIX) for k in form):
        schema = None
    value, result = parse_answer(schema, form)
    return None if result.has_errors else (value,)


def _parse_free(form: Mapping[str, Any]) -> tuple[Any, AnswerForm]:
    text = str(form.get(ANSWER) or "")
    fmt = "json" if form.get("answer_format") == "json" else "text"
    result = AnswerForm(kind="free", free_text=text, free_format=fmt)
    if fmt == "text":
        if not text.strip():
            result.error = "write an answer"
            return None, result
        return text, result
    try:
        return parse_json_text(text), result
    except ValueError as exc:
        result.error = f"not valid JSON: {exc}"
        return None, result
