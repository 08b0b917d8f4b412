"""Peak host memory of a block of code, measured where Linux allows it and sampled where not."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from pathlib import Path


def _proc_status(name: str) -> int | None:
    """A ``/proc/self/status`` size in bytes (Linux), else None."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) * 1024
    return None


class HostPeak:
    """Peak resident memory of this process while the block runs, in bytes (``peak``), and
    its resident size when the block began (``start``).

    A thread samples the resident size every 2 ms (``/proc/self/statm`` kept open: 2 µs a
    read); where Linux lets the peak (VmHWM) be restarted at the block's start
    (``/proc/self/clear_refs``), VmHWM catches what falls between samples too. Where it does
    not (gVisor, say), VmHWM would be the whole process's peak, models built before included,
    so only the samples count.
    """

    def __enter__(self) -> HostPeak:
        self._fd = os.open("/proc/self/statm", os.O_RDONLY) if Path("/proc/self").is_dir() else -1
        self.start = self._rss()
        self._hwm = False
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
            hwm = _proc_status("VmHWM")
            self._hwm = hwm is not None and hwm <= self._rss() + (64 << 20)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="host-peak", daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        if self._fd < 0:  # no /proc: the process's peak is the best there is
            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        return int(os.pread(self._fd, 256, 0).split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        hwm = _proc_status("VmHWM") if self._hwm else None
        if hwm is not None:
            self.peak = max(self.peak, hwm)
        if self._fd >= 0:
            os.close(self._fd)
