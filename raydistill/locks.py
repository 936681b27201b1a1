"""Exclusive locks on files in a results folder, held with flock: the kernel drops a lock when its
holder dies (even on kill -9), so a stale lock is simply taken over by the next process."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raydistill.errors import ConfigError


class FileLock:
    """An exclusive, non-blocking lock; the file holds the holder's pid and host for the message
    a second process gets."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what
        self._fd: int | None = None

    def acquire(self) -> "FileLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(f"cannot create the lock file {self.path} ({err.strerror or err})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise ConfigError(f"{self.what} is already in use by {holder} (lock {self.path}); "
                              "wait for it to end or stop it, then run the same command again") from None
        except OSError as err:  # a file system without flock
            os.close(fd)
            raise ConfigError(f"cannot lock {self.path} ({err.strerror or err})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int, wait: float = 1.0) -> str:
        """The holder's line; it is written just after the holder takes the lock, so an empty
        file is read again for up to `wait` seconds."""
        deadline = time.monotonic() + wait
        while not (holder := os.pread(fd, 200, 0).decode(errors="replace").strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return holder or "another process"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """A blocking exclusive lock, for short critical sections (creating a store once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
