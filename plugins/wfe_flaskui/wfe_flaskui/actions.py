"""The forms that change a task, posted from its page or the inbox: answer a waiting
task (from its page, with a file to store with it), cancel one, retry one, change the
priority of one that waits; and, from the task list, retry every failed (or
cancelled) task of the list.

An answer that cannot be taken shows the page it came from again, with the errors
beside the fields, or (409) with the new question when the task has moved on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, flash, redirect, request, url_for

from wfcore import (
    ArtifactError,
    ECSWorkflowEngine,
    InvalidOutputError,
    StoreError,
    Task,
    TaskStateError,
    TaskStatus,
    UnknownTaskError,
    WorkflowSpec,
)

from . import ops
from .bridge import BridgeError, BridgeTimeout
from .display import _STATUS_LABELS, short_id
from .errors import _error, store_failed
from .forms import parse_answer, sent_answer, typed_values
from .pages import inbox, task
from .security import _safe_next
from .submit import PriorityError, form_priority
from .views import acting_user, route

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = [
    "add_actions",
    "answer",
    "answer_queued",
    "answer_refused",
    "cancel",
    "change_task",
    "retry",
    "retry_listed",
    "set_priority",
]


def add_actions(bp: Blueprint, dash: Dashboard) -> None:
    """Take the forms below at ``bp``'s URLs."""
    route(bp, dash, "/tasks/<task_id>/answer", answer, ["POST"])
    route(bp, dash, "/tasks/<task_id>/cancel", cancel, ["POST"])
    route(bp, dash, "/tasks/<task_id>/retry", retry, ["POST"])
    route(bp, dash, "/tasks/<task_id>/priority", set_priority, ["POST"])
    # Not under /tasks/: a task may be called "retry".
    route(bp, dash, "/retry", retry_listed, ["POST"])


def answer(dash: Dashboard, task_id: str) -> Any:
    back = request.form.get("next") or "task"
    # The phase whose question the form showed, and the task's version then: the
    # task may have left it since, or come back to it (a loop) with a new question.
    asked = request.form.get("phase") or None
    read = request.form.get("version")
    # isascii too: str.isdigit() takes digits such as '²' that int() refuses.
    # 20 digits hold every version a store's 64-bit integers can; int() refuses
    # more than 4,300.
    if read is not None and not (read.isascii() and read.isdigit() and len(read) <= 20):
        return _error(dash, 400, f"the form's version must be a whole number, not {read[:20]!r}")
    version = int(read) if read is not None else None

    async def load(engine: ECSWorkflowEngine) -> Any:
        found = await engine.get_task(task_id)
        return found, await ops.workflows_of(engine, [found] if found else [])

    found, specs = dash.call(load)
    if found is None:
        return _error(dash, 404, f"no task {task_id!r}")
    upload = _uploaded_file()
    # Said wherever the answer is refused: the file it came with was not stored either.
    unstored = f" The file {upload[0]} was not stored either." if upload is not None else ""
    if (asked is not None and found.classification != asked) or (
        version is not None and found.version != version
    ):
        where = asked or found.classification or ""
        return answer_refused(dash, found, specs, where, back, unstored)
    if not found.status.is_waiting:
        flash(
            f"Task {short_id(task_id)} is {found.status.value}, no longer waiting.{unstored}",
            "error",
        )
        return redirect(url_for(".task", task_id=task_id)), 303
    phase = ops.phase_of(found, specs)
    schema = phase.input_schema if phase is not None and not found.resume_in_phase else None
    value, form = parse_answer(schema, request.form)
    if upload is not None and form.has_errors:
        # Not stored: the answer it came with was not taken. No page can keep a file.
        form.file_error = (
            f"{upload[0]} was not stored, as the answer was not taken: choose it again."
        )
    stored = ""  # what the success message says about the file
    status = 400  # of the page shown again, with the form's errors
    if not form.has_errors:
        by = acting_user()
        try:
            if upload is not None:
                # Before the answer: the phase that runs next may want the file.
                name, data = upload
                dash.call(lambda engine: engine.add_artifact_bytes(task_id, name, data, by=by))
                stored = f" The file {name} was stored with it."
                unstored = f" The file {name} was stored with the task all the same."
                upload = None
                if version is not None:
                    # Storing it was one change of the task, which the store counts
                    # (a version one up); any other change since still refuses the answer.
                    version += 1
            resumed = dash.call(
                lambda engine: engine.resume(task_id, value, phase=asked, version=version, by=by)
            )
        except ArtifactError as exc:
            form.file_error = f"{exc}; nothing was stored, and the answer was not sent."
        except StoreError as exc:
            # The store failed the write (a full disk, its file deleted): the answer
            # was not recorded, and the form comes back with what was typed in it.
            form.error = (
                f"The store did not take your answer: {store_failed(exc)}. It was not "
                f"recorded; send it again once the store works.{unstored}"
            )
            status = 503
        except InvalidOutputError as exc:
            form.error = "; ".join(exc.errors) or str(exc)
        except BridgeTimeout as exc:
            if upload is not None:
                return _error(
                    dash,
                    503,
                    f"The store was too busy to take the file {upload[0]} for task "
                    f"{short_id(task_id)} ({exc}). It was queued and may still be stored; the "
                    "answer was not sent: check the task (its page updates itself) before "
                    "answering again.",
                )
            return answer_queued(dash, found, schema, back, exc)
        except TaskStateError as exc:
            # Someone else's answer (or a deadline) moved the task on since it was loaded.
            now = dash.call(lambda engine: engine.get_task(task_id))
            if now is not None and (
                (asked is not None and now.classification != asked)
                or (version is not None and now.version != version)
            ):
                where = asked or now.classification or ""
                return answer_refused(dash, now, specs, where, back, unstored)
            flash(f"{str(exc).rstrip('.')}.{unstored}" if unstored else str(exc), "error")
            return redirect(url_for(".task", task_id=task_id)), 303
        else:
            where = (
                f"moved on to {resumed.classification}"
                if resumed.status is TaskStatus.PENDING and not resumed.resume_in_phase
                else resumed.status.value
            )
            flash(f"Answer recorded for task {short_id(task_id)}: {where}.{stored}", "ok")
            if back == "inbox":
                return redirect(url_for(".inbox", all=request.args.get("all"))), 303
            return redirect(url_for(".task", task_id=task_id)), 303
    try:
        if back == "inbox":
            return inbox(dash, forms={task_id: form}, status=status)
        return task(dash, task_id, form=form, status=status)
    except StoreError:
        if status != 503:
            raise
        # The store does not answer reads either: a plain page with what was typed.
        typed = typed_values(schema, request.form)
        return _error(dash, 503, form.error or "", [f"{label}: {text}" for label, text in typed])


def _uploaded_file() -> tuple[str, bytes] | None:
    """The file sent with an answer (a task page's answer form has a file input), as
    ``(name, bytes)``; None when no file was chosen. The whole request is limited to
    the dashboard's ``max_body``."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return None  # the browser sends an empty part when no file was chosen
    return upload.filename, upload.read()


def answer_queued(dash: Dashboard, found: Task, schema: Any, back: str, exc: BridgeTimeout) -> Any:
    """503: the store did not take the answer in time (another process holding its
    write lock, say). The write was handed to the store and may still be done, so
    the page says so, shows what was typed, and asks to check before answering again
    (an answer sent again for the same round is refused if the first one was taken)."""
    message = (
        f"The store was too busy to take your answer for task {short_id(found.id)} "
        f"({exc}). It was queued and may still be applied: check the task "
        "(its page updates itself) before answering again."
    )
    typed = typed_values(schema, request.form)
    queued = {
        "message": message,
        "asked": found.classification or "",
        "typed": typed,
        "kind": "queued",
    }
    try:
        if back == "inbox":
            return inbox(dash, refused=queued, status=503)
        return task(dash, found.id, refused=queued, status=503)
    except BridgeError:  # the store does not answer reads either: a plain page
        return _error(dash, 503, message, [f"{label}: {text}" for label, text in typed])


def answer_refused(
    dash: Dashboard,
    now: Task,
    specs: dict[str, WorkflowSpec],
    asked: str,
    back: str,
    note: str = "",
) -> Any:
    """409: the answer was for a phase the task has left, or for a task that has
    finished since. The page now shown has the new question's form (if any), and
    what the person typed is shown back; ``note`` ends the message (what became of
    a file sent with the answer).

    When the answer recorded for that phase is the very one this form carries (an
    earlier send of it, queued while the store was busy, was taken after all), the
    page says so instead of claiming it was not recorded.
    """
    spec = specs.get(now.workflow_name or "")
    old = spec.phase(asked) if spec is not None else None
    schema = old.input_schema if old is not None else None
    ours = _recorded_is_ours(now, asked, schema)
    # Who answered the question first, when the dashboard (or wfe resume) knew.
    last = _last_word(now, asked)
    who = last.get("by") if last is not None and last["event"] == "resumed" else None
    by = f" by {who}" if who and not ours else ""
    if now.status.is_finished:
        moved = _finished_since(now, asked, ours)
    elif now.classification == asked:
        moved = (
            f"has been answered{by} since you opened it and is back at phase {asked!r} "
            f"({_STATUS_LABELS[now.status.value].lower()}) with a new round of it"
        )
    else:
        moved = (
            f"has moved on from phase {asked!r} to {now.classification!r} "
            f"({_STATUS_LABELS[now.status.value].lower()}) since you opened it"
            + (f", answered{by}" if by else "")
        )
    outcome = (
        f"the answer recorded for {asked!r} is the same as yours (an earlier send of it, "
        "perhaps, taken after the store was busy), so nothing is lost; this one was "
        "not recorded again"
        if ours
        else "your answer was not recorded"
    )
    refused = {
        "message": f"Task {short_id(now.id)} {moved}; {outcome}.{note}",
        "asked": asked,
        "typed": typed_values(schema, request.form),
        "kind": "recorded" if ours else "refused",
    }
    if back == "inbox":
        return inbox(dash, refused=refused, status=409)
    return task(dash, now.id, refused=refused, status=409)


def _recorded_is_ours(now: Task, asked: str, schema: Any) -> bool:
    """True when the answer the task holds for phase ``asked`` (its output, or the
    reply of a phase that reruns with it) equals the one this request carries."""
    sent = sent_answer(schema, request.form)
    if sent is None:
        return False
    value = sent[0]
    return (asked in now.outputs and now.outputs[asked] == value) or (
        now.reply is not None and now.reply == value
    )


def _finished_since(now: Task, asked: str, ours: bool = False) -> str:
    """Why a task whose question was open has finished: it was answered, its deadline
    passed, it was cancelled, or it failed. ``ours``: the answer it holds is the one
    this request carries, so it was not necessarily answered elsewhere."""
    if now.status is TaskStatus.CANCELLED:
        return "is cancelled now"
    now_is = (
        "has failed since you opened it" if now.status is TaskStatus.FAILED else "is completed now"
    )
    last = _last_word(now, asked)
    why = last["event"] if last is not None else None
    if why == "resumed" and ours:
        return f"{now_is} (answered)"
    if why == "resumed" and last is not None and last.get("by"):
        return f"{now_is} (answered by {last['by']})"
    return f"{now_is} ({_ENDINGS[why]})" if why else now_is


def _last_word(now: Task, asked: str) -> dict[str, Any] | None:
    """The last word on the question of phase ``asked``: its answer (a ``resumed``
    event, with ``by`` when who answered is known) or its deadline passing."""
    return next(
        (
            event
            for event in reversed(now.history)
            if event.get("phase") == asked and event.get("event") in _ENDINGS
        ),
        None,
    )


#: History events that end a question, and how the refusal says so.
_ENDINGS = {"resumed": "answered elsewhere", "deadline_passed": "its deadline passed"}


def cancel(dash: Dashboard, task_id: str) -> Any:
    back = _safe_next(request.form.get("next_url"), url_for(".task", task_id=task_id))
    by = acting_user()
    return change_task(
        dash, task_id, lambda engine: engine.cancel(task_id, by=by), "cancel", "cancelled", back
    )


def retry(dash: Dashboard, task_id: str) -> Any:
    back = url_for(".task", task_id=task_id)
    by = acting_user()
    return change_task(
        dash, task_id, lambda engine: engine.retry(task_id, by=by), "retry", "queued again", back
    )


def retry_listed(dash: Dashboard) -> Any:
    """The task list's "Retry all" form: every task of its status, failed or
    cancelled, and of its workflow and phase if it lists one; then the list of
    them queued."""
    status = request.form.get("status", "")
    workflow = request.form.get("workflow") or None
    phase = request.form.get("phase") or None
    if status not in ("failed", "cancelled"):
        return _error(dash, 400, f"only failed or cancelled tasks are retried, not {status!r}")
    by = acting_user()
    which = (
        f"{status} task(s)"
        + (f" of workflow {workflow}" if workflow else "")
        + (f" at phase {phase}" if phase else "")
    )
    try:
        retried = dash.call(
            lambda engine: engine.retry_tasks([status], workflow_name=workflow, phase=phase, by=by)
        )
    except BridgeTimeout as exc:
        flash(
            f"The store was too busy to retry the {which} ({exc}). It was queued and may "
            "still be done: check the list before trying again.",
            "warn",
        )
    except StoreError as exc:
        flash(
            f"The store did not take the retry of the {which}: {store_failed(exc)}. Some "
            "may have been queued again; the list says which.",
            "error",
        )
    else:
        flash(f"{len(retried)} {which} queued again.", "ok")
    return redirect(url_for(".tasks", status="pending", workflow=workflow, phase=phase), 303)


def set_priority(dash: Dashboard, task_id: str) -> Any:
    """The task page's Priority form: a whole number from -1000 to 1000 (empty is 0)
    for a PENDING or waiting task. A bad one shows the page again with the error
    beside the field and what was typed in it."""
    typed = request.form.get("priority", "")
    try:
        priority = form_priority(typed)
    except PriorityError as exc:
        return task(dash, task_id, status=400, priority_form={"value": typed, "error": str(exc)})
    by = acting_user()
    return change_task(
        dash,
        task_id,
        lambda engine: engine.set_priority(task_id, priority, by=by),
        "priority change",
        f"priority set to {priority}",
        url_for(".task", task_id=task_id),
    )


def change_task(dash: Dashboard, task_id: str, change: Any, what: str, done: str, back: str) -> Any:
    """Apply ``change(engine)`` to a task from a form; flash how it went. ``what``
    names the change where the store did not take it, ``done`` where it did."""
    try:
        dash.call(change)
    except UnknownTaskError as exc:
        return _error(dash, 404, str(exc))
    except TaskStateError as exc:
        flash(str(exc), "error")
    except BridgeTimeout as exc:
        # The change was handed to the store, which may still make it.
        flash(
            f"The store was too busy to take the {what} of task {short_id(task_id)} ({exc}). "
            "It was queued and may still be applied: check the task before trying again.",
            "warn",
        )
    except StoreError as exc:
        # The write failed (a full disk, say): nothing changed.
        flash(
            f"The store did not take the {what} of task {short_id(task_id)}: "
            f"{store_failed(exc)}. Nothing changed; try again once the store works.",
            "error",
        )
    else:
        flash(f"Task {short_id(task_id)} {done}.", "ok")
    # 303, as after an answer: the page it leads to is fetched with GET.
    return redirect(back, 303)
