"""A phase run on the model: the request it sends, the output it keeps, JSON replies, handlers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from wfe_openai import AgentRequest, OpenAIAgentAdapter

from wfcore import Phase, TaskStatus, TaskType


def _run_one(engine: Any, wfe_run: Any, data: Any, phases: list[Phase]) -> Any:
    engine.register_workflow("w", phases)

    async def scenario() -> Any:
        task = await engine.submit_task(data, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    return wfe_run(scenario())


def test_plain_reply_becomes_the_output(openai_server, wfe_engine, wfe_run, fake_key):
    openai_server.reply("Paris is the capital of France.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(model="gpt-4o"))

    task = _run_one(
        wfe_engine,
        wfe_run,
        {"question": "capital of France?"},
        [Phase("answer", assigned_to="agentic", instructions="Answer in one sentence.")],
    )

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "Paris is the capital of France."
    assert task.outputs["answer"] == "Paris is the capital of France."
    [request] = openai_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {fake_key}"
    body = request["body"]
    assert body["model"] == "gpt-4o"
    system, user = body["messages"]
    assert system == {"role": "system", "content": "Answer in one sentence."}
    assert user["role"] == "user"
    assert '"question": "capital of France?"' in user["content"]
    assert "phase 'answer'" in user["content"]
    # Only the built-in escalation tool is offered.
    assert [t["function"]["name"] for t in body["tools"]] == ["ask_human"]
    # The model, the token counts and the call count are in the context.
    state = task.context["openai"]
    [call] = state["calls"]
    assert call["model"] == "gpt-4o"
    assert call["response_model"] == "gpt-4o-2024-08-06"
    assert call["phase"] == "answer"
    assert call["prompt_tokens"] > 0 and call["completion_tokens"] > 0
    assert call["total_tokens"] == call["prompt_tokens"] + call["completion_tokens"]
    assert call["finish_reason"] == "stop"
    assert call["request_id"] == "req_1"  # the first request the server saw
    assert state["usage"]["calls"] == 1
    assert state["usage"]["total_tokens"] == call["total_tokens"]
    assert state["usage"]["gpt-4o"]["prompt_tokens"] == call["prompt_tokens"]
    assert "conversation" not in state


def test_system_prompt_data_outputs_and_artifacts_reach_the_model(
    openai_server, wfe_engine, wfe_run
):
    openai_server.reply("summary")
    adapter = OpenAIAgentAdapter(
        model="gpt-4o-mini",
        system_prompt="You work for ACME.",
        max_item_chars=100,
        temperature=0,
    )
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)

    async def collect(task):
        task.output = {"rows": 3}
        await wfe_engine.add_artifact_text(task, "notes.txt", "short note")
        await wfe_engine.add_artifact_text(task, "long.md", "x" * 500)
        await wfe_engine.add_artifact_bytes(task, "image.png", b"\x89PNG\x00\x01binary")

    wfe_engine.register_handler("collect", collect)
    task = _run_one(
        wfe_engine,
        wfe_run,
        "plain text data",
        [
            Phase("collect", assigned_to="functional"),
            Phase("summarize", assigned_to="agentic", instructions="Summarize."),
        ],
    )

    assert task.status is TaskStatus.COMPLETED, task.error
    body = openai_server.requests[0]["body"]
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0
    system, user = body["messages"]
    assert system["content"] == "You work for ACME.\n\nSummarize."
    text = user["content"]
    assert "plain text data" in text
    assert "### collect" in text and '"rows": 3' in text
    assert "### notes.txt (text/plain, 10 bytes, from phase collect)" in text
    assert "short note" in text
    # The long artifact is cut to max_item_chars, with a note of what was cut.
    assert "x" * 100 in text and "x" * 101 not in text
    assert "[cut: showing the first 100 characters of a 500-byte file]" in text
    assert "### image.png (image/png, 12 bytes, from phase collect): binary, not included" in text


def test_total_input_limit_leaves_out_what_does_not_fit(openai_server, wfe_engine, wfe_run):
    openai_server.reply("ok")
    wfe_engine.register_adapter(
        TaskType.AGENTIC, OpenAIAgentAdapter(max_item_chars=1000, max_input_chars=1200)
    )

    async def collect(task):
        task.output = "y" * 900
        await wfe_engine.add_artifact_text(task, "a.txt", "z" * 900)

    wfe_engine.register_handler("collect", collect)
    task = _run_one(
        wfe_engine,
        wfe_run,
        {"k": 1},
        [Phase("collect", assigned_to="functional"), Phase("think", assigned_to="agentic")],
    )

    assert task.status is TaskStatus.COMPLETED, task.error
    text = openai_server.messages()[1]["content"]
    assert "y" * 900 in text
    assert "z" * 300 not in text
    assert "[cut: showing the first" in text


def test_json_reply_is_parsed(openai_server, wfe_engine, wfe_run):
    openai_server.json_reply({"sentiment": "positive", "score": 0.9})
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "sentiment",
            "schema": {
                "type": "object",
                "properties": {"sentiment": {"type": "string"}, "score": {"type": "number"}},
                "required": ["sentiment", "score"],
            },
        },
    }
    wfe_engine.register_adapter(
        TaskType.AGENTIC,
        OpenAIAgentAdapter(phase_options={"rate": {"response_format": fmt}}),
    )
    task = _run_one(wfe_engine, wfe_run, "I love it", [Phase("rate", assigned_to="agentic")])

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == {"sentiment": "positive", "score": 0.9}
    assert openai_server.requests[0]["body"]["response_format"] == fmt


def test_invalid_json_reply_fails_the_attempt_with_the_reason(openai_server, wfe_engine, wfe_run):
    openai_server.reply("Sure! Here is the JSON: {oops")
    openai_server.json_reply({"label": 7})
    openai_server.json_reply({"label": "spam"})
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "label",
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string"}},
                "required": ["label"],
            },
        },
    }
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(response_format=fmt))
    task = _run_one(
        wfe_engine, wfe_run, "buy now", [Phase("label", assigned_to="agentic", max_attempts=3)]
    )

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == {"label": "spam"}
    failures = [e["error"] for e in task.history if e["event"] == "attempt_failed"]
    assert len(failures) == 2
    assert "not valid JSON" in failures[0] and "Sure! Here is the JSON" in failures[0]
    assert "does not match the response_format schema" in failures[1]
    assert "label: 7 is not of type 'string'" in failures[1]


SCORE = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["score"],
}


def test_an_agentic_phase_input_schema_types_its_output(openai_server, wfe_engine, wfe_run):
    """As a person's answer to a human phase, the agent's output must match the
    phase's input_schema: the model is asked for JSON of that schema."""
    openai_server.reply("I think it's about a 7")
    openai_server.json_reply({"score": 70})
    openai_server.json_reply({"score": 7})
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    phase = Phase("rate it", assigned_to="agentic", input_schema=SCORE, max_attempts=3)

    task = _run_one(wfe_engine, wfe_run, "a fine film", [phase])

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == {"score": 7}
    assert openai_server.requests[0]["body"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "rate_it", "schema": SCORE},
    }
    failures = [e["error"] for e in task.history if e["event"] == "attempt_failed"]
    assert failures[0].startswith("AdapterError: the reply is not valid JSON")
    # Named as the input_schema's, which the app set, not the response_format's.
    assert failures[1] == (
        "AdapterError: the output does not match the phase's input_schema: "
        "score: 70 is greater than the maximum of 10"
    )


def test_a_reply_breaking_the_input_schema_before_a_handlers_parse_is_named_so(
    openai_server, wfe_engine, wfe_run
):
    openai_server.json_reply({"score": "7"})
    parsed: list[Any] = []

    def shape(task, request):
        request.parse = parsed.append

    wfe_engine.register_handler("rate", shape)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    phase = Phase("rate", assigned_to="agentic", input_schema=SCORE)

    task = _run_one(wfe_engine, wfe_run, "a fine film", [phase])

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: the JSON reply (before the handler's parse) does not match the "
        "phase's input_schema: score: '7' is not of type 'integer'"
    )
    assert parsed == []


def test_an_input_schema_checks_the_output_whatever_the_response_format(
    openai_server, wfe_engine, wfe_run
):
    openai_server.reply("seven")
    openai_server.reply("7")

    def shape(task, request):
        request.response_format = None  # plain text, turned into the output by parse
        request.parse = lambda text: {"score": text}

    wfe_engine.register_handler("rate", shape)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    phase = Phase("rate", assigned_to="agentic", input_schema=SCORE, max_attempts=2)

    task = _run_one(wfe_engine, wfe_run, "a fine film", [phase])

    assert task.status is TaskStatus.FAILED
    assert "response_format" not in openai_server.requests[0]["body"]
    assert task.error == (
        "AdapterError: the output does not match the phase's input_schema: "
        "score: '7' is not of type 'integer'"
    )


def test_a_long_reply_breaking_the_schema_is_quoted_short_in_the_error(
    openai_server, wfe_engine, wfe_run
):
    """The error names the problem; the reply is the model's, as long as it likes."""
    essay = "Let me explain the score at length. " * 10_000
    openai_server.json_reply(essay)
    openai_server.json_reply({"score": 7, "notes": essay})
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    schema = {**SCORE, "additionalProperties": False}
    phase = Phase("rate", assigned_to="agentic", input_schema=schema, max_attempts=2)

    task = _run_one(wfe_engine, wfe_run, "a fine film", [phase])

    assert task.status is TaskStatus.FAILED
    first, second = [e["error"] for e in task.history if e["event"] == "attempt_failed"]
    quoted = repr(essay)
    assert first == (
        "AdapterError: the output does not match the phase's input_schema: (output): "
        f"{quoted[:100]}... [{len(quoted) - 100} more] is not of type 'object'"
    )
    # A value quoted inside a message is cut the same way; the other problems stay.
    assert second.startswith(
        "AdapterError: the output does not match the phase's input_schema: (output): "
        "Additional properties are not allowed ('notes' was unexpected)"
    )
    assert task.error == second
    assert len(second) < 1000


def test_a_long_refusal_is_cut_in_the_error(openai_server, wfe_engine, wfe_run):
    refusal = "I cannot help with that. " * 10_000
    message = {"role": "assistant", "content": None, "refusal": refusal}
    reply = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    openai_server.raw(200, json.dumps(reply).encode())
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    task = _run_one(wfe_engine, wfe_run, {}, [Phase("p", assigned_to="agentic")])

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        f"AdapterError: the model refused: {refusal[:500]}... [{len(refusal) - 500} more]"
    )


def test_invalid_json_on_the_last_attempt_fails_the_task(openai_server, wfe_engine, wfe_run):
    openai_server.reply("not json")
    wfe_engine.register_adapter(
        TaskType.AGENTIC, OpenAIAgentAdapter(response_format={"type": "json_object"})
    )
    task = _run_one(wfe_engine, wfe_run, {}, [Phase("p", assigned_to="agentic")])

    assert task.status is TaskStatus.FAILED
    assert task.error.startswith("AdapterError: the reply is not valid JSON")


def test_handler_shapes_the_request_and_parses_the_reply(openai_server, wfe_engine, wfe_run):
    openai_server.reply("  42  ")
    seen: list[AgentRequest] = []

    async def shape(task, request: AgentRequest) -> None:
        seen.append(request)
        request.model = "my-small-model"
        request.messages[0]["content"] = f"Count the words of: {task.data['text']}"
        request.tools = []  # no escalation for this phase
        request.options["max_tokens"] = 5
        request.parse = lambda text: int(text.strip())

    wfe_engine.register_handler("count", shape)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    task = _run_one(wfe_engine, wfe_run, {"text": "a b c"}, [Phase("count", assigned_to="agentic")])

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == 42
    body = openai_server.requests[0]["body"]
    assert body["model"] == "my-small-model"
    assert body["messages"][0]["content"] == "Count the words of: a b c"
    assert body["max_tokens"] == 5
    assert "tools" not in body
    assert seen[0].resumed is False
    assert task.context["openai"]["calls"][0]["model"] == "my-small-model"


def test_a_failing_parse_is_a_failed_attempt(openai_server, wfe_engine, wfe_run):
    openai_server.reply("forty-two")

    def shape(task, request):
        request.parse = int

    wfe_engine.register_handler("count", shape)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    task = _run_one(wfe_engine, wfe_run, {}, [Phase("count", assigned_to="agentic")])

    assert task.status is TaskStatus.FAILED
    assert "rejected by the handler's parse: ValueError" in task.error
    assert "forty-two" in task.error


def test_a_request_the_handler_left_unusable_fails_the_attempt_saying_why(
    openai_server, wfe_engine, wfe_run
):
    def shape(task, request):
        setattr(request, task.data["name"], task.data["value"])

    wfe_engine.register_handler("count", shape)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    wfe_engine.register_workflow("w", [Phase("count", assigned_to="agentic")])
    cases = [
        ("max_steps", 0, "request.max_steps must be an integer >= 1, not 0"),
        ("model", None, "request.model must be a non-empty string, not None"),
        ("response_format", "json", "request.response_format must be None or a dict with"),
        ("options", {"stream": True}, "request.options stream cannot be set"),
        ("options", None, "request.options must be a dict of request options, not None"),
        ("messages", "hello", "request.messages must be a list of message dicts, not 'hello'"),
        ("messages", [], "request.messages must be a list of message dicts, not []"),
        ("tools", None, "request.tools must be a list of functions or Tool objects, not None"),
        ("tools", ["add"], "request.tools: a tool needs a callable, not 'add'"),
        ("parse", "json", "request.parse must be a function of the reply (or None), not 'json'"),
    ]

    async def scenario() -> list[Any]:
        ids = [
            (await wfe_engine.submit_task({"name": name, "value": value}, "w")).id
            for name, value, _ in cases
        ]
        await wfe_engine.run_until_idle()
        return [await wfe_engine.get_task(i) for i in ids]

    for task, (_, _, message) in zip(wfe_run(scenario()), cases, strict=True):
        assert task.status is TaskStatus.FAILED
        assert task.error.startswith(
            f"AdapterError: the handler left the request unusable: {message}"
        )
    assert openai_server.requests == []


def test_a_function_a_handler_puts_in_request_tools_is_offered_as_a_tool(
    openai_server, wfe_engine, wfe_run
):
    """As tools= takes functions, so does request.tools; two tools of one name are
    refused, since only one of them could ever be called."""

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    def ask_human(question: str) -> str:
        """Not the built-in one."""
        return "no"

    openai_server.tool_calls(("add", {"a": 2, "b": 3}))
    openai_server.reply("5")

    def shape(task, request):
        request.tools.append(ask_human if task.data.get("clash") else add)

    wfe_engine.register_handler("sum", shape)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    wfe_engine.register_workflow("w", [Phase("sum", assigned_to="agentic")])

    async def scenario() -> list[Any]:
        added = await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        clash = await wfe_engine.submit_task({"clash": True}, "w")
        await wfe_engine.run_until_idle()
        return [await wfe_engine.get_task(added.id), await wfe_engine.get_task(clash.id)]

    added, clash = wfe_run(scenario())

    assert added.status is TaskStatus.COMPLETED, added.error
    assert added.output == "5"
    offered = openai_server.requests[0]["body"]["tools"]
    assert [t["function"]["name"] for t in offered] == ["ask_human", "add"]
    assert offered[1]["function"]["description"] == "Add two numbers."
    assert openai_server.messages()[-1]["content"] == "5"
    assert clash.status is TaskStatus.FAILED
    assert clash.error == (
        "AdapterError: the handler left the request unusable: request.tools has more "
        "than one tool named 'ask_human'"
    )
    assert len(openai_server.requests) == 2


def test_a_plain_handler_runs_instead_of_the_model(openai_server, wfe_engine, wfe_run):
    async def by_code(task):
        task.output = "done by code"

    wfe_engine.register_handler("p", by_code)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    task = _run_one(wfe_engine, wfe_run, {}, [Phase("p", assigned_to="agentic")])

    assert task.status is TaskStatus.COMPLETED
    assert task.output == "done by code"
    assert openai_server.requests == []


def test_reserved_request_options_are_refused():
    for bad in ({"messages": []}, {"stream": True}, {"response_format": "json"}):
        try:
            OpenAIAgentAdapter(**bad)
        except TypeError as exc:
            assert next(iter(bad)) in str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_reserved_options_and_tools_that_are_no_list_are_refused_saying_why():
    with pytest.raises(TypeError) as info:
        OpenAIAgentAdapter(stream=True)
    assert str(info.value) == (
        "request option stream cannot be set: streaming is not supported: the adapter "
        "needs each reply whole, to run its tool calls and check its output"
    )
    with pytest.raises(TypeError) as info:
        OpenAIAgentAdapter(phase_options={"p": {"messages": [], "n": 2}})
    assert str(info.value) == (
        "phase_options['p'] messages cannot be set: the adapter builds the messages itself "
        "(a handler can change request.messages); phase_options['p'] n cannot be set: the "
        "adapter continues one reply per call"
    )

    def lookup(order_id: str) -> str:
        return order_id

    for not_a_list, example in [(lookup, "lookup"), (len, "len"), ("lookup", "f")]:
        with pytest.raises(TypeError) as info:
            OpenAIAgentAdapter(tools=not_a_list)
        assert str(info.value) == (
            "tools must be a list of functions or Tool objects, such as "
            f"tools=[{example}], not {not_a_list!r}"
        )
    assert [t.name for t in OpenAIAgentAdapter(tools=(lookup,)).tools] == ["lookup"]


def test_bad_adapter_options_are_refused_naming_the_option():
    cases = [
        ({"phase_options": {"p": "gpt-4o-mini"}}, "phase_options['p'] must be a dict of options"),
        ({"phase_options": ["p"]}, "phase_options must be a dict"),
        ({"phase_options": {"p": {"model": ""}}}, "phase_options['p'] model must be a non-empty"),
        ({"phase_options": {"p": {"model": None}}}, "phase_options['p'] model must be a non-empty"),
        ({"max_item_chars": -1}, "max_item_chars must be an integer >= 1, not -1"),
        ({"max_input_chars": "10"}, "max_input_chars must be an integer >= 1, not '10'"),
        ({"system_prompt": 5}, "system_prompt must be a string or None, not int"),
        ({"api_key": b"sk-secret"}, "api_key must be a string or None, not bytes"),
        ({"timeout": "soon"}, "request option timeout must be a number of seconds > 0"),
        ({"phase_options": {"p": {"timeout": 0}}}, "phase_options['p'] timeout must be a number"),
        ({"phase_options": {1: {}}}, "phase_options keys are classifications (strings), not 1"),
        (
            {"response_format": {"type": "json_schema"}},
            "request option response_format json_schema must be a dict with a 'name'",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 1}}},
            "request option response_format json_schema schema must be a dict",
        ),
        (
            {
                "phase_options": {
                    "p": {
                        "response_format": {
                            "type": "json_schema",
                            "json_schema": {"name": "x", "schema": {"type": "strin"}},
                        }
                    }
                }
            },
            "phase_options['p'] response_format json_schema schema is not a valid JSON Schema: "
            "'strin' is not valid under any of the given schemas",
        ),
    ]
    for options, message in cases:
        with pytest.raises((TypeError, ValueError)) as raised:
            OpenAIAgentAdapter(**options)
        assert message in str(raised.value), options
    OpenAIAgentAdapter(timeout=2.5, phase_options={"p": {"timeout": None, "model": "m"}})


def test_the_request_is_plain_json(openai_server, wfe_engine, wfe_run):
    """What the server got can be replayed: every message is JSON the API accepts."""
    openai_server.reply("ok")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    _run_one(wfe_engine, wfe_run, {"n": 1}, [Phase("p", assigned_to="agentic")])
    body = openai_server.requests[0]["body"]
    assert json.loads(json.dumps(body)) == body
    assert {m["role"] for m in body["messages"]} == {"system", "user"}


def test_a_reply_cut_off_by_max_tokens_fails_the_attempt(openai_server, wfe_engine, wfe_run):
    openai_server.reply("This is cut o", finish_reason="length")
    openai_server.reply("This is complete.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(max_tokens=5))

    task = _run_one(
        wfe_engine, wfe_run, {}, [Phase("write", assigned_to="agentic", max_attempts=2)]
    )

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "This is complete."
    [failure] = [e["error"] for e in task.history if e["event"] == "attempt_failed"]
    assert failure == (
        "AdapterError: the reply was cut off by the output token limit (finish_reason=length; "
        "raise max_tokens or max_completion_tokens): it ends 'This is cut o'"
    )


def test_a_reply_cut_off_as_it_asks_for_tools_fails_the_attempt_naming_the_limit(
    openai_server, wfe_engine, wfe_run
):
    written: list[str] = []

    def write_file(name: str, text: str) -> str:
        """Write a text file."""
        written.append(name)
        return "written"

    def today() -> str:
        """Today's date."""
        written.append("today")
        return "2026-01-01"

    # The token limit ends the reply inside the arguments of its last call: told
    # they are not JSON, the model would ask again, cut off again, until max_steps.
    openai_server.tool_calls(
        ("write_file", {"name": "a.txt", "text": "short"}),
        ("write_file", '{"name": "b.txt", "text": "Once upon a time there wa'),
        finish_reason="length",
    )
    # Calls whose arguments are whole run, whatever the finish reason (llama.cpp
    # says "length" when the model ran on after them).
    openai_server.tool_calls(
        ("write_file", {"name": "a.txt", "text": "short"}), ("today", ""), finish_reason="length"
    )
    openai_server.reply("Written.")
    wfe_engine.register_adapter(
        TaskType.AGENTIC, OpenAIAgentAdapter(tools=[write_file, today], max_tokens=50)
    )

    task = _run_one(
        wfe_engine, wfe_run, {}, [Phase("write", assigned_to="agentic", max_attempts=2)]
    )

    assert task.status is TaskStatus.COMPLETED, task.error
    [failure] = [e["error"] for e in task.history if e["event"] == "attempt_failed"]
    assert failure == (
        "AdapterError: the reply was cut off by the output token limit (finish_reason=length; "
        "raise max_tokens or max_completion_tokens) as it asked for tools (write_file, "
        "write_file): the arguments of write_file end "
        """'{"name": "b.txt", "text": "Once upon a time there wa'"""
    )
    # No tool of the cut-off reply ran; the whole calls did (one without arguments too).
    assert written == ["a.txt", "today"]
    # The cut-off call is paid for: in usage, beside the next attempt's.
    assert task.context["openai"]["usage"]["calls"] == 3
    finished = [c["finish_reason"] for c in task.context["openai"]["calls"]]
    assert finished == ["length", "length", "stop"]


def test_a_reply_stopped_by_the_content_filter_fails_the_attempt(
    openai_server, wfe_engine, wfe_run
):
    openai_server.reply("Here is how to", finish_reason="content_filter")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    task = _run_one(wfe_engine, wfe_run, {}, [Phase("write", assigned_to="agentic")])

    assert task.status is TaskStatus.FAILED
    assert task.output is None
    assert task.error == (
        "AdapterError: the reply was stopped by the server's content filter "
        "(finish_reason=content_filter)"
    )


def test_a_cut_off_reply_fails_even_when_it_parses_as_json(openai_server, wfe_engine, wfe_run):
    openai_server.reply('{"total": 12}', finish_reason="length")  # maybe 12345 in full
    wfe_engine.register_adapter(
        TaskType.AGENTIC, OpenAIAgentAdapter(response_format={"type": "json_object"})
    )

    task = _run_one(wfe_engine, wfe_run, {}, [Phase("sum", assigned_to="agentic")])

    assert task.status is TaskStatus.FAILED
    assert task.output is None
    assert task.error.startswith("AdapterError: the reply was cut off by the output token limit")


def test_a_reply_sent_as_a_list_of_text_parts_is_joined(openai_server, wfe_engine, wfe_run):
    # Some compatible servers send the content as parts, as requests may carry it.
    parts = [{"type": "text", "text": "Paris is "}, {"type": "text", "text": "the capital."}]
    openai_server.tool_calls(("ask_nobody", {}), content=[{"type": "text", "text": "Let me see."}])
    openai_server.reply(parts)
    openai_server.reply([{"type": "text", "text": '{"label": "spam"}'}])
    wfe_engine.register_adapter(
        TaskType.AGENTIC,
        OpenAIAgentAdapter(phase_options={"label": {"response_format": {"type": "json_object"}}}),
    )

    task = _run_one(
        wfe_engine,
        wfe_run,
        {},
        [Phase("answer", assigned_to="agentic"), Phase("label", assigned_to="agentic")],
    )

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.outputs == {"answer": "Paris is the capital.", "label": {"label": "spam"}}
    # The tool-calling turn goes back to the server with its text as text.
    assistant = next(m for m in openai_server.messages(1) if m["role"] == "assistant")
    assert assistant["content"] == "Let me see."
