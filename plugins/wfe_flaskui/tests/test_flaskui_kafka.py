"""With ``KAFKA_BROKERS`` set and wfe_kafka installed: submissions go through a real Kafka
broker, and results from the results topic show up in the dashboard."""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any, NoReturn

import pytest
from flaskui_demo_app import make_engine
from flaskui_helpers import REPO, Api, submit_form_hidden, wait_for
from werkzeug.datastructures import MultiDict
from wfe_flaskui import Dashboard, create_app

from wfcore import Task, TaskStatus
from wfcore.testing import run_sync

BROKER = REPO / "plugins" / "wfe_kafka" / "broker" / "kafka_broker.py"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"Kafka is required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(f"Kafka unavailable: {reason}")


def _require_kafka_packages() -> None:
    """Skip (fail in CI) unless wfe_kafka and kafka-python are installed."""
    for package in ("wfe_kafka", "kafka"):
        if importlib.util.find_spec(package) is None:
            _unavailable(f"{package} is not installed")


def _broker_module() -> ModuleType:
    # The broker helper of wfe_kafka's tests, loaded by path (it is not a package).
    name = "wfe_kafka_test_broker"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BROKER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def kafka_bootstrap() -> str:
    """A real broker: ``$WFE_KAFKA_BOOTSTRAP``, else the one wfe_kafka's tests use
    (started on first use, stopped when the test process exits)."""
    _require_kafka_packages()
    if not BROKER.is_file():
        _unavailable(f"no broker helper at {BROKER}")
    brokers = _broker_module()
    try:
        return brokers.shared_bootstrap()
    except brokers.BrokerUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture
def kafka_dashboard(
    kafka_bootstrap: str, wfe_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Dashboard, Any, dict[str, str]]]:
    """The one-process set-up with Kafka: the dashboard and a worker that consumes the
    tasks topic and publishes results (wfe_kafka's auto-wiring), on fresh topics."""
    import wfe_kafka.plugin

    brokers = _broker_module()
    topics = {
        "tasks": f"wfe-ui-tasks-{uuid.uuid4().hex[:10]}",
        "results": f"wfe-ui-results-{uuid.uuid4().hex[:10]}",
    }
    for topic in topics.values():
        brokers.create_topic(kafka_bootstrap, topic, 1)
    monkeypatch.setenv("KAFKA_BROKERS", kafka_bootstrap)
    monkeypatch.setenv("WFE_KAFKA_TASKS_TOPIC", topics["tasks"])
    monkeypatch.setenv("WFE_KAFKA_RESULTS_TOPIC", topics["results"])
    monkeypatch.setenv("WFE_KAFKA_GROUP", f"wfe-ui-{uuid.uuid4().hex[:10]}")
    engine = make_engine(plugins=[wfe_kafka.plugin])
    engine.use_store(wfe_store_url)
    dash = Dashboard(engine, run_worker=True, token="")
    app = create_app(dash, secret_key="k")
    try:
        assert dash.kafka is not None
        wait_for(dash.kafka.ready.is_set, 30, "the dashboard to follow the results topic")
        yield dash, app, topics
    finally:
        dash.stop()
        try:
            brokers.delete_topics(kafka_bootstrap, list(topics.values()))
        except Exception as exc:
            print(f"could not delete topics {topics}: {exc}", file=sys.stderr)


def reader_tries_1s(monkeypatch: pytest.MonkeyPatch, brokers: str) -> None:
    """Kafka at ``brokers`` in the environment too, with ``WFE_KAFKA_CLIENT_CONFIG``
    cutting the results reader's tries to reach it to 1 s each: wfe_kafka's consumers
    take 5 s, which the dashboard's PUBLISH_TIMEOUT does not cut, and stopping a
    dashboard waits for the try under way. Only consumers: a submission's producer
    keeps the dashboard's own cut. (The environment's settings are read only with
    KAFKA_BROKERS set.)"""
    monkeypatch.setenv("KAFKA_BROKERS", brokers)
    monkeypatch.setenv(
        "WFE_KAFKA_CLIENT_CONFIG", json.dumps({"consumer_config": {"bootstrap_timeout_ms": 1000}})
    )


@pytest.fixture
def kafka_nowhere(monkeypatch: pytest.MonkeyPatch) -> str:
    """The address of a Kafka that cannot be reached (nothing listens on a port just
    released), with the dashboard's tries to reach Kafka cut to 1 s each and no
    other client settings from the environment."""
    import wfe_flaskui.kafka

    _require_kafka_packages()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(wfe_flaskui.kafka, "PUBLISH_TIMEOUT", 1.0)
    reader_tries_1s(monkeypatch, nowhere)
    return nowhere


def test_kafka_that_cannot_be_reached_is_named_in_the_503(
    wfe_store_url: str, kafka_nowhere: str
) -> None:
    nowhere = kafka_nowhere
    engine = make_engine()
    engine.use_store(wfe_store_url)
    dash = Dashboard(engine, token="", kafka_brokers=nowhere)
    try:
        api = Api(create_app(dash, secret_key="k").test_client())
        started = time.monotonic()
        response = api.post("/api/tasks", {"workflow": "numbers", "data": {"n": 1}})
        assert response.status_code == 503
        error = response.get_json()["error"]
        assert error.startswith(f"could not publish the task to Kafka ({nowhere}): "), error
        assert "engine" not in error
        # kafka-python's own waits (30 s to connect) are not the dashboard's.
        assert time.monotonic() - started < 10
        form = api.client.post(
            "/submit", data={"csrf_token": api.csrf, "workflow": "numbers", "data": "{}"}
        )
        assert form.status_code == 503
        assert f"could not publish the task to Kafka ({nowhere})" in form.text
        assert api.get("/api/tasks").get_json()["total"] == 0
    finally:
        dash.stop()


def test_kafka_that_cannot_be_reached_shows_in_the_header_and_the_log(
    wfe_store_url: str, kafka_nowhere: str, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = kafka_nowhere
    caplog.set_level(logging.WARNING, logger="wfe_flaskui.kafka")
    engine = make_engine()
    engine.use_store(wfe_store_url)
    dash = Dashboard(engine, token="", kafka_brokers=nowhere)
    try:
        api = Api(create_app(dash, secret_key="k").test_client())
        chip = re.compile(
            r'<span class="chip chip-kafka chip-warn" id="kafka-chip" data-ok-title="[^"]*" '
            r'title="([^"]*)">kafka unreachable</span>'
        )
        found = wait_for(lambda: chip.search(api.get("/").text), 30, "the chip to warn")
        assert re.fullmatch(
            rf"Kafka cannot be reached at {nowhere} since "
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(reading results: .+\)",
            html.unescape(found[1]),
        ), found[1]
        logged = [r.getMessage() for r in caplog.records if r.name == "wfe_flaskui.kafka"]
        assert any(
            line.startswith(f"cannot reach Kafka at {nowhere} (") and line.endswith("); retrying")
            for line in logged
        ), logged
        # A submission that Kafka did not take joins the reasons.
        response = api.post("/api/tasks", {"workflow": "numbers", "data": {"n": 1}})
        assert response.status_code == 503
        refreshed = api.get("/", headers={"X-WFE-Partial": "1"})
        trouble = json.loads(refreshed.headers["X-WFE-Kafka"])
        assert trouble["label"] == "kafka unreachable"
        assert trouble["title"].startswith(f"Kafka cannot be reached at {nowhere} since ")
        assert "; publishing: " in trouble["title"]
    finally:
        dash.stop()

    # With an access token, someone not logged in learns nothing about Kafka.
    guarded = Dashboard(make_engine(), token="s3cret", kafka_brokers=nowhere)
    guarded.engine.use_store(wfe_store_url)
    try:
        client = create_app(guarded, secret_key="k").test_client()
        wait_for(guarded.kafka.trouble, 30, "reading results to fail")
        for response in (
            client.get("/login", headers={"X-WFE-Partial": "1"}),
            client.post("/login", headers={"X-WFE-Partial": "1"}),
        ):
            assert "X-WFE-Kafka" not in response.headers
            assert nowhere not in response.text and "kafka" not in response.text.lower()
    finally:
        guarded.stop()


def test_kafka_going_down_after_the_reader_connected_shows_in_the_header(
    kafka_bootstrap: str, wfe_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker of its own, frozen with SIGSTOP once the dashboard follows its results
    topic (its connections hang, as in a network outage), then thawed."""
    import wfe_flaskui.kafka

    brokers = _broker_module()
    broker = brokers.KafkaBroker().start()
    monkeypatch.setattr(wfe_flaskui.kafka, "CHECK_EVERY", 1.0)
    monkeypatch.setattr(wfe_flaskui.kafka, "PUBLISH_TIMEOUT", 2.0)
    monkeypatch.delenv("WFE_KAFKA_CLIENT_CONFIG", raising=False)
    dash = None
    try:
        engine = make_engine()
        engine.use_store(wfe_store_url)
        dash = Dashboard(engine, token="", kafka_brokers=broker.bootstrap)
        api = Api(create_app(dash, secret_key="k").test_client())
        assert dash.kafka is not None
        brokers.create_topic(broker.bootstrap, dash.kafka.results_topic, 1)

        def trouble() -> dict[str, str]:
            partial = api.get("/", headers={"X-WFE-Partial": "1"})
            return json.loads(partial.headers["X-WFE-Kafka"])

        wait_for(dash.kafka.ready.is_set, 30, "the dashboard to follow the results topic")
        assert trouble() == {}
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            down = wait_for(trouble, 30, "the chip to warn")
            assert down["label"] == "kafka unreachable"
            assert down["title"].startswith(f"Kafka cannot be reached at {broker.bootstrap} ")
            assert "(reading results: " in down["title"]
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        wait_for(lambda: trouble() == {}, 60, "the chip to clear once Kafka answers again")
    finally:
        if dash is not None:
            dash.stop()
        broker.stop()


def test_submitting_publishes_to_kafka_and_the_result_comes_back(
    kafka_dashboard: tuple[Dashboard, Any, dict[str, str]],
) -> None:
    dash, app, topics = kafka_dashboard
    api = Api(app.test_client())
    response = api.post("/api/tasks", {"workflow": "numbers", "data": {"n": 6}})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "published"
    assert body["kafka"]["topic"] == topics["tasks"]
    assert response.headers["Location"].endswith(f"/api/tasks/{body['id']}")
    task_id = body["id"]

    # The worker consumed it from Kafka into the store and ran it...
    done = api.wait_status(task_id, "completed", timeout=60)
    assert done["output"] == "reported 12"
    # ...and its result came back through the results topic.
    result = wait_for(lambda: dash.kafka.result(task_id), 30, "the result message")
    assert result["status"] == "completed"
    assert result["output"] == "reported 12"
    page = api.get("/").get_data(as_text=True)
    assert "Results from Kafka" in page
    assert f'<tr data-task-id="{task_id}">' in page
    # Kafka answers: the header's chip is the plain one, and says what the link does.
    chip = re.search(r'<span class="chip chip-kafka"[^>]* title="([^"]*)">kafka</span>', page)
    assert chip, page
    assert chip[1] == (
        f"submitted tasks are published to Kafka topic {topics['tasks']} at "
        f"{dash.kafka.brokers}; results are read from {topics['results']}"
    )
    assert api.get("/", headers={"X-WFE-Partial": "1"}).headers["X-WFE-Kafka"] == "{}"

    bad = api.post("/api/tasks", {"workflow": "nope", "data": {}})
    assert bad.status_code == 400
    assert "unknown workflow 'nope'" in bad.get_json()["error"]

    fields = [*submit_form_hidden(api.get("/submit").text), ("workflow", "numbers")]
    fields.append(("data", '{"n": 1}'))
    form = api.client.post("/submit", data=MultiDict(fields))
    assert form.status_code == 303
    # Sent twice, the form is published once: the second post shows the same task.
    repeat = api.client.post("/submit", data=MultiDict(fields))
    assert repeat.status_code == 303
    assert repeat.headers["Location"] == form.headers["Location"]
    shown = api.client.get(form.headers["Location"]).get_data(as_text=True)
    assert f"published to Kafka topic {topics['tasks']}" in shown
    form_id = form.headers["Location"].rsplit("/", 1)[1]
    assert api.wait_status(form_id, "completed", timeout=60)["output"] == "reported 2"


def test_results_of_tasks_run_elsewhere_are_shown(
    kafka_dashboard: tuple[Dashboard, Any, dict[str, str]], kafka_bootstrap: str
) -> None:
    from wfe_kafka import KafkaMQInterface

    dash, app, topics = kafka_dashboard
    elsewhere = Task(
        data={"n": 100},
        workflow_name="numbers",
        status=TaskStatus.COMPLETED,
        output="computed on another store",
    )

    async def publish() -> None:
        kafka = KafkaMQInterface(kafka_bootstrap, results_topic=topics["results"])
        try:
            await kafka.publish_result(elsewhere)
        finally:
            await kafka.close()

    run_sync(publish())
    wait_for(lambda: dash.kafka.result(elsewhere.id), 30, "the foreign result")
    client = app.test_client()
    page = client.get(f"/tasks/{elsewhere.id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="remote-note"' in html
    assert "computed on another store" in html
    assert 'data-action="cancel"' not in html
    doc = client.get(f"/api/tasks/{elsewhere.id}").get_json()
    assert doc["source"] == "kafka" and doc["status"] == "completed"
    assert elsewhere.id[:8] in client.get("/").get_data(as_text=True)


def test_a_task_to_start_later_is_published_with_its_start_time(
    kafka_dashboard: tuple[Dashboard, Any, dict[str, str]],
) -> None:
    dash, app, _topics = kafka_dashboard
    api = Api(app.test_client())
    body = {"workflow": "numbers", "data": {"n": 1}, "run_after": 3600, "priority": 7}
    response = api.post("/api/tasks", body)
    assert response.status_code == 202
    task_id = response.get_json()["id"]
    sent = dash.kafka.published(task_id)["message"]["run_after"]
    # The worker consuming the topic stores it to start then, and leaves it waiting;
    # its priority goes with it.
    stored = api.wait_status(task_id, "pending", timeout=60)
    assert stored["run_after"] == sent
    assert stored["priority"] == 7
    assert datetime.fromisoformat(sent) - datetime.now(timezone.utc) > timedelta(minutes=59)
    assert 'id="task-start"' in api.get(f"/tasks/{task_id}").text

    bad = api.post("/api/tasks", {"workflow": "numbers", "run_after": "noon"})
    assert bad.status_code == 400 and '"run_after" must be' in bad.get_json()["error"]

    fields = [*submit_form_hidden(api.get("/submit").text), ("workflow", "numbers")]
    fields += [("data", '{"n": 2}'), ("start_later", "2026-12-24T18:00:00+01:00")]
    fields.append(("priority", "-3"))
    form = api.client.post("/submit", data=MultiDict(fields))
    assert form.status_code == 303
    shown = api.client.get(form.headers["Location"]).text
    assert "a worker will start it at 2026-12-24 17:00:00 UTC." in shown
    form_id = form.headers["Location"].rsplit("/", 1)[1]
    stored = api.wait_status(form_id, "pending", timeout=60)
    assert (stored["run_after"], stored["priority"]) == ("2026-12-24T17:00:00+00:00", -3)


def test_a_published_task_shows_its_start_time_until_a_worker_takes_it(
    kafka_bootstrap: str, wfe_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    brokers = _broker_module()
    topic = f"wfe-ui-later-{uuid.uuid4().hex[:10]}"
    brokers.create_topic(kafka_bootstrap, topic, 1)
    monkeypatch.setenv("WFE_KAFKA_TASKS_TOPIC", topic)
    engine = make_engine()
    engine.use_store(wfe_store_url)
    # No worker consumes the topic, so the task stays published.
    dash = Dashboard(engine, token="", kafka_brokers=kafka_bootstrap)
    try:
        api = Api(create_app(dash, secret_key="k").test_client())
        body = {
            "workflow": "numbers",
            "data": {},
            "run_after": "2026-12-24T18:00:00+01:00",
            "priority": 9,
        }
        response = api.post("/api/tasks", body)
        assert response.status_code == 202
        page = api.get(f"/tasks/{response.get_json()['id']}").text
        assert 'data-status="published"' in page
        assert '<dt>Priority</dt><dd id="task-priority" data-priority="9">9</dd>' in page
        start = re.search(r'<div id="task-start"><dt>Starts</dt><dd>(.*?)</dd>', page)
        assert start and ">2026-12-24 17:00:00 UTC</time>" in start[1]
    finally:
        dash.stop()
        brokers.delete_topics(kafka_bootstrap, [topic])


def test_a_fault_that_is_not_kafkas_is_not_reported_as_kafka_down(
    wfe_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_kafka_packages()
    reader_tries_1s(monkeypatch, "127.0.0.1:1")
    engine = make_engine()
    engine.use_store(wfe_store_url)
    dash = Dashboard(engine, token="", kafka_brokers="127.0.0.1:1")

    async def broken(doc: Any) -> Any:
        raise TypeError("a bug in the message code")

    try:
        app = create_app(dash, secret_key="k")
        app.testing = False  # the error page a user sees, not the exception
        assert dash.kafka is not None
        monkeypatch.setattr(dash.kafka.interface, "publish_task", broken)
        response = Api(app.test_client()).post(
            "/api/tasks", {"workflow": "numbers", "data": {"n": 1}}
        )
        assert response.status_code == 500
        assert "could not publish" not in response.get_data(as_text=True)
    finally:
        dash.stop()


def test_a_result_message_nested_too_deep_is_skipped_like_other_garbage(
    kafka_bootstrap: str,
    wfe_store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Anyone who may write to the results topic: a message deeper than Python's stack
    (json.loads raises RecursionError), or one it parses but no page could render, is
    skipped; the results after it still show, and Kafka is not reported unreachable."""
    from kafka import KafkaProducer

    brokers = _broker_module()
    topic = f"wfe-ui-results-{uuid.uuid4().hex[:10]}"
    brokers.create_topic(kafka_bootstrap, topic, 1)
    # The topic's name comes with the brokers' from the environment, as for `wfe ui`.
    monkeypatch.setenv("KAFKA_BROKERS", kafka_bootstrap)
    monkeypatch.setenv("WFE_KAFKA_RESULTS_TOPIC", topic)
    caplog.set_level(logging.WARNING, logger="wfe_flaskui.kafka")
    engine = make_engine()
    engine.use_store(wfe_store_url)
    dash = Dashboard(engine, token="")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        api = Api(create_app(dash, secret_key="k").test_client())
        assert dash.kafka is not None
        wait_for(dash.kafka.ready.is_set, 30, "the dashboard to follow the results topic")
        deepest = "[" * 100_000 + "]" * 100_000
        deep = "[" * 950 + "]" * 950
        good = {"id": "after-the-deep-ones", "status": "completed", "output": {"fine": True}}
        for value in (
            f'{{"id": "too-deep", "status": "completed", "output": {deepest}}}',
            f'{{"id": "deep", "status": "completed", "output": {deep}}}',
            json.dumps(good),
        ):
            producer.send(topic, value=value.encode()).get(timeout=30)

        def shown() -> list[str]:
            response = api.get("/api/kafka/results")
            assert response.status_code == 200, response.text
            return [result["id"] for result in response.get_json()["results"]]

        assert wait_for(shown, 30, "the result sent after the deep ones") == [good["id"]]
        page = api.get("/")
        assert page.status_code == 200
        assert "after-the-deep-ones" in page.text
        assert "kafka unreachable" not in page.text
        assert json.loads(api.get("/", headers={"X-WFE-Partial": "1"}).headers["X-WFE-Kafka"]) == {}
        assert api.get("/api/tasks/deep").status_code == 404
        logged = [r.getMessage() for r in caplog.records if r.name == "wfe_flaskui.kafka"]
        assert logged.count("skipping a result message nested deeper than 210 levels") == 2, logged
        assert not [line for line in logged if "cannot reach Kafka" in line], logged
    finally:
        producer.close()
        dash.stop()
        brokers.delete_topics(kafka_bootstrap, [topic])


def test_a_priority_is_refused_by_a_wfe_kafka_whose_messages_carry_none(
    wfe_store_url: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A priority other than 0 is refused (400, beside the form's field) when the
    installed wfe_kafka's task messages have no field for it (before its release that
    added one), rather than dropped: a worker would run the task at 0."""
    import wfe_kafka.messages

    older = tuple(name for name in wfe_kafka.messages.TASK_FIELDS if name != "priority")
    monkeypatch.setattr(wfe_kafka.messages, "TASK_FIELDS", older)
    engine = make_engine()
    engine.use_store(wfe_store_url)
    dash = Dashboard(engine, token="", kafka_brokers=kafka_bootstrap)
    try:
        api = Api(create_app(dash, secret_key="k").test_client())
        refused = api.post("/api/tasks", {"workflow": "numbers", "data": {}, "priority": 5})
        assert refused.status_code == 400
        assert refused.get_json()["error"] == (
            "priority 5 cannot go with this task: tasks are published to Kafka, and the "
            "installed wfe_kafka's task messages have no priority field, so a worker would "
            "run it at 0. Leave the priority empty (0)"
        )
        fields = [*submit_form_hidden(api.get("/submit").text), ("workflow", "numbers")]
        form = api.client.post(
            "/submit", data=MultiDict([*fields, ("data", "{}"), ("priority", "5")])
        )
        assert form.status_code == 400
        field = form.text.split('data-field="priority">', 1)[1].split("</div>\n  </div>")[0]
        assert "priority 5 cannot go with this task" in html.unescape(field)
        assert 'value="5"' in field
        assert api.get("/api/tasks").get_json()["total"] == 0
    finally:
        dash.stop()
