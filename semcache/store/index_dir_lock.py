"""Which process writes a data dir's vector index files: the one holding ``owner.lock``.

Several processes may open one SQLite + FAISS data dir at once: `semcache import` beside a
running server, a second server, `semcache db` commands. SQLite serialises their writes; the
index files have no such guard, and two processes rewriting the same snapshot or appending to
the same log would each write a state the other's files contradict. So the first process to
take the lock owns the files (it loads, rewrites and deletes them); every other one loads them
without changing them, keeps its indexes in memory only and, like the owner, picks up the rows
the others commit from SQL (``sql_sync.ForeignRows``).

The lock is ``flock`` on an open file: the kernel drops it when its holder exits, even by a
crash or SIGKILL, so a stale lock never stops the next start.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

__all__ = ["IndexDirLock"]

LOCK_NAME = "owner.lock"


class IndexDirLock:
    """The held lock on ``<directory>/owner.lock``; ``release`` (or process exit) frees it."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle: IO[str] | None = handle

    @classmethod
    def try_acquire(cls, directory: Path) -> IndexDirLock | None:
        """The lock if no other process (or other open store in this one) holds it."""
        directory.mkdir(parents=True, exist_ok=True)
        # "a": never truncate the holder's pid before the lock is ours.
        handle = open(directory / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 - held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        except OSError:
            handle.close()
            raise
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        except OSError:
            handle.close()  # and with it the lock
            raise
        return cls(handle)

    @staticmethod
    def holder(directory: Path) -> str:
        """The holder's pid as it wrote it, for messages ("pid 123"), or "another process"."""
        try:
            pid = (directory / LOCK_NAME).read_text(encoding="utf-8").strip()
        except OSError:
            pid = ""
        return f"pid {pid}" if pid.isdigit() else "another process"

    def release(self) -> None:
        if self._handle is not None:
            # Unlock before closing: a child forked meanwhile (any subprocess, between its fork
            # and its exec) shares the open file, and closing only our descriptor would leave
            # the lock held until the child lets go. LOCK_UN frees it for every copy. The file
            # stays, for the next holder. (A child forked without exec that called release
            # would free its parent's lock too; nothing in semcache forks so.)
            try:
                fcntl.flock(self._handle, fcntl.LOCK_UN)
            finally:
                self._handle.close()
                self._handle = None
