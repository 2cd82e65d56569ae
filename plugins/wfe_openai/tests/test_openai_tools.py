"""Tools: schemas from signatures, the tool-call loop, its history, errors and max_steps."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import decimal
import enum
import json
import os
import pathlib
import re
import sys
import uuid
from typing import Any, Literal

import pydantic
import pytest
from wfe_openai import AgentRequest, OpenAIAgentAdapter, Tool, ToolArgumentsError, tool
from wfe_openai.human import HUMAN_TOOL

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus, TaskType


def _run_one(engine: Any, wfe_run: Any, data: Any, phase: Phase) -> Any:
    engine.register_workflow("w", [phase])

    async def scenario() -> Any:
        task = await engine.submit_task(data, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    return wfe_run(scenario())


def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, Any]:
    """Current weather of a city.

    Args:
        city: the city name, e.g. "Oslo".
        unit: temperature unit.
    """
    return {"city": city, "temp": 21 if unit == "C" else 70, "unit": unit}


async def convert(amount: float, currency: str) -> str:
    """Convert an amount of money to euros.

    :param amount: how much.
    :param currency: ISO code of the currency.
    """
    await asyncio.sleep(0)
    return f"{amount * 2:.2f} EUR"


def test_schema_comes_from_signature_and_docstring():
    spec = Tool(get_weather).spec()
    assert spec == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": 'the city name, e.g. "Oslo".'},
                    "unit": {
                        "enum": ["C", "F"],
                        "description": "temperature unit.",
                        "default": "C",
                    },
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    params = Tool(convert).parameters
    assert params["properties"]["amount"] == {"type": "number", "description": "how much."}
    assert params["required"] == ["amount", "currency"]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_schema_of_richer_types_and_injected_parameters():
    def paint(
        items: list[int],
        colour: Colour,
        note: str | None = None,
        tags: dict[str, str] | None = None,
        *,
        task: Task,
        engine: ECSWorkflowEngine,
    ) -> None:
        """Paint things."""

    params = Tool(paint).parameters
    assert params["properties"] == {
        "items": {"type": "array", "items": {"type": "integer"}},
        "colour": {"enum": ["red", "blue"]},
        "note": {"type": ["string", "null"]},
        "tags": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
    }
    assert params["required"] == ["items", "colour"]


def test_explicit_schema_name_and_description():
    @tool(
        name="lookup-order",
        description="Find an order.",
        parameters={"type": "object", "properties": {"id": {"type": "integer"}}},
    )
    def find(**kwargs: Any) -> Any:
        return kwargs

    assert find.spec()["function"] == {
        "name": "lookup-order",
        "description": "Find an order.",
        "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
    }
    assert find(id=3) == {"id": 3}
    with pytest.raises(ValueError, match="must be 1-64 letters"):
        Tool(lambda: None)
    # A name read from a file keeps its newline: the API would refuse every request.
    with pytest.raises(ValueError, match=r"tool name 'lookup\\n' must be 1-64 letters"):
        Tool(find.function, name="lookup\n")
    with pytest.raises(Exception, match="is not valid"):
        Tool(find.function, name="x", parameters={"type": "no-such-type"})


def test_two_step_tool_loop(openai_server, wfe_engine, wfe_run):
    openai_server.tool_calls(
        ("get_weather", {"city": "Oslo"}), ("convert", {"amount": 10, "currency": "NOK"})
    )
    openai_server.reply("It is 21 C in Oslo and 10 NOK is 20.00 EUR.")
    adapter = OpenAIAgentAdapter(tools=[get_weather, convert])
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)

    task = _run_one(wfe_engine, wfe_run, {"trip": "Oslo"}, Phase("plan", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "It is 21 C in Oslo and 10 NOK is 20.00 EUR."
    first, second = (r["body"] for r in openai_server.requests)
    assert [t["function"]["name"] for t in first["tools"]] == [
        "get_weather",
        "convert",
        "ask_human",
    ]
    assert first["tools"][0] == Tool(get_weather).spec()
    # The second request carries the assistant's tool calls and both results, in order.
    assistant, result_1, result_2 = second["messages"][2:]
    assert assistant["role"] == "assistant"
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["get_weather", "convert"]
    assert result_1 == {
        "role": "tool",
        "tool_call_id": assistant["tool_calls"][0]["id"],
        "content": '{"city": "Oslo", "temp": 21, "unit": "C"}',
    }
    assert result_2["tool_call_id"] == assistant["tool_calls"][1]["id"]
    assert result_2["content"] == "20.00 EUR"
    # Each call and result is in the task's history.
    calls = [e for e in task.history if e["event"] == "agent_tool_call"]
    results = [e for e in task.history if e["event"] == "agent_tool_result"]
    assert [(c["tool"], c["arguments"]) for c in calls] == [
        ("get_weather", '{"city": "Oslo"}'),
        ("convert", '{"amount": 10, "currency": "NOK"}'),
    ]
    assert [(r["tool"], r["error"], r["result"]) for r in results] == [
        ("get_weather", False, '{"city": "Oslo", "temp": 21, "unit": "C"}'),
        ("convert", False, "20.00 EUR"),
    ]
    assert [c["step"] for c in task.context["openai"]["calls"]] == [1, 2]
    assert task.context["openai"]["calls"][0]["tool_calls"] == 2
    assert task.context["openai"]["usage"]["calls"] == 2


def test_tool_errors_go_back_to_the_model(openai_server, wfe_engine, wfe_run):
    def divide(a: int, b: int) -> float:
        """Divide a by b."""
        return a / b

    openai_server.tool_calls(
        ("divide", {"a": 1, "b": 0}),
        ("divide", {"a": "one"}),
        ("divide", "{not json"),
        ("no_such_tool", {}),
    )
    openai_server.reply("I could not divide.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[divide]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    results = [m["content"] for m in openai_server.messages(1) if m["role"] == "tool"]
    assert results[0] == "error: ZeroDivisionError: division by zero"
    assert results[1].startswith("error: invalid arguments for divide:")
    assert "'one' is not of type 'integer'" in results[1]
    assert "'b' is a required property" in results[1]
    assert results[2].startswith(
        "error: invalid arguments for divide: arguments are not valid JSON"
    )
    assert results[3] == "error: no tool named 'no_such_tool'; available: divide, ask_human"
    errors = [e["error"] for e in task.history if e["event"] == "agent_tool_result"]
    assert errors == [True, True, True, True]


def test_a_call_whose_arguments_are_no_json_object_does_not_break_the_next_request(
    openai_server, wfe_engine, wfe_run
):
    # vLLM, Ollama and llama.cpp decode the arguments of every earlier tool call in
    # the messages and refuse the request when they are no JSON object; a model
    # whose call was cut off, or malformed, must still get to read its error.
    def strict(request: Any) -> Any:
        for message in request["body"]["messages"]:
            for call in message.get("tool_calls") or ():
                try:
                    ok = isinstance(json.loads(call["function"]["arguments"]), dict)
                except ValueError:
                    ok = False
                if not ok:
                    body = {"object": "error", "message": "Expecting value", "code": 400}
                    return 400, {"Content-Type": "application/json"}, json.dumps(body).encode()
        return (
            200,
            {"Content-Type": "application/json"},
            json.dumps(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "ok"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            ).encode(),
        )

    def divide(a: int, b: int) -> float:
        """Divide a by b."""
        return a / b

    openai_server.tool_calls(
        ("divide", '{"a": 6, "b":'), ("divide", "[6, 3]"), ("ask_human", "{not json")
    )
    openai_server.raw_tool_calls({"id": "c4", "type": "function", "function": {"name": "divide"}})
    openai_server.push(strict)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[divide]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic", max_attempts=1))

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "ok"
    messages = openai_server.messages()
    sent = [c["function"]["arguments"] for m in messages for c in m.get("tool_calls") or ()]
    assert sent == ["{}", "{}", "{}", "{}"]
    # The model reads what it sent in each call's error, and the history keeps it.
    results = [m["content"] for m in messages if m["role"] == "tool"]
    assert results[0].startswith(
        "error: invalid arguments for divide: arguments are not valid JSON"
    )
    assert results[0].endswith('; the call\'s arguments were \'{"a": 6, "b":\'')
    assert results[1].endswith("not an array; the call's arguments were '[6, 3]'")
    assert results[2].startswith("error: invalid arguments for ask_human: arguments are not valid")
    assert results[2].endswith("; the call's arguments were '{not json'")
    assert results[3].startswith("error: invalid arguments for divide: ")
    assert results[3].endswith("; the call's arguments were nothing")
    recorded = [e["arguments"] for e in task.history if e["event"] == "agent_tool_call"]
    assert recorded == ['{"a": 6, "b":', "[6, 3]", "{not json", ""]


def test_the_thinking_sent_with_a_tool_call_goes_back_with_it(openai_server, wfe_engine, wfe_run):
    # DeepSeek's thinking mode refuses a request whose tool-calling turns lack the
    # reasoning_content the server sent with them, and Gemini's OpenAI-compatible
    # API one whose tool calls lack their thought signature (HTTP 400): as this
    # server does, for these and OpenRouter's reasoning_details.
    signature = {"google": {"thought_signature": "CiQB0e2Kb"}}
    details = [{"type": "reasoning.encrypted", "data": "gAAAAB"}]

    def completion(message: dict[str, Any], finish_reason: str) -> Any:
        doc = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "deepseek-v4-flash",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", **message},
                    "finish_reason": finish_reason,
                }
            ],
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()

    def thinking(request: Any) -> Any:
        for index, message in enumerate(request["body"]["messages"]):
            if message["role"] != "assistant":
                continue
            if (
                message.get("reasoning_content") != "Look it up."
                or message.get("reasoning_details") != details
                or message["tool_calls"][0].get("extra_content") != signature
            ):
                body = {
                    "error": {
                        "message": f"the assistant message at index {index} lacks the "
                        "reasoning_content, reasoning_details or thought_signature sent with it",
                        "type": "invalid_request_error",
                    }
                }
                return 400, {"Content-Type": "application/json"}, json.dumps(body).encode()
        if len(request["body"]["messages"]) == 2:
            call = {
                "id": "call_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                "extra_content": signature,
            }
            message = {
                "content": "",
                "reasoning_content": "Look it up.",
                "reasoning_details": details,
                "tool_calls": [call],
            }
            return completion(message, "tool_calls")
        return completion({"content": "21 C", "reasoning_content": "Done."}, "stop")

    openai_server.push(thinking)
    openai_server.push(thinking)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[get_weather]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic", max_attempts=1))

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "21 C"
    [turn] = [m for m in openai_server.messages() if m["role"] == "assistant"]
    # A field the server did not send is not sent back: OpenAI refuses fields it
    # does not know in a message.
    assert "reasoning" not in turn


def count_lines(argv: str) -> str:
    """Count lines, with a command line such as "--n 3"."""
    parser = argparse.ArgumentParser(prog="count_lines")
    parser.add_argument("--n", type=int, required=True)
    return f"{parser.parse_args(argv.split()).n} lines"


async def stop(code: int) -> str:
    """Stop with an exit status."""
    sys.exit(code)


def test_a_tool_that_exits_is_an_error_for_the_model_not_the_end_of_the_worker(
    openai_server, wfe_engine, wfe_run, capsys
):
    openai_server.tool_calls(
        ("count_lines", {"argv": "--n bad"}),
        ("stop", {"code": 3}),
        ("count_lines", {"argv": "--n 3"}),
    )
    openai_server.reply("3 lines.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[count_lines, stop]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "3 lines."
    results = [m["content"] for m in openai_server.messages(1) if m["role"] == "tool"]
    assert results == [
        "error: SystemExit: 2 (the tool called sys.exit(), as argparse does on bad arguments)",
        "error: SystemExit: 3 (the tool called sys.exit(), as argparse does on bad arguments)",
        "3 lines",
    ]
    assert "invalid int value: 'bad'" in capsys.readouterr().err  # argparse's own words


def test_tools_get_the_task_and_engine(openai_server, wfe_engine, wfe_run):
    async def save_note(text: str, task: Task, engine: ECSWorkflowEngine) -> str:
        """Save a note as a file of the task."""
        art = await engine.add_artifact_text(task, "note.txt", text)
        return f"saved {art.size} bytes"

    openai_server.tool_calls(("save_note", {"text": "remember the milk"}))
    openai_server.reply("Saved.")
    adapter = OpenAIAgentAdapter()
    adapter.add_tool(save_note)
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    params = openai_server.requests[0]["body"]["tools"][0]["function"]["parameters"]
    assert params == {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    }
    assert wfe_run(wfe_engine.read_artifact(task, "note.txt")) == b"remember the milk"
    assert openai_server.messages(1)[-1]["content"] == "saved 17 bytes"


def test_max_steps_exhausted_fails_the_attempt(openai_server, wfe_engine, wfe_run):
    def ping() -> str:
        """Ping."""
        return "pong"

    for _ in range(3):
        openai_server.tool_calls(("ping", {}))
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[ping], max_steps=3))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("loop", assigned_to="agentic"))

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: max_steps=3 exhausted in phase 'loop': the model still asked for "
        "tools (ping) after 3 calls"
    )
    assert len(openai_server.requests) == 3
    assert openai_server.pending == 0
    assert len([e for e in task.history if e["event"] == "agent_tool_result"]) == 3
    # The usage of the failed attempt is still accounted for.
    assert task.context["openai"]["usage"]["calls"] == 3


def test_duplicate_and_reserved_tool_names_are_refused():
    adapter = OpenAIAgentAdapter(tools=[get_weather])
    with pytest.raises(ValueError, match="already registered"):
        adapter.add_tool(get_weather)
    with pytest.raises(ValueError, match="built-in human escalation"):
        adapter.add_tool(get_weather, name="ask_human")
    assert [t.name for t in OpenAIAgentAdapter(tools=[get_weather], allow_human=False).tools] == [
        "get_weather"
    ]


def test_a_request_replaces_its_tools_by_name_but_not_the_built_in_ask_human():
    request = AgentRequest(
        model="m", messages=[], tools=[HUMAN_TOOL], response_format=None, options={}, max_steps=3
    )
    request.add_tool(get_weather)
    request.add_tool(get_weather, description="Weather, in Celsius.")
    assert [(t.name, t.description) for t in request.tools][1:] == [
        ("get_weather", "Weather, in Celsius.")
    ]
    with pytest.raises(ValueError, match="built-in human escalation"):
        request.add_tool(get_weather, name="ask_human")
    request.tools = [t for t in request.tools if t is not HUMAN_TOOL]
    assert request.add_tool(get_weather, name="ask_human").name == "ask_human"


class Address(pydantic.BaseModel):
    street: str
    city: str


def ship(address: Address, colour: Colour, express: bool = False) -> str:
    """Ship a parcel."""
    assert isinstance(address, Address) and isinstance(colour, Colour)
    return f"{colour.value} parcel to {address.street}, {address.city} (express={express})"


def test_enum_and_pydantic_arguments_arrive_as_objects(openai_server, wfe_engine, wfe_run):
    openai_server.tool_calls(
        ("ship", {"address": {"street": "Main St 1", "city": "Bergen"}, "colour": "blue"})
    )
    openai_server.reply("Shipped.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[ship]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    params = openai_server.requests[0]["body"]["tools"][0]["function"]["parameters"]
    assert params["properties"]["address"]["properties"]["city"] == {
        "title": "City",
        "type": "string",
    }
    assert params["properties"]["colour"] == {"enum": ["red", "blue"]}
    assert openai_server.messages(1)[-1]["content"] == (
        "blue parcel to Main St 1, Bergen (express=False)"
    )


class Item(pydantic.BaseModel):
    sku: str
    qty: int = 1

    @pydantic.field_validator("sku")
    @classmethod
    def _known(cls, sku: str) -> str:
        if sku == "NONE":
            raise ValueError("no such product")
        return sku


class Customer(pydantic.BaseModel):
    name: str
    address: Address  # a nested model: its schema refers to "#/$defs/Address"
    colours: list[Colour] = []


def _items(items: list[Item]) -> str:
    return ", ".join(f"{type(i).__name__} {i.sku} x{i.qty}" for i in items)


def order(items: list[Item]) -> str:
    """Order several items."""
    return _items(items)


def paint(colours: list[Colour], fallback: Colour | None = None) -> str:
    """Paint in these colours."""
    names = [f"{type(c).__name__}.{c.name}" for c in colours]
    return ", ".join(names) + f"; fallback {fallback!r}"


def stock(by_shop: dict[str, Item]) -> str:
    """Stock per shop."""
    return "; ".join(f"{shop}: {_items([item])}" for shop, item in sorted(by_shop.items()))


def maybe(items: list[Item] | None = None, code: Item | str = "none") -> str:
    """Items if any, and a code or an item."""
    listed = "no list" if items is None else _items(items)
    return f"{listed}; code {type(code).__name__}"


def register(
    customer: Customer, point: tuple[int, int] = (0, 0), tags: frozenset[str] = frozenset()
) -> str:
    """Register a customer."""
    c = customer
    assert isinstance(c.address, Address)
    return (
        f"{c.name} of {c.address.city}, {[x.value for x in c.colours]}, "
        f"{type(point).__name__}{point}, {sorted(tags)} {type(tags).__name__}"
    )


# Another model named Address, as another module of an app may have.
OtherAddress = pydantic.create_model("Address", line=(str, ...))


class Other(pydantic.BaseModel):
    address: OtherAddress  # type: ignore[valid-type]


@dataclasses.dataclass
class Shipment:
    order: str
    items: list[Item]
    colour: Colour
    sent: datetime.date
    tags: set[str]


def track(order: str) -> Shipment:
    """Where an order is."""
    return Shipment(
        order, [Item(sku="AB-1", qty=2)], Colour.BLUE, datetime.date(2024, 5, 6), {"b", "a"}
    )


def test_results_that_are_models_dataclasses_enums_or_sets_reach_the_model_as_json(
    openai_server, wfe_engine, wfe_run
):
    """As arguments arrive as the objects the type hints name, results of such
    objects go back as the JSON of their fields and values, not as Python's repr."""

    def find(sku: str) -> Item:
        """Find an item."""
        return Item(sku=sku, qty=3)

    def colours() -> frozenset[Colour]:
        """The colours in stock."""
        return frozenset({Colour.RED, Colour.BLUE})

    openai_server.tool_calls(
        ("track", {"order": "A-1"}), ("find", {"sku": "CD-2"}), ("colours", {})
    )
    openai_server.reply("Shipped.")
    tools = [track, find, colours]
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=tools))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    results = [json.loads(m["content"]) for m in openai_server.messages() if m["role"] == "tool"]
    assert results == [
        {
            "order": "A-1",
            "items": [{"sku": "AB-1", "qty": 2}],
            "colour": "blue",
            "sent": "2024-05-06",
            "tags": ["a", "b"],
        },
        {"sku": "CD-2", "qty": 3},
        ["blue", "red"],
    ]
    recorded = [e["result"] for e in task.history if e["event"] == "agent_tool_result"]
    assert [json.loads(r) for r in recorded] == results


def test_results_keyed_by_dates_or_tuples_reach_the_model_as_json(
    openai_server, wfe_engine, wfe_run
):
    """JSON object keys are strings: a dict keyed by dates (sales per day) or tuples
    (pandas' groupby().to_dict()) goes back with its keys as text, as its values
    would, instead of failing the attempt."""

    def sales() -> dict[datetime.date, dict[tuple[str, int], int]]:
        """Sales per day."""
        return {datetime.date(2024, 5, 6): {("AB", 1): 3}, datetime.date(2024, 5, 7): {}}

    def by_colour() -> list[dict[Colour, int]]:
        """Items per colour."""
        return [{Colour.RED: 2}]

    openai_server.tool_calls(("sales", {}), ("by_colour", {}))
    openai_server.reply("Sold.")
    tools = [sales, by_colour]
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=tools))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    results = [json.loads(m["content"]) for m in openai_server.messages() if m["role"] == "tool"]
    assert results == [{"2024-05-06": {"('AB', 1)": 3}, "2024-05-07": {}}, [{"red": 2}]]


def test_a_result_holding_half_a_surrogate_pair_reaches_the_model_escaped(
    openai_server, wfe_engine, wfe_run, tmp_path
):
    """A file name that is not UTF-8 comes from os.listdir with a lone surrogate for
    each such byte: no character, so the task could not be stored with it."""
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / b"caf\xe9.txt".decode("utf-8", "surrogateescape")).write_text("x")

    def files() -> list[str]:
        """The files."""
        return os.listdir(folder)

    def fails() -> str:
        """Fails."""
        raise OSError(f"cannot open {os.listdir(folder)[0]}")

    openai_server.tool_calls(("files", {}), ("fails", {}))
    openai_server.reply("Listed.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[files, fails]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    sent = [m["content"] for m in openai_server.messages() if m["role"] == "tool"]
    assert sent == ['["caf\\udce9.txt"]', "error: OSError: cannot open caf\\udce9.txt"]
    recorded = [e["result"] for e in task.history if e["event"] == "agent_tool_result"]
    assert recorded == sent


def test_dict_keys_arrive_as_the_key_type_the_hint_names(openai_server, wfe_engine, wfe_run):
    """JSON object keys are text: stock keyed by shelf number, sales by day, counts by
    colour reach the function with int, date and enum keys, and a key of another
    form goes back to the model."""
    received: list[Any] = []

    def restock(
        shelves: dict[int, int], sales: dict[datetime.date, float], by: dict[Colour, int]
    ) -> str:
        """Restock."""
        received.append((shelves, sales, by))
        return "ok"

    openai_server.tool_calls(
        ("restock", {"shelves": {"7": 2}, "sales": {"2024-05-06": 1.5}, "by": {"red": 1}})
    )
    openai_server.tool_calls(("restock", {"shelves": {"top": 2}, "sales": {}, "by": {}}))
    openai_server.reply("Restocked.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[restock]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    assert received == [({7: 2}, {datetime.date(2024, 5, 6): 1.5}, {Colour.RED: 1})]
    assert openai_server.messages()[-1]["content"] == (
        "error: invalid arguments for restock: shelves: the key 'top' is not a whole number"
    )


def test_a_tool_that_returns_nothing_tells_the_model_it_ran(openai_server, wfe_engine, wfe_run):
    """Not "(no answer)", a person's silence: the model must not take a tool that
    sent a mail for one that did not, and send it again."""
    sent: list[str] = []

    def send_mail(to: str) -> None:
        """Send the mail."""
        sent.append(to)

    openai_server.tool_calls(("send_mail", {"to": "ann@example.com"}))
    openai_server.reply("Sent.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[send_mail]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    assert sent == ["ann@example.com"]
    assert openai_server.messages()[-1]["content"] == "(done: the tool returned nothing)"
    [result] = [e for e in task.history if e["event"] == "agent_tool_result"]
    assert (result["error"], result["result"]) == (False, "(done: the tool returned nothing)")


def test_a_result_that_cannot_be_made_text_goes_back_to_the_model(
    openai_server, wfe_engine, wfe_run
):
    # Python refuses str() of an int of more than 4300 digits: the tool ran, and
    # the attempt failed with a ValueError that did not name it.
    def power(base: int, exp: int) -> int:
        """base to the power exp."""
        return base**exp

    openai_server.tool_calls(("power", {"base": 10, "exp": 5000}), ("power", {"base": 2, "exp": 3}))
    openai_server.reply("2 ** 3 = 8; 10 ** 5000 is too long.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[power]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic", max_attempts=1))

    assert task.status is TaskStatus.COMPLETED, task.error
    results = [m["content"] for m in openai_server.messages() if m["role"] == "tool"]
    assert results[0].startswith(
        "error: the tool ran, but its result cannot be sent as text: ValueError: Exceeds the "
        "limit (4300 digits) for integer string conversion"
    )
    assert results[1] == "8"
    errors = [e["error"] for e in task.history if e["event"] == "agent_tool_result"]
    assert errors == [True, False]


def book(
    day: datetime.date,
    at: datetime.time,
    until: datetime.datetime | None = None,
    price: decimal.Decimal = decimal.Decimal("0"),
    ref: uuid.UUID | None = None,
    folder: pathlib.Path | None = None,
) -> str:
    """Book a room."""
    kinds = [type(v).__name__ for v in (day, at, until, price, ref, folder)]
    return f"{day.strftime('%A')} at {at.hour}; {', '.join(kinds)}"


def test_dates_times_decimals_uuids_and_paths_arrive_as_those_objects(
    openai_server, wfe_engine, wfe_run
):
    """The model is told their form (an ISO 8601 date, say); a value of another form
    goes back to the model as an error, never to the function as a string."""
    assert Tool(book).parameters["properties"] == {
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "time"},
        "until": {"type": ["string", "null"], "format": "date-time"},
        "price": {"type": ["number", "string"]},
        "ref": {"type": ["string", "null"], "format": "uuid"},
        "folder": {"type": ["string", "null"]},
    }
    openai_server.tool_calls(
        ("book", {"day": "next Monday", "at": "10:00"}),
        ("book", {"day": "2024-05-06", "at": "10:00", "price": "12.50x"}),
        ("book", {"day": 20240506, "at": "10:00"}),
        (
            "book",
            {
                "day": "2024-05-06",
                "at": "10:00",
                "until": "2024-05-07T09:00:00Z",
                "price": 12.5,
                "ref": "12345678-1234-5678-1234-567812345678",
                "folder": "/srv/rooms",
            },
        ),
    )
    openai_server.reply("Booked.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[book]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    results = [m["content"] for m in openai_server.messages() if m["role"] == "tool"]
    assert results == [
        "error: invalid arguments for book: day: 'next Monday' is not an ISO 8601 date "
        "(YYYY-MM-DD)",
        "error: invalid arguments for book: price: '12.50x' is not a decimal number",
        "error: invalid arguments for book: day: 20240506 is not of type 'string'",
        "Monday at 10; date, time, datetime, Decimal, UUID, PosixPath",
    ]


def test_nested_model_definitions_are_at_the_root_of_the_schema():
    params = Tool(register).parameters
    assert set(params["$defs"]) == {"Address", "Colour"}
    assert "$defs" not in params["properties"]["customer"]
    assert params["properties"]["customer"]["properties"]["address"] == {"$ref": "#/$defs/Address"}
    # Every reference resolves: a valid call passes the check, a wrong one is refused.
    good = {"customer": {"name": "Ann", "address": {"street": "s", "city": "Oslo"}}}
    assert Tool(register).parse_arguments(good) == good
    with pytest.raises(ToolArgumentsError, match="customer/address: 'city' is a required"):
        Tool(register).parse_arguments({"customer": {"name": "Ann", "address": {"street": "s"}}})
    order_params = Tool(maybe).parameters
    assert order_params["properties"]["items"] == {
        "type": ["array", "null"],
        "items": Item.model_json_schema(),
    }

    def clash(customer: Customer, other: Other) -> None:
        """Two models named Address."""

    with pytest.raises(TypeError, match="two different types are named 'Address'"):
        Tool(clash)


def test_lists_dicts_and_nested_models_of_models_and_enums_arrive_as_objects(
    openai_server, wfe_engine, wfe_run
):
    """Each tool gets the objects its type hints name, however deep, through the
    real HTTP stack; the schemas sent to the server resolve."""
    address = {"street": "Main St 1", "city": "Oslo"}
    openai_server.tool_calls(
        ("order", {"items": [{"sku": "A", "qty": 2}, {"sku": "B"}]}),
        ("paint", {"colours": ["red", "blue"], "fallback": "blue"}),
        ("paint", {"colours": []}),
        ("stock", {"by_shop": {"oslo": {"sku": "A"}, "bergen": {"sku": "B", "qty": 5}}}),
        ("maybe", {"items": [{"sku": "C"}], "code": {"sku": "D"}}),
        ("maybe", {"items": None, "code": "X-1"}),
        (
            "register",
            {
                "customer": {"name": "Ann", "address": address, "colours": ["blue"]},
                "point": [3, 4],
                "tags": ["vip", "new"],
            },
        ),
        ("order", {"items": [{"sku": "NONE"}]}),
    )
    openai_server.reply("Done.")
    adapter = OpenAIAgentAdapter(tools=[order, paint, stock, maybe, register])
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    results = [m["content"] for m in openai_server.messages(1) if m["role"] == "tool"]
    assert results[:7] == [
        "Item A x2, Item B x1",
        "Colour.RED, Colour.BLUE; fallback <Colour.BLUE: 'blue'>",
        "; fallback None",
        "bergen: Item B x5; oslo: Item A x1",
        "Item C x1; code Item",
        "no list; code str",
        "Ann of Oslo, ['blue'], tuple(3, 4), ['new', 'vip'] frozenset",
    ]
    # A model's own check refuses a value the schema allows: the model is told why.
    assert results[7].startswith("error: invalid arguments for order: items: ")
    assert "no such product" in results[7]
    for spec in openai_server.requests[0]["body"]["tools"]:
        params = spec["function"]["parameters"]
        # What the server received is a schema whose references all resolve.
        text = json.dumps(params)
        for name in re.findall(r'"#/\$defs/(\w+)"', text):
            assert name in params.get("$defs", {}), (spec["function"]["name"], name)
        assert '"$defs"' not in json.dumps(params["properties"])


def test_arguments_sent_as_an_object_and_calls_without_an_id(openai_server, wfe_engine, wfe_run):
    def divide(a: int, b: int) -> float:
        """Divide a by b."""
        return a / b

    # Some OpenAI-compatible servers send the arguments as an object, and no call id.
    openai_server.raw_tool_calls(
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
        {"type": "function", "function": {"name": "divide", "arguments": {"a": "one", "b": 2}}},
        {"id": "c3", "type": "function", "function": {"name": "divide", "arguments": [6, 3]}},
    )
    openai_server.raw_tool_calls(
        {"type": "function", "function": {"name": "divide", "arguments": {"a": 6, "b": 3}}},
    )
    openai_server.reply("21 C in Oslo; 6 / 3 = 2.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[get_weather, divide]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    messages = openai_server.messages()
    first_turn, second_turn = (m for m in messages if m["role"] == "assistant")
    results = [m for m in messages if m["role"] == "tool"]
    assert [r["content"] for r in results] == [
        '{"city": "Oslo", "temp": 21, "unit": "C"}',
        "error: invalid arguments for divide: a: 'one' is not of type 'integer'",
        "error: invalid arguments for divide: arguments must be a JSON object, not an array; "
        "the call's arguments were '[6, 3]'",
        "2.0",
    ]
    # Every call has an id, unique in the conversation, and its result answers it.
    calls = first_turn["tool_calls"] + second_turn["tool_calls"]
    ids = [c["id"] for c in calls]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == 4
    assert ids[2] == "c3"
    assert [r["tool_call_id"] for r in results] == ids
    # The arguments go back to the server as the JSON string the API expects: an
    # object's; the history keeps what the model sent.
    assert [c["function"]["arguments"] for c in calls] == [
        '{"city": "Oslo"}',
        '{"a": "one", "b": 2}',
        "{}",
        '{"a": 6, "b": 3}',
    ]
    recorded = [e["arguments"] for e in task.history if e["event"] == "agent_tool_call"]
    assert recorded == ['{"city": "Oslo"}', '{"a": "one", "b": 2}', "[6, 3]", '{"a": 6, "b": 3}']


def test_calls_sharing_an_id_in_one_reply_get_ids_of_their_own(openai_server, wfe_engine, wfe_run):
    # A compatible server that numbers calls per reply, or repeats one id: the API
    # wants one tool message per id, so each call needs an id of its own.
    def call(call_id: str, city: str) -> dict[str, Any]:
        arguments = f'{{"city": "{city}"}}'
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }

    openai_server.raw_tool_calls(
        call("call_0", "Oslo"), call("call_0", "Bergen"), call("wfe_call_2_1", "Tromsø")
    )
    openai_server.raw_tool_calls(call("call_0", "Paris"))
    openai_server.reply("Oslo, Bergen, Tromsø and Paris: 21 C.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[get_weather]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    messages = openai_server.messages()
    first_turn, second_turn = (m for m in messages if m["role"] == "assistant")
    ids = [c["id"] for c in first_turn["tool_calls"]]
    assert ids[0] == "call_0" and ids[2] == "wfe_call_2_1" and len(set(ids)) == 3
    # Each result answers its own call, in the order of the calls.
    results = [m for m in messages if m["role"] == "tool"]
    assert [r["tool_call_id"] for r in results[:3]] == ids
    assert [r["content"] for r in results[:3]] == [
        f'{{"city": "{city}", "temp": 21, "unit": "C"}}' for city in ("Oslo", "Bergen", "Tromsø")
    ]
    # A later reply may use an id again: its results follow it.
    assert second_turn["tool_calls"][0]["id"] == "call_0"
    assert results[3]["tool_call_id"] == "call_0"
    recorded = [e["call_id"] for e in task.history if e["event"] == "agent_tool_result"]
    assert recorded == [*ids, "call_0"]


def test_arguments_the_function_does_not_take_go_back_to_the_model(
    openai_server, wfe_engine, wfe_run
):
    calls: list[dict[str, Any]] = []

    def add(a: int, b: int, task: Task) -> int:
        """Add two numbers."""
        calls.append({"a": a, "b": b})
        return a + b

    def log(message: str, **fields: Any) -> str:
        """Log a message with any fields."""
        return f"{message} {sorted(fields)}"

    assert "additionalProperties" not in Tool(log).parameters
    openai_server.tool_calls(
        ("add", {"a": 1, "b": 2, "pad": "y"}),
        ("add", {"a": 1, "b": 2, "task": "t", "pad": "y"}),
        ("log", {"message": "hi", "level": "info"}),
        ("add", {"a": 1, "b": 2}),
    )
    openai_server.reply("3")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[add, log]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    results = [m["content"] for m in openai_server.messages(1) if m["role"] == "tool"]
    assert results == [
        "error: invalid arguments for add: (arguments): unexpected 'pad' (add takes a, b)",
        # A parameter the adapter fills in is not the model's to give.
        "error: invalid arguments for add: (arguments): unexpected 'pad', 'task' (add takes a, b)",
        "hi ['level']",
        "3",
    ]
    assert calls == [{"a": 1, "b": 2}]


def test_unexpected_arguments_are_named_with_those_the_tool_takes():
    from wfe_openai import ToolArgumentsError

    def ping() -> str:
        """Ping."""
        return "pong"

    with pytest.raises(ToolArgumentsError) as info:
        Tool(ping).parse_arguments({"x": 1})
    assert str(info.value) == "(arguments): unexpected 'x' (ping takes no arguments)"

    address = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "additionalProperties": False,
    }
    ship = Tool(
        lambda **kw: kw,
        name="ship",
        parameters={
            "type": "object",
            "properties": {"to": address, "empty": {"type": "object", "properties": {}}},
            "additionalProperties": False,
        },
    )
    with pytest.raises(ToolArgumentsError) as info:
        ship.parse_arguments({"to": {"city": "Oslo", "zip": "0150"}, "x": 1})
    assert str(info.value) == (
        "(arguments): unexpected 'x' (ship takes to, empty); to: unexpected 'zip' (allowed: city)"
    )


def test_a_long_argument_breaking_the_schema_is_quoted_short_for_the_model(
    openai_server, wfe_engine, wfe_run
):
    """Each problem is named, and the model is not sent its own long text back."""
    headline = Tool(
        lambda **kw: "saved",
        name="headline",
        parameters={
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 80},
                "rank": {"type": "integer"},
            },
        },
    )
    title = "An extremely long headline " * 2_000
    openai_server.tool_calls(("headline", {"title": title, "rank": "first"}))
    openai_server.reply("gave up")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[headline]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic"))

    assert task.status is TaskStatus.COMPLETED, task.error
    quoted = repr(title)
    expected = (
        "error: invalid arguments for headline: rank: 'first' is not of type 'integer'; "
        f"title: {quoted[:100]}... [{len(quoted) - 100} more] is too long"
    )
    assert openai_server.messages()[-1]["content"] == expected
    [result] = [e for e in task.history if e["event"] == "agent_tool_result"]
    assert result["result"] == expected


def test_a_tool_call_without_a_function_name_goes_back_to_the_model(
    openai_server, wfe_engine, wfe_run
):
    # Some compatible servers send a call without its function object, or its name.
    openai_server.raw_tool_calls(
        {"id": "c1", "type": "function"},
        {"id": "c2", "type": "function", "function": {"arguments": "{}"}},
    )
    openai_server.reply("Sorry, done.")
    openai_server.raw_tool_calls({"id": "c3", "type": "function"})
    openai_server.raw_tool_calls({"id": "c4", "type": "function"})
    wfe_engine.register_adapter(
        TaskType.AGENTIC,
        OpenAIAgentAdapter(tools=[get_weather], phase_options={"loop": {"max_steps": 2}}),
    )

    wfe_engine.register_workflow(
        "w", [Phase("p", assigned_to="agentic"), Phase("loop", assigned_to="agentic")]
    )

    async def scenario() -> Any:
        task = await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        return await wfe_engine.get_task(task.id)

    task = wfe_run(scenario())

    results = [m["content"] for m in openai_server.messages(1) if m["role"] == "tool"]
    expected = (
        "error: tool call without a function name; call a tool by its name: get_weather, ask_human"
    )
    assert results == [expected, expected]
    assert task.outputs["p"] == "Sorry, done."
    # A model that keeps doing it runs out of steps, and the error says what it sent.
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: max_steps=2 exhausted in phase 'loop': the model still asked for "
        "tools (a call without a function name) after 2 calls"
    )


@pytest.mark.parametrize("tool_calls", ["divide", {"name": "divide", "arguments": "{}"}])
def test_tool_calls_that_are_not_a_list_fail_the_attempt(
    openai_server, wfe_engine, wfe_run, tool_calls: object
) -> None:
    """A server sending ``tool_calls`` as a string or a single object: the attempt
    fails saying so; no call is made up from its characters or keys."""
    ran: list[object] = []

    def divide(a: int = 1, b: int = 1) -> float:
        """Divide a by b."""
        ran.append((a, b))
        return a / b

    reply = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": tool_calls},
                "finish_reason": "tool_calls",
            }
        ],
    }
    openai_server.raw(200, json.dumps(reply).encode())
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[divide]))

    task = _run_one(wfe_engine, wfe_run, {}, Phase("p", assigned_to="agentic", max_attempts=1))

    assert task.status is TaskStatus.FAILED
    kind = type(tool_calls).__name__
    assert f"malformed response: the reply's tool_calls is {kind}, not a list" in task.error
    assert ran == []
