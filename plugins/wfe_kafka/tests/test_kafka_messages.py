"""The message formats and the configuration, without a broker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from typing import Any

import pytest
import wfe_kafka.plugin
from wfe_kafka import BadMessage, KafkaMQInterface, parse_task_message, task_message
from wfe_kafka.messages import (
    TASK_FIELDS,
    IdInUse,
    dead_letter_headers,
    event_message,
    message_digest,
    result_message,
    result_without_bulk,
    source_id,
)
from wfe_kafka.settings import CLIENT_CONFIG_VAR, ENV_VARS, kafka_settings, settings_from

from wfcore import Artifact, ECSWorkflowEngine, Phase, Task, TaskStatus
from wfcore.plugins import report_header
from wfcore.wire import FORMAT_VERSION, task_from_dict


def test_minimal_message_is_a_task_of_the_current_format() -> None:
    parsed = parse_task_message(b'{"workflow_name": "review", "data": {"doc": "a.txt"}}')
    assert parsed == {
        "workflow_name": "review",
        "data": {"doc": "a.txt"},
        "id": None,
        "classification": None,
        "assigned_to": None,
        "run_after": None,
        "priority": 0,
        "ignored": [],
    }


def test_optional_fields_and_unknown_ones() -> None:
    parsed = parse_task_message(
        json.dumps(
            {
                "format": 1,
                "id": "order-17",
                "workflow_name": "review",
                "data": [1, 2],
                "classification": "check",
                "assigned_to": "human",
                "run_after": "2026-12-01T09:00:00+01:00",
                "producer": "billing-service",
            }
        ).encode()
    )
    assert parsed["id"] == "order-17"
    assert parsed["run_after"] == datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    assert parsed["classification"] == "check"
    assert parsed["assigned_to"] == "human"
    # Read by no one, but named: a worker says once that it ignores it.
    assert "producer" not in parsed and parsed["ignored"] == ["producer"]


def test_a_null_field_is_read_as_absent_whichever_it_is() -> None:
    """Producers such as Jackson write null for a field they have no value for:
    ``"format": null`` was dead-lettered while the other nulls were taken."""
    absent = parse_task_message(b'{"workflow_name": "review"}')
    nulls = {name: None for name in TASK_FIELDS if name != "workflow_name"}
    assert parse_task_message(json.dumps({"workflow_name": "review", **nulls}).encode()) == absent
    # A required field that is null is missing, as it would be absent (no hint
    # from a null "workflow" either).
    with pytest.raises(BadMessage, match=r"^not a task: workflow_name is missing$"):
        parse_task_message(b'{"workflow_name": null, "workflow": null, "data": 1}')
    # What publish_task sends for such a dict reads the same.
    assert parse_task_message(task_message({"workflow_name": "review", **nulls})) == absent


def test_json_with_whitespace_around_it_or_after_it() -> None:
    # Read whole: whitespace around the object is JSON's, anything more is not.
    for value in (
        b' {"workflow_name": "w"}',
        b'{"workflow_name": "w"}\n',
        b'\t{"workflow_name":"w"} ',
    ):
        assert parse_task_message(value)["workflow_name"] == "w"
    for value, problem in (
        (b'{"workflow_name": "w"} {}', "^not valid JSON: Extra data: line 1 column 24"),
        (b'{"workflow_name": "w"}x', "^not valid JSON: Extra data: line 1 column 23"),
        (b"   ", "^not valid JSON: Expecting value: line 1 column 4"),
        (
            b'{"workflow_name": "w", "data": 1e999}',
            "^not valid JSON: the number 1e999 is too large",
        ),
    ):
        with pytest.raises(BadMessage, match=problem):
            parse_task_message(value)


def test_the_digest_is_the_sha256_of_the_canonical_json_of_what_is_asked() -> None:
    # Stored tasks keep it, and a message delivered again must give the same one
    # in any later version: keys sorted, no spaces, text as it is (not escaped).
    value = '{"data": {"b": [1.5, "é", null], "a": {"z": true, "y": 10}}, "workflow_name": "w"}'
    message = parse_task_message(value.encode())
    canonical = '["w",{"a":{"y":10,"z":true},"b":[1.5,"é",null]},null]'
    assert message_digest(message) == hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, r"^no value \(null\): not a task message$"),
        (b"", r"^empty value \(0 bytes\): not a task message$"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not"),
        # Messages are UTF-8; Python's json would read all of these.
        (
            '{"workflow_name": "w"}'.encode("utf-16"),
            r"^not UTF-8 text: it starts with a UTF-16 byte order mark \(ff fe\); send UTF-8$",
        ),
        ('{"workflow_name": "w"}'.encode("utf-16-le"), "^not UTF-8 text: it looks like UTF-16-LE"),
        ('{"workflow_name": "w"}'.encode("utf-16-be"), "^not UTF-8 text: it looks like UTF-16-BE"),
        ('{"workflow_name": "w"}'.encode("utf-32-be"), "^not UTF-8 text: it looks like UTF-32-BE"),
        ('{"workflow_name": "w"}'.encode("utf-32-le"), "^not UTF-8 text: it looks like UTF-32-LE"),
        ('{"workflow_name": "w"}'.encode("utf-32"), "^not UTF-8 text: .* UTF-32 byte order mark"),
        (
            '{"workflow_name": "w"}'.encode("utf-8-sig"),
            r"^not UTF-8 text: it starts with a UTF-8 byte order mark \(ef bb bf\); send it",
        ),
        # A \u escape of half a surrogate pair in UTF-16: named for its encoding.
        ('{"workflow_name": "w", "data": "\\ud800"}'.encode("utf-16-le"), "UTF-16-LE"),
        # Surrogates written as UTF-8 bytes (CESU-8), alone or in pairs.
        (
            b'{"workflow_name": "w", "data": "\xed\xa0\x80"}',
            "^not UTF-8 text: the bytes ed a0 80 at position 32 are a UTF-16 surrogate",
        ),
        (
            b'{"workflow_name": "w", "data": "\xed\xa0\xbd\xed\xb8\x80"}',
            "^not UTF-8 text: the bytes ed a0 bd at position 32 are a UTF-16 surrogate",
        ),
        (
            '{"workflow_name": "w", "data": "é"}'.encode("latin-1"),
            r"^not UTF-8 text: byte 0xe9 at position 32 \(invalid continuation byte\)$",
        ),
        (b"[1, 2]", "expected a JSON object, got an array"),
        (b"null", "expected a JSON object, got null"),
        (b'"order-17"', "expected a JSON object, got a string"),
        (b'{"data": 1}', r"^not a task: workflow_name is missing$"),
        # The dashboard's JSON API calls it "workflow": a hint, but no second name.
        (
            b'{"workflow": "review", "data": 1}',
            r"^not a task: workflow_name is missing \(did you mean workflow_name\?\)$",
        ),
        (b'{"workflow_name": 7}', "workflow_name: must be a non-empty string"),
        (b'{"workflow_name": "w", "id": 12}', "id: must be a string"),
        (b'{"workflow_name": "w", "format": 99}', "format 99 is newer"),
        (b'{"workflow_name": "w", "format": "1"}', "format: must be a positive integer"),
        (b'{"workflow_name": "w", "id": ""}', "id: must not be empty"),
        (b'{"workflow_name": "w", "run_after": 60}', "run_after: must be an ISO 8601 time"),
        (
            b'{"workflow_name": "w", "run_after": "2026-12-01T09:00:00"}',
            "is not an ISO 8601 time with a UTC offset",
        ),
        (b'{"workflow_name": "w", "run_after": "tomorrow"}', "'tomorrow' is not an ISO"),
        (
            b'{"workflow_name": "w", "priority": "10"}',
            r'^priority: must be an integer from -1000 to 1000, got a string \("10"\)$',
        ),
        (
            b'{"workflow_name": "w", "priority": 10.0}',
            r"^priority: must be an integer from -1000 to 1000, got a number \(10.0\)$",
        ),
        (
            b'{"workflow_name": "w", "priority": true}',
            r"^priority: must be an integer from -1000 to 1000, got a boolean \(true\)$",
        ),
        (
            b'{"workflow_name": "w", "priority": {"level": 1}}',
            r'^priority: must be an integer .*, got an object \(\{"level": 1\}\)$',
        ),
        (
            b'{"workflow_name": "w", "priority": 1001}',
            r"^priority: must be from -1000 to 1000, got 1001$",
        ),
        (
            b'{"workflow_name": "w", "priority": -5000}',
            r"^priority: must be from -1000 to 1000, got -5000$",
        ),
        # Python's json module accepts these; JSON does not, and no store can keep them.
        (b'{"workflow_name": "w", "data": NaN}', "not valid JSON: NaN is not a JSON number"),
        (b'{"workflow_name": "w", "data": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"workflow_name": "w", "data": 1e400}', "1e400 is too large"),
        (b'{"workflow_name": "w", "data": "\\ud800"}', "unpaired UTF-16 surrogate"),
        (b'{"workflow_name": "w", "data": {"\\udc00": 1}}', "unpaired UTF-16 surrogate"),
        (
            b'{"workflow_name": "w", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "nested deeper than 200 levels",
        ),
    ],
)
def test_bad_messages_are_named(value: bytes | None, problem: str) -> None:
    with pytest.raises(BadMessage, match=problem):
        parse_task_message(value)


def test_utf8_beyond_ascii_is_read_as_it_is() -> None:
    value = '{"workflow_name": "w", "data": ["é", "日本", "😀", "\\ud83d\\ude00"]}'.encode()
    assert parse_task_message(value)["data"] == ["é", "日本", "😀", "😀"]


def test_define_workflow_message_needs_no_workflow_name() -> None:
    parsed = parse_task_message(
        b'{"classification": "define_workflow", "data": {"name": "w", "phases": []}}'
    )
    assert parsed["workflow_name"] is None


def test_priority_is_read_from_the_message_and_defaults_to_0() -> None:
    for value, expected in ((b"1000", 1000), (b"-1000", -1000), (b"7", 7), (b"null", 0)):
        doc = b'{"workflow_name": "w", "priority": ' + value + b"}"
        parsed = parse_task_message(doc)
        assert parsed["priority"] == expected and parsed["ignored"] == []
    assert parse_task_message(b'{"workflow_name": "w"}')["priority"] == 0


def test_task_message_writes_a_priority_other_than_0() -> None:
    urgent = Task(data=1, workflow_name="w", id="t-1", priority=100)
    assert json.loads(task_message(urgent))["priority"] == 100
    assert parse_task_message(task_message(urgent))["priority"] == 100
    # The default is left out, as a message of a release before priorities.
    assert "priority" not in json.loads(task_message(Task(data=1, workflow_name="w")))
    plain = {"workflow_name": "w", "priority": -10}
    assert parse_task_message(task_message(plain))["priority"] == -10


def test_task_message_round_trips_through_the_parser() -> None:
    later = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    task = Task(
        data={"x": 1}, workflow_name="review", assigned_to="human", id="t-1", run_after=later
    )
    doc = json.loads(task_message(task))
    assert doc["format"] == FORMAT_VERSION
    assert parse_task_message(task_message(task)) == {
        "workflow_name": "review",
        "data": {"x": 1},
        "id": "t-1",
        "classification": None,
        "assigned_to": "human",
        "run_after": later,
        "priority": 0,
        "ignored": [],
    }
    plain = {"workflow_name": "w", "data": 1, "run_after": later}
    assert parse_task_message(task_message(plain))["run_after"] == later
    # The format this version writes may be named, or left null.
    for version in (FORMAT_VERSION, None):
        assert task_message({**plain, "format": version}) == task_message(plain)


def test_a_newer_format_is_refused_to_send_in_a_worker_s_words() -> None:
    """task_message() wrote format 1 whatever a dict said: a producer asking for
    format 2 got a message in a format it did not ask for."""
    newer = {"workflow_name": "w", "format": FORMAT_VERSION + 1}
    with pytest.raises(BadMessage) as dead_letter:
        parse_task_message(json.dumps(newer).encode())
    with pytest.raises(ValueError, match=r"^format: ") as refused:
        task_message(newer)
    assert f"would dead-letter it: {dead_letter.value})" in str(refused.value)


def test_result_message_is_the_task_in_wire_format() -> None:
    task = Task(data=1, workflow_name="w", id="t-9", status="completed", output={"ok": True})
    task.context["kafka"] = {"topic": "in", "partition": 2, "offset": 40}
    doc = json.loads(result_message(task))
    assert doc["id"] == "t-9"
    assert doc["status"] == "completed"
    assert doc["format"] == FORMAT_VERSION
    assert task_from_dict(doc).output == {"ok": True}
    assert doc["context"]["kafka"] == {"topic": "in", "partition": 2, "offset": 40}


def test_a_result_without_its_bulk_goes_without_the_ids_of_thousands_of_children() -> None:
    parent = Task(data="x" * 100, workflow_name="w", id="p", status=TaskStatus.COMPLETED)
    parent.children = [f"p.{n}" for n in range(1, 5001)]
    doc = json.loads(result_message(parent))
    assert len(doc["children"]) == 5000
    stripped = json.loads(result_without_bulk(result_message(parent)))
    assert stripped["children"] == []
    assert stripped["id"] == "p" and stripped["data"] is None
    assert stripped["result_too_large"] > 5000 * 6


def test_result_messages_do_not_carry_the_worker_hosts_artifact_paths() -> None:
    """A file name on the worker's host is of no use to another service, and tells
    it about the host's layout; the rest of each artifact's record stays."""
    task = Task(data=1, workflow_name="w", id="t-9", status="completed")
    task.artifacts.append(
        Artifact(
            name="stats.json",
            size=2,
            sha256="ab" * 32,
            media_type="application/json",
            phase="count",
            path="/var/lib/wfe/worker.db-artifacts/t-9/stats.json",
        )
    )
    [artifact] = json.loads(result_message(task))["artifacts"]
    assert "path" not in artifact
    assert artifact["name"] == "stats.json" and artifact["sha256"] == "ab" * 32
    assert task_from_dict(json.loads(result_message(task))).artifacts[0].size == 2


def test_suspended_event_carries_question_and_source() -> None:
    task = Task(data=None, workflow_name="w", id="t-2", status="waiting_human")
    task.waiting_reason = "Approve the refund?"
    task.context["kafka"] = {"topic": "in", "partition": 0, "offset": 3}
    doc = json.loads(event_message("suspended", task, Phase("approve")))
    assert doc["event"] == "suspended"
    assert doc["task_id"] == "t-2"
    assert doc["question"] == "Approve the refund?"
    assert doc["deadline"] is None
    assert doc["phase"] == "approve"
    assert doc["source"] == {"topic": "in", "partition": 0, "offset": 3}


def test_suspended_event_of_a_task_waiting_for_children_has_no_deadline() -> None:
    task = Task(data=None, workflow_name="w", classification="split", id="p")
    task.status = TaskStatus.WAITING_IO
    task.waiting_reason = "waiting for 2 child task(s) to finish"
    task.waiting_for = ["p.1", "p.2"]
    task.deadline = datetime(2030, 1, 1, tzinfo=timezone.utc)  # when a worker checks them
    doc = json.loads(event_message("suspended", task))
    assert doc["question"] == "waiting for 2 child task(s) to finish"
    assert doc["deadline"] is None


def test_suspended_event_names_the_type_of_the_phase_it_waits_in() -> None:
    """Who the task waits for: the phase's assigned_to, else the task's."""
    task = Task(data=None, workflow_name="w", id="t-4", status="waiting_human")
    assert task.assigned_to.value == "agentic"

    def waits_for(phase: Phase | None) -> str:
        return json.loads(event_message("suspended", task, phase))["assigned_to"]

    assert waits_for(Phase("approve", assigned_to="human")) == "human"
    assert waits_for(Phase("approve")) == "agentic"
    assert waits_for(None) == "agentic"


def test_attempt_failed_event_says_when_the_phase_runs_again() -> None:
    task = Task(data=None, workflow_name="w", id="t-3", status="pending", attempts=1)
    task.error = "ConnectionError: try again"
    task.run_after = datetime(2030, 1, 1, tzinfo=timezone.utc)
    doc = json.loads(event_message("attempt_failed", task, Phase("fetch", max_attempts=3)))
    assert (doc["event"], doc["phase"], doc["attempt"]) == ("attempt_failed", "fetch", 1)
    assert doc["error"] == "ConnectionError: try again"
    assert doc["retry_at"] == "2030-01-01T00:00:00+00:00"
    task.status, task.attempts = TaskStatus.FAILED, 3
    assert json.loads(event_message("attempt_failed", task, Phase("fetch")))["retry_at"] is None


def test_dead_letter_headers_keep_original_ones_first() -> None:
    headers = dead_letter_headers(BadMessage("not valid JSON"), "in", 1, 5, [("trace", b"abc")])
    assert headers[0] == ("trace", b"abc")
    names = dict(headers)
    assert names["wfe.error"] == b"not valid JSON"
    assert names["wfe.error.type"] == b"BadMessage"
    assert (names["wfe.source.topic"], names["wfe.source.partition"]) == (b"in", b"1")
    assert names["wfe.source.offset"] == b"5"
    assert source_id("in", 1, 5) == "in-1-5"


def test_a_dead_letter_for_a_taken_id_says_so_in_its_type_header() -> None:
    """A replay tool tells "id taken" (IdInUse) from a broken message (BadMessage)
    and from what submit_tasks refused (its error's type) by the header alone."""
    kinds = {
        error: dict(dead_letter_headers(error, "in", 0, 1))["wfe.error.type"]
        for error in (IdInUse("id 'a' already used"), BadMessage("not valid JSON"))
    }
    assert sorted(kinds.values()) == [b"BadMessage", b"IdInUse"]
    from wfcore.errors import UnknownWorkflowError

    unknown = dead_letter_headers(UnknownWorkflowError("nope"), "in", 0, 1)
    assert dict(unknown)["wfe.error.type"] == b"UnknownWorkflowError"


def test_settings_from_environment() -> None:
    assert settings_from({}) is None
    assert settings_from({"KAFKA_BROKERS": "  "}) is None
    settings = settings_from(
        {
            "KAFKA_BROKERS": "k1:9092,k2:9092",
            "WFE_KAFKA_TASKS_TOPIC": "orders",
            "WFE_KAFKA_GROUP": "billing",
            "WFE_KAFKA_MAX_PENDING": "50",
            "WFE_KAFKA_CLIENT_CONFIG": '{"security_protocol": "SASL_SSL"}',
        }
    )
    assert settings == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "tasks_topic": "orders",
        "group_id": "billing",
        "max_pending": 50,
        "security_protocol": "SASL_SSL",
    }
    # Not a number at all reads as one out of range does (=0: expected a whole number, ...).
    with pytest.raises(
        ValueError, match=r"^WFE_KAFKA_MAX_PENDING='many': expected a whole number, at least 1$"
    ):
        settings_from({"KAFKA_BROKERS": "k", "WFE_KAFKA_MAX_PENDING": "many"})
    with pytest.raises(
        ValueError,
        match=r"^WFE_KAFKA_OUTBOX_GRACE='5s': expected a finite number of seconds, at least 0$",
    ):
        settings_from({"KAFKA_BROKERS": "k", "WFE_KAFKA_OUTBOX_GRACE": "5s"})
    # Numbers in an engine's settings reach the interface's checks as they are: 2.5
    # is not quietly taken as 2.
    assert settings_from(
        {"KAFKA_BROKERS": "k", "WFE_KAFKA_MAX_PENDING": 2.5, "WFE_KAFKA_OUTBOX_GRACE": 1}  # type: ignore[dict-item]
    ) == {"bootstrap_servers": "k", "max_pending": 2.5, "outbox_grace": 1}
    with pytest.raises(ValueError, match="WFE_KAFKA_CLIENT_CONFIG is not valid JSON"):
        settings_from({"KAFKA_BROKERS": "k", "WFE_KAFKA_CLIENT_CONFIG": "{security_protocol: SSL"})
    with pytest.raises(ValueError, match="WFE_KAFKA_CLIENT_CONFIG must be a JSON object"):
        settings_from({"KAFKA_BROKERS": "k", "WFE_KAFKA_CLIENT_CONFIG": '["SSL"]'})


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (
            "WFE_KAFKA_TASK_TOPIC",
            r"^WFE_KAFKA_TASK_TOPIC is not a wfe_kafka setting "
            r"\(did you mean WFE_KAFKA_TASKS_TOPIC\?\)$",
        ),
        ("WFE_KAFKA_RESULT_TOPIC", r"\(did you mean WFE_KAFKA_RESULTS_TOPIC\?\)$"),
        ("WFE_KAFKA_DLQ", r"\(did you mean WFE_KAFKA_DLQ_TOPIC\?\)$"),
        ("WFE_KAFKA_CLIENT_CONFIGS", r"\(did you mean WFE_KAFKA_CLIENT_CONFIG\?\)$"),
        ("WFE_KAFKA_ZZZ", r"^WFE_KAFKA_ZZZ is not a wfe_kafka setting$"),
    ],
)
def test_a_misspelt_variable_is_refused_with_the_name_it_resembles(name: str, problem: str) -> None:
    """Ignored, WFE_KAFKA_TASK_TOPIC left the worker consuming the default topic."""
    with pytest.raises(ValueError, match=problem):
        settings_from({"KAFKA_BROKERS": "k", name: "orders.tasks"})


def test_variables_of_the_test_broker_are_not_worker_settings_and_are_left_alone() -> None:
    env = {"KAFKA_BROKERS": "k", "WFE_KAFKA_BOOTSTRAP": "k:1", "WFE_KAFKA_CACHE": "/tmp/c"}
    assert settings_from(env) == {"bootstrap_servers": "k"}


@pytest.mark.parametrize(
    ("config", "variable"),
    [
        ({"tasks_topic": "sneaky"}, "WFE_KAFKA_TASKS_TOPIC"),
        ({"max_pending": 0}, "WFE_KAFKA_MAX_PENDING"),
        ({"group_id": "g"}, "WFE_KAFKA_GROUP"),
        ({"bootstrap_servers": "k2:9092"}, "KAFKA_BROKERS"),
        ({"dead_letter_topic": ""}, "WFE_KAFKA_DLQ_TOPIC"),
    ],
)
def test_an_argument_with_a_variable_of_its_own_is_refused_in_the_client_config(
    config: dict[str, object], variable: str
) -> None:
    """It used to win over its variable, and a refusal then named the variable,
    which nobody had set (WFE_KAFKA_MAX_PENDING=0)."""
    [key] = config
    with pytest.raises(
        ValueError, match=rf"^WFE_KAFKA_CLIENT_CONFIG: '{key}' is set with {variable}, not here$"
    ):
        settings_from({"KAFKA_BROKERS": "k", CLIENT_CONFIG_VAR: json.dumps(config)})
    # kafka-python settings, and the interface's own without a variable, still go there.
    allowed = {"max_poll_records": 50, "session_timeout_ms": 6000}
    assert settings_from({"KAFKA_BROKERS": "k", CLIENT_CONFIG_VAR: json.dumps(allowed)}) == {
        "bootstrap_servers": "k",
        **allowed,
    }


def test_the_dead_letter_topic_is_turned_off_with_none_not_with_an_empty_value() -> None:
    assert settings_from({"KAFKA_BROKERS": "k", "WFE_KAFKA_DLQ_TOPIC": "none"}) == {
        "bootstrap_servers": "k",
        "dead_letter_topic": "",
    }
    assert KafkaMQInterface(dead_letter_topic="").dead_letter_topic == ""
    # Empty is unset, as for every variable: a template leaving it empty keeps the default.
    assert settings_from({"KAFKA_BROKERS": "k", "WFE_KAFKA_DLQ_TOPIC": ""}) == {
        "bootstrap_servers": "k"
    }


def test_allowing_a_volatile_store_is_a_flag() -> None:
    for text, value in (("1", True), ("true", True), ("Yes", True), ("0", False), ("off", False)):
        assert settings_from({"KAFKA_BROKERS": "k", "WFE_KAFKA_ALLOW_VOLATILE_STORE": text}) == {
            "bootstrap_servers": "k",
            "allow_volatile_store": value,
        }
    with pytest.raises(
        ValueError,
        match=r"^WFE_KAFKA_ALLOW_VOLATILE_STORE='sure': expected true or false \(1 or 0\)$",
    ):
        settings_from({"KAFKA_BROKERS": "k", "WFE_KAFKA_ALLOW_VOLATILE_STORE": "sure"})
    with pytest.raises(ValueError, match=r"^allow_volatile_store='yes': expected true or false"):
        KafkaMQInterface(allow_volatile_store="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"tasks_topic": "orders tasks"}, "tasks_topic='orders tasks' is not a valid Kafka topic"),
        ({"results_topic": ""}, "results_topic='' is not a valid Kafka topic"),
        ({"dead_letter_topic": "dlq/1"}, "dead_letter_topic='dlq/1' is not a valid"),
        ({"events_topic": "e" * 250}, "events_topic=.* is not a valid Kafka topic"),
        ({"tasks_topic": ".."}, "tasks_topic='..' is not a valid Kafka topic"),
        (
            {"bootstrap_servers": "k1:notaport"},
            r"^bootstrap_servers: 'k1:notaport' is not host:port$",
        ),
        (
            {"bootstrap_servers": "k1:9092,k2:70000"},
            r"^bootstrap_servers: 'k2:70000' is not host:port \(the port must be 1-65535\)$",
        ),
        (
            {"bootstrap_servers": "127.0.0.1:0"},
            r"^bootstrap_servers: '127.0.0.1:0' is not host:port \(the port must be 1-65535\)$",
        ),
        ({"bootstrap_servers": " , "}, "bootstrap_servers: no broker given"),
        ({"group_id": ""}, "group_id must be a non-empty string"),
        ({"sasl_plain_pasword": "secret"}, "unknown kafka-python setting 'sasl_plain_pasword'"),
        (
            {"consumer_config": {"acks": "all"}},
            "consumer_config: unknown KafkaConsumer setting 'acks'",
        ),
        ({"producer_config": {"group_id": "g"}}, "producer_config: unknown KafkaProducer setting"),
        ({"max_pending": 0}, r"^max_pending=0: expected a whole number, at least 1$"),
        ({"max_poll_records": 2.5}, r"^max_poll_records=2.5: expected a whole number"),
        ({"outbox_grace": float("nan")}, r"^outbox_grace=nan: expected a finite number"),
        ({"outbox_grace": float("inf")}, r"^outbox_grace=inf: expected a finite number"),
        ({"outbox_grace": -1.0}, r"^outbox_grace=-1.0: expected a finite number"),
        # Used only at the stop, which it failed with a TypeError.
        ({"close_timeout": "5"}, r"^close_timeout='5': expected a finite number of seconds"),
        ({"close_timeout": -1}, r"^close_timeout=-1: expected a finite number of seconds"),
        ({"outbox_consumer": 7}, r"^outbox_consumer=7: expected a string$"),
        # A TypeError, and for a list, "unknown KafkaConsumer setting ('a', 1)".
        ({"producer_config": 5}, r"^producer_config=5: expected a mapping of kafka-python"),
        (
            {"consumer_config": [("a", 1)]},
            r"^consumer_config=\[\('a', 1\)\]: expected a mapping of kafka-python settings$",
        ),
        # They won over the interface's own, which its start-up line still named.
        (
            {"consumer_config": {"group_id": "other"}},
            r"^consumer_config: 'group_id' is set with the interface's own argument "
            r"\(group_id=\.\.\., WFE_KAFKA_GROUP\), not here$",
        ),
        (
            {"producer_config": {"bootstrap_servers": "elsewhere:9092"}},
            r"^producer_config: 'bootstrap_servers' is set with the interface's own argument",
        ),
        (
            {"session_timeout_ms": "abc"},
            r"^kafka-python setting session_timeout_ms='abc': expected a number >= 0$",
        ),
        ({"consumer_config": {"check_crcs": "yes"}}, r"check_crcs='yes': expected true or false"),
        (
            {"security_protocol": "SASL_PLAIN"},
            r"security_protocol='SASL_PLAIN': expected one of PLAINTEXT, SSL, SASL_PLAINTEXT",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
            r"sasl_mechanism='PLAIN' needs sasl_plain_username",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-999",
                "sasl_plain_username": "u",
                "sasl_plain_password": "p",
            },
            r"sasl_mechanism='SCRAM-SHA-999': expected one of .*SCRAM-SHA-512",
        ),
        (
            {"sasl_mechanism": "PLAIN", "sasl_plain_username": "u", "sasl_plain_password": "p"},
            r"sasl_mechanism='PLAIN' has no effect with security_protocol='PLAINTEXT'",
        ),
        # Each would feed the worker its own output as task messages, without end.
        (
            {"tasks_topic": "orders", "events_topic": "orders"},
            r"^events_topic='orders' is the tasks topic too \(tasks_topic='orders'\): the "
            r"workers would consume their own lifecycle events as task messages",
        ),
        (
            {"tasks_topic": "orders", "dead_letter_topic": "orders"},
            r"^dead_letter_topic='orders' is the tasks topic too \(tasks_topic='orders'\)",
        ),
        ({"results_topic": "wfe.tasks"}, r"^results_topic='wfe.tasks' is the tasks topic too"),
        # kafka-python refuses these only when it makes the consumer, on its thread.
        (
            {"session_timeout_ms": 1000},
            r"^kafka-python setting session_timeout_ms=1000 must be more than "
            r"heartbeat_interval_ms=2000 \(wfe_kafka's default\): set heartbeat_interval_ms",
        ),
        (
            {"consumer_config": {"session_timeout_ms": 3000, "heartbeat_interval_ms": 3000}},
            r"^kafka-python setting session_timeout_ms=3000 must be more than "
            r"heartbeat_interval_ms=3000: ",
        ),
        (
            {"request_timeout_ms": 400},
            r"^kafka-python settings fetch_max_wait_ms=500 \(kafka-python's default\) < "
            r"request_timeout_ms=400 < connections_max_idle_ms=540000 \(kafka-python's "
            r"default\) do not hold",
        ),
        # Files kafka-python reads only when it connects, failing again and again.
        (
            {"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"},
            r"^kafka-python setting ssl_cafile='/nonexistent/ca.pem': no such file$",
        ),
        (
            {"security_protocol": "SSL", "ssl_certfile": tempfile.gettempdir()},
            r"^kafka-python setting ssl_certfile='.*': not a file$",
        ),
        (
            {"producer_config": {"ssl_keyfile": "/nonexistent/key.pem"}},
            r"ssl_keyfile='/nonexistent/key.pem': no such file",
        ),
    ],
)
def test_misconfiguration_is_refused_when_the_interface_is_made(
    arguments: dict[str, object], problem: str
) -> None:
    """Each of these used to be retried for ever (the consumer restarting with a
    traceback every few seconds), or silently ignored (a misspelled setting)."""
    from wfe_kafka import KafkaMQInterface

    with pytest.raises(ValueError, match=problem):
        KafkaMQInterface(**arguments)  # type: ignore[arg-type]


def test_valid_addresses_and_no_dead_letter_topic_are_accepted() -> None:
    from wfe_kafka import KafkaMQInterface

    kafka = KafkaMQInterface(
        "kafka1, 10.0.0.2:9093,[::1]:9094,SASL_SSL://k3:9095", dead_letter_topic=""
    )
    assert kafka.bootstrap_servers == [
        "kafka1",
        "10.0.0.2:9093",
        "[::1]:9094",
        "SASL_SSL://k3:9095",
    ]
    assert kafka.dead_letter_topic == ""


def test_engine_settings_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", "env:9092")

    class Engine:
        settings = {"KAFKA_BROKERS": "own:9092", "WFE_KAFKA_RESULTS_TOPIC": "done"}

    assert kafka_settings(Engine()) == {"bootstrap_servers": "own:9092", "results_topic": "done"}
    monkeypatch.delenv("KAFKA_BROKERS")
    assert kafka_settings(object()) is None


def test_client_settings_pass_sasl_through_and_keep_offsets_manual() -> None:
    from wfe_kafka import KafkaMQInterface

    kafka = KafkaMQInterface(
        "k1:9092",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_plain_username="u",
        sasl_plain_password="p",
        session_timeout_ms=6000,
        consumer_config={"enable_auto_commit": True},
    )
    producer, consumer = kafka.producer_settings(), kafka.consumer_settings()
    assert producer["acks"] == "all"
    assert producer["sasl_plain_username"] == consumer["sasl_plain_username"] == "u"
    assert consumer["session_timeout_ms"] == 6000
    assert "session_timeout_ms" not in producer
    assert consumer["enable_auto_commit"] is False
    # Partitions added to the tasks topic are given out within 30 s, not 5 minutes.
    assert consumer["metadata_max_age_ms"] == 30_000
    assert (
        KafkaMQInterface("k1:9092", metadata_max_age_ms=60_000).consumer_settings()[
            "metadata_max_age_ms"
        ]
        == 60_000
    )
    assert kafka.dead_letter_topic == "wfe.tasks.dlq"


def test_unconfigured_plugin_does_not_import_kafka(tmp_path: object) -> None:
    code = (
        "import asyncio, os, sys\n"
        "os.environ.pop('KAFKA_BROKERS', None)\n"
        "os.environ['WFE_LOAD_PLUGINS'] = 'wfe_kafka'\n"
        "from wfcore import ECSWorkflowEngine\n"
        "engine = ECSWorkflowEngine('memory://')\n"
        "assert 'wfe_kafka' in dict(engine.plugin_manager.list_name_plugin())\n"
        "from wfcore.plugins import report_header\n"
        "assert report_header(engine) == [], report_header(engine)\n"
        "asyncio.run(engine.run_until_idle())\n"
        "print('kafka' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def _header(
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, object] | None = None,
    store: str = f"sqlite://{tempfile.gettempdir()}/wfe-kafka-header-never-opened.db",
    **env: str,
) -> list[str]:
    """What ``wfe worker`` prints for the plugin: the engine's settings over ``env``
    (the store is named, not opened)."""
    for name in [*ENV_VARS, CLIENT_CONFIG_VAR, "KAFKA_BROKER", "KAFKA_BOOTSTRAP_SERVERS"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    engine = ECSWorkflowEngine(store, load_plugins=False, plugins=[wfe_kafka.plugin])
    if settings is not None:
        engine.settings = settings  # type: ignore[attr-defined]
    return report_header(engine)


def test_the_report_header_says_what_a_worker_consumes_and_publishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _header(monkeypatch) == []  # not configured: nothing to say
    assert _header(
        monkeypatch,
        KAFKA_BROKERS="k1:9092,k2:9092",
        WFE_KAFKA_TASKS_TOPIC="orders.tasks",
        WFE_KAFKA_RESULTS_TOPIC="orders.results",
        WFE_KAFKA_GROUP="billing",
        WFE_KAFKA_EVENTS_TOPIC="orders.events",
        WFE_KAFKA_DLQ_TOPIC="orders.bad",
    ) == [
        "kafka: consuming orders.tasks (group billing) at k1:9092,k2:9092; results to "
        "orders.results; events to orders.events; dead letters to orders.bad"
    ]
    # The defaults; the engine's settings win over the environment, as when it starts.
    assert _header(monkeypatch, {"KAFKA_BROKERS": "own:9092"}, KAFKA_BROKERS="env:9092") == [
        "kafka: consuming wfe.tasks (group wfe-workers) at own:9092; results to "
        "wfe.results; dead letters to wfe.tasks.dlq"
    ]
    [line] = _header(
        monkeypatch,
        KAFKA_BROKERS="k1:9093",
        WFE_KAFKA_CLIENT_CONFIG=json.dumps(
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_plain_username": "wfe",
                "sasl_plain_password": "s3cret-pw",
            }
        ),
        WFE_KAFKA_DLQ_TOPIC="none",
    )
    assert line.endswith("results to wfe.results; bad messages only logged (no dead-letter topic)")
    assert "s3cret-pw" not in line


def test_the_report_header_says_kafka_is_off_for_a_misnamed_brokers_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KAFKA_BOOTSTRAP_SERVERS (other tools' name) used to leave the worker without
    Kafka and without a word."""
    assert _header(monkeypatch, KAFKA_BOOTSTRAP_SERVERS="k1:9092") == [
        "kafka: off: KAFKA_BOOTSTRAP_SERVERS is set, but wfe_kafka reads KAFKA_BROKERS"
    ]
    assert _header(monkeypatch, KAFKA_BROKER="k1:9092") == [
        "kafka: off: KAFKA_BROKER is set, but wfe_kafka reads KAFKA_BROKERS"
    ]
    assert _header(monkeypatch, KAFKA_BROKER="k1:9092", KAFKA_BROKERS="k1:9092") == [
        "kafka: consuming wfe.tasks (group wfe-workers) at k1:9092; results to wfe.results; "
        "dead letters to wfe.tasks.dlq"
    ]
    # An empty KAFKA_BROKERS (a deployment's placeholder left unresolved), or none
    # beside WFE_KAFKA_* settings, left the worker without Kafka without a word too.
    assert _header(monkeypatch, KAFKA_BROKERS=" ") == ["kafka: off: KAFKA_BROKERS is set but empty"]
    assert _header(monkeypatch, WFE_KAFKA_TASKS_TOPIC="orders", WFE_KAFKA_GROUP="g") == [
        "kafka: off: WFE_KAFKA_GROUP is set, but KAFKA_BROKERS is not"
    ]
    # Nothing points at Kafka: nothing is said (the test broker's variable is no setting).
    assert _header(monkeypatch, WFE_KAFKA_BOOTSTRAP="127.0.0.1:9092") == []


def test_the_report_header_refuses_a_memory_store_unless_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [line] = _header(monkeypatch, store="memory://", KAFKA_BROKERS="k1:9092")
    assert line.startswith(
        "kafka: settings cannot be used: the store memory:// does not outlive this process, "
        "and a message's offset is committed once its task is stored"
    )
    assert line.endswith("or WFE_KAFKA_ALLOW_VOLATILE_STORE=True to accept that (tests, demos)")
    assert _header(
        monkeypatch, store="memory://", KAFKA_BROKERS="k1:9092", WFE_KAFKA_ALLOW_VOLATILE_STORE="1"
    ) == [
        "kafka: consuming wfe.tasks (group wfe-workers) at k1:9092; results to wfe.results; "
        "dead letters to wfe.tasks.dlq"
    ]


@pytest.mark.parametrize(
    ("settings", "env", "problem"),
    [
        (None, {"KAFKA_BROKERS": "127.0.0.1:0"}, "KAFKA_BROKERS: '127.0.0.1:0' is not host:port"),
        (
            None,
            {"KAFKA_BROKERS": "k1", "WFE_KAFKA_MAX_PENDING": "abc"},
            "WFE_KAFKA_MAX_PENDING='abc': expected a whole number, at least 1",
        ),
        (
            {"WFE_KAFKA_MAX_PENDING": 2.5},
            {"KAFKA_BROKERS": "k1"},
            "WFE_KAFKA_MAX_PENDING=2.5: expected a whole number, at least 1",
        ),
        (
            None,
            {"KAFKA_BROKERS": "k1", "WFE_KAFKA_CLIENT_CONFIG": "{ssl"},
            "WFE_KAFKA_CLIENT_CONFIG is not valid JSON",
        ),
        (
            None,
            {"KAFKA_BROKERS": "k1", "WFE_KAFKA_CLIENT_CONFIG": '{"sasl_plain_pasword": "x"}'},
            "WFE_KAFKA_CLIENT_CONFIG: unknown kafka-python setting 'sasl_plain_pasword'",
        ),
        # Both settings named by their variables.
        (
            None,
            {"KAFKA_BROKERS": "k1", "WFE_KAFKA_EVENTS_TOPIC": "wfe.tasks"},
            "WFE_KAFKA_EVENTS_TOPIC='wfe.tasks' is the tasks topic too "
            "(WFE_KAFKA_TASKS_TOPIC='wfe.tasks')",
        ),
        (
            None,
            {"KAFKA_BROKERS": "k1", "WFE_KAFKA_CLIENT_CONFIG": '{"session_timeout_ms": 1000}'},
            "WFE_KAFKA_CLIENT_CONFIG: kafka-python setting session_timeout_ms=1000 must be more "
            "than heartbeat_interval_ms=2000 (wfe_kafka's default)",
        ),
        (
            None,
            {"KAFKA_BROKERS": "k1", "WFE_KAFKA_TASK_TOPIC": "orders"},
            "WFE_KAFKA_TASK_TOPIC is not a wfe_kafka setting (did you mean WFE_KAFKA_TASKS_TOPIC?)",
        ),
    ],
)
def test_the_report_header_says_what_is_wrong_with_the_settings(
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, object] | None,
    env: dict[str, str],
    problem: str,
) -> None:
    """A line, not an exception: the engine's start refuses them in its own words."""
    [line] = _header(monkeypatch, settings, **env)
    assert line.startswith(f"kafka: settings cannot be used: {problem}")


def test_the_report_header_of_an_engine_wired_in_code(
    monkeypatch: pytest.MonkeyPatch, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """Auto-wiring leaves an engine with an interface attached by hand alone: so
    does the header, rather than name topics the worker will not consume."""
    monkeypatch.setenv("KAFKA_BROKERS", "env:9092")
    engine = wfe_engine_factory(plugins=[wfe_kafka.plugin])
    kafka = KafkaMQInterface("127.0.0.1:9092", tasks_topic="mine", close_timeout=1.0)

    async def attached() -> list[str]:
        await kafka.attach(engine)
        try:
            return report_header(engine)
        finally:
            await kafka.close()

    assert wfe_run(attached()) == [
        "kafka: KafkaMQInterface('127.0.0.1:9092', tasks='mine', results='wfe.results', "
        "group='wfe-workers') attached in code; KAFKA_BROKERS and the WFE_KAFKA_* "
        "settings are not used"
    ]


@pytest.mark.parametrize(
    ("task", "error", "problem"),
    [
        (
            {"workflow": "review", "data": 1},
            ValueError,
            r"^'workflow' is not a task message field \(did you mean workflow_name\?\); "
            r"the fields are format, id, workflow_name",
        ),
        ({"data": 1}, ValueError, r"^not a task message a worker can take: not a task: "),
        (
            {"workflow_name": "w", "id": 17},
            ValueError,
            r"^not a task message a worker can take: id: must be a string, got a number$",
        ),
        (
            {"workflow_name": "w", "run_after": "tomorrow"},
            ValueError,
            r"^not a task message a worker can take: run_after: 'tomorrow' is not an ISO",
        ),
        # These were sent, and every worker dead-lettered them (InvalidTaskError).
        (
            {"workflow_name": "w", "id": "orders/17"},
            ValueError,
            r"^not a task message a worker can take: task_id 'orders/17' may not contain '/'",
        ),
        (
            {"workflow_name": "w", "id": "order-17 "},
            ValueError,
            r"^not a task message a worker can take: task_id 'order-17 ' may not start or end",
        ),
        (
            {"workflow_name": "w", "assigned_to": "robot"},
            ValueError,
            r"^not a task message a worker can take: unknown assigned_to 'robot' \(one of: ",
        ),
        (
            {"workflow_name": "w", "priority": 5000},
            ValueError,
            r"^not a task message a worker can take: priority: must be from -1000 to 1000, "
            r"got 5000$",
        ),
        (
            {"workflow_name": "w", "priority": "high"},
            ValueError,
            r"^not a task message a worker can take: priority: must be an integer ",
        ),
        (
            {"workflow_name": "w", "prority": 5},
            ValueError,
            r"^'prority' is not a task message field \(did you mean priority\?\)",
        ),
        (
            "text",
            TypeError,
            r"^publish_task takes a Task or a mapping of task message fields, not str$",
        ),
        # Another format was sent as format 1, as if the producer had not asked.
        (
            {"workflow_name": "w", "format": 2},
            ValueError,
            r"^format: this version of wfe_kafka writes format 1, not 2 \(a worker of this "
            r"version would dead-letter it: format 2 is newer than this worker understands "
            r"\(1\)\); leave format out to send format 1$",
        ),
        (
            {"workflow_name": "w", "format": "1"},
            ValueError,
            r"^format: this version of wfe_kafka writes format 1, not '1' \(a worker of this "
            r"version would dead-letter it: format: must be a positive integer, got '1'\); ",
        ),
        ({"workflow_name": "w", "format": 1.0}, ValueError, r"^format: .*, not 1\.0 \("),
        ({"workflow_name": "w", "format": True}, ValueError, r"^format: .*, not True \("),
        ({"workflow_name": "w", "format": 0}, ValueError, r"^format: .*, not 0 \("),
        (
            {"workflow_name": "w", "data": {"ratio": float("nan")}},
            ValueError,
            r"^task message field 'data': must be JSON: Out of range float values",
        ),
        (
            {"workflow_name": "w", "data": {"tags": {"a"}}},
            ValueError,
            r"^task message field 'data': must be JSON: Object of type set is not",
        ),
    ],
)
def test_publish_task_refuses_what_a_worker_would_dead_letter(
    task: Any, error: type[Exception], problem: str
) -> None:
    """Nothing is sent (there is no broker here): the producer is never made."""
    kafka = KafkaMQInterface("127.0.0.1:1", close_timeout=0.5)
    with pytest.raises(error, match=problem):
        asyncio.run(kafka.publish_task(task))
    assert kafka._producers == {}
