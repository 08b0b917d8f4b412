"""The GPU-stage benchmark: production's loop over a day of mixed lengths, against a fair
baseline on the same corpus, measured in one run.

What runs is production's code: ``plan_work_units``, then ``transcribe_unit`` and
``classify_unit`` for each unit, each loading its model as a GPU task does, against a
throwaway SQLite results DB. The benchmark adds the corpus, the timing and the baselines
(``earmark_dev.bench.baseline``): the fair one runs the same corpus through fixed 30 s chunks
decoded in batches (the WhisperX / faster-whisper design, without VAD) and full-pass scoring
batched by the same memory budget; the batch-1 long-form figure this benchmark used to
compare with is kept as a footnote (``batch1_*``) on the shortest files.

Corpus: files from 5 s to 2 h of espeak-ng speech with room-noise pauses, long silences inside
the longest file, and one file with no speech at all. Random weights decode nonsense of any
length, so what each window writes is scripted from its audio in every path alike
(``earmark_dev.bench.models.scripted_decode``): about ``--tokens-per-window`` tokens for 30 s
of speech, spread around that and ended by EOS, and a few loops the loop guard must cut.
Transcript text is never printed.

    python -m earmark_dev.bench.gpu_stage --tiny --json      # CPU, tiny models (CI runs it)
    python -m earmark_dev.bench.gpu_stage --models-dir /data/bench-models --scale 4 \
        --gpu-memory-gib 22                                  # real-size shapes, on a GPU
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from earmark_dev.bench.corpus import SENTENCES, make_corpus, save_voices
from earmark_dev.bench.host_peak import HostPeak

__all__ = ["SENTENCES", "BenchOptions", "BenchReport", "main", "run_benchmark"]

DAY = "2026-11-29"
BENCH_POLICY = "Flag content that threatens, insults or harasses a person. " * 40
# Tiny models on the CPU decode fewer tokens (the structure is what they show); the loops'
# periods are ones their token limit leaves room to catch.
TINY_DECODE = {"tokens": 8.0, "max_new_tokens": 48, "loop_share": 0.05, "periods": (3, 6)}
REAL_DECODE = {
    "tokens": 100.0,
    "max_new_tokens": None,
    "loop_share": 0.02,
    "periods": (4, 12, 25, 60),
}
# StageResult fields of the main thread's time outside GPU calls and of the batches' time:
# the first pair that a transcription result has gives feature_wait_share.
FEATURE_WAIT_FIELDS = (("feature_host_s", "feature_batch_s"), ("asr_host_s", "asr_batch_s"))


@dataclass(frozen=True)
class BenchOptions:
    """One run's models, corpus, decode script and limits (``parse_args`` fills the defaults)."""

    tiny: bool
    device: str
    dtype: str
    scale: int
    tokens_per_window: float
    max_new_tokens: int | None
    loop_share: float
    loop_periods: tuple[int, ...]
    asr_batch: int
    policy_chars: int
    gpu_slots: int
    gpu_memory_gib: float | None
    work_dir: Path
    models_dir: Path | None
    voices_dir: Path | None = None
    batch1_max_s: float = 600.0
    longest_s: float | None = None
    small_models: bool = False  # the real-size builders at a small width (tiny mode only)


@dataclass(frozen=True)
class BenchReport:
    """The figures the benchmark prints (one JSON object)."""

    mode: str
    device: str
    gpu_memory_gib: float | None
    files: int
    audio_s: float
    units: int
    stages: int
    model_loads: int
    gpu_task_s: float
    load_s: float
    load_share: float
    asr_batch_size: int
    asr_forwards: int
    asr_rows: int
    asr_batch_occupancy: float
    asr_fed_s: float
    asr_padded_s: float
    padded_fraction: float
    tokens_per_window: float
    max_new_tokens: int
    asr_tokens_per_window: float
    asr_lockstep_occupancy: float
    asr_loop_windows: int
    asr_loops_cut: int
    feature_wait_share: float | None
    asr_outside_generate_share: float
    wall_s: float
    realtime_x: float
    host_peak_bytes: int
    host_start_bytes: int
    gpu_peak_bytes: int | None
    nonfinite_scores: int
    no_speech_files: int
    baseline_design: str
    baseline_audio_s: float
    baseline_wall_s: float
    baseline_realtime_x: float
    baseline_windows: int
    baseline_forwards: int
    baseline_tokens_per_window: float
    baseline_lockstep_occupancy: float
    baseline_loop_windows: int
    baseline_loops_cut: int
    ratio: float
    batch1_audio_s: float | None
    batch1_wall_s: float | None
    batch1_realtime_x: float | None
    phases_s: dict[str, float] = field(default_factory=dict)


# ---- the run ------------------------------------------------------------------------------


def _gpu(device: str) -> Any:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda


def _register(store: Any, corpus: list[tuple[Path, float]]) -> None:
    """The corpus as one unpacked archive of ready files, as intake leaves a day."""
    import sqlalchemy as sa

    with store.begin() as conn:
        archive = conn.execute(
            sa.text(
                "INSERT INTO archives (name, sha256, run_date, status, path, n_files)"
                " VALUES ('bench.tar', 'bench', :d, 'unpacked', :p, :n) RETURNING id"
            ),
            {"d": DAY, "p": str(corpus[0][0].parent), "n": len(corpus)},
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO audio_files (archive_id, member_path, sha256, path, duration_s,"
                " sample_rate, channels, status) VALUES (:a, :m, :s, :p, :d, 16000, 1, 'ready')"
            ),
            [
                {
                    "a": archive,
                    "m": path.name,
                    "s": hashlib.sha256(path.name.encode()).hexdigest(),
                    "p": str(path),
                    "d": seconds,
                }
                for path, seconds in corpus
            ],
        )


def _bench_policies(dest: Path, chars: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    text = (BENCH_POLICY * (1 + chars // len(BENCH_POLICY)))[:chars]
    (dest / "bench.md").write_text(text + "\n", encoding="utf-8")
    return dest


def run_production(settings: Any, store: Any) -> tuple[list[int], list[Any], float]:
    """Exactly what the DAG's GPU part does for a day: plan, then each unit's two stages."""
    from earmark.gpu.classify import classify_unit
    from earmark.gpu.transcribe import transcribe_unit
    from earmark.gpu.work_units import plan_work_units

    started = time.perf_counter()
    units = plan_work_units(
        store,
        "bench",
        DAY,
        reprocess=False,
        gpu_slots=settings.gpu_slots,
        target_unit_s=settings.unit_target_minutes * 60,
        assumed_realtime_x=settings.assumed_realtime_x,
        max_files=settings.unit_max_files,
    )
    results = []
    for unit_id in units:
        results.append(transcribe_unit(settings, store, unit_id))
        results.append(classify_unit(settings, store, unit_id))
    return units, results, time.perf_counter() - started


def _phase(phases: dict[str, float], name: str, began: float, note: str = "") -> float:
    """Record a phase's seconds and say so on stderr (figures only); returns the time now."""
    now = time.perf_counter()
    phases[name] = round(now - began, 2)
    print(f"[gpu-bench] {name}: {phases[name]:.1f} s {note}".rstrip(), file=sys.stderr, flush=True)
    return now


def _settings(options: BenchOptions, models: Any) -> Any:
    from earmark.config import Settings

    work = options.work_dir
    settings = replace(
        Settings.from_env(),
        data_root=work / "data",
        device=options.device,
        dtype=options.dtype,
        asr_model_dir=models.asr,
        base_model_dir=models.base,
        adapter_dir=models.adapter,
        prepared_model_dir=models.prepared,
        policies_dir=_bench_policies(work / "policies", options.policy_chars),
        asr_batch_size=options.asr_batch,
        gpu_slots=options.gpu_slots,
    )
    if options.max_new_tokens:
        settings = replace(settings, asr_max_new_tokens=options.max_new_tokens)
    gpu = _gpu(options.device)
    if options.gpu_memory_gib:
        settings = replace(settings, gpu_memory_gib=options.gpu_memory_gib)
        if gpu:  # hold the whole process to the budget, as a smaller card would
            total = gpu.get_device_properties(0).total_memory / 2**30
            gpu.set_per_process_memory_fraction(min(1.0, options.gpu_memory_gib / total))
    elif gpu:
        settings = replace(
            settings, gpu_memory_gib=gpu.get_device_properties(0).total_memory / 2**30
        )
    return settings


def build_models(options: BenchOptions) -> Any:
    """The tiny models, or the real-size ones in prepared form (at a small width with
    ``small_models``: the device script's rehearsal), reused when built."""
    from earmark_dev.bench.models import build_real_size_models
    from earmark_dev.tiny_models import build_tiny_models

    models_dir = options.models_dir or options.work_dir / "models"
    if options.tiny and not options.small_models:
        return build_tiny_models(models_dir)
    small = options.small_models
    return build_real_size_models(models_dir, options.device, options.dtype, small=small)


@dataclass(frozen=True)
class _Run:
    """What one benchmark run measured, before it is reduced to the report's figures."""

    units: list[int]
    results: list[Any]
    wall_s: float
    host: HostPeak
    gpu_peak: int | None
    production: Any  # DecodeTally of production's windows
    fair: Any  # BaselineFigures
    baseline: Any  # DecodeTally of the fair baseline's windows
    footnote: Any  # BaselineFigures of the batch-1 footnote, or None


def run_benchmark(options: BenchOptions) -> BenchReport:
    from earmark.store.db import Store
    from earmark_dev.bench.baseline import footnote_corpus, run_baselines
    from earmark_dev.bench.models import DecodeScript, scripted_decode

    phases: dict[str, float] = {}
    began = time.perf_counter()
    models = build_models(options)
    began = _phase(phases, "models", began)
    settings = _settings(options, models)
    corpus = make_corpus(
        options.work_dir / "corpus",
        options.scale,
        voices_dir=options.voices_dir,
        longest_s=options.longest_s,
    )
    db = options.work_dir / "results.db"
    db.unlink(missing_ok=True)
    store = Store.from_url(f"sqlite:///{db}")
    store.migrate()
    _register(store, corpus)
    began = _phase(phases, "corpus", began, f"{len(corpus)} files")
    script = DecodeScript(
        tokens_per_window=options.tokens_per_window,
        loop_share=options.loop_share,
        loop_periods=options.loop_periods,
    )
    gpu = _gpu(options.device)
    with scripted_decode(script) as tally:
        if gpu:
            gpu.reset_peak_memory_stats()
        with HostPeak() as host:
            units, results, wall_s = run_production(settings, store)
        gpu_peak = int(gpu.max_memory_allocated()) if gpu else None
        store.dispose()
        production = replace(tally)
        audio_s = sum(seconds for _, seconds in corpus)
        began = _phase(phases, "production", began, f"{audio_s / wall_s:.1f}x real time")
        workers = min(16, os.cpu_count() or 1)
        chosen = footnote_corpus(corpus, options.batch1_max_s)
        fair, baseline, footnote = run_baselines(settings, corpus, chosen, workers, tally)
        noted = f"{footnote.realtime_x:.1f}x" if footnote else "not run"
        note = f"fair {fair.realtime_x:.1f}x real time, batch-1 footnote {noted}"
        _phase(phases, "baselines", began, note)
    run = _Run(units, results, wall_s, host, gpu_peak, production, fair, baseline, footnote)
    return _report(options, settings, corpus, run, phases)


def _sum(results: list[Any], name: str, default: float | None = 0) -> float | None:
    """The field summed over ``results``; ``default`` where a result lacks it (None: the sum is
    None if any does: the field is not there yet)."""
    values = [getattr(r, name, default) for r in results]
    return None if any(v is None for v in values) else float(sum(v or 0 for v in values))


def _feature_wait_share(asr: list[Any]) -> float | None:
    for host_name, batch_name in FEATURE_WAIT_FIELDS:
        host, batch = _sum(asr, host_name, None), _sum(asr, batch_name, None)
        if host is not None and batch:
            return round(host / batch, 4)
    return None


def _share(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def _report(
    options: BenchOptions,
    settings: Any,
    corpus: list[tuple[Path, float]],
    run: _Run,
    phases: dict[str, float],
) -> BenchReport:
    asr, scored = list(run.results[0::2]), list(run.results[1::2])
    forwards = int(_sum(asr, "asr_forwards") or 0)
    rows = int(_sum(asr, "asr_rows") or 0)
    batch = max((r.asr_batch_size for r in asr), default=0)
    fed, padded = _sum(asr, "asr_fed_s") or 0.0, _sum(asr, "asr_padded_s") or 0.0
    gpu_task_s = _sum(run.results, "wall_s") or 0.0
    load_s = _sum(run.results, "load_s") or 0.0
    transcribing_s = (_sum(asr, "wall_s") or 0.0) - (_sum(asr, "load_s") or 0.0)
    audio_s = sum(seconds for _, seconds in corpus)
    realtime_x = audio_s / run.wall_s
    footnote = run.footnote
    decode = {**run.production.figures("asr"), **run.baseline.figures("baseline")}
    return BenchReport(
        mode="small-width" if options.small_models else "tiny" if options.tiny else "real-size",
        device=options.device,
        gpu_memory_gib=settings.gpu_memory_gib if _gpu(options.device) else None,
        files=len(corpus),
        audio_s=round(audio_s, 1),
        units=len(run.units),
        stages=2,
        model_loads=int(_sum(run.results, "model_loads") or 0),
        gpu_task_s=round(gpu_task_s, 3),
        load_s=round(load_s, 3),
        load_share=_share(load_s, gpu_task_s),
        asr_batch_size=batch,
        asr_forwards=forwards,
        asr_rows=rows,
        asr_batch_occupancy=_share(rows, forwards * batch),
        asr_fed_s=round(fed, 1),
        asr_padded_s=round(padded, 1),
        padded_fraction=_share(padded, fed + padded),
        tokens_per_window=options.tokens_per_window,
        max_new_tokens=settings.asr_max_new_tokens,
        **decode,
        feature_wait_share=_feature_wait_share(asr),
        asr_outside_generate_share=_share(
            transcribing_s - run.production.generate_s, transcribing_s
        ),
        wall_s=round(run.wall_s, 3),
        realtime_x=round(realtime_x, 2),
        host_peak_bytes=int(run.host.peak),
        host_start_bytes=int(run.host.start),
        gpu_peak_bytes=run.gpu_peak,
        nonfinite_scores=int(_sum(scored, "nonfinite_scores") or 0),
        no_speech_files=int(_sum(asr, "no_speech_files") or 0),
        baseline_design="fixed 30 s chunks batched across files; full-pass scoring, budget batches",
        baseline_audio_s=round(run.fair.audio_s, 1),
        baseline_wall_s=round(run.fair.wall_s, 3),
        baseline_realtime_x=round(run.fair.realtime_x, 2),
        baseline_windows=run.fair.windows,
        baseline_forwards=run.fair.forwards,
        ratio=round(realtime_x / run.fair.realtime_x, 3),
        batch1_audio_s=round(footnote.audio_s, 1) if footnote else None,
        batch1_wall_s=round(footnote.wall_s, 3) if footnote else None,
        batch1_realtime_x=round(footnote.realtime_x, 2) if footnote else None,
        phases_s=phases,
    )


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def format_report(report: BenchReport) -> str:
    r = report
    wait = "n/a" if r.feature_wait_share is None else f"{100 * r.feature_wait_share:.1f}%"
    footnote = (
        f"¹ batch-1 long-form (the old baseline) on the shortest {r.batch1_audio_s:.0f} s:"
        f" {r.batch1_realtime_x:.1f}x real time"
        if r.batch1_realtime_x is not None
        else "¹ batch-1 long-form not run"
    )
    return "\n".join(
        [
            f"GPU stage, {r.mode} models on {r.device}: {r.files} files, {r.audio_s / 3600:.2f} h"
            f" of audio, {r.units} units x {r.stages} stages, {r.model_loads} model loads",
            f"  production  {r.wall_s:.1f} s = {r.realtime_x:.1f}x real time; loading"
            f" {r.load_s:.1f} s of {r.gpu_task_s:.1f} s GPU-task time ({100 * r.load_share:.1f}%)",
            f"  whisper     {r.asr_rows} segments in {r.asr_forwards} forwards of"
            f" {r.asr_batch_size}: occupancy {r.asr_batch_occupancy:.2f}, padded"
            f" {100 * r.padded_fraction:.1f}% of what was fed",
            f"  decoding    {r.asr_tokens_per_window:.0f} tokens a window (script:"
            f" {r.tokens_per_window:.0f} for 30 s of speech, limit {r.max_new_tokens}); lockstep"
            f" occupancy {r.asr_lockstep_occupancy:.2f}; loops cut {r.asr_loops_cut} of"
            f" {r.asr_loop_windows}",
            f"  host        feature wait {wait} of batch time; outside generate"
            f" {100 * r.asr_outside_generate_share:.1f}% of transcription time",
            f"  memory      host peak {_gib(r.host_peak_bytes)} (from {_gib(r.host_start_bytes)}),"
            f" GPU peak {_gib(r.gpu_peak_bytes)}",
            f"  scores      {r.nonfinite_scores} non-finite; {r.no_speech_files} files without"
            " speech",
            f"  baseline    {r.baseline_audio_s / 3600:.2f} h in {r.baseline_wall_s:.1f} s ="
            f" {r.baseline_realtime_x:.1f}x real time ({r.baseline_design}; {r.baseline_windows}"
            f" windows, lockstep occupancy {r.baseline_lockstep_occupancy:.2f})",
            f"  ratio       {r.ratio:.2f}x the baseline's speed¹",
            f"  {footnote}",
        ]
    )


# The benchmark's options: flag, type, default, help (tiny and real defaults are in parse_args).
_FLAGS: tuple[tuple[str, Any, Any, str], ...] = (
    ("--device", str, None, "cpu or cuda (default: cuda if any)"),
    ("--dtype", str, None, "default: float32 tiny, bfloat16 real"),
    ("--scale", int, 1, "copies of each corpus length"),
    ("--longest-s", float, None, "leave out corpus files longer than this"),
    ("--tokens-per-window", float, None, "for 30 s of speech: tiny 8, real 100"),
    ("--max-new-tokens", int, None, "tiny 48, real production's (224)"),
    ("--loop-share", float, None, "share of windows that loop: tiny 0.05, real 0.02"),
    ("--asr-batch", int, None, "tiny 8, real 64"),
    ("--policy-chars", int, None, "tiny 300, real 1050"),
    ("--gpu-slots", int, 2, "units the day is split into"),
    ("--gpu-memory-gib", float, None, "cap the GPU at this (default: all)"),
    ("--voices-dir", Path, None, "speech when no espeak-ng"),
    ("--save-voices", Path, None, "write the spoken sentences here and exit"),
    ("--batch1-max-s", float, 600.0, "audio of the batch-1 footnote, shortest first (0: none)"),
    ("--threads", int, None, "torch CPU threads (tiny: 1, its ops gain nothing from more)"),
    ("--work-dir", Path, None, "default: a temp dir"),
    ("--models-dir", Path, None, "built models (reused)"),
)


def parse_args(argv: list[str] | None = None) -> tuple[BenchOptions, bool]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny offline models (CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--small-models", action="store_true", help="with --tiny: real-size builders, small width"
    )
    for flag, kind, default, text in _FLAGS:
        parser.add_argument(flag, type=kind, default=default, help=text)
    args = parser.parse_args(argv)
    if args.save_voices:
        save_voices(args.save_voices)
        raise SystemExit(0)
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    tiny = args.tiny
    threads = args.threads or (1 if tiny else None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    decode: dict[str, Any] = TINY_DECODE if tiny else REAL_DECODE
    options = BenchOptions(
        tiny=tiny,
        device=device,
        dtype=args.dtype or ("float32" if tiny else "bfloat16"),
        scale=args.scale,
        tokens_per_window=args.tokens_per_window or decode["tokens"],
        max_new_tokens=args.max_new_tokens or decode["max_new_tokens"],
        loop_share=decode["loop_share"] if args.loop_share is None else args.loop_share,
        loop_periods=decode["periods"],
        asr_batch=args.asr_batch or (8 if tiny else 64),
        policy_chars=args.policy_chars or (300 if tiny else 1050),
        gpu_slots=args.gpu_slots,
        gpu_memory_gib=args.gpu_memory_gib,
        voices_dir=args.voices_dir,
        batch1_max_s=args.batch1_max_s,
        longest_s=args.longest_s,
        small_models=tiny and args.small_models,
        work_dir=args.work_dir or Path(tempfile.mkdtemp(prefix="earmark-bench-")),
        models_dir=args.models_dir,
    )
    return options, args.json


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    options, as_json = parse_args(argv)
    report = run_benchmark(options)
    print(json.dumps(asdict(report)) if as_json else format_report(report))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
