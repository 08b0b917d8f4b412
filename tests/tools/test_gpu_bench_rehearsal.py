"""``tools/gpu-bench.sh --rehearse``: the script a lent GPU machine runs, rehearsed on the CPU
with the tiny models so it cannot rot between lent machines. It must finish, write its JSON
and summary to ``$OUT`` with the benchmark's figures and each step's seconds, and import
nothing that the lent machine lacks and the script does not carry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from earmark_dev.bench.corpus import SENTENCES
from earmark_dev.bench.device_run import CARRIED

ROOT = Path(__file__).resolve().parents[2]


def test_the_carried_wheels_are_the_versions_the_project_pins():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, sep, pinned = line.partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = pinned.strip()
    for wheel in CARRIED:
        name, _, carried = wheel.partition("==")
        assert pins.get(name.lower()) == carried, f"{wheel}: constraints.txt pins {pins.get(name)}"


@pytest.mark.bench
def test_rehearsal_writes_the_figures_a_device_run_would(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "LIMIT_S": "240"}
    done = subprocess.run(
        [
            "bash",
            str(ROOT / "tools" / "gpu-bench.sh"),
            "--rehearse",
            "--work-dir",
            str(tmp_path / "work"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    record = json.loads((out / "gpu-bench.json").read_text(encoding="utf-8"))
    assert record["mode"] == "rehearsal" and "error" not in record
    assert record["uncarried_imports"] == []  # else CARRIED lacks a wheel the device needs
    assert record["total_s"] > 0 and record["budget_s"] == 360
    report = record["report"]
    assert report["mode"] == "small-width" and report["files"] == 8  # files up to 300 s
    # The models came from the lent machine's builders (at a small width): Whisper with 128 mel
    # bins, the classifier written in prepared form, accepted by production's loader.
    models = tmp_path / "work" / "models"
    assert json.loads((models / "asr" / "config.json").read_text())["num_mel_bins"] == 128
    manifest = json.loads((models / "prepared" / "earmark-manifest.json").read_text())
    assert manifest["sources"] and all(f["sha256"] is None for f in manifest["files"].values())
    assert set(report["phases_s"]) == {"models", "corpus", "production", "baselines"}
    assert report["baseline_audio_s"] == report["audio_s"]
    assert report["realtime_x"] > 0 and report["baseline_realtime_x"] > 0
    assert report["batch1_audio_s"] == 5 + 5 + 12 + 30 + 47  # the footnote's 100 s
    summary = (out / "gpu-bench.txt").read_text(encoding="utf-8")
    assert "baseline" in summary and "¹" in summary
    log = (out / "gpu-bench.log").read_text(encoding="utf-8")
    for text in (log, summary, json.dumps(record)):
        assert all(sentence not in text for sentence in SENTENCES)
