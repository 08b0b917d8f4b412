"""The GPU-stage benchmark, tiny mode, end to end as CI runs it: one JSON object whose figures
show the structure (models loaded once per unit and stage, full Whisper batches, little
padding). Speed is printed, never asserted."""

from __future__ import annotations

import json

import pytest
from earmark_dev.bench.gpu_stage import SENTENCES, main

pytestmark = pytest.mark.bench

FIELDS = {
    "model_loads",
    "gpu_task_s",
    "load_s",
    "asr_batch_occupancy",
    "padded_fraction",
    "host_peak_bytes",
    "realtime_x",
    "baseline_realtime_x",
    "ratio",
}


def test_tiny_benchmark_prints_the_figures_of_production_s_loop(tiny_models, tmp_path, capsys):
    work = tmp_path / "bench"
    # The baseline on the files up to 20 min only: its figure is per audio second, and the
    # 2 h file alone costs it half a minute of CPU.
    code = main(
        [
            "--tiny",
            "--json",
            "--baseline-max-s",
            "1200",
            "--work-dir",
            str(work),
            "--models-dir",
            str(tiny_models.asr.parent),
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report.keys() >= FIELDS
    assert report["files"] == 10 and report["audio_s"] >= 2 * 3600
    assert report["units"] >= 2  # two GPU slots: the day is split so both GPUs get work
    assert report["model_loads"] == report["units"] * report["stages"]
    assert report["asr_batch_occupancy"] >= 0.9
    assert report["padded_fraction"] <= 0.1
    assert 0 < report["load_s"] < report["gpu_task_s"]
    assert report["host_peak_bytes"] > 0 and report["gpu_peak_bytes"] is None
    assert report["baseline_audio_s"] == 5 + 5 + 12 + 30 + 47 + 90 + 300 + 60  # + no speech
    assert report["realtime_x"] > 0 and report["baseline_realtime_x"] > 0
    assert report["ratio"] == pytest.approx(
        report["realtime_x"] / report["baseline_realtime_x"], rel=0.01
    )
    # silence is not decoded: the segments fed are well short of the corpus
    assert report["asr_fed_s"] < report["audio_s"] - 1800
    assert all(s not in json.dumps(report) for s in SENTENCES)
