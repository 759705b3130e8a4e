"""A service that cannot reach its store says so without printing the store's password."""

from __future__ import annotations

import os
import subprocess
import sys

from taskcore.standin import free_port


def test_an_unreachable_store_is_named_without_its_password(rabbitmq_url: str) -> None:
    url = f"mongodb://taskcore:hunter2-password@127.0.0.1:{free_port()}/taskcore"
    env = {**os.environ, "RABBITMQ_URL": rabbitmq_url, "MONGO_URL": url, "PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, "-m", "taskcore.cli", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "MongoDB is not reachable at mongodb://taskcore:***@127.0.0.1" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
