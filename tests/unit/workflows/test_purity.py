"""The workflow domain does no I/O: importing it loads no driver, broker or web library."""

from __future__ import annotations

import subprocess
import sys

IO_LIBRARIES = ("pymongo", "aio_pika", "aiormq", "fastapi", "starlette", "httpx", "motor")


def test_importing_the_workflows_package_loads_no_io_library() -> None:
    probe = (
        "import sys, taskcore.workflows; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({IO_LIBRARIES!r})))"
    )

    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )

    assert out.stdout.strip() == "[]"
