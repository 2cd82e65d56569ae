"""Forms generated from JSON Schemas, the workflow graph, and the engine bridge."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any

import pytest
from flaskui_helpers import Api, wait_for
from werkzeug.datastructures import MultiDict
from wfe_flaskui import Dashboard, EngineBridge, create_app, workflow_svg
from wfe_flaskui.bridge import BridgeError
from wfe_flaskui.forms import answer_form, parse_answer
from wfe_flaskui.graph import phase_edges

from wfcore import ECSWorkflowEngine, Phase, WorkflowSpec

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "title": "Your name"},
        "age": {"type": "integer", "minimum": 0},
        "ratio": {"type": "number"},
        "ok": {"type": "boolean"},
        "level": {"enum": ["low", "high", 3]},
        "colours": {"type": "array", "items": {"enum": ["red", "blue"]}},
        "lines": {"type": "array", "items": {"type": "integer"}},
        "extra": {"type": "object"},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["name", "level"],
}


def test_fields_follow_the_schema() -> None:
    form = answer_form(SCHEMA)
    widgets = {f.name: f.widget for f in form.fields}
    assert widgets == {
        "name": "text",
        "age": "number",
        "ratio": "number",
        "ok": "checkbox",
        "level": "select",
        "colours": "checkboxes",
        "lines": "lines",
        "extra": "json",
        "email": "text",
    }
    by_name = {f.name: f for f in form.fields}
    assert by_name["name"].label == "Your name"
    assert by_name["name"].required and by_name["level"].required
    assert not by_name["age"].required
    assert by_name["level"].options == [('"low"', "low"), ('"high"', "high"), ("3", "3")]
    assert by_name["age"].step == "1" and by_name["ratio"].step == "any"
    assert by_name["email"].input_type == "email"


def test_a_full_answer_is_typed() -> None:
    posted = MultiDict(
        [
            ("field.name", "Ada"),
            ("field.age", "36"),
            ("field.ratio", "0.5"),
            ("field.ok", "true"),
            ("field.level", "3"),
            ("field.colours", '"red"'),
            ("field.colours", '"blue"'),
            ("field.lines", "1\n 2 \n\n3"),
            ("field.extra", '{"a": [1]}'),
        ]
    )
    answer, form = parse_answer(SCHEMA, posted)
    assert not form.has_errors
    assert answer == {
        "name": "Ada",
        "age": 36,
        "ratio": 0.5,
        "ok": True,
        "level": 3,
        "colours": ["red", "blue"],
        "lines": [1, 2, 3],
        "extra": {"a": [1]},
    }


def test_problems_are_reported_beside_their_fields() -> None:
    posted = MultiDict(
        [
            ("field.age", "-4"),
            ("field.ratio", "lots"),
            ("field.level", '"medium"'),
            ("field.extra", "{"),
            ("field.name", ""),
        ]
    )
    answer, form = parse_answer(SCHEMA, posted)
    assert answer is None
    errors = {f.name: f.error for f in form.fields if f.error}
    assert errors["ratio"] == "must be a number"
    assert errors["level"] == "choose one of the listed options"
    assert errors["extra"].startswith("not valid JSON")
    # Values are kept so the person does not retype them.
    assert {f.name: f.value for f in form.fields}["ratio"] == "lots"

    # A field that cannot be read does not hide what the schema says of the others:
    # every problem is shown at the first try, not one kind per try.
    answer, form = parse_answer(SCHEMA, MultiDict([("field.age", "-4"), ("field.lines", "1\nx")]))
    errors = {f.name: f.error for f in form.fields if f.error}
    assert errors == {
        "lines": "each line must be a number",
        "age": "-4 is less than the minimum of 0",
        "name": "required",
        "level": "required",
    }
    assert answer is None

    answer, form = parse_answer(SCHEMA, MultiDict([("field.age", "-4")]))
    errors = {f.name: f.error for f in form.fields if f.error}
    assert errors == {
        "name": "required",
        "level": "required",
        "age": "-4 is less than the minimum of 0",
    }
    assert parse_answer(SCHEMA, MultiDict([("field.age", "2.5")]))[1].fields[1].error == (
        "must be a whole number"
    )


def test_formats_are_checked_beside_their_fields_with_the_rest() -> None:
    # The engine checks formats too; found here they stand beside their fields.
    schema = {
        "type": "object",
        "properties": {
            "email": {"type": "string", "format": "email"},
            "when": {"type": "string", "format": "date"},
            "age": {"type": "integer", "minimum": 0},
        },
    }
    posted = MultiDict(
        [("field.email", "nobody"), ("field.when", "31/12/2026"), ("field.age", "-1")]
    )
    answer, form = parse_answer(schema, posted)
    assert answer is None
    assert {f.name: f.error for f in form.fields} == {
        "email": "must be a valid email",
        "when": "must be a valid date",
        "age": "-1 is less than the minimum of 0",
    }
    good = MultiDict([("field.email", "a@example.com"), ("field.when", "2026-12-31")])
    assert parse_answer(schema, good)[0] == {"email": "a@example.com", "when": "2026-12-31"}


def test_formats_are_the_ones_the_engine_checks() -> None:
    """The form refuses what the engine would refuse, and only that: a format the
    engine does not check (``time``, here) is not checked beside the field either."""
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "at": {"type": "string", "format": "date-time"},
            "clock": {"type": "string", "format": "time"},
        },
    }
    posted = MultiDict([("field.id", "nope"), ("field.at", "tomorrow"), ("field.clock", "25:99")])
    value, form = parse_answer(schema, posted)
    assert value is None
    assert {f.name: f.error for f in form.fields} == {
        "id": "must be a valid uuid",
        "at": "must be a valid date-time",
        "clock": None,
    }
    assert parse_answer(schema, MultiDict([("field.clock", "25:99")]))[0] == {"clock": "25:99"}


def test_numbers_keep_their_digits() -> None:
    def typed(field: str, text: str) -> object:
        posted = [("field.name", "Ada"), ("field.level", '"low"'), ("field." + field, text)]
        answer, form = parse_answer(SCHEMA, MultiDict(posted))
        assert not form.has_errors, [f.error for f in form.fields]
        return answer[field]

    assert typed("age", "12345678901234567890") == 12345678901234567890
    assert typed("age", "+7") == 7 and typed("age", "1e3") == 1000
    assert typed("ratio", "-12345678901234567890") == -12345678901234567890
    assert typed("ratio", "2.50") == 2.5 and typed("ratio", "1e3") == 1000.0
    assert typed("lines", "18446744073709551617\n-1") == [18446744073709551617, -1]

    def error(field: str, text: str) -> str | None:
        _, form = parse_answer(SCHEMA, MultiDict([("field." + field, text)]))
        return {f.name: f.error for f in form.fields}[field]

    assert error("age", "2.5") == "must be a whole number"
    assert error("ratio", "inf") == "must be a finite number"
    assert error("ratio", "1e999") == "must be a finite number"
    assert error("ratio", "twelve") == "must be a number"
    assert error("age", "9" * 5000) == "has too many digits"


def test_a_schema_that_is_not_an_object_is_one_field() -> None:
    schema = {"type": "string", "enum": ["yes", "no"], "title": "Approve?"}
    form = answer_form(schema)
    assert [(f.name, f.widget, f.label) for f in form.fields] == [("answer", "select", "Approve?")]
    assert parse_answer(schema, MultiDict([("field.answer", '"no"')]))[0] == "no"
    answer, form = parse_answer(schema, MultiDict([]))
    assert answer is None and form.fields[0].error == "an answer is required"
    for kind in ("string", "integer", "array"):
        _, form = parse_answer({"type": kind}, MultiDict([("field.answer", "")]))
        assert form.fields[0].error == "an answer is required", kind
    # A schema that takes null takes an empty box as null.
    answer, form = parse_answer({"type": ["string", "null"]}, MultiDict([("field.answer", "")]))
    assert answer is None and not form.has_errors


def test_refs_and_nullable_unions_get_the_widget_of_what_they_name() -> None:
    # What pydantic's model_json_schema() writes: enums and nested models behind
    # local $refs, Optional[X] as anyOf X or null.
    schema = {
        "$defs": {
            "Decision": {"enum": ["ship", "hold"], "title": "Decision", "type": "string"},
            "Scores": {"type": "array", "items": {"$ref": "#/$defs/Score"}},
            "Score": {"type": "integer"},
        },
        "type": "object",
        "properties": {
            "decision": {"$ref": "#/$defs/Decision"},
            "score": {"anyOf": [{"type": "integer", "maximum": 5}, {"type": "null"}]},
            "note": {"oneOf": [{"type": "null"}, {"type": "string"}], "title": "A note"},
            "history": {"$ref": "#/$defs/Scores", "title": "Past scores"},
            "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "nowhere": {"$ref": "#/$defs/Missing"},
        },
        "required": ["decision"],
    }
    form = answer_form(schema)
    widgets = {f.name: (f.widget, f.label) for f in form.fields}
    assert widgets == {
        "decision": ("select", "Decision"),
        "score": ("number", "Score"),
        "note": ("text", "A note"),
        "history": ("lines", "Past scores"),
        "either": ("json", "Either"),  # a real choice of types: JSON says which
        "nowhere": ("json", "Nowhere"),
    }
    posted = MultiDict(
        [
            ("field.decision", '"ship"'),
            ("field.score", "4"),
            ("field.note", "fine"),
            ("field.history", "3\n5"),
            ("field.either", "7"),
        ]
    )
    answer, form = parse_answer(schema, posted)
    assert not form.has_errors, [(f.name, f.error) for f in form.fields]
    assert answer == {
        "decision": "ship",
        "score": 4,
        "note": "fine",
        "history": [3, 5],
        "either": 7,
    }
    _, form = parse_answer(schema, MultiDict([("field.decision", '"ship"'), ("field.score", "9")]))
    assert {f.name: f.error for f in form.fields if f.error} == {
        "score": "9 is greater than the maximum of 5"
    }


def test_checkboxes_are_marked_required_only_when_unticked_would_be_refused() -> None:
    """An unticked box answers false (none ticked: []), which "required" accepts: the
    asterisk is kept for a box that must be ticked, and the others say what unticked
    means."""
    schema = {
        "type": "object",
        "properties": {
            "agree": {"type": "boolean"},
            "sworn": {"type": "boolean", "const": True},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
            "some": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1},
            "maybe": {"type": "boolean"},
        },
        "required": ["agree", "sworn", "tags", "some"],
    }
    fields = {f.name: f for f in answer_form(schema).fields}
    assert not fields["agree"].required and fields["agree"].hint == "Unticked means no."
    assert not fields["tags"].required and fields["tags"].hint == "None ticked means none."
    assert fields["sworn"].required and fields["sworn"].hint is None
    assert fields["some"].required and fields["some"].hint is None
    assert not fields["maybe"].required and fields["maybe"].hint is None

    value, form = parse_answer(schema, MultiDict())
    by_name = {f.name: f for f in form.fields}
    assert value is None
    assert by_name["agree"].error is None and by_name["tags"].error is None
    assert by_name["sworn"].error and by_name["some"].error
    ticked = MultiDict([("field.sworn", "true"), ("field.some", '"b"')])
    assert parse_answer(schema, ticked)[0] == {
        "agree": False,
        "sworn": True,
        "tags": [],
        "some": ["b"],
        "maybe": False,
    }


def test_a_json_field_that_takes_a_string_takes_plain_text() -> None:
    schema = {
        "type": "object",
        "$defs": {"Name": {"type": "string"}},
        "properties": {
            "any": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "ref": {"anyOf": [{"$ref": "#/$defs/Name"}, {"type": "object"}]},
            "loose": {},
            "obj": {"oneOf": [{"type": "object"}, {"type": "integer"}]},
        },
    }
    fields = {f.name: f for f in answer_form(schema).fields}
    assert {n: (f.widget, f.text_ok) for n, f in fields.items()} == {
        "any": ("json", True),
        "ref": ("json", True),
        "loose": ("json", True),
        "obj": ("json", False),
    }
    posted = MultiDict(
        [("field.any", "hello"), ("field.ref", "Ada Lovelace"), ("field.loose", "just words")]
    )
    assert parse_answer(schema, posted)[0] == {
        "any": "hello",
        "ref": "Ada Lovelace",
        "loose": "just words",
    }
    # JSON is still read as JSON; a field that takes no string still wants JSON.
    value, form = parse_answer(schema, MultiDict([("field.any", "42"), ("field.obj", "hello")]))
    assert value is None
    assert {f.name: f.error for f in form.fields}["obj"].startswith("not valid JSON")
    assert parse_answer(schema, MultiDict([("field.any", "42")]))[0] == {"any": 42}


def test_a_list_of_types_is_one_widget_only_when_it_names_one() -> None:
    """A nullable type is that type's widget; a choice of types is a JSON field, which
    takes plain text when a string is one of them: a number input would refuse the
    string that ``["integer", "string"]`` allows, and a text input could give no number."""
    schema = {
        "type": "object",
        "properties": {
            "maybe": {"type": ["integer", "null"]},
            "either": {"type": ["integer", "string"]},
            "flag": {"type": ["boolean", "string", "null"]},
            "amount": {"type": ["integer", "number"]},
            "shape": {"type": ["object", "array"]},
        },
    }
    fields = {f.name: f for f in answer_form(schema).fields}
    assert {n: (f.widget, f.text_ok) for n, f in fields.items()} == {
        "maybe": ("number", False),
        "either": ("json", True),
        "flag": ("json", True),
        "amount": ("number", False),
        "shape": ("json", False),
    }
    assert fields["amount"].step == "any"
    posted = MultiDict([("field.either", "hello"), ("field.flag", "true"), ("field.amount", "2.5")])
    assert parse_answer(schema, posted)[0] == {"either": "hello", "flag": True, "amount": 2.5}
    assert parse_answer(schema, MultiDict([("field.either", "7")]))[0] == {"either": 7}


def test_free_answers() -> None:
    assert parse_answer(None, MultiDict([("answer", "hi")]))[0] == "hi"
    value, _ = parse_answer(None, MultiDict([("answer", "[1]"), ("answer_format", "json")]))
    assert value == [1]
    _, form = parse_answer(None, MultiDict([("answer", "NaN"), ("answer_format", "json")]))
    assert form.error and "not valid JSON" in form.error
    assert parse_answer(None, MultiDict([("answer", "  ")]))[1].error == "write an answer"


def test_graph_draws_every_phase_and_route() -> None:
    spec = WorkflowSpec(
        name="g",
        phases=[
            Phase("a", assigned_to="human", next_classifications=["b", "c<x>"]),
            Phase("b", assigned_to="functional", next_classifications=["a"]),
            Phase("c<x>", on_timeout={"goto": "a"}, timeout=5, next_classifications=[]),
        ],
    )
    assert phase_edges(spec) == [
        ("a", "b", "next"),
        ("a", "c<x>", "next"),
        ("b", "a", "next"),
        ("c<x>", None, "next"),
        ("c<x>", "a", "timeout"),
    ]
    svg = str(workflow_svg(spec, {"a": 3}, link=lambda p: f"/t?p={p}&x=1", uid="u1"))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert len(re.findall(r'class="wfe-node ', svg)) == 3
    assert 'data-phase="a" data-count="3"' in svg
    assert "c&lt;x&gt;" in svg and "c<x>" not in svg
    assert 'href="/t?p=a&amp;x=1"' in svg
    assert svg.count('class="wfe-edge ') == 6  # five routes and the start arrow
    assert "stroke-dasharray" in svg
    assert 'class="wfe-node wfe-node-human"' in svg
    assert 'class="wfe-node wfe-node-default"' in svg
    assert 'id="u1-arrow"' in svg


def _boxes(svg: str) -> dict[str, tuple[float, float, float, float]]:
    """Each phase's box in a drawn graph: ``(left, top, right, bottom)``."""
    found = re.findall(
        r'<g class="wfe-node [^"]*" data-phase="([^"]*)"[^>]*><title>.*?</title>'
        r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"',
        svg,
    )
    return {
        n: (float(x), float(y), float(x) + float(w), float(y) + float(h)) for n, x, y, w, h in found
    }


def _route_points(d: str) -> list[tuple[float, float]]:
    """Points along a drawn route (an ``M x,y C x,y x,y x,y`` cubic Bezier curve)."""
    numbers = [float(n) for n in re.findall(r"-?[\d.]+", d)]
    (x0, y0, x1, y1, x2, y2, x3, y3) = numbers
    points = []
    for i in range(101):
        t = i / 100
        a, b, c, e = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
        points.append((a * x0 + b * x1 + c * x2 + e * x3, a * y0 + b * y1 + c * y2 + e * y3))
    return points


@pytest.mark.parametrize(
    "phases",
    [
        # a can skip b and c: its route to d must not hide behind them.
        [Phase("a", next_classifications=["b", "d"]), Phase("b"), Phase("c"), Phase("d")],
        # A triage that sends work to any of several teams, or straight to the end.
        [Phase("triage", next_classifications=["team1", "team2", "team3", "close"])]
        + [Phase(f"team{i}", next_classifications=["close"]) for i in (1, 2, 3)]
        + [Phase("close")],
        [
            Phase("x", next_classifications=["y", "z"]),
            Phase("y", on_timeout={"goto": "w"}, timeout=5),
            Phase("z"),
            Phase("w", next_classifications=["x", "z"]),
        ],
    ],
)
def test_graph_routes_never_run_through_another_phase(phases: list[Phase]) -> None:
    svg = str(workflow_svg(WorkflowSpec(name="g", phases=phases)))
    boxes = _boxes(svg)
    assert len(boxes) == len(phases)
    routes = re.findall(
        r'<path class="wfe-edge [^"]*" data-from="([^"]*)" data-to="([^"]*)" d="([^"]+)"', svg
    )
    drawn = {(src, dst) for src, dst, _ in routes}
    expected = {(s, d or "") for s, d, _ in phase_edges(WorkflowSpec(name="g", phases=phases))}
    assert drawn == expected
    for src, dst, d in routes:
        for name, (left, top, right, bottom) in boxes.items():
            if name in (src, dst):
                continue
            inside = [
                (round(x), round(y))
                for x, y in _route_points(d)
                if left + 2 < x < right - 2 and top + 2 < y < bottom - 2
            ]
            assert not inside, f"the route {src} -> {dst} runs through {name} at {inside[:3]}"


def test_bridge_calls_the_engine_from_threads_and_stops(wfe_store_url: str) -> None:
    engine = ECSWorkflowEngine(store=wfe_store_url, load_plugins=False)
    engine.register_workflow("w", [Phase("p", assigned_to="human")])
    bridge = EngineBridge(engine).start()
    try:
        task = bridge.call(engine.submit_task({"x": 1}, "w"))
        assert bridge.call(lambda e: e.get_task(task.id)).data == {"x": 1}
        with pytest.raises(BridgeError, match="did not answer"):
            bridge.call(_forever(), timeout=0.05)
        # A TimeoutError the work raises is its own, not the bridge's wait running out.
        with pytest.raises(TimeoutError, match="the work's own") as raised:
            bridge.call(_times_out(), timeout=30)
        assert not isinstance(raised.value, BridgeError)
    finally:
        bridge.stop()
    with pytest.raises(BridgeError, match="not running"):
        bridge.call(engine.get_task(task.id))
    bridge.stop()


async def _times_out() -> None:
    raise TimeoutError("the work's own timeout")


async def _forever() -> None:
    import asyncio

    await asyncio.Event().wait()


async def _awaited_on_the_loop() -> list[str]:
    """What the calls running on the dashboard's loop (the requests waiting for its
    engine) await now, by name."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    return [getattr(t.get_coro().cr_await, "__qualname__", "") for t in tasks]


def test_a_long_poll_waiting_when_the_dashboard_stops_is_answered_503(
    wfe_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping cancels what waits on the engine's loop: the request says the
    dashboard stopped (503), rather than failing with a 500 and a traceback."""
    engine = ECSWorkflowEngine(store=wfe_store_url, load_plugins=False)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])
    dash = Dashboard(engine, token="", kafka_brokers="")  # no worker: the task stays pending
    try:
        api = Api(create_app(dash, secret_key="x").test_client())
        task = api.submit("w", {})
        answers: list[Any] = []
        poll = threading.Thread(
            target=lambda: answers.append(api.get(f"/api/tasks/{task['id']}?wait=30"))
        )
        poll.start()
        wait_for(
            lambda: "_settled" in dash.call(_awaited_on_the_loop()),
            what="the long poll to wait for the task",
        )
    finally:
        dash.stop()
    poll.join(10)
    [answer] = answers
    assert answer.status_code == 503
    assert answer.get_json() == {
        "error": "the dashboard stopped while this request waited for its engine"
    }
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_bridge_reports_a_bad_store() -> None:
    bridge = EngineBridge(ECSWorkflowEngine(store="nosuch://x", load_plugins=False))
    with pytest.raises(Exception, match="no storage backend handles"):
        bridge.start()
    assert not bridge.started
