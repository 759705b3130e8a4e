"""Tracebacks are for admins: an admin's stream token, which travels in a URL, shows what
any user sees (the pure rule; the table test checks the routes)."""

from __future__ import annotations

import pytest
from taskcore_api import authz
from taskcore_api.identity.principal import Principal

ERROR = {"type": "ValueError", "message": "bad", "traceback": "Traceback (most recent call last)"}


@pytest.mark.parametrize(
    ("principal", "sees_traceback"),
    [
        (Principal("root", role="admin"), True),
        (Principal("root", role="admin", via="jwt"), True),
        (Principal("root", role="admin", via="stream_token", stream_task_id="t-1"), False),
        (Principal("alice"), False),
        (Principal("alice", via="stream_token", stream_task_id="t-1"), False),
    ],
)
def test_only_an_admins_own_credential_shows_a_traceback(
    principal: Principal, sees_traceback: bool
) -> None:
    shown = authz.shown_data(principal, {"error": ERROR})
    assert (shown["error"]["traceback"] is not None) is sees_traceback
    assert shown["error"]["message"] == "bad"
