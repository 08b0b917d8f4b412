"""Building blocks for intake tests: archives as bytes, deliveries into incoming/, and a way to
make a file unreadable even for root (whose CAP_DAC_OVERRIDE ignores file modes)."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf

T = TypeVar("T")
SR = 16_000


def wav(seconds: float = 0.3, freq: float = 220.0, sr: int = SR) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    out = io.BytesIO()
    sf.write(out, 0.3 * np.sin(2 * np.pi * freq * t), sr, subtype="PCM_16", format="WAV")
    return out.getvalue()


def tar_bytes(members: dict[str, bytes], gz: bool = False) -> bytes:
    """A deterministic tar (or tar.gz) of regular files."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    raw = out.getvalue()
    if gz:  # gzip stamps the time into its header: zero it so equal members give equal bytes
        raw = raw[:4] + b"\0\0\0\0" + raw[8:]
    return raw


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_then_rename(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    tmp.replace(path)


def deliver(incoming: Path, name: str, data: bytes, marker: str | None = "ok") -> None:
    """Archive first, then its marker (``ok``, ``typo``: one hex digit off, ``junk``)."""
    write_then_rename(incoming / name, data)
    if marker is None:
        return
    digest = sha256(data)
    text = {
        "ok": digest,
        "typo": digest[:-1] + ("0" if digest[-1] != "0" else "1"),
        "junk": "not a digest",
    }[marker]
    write_then_rename(incoming / f"{name}.sha256", f"{text}  {name}\n".encode())


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_CAP_V3 = 0x20080522
_DAC_CAPS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


@contextlib.contextmanager
def _thread_without_dac_override() -> Iterator[None]:
    """Linux capabilities are per thread: drop the two that let root read mode-000 files, in
    this thread (and threads it starts) only, and restore them after."""
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAP_V3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    saved = data[0].effective
    data[0].effective &= ~_DAC_CAPS
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


def run_bounded(fn: Callable[[], T], seconds: float, file_modes_bind_root: bool = True) -> T:
    """``fn()`` in its own thread, failing the test if it has not returned within ``seconds``
    (a FIFO opened for reading would block it for ever). As root, file modes bind it too."""
    result: dict[str, object] = {}

    def target() -> None:
        cm = (
            _thread_without_dac_override()
            if file_modes_bind_root and os.geteuid() == 0
            else contextlib.nullcontext()
        )
        try:
            with cm:
                result["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"still running after {seconds} s (blocked on something?)")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def plan_test_units(store: Any, run_id: str, day: str) -> list[int]:
    """The day's work units as the DAG plans them, with the tests' small fixed figures."""
    from earmark.gpu.work_units import plan_work_units

    return plan_work_units(
        store,
        run_id,
        day,
        reprocess=False,
        gpu_slots=1,
        target_unit_s=1200,
        assumed_realtime_x=100,
        max_files=100,
    )
