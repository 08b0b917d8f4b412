"""Processes the harness starts: each in its own process group, stopped as a group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    role: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; reap the leader."""
        if not self.alive():
            self.signal_group(signal.SIGKILL)  # leftovers of a group whose leader died
            return
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


def stop_all(procs: list[Proc], timeout: float = 15.0) -> None:
    """``Proc.stop`` for several at once: SIGTERM every group, then wait for all together."""
    import time

    for proc in procs:
        if proc.alive():
            proc.signal_group(signal.SIGCONT)
            proc.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(max(0.1, deadline - time.monotonic()))
    for proc in procs:
        proc.stop(timeout=0)


def descendants(pid: int) -> Iterator[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            yield child
            stack.append(child)
