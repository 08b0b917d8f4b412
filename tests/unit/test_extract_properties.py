"""Property: for any archive, safe_extract either rejects it or extracts exactly its files.

Random member names (with '..', '/', '.', empty parts, unicode, long and deep paths), sizes
and types (file, dir, symlink, hardlink, fifo). Whatever happens: nothing is ever written
outside the destination and no temporary directory is left behind.
"""

import hashlib
import io
import stat
import tarfile
import tempfile
from pathlib import Path

from earmark.ingest.extract import ArchiveRejected, ExtractLimits, safe_extract
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

LIMITS = ExtractLimits(
    max_members=6,
    max_member_bytes=1_500,
    max_total_bytes=4_000,
    max_path_length=60,
    max_path_depth=4,
    free_disk_margin_bytes=0,
)
KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
SAFE_PARTS = ["a", "b", "c.wav", "d.flac", "é", "日本語", "x" * 40, " sp ", "-", "..."]
PARTS = st.integers(0, 39).flatmap(
    lambda roll: (
        st.sampled_from(["..", ".", ""])  # 5%: traversal / normalisation fodder
        if roll < 2
        else st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), max_size=8)
        if roll < 4  # 5%: anything, control characters included
        else st.sampled_from(SAFE_PARTS)
    )
)
NAMES = st.builds(
    lambda lead, parts, trail: lead + "/".join(parts) + trail,
    st.sampled_from([""] * 12 + ["/", "./", "../", "d/d/d/d/"]),
    st.lists(PARTS, min_size=1, max_size=3),
    st.sampled_from(["", "", "/"]),
)
MEMBERS = st.lists(
    st.tuples(
        st.sampled_from(["file"] * 12 + ["dir"] * 3 + ["symlink", "hardlink", "fifo"]),
        NAMES,
        st.binary(max_size=1_600),
        st.sampled_from(["a", "../../outside", "/etc/passwd", "."]),
    ),
    min_size=0,
    max_size=6,
)


def build(path: Path, members: list[tuple[str, str, bytes, str]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, data, link in members:
            info = tarfile.TarInfo(name)
            info.type = KINDS[kind]
            info.linkname = link
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)


def parts_of(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> bytes (regular files) or None (directories); no other type allowed."""
    found: dict[str, bytes | None] = {}
    for path in root.rglob("*"):
        mode = path.lstat().st_mode
        rel = path.relative_to(root).as_posix()
        if stat.S_ISDIR(mode):
            assert stat.S_IMODE(mode) == 0o755
            found[rel] = None
        else:
            assert stat.S_ISREG(mode), f"{rel} is neither file nor directory"
            assert stat.S_IMODE(mode) == 0o644
            found[rel] = path.read_bytes()
    return found


SAFE_MEMBERS = st.lists(
    st.tuples(
        st.sampled_from(["file", "file", "file", "dir"]),
        st.builds(
            lambda lead, parts, sep: lead + sep.join(parts),
            st.sampled_from(["", "", "./"]),
            st.lists(
                st.sampled_from(["a", "b", "c.wav", "é", "日本語", "."]), min_size=1, max_size=3
            ),
            st.sampled_from(["/", "/", "//"]),
        ),
        st.binary(max_size=500),
        st.just(""),
    ),
    max_size=5,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MEMBERS)
def test_reject_or_extract_exactly(members: list[tuple[str, str, bytes, str]]) -> None:
    check(members)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SAFE_MEMBERS)
def test_plain_files_and_dirs_are_extracted_unless_they_collide(
    members: list[tuple[str, str, bytes, str]],
) -> None:
    """Only files and dirs with harmless names: rejected only for duplicates/collisions."""
    accepted = check(members)
    paths = [("/".join(parts_of(name)), kind) for kind, name, _, _ in members]
    if any(path == "" and kind == "file" for path, kind in paths):
        assert not accepted
        return
    named = [(path, kind) for path, kind in paths if path]
    distinct = len({path for path, _ in named}) == len(named)
    file_paths = {path for path, kind in named if kind == "file"}
    nested_under_file = any(
        "/".join(path.split("/")[:i]) in file_paths
        for path, _ in named
        for i in range(1, path.count("/") + 1)
    )
    assert accepted == (distinct and not nested_under_file)


def check(members: list[tuple[str, str, bytes, str]]) -> bool:
    """Run safe_extract on these members and check the invariants; True if accepted."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = root / "in.tar"
        build(archive, members)
        work = root / "deep" / "work"
        (work / "sentinel").mkdir(parents=True)
        dest = work / "out"
        digest = hashlib.sha256()
        try:
            result = safe_extract(archive, dest, LIMITS, digest)
        except ArchiveRejected as err:
            result = None
            assert err.code and err.detail
            event(f"rejected: {err.code}")
            assert not dest.exists()
        else:
            event(f"accepted with {len(result.members)} files")

        # Accepted or rejected, the archive was hashed whole, once.
        assert digest.hexdigest() == hashlib.sha256(archive.read_bytes()).hexdigest()

        # Never anything outside the destination, never a temp leftover.
        assert sorted(p.name for p in root.iterdir()) == ["deep", "in.tar"]
        assert sorted(p.name for p in (root / "deep").iterdir()) == ["work"]
        expected_work = ["out", "sentinel"] if result else ["sentinel"]
        assert sorted(p.name for p in work.iterdir()) == expected_work
        assert list((work / "sentinel").iterdir()) == []

        if any(kind not in ("file", "dir") for kind, *_ in members):
            assert result is None, "links, fifos must reject the archive"
        if any(".." in name.split("/") or name.startswith("/") for _, name, _, _ in members):
            assert result is None, "traversal and absolute names must reject the archive"
        if result is None:
            return False

        # Accepted: exactly the archive's files (and their parents), with the right bytes.
        files = {
            "/".join(parts_of(name)): data for kind, name, data, _ in members if kind == "file"
        }
        dirs = {"/".join(parts_of(name)) for kind, name, _, _ in members if kind == "dir"}
        dirs.discard("")
        for path in [*files, *dirs]:
            parts = path.split("/")
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        expected = {**dict.fromkeys(dirs), **files}
        assert tree(dest) == expected
        assert [m.path for m in result.members] == list(files)
        assert all(m.size == len(files[m.path]) for m in result.members)
        return True
