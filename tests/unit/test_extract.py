"""safe_extract / scan_archive against hostile, broken and over-sized archives.

Every test checks the end state on disk: the rejected archive leaves no trace (the sibling
sentinel directory stays empty, the parent holds no `.tmp-*`/`.old-*` leftovers, nothing
appears above it), and accepted archives land complete with sanitised modes.
"""

import errno
import gzip
import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from earmark.ingest import extract
from earmark.ingest.destination import InsufficientDisk
from earmark.ingest.extract import (
    ArchiveRejected,
    ExtractLimits,
    ExtractResult,
    Member,
    safe_extract,
    scan_archive,
)
from earmark.ingest.formats import ARCHIVE_SUFFIXES, FORMATS, HEAD_BYTES, ArchiveFormat, recognise

NO_MARGIN = ExtractLimits(free_disk_margin_bytes=0)


@dataclass(frozen=True)
class Spec:
    """One member of a hand-built archive."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    mode: int = 0o644


def F(name: str, data: bytes = b"data") -> Spec:
    return Spec(name, data)


def D(name: str, mode: int = 0o755) -> Spec:
    return Spec(name, type=tarfile.DIRTYPE, mode=mode)


def build_tar(path: Path, specs: list[Spec], gz: bool = False) -> Path:
    """Write a tar with exactly these members (tarfile's writer does not filter anything)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for spec in specs:
            info = tarfile.TarInfo(spec.name)
            info.type = spec.type
            info.mode = spec.mode
            info.linkname = spec.linkname
            if spec.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(spec.data)
                tf.addfile(info, io.BytesIO(spec.data))
            else:
                tf.addfile(info)
    raw = buffer.getvalue()
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


@dataclass
class Site:
    """A scratch layout: archives/ holds inputs; work/ holds the destination and a sentinel."""

    root: Path

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def dest(self) -> Path:
        return self.work / "out"

    @property
    def sentinel(self) -> Path:
        return self.work / "sentinel"

    def archive(self, specs: list[Spec], name: str = "in.tar", gz: bool = False) -> Path:
        return build_tar(self.archives / name, specs, gz=gz)

    def assert_untouched(self) -> None:
        """Nothing was written: only the sentinel (still empty) in work/, nothing above."""
        assert sorted(p.name for p in self.work.iterdir()) == ["sentinel"]
        assert list(self.sentinel.iterdir()) == []
        assert sorted(p.name for p in self.root.iterdir()) == ["archives", "victim", "work"]
        assert (self.root / "victim" / "passwd").read_bytes() == b"root:x:0:0\n"

    def assert_no_leftovers(self) -> None:
        names = [p.name for p in self.work.iterdir()]
        assert not [n for n in names if n.startswith((".tmp-", ".old-"))], names


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    s.archives.mkdir()
    s.sentinel.mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "passwd").write_bytes(b"root:x:0:0\n")
    return s


def rejected(site: Site, archive: Path, limits: ExtractLimits = NO_MARGIN) -> ArchiveRejected:
    with pytest.raises(ArchiveRejected) as info:
        safe_extract(archive, site.dest, limits)
    site.assert_untouched()
    return info.value


# --- accepted archives ------------------------------------------------------------------------


def test_extracts_files_and_dirs_with_sanitised_modes(site: Site) -> None:
    archive = site.archive(
        [
            D("./"),
            D("a", mode=0o777),
            Spec("a/setuid.wav", b"s" * 100, mode=0o4777),
            F("./b//c.flac", b"c" * 5000),
            F("über/日本.wav", b"u"),
        ]
    )
    result = safe_extract(archive, site.dest, NO_MARGIN)
    assert result == ExtractResult(
        site.dest,
        (Member("a/setuid.wav", 100), Member("b/c.flac", 5000), Member("über/日本.wav", 1)),
    )
    assert (site.dest / "a/setuid.wav").read_bytes() == b"s" * 100
    assert (site.dest / "b/c.flac").read_bytes() == b"c" * 5000
    for path in [site.dest, *site.dest.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
    assert sorted(p.name for p in site.work.iterdir()) == ["out", "sentinel"]
    assert scan_archive(archive, NO_MARGIN) == result.members


def test_gzip_archive_is_extracted(site: Site) -> None:
    archive = site.archive([F("x/y.wav", os.urandom(70_000))], name="in.tar.gz", gz=True)
    result = safe_extract(archive, site.dest, NO_MARGIN)
    assert result.members == (Member("x/y.wav", 70_000),)
    assert (site.dest / "x/y.wav").stat().st_size == 70_000


def test_gzip_bomb_refused_by_compression_ratio_before_decompressing(site: Site) -> None:
    # 64 MiB of zeros gzips to ~64 KiB (~1000x): refused at its header, nothing written.
    limits = ExtractLimits(free_disk_margin_bytes=0, compression_check_floor_bytes=1024**2)
    archive = site.archive([F("zeros.wav", bytes(64 * 1024**2))], name="bomb.tar.gz", gz=True)
    with pytest.raises(ArchiveRejected) as info:
        safe_extract(archive, site.dest, limits)
    assert info.value.code == "compression_ratio"
    site.assert_untouched()
    # The same bytes uncompressed, and real (noisy) audio compressed, pass.
    plain = site.archive([F("zeros.wav", bytes(4 * 1024**2))], name="plain.tar")
    assert safe_extract(plain, site.dest, limits).members == (Member("zeros.wav", 4 * 1024**2),)
    noisy = site.archive([F("n.wav", os.urandom(2 * 1024**2))], name="noisy.tar.gz", gz=True)
    assert safe_extract(noisy, site.work / "noisy", limits).members


# Every format of the table, built here: a format added there without a builder fails below.
COMPRESSORS = {"gzip": lambda raw: gzip.compress(raw, mtime=0)}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.name)
def test_every_format_is_recognised_and_guarded_by_the_compression_ratio(
    site: Site, fmt: ArchiveFormat
) -> None:
    assert fmt.name in COMPRESSORS, f"build a {fmt.name} archive here to test its guard"
    plain = build_tar(site.archives / "zeros.tar", [F("zeros.wav", bytes(1024**2))])
    packed = site.archives / f"bomb{fmt.suffixes[0]}"
    packed.write_bytes(COMPRESSORS[fmt.name](plain.read_bytes()))
    assert recognise(packed.read_bytes()[:HEAD_BYTES]) == fmt
    assert all(suffix in ARCHIVE_SUFFIXES for suffix in fmt.suffixes)
    limits = ExtractLimits(
        free_disk_margin_bytes=0, max_compression_ratio=10, compression_check_floor_bytes=0
    )
    refusal = rejected(site, packed, limits)
    assert refusal.code == "compression_ratio", refusal
    with pytest.raises(ArchiveRejected, match=r"^compression_ratio: "):
        scan_archive(packed, limits)
    # Under the ratio the same archive is read: the guard, not the format, refused it.
    assert scan_archive(packed, NO_MARGIN) == (Member("zeros.wav", 1024**2),)


def test_empty_tar_gives_no_members(site: Site) -> None:
    assert safe_extract(site.archive([]), site.dest, NO_MARGIN).members == ()
    assert list(site.dest.iterdir()) == []


def test_existing_destination_is_never_replaced_and_stale_temp_is_cleaned(site: Site) -> None:
    archive = site.archive([F("a.wav", b"new")])
    site.dest.mkdir()
    (site.dest / "kept.wav").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        safe_extract(archive, site.dest, NO_MARGIN)
    assert sorted(p.name for p in site.dest.iterdir()) == ["kept.wav"]
    assert (site.dest / "kept.wav").read_bytes() == b"someone else's"

    fresh = site.work / "fresh"
    stale_tmp = site.work / ".tmp-fresh-0123abcd"  # left by a killed earlier attempt
    (stale_tmp / "half").mkdir(parents=True)
    other_tmp = site.work / ".tmp-fresh2-0123abcd"  # another destination's: must survive
    other_tmp.mkdir()
    safe_extract(archive, fresh, NO_MARGIN)
    assert sorted(p.name for p in fresh.iterdir()) == ["a.wav"]
    assert sorted(p.name for p in site.work.iterdir()) == [
        ".tmp-fresh2-0123abcd",
        "fresh",
        "out",
        "sentinel",
    ]


# --- 1. unsafe members ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        (F("../x"), "path_traversal"),
        (F("../../x"), "path_traversal"),
        (F("a/../../x"), "path_traversal"),
        (F("a/.."), "path_traversal"),
        (Spec("..", type=tarfile.DIRTYPE), "path_traversal"),
        (F("/abs-target"), "absolute_path"),
        (F(""), "invalid_name"),
        (F("a/\nb.wav"), "invalid_name"),
        (F("invoice\u202egnp.wav"), "invalid_name"),  # right-to-left override
        (F("a\u2066b.wav"), "invalid_name"),  # left-to-right isolate
        (F("a\u200bb.wav"), "invalid_name"),  # zero-width space
        (F("a\x85b.wav"), "invalid_name"),  # C1 control
        (F("a\\..\\b.wav"), "invalid_name"),
        (Spec("l", type=tarfile.SYMTYPE, linkname="../victim/passwd"), "unsafe_member_type"),
        (Spec("l", type=tarfile.SYMTYPE, linkname="inside"), "unsafe_member_type"),
        (Spec("h", type=tarfile.LNKTYPE, linkname="/etc/passwd"), "unsafe_member_type"),
        (Spec("c", type=tarfile.CHRTYPE), "unsafe_member_type"),
        (Spec("b", type=tarfile.BLKTYPE), "unsafe_member_type"),
        (Spec("p", type=tarfile.FIFOTYPE), "unsafe_member_type"),
        (Spec("s", type=tarfile.CONTTYPE, data=b"x"), "unsafe_member_type"),
        (Spec("u", type=b"Z", data=b"x"), "unsafe_member_type"),
    ],
)
def test_unsafe_member_rejects_archive(site: Site, spec: Spec, code: str) -> None:
    archive = site.archive([F("ok.wav"), spec, F("later.wav")])
    assert rejected(site, archive).code == code


def test_absolute_member_pointing_at_real_path_is_not_written(site: Site) -> None:
    target = site.root / "abs-written"
    archive = site.archive([F(str(target), b"pwned")])
    assert rejected(site, archive).code == "absolute_path"
    assert not target.exists()


def test_error_carries_code_and_detail() -> None:
    err = ArchiveRejected("path_traversal", "member '../x'")
    assert (err.code, err.detail, str(err)) == (
        "path_traversal",
        "member '../x'",
        "path_traversal: member '../x'",
    )


# --- 2. bypass attempts that work against errorlevel=0 or link-based filter bugs -----------------


@pytest.mark.parametrize(
    "specs",
    [
        # symlink to outside, then a regular file written through it
        [Spec("link", type=tarfile.SYMTYPE, linkname="../.."), F("link/victim/passwd", b"pwn")],
        [Spec("link", type=tarfile.SYMTYPE, linkname="."), F("link/../x", b"pwn")],
        # hardlink to a victim, then a regular file of the same name overwriting through it
        [Spec("h", type=tarfile.LNKTYPE, linkname="/etc/passwd"), F("h", b"pwn")],
        [Spec("h", type=tarfile.LNKTYPE, linkname="../../victim/passwd"), F("h", b"pwn")],
        # chain of symlinks, each harmless-looking alone
        [
            Spec("a", type=tarfile.SYMTYPE, linkname="b"),
            Spec("b", type=tarfile.SYMTYPE, linkname="../../victim"),
            F("a/passwd", b"pwn"),
        ],
    ],
)
def test_link_bypass_attempts_are_rejected(site: Site, specs: list[Spec]) -> None:
    archive = site.archive(specs)
    assert rejected(site, archive).code == "unsafe_member_type"  # victim checked unchanged


def test_hardlink_to_absolute_victim_with_gz(site: Site) -> None:
    victim = site.root / "victim" / "passwd"
    archive = site.archive(
        [Spec("h", type=tarfile.LNKTYPE, linkname=str(victim)), F("h", b"pwn")],
        name="in.tar.gz",
        gz=True,
    )
    assert rejected(site, archive).code == "unsafe_member_type"


# --- 3. limits, enforced from headers before anything is written ----------------------------------


@pytest.mark.parametrize(
    ("limits", "specs", "code"),
    [
        (ExtractLimits(max_members=3), [F(f"{i}.wav") for i in range(4)], "too_many_members"),
        (
            ExtractLimits(max_members=3),
            [D("d"), *[F(f"d/{i}") for i in range(3)]],
            "too_many_members",
        ),
        (ExtractLimits(max_member_bytes=100), [F("a", b"x" * 101)], "member_too_large"),
        (
            ExtractLimits(max_total_bytes=250),
            [F(str(i), b"x" * 100) for i in range(3)],
            "archive_too_large",
        ),
        (ExtractLimits(max_path_length=10), [F("abcde/fghij.wav")], "path_too_long"),
        (ExtractLimits(), [F("x" * 256)], "path_too_long"),
        (ExtractLimits(max_path_depth=3), [F("a/b/c/d.wav")], "path_too_deep"),
        (ExtractLimits(max_path_depth=3), [D("a/b/c/d")], "path_too_deep"),
    ],
)
def test_limits(site: Site, limits: ExtractLimits, specs: list[Spec], code: str) -> None:
    archive = site.archive(specs)
    assert rejected(site, archive, limits).code == code
    with pytest.raises(ArchiveRejected):
        scan_archive(archive, limits)


def test_limits_at_the_boundary_pass(site: Site) -> None:
    limits = ExtractLimits(
        max_members=3,
        max_member_bytes=100,
        max_total_bytes=200,
        max_path_depth=2,
        max_path_length=5,
        free_disk_margin_bytes=0,
    )
    archive = site.archive([D("d"), F("d/a", b"x" * 100), F("d/b", b"y" * 100)])
    assert len(safe_extract(archive, site.dest, limits).members) == 2


@pytest.mark.parametrize("gz", [False, True])
def test_declared_huge_member_rejected_from_header_alone(site: Site, gz: bool) -> None:
    """A 10 GB member header with no data behind it: the scan never reads or writes data."""
    info = tarfile.TarInfo("huge.wav")
    info.size = 10 * 1024**3
    raw = info.tobuf(format=tarfile.PAX_FORMAT)
    path = site.archives / "huge.tar"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    err = rejected(site, path, ExtractLimits())
    assert err.code == "member_too_large"
    assert "huge.wav" in err.detail


def test_pax_header_bomb_is_refused_without_reading_it(site: Site) -> None:
    """A pax header declaring 64 MiB of attributes (gzip makes it tiny on disk)."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 64 * 1024**2
    raw = header.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * header.size
    path = site.archives / "bomb.tar.gz"
    path.write_bytes(gzip.compress(raw))
    assert rejected(site, path).code == "corrupt"


# --- 4. truncation and corruption -------------------------------------------------------------


def two_member_tar(site: Site, gz: bool = False) -> tuple[Path, bytes]:
    archive = site.archive([F("a.wav", b"A" * 3000), F("b.wav", b"B" * 3000)], gz=gz)
    return archive, archive.read_bytes()


def test_truncated_tar_inside_member(site: Site) -> None:
    archive, raw = two_member_tar(site)
    archive.write_bytes(raw[: 512 + 1000])  # header of a.wav + part of its data
    assert rejected(site, archive).code == "truncated"


def test_truncated_tar_gz_inside_member(site: Site) -> None:
    archive = site.archive([F("a.wav", os.urandom(50_000))], name="in.tar.gz", gz=True)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])  # EOFError from gzip, not a TarError
    assert rejected(site, archive).code == "truncated"


def test_truncated_at_member_boundary(site: Site) -> None:
    """tarfile itself raises nothing for a cut exactly between members; extract requires the
    end-of-archive zero block, so it is rejected here too. (The archive checksum verified by
    the caller is still the authority on completeness.)"""
    archive, raw = two_member_tar(site)
    boundary = 512 + 3072  # a.wav header + padded data: b.wav would start here
    archive.write_bytes(raw[:boundary])
    assert rejected(site, archive).code == "truncated"


def test_cut_in_trailing_padding_succeeds(site: Site) -> None:
    """A cut after the end-of-archive marker loses no member data, so extraction succeeds;
    only the archive checksum (verified by the caller, not here) can notice such a cut."""
    archive, raw = two_member_tar(site)
    end = 2 * (512 + 3072)
    archive.write_bytes(raw[: end + 512])  # first zero block kept, rest of padding gone
    result = safe_extract(archive, site.dest, NO_MARGIN)
    assert (site.dest / "b.wav").read_bytes() == b"B" * 3000
    assert len(result.members) == 2


def test_damaged_header_in_the_middle_is_corrupt(site: Site) -> None:
    archive, raw = two_member_tar(site)
    broken = bytearray(raw)
    broken[512 + 3072 : 512 + 3072 + 100] = b"\xff" * 100  # b.wav's header
    archive.write_bytes(bytes(broken))
    assert rejected(site, archive).code == "corrupt"


def test_gz_crc_damage_is_corrupt(site: Site) -> None:
    archive = site.archive([F("a.wav", b"A" * 20_000)], name="in.tar.gz", gz=True)
    broken = bytearray(archive.read_bytes())
    broken[-8] ^= 0xFF  # CRC32 in the gzip trailer
    archive.write_bytes(bytes(broken))
    assert rejected(site, archive).code == "corrupt"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "not_a_tar"),
        (b"hello, this is not a tar\n" * 50, "not_a_tar"),
        (bytes(range(256)) * 20, "not_a_tar"),
        (b"BZh91AY&SY" + b"\0" * 100, "not_a_tar"),
        (b"\x1f\x8b\x08\x00garbage-after-gzip-magic", "corrupt"),
        (gzip.compress(b"plain text, gzipped" * 100, mtime=0), "not_a_tar"),
    ],
)
def test_not_a_tar(site: Site, content: bytes, code: str) -> None:
    path = site.archives / "x.tar"
    path.write_bytes(content)
    assert rejected(site, path).code == code


def test_read_error_during_extraction_removes_temp(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Errors in the extraction pass (after a clean scan) are mapped too, and clean up."""
    archive, _ = two_member_tar(site)
    real_makefile = tarfile.TarFile.makefile

    def failing_makefile(self: tarfile.TarFile, info: tarfile.TarInfo, target: str) -> None:
        if info.name == "b.wav":
            Path(target).write_bytes(b"partial")
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        real_makefile(self, info, target)

    monkeypatch.setattr(tarfile.TarFile, "makefile", failing_makefile)
    assert rejected(site, archive).code == "truncated"


# --- 5. duplicates and collisions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("specs", "code"),
    [
        ([F("a.wav", b"1"), F("a.wav", b"2")], "duplicate_member"),
        ([F("a/b.wav", b"1"), F("./a/b.wav", b"2")], "duplicate_member"),
        ([F("a/b.wav", b"1"), F("a//b.wav", b"2")], "duplicate_member"),
        ([F("a/b.wav", b"1"), F("a/./b.wav", b"2")], "duplicate_member"),
        ([D("a"), D("./a/")], "duplicate_member"),
        ([D("a"), F("a")], "duplicate_member"),
        ([F("a"), F("a/b.wav")], "path_conflict"),
        ([F("a/b.wav"), F("a")], "path_conflict"),
        ([F("a/b/c.wav"), F("a/b")], "path_conflict"),
        ([F("."), F("b")], "invalid_name"),
    ],
)
def test_duplicates_and_collisions(site: Site, specs: list[Spec], code: str) -> None:
    assert rejected(site, site.archive(specs)).code == code


# --- 14. disk space and write failures ------------------------------------------------------


def test_insufficient_disk_raises_before_writing(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = site.archive([F("a.wav", b"x" * 10_000)])
    real = extract.shutil.disk_usage

    def tiny(path: Path) -> object:
        return real(path)._replace(free=5_000)

    monkeypatch.setattr(extract.shutil, "disk_usage", tiny)
    with pytest.raises(InsufficientDisk) as info:
        safe_extract(archive, site.dest, NO_MARGIN)
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOSPC
    assert not isinstance(info.value, ArchiveRejected)
    site.assert_untouched()


def test_margin_counts_towards_needed_space(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = site.archive([F("a.wav", b"x" * 10)])
    real = extract.shutil.disk_usage
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda p: real(p)._replace(free=10**9))
    with pytest.raises(InsufficientDisk):
        safe_extract(archive, site.dest, ExtractLimits(free_disk_margin_bytes=2 * 10**9))
    site.assert_untouched()


def test_write_failure_propagates_and_removes_temp(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = site.archive([F("a.wav", b"A" * 1000), F("b.wav", b"B" * 1000)])
    real_makefile = tarfile.TarFile.makefile

    def enospc(self: tarfile.TarFile, info: tarfile.TarInfo, target: str) -> None:
        if info.name == "b.wav":
            Path(target).write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", target)
        real_makefile(self, info, target)

    monkeypatch.setattr(tarfile.TarFile, "makefile", enospc)
    with pytest.raises(OSError) as info:
        safe_extract(archive, site.dest, NO_MARGIN)
    assert info.value.errno == errno.ENOSPC
    assert not isinstance(info.value, ArchiveRejected)
    site.assert_untouched()


def test_write_failure_with_real_file_size_limit(site: Site) -> None:
    """A real EFBIG from the kernel (RLIMIT_FSIZE) in a child process: OSError, temp removed."""
    archive = site.archive([F("small.wav", b"s" * 1000), F("big.wav", b"B" * 300_000)])
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from earmark.ingest.extract import ExtractLimits, safe_extract
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            safe_extract(Path({str(archive)!r}), Path({str(site.dest)!r}),
                         ExtractLimits(free_disk_margin_bytes=0))
        except OSError as exc:
            print("OSError", exc.errno)
        else:
            print("no error")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.strip() == f"OSError {errno.EFBIG}", out.stderr
    site.assert_untouched()


# --- the digest: each archive read once ------------------------------------------------------


def _bytes_read_by_this_process() -> int:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"])


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tar.gz"])
@pytest.mark.parametrize(
    "sizes",
    [(100, 70_000, 0, 3, 2_500_000), (700,) * 40],
    ids=["large-gaps", "small-members"],
)
def test_digest_is_the_whole_files_sha256(site: Site, gz: bool, sizes: tuple[int, ...]) -> None:
    specs = [F(f"rec/m{i}.bin", os.urandom(size)) for i, size in enumerate(sizes)]
    archive = site.archive([D("rec"), *specs], gz=gz)
    digest = hashlib.sha256()
    result = safe_extract(archive, site.dest, NO_MARGIN, digest)
    assert len(result.members) == len(sizes)
    assert digest.hexdigest() == hashlib.sha256(archive.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            lambda s: s.archive([F("ok.bin", os.urandom(90_000)), F("../x")]), id="unsafe"
        ),
        pytest.param(
            lambda s: _cut(s.archive([F("a.bin", os.urandom(300_000))]), 200_000), id="truncated"
        ),
        pytest.param(lambda s: _write(s.archives / "in.tar", os.urandom(5000)), id="not-a-tar"),
    ],
)
def test_digest_is_complete_when_the_archive_is_rejected(site: Site, content) -> None:
    """A content rejection still needs the digest: later deliveries of the bytes are told."""
    archive = content(site)
    digest = hashlib.sha256()
    with pytest.raises(ArchiveRejected):
        safe_extract(archive, site.dest, NO_MARGIN, digest)
    site.assert_untouched()
    assert digest.hexdigest() == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_a_plain_tar_is_read_once_with_its_digest(site: Site) -> None:
    archive = site.archive([F(f"m{i}.bin", os.urandom(2_000_000)) for i in range(6)])
    size = archive.stat().st_size
    before = _bytes_read_by_this_process()
    safe_extract(archive, site.dest, NO_MARGIN, hashlib.sha256())
    read = _bytes_read_by_this_process() - before
    # Hashing first, as a separate pass, reads it twice (2.0x); headers are read twice (tiny).
    assert read < 1.05 * size, f"read {read / size:.2f}x the archive"


def _cut(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
