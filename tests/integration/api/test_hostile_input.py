"""What a hostile or careless client can send, over real HTTP: every input is a 4xx naming
its field, never a 500; authentication comes before the body; long-lived requests are
capped per user."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from taskcore.testing import wait_for_async

from tests.integration.api.support import (
    ALICE,
    BOB,
    ROOT,
    RunningApi,
    StartApi,
    auth,
    sse_events,
)


def cursor_of(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


async def test_an_anonymous_batch_is_refused_before_its_body_is_read(api: RunningApi) -> None:
    """The request declares 6 MB but sends only 64 KiB: the 401 can only come back if the
    server answered without reading (let alone parsing) the body."""
    host, port = api.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        "POST /v1/tasks/batch HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {6 * 1024 * 1024}\r\n\r\n"
    )
    writer.write(head.encode() + b'{"tasks": [' + b'{"task_type": "diag.noop"},' * 2500)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 401"), status_line


async def test_a_users_request_to_an_admin_route_is_refused_before_its_body_is_read(
    api: RunningApi,
) -> None:
    async with api.client(ALICE) as c:
        response = await c.post(
            "/v1/dead-letters/replay", content=b"{not json", headers={"content-type": "x"}
        )
    assert response.status_code == 403


async def test_a_batch_is_refused_at_its_item_1001_before_the_rest_is_decoded(
    api: RunningApi,
) -> None:
    # whatever follows item 1001 is not even JSON: a 422 (not a 400) proves decoding stopped
    body = b'{"tasks": [' + b'{"task_type": "diag.noop"},' * 1001 + b"garbage" * 1000
    async with api.client(ALICE) as c:
        response = await c.post(
            "/v1/tasks/batch", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"field": "tasks", "reason": "at most 1000 tasks per batch"}
    ]


FANOUT = "diag.fanout"


def fanout_with(child_parameters: Any) -> dict[str, Any]:
    return {"task_type": FANOUT, "parameters": {"count": 0, "child_parameters": child_parameters}}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (fanout_with({"n": 2**64}), "parameters.child_parameters.n", "64 bits"),
        (fanout_with({"n": -(2**63) - 1}), "parameters.child_parameters.n", "64 bits"),
        (fanout_with(nested(200)), "parameters.child_parameters", "nested deeper"),
        (fanout_with({"k\x00ey": 1}), "parameters.child_parameters", "NUL"),
        (fanout_with({"s": "\ud800"}), "parameters.child_parameters.s", "surrogate"),
        ({"task_type": "diag.noop", "labels": {"k": "\udfff"}}, "labels.k", "unicode"),
    ],
    ids=["above 2^64", "below -2^63", "200 levels", "NUL key", "lone surrogate", "label"],
)
async def test_values_the_store_cannot_hold_are_a_422_naming_the_field(
    api: RunningApi, body: dict[str, Any], field: str, reason: str
) -> None:
    # json.dumps escapes what is not valid UTF-8 (\\ud800), as a hostile client would send it
    headers = {"content-type": "application/json"}
    batch_body = {"tasks": [body, {"task_type": "diag.noop"}]}
    async with api.client(ALICE) as c:
        single = await c.post("/v1/tasks", content=json.dumps(body), headers=headers)
        batch = await c.post("/v1/tasks/batch", content=json.dumps(batch_body), headers=headers)
    assert single.status_code == 422, single.text
    details = single.json()["error"]["details"]
    assert any(d["field"].startswith(field) and reason in d["reason"] for d in details), details
    bad, good = batch.json()["results"]
    assert bad["ok"] is False
    assert bad["error"]["details"] == details
    assert good["ok"] is True


@pytest.mark.parametrize(
    "raw",
    [
        b'{"task_type": "diag.fanout", "parameters": {"child_parameters": {"x": NaN}}}',
        b'{"task_type": "diag.fanout", "parameters": {"child_parameters": {"x": -Infinity}}}',
        b'{"task_type": "diag.noop", "parameters": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"task_type": "diag.noop", "parameters": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001,
    ],
    ids=["NaN", "-Infinity", "100k nested arrays", "50k nested objects"],
)
async def test_json_beyond_what_we_store_is_a_4xx_never_a_500(api: RunningApi, raw: bytes) -> None:
    async with api.client(ALICE) as c:
        single = await c.post(
            "/v1/tasks", content=raw, headers={"content-type": "application/json"}
        )
        batch = await c.post(
            "/v1/tasks/batch",
            content=b'{"tasks": [' + raw + b"]}",
            headers={"content-type": "application/json"},
        )
    assert 400 <= single.status_code < 500, single.text
    assert single.json()["error"]["code"]
    assert 200 <= batch.status_code < 500, batch.text
    if batch.status_code == 200:
        assert batch.json()["results"][0]["ok"] is False


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/tasks", {"cursor": cursor_of({"t": 10**30, "i": "x"})}),
        ("/v1/tasks", {"cursor": cursor_of({"k": "9" * 400})}),
        ("/v1/tasks", {"cursor": cursor_of({"k": 10**30})}),
        ("/v1/tasks", {"label": "Not A Key:1"}),
        ("/v1/tasks", {"label": "no-colon"}),
        ("/v1/tasks/{id}/events", {"cursor": cursor_of({"s": 10**30})}),
        ("/v1/tasks/{id}/events", {"cursor": cursor_of({"s": -1})}),
    ],
)
async def test_cursors_and_filters_that_are_not_ours_are_a_422(
    api: RunningApi, path: str, params: dict[str, str]
) -> None:
    async with api.client(ALICE) as c:
        task = (await c.post("/v1/tasks", json={"task_type": "diag.noop"})).json()
        response = await c.get(path.format(id=task["id"]), params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] in ("query.cursor", "query.label")


@pytest.mark.parametrize(
    "params",
    [
        {"created_before": "9999-12-31T23:00:00-12:00"},
        {"created_after": "9999-12-31T23:59:59-14:00"},
        {"created_after": "0001-01-01T00:00:00+14:00"},
        {"created_before": "0001-01-01T00:00:00+14:00"},
        {"created_after": "1969-12-31T23:59:59.999999Z"},
    ],
)
async def test_dates_at_the_edges_of_the_calendar_are_answered(
    api: RunningApi, params: dict[str, str]
) -> None:
    async with api.client(ALICE) as c:
        response = await c.get("/v1/tasks", params=params)
    assert response.status_code == 200, response.text


BEFORE_YEAR_ONE_IN_UTC = "0001-01-01T00:00:00+01:00"  # valid RFC 3339; 0000-12-31 in UTC


@pytest.mark.parametrize(
    ("method", "path", "request_args", "field"),
    [
        (
            "POST",
            "/v1/tasks",
            {"json": {"task_type": "diag.noop", "run_at": BEFORE_YEAR_ONE_IN_UTC}},
            "run_at",
        ),
        ("GET", "/v1/usage", {"params": {"from": BEFORE_YEAR_ONE_IN_UTC}}, "query.from"),
    ],
)
async def test_a_time_before_year_one_in_utc_is_a_422_naming_its_field(
    api: RunningApi, method: str, path: str, request_args: dict[str, Any], field: str
) -> None:
    async with api.client(ALICE) as c:
        response = await c.request(method, path, **request_args)
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == field
    assert "UTC" in detail["reason"]


@pytest.mark.parametrize("team_id", ['"\\ud800"', json.dumps("t" * 201), "7"])
async def test_a_workflows_unusable_team_id_is_a_422_naming_it(
    api: RunningApi, team_id: str
) -> None:
    # As sent on the wire: a lone surrogate is valid JSON, and no str can be encoded as it.
    workflow = f'{{"steps": [{{"id": "a", "task_type": "diag.noop"}}], "team_id": {team_id}}}'
    async with api.client(ROOT) as c:  # an admin may name any team: only the value is wrong
        response = await c.post(
            "/v1/workflows", content=workflow, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert any("team_id" in f for f in fields), fields


async def test_a_huge_last_event_id_is_a_422(api: RunningApi) -> None:
    async with api.client(ALICE) as c:
        task = (await c.post("/v1/tasks", json={"task_type": "diag.noop"})).json()
        response = await c.get(
            f"/v1/tasks/{task['id']}/stream", headers={"Last-Event-ID": str(10**30)}
        )
    assert response.status_code == 422


# ---- per-user caps --------------------------------------------------------------------


async def test_streams_beyond_the_per_user_cap_are_a_429_and_a_closed_one_frees_its_slot(
    start_api: StartApi,
) -> None:
    api = await start_api(max_streams_per_user=2)
    async with api.client(ALICE) as alice, api.client(BOB) as bob:
        task = (await alice.post("/v1/tasks", json={"task_type": "diag.noop"})).json()
        url = f"/v1/tasks/{task['id']}/stream"
        async with alice.stream("GET", url) as first, alice.stream("GET", url) as second:
            for opened in (first, second):
                assert opened.status_code == 200
                await anext(sse_events(opened))
            refused = await alice.get(url)
            other_users = await bob.get("/v1/task-types")
        assert refused.status_code == 429
        assert refused.headers["retry-after"]
        assert refused.json()["error"]["details"]["limit"] == 2
        assert other_users.status_code == 200

        async def reopened() -> bool:
            async with alice.stream("GET", url) as again:
                return again.status_code == 200

        await wait_for_async(reopened, timeout=5, message="the closed streams' slots to free")


async def test_waits_beyond_the_per_user_cap_are_a_429_and_plain_submissions_go_on(
    start_api: StartApi,
) -> None:
    api = await start_api(max_waits_per_user=1)
    async with api.client(ALICE) as alice:
        waiting = asyncio.create_task(
            alice.post("/v1/tasks", params={"wait": 3}, json={"task_type": "diag.noop"})
        )

        async def first_is_waiting() -> bool:  # its task is stored: it holds the slot
            return bool((await alice.get("/v1/tasks")).json()["items"])

        await wait_for_async(first_is_waiting, timeout=5, message="the first wait to begin")
        second = await alice.post("/v1/tasks", params={"wait": 1}, json={"task_type": "diag.noop"})
        plain = await alice.post("/v1/tasks", json={"task_type": "diag.noop"})
        first = await waiting
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "too_many_requests"
    assert plain.status_code == 202
    assert first.status_code == 202  # nothing runs tasks here: it waited, then answered


async def test_an_unauthenticated_request_never_reaches_a_slot(api: RunningApi) -> None:
    async with api.client() as c:
        response = await c.get("/v1/tasks/x/stream", headers=auth("nope"))
    assert response.status_code == 401
