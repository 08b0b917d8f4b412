"""What used to wedge a day, or mislead: vanished archives and claim folders, hard links and
symbolic links to outside files, a marker of a marker arriving first, a small volume, and an
oversized marker. Each ends in one verdict with its own reason, and no rerun repeats it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from delivery_kit import deliver, sha256, tar_bytes, wav, write_then_rename
from earmark.config import Settings
from earmark.day.status import quarantine_report
from earmark.ingest.deliveries import register_archives
from earmark.ingest.destination import InsufficientDisk
from earmark.ingest.unpack import unpack_archive

DAY = "2026-11-29"


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = replace(Settings.from_env(), data_root=tmp_path / "data", max_audio_seconds=60)
    s.ensure_layout()
    return s


def _verdicts(store) -> dict[str, tuple[str, str | None]]:
    return {
        r.name: (r.status, r.reason)
        for r in store.rows("SELECT name, status, reason FROM deliveries ORDER BY id")
    }


def _links_under(root: Path) -> list[Path]:
    return [
        p for p in root.rglob("*") if p.is_symlink() or (p.is_file() and p.lstat().st_nlink > 1)
    ]


@pytest.mark.parametrize("gone", ["archive", "claim folder"])
def test_a_vanished_archive_is_a_verdict_not_a_retry_loop(settings, store, gone):
    deliver(settings.incoming, "day.tar", tar_bytes({"rec/a.wav": wav(0.2)}))
    [archive_id] = register_archives(settings, store, DAY)
    archive = Path(store.scalar("SELECT path FROM archives"))
    if gone == "archive":
        archive.unlink()
    else:
        shutil.rmtree(archive.parent)

    summary = unpack_archive(settings, store, archive_id)
    assert summary.status == "rejected" and summary.error.startswith("vanished:")
    assert ("claimed folder is gone" in summary.error) == (gone == "claim folder")
    assert register_archives(settings, store, DAY) == []  # nothing left to try again
    assert unpack_archive(settings, store, archive_id).status == "rejected"  # a retry: the same
    [entry] = quarantine_report(store, DAY)
    assert (entry["kind"], entry["item"], entry["reason"].split(":")[0]) == (
        "archive",
        "day.tar",
        "vanished",
    )
    assert not list(settings.claimed.iterdir())


def test_a_hard_link_to_an_outside_file_is_refused_and_removed(settings, store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = tar_bytes({"rec/secret.wav": wav(0.2)})
    (outside / "other.tar").write_bytes(data)
    os.link(outside / "other.tar", settings.incoming / "linked.tar")
    write_then_rename(
        settings.incoming / "linked.tar.sha256", f"{sha256(data)}  linked.tar\n".encode()
    )
    (outside / "m.sha256").write_text(f"{sha256(data)}  m.tar\n")
    deliver(settings.incoming, "m.tar", data, marker=None)
    os.link(outside / "m.sha256", settings.incoming / "m.tar.sha256")  # the marker linked

    assert register_archives(settings, store, DAY) == []
    verdicts = _verdicts(store)
    assert verdicts["linked.tar"][0] == verdicts["m.tar"][0] == "rejected"
    assert verdicts["linked.tar"][1].startswith("hard_link: linked.tar has 2 hard links")
    assert verdicts["m.tar"][1].startswith("hard_link: the marker of m.tar has 2 hard links")
    assert store.scalar("SELECT count(*) FROM archives") == 0  # nothing extracted or screened
    assert _links_under(settings.data_root) == []
    assert (outside / "other.tar").read_bytes() == data  # the outside file untouched
    assert (outside / "other.tar").stat().st_nlink == 1
    reason = (settings.quarantine / DAY).glob("delivery-*.reason.json")
    assert any("links_removed" in p.read_text() for p in reason)


def test_a_rejected_symlink_is_recorded_with_its_target_and_not_kept(settings, store, tmp_path):
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    (settings.incoming / "evil.tar").symlink_to(target)
    folder = settings.incoming / "folder.tar"
    folder.mkdir()
    (folder / "inner").symlink_to("/etc")
    assert register_archives(settings, store, DAY) == []
    verdicts = _verdicts(store)
    assert verdicts["evil.tar"] == (
        "rejected",
        f"not_a_regular_file: evil.tar is a symbolic link to {target}",
    )
    assert verdicts["folder.tar"][1] == "not_a_regular_file: folder.tar is a directory"
    assert _links_under(settings.data_root) == []
    assert target.read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("together", [True, False])
def test_a_marker_of_a_marker_never_takes_the_real_marker(settings, store, together):
    """``a.tar.sha256.sha256`` arrives first (in the same run as the real delivery, or a run
    before it): it is a rejected delivery of its own, and a.tar is screened."""
    data = tar_bytes({"rec/a.wav": wav(0.2)})
    write_then_rename(settings.incoming / "a.tar.sha256.sha256", b"0" * 64 + b"\n")
    if not together:
        assert register_archives(settings, store, DAY) == []
    deliver(settings.incoming, "a.tar", data)
    [archive_id] = register_archives(settings, store, DAY)
    assert unpack_archive(settings, store, archive_id).status == "unpacked"
    verdicts = _verdicts(store)
    assert verdicts["a.tar"] == ("registered", None)
    assert verdicts["a.tar.sha256"] == (
        "rejected",
        "unsupported_suffix: a.tar.sha256.sha256 is a marker of a marker",
    )
    assert not list(settings.incoming.iterdir()) and not list(settings.claimed.iterdir())


def test_an_oversized_marker_says_so(settings, store):
    data = tar_bytes({"rec/a.wav": wav(0.2)})
    write_then_rename(settings.incoming / "big.tar", data)
    marker = f"{sha256(data)}  big.tar\n" + "# padding\n" * 500
    write_then_rename(settings.incoming / "big.tar.sha256", marker.encode())
    register_archives(settings, store, DAY)
    assert _verdicts(store)["big.tar"] == (
        "rejected",
        "bad_marker: the marker of big.tar is over 4096 bytes: a marker holds one sha256 digest",
    )


@contextlib.contextmanager
def _small_volume(path: Path, megabytes: int, monkeypatch) -> Iterator[None]:
    """A real tmpfs of ``megabytes`` at ``path`` when root (as CI runs); otherwise the data
    volume reports that little free space."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        real = shutil.disk_usage
        monkeypatch.setattr(
            shutil, "disk_usage", lambda p: real(p)._replace(free=megabytes * 1024**2)
        )
        yield
        return
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)], check=True
    )
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_small_volume_takes_a_small_archive_once_the_margin_fits_it(store, tmp_path, monkeypatch):
    root = tmp_path / "small"
    with _small_volume(root, 8, monkeypatch):
        settings = replace(Settings.from_env(), data_root=root, max_audio_seconds=60)
        settings.ensure_layout()
        deliver(settings.incoming, "small.tar", tar_bytes({"rec/a.wav": wav(0.5)}))
        [archive_id] = register_archives(settings, store, DAY)
        with pytest.raises(InsufficientDisk, match="EARMARK_FREE_DISK_MARGIN_MB") as refused:
            unpack_archive(settings, store, archive_id)  # the default margin: 1 GiB
        assert refused.value.margin == 1024**3
        assert store.scalar("SELECT status FROM archives") == "registered"  # kept for a rerun
        small = replace(settings, free_disk_margin_mb=1, free_disk_margin_share=0.1)
        assert unpack_archive(small, store, archive_id).status == "unpacked"
