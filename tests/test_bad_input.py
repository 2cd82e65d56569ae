"""Bad input gets a clear error, always a subclass of wfcore.WorkflowError."""

from __future__ import annotations

import math
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from core_util import run_task

import wfcore
from wfcore import (
    ArtifactError,
    ECSWorkflowEngine,
    InvalidOutputError,
    InvalidTaskError,
    InvalidWorkflowError,
    Phase,
    StoreError,
    Task,
    TaskStateError,
    TaskStatus,
    UnknownTaskError,
    UnknownWorkflowError,
    WorkflowError,
    WorkflowSpec,
)


def test_every_public_error_is_a_workflow_error():
    errors = [
        getattr(wfcore, name)
        for name in wfcore.__all__
        if isinstance(getattr(wfcore, name), type) and issubclass(getattr(wfcore, name), Exception)
    ]
    assert len(errors) >= 10
    assert all(issubclass(error, WorkflowError) for error in errors)


@pytest.fixture
def engine(make_engine) -> ECSWorkflowEngine:
    engine = make_engine()
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("known", [Phase("a"), Phase("b", assigned_to="human")])
    return engine


def test_submit_to_an_unknown_workflow(engine, wfe_run):
    with pytest.raises(UnknownWorkflowError) as caught:
        wfe_run(engine.submit_task({}, "missing-flow"))
    assert "missing-flow" in str(caught.value)
    assert "known" in str(caught.value)  # says which ones exist
    assert isinstance(caught.value, WorkflowError)


@pytest.mark.parametrize(
    "data",
    [
        {1, 2},
        object(),
        {"when": math.nan},
        {"f": lambda: 1},
        b"raw",
        # Bad values a level or two down, in otherwise small plain data.
        {"a": {"b": [1, 2, math.inf]}},
        [{"ok": 1}, {"ok": {3, 4}}],
        {"a": {(1, 2): "tuple key"}},
        {"a": [{"b": object()}]},
    ],
)
def test_submit_data_that_is_not_json(engine, wfe_run, data):
    with pytest.raises(InvalidTaskError) as caught:
        wfe_run(engine.submit_task(data, "known"))
    assert "JSON" in str(caught.value)


def _nested(levels: int, inner: object = 1) -> object:
    """Dicts and lists, alternately, ``levels`` deep."""
    value = inner
    for level in range(levels):
        value = {"k": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize("value", [2.5, -0.0, 1e300, 7, True, None, "text", [1.5, {"x": 0.5}]])
def test_every_kind_of_json_value_is_taken_as_data_and_output(make_engine, wfe_run, value):
    engine = make_engine()

    async def same(task: Task) -> None:
        task.output = task.data

    engine.register_handler("same", same)
    engine.register_workflow("same", [Phase("same", assigned_to="functional")])

    done = wfe_run(run_task(engine, value, "same"))
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.data == value and done.output == value


def test_data_nested_too_deeply_is_refused_and_a_phase_leaving_it_fails(make_engine, wfe_run):
    """Deeper values would exhaust Python's stack wherever they are walked."""
    engine = make_engine()

    async def deep(task: Task) -> None:
        task.output = _nested(task.data)

    engine.register_handler("deep", deep)
    engine.register_workflow("deep", [Phase("deep", assigned_to="functional")])

    async def scenario():
        with pytest.raises(InvalidTaskError, match="nested deeper than 200 levels"):
            await engine.submit_task(_nested(201), "deep")
        with pytest.raises(InvalidTaskError, match="nested deeper than 200 levels"):
            await engine.submit_task(1, "deep", context={"c": _nested(950)})
        kept = await engine.submit_task(_nested(200, inner=1), "deep")
        failing = await engine.submit_task(900, "deep")
        fine = await engine.submit_task(150, "deep")
        await engine.run_until_idle()
        return [await engine.get_task(t.id) for t in (kept, failing, fine)]

    kept, failing, fine = wfe_run(scenario())
    assert kept.data == _nested(200)
    assert failing.status is TaskStatus.FAILED
    # Too deep to store even as what prints of it: its repr is kept instead.
    assert failing.output.startswith("{'k': [{'k': [")
    assert failing.error == (
        "InvalidTaskError: the phase output must be JSON-serializable: "
        "it is nested deeper than 200 levels"
    )
    assert fine.status is TaskStatus.COMPLETED and fine.output == _nested(150)


@pytest.mark.parametrize("data", ["a\ud800", {"k": "\udc00"}, {"\ud800": 1}, {"k": ["x\udfff"]}])
def test_submit_data_with_a_lone_surrogate(engine, wfe_run, data):
    """Not Unicode text (a bad decode, say): refused, naming it, and nothing stored."""
    with pytest.raises(InvalidTaskError, match="lone surrogate"):
        wfe_run(engine.submit_task(data, "known"))
    assert wfe_run(engine.list_tasks()) == []


def test_a_phase_leaving_text_that_is_not_unicode_fails_and_is_stored(make_engine, wfe_run):
    engine = make_engine()

    async def bad_output(task: Task) -> None:
        task.output = "caf\udce9"  # bytes decoded with surrogateescape

    async def bad_file(task: Task) -> None:
        Path("/nonexistent/caf\udce9").read_text()

    engine.register_handler("out", bad_output)
    engine.register_handler("file", bad_file)
    engine.register_workflow("out", [Phase("out")])
    engine.register_workflow("file", [Phase("file")])

    async def scenario():
        ids = [(await engine.submit_task({}, w)).id for w in ("out", "file")]
        await engine.run_until_idle()
        return [await engine.get_task(i) for i in ids]

    out, file = wfe_run(scenario())
    assert out.status is TaskStatus.FAILED
    # What prints of the output is kept, to debug with.
    assert "lone surrogate" in out.error and out.output == "caf?"
    # An error message with such text is kept, escaped.
    assert file.status is TaskStatus.FAILED
    assert "FileNotFoundError" in file.error and "caf\\udce9" in file.error


@pytest.mark.parametrize(
    ("misstep", "message"),
    [
        ("reason_object", "suspend's reason must be text or None: it is not a string"),
        ("reason_surrogate", "suspend's reason must be text or None: a string holds a lone"),
        ("waiting_reason_bytes", "task.waiting_reason must be text or None: it is not a string"),
        ("next_object", "task.next_classification must be text or None: it is not a string"),
        ("next_surrogate", "task.next_classification must be text or None: a string holds"),
    ],
)
def test_a_phase_leaving_a_question_or_route_that_is_not_text_fails(
    make_engine, wfe_run, misstep, message
):
    """The history quotes both, so a bad one must fail the phase, not the store write."""
    engine = make_engine()

    async def handler(task: Task) -> None:
        if misstep == "reason_object":
            engine.suspend(task, reason=object())  # type: ignore[arg-type]
        elif misstep == "reason_surrogate":
            engine.suspend(task, reason="why \ud800")
        elif misstep == "waiting_reason_bytes":
            engine.suspend(task, reason="ok")
            task.waiting_reason = b"\xff"
        elif misstep == "next_object":
            task.next_classification = object()
        else:
            task.next_classification = "b\udc00"

    engine.register_handler("a", handler)
    engine.register_workflow(
        "w", [Phase("a", next_classifications=["b", "c"]), Phase("b"), Phase("c")]
    )

    task = wfe_run(run_task(engine, {}, "w"))
    assert task.status is TaskStatus.FAILED
    assert message in task.error
    assert task.waiting_reason is None and task.next_classification is None


def test_a_task_id_or_artifact_name_that_is_not_unicode_text(engine, wfe_run):
    """Such text (an argument in another encoding) names nothing stored: it is said so."""
    bad = "caf\udce9"

    async def scenario():
        assert await engine.get_task(bad) is None
        for call in (engine.cancel, engine.retry, engine.resume):
            with pytest.raises(UnknownTaskError):
                await call(bad)
        with pytest.raises(UnknownTaskError):
            await engine.read_artifact(bad, "a.txt")
        task = await engine.submit_task({}, "known")
        with pytest.raises(ArtifactError, match="is not Unicode text"):
            await engine.read_artifact(task, bad)
        with pytest.raises(ArtifactError, match="is not Unicode text"):
            await engine.add_artifact_text(task, bad, "x")
        with pytest.raises(InvalidTaskError, match="is not Unicode text"):
            await engine.submit_task({}, "known", task_id=bad)
        return await engine.list_tasks()

    assert len(wfe_run(scenario())) == 1


@pytest.mark.parametrize("call", ["get_task", "cancel", "retry", "resume", "read_artifact"])
def test_a_task_id_that_is_not_a_string(engine, wfe_run, call):
    args = (["x"], "a.txt") if call == "read_artifact" else (["x"],)
    with pytest.raises(TypeError, match="a task id is a string, not list"):
        wfe_run(getattr(engine, call)(*args))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workflow_name": 123}, "workflow_name must be a str or None, not int 123"),
        # A list raised "unhashable type: 'list'", naming no argument.
        ({"workflow_name": ["known"]}, "workflow_name must be a str or None, not list ['known']"),
        ({"workflow_name": "known", "classification": 7}, "classification must be a str or None"),
    ],
)
def test_a_workflow_or_phase_name_that_is_not_a_string(engine, wfe_run, kwargs, message):
    async def scenario():
        with pytest.raises(TypeError, match=re.escape(message)):
            await engine.submit_task({}, **kwargs)
        return await engine.list_tasks()

    assert wfe_run(scenario()) == []


def test_submit_with_an_unknown_classification_or_task_type(engine, wfe_run):
    with pytest.raises(InvalidTaskError) as classification:
        wfe_run(engine.submit_task({}, "known", classification="zzz"))
    assert "zzz" in str(classification.value)
    with pytest.raises(InvalidTaskError) as assigned:
        wfe_run(engine.submit_task({}, "known", assigned_to="robot"))
    assert "robot" in str(assigned.value)

    async def nothing_stored():
        return await engine.list_tasks()

    assert wfe_run(nothing_stored()) == []


@pytest.mark.parametrize(
    "task_id", ["", "a/b", "orders\\2024", "..", 12, "line\nbreak", "x" * 201, " x", "order-17 "]
)
def test_submit_with_an_unusable_task_id(engine, wfe_run, task_id):
    with pytest.raises(InvalidTaskError):
        wfe_run(engine.submit_task({}, "known", task_id=task_id))


def test_resume_unknown_or_not_waiting(engine, wfe_run):
    async def scenario():
        with pytest.raises(UnknownTaskError) as unknown:
            await engine.resume("ghost", 1)
        pending = await engine.submit_task({}, "known")
        with pytest.raises(TaskStateError) as not_yet:
            await engine.resume(pending.id, 1)
        await engine.run_until_idle()
        await engine.resume(pending.id, "answer")
        with pytest.raises(TaskStateError) as twice:
            await engine.resume(pending.id, "again")
        return unknown.value, not_yet.value, twice.value, await engine.get_task(pending.id)

    unknown, not_yet, twice, task = wfe_run(scenario())
    assert "ghost" in str(unknown)
    assert "PENDING" in str(not_yet) and "waiting" in str(not_yet)
    assert "COMPLETED" in str(twice)
    assert task.output == "answer"


def test_resume_with_an_answer_that_is_not_json(engine, wfe_run):
    async def scenario():
        task = await engine.submit_task({}, "known")
        await engine.run_until_idle()
        with pytest.raises(InvalidOutputError) as caught:
            await engine.resume(task.id, {1, 2})
        return caught.value, await engine.get_task(task.id)

    error, task = wfe_run(scenario())
    assert "JSON" in str(error)
    assert task.status is TaskStatus.WAITING_HUMAN


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "/etc/passwd",
        "../escape.txt",
        "a/../../b",
        "a//b",
        "./x",
        "n" * 300,
        "two\nlines.txt",
        "a\\b.txt",
    ],
)
def test_artifact_names_that_are_refused(engine, wfe_run, name):
    async def scenario():
        task = await engine.submit_task({}, "known")
        with pytest.raises(ArtifactError) as written:
            await engine.add_artifact_text(task, name, "x")
        with pytest.raises(ArtifactError) as read:
            await engine.read_artifact(task, name)
        return written.value, read.value, task

    written, read, task = wfe_run(scenario())
    assert task.artifacts == []
    assert isinstance(written, WorkflowError) and isinstance(read, WorkflowError)


def test_an_artifact_name_clashing_with_another_as_file_or_folder(engine, wfe_run):
    async def scenario():
        task = await engine.submit_task({}, "known")
        await engine.add_artifact_text(task, "report", "a file")
        await engine.add_artifact_text(task, "plots/a.txt", "in a folder")
        with pytest.raises(ArtifactError) as under_a_file:
            await engine.add_artifact_text(task, "report/part.txt", "x")
        with pytest.raises(ArtifactError) as over_a_folder:
            await engine.add_artifact_text(task, "plots", "x")
        return (
            under_a_file.value,
            over_a_folder.value,
            task,
            await engine.read_artifact(task, "report"),
        )

    under_a_file, over_a_folder, task, kept = wfe_run(scenario())
    assert "needs 'report' as a folder, but it is an artifact" in str(under_a_file)
    assert "'plots' is a folder of other artifacts" in str(over_a_folder)
    assert [a.name for a in task.artifacts] == ["report", "plots/a.txt"]
    assert kept == b"a file"


def test_artifact_files_follow_the_umask(engine, wfe_run):
    """Readable by whoever the process's umask lets read its files (not owner-only)."""
    import os
    import stat

    async def scenario():
        task = await engine.submit_task({}, "known")
        art = await engine.add_artifact_text(task, "shared.txt", "x")
        return os.stat(art.path).st_mode

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(wfe_run(scenario())) == 0o666 & ~umask


def test_reading_an_artifact_that_does_not_exist(engine, wfe_run):
    async def scenario():
        task = await engine.submit_task({}, "known")
        with pytest.raises(ArtifactError) as caught:
            await engine.read_artifact(task, "nothing.txt")
        return caught.value

    assert "nothing.txt" in str(wfe_run(scenario()))


def test_reading_an_artifact_of_a_task_that_does_not_exist(engine, wfe_run):
    with pytest.raises(UnknownTaskError, match="ghost"):
        wfe_run(engine.read_artifact("ghost", "report.txt"))


def test_suspend_needs_a_waiting_status(engine):
    with pytest.raises(TaskStateError):
        engine.suspend(Task(), TaskStatus.COMPLETED)
    with pytest.raises(InvalidTaskError):
        engine.suspend(Task(), "sleeping")
    # Outside a phase the change would reach no store: said, not silently dropped.
    with pytest.raises(InvalidTaskError, match=r"suspend\(\) is for a task whose phase"):
        engine.suspend(Task(), TaskStatus.WAITING_IO, deadline=timedelta(hours=1))


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: WorkflowSpec(name="", phases=[Phase("a")]), "name"),
        (lambda: WorkflowSpec(name="w", phases=[]), "phases"),
        (lambda: WorkflowSpec(name="w", phases=[Phase("a"), Phase("a")]), "duplicate"),
        (lambda: WorkflowSpec(name="w", phases=[Phase("a", next_classifications=["b"])]), "'b'"),
        (lambda: WorkflowSpec(name="define_workflow", phases=[Phase("a")]), "reserved"),
        (
            lambda: WorkflowSpec(name="w", phases=[Phase("a", on_timeout={"goto": "nowhere"})]),
            "on_timeout",
        ),
        (lambda: Phase(""), "target_classification"),
        (lambda: Phase("define_workflow"), "target_classification: 'define_workflow' is reserved"),
        (
            lambda: Phase("a", input_schema={"$ref": "#/definitions/answer"}),
            "input_schema: $ref '#/definitions/answer' points to nothing",
        ),
        (
            lambda: Phase("a", input_schema={"$ref": "https://example.org/answer.json"}),
            "points outside the schema",
        ),
        (lambda: Phase("a\x00b"), "may not contain control characters"),
        (lambda: Phase("\ud800"), "may not contain control characters or invalid Unicode"),
        (lambda: WorkflowSpec(name="x" * 201, phases=[Phase("a")]), "name: 'xxx"),
        (lambda: Phase("a", timeout=0), "timeout"),
        (lambda: Phase("a", timeout=float("nan")), "timeout"),
        (lambda: Phase("a", timeout=float("inf")), "timeout"),
        (lambda: Phase("a", timeout=1e12), "at most 10 years"),
        (lambda: Phase("a", instructions=5), "instructions: must be text or null"),
        (lambda: WorkflowSpec(name="w", phases=[Phase("a")], description=3), "description"),
        (lambda: WorkflowSpec(name="-", phases=[Phase("a")]), "'-' is reserved"),
        (lambda: Phase("a", max_attempts=0), "max_attempts"),
        (lambda: Phase("a", command="ls -l"), "command"),
        (lambda: Phase("a", on_timeout="retry"), "on_timeout"),
        (lambda: Phase("a", input_schema={"type": "no-such-type"}), "input_schema"),
        (lambda: Phase("a", assigned_to="robot"), "robot"),
        (
            lambda: Phase(
                "a",
                input_schema={"type": "object", "required": ["approved"]},
                on_timeout={"output": "not an object"},
            ),
            "on_timeout.output: does not match input_schema: 'not an object' is not of type",
        ),
    ],
)
def test_invalid_workflow_specs(build, field):
    with pytest.raises(WorkflowError) as caught:
        build()
    assert field in str(caught.value)


def test_register_workflow_rejects_invalid_specs(engine):
    with pytest.raises(InvalidWorkflowError):
        engine.register_workflow("bad", [])
    with pytest.raises(InvalidWorkflowError):
        engine.register_workflow("bad", [Phase("a"), Phase("a")])
    assert "bad" not in engine.workflows


@pytest.mark.parametrize(
    ("phase", "said"),
    [
        (
            Phase("ask", assigned_to="human", input_schema={"type": "string", "default": b"x"}),
            "input_schema cannot be stored as JSON: Object of type bytes is not JSON serializable",
        ),
        (
            Phase("ask", assigned_to="human", timeout=5, on_timeout={"output": {1, 2}}),
            "on_timeout cannot be stored as JSON: Object of type set is not JSON serializable",
        ),
        (
            Phase("ask", assigned_to="human", timeout=5, on_timeout={"output": math.nan}),
            "on_timeout cannot be stored as JSON: Out of range float values are not JSON compliant",
        ),
    ],
)
def test_a_workflow_the_store_cannot_keep_is_refused_when_registered(
    tmp_path: Path, wfe_run, phase: Phase, said: str
):
    """Accepted, it was saved as the store opened: every call of the engine failed
    from then on with a bare TypeError, and NaN left a task waiting past its
    deadline for good."""
    engine = ECSWorkflowEngine(f"sqlite://{tmp_path}/wfe.db", load_plugins=False)
    engine.register_workflow("good", [Phase("ok", assigned_to="human")])
    with pytest.raises(InvalidWorkflowError) as refused:
        engine.register_workflow("bad", [phase])
    assert str(refused.value) == f"phase 'ask': {said}"
    assert "bad" not in engine.workflows

    async def scenario() -> None:
        try:
            task = await engine.submit_task({}, "good")
            assert (await engine.get_task(task.id)) is not None
        finally:
            await engine.aclose()

    wfe_run(scenario())


def test_a_whole_number_too_long_for_text_is_refused_as_data_not_json(engine, wfe_run):
    """Python turns at most 4,300 digits into text: such a number raised a bare
    ValueError advising sys.set_int_max_str_digits, and failed a whole batch of
    submit_tasks(return_exceptions=True)."""
    said = (
        "task data must be JSON-serializable: a whole number has more digits than Python "
        "turns into text (4,300)"
    )
    for data in (10**5000, {"n": 10**5000}, [1, [2, -(10**5000)]]):
        with pytest.raises(InvalidTaskError) as refused:
            wfe_run(engine.submit_task(data, "known"))
        assert str(refused.value) == said

    results = wfe_run(
        engine.submit_tasks(
            [
                {"data": {"n": 1}, "workflow_name": "known"},
                {"data": {"n": 10**5000}, "workflow_name": "known"},
            ],
            return_exceptions=True,
        )
    )
    assert isinstance(results[0], Task) and isinstance(results[1], InvalidTaskError)
    # A long number Python does turn into text is data like any other.
    assert wfe_run(engine.submit_task({"n": 10**4000}, "known")).data == {"n": 10**4000}


def test_start_phases_that_are_no_names_are_refused_naming_the_field():
    """A list in start_phases raised a bare TypeError (unhashable type); through
    define_workflow, `wfe submit` printed a traceback and a worker failed the task
    naming no field."""
    phases = [Phase("a"), Phase("b")]
    for given in (["a", ["b"]], [{"name": "a"}]):
        with pytest.raises(InvalidWorkflowError) as refused:
            WorkflowSpec(name="w", phases=phases, start_phases=given)
        assert str(refused.value) == f"start_phases: {given[-1]!r} is not a phase name (a string)"


def test_suspend_takes_only_a_bool_as_resume_in_phase(tmp_path: Path, wfe_run):
    """resume_in_phase=None was stored as it was, in a task the store could not read
    back: a failed stand-in that resume, cancel and retry all refused."""
    engine = ECSWorkflowEngine(f"sqlite://{tmp_path}/wfe.db", load_plugins=False)

    async def ask(task: Task) -> None:
        engine.suspend(task, resume_in_phase=None)  # type: ignore[arg-type]

    engine.register_handler("ask", ask)
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])

    async def scenario() -> Task | None:
        try:
            task = await engine.submit_task({"n": 1}, "w")
            await engine.run_until_idle()
            return await engine.get_task(task.id)
        finally:
            await engine.aclose()

    task = wfe_run(scenario())
    assert task is not None and task.status is TaskStatus.FAILED
    assert task.data == {"n": 1}
    assert task.error == ("TypeError: suspend's resume_in_phase must be True or False, not None")


@pytest.mark.parametrize("url", ["sqlite", "memory://"])
def test_an_outbox_consumer_name_that_is_no_name_is_refused(tmp_path: Path, wfe_run, url: str):
    """outbox_register(None) was kept: every write that finished a task failed from
    then on, in every process of the store, and no command could drop it."""
    store_url = f"sqlite://{tmp_path}/wfe.db" if url == "sqlite" else url
    engine = ECSWorkflowEngine(store_url, load_plugins=False)
    engine.register_handler("p", lambda task: None)
    engine.register_workflow("w", [Phase("p")])

    async def scenario() -> Task | None:
        try:
            store = await engine.get_store()
            with pytest.raises(TypeError, match="must be a string, not None"):
                await store.outbox_register(None)  # type: ignore[arg-type]
            for name in ("", " results", "a\nb", "x" * 201):
                with pytest.raises(ValueError, match="an outbox consumer name must"):
                    await store.outbox_register(name)
            await store.outbox_register("results")
            task = await engine.submit_task({}, "w")
            await engine.run_until_idle()
            assert [t.id for t in await store.outbox_pending("results")] == [task.id]
            return await engine.get_task(task.id)
        finally:
            await engine.aclose()

    task = wfe_run(scenario())
    assert task is not None and task.status is TaskStatus.COMPLETED


def test_register_adapter_without_run_method(engine):
    with pytest.raises(TypeError):
        engine.register_adapter("agentic", object())


@pytest.mark.parametrize(
    "url",
    ["postgres://nowhere/db", "sqlite://relative.db", "sqlite:///tmp/x.db?mode=ro", "memory://x"],
)
def test_unusable_store_urls(url, wfe_run):
    engine = ECSWorkflowEngine(url, load_plugins=False)
    with pytest.raises(StoreError) as caught:
        wfe_run(engine.get_store())
    assert isinstance(caught.value, WorkflowError)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def refused(path: Path, wfe_run) -> StoreError:
    """Open an engine on ``path`` and return the StoreError; the folder must not change."""
    before = snapshot(path.parent)
    engine = ECSWorkflowEngine(f"sqlite://{path}", load_plugins=False)
    engine.register_workflow("w", [Phase("a")])
    with pytest.raises(StoreError) as caught:
        wfe_run(engine.submit_task({}, "w"))
    assert snapshot(path.parent) == before  # same files, same bytes
    return caught.value


def test_a_file_that_is_not_a_database_is_refused_unchanged(tmp_path, wfe_run):
    path = tmp_path / "notes.db"
    path.write_text("shopping list: eggs, milk\n" * 50)
    error = refused(path, wfe_run)
    assert str(path) in str(error)


def test_another_programs_database_is_refused_unchanged(tmp_path, wfe_run):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.commit()
    conn.close()
    error = refused(path, wfe_run)
    assert "not a wfcore database" in str(error)


def database_with_schema_version(path: Path, version: str, wfe_run) -> Path:
    """Make a wfcore database at ``path`` whose stored schema version reads ``version``
    (checkpointed, so the main file holds it): ``path``."""
    engine = ECSWorkflowEngine(f"sqlite://{path}", load_plugins=False)
    wfe_run(engine.get_store())
    wfe_run(engine.aclose())
    conn = sqlite3.connect(path)
    conn.execute("UPDATE wfe_meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def test_a_database_from_a_newer_wfcore_is_refused_unchanged(tmp_path, wfe_run):
    path = database_with_schema_version(tmp_path / "wfe.db", "99", wfe_run)
    error = refused(path, wfe_run)
    assert "newer" in str(error) and "99" in str(error)


def test_a_database_with_an_unreadable_schema_version_is_refused_unchanged(tmp_path, wfe_run):
    path = database_with_schema_version(tmp_path / "wfe.db", "two", wfe_run)
    error = refused(path, wfe_run)
    assert "unreadable schema version 'two'" in str(error)


@pytest.mark.parametrize("context", [["not", "a", "dict"], {"when": object()}])
def test_submit_with_an_unusable_context(engine, wfe_run, context):
    with pytest.raises(InvalidTaskError) as caught:
        wfe_run(engine.submit_task({}, "known", context=context))
    assert "context" in str(caught.value)


def test_submit_tasks_refuses_a_bad_request_before_storing_any(engine, wfe_run):
    good = {"data": 1, "workflow_name": "known"}
    with pytest.raises(UnknownWorkflowError):
        wfe_run(engine.submit_tasks([good, {"data": 2, "workflow_name": "nope"}]))
    with pytest.raises(InvalidTaskError) as caught:
        wfe_run(engine.submit_tasks([good, {"data": 2, "workflow": "known"}]))
    assert "unknown submit field 'workflow'" in str(caught.value)
    with pytest.raises(InvalidTaskError) as caught:
        wfe_run(engine.submit_tasks([good, ["not", "a", "dict"]]))
    assert "must be a dict" in str(caught.value)
    with pytest.raises(InvalidTaskError) as caught:
        wfe_run(engine.submit_tasks(good))  # one request, not a list of them
    assert "takes a list of requests" in str(caught.value)
    assert wfe_run(engine.list_tasks()) == []


def test_a_bad_request_among_hundreds_is_named_by_its_place_and_id(engine, wfe_run):
    """One bad row of a 500-row import: the error says which, or it cannot be found."""
    requests = [{"data": {"row": i}, "workflow_name": "known"} for i in range(500)]
    requests[317]["data"] = {"tags": {"a", "b"}}
    with pytest.raises(InvalidTaskError) as refused:
        wfe_run(engine.submit_tasks(requests))
    assert str(refused.value) == (
        "requests[317]: task data must be JSON-serializable: "
        "Object of type set is not JSON serializable"
    )
    requests[317] = {"data": 1, "workflow_name": "nope", "task_id": "row-317"}
    with pytest.raises(UnknownWorkflowError) as refused:
        wfe_run(engine.submit_tasks(requests))
    assert (
        str(refused.value)
        == "requests[317] (task id 'row-317'): unknown workflow 'nope' (known: known)"
    )
    assert wfe_run(engine.list_tasks()) == []
    # One task is one request: submit_task's errors say nothing of a place.
    with pytest.raises(UnknownWorkflowError) as refused:
        wfe_run(engine.submit_task(1, "nope"))
    assert str(refused.value).startswith("unknown workflow 'nope'")


def test_keys_that_are_one_in_json_are_refused_not_one_value_dropped(engine, wfe_run):
    """{1: ..., "1": ...} was stored on SQLite as one key: the other value was lost."""
    for data, keys in [
        ({1: "from the int", "1": "from the text"}, "1 and '1'"),
        ({"rows": [{None: 0, "null": 1}]}, "None and 'null'"),
        ({True: "yes", "true": "also"}, "True and 'true'"),
    ]:
        with pytest.raises(InvalidTaskError) as refused:
            wfe_run(engine.submit_task(data, "known"))
        assert f"an object has the keys {keys}, which are both" in str(refused.value)
        assert "one of their values would be lost" in str(refused.value)
    assert wfe_run(engine.list_tasks()) == []
    # Keys that differ in JSON too are data like any other.
    assert wfe_run(engine.submit_task({1: "a", "2": "b"}, "known")).data in (
        {1: "a", "2": "b"},
        {"1": "a", "2": "b"},  # SQLite keeps JSON's string keys
    )


def test_yes_or_no_arguments_take_only_true_or_false(engine, wfe_run):
    """cancel(children="no") cancelled the children: any text is true."""

    async def scenario():
        task = await engine.submit_task({}, "known")
        for call, name in [
            (lambda: engine.cancel(task.id, children="no"), "children"),
            (lambda: engine.cancel_tasks("pending", dry_run="yes"), "dry_run"),
            (lambda: engine.cancel_tasks("pending", children=0), "children"),
            (lambda: engine.retry_tasks(dry_run=None), "dry_run"),
            (lambda: engine.purge(0, dry_run="false"), "dry_run"),
            (lambda: engine.list_tasks(summary=1), "summary"),
        ]:
            with pytest.raises(TypeError, match=f"^{name} must be True or False, not "):
                await call()
        assert (await engine.get_task(task.id)).status is TaskStatus.PENDING

    wfe_run(scenario())


def test_resume_names_a_phase_that_is_no_name_as_the_wrong_type(engine, wfe_run):
    task = wfe_run(engine.submit_task({}, "known"))
    with pytest.raises(TypeError, match=r"^phase must be the name of a phase or None, not 5$"):
        wfe_run(engine.resume(task.id, {}, phase=5))


def test_list_tasks_takes_waiting_for_the_three_waiting_statuses(engine, wfe_run):
    """cancel_tasks("waiting") and `wfe tasks --status waiting` took it; list_tasks
    refused it as an unknown status."""

    async def scenario():
        waiting = await engine.submit_task({}, "known")
        await engine.run_until_idle()  # phase "a", then "b" waits for a person
        pending = await engine.submit_task({}, "known")
        assert [t.id for t in await engine.list_tasks(status="waiting")] == [waiting.id]
        assert [t.id for t in await engine.list_tasks(status=["Waiting ", "pending"])] == [
            pending.id,
            waiting.id,
        ]

    wfe_run(scenario())


def test_submit_tasks_can_return_the_errors_in_place(engine, wfe_run):
    results = wfe_run(
        engine.submit_tasks(
            [
                {"data": 1, "workflow_name": "known"},
                {"data": math.nan, "workflow_name": "known"},
                {"data": 3, "workflow_name": "nope"},
            ],
            return_exceptions=True,
        )
    )
    assert results[0].data == 1
    assert isinstance(results[1], InvalidTaskError) and "JSON" in str(results[1])
    assert isinstance(results[2], UnknownWorkflowError)
    assert [t.id for t in wfe_run(engine.list_tasks())] == [results[0].id]


def test_list_tasks_refuses_a_negative_limit_and_takes_a_huge_one(engine, wfe_run):
    async def scenario():
        await engine.submit_task({}, "known")
        with pytest.raises(ValueError, match="limit must be a whole number, 0 or more"):
            await engine.list_tasks(limit=-1)
        return await engine.list_tasks(limit=10**20), await engine.list_tasks(limit=0)

    huge, none = wfe_run(scenario())
    assert len(huge) == 1 and none == []


@pytest.mark.parametrize("deadline", [float("inf"), float("nan"), -1, 1e12, "soon"])
def test_suspend_refuses_a_deadline_that_is_not_a_delay(engine, deadline):
    task = Task(data=None, workflow_name="known")
    with pytest.raises(InvalidTaskError, match="suspend's deadline"):
        engine.suspend(task, deadline=deadline)
    assert task.status is TaskStatus.PENDING  # unchanged


def _make_unwritable(folder: Path) -> None:
    """Make ``folder`` unwritable even for root (immutable), else by its mode."""
    import os
    import subprocess

    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"running as root and cannot make a folder immutable: {done.stderr.strip()}")


def _make_writable(folder: Path) -> None:
    import os
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)


def test_a_store_in_a_folder_this_user_cannot_write_names_the_folder(tmp_path, wfe_run):
    """SQLite's own words ("attempt to write a readonly database") name neither the
    file nor why: a reader of a store in a read-only folder is told which."""
    folder = tmp_path / "store"
    path = folder / "wfe.db"
    engine = ECSWorkflowEngine(f"sqlite://{path}", load_plugins=False)
    wfe_run(engine.get_store())
    wfe_run(engine.aclose())
    assert not list(folder.glob("wfe.db-*"))  # closing checkpointed the WAL away
    before = path.read_bytes()
    _make_unwritable(folder)
    try:
        reader = ECSWorkflowEngine(f"sqlite://{path}", load_plugins=False)
        with pytest.raises(StoreError) as caught:
            wfe_run(reader.list_tasks())
    finally:
        _make_writable(folder)
    message = str(caught.value)
    assert message.startswith(f"cannot use {path}: ") or message.startswith(
        f"cannot open {path}: "
    ), message
    assert message.endswith(
        f"; this user cannot write to the folder {folder}, where SQLite keeps wfe.db-wal "
        "and wfe.db-shm even to read"
    ), message
    assert path.read_bytes() == before


def test_engine_settings_that_cannot_work_are_refused_when_it_is_built():
    for kwargs, error, message in [
        ({"poll_interval": 0}, ValueError, "poll_interval must be more than 0 seconds"),
        ({"lease_seconds": -1}, ValueError, "lease_seconds must be more than 0 seconds"),
        ({"retry_delay": float("nan")}, ValueError, "retry_delay must be 0 or more seconds"),
        ({"shutdown_timeout": "10"}, TypeError, "shutdown_timeout must be a number of seconds"),
        ({"store": 5}, TypeError, "store must be a URL (e.g. 'sqlite:///path/wfe.db'"),
        ({"max_concurrency": 2.5}, TypeError, "max_concurrency must be a whole number"),
        # Past SQLite's integers, run() failed deep in the store.
        (
            {"max_concurrency": 2**63},
            ValueError,
            f"max_concurrency must be from 1 to 1,000,000, not {2**63}",
        ),
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be from 1 to 1,000,000, not 0"),
        ({"max_takeovers": 0}, ValueError, "max_takeovers must be at least 1 (None: no limit)"),
        ({"max_takeovers": "3"}, TypeError, "max_takeovers must be a whole number or None"),
        # Errors that named no argument ("'int' object is not iterable").
        ({"only_workflows": 5}, TypeError, "only_workflows takes a list of workflow names, not 5"),
        ({"allowed_commands": None}, TypeError, "allowed_commands takes a list of programs"),
    ]:
        with pytest.raises(error) as refused:
            ECSWorkflowEngine(load_plugins=False, **kwargs)
        assert str(refused.value).startswith(message), str(refused.value)


def test_a_stop_while_the_store_opens_is_not_lost(tmp_path, wfe_run):
    """A SIGTERM often comes while a worker starts: run() must still end."""
    import asyncio

    from wfcore.stores.memory import MemoryStore

    class SlowToOpen(MemoryStore):
        async def open(self) -> None:
            await asyncio.sleep(0.2)
            await super().open()

    engine = ECSWorkflowEngine(SlowToOpen(), load_plugins=False, poll_interval=0.05)

    async def scenario() -> bool:
        running = asyncio.create_task(engine.run())
        await asyncio.sleep(0)  # run() has begun and waits for the store
        assert engine.running
        engine.stop()
        await running
        return engine.running

    assert wfe_run(scenario(), timeout=10) is False


def test_an_unknown_workflow_among_thousands_names_the_close_ones_not_all(make_engine, wfe_run):
    """Stores of run-time workflows hold thousands: the message (in logs, dead-letter
    headers) names a few, the closest first."""
    engine = make_engine()
    for n in range(2000):
        engine.register_workflow(f"w{n:04}", [Phase("a", assigned_to="human")])
    engine.register_workflow("invoices", [Phase("a", assigned_to="human")])
    with pytest.raises(UnknownWorkflowError) as refused:
        wfe_run(engine.submit_task({}, "invoces"))
    assert str(refused.value) == (
        "unknown workflow 'invoces' (known: invoices, w0000, w0001, w0002, w0003, w0004, "
        "w0005, w0006, w0007, w0008 and 1991 more; wfe workflows lists them)"
    )
    assert len(refused.value.known) == 2001
