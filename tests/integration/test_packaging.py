"""What gets installed: the lock files match pyproject.toml, the runtime lock and the wheel
(so the Docker image) hold neither the MongoDB stand-in nor the test tools, and
`taskcore dev` says in one sentence what to install when the stand-in is missing."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from taskcore import dev

REPO = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
# Must be in the dev lock and never in the runtime one.
NOT_AT_RUNTIME = ("nx-27017", "pytest", "hypothesis", "mypy", "ruff", "schemathesis", "uv")


def pins(lock: Path) -> dict[str, str]:
    """name -> "version ; marker" and hashes, as pip reads the lock."""
    text = lock.read_text()
    blocks = re.split(r"\n(?=[a-z0-9])", text)
    found = {}
    for block in blocks:
        if match := re.match(r"([a-z0-9][a-z0-9._-]*)==(\S+)", block):
            hashes = sorted(re.findall(r"--hash=(\S+)", block))
            found[match[1]] = f"{match[2]} {' '.join(hashes)}"
    return found


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed (it comes with the dev extra: make install)")
    return found


def test_the_runtime_lock_leaves_out_the_stand_in_and_the_test_tools() -> None:
    runtime, development = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    assert "fastapi" in runtime
    assert "aio-pika" in runtime
    for name in NOT_AT_RUNTIME:
        assert name in development
        assert name not in runtime


def test_the_runtime_lock_pins_exactly_what_the_dev_lock_pins() -> None:
    # The image runs the versions CI tested, down to the file hashes.
    development = pins(DEV_LOCK)
    for name, pin in pins(RUNTIME_LOCK).items():
        assert development.get(name) == pin, name


def test_the_locks_are_what_make_lock_writes_from_pyproject(tmp_path: Path) -> None:
    # uv keeps the pins of an existing output file: a lock that still satisfies
    # pyproject.toml comes back unchanged, one that misses a change does not.
    flags = ["--quiet", "--universal", "--python-version", "3.11", "--generate-hashes"]
    dev_copy, runtime_copy = tmp_path / "dev.lock", tmp_path / "runtime.lock"
    shutil.copy(DEV_LOCK, dev_copy)
    shutil.copy(RUNTIME_LOCK, runtime_copy)
    for command in (
        [uv(), "pip", "compile", "pyproject.toml", "--extra", "dev", *flags, "-o", dev_copy],
        [uv(), "pip", "compile", "pyproject.toml", "-c", DEV_LOCK, *flags, "-o", runtime_copy],
    ):
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert pins(dev_copy) == pins(DEV_LOCK), "requirements-dev.lock is stale: run `make lock`"
    assert pins(runtime_copy) == pins(RUNTIME_LOCK), "requirements.lock is stale: run `make lock`"


def test_the_wheel_leaves_out_the_testing_helpers(tmp_path: Path) -> None:
    result = subprocess.run(
        [uv(), "build", "--wheel", "--out-dir", tmp_path, "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("taskcore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "taskcore/outbox.py" in names
    assert "taskcore_api/app.py" in names
    assert not [n for n in names if n.startswith("taskcore/testing/")]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [
        line
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    at_runtime = [r for r in requires if "extra ==" not in r]
    assert not [r for r in at_runtime if "nx-27017" in r or "pytest" in r]
    assert [r for r in requires if "nx-27017" in r and "extra == 'standin'" in r]


def test_taskcore_dev_names_what_to_install_when_the_stand_in_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An interpreter with no nx-27017 beside it, and none on PATH: a runtime-only install.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MONGO_URL", raising=False)
    monkeypatch.delenv("TASKCORE_MONGO_URL", raising=False)

    status = dev.run(argparse.Namespace(workdir=str(tmp_path / "dev"), executors=1))

    assert status == 2
    error = capsys.readouterr().err
    assert "stand-in (nx-27017) is not installed" in error
    assert "pip install 'taskcore[standin]'" in error
    assert error.count("\n") == 1  # one sentence, one line
