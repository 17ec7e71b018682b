"""One bot process per SQLite file: an exclusive lock on `<database>.lock`.

Two bot processes on one database would both fetch updates for the same token (Telegram
answers them with 409 Conflict in turn) and both write the same conversations. The second
one to start finds the lock taken and stops with a line naming the first (its pid is written
in the file). `flock` locks belong to the open file: the system releases them however the
process ends, kill -9 included, so there is never a stale lock to clean up, and the file itself
is left in place (deleting it would let a third process lock a new file while the second still
holds the old one). The file is created private (0600) and never followed through a symlink.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from ...errors import AlreadyRunning
from .connection import prepare_directory


class ProcessLock:
    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> None:
        if self.database == Path(":memory:"):
            return
        prepare_directory(self.database)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise AlreadyRunning(
                f"Database {self.database.resolve()}: cannot create its lock file "
                f"{self.path.name} ({exc.strerror})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"Another bot process{f' (pid {holder})' if holder else ''} is already running "
                f"on the database {self.database.resolve()}; this one stops. Two processes "
                "would both fetch the same updates: stop the other one first."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # releases the lock


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return text
    return ""
