"""The GPU-stage benchmark: production's loop over a day of mixed lengths, against the
sequential long-form baseline, measured in one run.

What runs is production's code: ``plan_work_units``, then ``transcribe_unit`` and
``classify_unit`` for each unit, each loading its model as a GPU task does, against a
throwaway SQLite results DB. The benchmark adds only the corpus, the timing and the baseline:
the same files decoded and transcribed with Whisper's sequential long-form algorithm
(``Transcriber.transcribe_longform``, one file at a time: batched long-form pads every file to
the longest and does not fit a 22 GiB card with a 2 h file in the batch) and scored with one
full pass per prompt (no prefix cache), the models loaded once.

Corpus: files from 5 s to 2 h of espeak-ng speech with room-noise pauses, long silences inside
the longest file, and one file with no speech at all. Random weights decode nonsense of any
length, so every window decodes exactly ``--tokens-per-window`` tokens in both paths
(``earmark_dev.bench.models.fix_decode_length``). Transcript text is never printed.

    python -m earmark_dev.bench.gpu_stage --tiny --json      # CPU, tiny models (CI runs it)
    python -m earmark_dev.bench.gpu_stage --models-dir /data/bench-models --scale 8 \
        --gpu-memory-gib 22                                  # real-size shapes, on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

DAY = "2026-11-29"
SAMPLE_RATE = 16000
# (seconds, silent stretches inside it): 5 s to 2 h; the 2 h file holds 3 x 10 min of silence.
CORPUS_LENGTHS = (
    (5, 0),
    (5, 0),
    (12, 0),
    (30, 0),
    (47, 0),
    (90, 0),
    (300, 0),
    (1200, 0),
    (7200, 3),
)
NO_SPEECH_FILE_S = 60
SENTENCES = (
    "The meeting starts at nine tomorrow morning in the small room on the second floor.",
    "Please bring the signed forms, your identity card and the letter from the bank.",
    "We will walk to the station together after lunch and then take the train home.",
    "Yes, that works for me.",
    "I am not sure that figure is right, let me check the numbers again before we send it.",
    "The delivery came late again, so we called the depot and asked them to phone us back.",
)
BENCH_POLICY = "Flag content that threatens, insults or harasses a person. " * 40


@dataclass(frozen=True)
class BenchOptions:
    tiny: bool
    device: str
    dtype: str
    scale: int
    tokens_per_window: int
    asr_batch: int
    policy_chars: int
    gpu_slots: int
    gpu_memory_gib: float | None
    work_dir: Path
    models_dir: Path | None
    voices_dir: Path | None = None
    baseline_max_s: float | None = None


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
    wall_s: float
    realtime_x: float
    host_peak_bytes: int
    gpu_peak_bytes: int | None
    baseline_audio_s: float
    baseline_wall_s: float
    baseline_realtime_x: float
    baseline_windows: int
    ratio: float


# ---- corpus --------------------------------------------------------------------------------


def _speech_track(seconds: float, rng: np.random.Generator, voices: list[np.ndarray]) -> np.ndarray:
    """Sentences with 0.2-1.5 s pauses of room noise, cut to ``seconds``."""
    from earmark_dev.speech import noise_floor

    parts: list[np.ndarray] = []
    total = 0
    target = int(seconds * SAMPLE_RATE)
    while total < target:
        voice = voices[int(rng.integers(len(voices)))]
        pause = noise_floor(float(rng.uniform(0.2, 1.5)), seed=int(rng.integers(1 << 30)))
        parts += [voice, pause]
        total += len(voice) + len(pause)
    return np.concatenate(parts)[:target]


def load_voices(voices_dir: Path | None) -> list[np.ndarray]:
    """The sentences spoken: by espeak-ng, or read from ``voices_dir`` (``*.flac`` at 16 kHz,
    written by ``save_voices`` on a machine that has espeak-ng)."""
    import soundfile as sf
    from earmark_dev.speech import say

    if voices_dir is not None and any(Path(voices_dir).glob("*.flac")):
        return [
            sf.read(str(path), dtype="float32")[0]
            for path in sorted(Path(voices_dir).glob("*.flac"))
        ]
    return [say(text) for text in SENTENCES]


def save_voices(voices_dir: Path) -> None:
    import soundfile as sf

    voices_dir.mkdir(parents=True, exist_ok=True)
    for k, voice in enumerate(load_voices(None)):
        sf.write(str(voices_dir / f"sentence-{k}.flac"), voice, SAMPLE_RATE)


def make_corpus(
    dest: Path, scale: int = 1, seed: int = 0, voices_dir: Path | None = None
) -> list[tuple[Path, float]]:
    """FLAC files of the corpus under ``dest`` (reused when present): ``(path, seconds)``."""
    import soundfile as sf
    from earmark_dev.speech import noise_floor

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    lengths = [(s, gaps) for s, gaps in CORPUS_LENGTHS for _ in range(scale)]
    files = [(dest / f"f{k:03d}-{s}s.flac", float(s)) for k, (s, _) in enumerate(lengths)]
    files.append((dest / f"f{len(files):03d}-no-speech.flac", float(NO_SPEECH_FILE_S)))
    if all(path.is_file() for path, _ in files):
        return files
    rng = np.random.default_rng(seed)
    voices = load_voices(voices_dir)
    for (path, seconds), (_, gaps) in zip(files, lengths, strict=False):
        if gaps:
            quiet = 600.0
            speech = (seconds - gaps * quiet) / (gaps + 1)
            pieces = []
            for k in range(gaps + 1):
                pieces.append(_speech_track(speech, rng, voices))
                if k < gaps:
                    pieces.append(noise_floor(quiet, seed=k))
            audio = np.concatenate(pieces)
        else:
            audio = _speech_track(seconds, rng, voices)
        sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
    sf.write(str(files[-1][0]), noise_floor(NO_SPEECH_FILE_S, seed=99), SAMPLE_RATE)
    return files


# ---- the run ------------------------------------------------------------------------------


def _reset_host_peak() -> None:
    """Linux: start VmHWM (the peak resident size) again from the current size."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")


def _host_peak_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


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


def run_baseline(settings: Any, corpus: list[tuple[Path, float]]) -> tuple[float, int]:
    """Sequential long-form Whisper, one file at a time, and one full classifier pass per
    prompt, models loaded once."""
    from earmark.gpu.models import stage_plan
    from earmark.inference.audio import load_audio
    from earmark.inference.classifier import Classifier, ClassifierOptions
    from earmark.inference.policies import load_policies
    from earmark.inference.transcriber import Transcriber, TranscriberOptions

    plan = stage_plan(settings)
    started = time.perf_counter()
    transcriber = Transcriber(
        TranscriberOptions(
            settings.asr_model_dir,
            device=plan.device,
            dtype=plan.dtype,
            # One file at a time: batched long-form pads every file to the longest (a 2 h file
            # with four shorter ones needs ~10 GB of host memory for log-mel alone).
            batch_size=1,
            max_new_tokens=settings.asr_max_new_tokens,
        )
    )
    encoder = transcriber.model.get_encoder()
    windows = [0]
    handle = encoder.register_forward_hook(
        lambda _m, args, kwargs, _o: windows.__setitem__(
            0, windows[0] + int(kwargs.get("input_features", args[0] if args else None).shape[0])
        ),
        with_kwargs=True,
    )
    texts = transcriber.transcribe_longform([load_audio(path) for path, _ in corpus])
    handle.remove()
    del transcriber
    classifier = Classifier(
        ClassifierOptions(
            base_dir=settings.prepared_model_dir,
            adapter_dir=None,
            device=plan.device,
            dtype=plan.dtype,
            batch_size=1,
            use_prefix_cache=False,
            max_context_tokens=plan.classify_max_context_tokens,
            attn_implementation=settings.classifier_attention,
        )
    )
    for policy in load_policies(settings.policies_dir):
        classifier.score(policy, [t for t in texts if t.strip()])
    return time.perf_counter() - started, windows[0]


def _baseline_corpus(
    corpus: list[tuple[Path, float]], scale: int, max_s: float | None
) -> list[tuple[Path, float]]:
    """The baseline is slow by design, and its figure is per audio second: it runs on one copy
    of each length, shortest first, up to ``max_s`` of audio when given, with the no-speech
    file."""
    chosen: list[tuple[Path, float]] = []
    for path, seconds in sorted(corpus[:-1][::scale], key=lambda f: f[1]):
        if max_s is not None and chosen and sum(s for _, s in chosen) + seconds > max_s:
            break
        chosen.append((path, seconds))
    return [*chosen, corpus[-1]]


def run_benchmark(options: BenchOptions) -> BenchReport:
    from earmark.config import Settings
    from earmark.store.db import Store
    from earmark_dev.bench.models import build_real_size_models, fix_decode_length
    from earmark_dev.tiny_models import build_tiny_models

    work = options.work_dir
    models_dir = options.models_dir or work / "models"
    if options.tiny:
        models = build_tiny_models(models_dir)
    else:
        models = build_real_size_models(models_dir, options.device, options.dtype)
    asr_dir = fix_decode_length(models.asr, work / "asr-fixed", options.tokens_per_window)
    settings = replace(
        Settings.from_env(),
        data_root=work / "data",
        device=options.device,
        dtype=options.dtype,
        asr_model_dir=asr_dir,
        base_model_dir=models.base,
        adapter_dir=models.adapter,
        prepared_model_dir=models.prepared,
        policies_dir=_bench_policies(work / "policies", options.policy_chars),
        asr_batch_size=options.asr_batch,
        asr_max_new_tokens=options.tokens_per_window,
        gpu_slots=options.gpu_slots,
    )
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
    corpus = make_corpus(work / "corpus", options.scale, voices_dir=options.voices_dir)
    audio_s = sum(seconds for _, seconds in corpus)
    db = work / "results.db"
    db.unlink(missing_ok=True)
    store = Store.from_url(f"sqlite:///{db}")
    store.migrate()
    _register(store, corpus)

    _reset_host_peak()
    if gpu:
        gpu.reset_peak_memory_stats()
    units, results, wall_s = run_production(settings, store)
    host_peak = _host_peak_bytes()
    gpu_peak = int(gpu.max_memory_allocated()) if gpu else None
    store.dispose()
    baseline_corpus = _baseline_corpus(corpus, options.scale, options.baseline_max_s)
    baseline_s, windows = run_baseline(settings, baseline_corpus)
    baseline_audio_s = sum(seconds for _, seconds in baseline_corpus)

    asr = list(results[0::2])
    forwards = sum(r.asr_forwards for r in asr)
    rows = sum(r.asr_rows for r in asr)
    batch = max((r.asr_batch_size for r in asr), default=0)
    fed = sum(r.asr_fed_s for r in asr)
    padded = sum(r.asr_padded_s for r in asr)
    gpu_task_s = sum(r.wall_s for r in results)
    load_s = sum(r.load_s for r in results)
    realtime_x = audio_s / wall_s
    baseline_x = baseline_audio_s / baseline_s
    return BenchReport(
        mode="tiny" if options.tiny else "real-size",
        device=options.device,
        gpu_memory_gib=settings.gpu_memory_gib if gpu else None,
        files=len(corpus),
        audio_s=round(audio_s, 1),
        units=len(units),
        stages=2,
        model_loads=sum(r.model_loads for r in results),
        gpu_task_s=round(gpu_task_s, 3),
        load_s=round(load_s, 3),
        load_share=round(load_s / gpu_task_s, 4) if gpu_task_s else 0.0,
        asr_batch_size=batch,
        asr_forwards=forwards,
        asr_rows=rows,
        asr_batch_occupancy=round(rows / (forwards * batch), 4) if forwards else 0.0,
        asr_fed_s=round(fed, 1),
        asr_padded_s=round(padded, 1),
        padded_fraction=round(padded / (fed + padded), 4) if fed + padded else 0.0,
        wall_s=round(wall_s, 3),
        realtime_x=round(realtime_x, 2),
        host_peak_bytes=host_peak,
        gpu_peak_bytes=gpu_peak,
        baseline_audio_s=round(baseline_audio_s, 1),
        baseline_wall_s=round(baseline_s, 3),
        baseline_realtime_x=round(baseline_x, 2),
        baseline_windows=windows,
        ratio=round(realtime_x / baseline_x, 3),
    )


def format_report(report: BenchReport) -> str:
    r = report
    return "\n".join(
        [
            f"GPU stage, {r.mode} models on {r.device}: {r.files} files, {r.audio_s / 3600:.2f} h"
            f" of audio, {r.units} units x {r.stages} stages, {r.model_loads} model loads",
            f"  production  {r.wall_s:.1f} s = {r.realtime_x:.1f}x real time; loading"
            f" {r.load_s:.1f} s of {r.gpu_task_s:.1f} s GPU-task time ({100 * r.load_share:.1f}%)",
            f"  whisper     {r.asr_rows} segments in {r.asr_forwards} forwards of"
            f" {r.asr_batch_size}: occupancy {r.asr_batch_occupancy:.2f}, padded"
            f" {100 * r.padded_fraction:.1f}% of what was fed",
            f"  memory      host peak {r.host_peak_bytes / 2**30:.2f} GiB, GPU peak "
            + ("n/a" if r.gpu_peak_bytes is None else f"{r.gpu_peak_bytes / 2**30:.2f} GiB"),
            f"  baseline    {r.baseline_audio_s / 3600:.2f} h in {r.baseline_wall_s:.1f} s ="
            f" {r.baseline_realtime_x:.1f}x real time (long-form, {r.baseline_windows} windows;"
            " full-pass scoring)",
            f"  ratio       {r.ratio:.2f}x the baseline's speed",
        ]
    )


def parse_args(argv: list[str] | None = None) -> tuple[BenchOptions, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny offline models (CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if any)")
    parser.add_argument("--dtype", default=None, help="default: float32 tiny, bfloat16 real")
    parser.add_argument("--scale", type=int, default=1, help="copies of each corpus length")
    parser.add_argument("--tokens-per-window", type=int, default=None, help="tiny 8, real 75")
    parser.add_argument("--asr-batch", type=int, default=None, help="tiny 8, real 64")
    parser.add_argument("--policy-chars", type=int, default=None, help="tiny 300, real 1050")
    parser.add_argument("--gpu-slots", type=int, default=2, help="units the day is split into")
    parser.add_argument(
        "--gpu-memory-gib", type=float, default=None, help="cap the GPU at this (default: all)"
    )
    parser.add_argument("--voices-dir", type=Path, default=None, help="speech when no espeak-ng")
    parser.add_argument(
        "--save-voices", type=Path, default=None, help="write the spoken sentences here and exit"
    )
    parser.add_argument(
        "--baseline-max-s",
        type=float,
        default=None,
        help="run the baseline on the shortest files up to this much audio (default: all)",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--models-dir", type=Path, default=None, help="built models (reused)")
    args = parser.parse_args(argv)
    if args.save_voices:
        save_voices(args.save_voices)
        raise SystemExit(0)
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    tiny = args.tiny
    options = BenchOptions(
        tiny=tiny,
        device=device,
        dtype=args.dtype or ("float32" if tiny else "bfloat16"),
        scale=args.scale,
        tokens_per_window=args.tokens_per_window or (8 if tiny else 75),
        asr_batch=args.asr_batch or (8 if tiny else 64),
        policy_chars=args.policy_chars or (300 if tiny else 1050),
        gpu_slots=args.gpu_slots,
        gpu_memory_gib=args.gpu_memory_gib,
        voices_dir=args.voices_dir,
        baseline_max_s=args.baseline_max_s,
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
