"""Ingest benchmark: the archive's checksum, safe extraction, full audio validation and
registration vs plain ``tar -xf``.

Generates one archive of about ``--gb`` GB of 16-bit WAV, times ``tar -xf`` of it as the baseline
and Earmark's ingest in the same run, best of ``--repeat``: registration (marker read, delivery
recorded) and the unpack (pre-scan, filtered extraction to a temp dir and rename with the sha256
computed from the same reads, streaming decode of every file, bulk registration in Postgres).
The archive is in the page cache for both, so the ratio compares work, not the disk. Then
measures the registration rate alone with synthetic rows. Prints figures; asserts nothing about
speed.

    python -m earmark_dev.bench.ingest --gb 1 --pg-url postgresql+psycopg://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import sqlalchemy as sa
from earmark.config import Settings
from earmark.ingest.deliveries import register_archives
from earmark.ingest.unpack import register_files, unpack_archive
from earmark.store.db import Store
from earmark_dev.postgres import admin_url, throwaway_database
from earmark_dev.sampledata import generate_day

# Mixed rates and channels of the sample generator average about 82 kB of WAV per second.
_WAV_BYTES_PER_SECOND = 82_000


@dataclass(frozen=True)
class IngestFigures:
    archive_bytes: int
    files: int
    tar_s: float
    register_s: float
    unpack_s: float
    registration_rows: int
    registration_s: float

    @property
    def ingest_s(self) -> float:
        return self.register_s + self.unpack_s

    @property
    def ratio(self) -> float:
        return self.ingest_s / self.tar_s

    def lines(self) -> list[str]:
        mb = self.archive_bytes / 1e6
        return [
            f"archive           {mb:,.0f} MB of 16-bit WAV, {self.files} files",
            f"tar -xf           {self.tar_s:6.2f} s   {mb / self.tar_s:8.1f} MB/s   (baseline)",
            f"earmark ingest    {self.ingest_s:6.2f} s   {mb / self.ingest_s:8.1f} MB/s"
            f"   = {self.ratio:.2f}x the time of tar -xf (goal <= 1.5x), with the sha256",
            f"  register        {self.register_s:6.2f} s   (claim, marker, delivery row)",
            f"  unpack          {self.unpack_s:6.2f} s   (sha256 while extracting, validation,"
            " file rows)",
            f"registration      {self.registration_rows / self.registration_s:,.0f} files/s"
            f"   ({self.registration_rows} rows into Postgres, goal > 5,000/s)",
        ]


def _best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def run(gb: float, files: int, pg_url: str, workdir: Path, repeat: int) -> IngestFigures:
    source = workdir / "source"
    day = date(2026, 11, 29)
    minutes = gb * 1e9 / _WAV_BYTES_PER_SECOND / 60
    [archive] = generate_day(
        source, day, archives=1, files_per_archive=files, minutes=minutes, seed=42, formats=("WAV",)
    )
    marker = Path(f"{archive}.sha256")

    def tar_once() -> float:
        target = workdir / "tar-out"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        started = time.perf_counter()
        subprocess.run(["tar", "-xf", str(archive), "-C", str(target)], check=True)
        elapsed = time.perf_counter() - started
        shutil.rmtree(target)
        return elapsed

    register_times: list[float] = []

    def unpack_once() -> float:
        data = workdir / f"data-{uuid.uuid4().hex[:6]}"
        settings = replace(Settings.from_env(), data_root=data)
        settings.ensure_layout()
        shutil.copyfile(archive, settings.incoming / archive.name)  # intake refuses links
        (settings.incoming / marker.name).write_bytes(marker.read_bytes())
        with throwaway_database(pg_url) as url:
            store = Store.from_url(url)
            store.migrate()  # as the DAG's first task does
            started = time.perf_counter()
            [archive_id] = register_archives(settings, store, day.isoformat())
            register_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            summary = unpack_archive(settings, store, archive_id)
            elapsed = time.perf_counter() - started
            store.dispose()
        if summary.ready != files:
            raise RuntimeError(f"expected {files} ready files, got {summary}")
        shutil.rmtree(data)
        return elapsed

    tar_s = _best(repeat, tar_once)
    unpack_s = _best(repeat, unpack_once)
    rows, registration_s = _registration_rate(pg_url, 20_000)
    return IngestFigures(
        archive.stat().st_size, files, tar_s, min(register_times), unpack_s, rows, registration_s
    )


def _registration_rate(pg_url: str, rows: int) -> tuple[int, float]:
    with throwaway_database(pg_url) as url:
        store = Store.from_url(url)
        store.migrate()
        with store.begin() as conn:
            archive_id = conn.execute(
                sa.text(
                    "INSERT INTO archives (name, sha256, run_date, path)"
                    " VALUES ('bench.tar', 'bench', '2026-11-29', '/bench') RETURNING id"
                )
            ).scalar()
        records = [
            {
                "archive_id": archive_id,
                "member_path": f"d/{i:06d}.wav",
                "sha256": "0" * 64,
                "path": f"/data/audio/d/{i:06d}.wav",
                "bytes": 1_000_000,
                "format": "WAV",
                "duration_s": 30.0,
                "sample_rate": 16000,
                "channels": 1,
                "silent": 0,
                "status": "ready",
                "error": None,
            }
            for i in range(rows)
        ]
        started = time.perf_counter()
        register_files(store, archive_id, records)
        elapsed = time.perf_counter() - started
        assert store.scalar("SELECT count(*) FROM audio_files") == rows
        store.dispose()
    return rows, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gb", type=float, default=1.0, help="archive size to generate")
    parser.add_argument("--files", type=int, default=200, help="files in the archive")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs each")
    parser.add_argument(
        "--pg-url",
        default=admin_url(),
        help="a Postgres where this user may create (and drop) databases",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="scratch folder on the volume to measure (default: a temp dir)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        figures = run(args.gb, args.files, args.pg_url, Path(scratch), args.repeat)
    print("\n".join(figures.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
