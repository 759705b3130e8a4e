"""API keys: from ``TASKCORE_API_KEYS`` and, reloadable, ``TASKCORE_API_KEYS_FILE``.

Keys are held as SHA-256 digests (a file may give them so, as ``"sha256:<hex>"``), and a
lookup compares the candidate's digest with every key's in constant time, so neither
which key matched nor how long the keys are shows in the time taken. Keys never reach a
log line.

The file is re-read when its stat (mtime, size, inode) changes, polled every
``TASKCORE_API_KEYS_POLL_SECONDS`` (1 s), and on SIGHUP. A file that cannot be read or
is not valid keeps the last good keys and logs one sentence saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import signal
from collections.abc import Mapping

from pydantic import TypeAdapter, ValidationError
from taskcore.settings import ApiKey

from taskcore_api.identity.principal import Principal

log = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"
_FILE_SHAPE = TypeAdapter(dict[str, ApiKey])


class InvalidKeys(ValueError):
    """The keys are not in the expected shape (the message says where)."""


def digest_of(key: str) -> bytes:
    """A configured key's digest: given (``sha256:<hex>``) or computed."""
    if key.startswith(HASH_PREFIX):
        hexdigest = key.removeprefix(HASH_PREFIX).strip().lower()
        try:
            raw = bytes.fromhex(hexdigest)
        except ValueError:
            raw = b""
        if len(raw) != hashlib.sha256().digest_size:
            raise InvalidKeys("a sha256: key must be followed by 64 hexadecimal digits")
        return raw
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The keys in force. ``replace`` swaps them atomically (one reference)."""

    def __init__(self, keys: Mapping[str, ApiKey]) -> None:
        self._keys = _digests(keys)

    def replace(self, keys: Mapping[str, ApiKey]) -> None:
        self._keys = _digests(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, presented: str) -> Principal | None:
        candidate = hashlib.sha256(presented.encode()).digest()
        found: ApiKey | None = None
        for digest, value in self._keys:  # every key, whatever matched: constant time
            if hmac.compare_digest(digest, candidate):
                found = value
        if found is None:
            return None
        return Principal(
            user_id=found.user_id,
            role=found.role,
            tier=found.tier,
            teams=frozenset(found.teams),
            via="api_key",
        )


def _digests(keys: Mapping[str, ApiKey]) -> list[tuple[bytes, ApiKey]]:
    return [(digest_of(k), v) for k, v in keys.items()]


def read_key_file(path: str) -> dict[str, ApiKey]:
    """The file's keys, or ``InvalidKeys``/``OSError`` saying what is wrong with it."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        keys = _FILE_SHAPE.validate_python(json.loads(text))
    except json.JSONDecodeError as exc:
        raise InvalidKeys(f"it is not valid JSON (line {exc.lineno})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "the top level"
        raise InvalidKeys(f"{where}: {first['msg']}") from None
    for key in keys:
        digest_of(key)  # a malformed sha256: key is refused with the whole file
    return keys


class KeyFileWatcher:
    """Keeps ``ring`` equal to the fixed keys plus the file's last good keys."""

    def __init__(self, ring: KeyRing, fixed: Mapping[str, ApiKey], path: str, poll_s: float):
        self.ring = ring
        self.fixed = dict(fixed)
        self.path = path
        self.poll_s = poll_s
        self._seen: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def reload(self) -> bool:
        """Read the file now; whether the keys in force are the file's."""
        try:
            self._seen = None  # stays None while the file cannot be seen: one log line
            self._seen = _stat(self.path)
            keys = read_key_file(self.path)
        except (OSError, InvalidKeys) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.error(
                "The API keys file %s was not loaded (%s); the last good keys stay in force.",
                self.path,
                reason,
            )
            return False
        self.ring.replace({**self.fixed, **keys})
        log.info("Loaded %d API keys from %s.", len(keys), self.path)
        return True

    def start(self) -> None:
        self.reload()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._task = asyncio.create_task(self._poll(), name="api-keys-file")

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)  # a stat per period: cheap
            try:
                changed = _stat(self.path) != self._seen
            except OSError:
                changed = self._seen is not None  # it went away: say so once
            if changed:
                self.reload()


def _stat(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino
