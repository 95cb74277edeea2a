"""One job at a time on a checkpoint or an output: a lock file beside it.

``PATH.daskgmm-lock`` holds the holder's host, process id, a random token and a
heartbeat time, rewritten every :data:`HEARTBEAT_SECONDS` by a thread of the
holder. A second job finds it and is refused with one line. A lock whose holder
is gone (same host and the process no longer exists, or no heartbeat for
:data:`STALE_SECONDS`, the case of another host) is taken over by the next run,
so a killed job's successor does not need a person to clean up.

Locally the lock is created with ``O_CREAT | O_EXCL`` (one creator wins) and a
stale one is moved aside by ``rename`` before a new one is created. Object
stores have no exclusive create: there the lock is written, then read back after
a pause, and the job proceeds only if it still holds it. That is best effort: two
jobs started within the pause of each other can both proceed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ._checkpoint import RefusedError, _aside, _remove_litter, replace_file

__all__ = ["JobLock"]

logger = logging.getLogger(__name__)

#: How often the holder rewrites its heartbeat.
HEARTBEAT_SECONDS = 10.0
#: A lock without a heartbeat for this long belongs to a job that is gone.
STALE_SECONDS = 60.0
_SUFFIX = ".daskgmm-lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class JobLock:
    """An exclusive lock on a checkpoint folder or an output store, as a context manager.

    Parameters
    ----------
    url : str
        The checkpoint or output (resolved local path or fsspec URL); the lock
        file is ``url + '.daskgmm-lock'``.
    what : str
        How messages name it, e.g. ``'Checkpoint'``.

    Raises
    ------
    RefusedError
        On entry, when another live job holds the lock.
    """

    def __init__(self, url: str, what: str):
        self.url, self.what = url.rstrip("/"), what
        self.fs, path = fsspec.core.url_to_fs(self.url + _SUFFIX)
        self.path = path
        self.local = isinstance(self.fs, LocalFileSystem)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- contents
    def _document(self) -> bytes:
        return json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "token": self.token,
                "heartbeat": time.time(),
            }
        ).encode()

    def _holder(self) -> dict[str, Any] | None:
        """The lock's contents; None if there is none; ``{}`` if unreadable."""
        try:
            with self.fs.open(self.path, "rb") as f:
                data = json.loads(f.read(1 << 16).decode("utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict[str, Any]) -> bool:
        if not holder:  # unreadable: a holder killed while writing it, if it is old
            try:
                mtime = self.fs.modified(self.path).timestamp()
            except (OSError, NotImplementedError, AttributeError):
                return True
            return time.time() - mtime > STALE_SECONDS
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if not _alive(holder["pid"]):
                return True
        heartbeat = holder.get("heartbeat")
        return not isinstance(heartbeat, (int, float)) or time.time() - heartbeat > STALE_SECONDS

    # --------------------------------------------------------------- acquire
    def _create(self) -> bool:
        """Create the lock if there is none; whether this job now holds it."""
        if self.local:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._document())
                f.flush()
                os.fsync(f.fileno())
            return True
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, self._document())
        time.sleep(1.0)  # let a concurrent writer's object land, then see who won
        return (self._holder() or {}).get("token") == self.token

    def _remove_stale(self) -> None:
        if self.local:
            aside = f"{self.path}.{uuid.uuid4().hex[:8]}.stale"
            with contextlib.suppress(FileNotFoundError):
                os.rename(self.path, aside)  # of two successors, one moves it
                os.remove(aside)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path)

    def __enter__(self) -> JobLock:
        for _ in range(3):
            if self._create():
                break
            holder = self._holder()
            if holder is None:
                continue  # released meanwhile
            if not self._stale(holder):
                age = time.time() - holder.get("heartbeat", time.time())
                raise RefusedError(
                    f"{self.what} {self.url!r} is in use by another daskgmm job (host "
                    f"{holder.get('host')!r}, pid {holder.get('pid')}, heartbeat {age:.0f} s "
                    f"ago); wait for it to finish. Its lock {self.path!r} is taken over once "
                    f"that job is gone ({STALE_SECONDS:.0f} s without a heartbeat)."
                )
            logger.warning(
                "Taking over the lock of %s from a job that is gone (host %s, pid %s).",
                self.url,
                holder.get("host"),
                holder.get("pid"),
            )
            self._remove_stale()
        else:
            raise RefusedError(f"{self.what} {self.url!r}: could not take its lock {self.path!r}.")
        base = os.path.basename(self.path)  # heartbeats and takeovers a kill cut short
        _remove_litter(self.fs, os.path.dirname(self.path) or ".", _aside(base, "tmp|stale"))
        self._thread = threading.Thread(target=self._beat, name="daskgmm-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            if (self._holder() or {}).get("token") != self.token:
                logger.error("The lock of %s was taken by another job.", self.url)
                return
            replace_file(self.fs, self.path, self._document())

    # --------------------------------------------------------------- release
    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (self._holder() or {}).get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path)
