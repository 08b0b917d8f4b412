"""The GPU-stage benchmark: tiny mode end to end on CPU, the real-size configs, decode forcing.

Figures are checked for presence and sign only; speed is never asserted.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from earmark_dev.bench.gpu_stage import (
    BenchOptions,
    _WindowCounter,
    count_parameters,
    force_decode_length,
    format_report,
    gemma2_9b_config,
    main,
    parse_args,
    run_benchmark,
    stratified_subset,
    whisper_turbo_config,
)

TINY_ARGS = [
    "--tiny",
    "--files",
    "4",
    "--minutes",
    "2.5",
    "--baseline-files",
    "2",
    "--tokens-per-window",
    "8",
    "--policy-tokens",
    "300",
]


@pytest.fixture(scope="module")
def report(tiny_models, tmp_path_factory):
    options = parse_args([*TINY_ARGS, "--models-dir", str(tiny_models.asr.parent)])
    options.work_dir = tmp_path_factory.mktemp("bench")
    return run_benchmark(options, log=lambda _msg: None)


def test_tiny_report_figures_are_positive(report):
    for path in (report.optimized, report.baseline):
        assert path.files > 0 and path.audio_s > 0
        assert path.asr_s > 0 and path.classify_s > 0 and path.write_s >= 0
        assert path.real_time_factor > 0 and path.items_per_s > 0
        assert path.asr_windows > 0 and path.classify_tokens > 0
    assert report.optimized.files == 4 and report.baseline.files == 2
    assert report.rtf_ratio > 0
    assert report.asr_batch >= 1 and report.classify_batch >= 1
    assert 250 <= report.policy_tokens <= 300


def test_tiny_report_text_has_every_figure(report):
    text = format_report(report)
    rtf = [float(x) for x in re.findall(r"real-time factor ([0-9.]+)x \|", text)]
    items = [float(x) for x in re.findall(r"items/s ([0-9.]+)", text)]
    assert len(rtf) == 2 and all(x > 0 for x in rtf)
    assert len(items) == 2 and all(x > 0 for x in items)
    assert re.search(r"ratio optimized/baseline .*real-time factor [0-9.]+x", text)
    assert "subset 2 of 4 files" in text
    assert text.count("peak GPU memory n/a") >= 2  # CPU run
    assert "classify peak GPU memory" in text


def test_main_tiny_prints_the_report(tiny_models, tmp_path, capsys):
    code = main(
        [
            *TINY_ARGS,
            "--files",
            "3",
            "--baseline-files",
            "1",
            "--models-dir",
            str(tiny_models.asr.parent),
            "--work-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"real-time factor [0-9.]+x \| items/s [0-9.]+", out)) == 2
    assert "ratio optimized/baseline" in out


def test_dry_run_builds_real_size_configs_without_weights(capsys):
    assert main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "whisper large-v3-turbo: 808.9M parameters" in out
    assert "gemma-2-9b: 9.24B parameters" in out
    assert "kv cache: 344,064 bytes per token" in out
    assert re.search(r"budget 22 GiB .* classify batch \d+", out)


def test_real_size_parameter_counts():
    from transformers import Gemma2ForCausalLM, WhisperForConditionalGeneration

    whisper, gemma = whisper_turbo_config(), gemma2_9b_config()
    assert (whisper.num_mel_bins, whisper.vocab_size, whisper.decoder_layers) == (128, 51866, 4)
    assert (gemma.attn_logit_softcapping, gemma.final_logit_softcapping) == (50.0, 30.0)
    assert 800e6 < count_parameters(WhisperForConditionalGeneration, whisper) < 820e6
    assert 9.1e9 < count_parameters(Gemma2ForCausalLM, gemma) < 9.3e9


def test_forced_decode_advances_a_full_window_each_time(tiny_models):
    from earmark.inference.transcriber import Transcriber, TranscriberOptions

    transcriber = Transcriber(
        TranscriberOptions(model_dir=tiny_models.asr, max_new_tokens=8, batch_size=2)
    )
    force_decode_length(transcriber.model, transcriber.processor.tokenizer, 8)
    counter = _WindowCounter()
    transcriber.model.get_encoder().register_forward_hook(counter, with_kwargs=True)
    rng = np.random.default_rng(0)
    audios = [0.1 * rng.standard_normal(16000 * s).astype(np.float32) for s in (75, 47)]
    transcriber.transcribe_longform(audios)
    assert counter.windows == 3 + 2  # ceil(75/30) + ceil(47/30), batched long-form


def test_options_and_subset():
    options = parse_args(["--tiny", "--attn", "flex_attention", "--classify-batch", "3"])
    assert isinstance(options, BenchOptions)
    assert (options.attn, options.classify_batch) == ("flex_attention", 3)
    resolved = BenchOptions(tiny=True, device="cpu").resolved()
    assert resolved.files and resolved.dtype == "float32"
    with pytest.raises(SystemExit):
        parse_args(["--attn", "sdpa"])
    with pytest.raises(SystemExit):
        parse_args(["--asr-batch", "0"])
    durations = [5.0, 100.0, 30.0, 60.0, 2.0]
    assert stratified_subset(durations, 3) == [4, 2, 1]
    assert stratified_subset(durations, 9) == [4, 0, 2, 3, 1]
