"""Secrets never reach a log line: URL passwords, bearer credentials, keys and tokens are
replaced by *** by the filter every service's log handler carries."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from taskcore.observability import configure_logging, redact
from taskcore.settings import Settings

SECRETS = ["hunter2", "s3cr3t-key", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig", "sk-live-123"]


@pytest.fixture
def service_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_every_log_line_is_redacted_whatever_its_format(
    service_logging: None, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    configure_logging("api", Settings(log_format=log_format))
    log = logging.getLogger("taskcore.test")
    log.warning("Connecting to %s", "mongodb://admin:hunter2@db.internal:27017/tc")
    log.warning("Header was Authorization: Bearer %s", SECRETS[2])
    log.warning("GET /v1/tasks/x/stream?token=%s&a=1", SECRETS[2])
    log.warning("settings: %s", {"api_key": "s3cr3t-key", "OPENAI_API_KEY": "sk-live-123"})
    try:
        raise RuntimeError("failed with password=hunter2")
    except RuntimeError:
        log.exception("A request failed")
    err = capsys.readouterr().err
    assert "db.internal" in err  # the line is there, only the secret is gone
    assert "***" in err
    for secret in SECRETS:
        assert secret not in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("mongodb://u:p%40ss@h1,h2/db?x=1", "mongodb://u:***@h1,h2/db?x=1"),
        ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),
        (
            "no secret at 12:30 in https://example.com/a:b",
            "no secret at 12:30 in https://example.com/a:b",
        ),
        ('{"token": "abc"}', '{"token": "***"}'),
        ("TASKCORE_JWT_SECRET=abc def", "TASKCORE_JWT_SECRET=*** def"),
        ("usage prompt_tokens=12 max_tokens: 5", "usage prompt_tokens=12 max_tokens: 5"),
        ("access_token=abc refresh-token: xyz", "access_token=*** refresh-token: ***"),
    ],
)
def test_redaction_keeps_everything_but_the_secret(text: str, expected: str) -> None:
    assert redact(text) == expected
