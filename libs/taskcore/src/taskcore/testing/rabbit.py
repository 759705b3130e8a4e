"""A fresh RabbitMQ virtual host per test scope, so tests never share queues.

Through the management HTTP API when it answers: each ``rabbitmqctl`` call boots an
Erlang VM (about 0.7 s of CPU), and three per test were a large share of the suite's
time. ``rabbitmqctl`` stays the fallback for a broker without the management plugin.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

MANAGEMENT_URL = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
# The tests' broker user, from the same RABBITMQ_URL the tests connect with.
_BROKER = urlsplit(os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"))
USER = _BROKER.username or "guest"
_AUTH = "Basic " + base64.b64encode(f"{USER}:{_BROKER.password or 'guest'}".encode()).decode()


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


# The management listener comes back a little after AMQP when the fault tests restart
# the broker's application.
def _transient(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500
    return isinstance(exc, OSError)  # refused, reset, timed out (URLError is one)


@retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_delay(30),
    wait=wait_fixed(0.2),
    reraise=True,
)
def _api(method: str, path: str, body: dict[str, str] | None = None) -> None:
    request = urllib.request.Request(
        f"{MANAGEMENT_URL}/api/{path}",
        data=json.dumps(body or {}).encode() if method == "PUT" else None,
        method=method,
        headers={"Authorization": _AUTH, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


@functools.cache
def _api_answers() -> bool:
    try:
        request = urllib.request.Request(
            f"{MANAGEMENT_URL}/api/overview", headers={"Authorization": _AUTH}
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def create_vhost(prefix: str = "tc-test") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    if _api_answers():
        _api("PUT", f"vhosts/{quote(name, safe='')}")
        _api(
            "PUT",
            f"permissions/{quote(name, safe='')}/{quote(USER, safe='')}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        return name
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, USER, ".*", ".*", ".*")
    return name


def delete_vhost(name: str) -> None:
    if _api_answers():
        _api("DELETE", f"vhosts/{quote(name, safe='')}")
        return
    _ctl("delete_vhost", name)


def url_for_vhost(base_url: str, vhost: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))
