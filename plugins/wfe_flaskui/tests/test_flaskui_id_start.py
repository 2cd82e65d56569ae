"""A task's page found by the start of its id, as the lists show it (the first 8
digits): the page of the one task whose made-up id starts so, by a redirect."""

from __future__ import annotations

from flaskui_helpers import Api


def test_the_start_of_an_id_leads_to_its_task(api: Api) -> None:
    task = api.submit("question", {"q": "?"})
    full = task["id"]
    assert len(full) == 32

    found = api.get(f"/tasks/{full[:8]}")
    assert found.status_code == 302
    assert found.headers["Location"] == f"/tasks/{full}"
    assert api.get(f"/tasks/{full[:5]}").status_code == 404  # too short to stand for it


def test_several_ids_or_an_id_an_app_chose_are_not_guessed(api: Api) -> None:
    first, second = ("abcdef01" + "0" * 24), ("abcdef02" + "0" * 24)
    for task_id in (first, second, "order-1001"):
        api.submit("question", {"q": "?"}, id=task_id)

    assert api.get("/tasks/abcdef").status_code == 404  # two start so
    assert api.get("/tasks/abcdef02").headers["Location"] == f"/tasks/{second}"
    assert api.get("/tasks/order-1").status_code == 404
