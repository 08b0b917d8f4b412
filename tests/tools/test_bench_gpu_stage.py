"""The GPU-stage benchmark, tiny mode, end to end as CI runs it: one JSON object whose figures
show the structure (models loaded once per unit and stage, full Whisper batches, little
padding), windows that decode varied lengths with loops the guard cuts, and the fair baseline
on the same corpus. Speed is printed, never asserted."""

from __future__ import annotations

import json

import pytest
from earmark.gpu.figures import StageResult
from earmark_dev.bench.gpu_stage import SENTENCES, main

pytestmark = pytest.mark.bench

FIELDS = {
    "model_loads",
    "gpu_task_s",
    "load_s",
    "load_share",
    "asr_batch_occupancy",
    "padded_fraction",
    "host_peak_bytes",
    "realtime_x",
    "baseline_realtime_x",
    "ratio",
    # added with the honest benchmark
    "feature_wait_share",
    "nonfinite_scores",
    "no_speech_files",
    "asr_tokens_per_window",
    "asr_lockstep_occupancy",
    "asr_loop_windows",
    "asr_loops_cut",
    "batch1_realtime_x",
}


def test_tiny_benchmark_prints_the_figures_of_production_s_loop(tiny_models, tmp_path, capsys):
    work = tmp_path / "bench"
    # The batch-1 footnote on the files up to 90 s only: its figure is per audio second.
    code = main(
        [
            "--tiny",
            "--json",
            "--batch1-max-s",
            "200",
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
    assert report["load_s"] > 0 and report["load_share"] <= 0.05
    assert report["host_peak_bytes"] >= report["host_start_bytes"] > 0
    assert report["gpu_peak_bytes"] is None
    assert report["nonfinite_scores"] == 0
    if "no_speech_files" in StageResult.__dataclass_fields__:
        assert report["no_speech_files"] == 1  # the corpus's one file without speech
    share = report["feature_wait_share"]
    assert share is None or 0 <= share <= 1
    # Windows decode varied lengths that end with EOS, and every scripted loop is cut by the
    # guard before the token limit; lockstep decoding pays for the longest row of each batch.
    assert 0 < report["asr_tokens_per_window"] < report["max_new_tokens"]
    assert 0 < report["asr_lockstep_occupancy"] < 1
    assert report["asr_loop_windows"] >= 1
    assert report["asr_loops_cut"] == report["asr_loop_windows"]
    # The fair baseline runs the whole corpus (silence included, so it decodes more windows);
    # the batch-1 footnote the files up to 200 s.
    assert report["baseline_audio_s"] == report["audio_s"]
    assert report["baseline_windows"] > report["asr_rows"]
    assert report["baseline_loop_windows"] >= 1
    assert report["batch1_audio_s"] == 5 + 5 + 12 + 30 + 47 + 60  # + the no-speech file
    assert report["realtime_x"] > 0 and report["baseline_realtime_x"] > 0
    assert report["batch1_realtime_x"] > 0
    assert report["ratio"] == pytest.approx(
        report["realtime_x"] / report["baseline_realtime_x"], rel=0.01
    )
    # silence is not decoded: the segments fed are well short of the corpus
    assert report["asr_fed_s"] < report["audio_s"] - 1800
    assert all(s not in json.dumps(report) for s in SENTENCES)
