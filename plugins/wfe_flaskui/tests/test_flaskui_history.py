"""A task's page with a long history: the timeline shows the newest events, says how
many earlier ones there are and links to all of them; the choice survives the page's
own refreshes. Histories are made by a real loop workflow on a real SQLite store.
Likewise a task with many text artifacts shows the newest few inline."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flaskui_helpers import loop_task
from wfe_flaskui import Dashboard, create_app
from wfe_flaskui.display import HISTORY_SHOWN, _timeline, _waiting_since
from wfe_flaskui.pages import PREVIEWS_SHOWN, task_context

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus

#: One timeline item, whole: its offset, time, label, duration and details included.
_ITEM = re.compile(r'<li class="ev ev-.*?</li>', re.DOTALL)
_REFRESH = re.compile(r'data-refresh="([^"]*)"')


@pytest.fixture
def client(wfe_store_url: str) -> Iterator[Any]:
    """A dashboard (no worker of its own) on the test's SQLite store."""
    dash = Dashboard(store=wfe_store_url, run_worker=False, token="", kafka_brokers="")
    yield create_app(dash, secret_key="test-secret").test_client()
    dash.stop()


def _items(html: str) -> list[str]:
    return _ITEM.findall(html)


def _earlier_line(html: str) -> str | None:
    found = re.search(r'<p class="history-cut" id="history-earlier".*?</p>', html, re.DOTALL)
    return found.group() if found else None


def test_a_long_history_shows_its_last_events_and_links_to_all(
    client: Any, wfe_store_url: str
) -> None:
    task_id = asyncio.run(loop_task(wfe_store_url, 120))  # 244 events
    page = client.get(f"/tasks/{task_id}").text
    shown = _items(page)
    assert len(shown) == HISTORY_SHOWN == 200
    line = _earlier_line(page)
    assert line is not None, "no line saying how many earlier events there are"
    assert 'data-earlier="44"' in line and "… 44 earlier events" in line
    link = re.search(r'href="([^"]*)"', line)
    assert link is not None and link.group(1) == f"/tasks/{task_id}?history=all#history"
    assert "show all 244" in line

    # The link (without its #fragment, which a browser keeps to itself) shows every event.
    everything = client.get(link.group(1).split("#")[0])
    assert everything.status_code == 200
    every = _items(everything.text)
    assert len(every) == 244
    assert _earlier_line(everything.text) is None
    assert 'id="history-all"' in everything.text and "show the last 200" in everything.text
    # The events shown are the newest, each exactly as the whole timeline shows it: an
    # offset still counts from the first event (the first shown has one), not from
    # the first shown.
    assert shown == every[-200:]
    assert '<div class="ev-offset">' in shown[0]
    assert '<div class="ev-offset">' not in every[0]
    assert "Completed" in shown[-1]


def test_a_long_error_is_cut_on_the_page_of_its_task(client: Any, wfe_store_url: str) -> None:
    # An error message may hold a whole response body; the traceback repeats it, and
    # so does each failed attempt's event. The page fetches itself every few seconds.
    message = "the service answered: " + "x" * 300_000 + "<end>"

    async def fail(task: Task) -> None:
        raise RuntimeError(message)

    async def failed_task() -> str:
        engine = ECSWorkflowEngine(wfe_store_url, load_plugins=False, retry_delay=0.01)
        engine.register_handler("fail", fail)
        engine.register_workflow("fails", [Phase("fail", assigned_to="functional", max_attempts=2)])
        async with engine:
            task = await engine.submit_task({}, "fails")
            await engine.run_until_idle()
            return task.id

    task_id = asyncio.run(failed_task())
    page = client.get(f"/tasks/{task_id}").text
    assert len(page) < 60_000
    # Only the traceback, which the engine keeps to its last 4,000 characters, ends it.
    assert page.count("&lt;end&gt;") == 1
    whole = f'<a href="/api/tasks/{task_id}">the whole task as JSON</a>'
    error = page.split('id="task-error"', 1)[1].split("</section>", 1)[0]
    assert "RuntimeError: the service answered: xxx" in error
    assert f"… cut at 16,384 of {len(message) + 14:,} characters; {whole}." in error
    assert error.count(whole) == 1
    # Each attempt's event shows the start of its error, ending in an ellipsis.
    failures = [item for item in _items(page) if "ev-attempt_failed" in item]
    assert len(failures) == 2
    for item in failures:
        assert "<i>error</i> RuntimeError: the service answered: " + "x" * 964 + "…" in item
    full = client.get(f"/api/tasks/{task_id}").get_json()
    assert full["error"] == f"RuntimeError: {message}"


def test_only_a_history_of_more_than_200_events_is_cut(client: Any, wfe_store_url: str) -> None:
    short = asyncio.run(loop_task(wfe_store_url, 3))  # 10 events
    page = client.get(f"/tasks/{short}").text
    assert len(_items(page)) == 10
    assert _earlier_line(page) is None and 'class="history-cut"' not in page
    at_most = asyncio.run(loop_task(wfe_store_url, 98))  # 200 events: all shown
    page = client.get(f"/tasks/{at_most}").text
    assert len(_items(page)) == 200
    assert _earlier_line(page) is None and 'class="history-cut"' not in page
    # ?history=all of a history that is not cut has nothing to go back to either.
    page = client.get(f"/tasks/{at_most}?history=all").text
    assert len(_items(page)) == 200 and 'class="history-cut"' not in page
    above = asyncio.run(loop_task(wfe_store_url, 99))  # 202 events
    page = client.get(f"/tasks/{above}").text
    assert len(_items(page)) == 200
    line = _earlier_line(page)
    assert line is not None and 'data-earlier="2"' in line and "… 2 earlier events" in line


def test_the_live_refresh_keeps_showing_all_events(client: Any, wfe_store_url: str) -> None:
    task_id = asyncio.run(loop_task(wfe_store_url, 120))
    partial = {"X-WFE-Partial": "1"}
    # The page refreshes its region from the URL in data-refresh, with X-WFE-Partial.
    refresh = _REFRESH.search(client.get(f"/tasks/{task_id}?history=all").text)
    assert refresh is not None and refresh.group(1) == f"/tasks/{task_id}?history=all"
    region = client.get(refresh.group(1), headers=partial).text
    assert "<html" not in region and len(_items(region)) == 244
    assert 'id="history-all"' in region
    # Without ?history=all the refresh shows the newest 200 again.
    refresh = _REFRESH.search(client.get(f"/tasks/{task_id}").text)
    assert refresh is not None and refresh.group(1) == f"/tasks/{task_id}"
    region = client.get(refresh.group(1), headers=partial).text
    assert len(_items(region)) == 200 and _earlier_line(region) is not None


def test_a_history_argument_other_than_all_is_refused(client: Any, wfe_store_url: str) -> None:
    task_id = asyncio.run(loop_task(wfe_store_url, 3))
    answer = client.get(f"/tasks/{task_id}?history=50")
    assert answer.status_code == 400
    assert "history must be &#39;all&#39; (every event) or left out (the last 200)" in answer.text
    # The API's task keeps its whole history, whatever the page shows.
    whole = client.get(f"/api/tasks/{task_id}").get_json()
    assert len(whole["history"]) == 10


def _at(start: datetime, seconds: float) -> str:
    return (start + timedelta(seconds=seconds)).isoformat()


def test_waits_and_offsets_across_the_cut_count_from_the_whole_history() -> None:
    """A wait that began before the events shown still says how long it lasted."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    history: list[dict[str, Any]] = [
        {"at": "not a time", "event": "submitted"},  # offsets start at the first time read
        {"at": _at(start, 1), "event": "phase_started", "phase": "ask"},
        {"at": _at(start, 2), "event": "suspended", "phase": "ask", "status": "waiting_human"},
    ]
    history += [{"at": _at(start, 3 + i), "event": "note", "n": i} for i in range(300)]
    history += [
        {"at": _at(start, 400), "event": "resumed", "phase": "ask"},
        {"at": _at(start, 401), "event": "completed"},
    ]
    task = Task(data={}, history=history)
    whole = _timeline(task)
    last = _timeline(task, last=50)
    assert last == whole[-50:]
    resumed = last[-2]
    assert resumed["duration"] == "waited 6 min 38 s"
    assert resumed["who"] == "answered by a person"
    # The first shown is at 255 s; offsets count from the first time read (1 s).
    assert last[0]["offset"] == whole[-50]["offset"] == "+4 min 14 s"
    assert whole[0]["offset"] == "" and whole[1]["offset"] == "+0 ms"
    assert _timeline(task, last=1000) == whole


class _CountedReads(list):  # type: ignore[type-arg]
    """A history that counts the entries read from it, forwards or backwards."""

    reads = 0

    def __iter__(self) -> Iterator[Any]:
        for entry in super().__iter__():
            self.reads += 1
            yield entry

    def __reversed__(self) -> Iterator[Any]:
        for entry in super().__reversed__():
            self.reads += 1
            yield entry


def test_inbox_cards_and_a_finished_task_read_only_the_end_of_a_long_history() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    entries = [{"at": _at(start, i), "event": "note"} for i in range(10_000)]
    waiting = _CountedReads(
        [*entries, {"at": _at(start, 10_001), "event": "suspended", "status": "waiting_human"}]
    )
    task = Task(data={}, status=TaskStatus.WAITING_HUMAN, history=waiting)
    # An inbox card: when the wait began, and no timeline.
    card = task_context(task, {}, history=0)
    assert card["waiting_since"] == _at(start, 10_001) and card["timeline"] == []
    assert waiting.reads <= 1
    # A finished task was not waiting since anything: its history is not read for that.
    finished = _CountedReads(entries)
    task = Task(data={}, status=TaskStatus.COMPLETED, history=finished)
    assert _waiting_since(task) is None and finished.reads == 0


async def _task_with_logs(url: str, first: int, count: int, task_id: str | None = None) -> str:
    """A waiting task on the store at ``url`` given text artifacts ``log-<first>.txt``
    on (100 KB each, more than a page shows of one) and one binary file: its id."""
    engine = ECSWorkflowEngine(store=url, load_plugins=False)
    engine.register_workflow("logs", [Phase("read", assigned_to="human")])
    try:
        if task_id is None:
            task_id = (await engine.submit_task({}, "logs")).id
            await engine.run_until_idle()
            await engine.add_artifact_bytes(task_id, "blob.bin", bytes(range(256)))
        for i in range(first, first + count):
            await engine.add_artifact_bytes(task_id, f"log-{i:02}.txt", (b"x" * 99 + b"\n") * 1000)
        return task_id
    finally:
        await engine.aclose()


def _previewed(html: str) -> list[str]:
    return re.findall(r'<details id="art-\d+" open><summary>([^<(]+?)[ <(]', html)


def test_a_page_shows_the_newest_text_artifacts_inline_and_lists_every_one(
    client: Any, wfe_store_url: str
) -> None:
    """Each text artifact shown inline is up to 64 KiB of a page that fetches itself
    every few seconds: a task with hundreds (a log for each round of a loop) would
    make it megabytes. The newest few are shown; every one stays listed."""
    task_id = asyncio.run(_task_with_logs(wfe_store_url, 0, PREVIEWS_SHOWN))
    page = client.get(f"/tasks/{task_id}").text
    assert _previewed(page) == [f"log-{i:02}.txt" for i in range(8)]
    assert 'id="previews-left-out"' not in page

    asyncio.run(_task_with_logs(wfe_store_url, 8, 22, task_id))
    page = client.get(f"/tasks/{task_id}").text
    assert _previewed(page) == [f"log-{i:02}.txt" for i in range(22, 30)]
    assert (
        '<p class="muted" id="previews-left-out">The newest 8 text artifacts are shown below '
        "their rows; download the other 22 to read them.</p>"
    ) in page
    assert page.count("<tr data-artifact=") == 31  # every one, with its download link
    assert page.count(">Download</a>") == 31
    assert len(page) < 9 * 64 * 1024  # 30 previews would be 1.9 MB
    # The page's own refreshes (just its region) are the same.
    region = client.get(f"/tasks/{task_id}", headers={"X-WFE-Partial": "1"}).text
    assert _previewed(region) == _previewed(page)
