"""generate_day: deterministic archives, markers written last, audio that passes validation."""

import datetime as dt
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from earmark.ingest.extract import ExtractLimits, safe_extract
from earmark.ingest.validate import validate_audio
from earmark_dev.sampledata import generate_day, main, marker_path

DAY = dt.date(2026, 11, 29)
NO_MARGIN = ExtractLimits(free_disk_margin_bytes=0)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    incoming = tmp_path_factory.mktemp("incoming")
    return incoming, generate_day(
        incoming, DAY, archives=2, files_per_archive=3, minutes=1.0, seed=7
    )


@pytest.fixture(scope="module")
def extracted(day: tuple[Path, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    _, archives = day
    root = tmp_path_factory.mktemp("extracted")
    files = []
    for archive in archives:
        result = safe_extract(archive, root / archive.name.split(".")[0], NO_MARGIN)
        files += [result.directory / m.path for m in result.members]
    return files


def test_writes_named_archives_and_markers_only(day: tuple[Path, list[Path]]) -> None:
    incoming, archives = day
    assert [a.name for a in archives] == ["2026-11-29-batch-01.tar", "2026-11-29-batch-02.tar"]
    assert sorted(p.name for p in incoming.iterdir()) == [
        "2026-11-29-batch-01.tar",
        "2026-11-29-batch-01.tar.sha256",
        "2026-11-29-batch-02.tar",
        "2026-11-29-batch-02.tar.sha256",
    ]  # no .partial leftovers


def test_marker_holds_the_archive_sha256_and_is_written_after_it(
    day: tuple[Path, list[Path]],
) -> None:
    _, archives = day
    for archive in archives:
        marker = marker_path(archive)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        assert marker.read_text() == f"{digest}  {archive.name}\n"
        assert re.fullmatch(r"[0-9a-f]{64}  \S+\n", marker.read_text())
        assert marker.stat().st_mtime_ns >= archive.stat().st_mtime_ns


def test_same_day_and_seed_gives_identical_bytes(
    day: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    incoming, _ = day
    again = tmp_path / "again"
    generate_day(again, DAY, archives=2, files_per_archive=3, minutes=1.0, seed=7)
    assert snapshot(again) == snapshot(incoming)


def test_other_seed_or_day_differs(day: tuple[Path, list[Path]], tmp_path: Path) -> None:
    incoming, _ = day
    reference = (incoming / "2026-11-29-batch-01.tar").read_bytes()
    [other_seed] = generate_day(
        tmp_path / "s", DAY, archives=1, files_per_archive=3, minutes=1.0, seed=8
    )
    assert other_seed.read_bytes() != reference
    [other_day] = generate_day(
        tmp_path / "d",
        DAY + dt.timedelta(days=1),
        archives=1,
        files_per_archive=3,
        minutes=1.0,
        seed=7,
    )
    assert other_day.name.startswith("2026-11-30-batch-01")


def test_regenerating_in_place_is_idempotent(tmp_path: Path) -> None:
    generate_day(tmp_path, DAY, archives=1, files_per_archive=2, minutes=0.2, seed=1)
    first = snapshot(tmp_path)
    generate_day(tmp_path, DAY, archives=1, files_per_archive=2, minutes=0.2, seed=1)
    assert snapshot(tmp_path) == first


def test_gzip_variant_is_deterministic_and_replaces_plain_tar(tmp_path: Path) -> None:
    generate_day(tmp_path / "a", DAY, archives=1, files_per_archive=2, minutes=0.2, seed=1)
    for folder in ("a", "b"):
        generate_day(
            tmp_path / folder,
            DAY,
            archives=1,
            files_per_archive=2,
            minutes=0.2,
            seed=1,
            compress=True,
        )
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert sorted(snapshot(tmp_path / "a")) == [
        "2026-11-29-batch-01.tar.gz",
        "2026-11-29-batch-01.tar.gz.sha256",
    ]
    raw = (tmp_path / "a" / "2026-11-29-batch-01.tar.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert not raw[3] & 0x08  # no embedded file name
    result = safe_extract(tmp_path / "a" / "2026-11-29-batch-01.tar.gz", tmp_path / "x", NO_MARGIN)
    assert len(result.members) == 2


def test_every_file_validates_and_durations_add_up(extracted: list[Path]) -> None:
    infos = [validate_audio(path) for path in extracted]
    assert len(infos) == 6
    assert sum(i.duration_s for i in infos) == pytest.approx(60.0, abs=0.1)
    assert not any(i.silent for i in infos)
    assert {i.format for i in infos} == {"WAV", "FLAC"}
    assert {i.channels for i in infos} == {1, 2}
    assert len({i.sample_rate for i in infos}) >= 3
    assert {p.suffix for p in extracted} == {".wav", ".flac"}
    for path, info in zip(extracted, infos, strict=True):
        assert sf.info(path).subtype == "PCM_16"
        assert (path.suffix == ".wav") == (info.format == "WAV")


def test_default_day_mixes_short_and_long_files(tmp_path: Path) -> None:
    archives = generate_day(tmp_path / "in", DAY, seed=3)  # 3 archives x 4 files, 2 minutes
    assert len(archives) == 3
    durations = []
    for archive in archives:
        result = safe_extract(archive, tmp_path / "out" / archive.stem, NO_MARGIN)
        assert len(result.members) == 4
        durations += [sf.info(result.directory / m.path).duration for m in result.members]
    assert sum(durations) == pytest.approx(120.0, abs=0.1)
    assert min(durations) < 10
    assert max(durations) > 30


def test_audio_is_speech_like_not_a_tone(extracted: list[Path]) -> None:
    path = max(extracted, key=lambda p: sf.info(p).duration)
    audio, sr = sf.read(path, always_2d=True)
    mono = audio[:, 0]
    frame = sr // 100  # 10 ms loudness frames
    rms = np.sqrt((mono[: len(mono) // frame * frame].reshape(-1, frame) ** 2).mean(axis=1))
    loud = rms > rms.max() * 10 ** (-30 / 20)
    assert 0.2 < loud.mean() < 0.9  # speech with pauses, not continuous sound
    # Syllable rhythm: most loudness fluctuation is at 2-8 Hz (the modulation spectrum).
    power = np.abs(np.fft.rfft(rms - rms.mean())) ** 2
    freqs = np.fft.rfftfreq(len(rms), 1 / 100)

    def band(lo: float, hi: float) -> float:
        return float(power[(freqs >= lo) & (freqs < hi)].sum())

    assert band(2, 8) > 0.4 * band(0.1, 30)
    # Harmonic-rich: no single frequency bin dominates (a sine would hold nearly all energy).
    spectrum = np.abs(np.fft.rfft(mono)) ** 2
    assert spectrum.max() / spectrum.sum() < 0.05


def test_cli_prints_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        str(tmp_path),
        "--date",
        "2026-11-29",
        "--archives",
        "2",
        "--files",
        "2",
        "--minutes",
        "0.2",
    ]
    assert main([*argv, "--seed", "4", "--gz"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "2026-11-29-batch-01.tar.gz" in lines[0]
    assert "sha256" in lines[0]


def test_module_entry_point(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "earmark_dev.sampledata",
            str(tmp_path),
            "--date",
            "2026-11-29",
            "--archives",
            "1",
            "--files",
            "1",
            "--minutes",
            "0.05",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "2026-11-29-batch-01.tar" in out.stdout
    assert (tmp_path / "2026-11-29-batch-01.tar.sha256").exists()


def test_too_little_audio_for_the_file_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too little"):
        generate_day(tmp_path, DAY, archives=3, files_per_archive=4, minutes=0.05)
    assert list(tmp_path.iterdir()) == []


def test_formats_can_be_restricted(tmp_path):
    import tarfile
    from datetime import date

    from earmark_dev.sampledata import generate_day

    [archive] = generate_day(
        tmp_path,
        date(2026, 11, 29),
        archives=1,
        files_per_archive=4,
        minutes=0.5,
        seed=3,
        formats=("WAV",),
    )
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    assert names and all(n.endswith(".wav") for n in names)
