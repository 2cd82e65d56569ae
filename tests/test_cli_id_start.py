"""The start of an id wfcore made up stands for the whole of it on the command line
(6 hex digits or more, as the dashboard shows the first 8), in every command that
takes a task id; a start several ids share is refused, naming them, and the ids an
app or a client chose are taken whole only."""

from __future__ import annotations

import asyncio
import json

from wfcore import MemoryStore, SQLiteStore, Store, Task

APP = ("--app", "callback_app:engine")


def _submit(wfe, *args: str) -> str:
    return wfe("submit", "sign", *APP, "--data", "{}", *args).stdout.strip()


def test_every_command_taking_an_id_takes_its_start(wfe, tmp_path) -> None:
    env = {**wfe.env, "CLI_APP_LOG": str(tmp_path / "log")}
    task_id = _submit(wfe)
    start = task_id[:8]
    assert len(task_id) == 32

    assert wfe("show", start).stdout.splitlines()[0] == f"task      {task_id}"
    assert wfe("priority", start, "5").stdout.startswith(f"{task_id} ")
    assert wfe("cancel", start).stdout == f"{task_id} cancelled\n"
    assert wfe("retry", start).stdout == f"{task_id} pending\n"
    wfe("worker", "callback_app:engine", "--until-idle", "-q", env=env)  # waits for a person
    assert wfe("wait", start, "--waiting").stdout.startswith("waiting_human in phase 'sign'")
    shown = json.loads(wfe("show", task_id[:6], "--json").stdout)
    assert (shown["id"], shown["status"]) == (task_id, "waiting_human")
    assert wfe("resume", start, "--output", '"signed"').stdout == f"{task_id} completed\n"
    assert wfe("tasks", "--parent", start).stdout == "no tasks\n"


def test_a_start_several_ids_share_is_refused_naming_them(wfe) -> None:
    first, second = "abcdef01" + "0" * 24, "abcdef02" + "0" * 24
    for task_id in (first, second):
        _submit(wfe, "--id", task_id)

    refused = wfe("cancel", "abcdef", check=False)
    assert refused.returncode == 2
    assert f"'abcdef' starts the ids of several tasks ({first}, {second}): give more" in (
        refused.stderr
    )
    assert wfe("cancel", "abcdef02").stdout == f"{second} cancelled\n"
    assert json.loads(wfe("show", first, "--json").stdout)["status"] == "pending"


def test_only_made_up_ids_are_found_by_their_start(wfe) -> None:
    _submit(wfe, "--id", "order-1001")
    _submit(wfe, "--id", "deadbeef-1")
    made_up = _submit(wfe)
    for start in ("order-1", "deadbeef", made_up[:5]):
        unknown = wfe("show", start, check=False)
        assert unknown.returncode == 1, (start, unknown.stdout)
        assert f"unknown task '{start}'" in unknown.stderr
    # Starts that name nothing say why they may not, where it is their shape.
    hints = {
        ("show", made_up[:5]): "(the start of an id wfcore made must be 6 characters or more)",
        ("cancel", made_up[:4]): "(the start of an id wfcore made must be 6 characters or more)",
        ("show", made_up.upper()): "(the ids wfcore makes are in lower case)",
        ("show", "order-1"): "",
    }
    for args, hint in hints.items():
        said = wfe(*args, check=False).stderr
        assert said == f"Error: unknown task {args[1]!r}{' ' * bool(hint)}{hint}\n", said


def test_the_default_search_of_ids_reads_every_task() -> None:
    # What a store that keeps no index on ids inherits from Store.
    class Unindexed(MemoryStore):
        task_ids_starting_with = Store.task_ids_starting_with

    async def search() -> list[str]:
        store = Unindexed()
        await store.open()
        for n in range(2500):
            await store.insert_task(Task(id=f"{n:04d}", workflow_name="w"))
        return await store.task_ids_starting_with("12", limit=3)

    assert asyncio.run(search()) == ["1200", "1201", "1202"]


def test_ids_of_other_shapes_starting_alike_hide_no_match(wfe, tmp_path) -> None:
    # UUIDs an app chose, sorting between two ids of wfcore's shape: the start the
    # two share is still refused, and one only they start stands for that one.
    first, second = "abcdef01" + "0" * 24, "abcdef99" + "0" * 24
    chosen = [f"abcdef5{n}-0000-4000-8000-000000000000" for n in range(10)]

    async def store_them() -> list[str]:
        from wfcore.stores.base import ids_started_by

        store = SQLiteStore(str(tmp_path / "wfe.db"))
        await store.open()
        for task_id in (first, *chosen, second):
            await store.insert_task(Task(id=task_id, workflow_name="sign"))
        found = await ids_started_by(store, "abcdef", 2)
        await store.close()
        return found

    assert asyncio.run(store_them()) == [first, second]
    refused = wfe("show", "abcdef", check=False)
    assert refused.returncode == 2
    assert f"({first}, {second})" in refused.stderr
    assert wfe("show", "abcdef9").stdout.splitlines()[0] == f"task      {second}"
