"""The deploy files as the tools of the hosts read them: every shell script ``shellcheck``
clean, every systemd unit ``systemd-analyze verify`` clean (in a root of its own holding the
system's units and a stand-in for each program the units start)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from earmark.config import PROJECT_ROOT

pytestmark = pytest.mark.integration

SCRIPTS = sorted(
    [
        *PROJECT_ROOT.glob("deploy/*.sh"),
        *PROJECT_ROOT.glob("tools/*.sh"),
        PROJECT_ROOT / ".ci" / "run",
        PROJECT_ROOT / ".ci" / "install-system-packages.sh",
    ]
)
UNITS = sorted(
    p
    for p in (PROJECT_ROOT / "deploy" / "systemd").iterdir()
    if p.suffix in (".service", ".timer", ".target")
)
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def _need(tool: str) -> str:
    """The tool's path; a clear failure, not a skip, when it is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: bash .ci/install-system-packages.sh", pytrace=False)
    return path


def test_every_script_is_shellcheck_clean() -> None:
    shellcheck = _need("shellcheck")
    assert len(SCRIPTS) >= 6, SCRIPTS
    result = subprocess.run(
        [shellcheck, "--external-sources", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for script in SCRIPTS:
        head = script.read_text(encoding="utf-8").splitlines()
        assert head[0] == "#!/usr/bin/env bash", script
        assert "set -euo pipefail" in head, script


def _root(tmp_path: Path, units: list[Path]) -> tuple[Path, list[str]]:
    """A root with the system's units, ours in /etc/systemd/system, and an executable
    stand-in wherever a unit's ExecStart points; our units' paths inside it."""
    if not SYSTEM_UNITS.is_dir():
        pytest.fail(f"{SYSTEM_UNITS} is missing: systemd's units are needed", pytrace=False)
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    target = root / "etc" / "systemd" / "system"
    target.mkdir(parents=True)
    for unit in units:
        shutil.copy(unit, target / unit.name)
        for line in unit.read_text(encoding="utf-8").splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=", "ExecStop=", "ExecReload=")):
                program = Path(line.split("=", 1)[1].lstrip("-@:+!").split()[0])
                stand_in = root / program.relative_to("/")
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.write_text("#!/bin/sh\n")
                stand_in.chmod(0o755)
    return root, [str(target / unit.name) for unit in units]


def _verify(root: Path, paths: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_need("systemd-analyze"), "verify", f"--root={root}", *paths],
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    names = {u.name for u in UNITS}
    assert {"earmark-backup.service", "earmark-backup.timer", "earmark.target"} <= names
    root, paths = _root(tmp_path, UNITS)
    result = _verify(root, paths)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a missing program are reported."""
    broken = tmp_path / "earmark-broken.service"
    text = (PROJECT_ROOT / "deploy" / "systemd" / "earmark-backup.service").read_text()
    broken.write_text(text.replace("Type=oneshot", "Typ=oneshot"))
    root, paths = _root(tmp_path, [broken])
    (root / "opt" / "earmark" / "deploy" / "backup-results.sh").unlink()
    result = _verify(root, paths)
    out = result.stdout + result.stderr
    assert "Unknown key 'Typ'" in out and "is not executable" in out, out
