"""wfcore's exceptions cross process boundaries (multiprocessing, process pools, task
queues) whole: the same class, message and attributes."""

from __future__ import annotations

import pickle
import subprocess
from concurrent.futures import ProcessPoolExecutor

import pytest

import wfcore
import wfcore.errors
from wfcore import (
    AdapterError,
    ArtifactError,
    CommandError,
    InvalidOutputError,
    InvalidTaskError,
    InvalidWorkflowError,
    PermanentError,
    PluginError,
    RetryLater,
    StoreError,
    TaskStateError,
    TaskStatus,
    UnknownTaskError,
    UnknownWorkflowError,
    WorkflowError,
)

SAMPLES = [
    WorkflowError("something went wrong"),
    InvalidTaskError("unknown assigned_to 'robot'"),
    UnknownWorkflowError("flow", ["a", "b"]),
    UnknownWorkflowError("flow"),
    UnknownWorkflowError(None, []),
    InvalidWorkflowError("phases[1].target_classification: duplicate 'a'"),
    UnknownTaskError("t-1"),
    TaskStateError("task 't-1' is already CANCELLED"),
    TaskStateError("task 't-1' is already CANCELLED", task_id="t-1", status=TaskStatus.CANCELLED),
    InvalidOutputError("answer does not match: ok: not a boolean", ["ok: not a boolean"]),
    InvalidOutputError("the answer is bad: x", ["x"], summary="the answer is bad"),
    ArtifactError("artifact name '../x' leaves its folder"),
    AdapterError("no handler for 'p'"),
    CommandError("command 'sh' exited with status 2: boom", 2, "boom\n"),
    CommandError("cannot start command 'nope': no such file on PATH", None, ""),
    StoreError("not a wfcore database"),
    PluginError("plugin 'x': unknown hook 'wfe_nope'"),
    PermanentError("customer 'c-9' does not exist"),
    RetryLater("HTTP 429", after=30),
    RetryLater(after=0.5),
]


@pytest.mark.parametrize("exc", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_pickles_to_an_equal_one(exc: WorkflowError) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert back.args == exc.args
    assert vars(back) == vars(exc)


def test_the_samples_cover_every_exported_error() -> None:
    exported = {getattr(wfcore.errors, name) for name in wfcore.errors.__all__}
    assert exported == {type(exc) for exc in SAMPLES}
    assert exported <= {getattr(wfcore, name) for name in wfcore.__all__}


def test_a_note_added_to_an_error_survives_pickling() -> None:
    exc = CommandError("command 'sh' exited with status 2", 2, "")
    exc.add_note("while running phase 'build'")
    back = pickle.loads(pickle.dumps(exc))
    assert back.__notes__ == ["while running phase 'build'"]


def run_failing_command() -> None:
    """In a pool's worker process: a real command fails, as in an app's job."""
    done = subprocess.run(["sh", "-c", "echo boom >&2; exit 2"], capture_output=True, text=True)
    raise CommandError(
        f"command 'sh' exited with status {done.returncode}", done.returncode, done.stderr
    )


def answer() -> int:
    return 42


def test_a_command_error_raised_in_a_process_pool_reaches_the_caller() -> None:
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(CommandError) as caught:
            pool.submit(run_failing_command).result(timeout=60)
        # The pool is not broken: it runs the next job.
        assert pool.submit(answer).result(timeout=60) == 42
    assert str(caught.value) == "command 'sh' exited with status 2"
    assert (caught.value.returncode, caught.value.stderr) == (2, "boom\n")


def test_a_task_state_error_says_which_task_and_status_when_known() -> None:
    exc = TaskStateError(
        "task 't-1' is already CANCELLED", task_id="t-1", status=TaskStatus.CANCELLED
    )
    assert exc.task_id == "t-1"
    assert exc.status is TaskStatus.CANCELLED
    assert str(exc) == "task 't-1' is already CANCELLED"
    unknown = TaskStateError("suspend needs a WAITING_* status, not PENDING")
    assert (unknown.task_id, unknown.status) == (None, None)
