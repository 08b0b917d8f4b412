"""The reliability cases, end to end through intake: the end state in the results DB and on
disk for each (nothing outside the data root, no temp leftovers, the reason recorded)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from earmark.config import Settings
from earmark.ingest.deliveries import register_archives
from earmark.ingest.extract import ExtractLimits
from earmark.ingest.incoming import sha256_file
from earmark.ingest.unpack import unpack_archive

DAY = "2026-11-29"
SR = 16_000


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = replace(Settings.from_env(), data_root=tmp_path / "box" / "data", max_audio_seconds=60)
    s.ensure_layout()
    return s


def _wav(
    seconds: float = 1.0,
    sr: int = SR,
    channels: int = 1,
    subtype: str = "PCM_16",
    fmt: str = "WAV",
    value: float | None = None,
) -> bytes:
    frames = int(seconds * sr)
    t = np.arange(frames) / sr
    data = 0.3 * np.sin(2 * np.pi * 220 * t)
    if value is not None:
        data[: max(1, frames // 2)] = value
    data = np.repeat(data[:, None], channels, axis=1)
    out = io.BytesIO()
    sf.write(out, data, sr, subtype=subtype, format=fmt)
    return out.getvalue()


def _member(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def _deliver(
    settings: Settings,
    name: str,
    build: Callable[[tarfile.TarFile], None],
    mode: str = "w",
    cut: int | None = None,
) -> Path:
    archive = settings.incoming / name
    with tarfile.open(archive, mode) as tar:
        build(tar)
    if cut is not None:
        data = archive.read_bytes()
        archive.write_bytes(data[:cut] if cut > 0 else data[: len(data) + cut])
    Path(f"{archive}.sha256").write_text(f"{sha256_file(archive)}  {name}\n")
    return archive


def _assert_contained(settings: Settings) -> None:
    root = settings.data_root
    outside = [p for p in root.parent.iterdir() if p != root]
    assert outside == [], f"written outside the data root: {outside}"
    leftovers = [p for p in root.rglob("*") if p.name.startswith((".tmp-", ".old-"))]
    assert leftovers == []


def _good(tar: tarfile.TarFile) -> None:
    _member(tar, "ok.wav", _wav())


BAD_ARCHIVES = {
    "traversal": (
        lambda t: (_good(t), _member(t, "../../escape.wav", b"RIFF")),
        "path_traversal",
        {},
    ),
    "absolute": (lambda t: _member(t, "/tmp/earmark-abs.wav", b"RIFF"), "absolute_path", {}),
    "symlink": (
        lambda t: (_good(t), _member(t, "link", type=tarfile.SYMTYPE, linkname="/etc")),
        "unsafe_member_type",
        {},
    ),
    "hardlink": (
        lambda t: _member(t, "hl", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
        "unsafe_member_type",
        {},
    ),
    "device": (
        lambda t: _member(t, "dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        "unsafe_member_type",
        {},
    ),
    "fifo": (lambda t: _member(t, "pipe", type=tarfile.FIFOTYPE), "unsafe_member_type", {}),
    "bypass-symlink-then-file": (
        lambda t: (
            _member(t, "d", type=tarfile.SYMTYPE, linkname="/tmp"),
            _member(t, "d/owned.wav", b"x"),
        ),
        "unsafe_member_type",
        {},
    ),
    "too-many-members": (
        lambda t: [_member(t, f"f{i}.wav", b"x") for i in range(5)],
        "too_many_members",
        {"max_members": 4},
    ),
    "member-too-large": (
        lambda t: _member(t, "big.wav", b"x" * 4096),
        "member_too_large",
        {"max_member_bytes": 1024},
    ),
    "over-quota": (
        lambda t: [_member(t, f"f{i}.wav", b"x" * 900) for i in range(3)],
        "archive_too_large",
        {"max_total_bytes": 2000},
    ),
    "duplicate-names": (
        lambda t: (_member(t, "a.wav", _wav()), _member(t, "a.wav", _wav(2))),
        "duplicate_member",
        {},
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_ARCHIVES))
def test_bad_archive_rejected_with_reason(settings, store, kind):
    build, code, limits = BAD_ARCHIVES[kind]
    _deliver(settings, f"{kind}.tar", build)
    [archive_id] = register_archives(settings, store, DAY)
    summary = unpack_archive(
        settings,
        store,
        archive_id,
        limits=replace(ExtractLimits(), free_disk_margin_bytes=0, **limits),
    )
    assert summary.status == "rejected"
    row = store.rows("SELECT status, error, path FROM archives WHERE id = :i", i=archive_id)[0]
    assert row.status == "rejected" and row.error.startswith(code), row.error
    home = settings.quarantine / DAY / f"archive-{archive_id}"
    assert Path(row.path) == home / f"{kind}.tar"
    assert Path(row.path).exists() and (home / f"{kind}.tar.sha256").exists()
    assert code in (home.parent / f"archive-{archive_id}.reason.json").read_text()
    assert store.scalar("SELECT count(*) FROM audio_files") == 0
    assert [p for p in settings.audio.rglob("*") if not p.is_dir()] == []
    assert not Path("/tmp/earmark-abs.wav").exists()
    assert not list(settings.incoming.iterdir())
    assert not list(settings.claimed.iterdir())
    _assert_contained(settings)


def _two_members(t: tarfile.TarFile) -> None:
    _member(t, "a.wav", _wav(1.0))
    _member(t, "b.wav", _wav(1.0))


@pytest.mark.parametrize(
    ("name", "mode", "cut", "codes"),
    [
        ("cut-inside-member.tar", "w", 20_000, {"truncated"}),
        ("cut-inside-member.tar.gz", "w:gz", -2000, {"truncated", "corrupt"}),
        ("cut-at-member-boundary.tar", "w", None, {"truncated"}),
    ],
)
def test_truncated_archive_with_matching_marker_is_rejected(
    settings, store, name, mode, cut, codes
):
    if "boundary" in name:  # right after a.wav: its 512-byte header, its data padded to 512
        cut = 512 + (len(_wav(1.0)) + 511) // 512 * 512
    _deliver(settings, name, _two_members, mode=mode, cut=cut)
    [archive_id] = register_archives(settings, store, DAY)
    unpack_archive(settings, store, archive_id)
    row = store.rows("SELECT status, error FROM archives WHERE id = :i", i=archive_id)[0]
    assert row.status == "rejected"
    assert row.error.split(":")[0] in codes, row.error
    assert store.scalar("SELECT count(*) FROM audio_files") == 0
    _assert_contained(settings)


def test_truncated_in_transit_caught_by_checksum(settings, store):
    archive = _deliver(settings, "cut.tar", _two_members)
    archive.write_bytes(archive.read_bytes()[:-1536])  # cut after the marker was written
    [archive_id] = register_archives(settings, store, DAY)
    assert unpack_archive(settings, store, archive_id).status == "rejected"
    assert store.scalar("SELECT count(*) FROM archives") == 0  # the bytes are not barred
    row = store.rows("SELECT id, status, reason, path FROM deliveries")[0]
    assert row.status == "rejected" and row.reason.startswith("checksum_mismatch")
    assert Path(row.path) == settings.quarantine / DAY / f"delivery-{row.id}"
    assert (Path(row.path) / "cut.tar").exists()


def _flac_named_wav() -> bytes:
    return _wav(fmt="FLAC")


def _short_data_wav() -> bytes:
    return _wav(1.0)[:-8000]


def _truncated_flac() -> bytes:
    data = _wav(2.0, fmt="FLAC")
    return data[: len(data) // 2]


BAD_FILES = {
    "empty.wav": (b"", {"unreadable", "too_short"}),
    "garbage.wav": (bytes(range(256)) * 8, {"unreadable"}),
    "text.wav": (b"hello, this is not audio\n" * 20, {"unreadable"}),
    "flac-named.wav": (None, {"format_mismatch"}),
    "short-data.wav": (None, {"header_data_mismatch"}),
    "cut.flac": (None, {"truncated", "unreadable"}),
    "zero-frames.wav": (_wav(0.0), {"empty"}),
    "nan.wav": (_wav(subtype="FLOAT", value=float("nan")), {"non_finite"}),
    "seven-hz.wav": (_wav(2.0, sr=7), {"bad_sample_rate"}),
    "six-channels.wav": (_wav(channels=6), {"too_many_channels"}),
    "too-long.wav": (_wav(61.0, sr=8000), {"too_long"}),
    "song.mp3": (b"ID3" + b"\0" * 100, {"unsupported_extension"}),
}
_BUILT = {
    "flac-named.wav": _flac_named_wav,
    "short-data.wav": _short_data_wav,
    "cut.flac": _truncated_flac,
}


def test_bad_files_quarantined_rest_processed(settings, store):
    contents = {
        name: data if data is not None else _BUILT[name]() for name, (data, _) in BAD_FILES.items()
    }

    def build(t: tarfile.TarFile) -> None:
        _member(t, "good/speech.wav", _wav(2.0))
        _member(t, "good/quiet.wav", _silence())
        for name, data in contents.items():
            _member(t, f"bad/{name}", data)

    _deliver(settings, "mixed.tar", build)
    [archive_id] = register_archives(settings, store, DAY)
    summary = unpack_archive(settings, store, archive_id)
    assert (summary.ready, summary.quarantined) == (2, len(BAD_FILES))
    rows = {
        r.member_path: r
        for r in store.rows("SELECT member_path, status, error, path, silent FROM audio_files")
    }
    for name, (_, codes) in BAD_FILES.items():
        row = rows[f"bad/{name}"]
        assert row.status == "quarantined", name
        assert row.error.split(":")[0] in codes, (name, row.error)
        assert (
            Path(row.path)
            == settings.quarantine / DAY / f"archive-{archive_id}" / "files" / "bad" / name
        )
        assert Path(row.path).exists()
    assert rows["good/speech.wav"].status == "ready" and rows["good/speech.wav"].silent == 0
    assert rows["good/quiet.wav"].status == "ready" and rows["good/quiet.wav"].silent == 1
    assert Path(rows["good/speech.wav"].path).exists()
    assert (settings.quarantine / DAY / f"archive-{archive_id}.reason.json").exists()
    _assert_contained(settings)


def _silence() -> bytes:
    out = io.BytesIO()
    sf.write(out, np.zeros(SR), SR, subtype="PCM_16", format="WAV")
    return out.getvalue()


def test_task_rerun_and_redelivery_leave_one_row_each(settings, store):
    archive = _deliver(settings, "day.tar", _two_members)
    copy = archive.read_bytes()
    [archive_id] = register_archives(settings, store, DAY)
    assert register_archives(settings, store, DAY) == [archive_id]  # retried registration
    unpack_archive(settings, store, archive_id)
    unpack_archive(settings, store, archive_id)  # redelivered unpack
    (settings.incoming / "day-again.tar").write_bytes(copy)
    (settings.incoming / "day-again.tar.sha256").write_text(
        sha256_file(settings.processed / DAY / f"archive-{archive_id}" / "day.tar")
    )
    assert register_archives(settings, store, DAY) == []
    assert store.scalar("SELECT count(*) FROM archives") == 1
    assert [
        tuple(r) for r in store.rows("SELECT name, status, archive_id FROM deliveries ORDER BY id")
    ] == [("day.tar", "registered", archive_id), ("day-again.tar", "duplicate", archive_id)]
    assert store.scalar("SELECT count(*) FROM audio_files") == 2
    _assert_contained(settings)
