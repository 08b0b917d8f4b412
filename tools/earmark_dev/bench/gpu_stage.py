"""Benchmark of the whole GPU stage against a straightforward baseline, measured in one run.

Stage: decode + resample (thread pool), Whisper transcription (batched sequential long-form),
CoPE-A scoring against one ~1,000-token policy (batched, shared policy-prefix KV cache), and an
in-memory SQLite write standing for the results DB. Both paths go through the production
classes (``load_many``, ``Transcriber``, ``Classifier``) loaded from disk.

Baseline, same models and inputs: per file ``load_audio`` + transformers
``pipeline("automatic-speech-recognition", chunk_length_s=30, batch_size=1)``, then one full
forward per item on the whole prompt (no prefix cache, batch 1), P("1") from the last logits.
It runs on a duration-stratified subset; its figures are per audio second, so the ratio is fair.

Random weights would decode to arbitrary lengths, so every 30 s window is forced to exactly
``--tokens-per-window`` tokens in both paths (min_new_tokens = max_new_tokens, timestamps after
<|0.00|> suppressed so long-form decoding advances a full window each time). For the same
reason the classifier does not see the random transcripts: each file gets a stand-in transcript
of the length a real one would have (``tokens_per_window`` tokens per 30 s of audio, neutral
words); scoring cost depends only on token counts. Transcript text is never printed.

Modes: real-size (default; Whisper large-v3-turbo and Gemma-2-9B + LoRA r=16 architectures
with random weights, built in code, saved and reloaded; needs CUDA), ``--tiny`` (the tiny
offline models, CPU, seconds), ``--dry-run`` (configs and parameter counts only, on the meta
device; no weights allocated).

    python -m earmark_dev.bench.gpu_stage --device cuda
    python -m earmark_dev.bench.gpu_stage --tiny
    python -m earmark_dev.bench.gpu_stage --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import os
import resource
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from earmark.config import PROJECT_ROOT
from earmark.inference.budget import (
    GEMMA2_9B,
    GIB,
    WHISPER_LARGE_V3_TURBO,
    AsrFootprint,
    BatchSizes,
    ClassifierFootprint,
    batch_sizes,
)

POLICY_DIR = PROJECT_ROOT / "include" / "policies"
POLICY_NAME = "harassment"
MARKER = ".earmark-bench-real-models-complete"
WINDOW_S = 30.0
ATTN_CHOICES = ("eager", "flex_attention", "flash_attention_2")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FILLER_TEXT = (
    "the call was about a delivery that arrived late and the customer asked when the next "
    "van would come by so we checked the order number and the address again then agreed to "
    "send a note to the depot before noon tomorrow thanks for your patience have a good day "
    "yes that works for me I will be at home after three o'clock okay speak soon"
)
FILLER_WORDS = tuple(FILLER_TEXT.split())

# Real-size architectures (random weights). Token ids come from the tiny byte-level
# tokenizers, which lay their ids out like the real ones and stay inside the real vocab.
WHISPER_TURBO = {
    "d_model": 1280,
    "encoder_layers": 32,
    "decoder_layers": 4,
    "encoder_attention_heads": 20,
    "decoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "vocab_size": 51866,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}
GEMMA2_9B_ARCH = {
    "hidden_size": 3584,
    "num_hidden_layers": 42,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 256,
    "intermediate_size": 14336,
    "vocab_size": 256000,
    "sliding_window": 4096,
    "query_pre_attn_scalar": 256,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "max_position_embeddings": 8192,
}
LORA_RANK = 16


@dataclass
class BenchOptions:
    """Command-line options; ``None`` means the mode's default (see ``resolved``)."""

    tiny: bool = False
    dry_run: bool = False
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "eager"
    asr_batch: int | None = None
    classify_batch: int | None = None
    gpu_memory_gib: float = 22.0
    files: int | None = None
    minutes: float | None = None
    baseline_files: int | None = None
    tokens_per_window: int | None = None
    policy_tokens: int = 1000
    decode_workers: int = 4
    models_dir: Path | None = None
    work_dir: Path | None = None
    seed: int = 0

    def resolved(self) -> BenchOptions:
        """A copy with mode defaults filled in: real-size 64 files / 60 min, tiny 6 / 4."""
        tiny = self.tiny
        out = BenchOptions(**vars(self))
        out.files = self.files or (6 if tiny else 64)
        out.minutes = self.minutes or (4.0 if tiny else 60.0)
        out.baseline_files = self.baseline_files or (3 if tiny else 8)
        out.tokens_per_window = self.tokens_per_window or (16 if tiny else 100)
        if out.device == "auto":
            out.device = "cuda" if _cuda_available() else "cpu"
        if out.dtype == "auto":
            out.dtype = "bfloat16" if out.device.startswith("cuda") else "float32"
        return out


@dataclass
class PathFigures:
    """Timing and memory of one path (optimized or baseline) over its files."""

    name: str
    files: int
    audio_s: float
    asr_s: float
    classify_s: float
    write_s: float
    asr_windows: int
    classify_tokens: int
    asr_peak_bytes: int | None
    classify_peak_bytes: int | None
    decode_wait_s: float = 0.0

    @property
    def wall_s(self) -> float:
        """Wall time of the whole stage (model loading excluded)."""
        return self.asr_s + self.classify_s + self.write_s

    @property
    def real_time_factor(self) -> float:
        """Audio seconds processed per wall second."""
        return self.audio_s / self.wall_s

    @property
    def items_per_s(self) -> float:
        """Files through the whole stage (one policy) per wall second."""
        return self.files / self.wall_s

    @property
    def peak_bytes(self) -> int | None:
        """Peak GPU memory of the stage (the larger of its two tasks)."""
        peaks = [p for p in (self.asr_peak_bytes, self.classify_peak_bytes) if p is not None]
        return max(peaks) if peaks else None


@dataclass
class BenchReport:
    """Everything the benchmark prints."""

    options: BenchOptions
    corpus_files: int
    corpus_audio_s: float
    sample_rates: dict[int, int]
    policy_tokens: int
    prefix_tokens: int
    sizes: BatchSizes | None
    asr_batch: int
    classify_batch: int
    max_batch_tokens: int | None
    max_context_tokens: int
    optimized: PathFigures
    baseline: PathFigures
    classifier_weights_bytes: int | None
    load_s: dict[str, float] = field(default_factory=dict)
    rss_peak_bytes: int = 0

    @property
    def rtf_ratio(self) -> float:
        """Optimized over baseline real-time factor (= per-audio-second items/s ratio)."""
        return self.optimized.real_time_factor / self.baseline.real_time_factor


# ---- small helpers ----------------------------------------------------------------------


def _cuda_available() -> bool:
    import torch  # noqa: PLC0415 - heavy

    return torch.cuda.is_available()


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _sync(device: str) -> None:
    if _is_cuda(device):
        import torch  # noqa: PLC0415

        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if _is_cuda(device):
        import torch  # noqa: PLC0415

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int | None:
    if _is_cuda(device):
        import torch  # noqa: PLC0415

        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    return None


def _free_memory(device: str) -> None:
    gc.collect()
    if _is_cuda(device):
        import torch  # noqa: PLC0415

        torch.cuda.empty_cache()


def _rss_peak_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / GIB:.2f} GiB"


def stratified_subset(durations: Sequence[float], count: int) -> list[int]:
    """``count`` indices spread evenly over the files sorted by duration (short to long)."""
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    if count >= len(order):
        return order
    if count <= 1:
        return [order[len(order) // 2]]
    picks = {order[round(k * (len(order) - 1) / (count - 1))] for k in range(count)}
    return sorted(picks, key=lambda i: durations[i])


# ---- configs and parameter counts ---------------------------------------------------------


def whisper_token_ids() -> dict[str, int]:
    """Special-token ids of the tiny Whisper tokenizer: 256 byte symbols, then the specials."""
    from earmark_dev.tiny_models import WHISPER_SPECIALS  # noqa: PLC0415

    return {tok: 256 + i for i, tok in enumerate(WHISPER_SPECIALS)}


def whisper_turbo_config() -> Any:
    """WhisperConfig of large-v3-turbo with the tiny tokenizer's special-token ids."""
    from transformers import WhisperConfig  # noqa: PLC0415

    ids = whisper_token_ids()
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    return WhisperConfig(
        **WHISPER_TURBO,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )


def gemma2_9b_config() -> Any:
    """Gemma2Config of Gemma-2-9B with the tiny tokenizer's pad/eos/bos ids (0, 1, 2)."""
    from transformers import Gemma2Config  # noqa: PLC0415

    return Gemma2Config(**GEMMA2_9B_ARCH, pad_token_id=0, eos_token_id=1, bos_token_id=2)


def count_parameters(model_class: Any, config: Any) -> int:
    """Parameters of ``model_class(config)`` built on the meta device (nothing allocated)."""
    import torch  # noqa: PLC0415

    with torch.device("meta"):
        model = model_class(config)
    return sum(p.numel() for p in model.parameters())


def lora_parameters(config: Any, rank: int) -> int:
    """Parameters of a LoRA adapter of ``rank`` on q,k,v,o,gate,up,down of a Gemma-2 config."""
    h, d, i = config.hidden_size, config.head_dim, config.intermediate_size
    q, kv = config.num_attention_heads * d, config.num_key_value_heads * d
    shapes = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    return config.num_hidden_layers * sum(rank * (a + b) for a, b in shapes)


def dry_run(options: BenchOptions) -> dict[str, int]:
    """Build the real-size configs, count parameters on the meta device and print them."""
    from transformers import Gemma2ForCausalLM, WhisperForConditionalGeneration  # noqa: PLC0415

    whisper_cfg, gemma_cfg = whisper_turbo_config(), gemma2_9b_config()
    counts = {
        "whisper": count_parameters(WhisperForConditionalGeneration, whisper_cfg),
        "gemma": count_parameters(Gemma2ForCausalLM, gemma_cfg),
        "lora": lora_parameters(gemma_cfg, LORA_RANK),
    }
    footprint = ClassifierFootprint.from_config(gemma_cfg, weights_gib=GEMMA2_9B.weights_gib)
    print("Earmark GPU-stage benchmark: dry run (real-size configs on the meta device)")
    print(
        f"whisper large-v3-turbo: {counts['whisper'] / 1e6:.1f}M parameters "
        f"(bf16 {counts['whisper'] * 2 / GIB:.2f} GiB), d_model {whisper_cfg.d_model}, "
        f"encoder {whisper_cfg.encoder_layers} / decoder {whisper_cfg.decoder_layers} layers, "
        f"{whisper_cfg.num_mel_bins} mel bins, vocab {whisper_cfg.vocab_size}"
    )
    print(
        f"gemma-2-9b: {counts['gemma'] / 1e9:.2f}B parameters "
        f"(bf16 {counts['gemma'] * 2 / GIB:.2f} GiB with tied embeddings), "
        f"{gemma_cfg.num_hidden_layers} layers, {gemma_cfg.num_attention_heads} heads / "
        f"{gemma_cfg.num_key_value_heads} KV heads x {gemma_cfg.head_dim}, "
        f"sliding window {gemma_cfg.sliding_window}, soft-caps "
        f"{gemma_cfg.attn_logit_softcapping}/{gemma_cfg.final_logit_softcapping}"
    )
    print(f"lora r={LORA_RANK} on {','.join(LORA_TARGETS)}: {counts['lora'] / 1e6:.1f}M parameters")
    print(f"kv cache: {footprint.kv_bytes_per_token:,} bytes per token")
    prompt = options.policy_tokens + 60 + 2 * (options.tokens_per_window or 100)
    sizes = batch_sizes(
        options.gpu_memory_gib,
        classifier_prompt_tokens=prompt,
        prefix_tokens=options.policy_tokens + 50,
        attn_implementation=options.attn,
    )
    print(
        f"budget {options.gpu_memory_gib:g} GiB ({options.attn}, ~{prompt}-token prompts): "
        f"asr batch {sizes.asr_batch}, classify batch {sizes.classify_batch}, max batch tokens "
        f"{sizes.classify_max_batch_tokens}, max context {sizes.classify_max_context_tokens}"
    )
    return counts


# ---- models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDirs:
    """Where the Whisper processor+model, the Gemma base and the LoRA adapter live."""

    asr: Path
    base: Path
    adapter: Path


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    import torch  # noqa: PLC0415

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_real_size_models(dest: Path, device: str, dtype: str) -> ModelDirs:
    """Random-weight Whisper large-v3-turbo and Gemma-2-9B + LoRA r=16, saved under ``dest``.

    Built directly on ``device`` in ``dtype`` (a 9B model in fp32 on the CPU would need
    37 GB), saved with ``save_pretrained`` and reused on the next run (a marker file is
    written last). Tokenizers are the tiny byte-level ones. No network access.
    """
    import torch  # noqa: PLC0415
    from earmark_dev.tiny_models import build_tiny_models  # noqa: PLC0415
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415
    from transformers import (  # noqa: PLC0415
        AutoTokenizer,
        Gemma2ForCausalLM,
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    dest = Path(dest)
    dirs = ModelDirs(asr=dest / "asr", base=dest / "base", adapter=dest / "adapter")
    if (dest / MARKER).is_file():
        return dirs
    torch_dtype = getattr(torch, dtype)
    tiny = build_tiny_models(dest / "tiny")
    for sub in (dirs.asr, dirs.base, dirs.adapter):
        if sub.exists():
            shutil.rmtree(sub)

    tokenizer = WhisperTokenizer.from_pretrained(tiny.asr)
    for tok, expected in whisper_token_ids().items():
        if tokenizer.convert_tokens_to_ids(tok) != expected:
            raise RuntimeError(f"tiny Whisper tokenizer layout changed: {tok} is not {expected}")
    torch.manual_seed(0)
    with torch.device(device), _default_dtype(torch_dtype):
        whisper = WhisperForConditionalGeneration(whisper_turbo_config()).eval()
    whisper.generation_config = GenerationConfig.from_pretrained(tiny.asr)
    whisper.save_pretrained(dirs.asr)
    del whisper
    _free_memory(device)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer
    )
    processor.save_pretrained(dirs.asr)

    gemma_cfg = gemma2_9b_config()
    with torch.device(device), _default_dtype(torch_dtype):
        base = Gemma2ForCausalLM(gemma_cfg).eval()
    base.save_pretrained(dirs.base)
    AutoTokenizer.from_pretrained(tiny.base).save_pretrained(dirs.base)
    torch.manual_seed(1)
    lora = LoraConfig(
        r=LORA_RANK,
        lora_alpha=2 * LORA_RANK,
        target_modules=list(LORA_TARGETS),
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, lora)
    peft_model.save_pretrained(dirs.adapter)
    del peft_model, base
    _free_memory(device)
    (dest / MARKER).write_text("ok\n", encoding="utf-8")
    return dirs


def force_decode_length(model: Any, tokenizer: Any, tokens: int) -> None:
    """Make every 30 s window decode exactly ``tokens`` tokens (random weights, honest timing).

    EOS is held off until ``tokens`` new tokens (min = max). Special tokens other than EOS,
    every timestamp after <|0.00|>, and ids past the tokenizer are suppressed: long-form
    decoding then emits <|0.00|> + text, which has no segment end, so each window advances
    by the full 30 s, as real speech transcripts roughly do.
    """
    gen = model.generation_config
    timestamp_begin = gen.no_timestamps_token_id + 1
    vocab = model.config.vocab_size
    suppress = set(tokenizer.all_special_ids) | {gen.no_timestamps_token_id}
    suppress |= set(range(timestamp_begin + 1, vocab))
    suppress -= {gen.eos_token_id, timestamp_begin}
    gen.suppress_tokens = sorted(i for i in suppress if 0 <= i < vocab)
    gen.min_new_tokens = tokens
    gen.max_new_tokens = tokens
    gen.max_length = None


class _WindowCounter:
    """Forward hook on the Whisper encoder: counts the 30 s windows it encodes."""

    def __init__(self) -> None:
        self.windows = 0

    def __call__(self, _module: Any, args: tuple, kwargs: dict, _output: Any) -> None:
        features = kwargs.get("input_features", args[0] if args else None)
        if features is not None:
            self.windows += int(features.shape[0])


# ---- corpus, policy, contents ----------------------------------------------------------------


def make_corpus(dest: Path, files: int, minutes: float, seed: int) -> list[Path]:
    """Speech-like WAV/FLAC files at 16/22.05/44.1/48 kHz, mono and stereo, mixed lengths.

    Uses ``earmark_dev.sampledata`` (one archive, extracted); falls back to simple tones+noise.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        from earmark_dev.sampledata import generate_day  # noqa: PLC0415
    except ImportError:
        return _synth_corpus(dest, files, minutes, seed)
    incoming = dest / "incoming"
    archives = generate_day(
        incoming,
        dt.date(2026, 1, 5),
        archives=1,
        files_per_archive=files,
        minutes=minutes,
        seed=seed,
    )
    out = dest / "audio"
    for archive in archives:
        with tarfile.open(archive) as tf:
            tf.extractall(out, filter="data")
    shutil.rmtree(incoming)
    return sorted(p for p in out.rglob("*") if p.suffix in {".wav", ".flac"})


def _synth_corpus(dest: Path, files: int, minutes: float, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.2, 1.8, files)
    durations = np.maximum(1.0, weights / weights.sum() * minutes * 60)
    rates = (16000, 22050, 44100, 48000)
    paths = []
    for i, seconds in enumerate(durations):
        sr = rates[i % len(rates)]
        t = np.arange(int(seconds * sr)) / sr
        tone = np.sin(2 * np.pi * (140 + 40 * np.sin(2 * np.pi * 0.3 * t)) * t)
        audio = 0.3 * tone * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(
            t.size
        )
        path = dest / f"rec-{i:03d}.{'wav' if i % 2 else 'flac'}"
        data = np.stack([audio, audio], axis=1) if i % 3 == 0 else audio
        sf.write(path, data.astype(np.float32), sr, subtype="PCM_16")
        paths.append(path)
    return paths


def _token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _cut_to_tokens(tokenizer: Any, text: str, tokens: int) -> str:
    """The longest prefix of ``text`` made of its first ``tokens`` tokens."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= tokens:
        return text
    return text[: offsets[tokens - 1][1]]


def fit_policy(text: str, tokenizer: Any, tokens: int) -> str:
    """The policy text repeated or trimmed to about ``tokens`` tokens of ``tokenizer``."""
    body = text
    while _token_count(tokenizer, body) < tokens:
        body = f"{body}\n\n{text}"
    return _cut_to_tokens(tokenizer, body, tokens).rstrip()


def stand_in_transcript(tokenizer: Any, tokens: int, seed: int) -> str:
    """Neutral words, cut to ``tokens`` tokens: the length, not the text, of a transcript."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    text = ""
    while True:
        words += [FILLER_WORDS[k] for k in rng.integers(len(FILLER_WORDS), size=2 * tokens + 8)]
        text = " ".join(words)
        if _token_count(tokenizer, text) >= tokens:
            return _cut_to_tokens(tokenizer, text, tokens).rstrip()


# ---- the two paths ----------------------------------------------------------------------------


@dataclass
class _Corpus:
    paths: list[Path]
    durations: list[float]
    contents: list[str]


def _write_results(rows: list[tuple[int, str, str, float]]) -> float:
    """Seconds to upsert transcripts and scores into an in-memory SQLite DB (one transaction)."""
    started = time.perf_counter()
    db = sqlite3.connect(":memory:")
    try:
        db.execute(
            "CREATE TABLE results (file_id INTEGER PRIMARY KEY, transcript TEXT,"
            " n_chars INTEGER, content TEXT, score REAL, label INTEGER)"
        )
        with db:
            db.executemany(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (file_id) DO UPDATE"
                " SET transcript = excluded.transcript, score = excluded.score",
                [(f, t, len(t), c, s, int(s >= 0.5)) for f, t, c, s in rows],
            )
    finally:
        db.close()
    return time.perf_counter() - started


def _transcribe_optimized(
    transcriber: Any, paths: list[Path], durations: list[float], batch: int, workers: int
) -> tuple[list[str], float, float]:
    """As ``screening.transcribe_unit``: longest first, decode pool feeding batches."""
    from earmark.inference.audio import AudioDecodeError, load_many  # noqa: PLC0415

    order = sorted(range(len(paths)), key=lambda i: -durations[i])
    texts: list[str] = [""] * len(paths)
    chunk_ids: list[int] = []
    chunk_audio: list[np.ndarray] = []
    waited = 0.0

    def flush() -> None:
        for index, text in zip(chunk_ids, transcriber.transcribe(chunk_audio), strict=True):
            texts[index] = text
        chunk_ids.clear()
        chunk_audio.clear()

    stream = load_many([paths[i] for i in order], 16000, workers=workers)
    audio_s = 0.0
    while True:
        t0 = time.perf_counter()
        item = next(stream, None)
        waited += time.perf_counter() - t0
        if item is None:
            break
        position, decoded = item
        if isinstance(decoded, AudioDecodeError):
            raise RuntimeError(f"benchmark corpus file failed to decode: {decoded}")
        chunk_ids.append(order[position])
        chunk_audio.append(decoded)
        audio_s += len(decoded) / 16000
        if len(chunk_audio) >= batch:
            flush()
    if chunk_audio:
        flush()
    return texts, audio_s, waited


def _transcribe_baseline(pipe: Any, paths: list[Path], tokens: int) -> tuple[list[str], float]:
    """Per file: decode + resample, then the chunking pipeline at batch size 1."""
    from earmark.inference.audio import load_audio  # noqa: PLC0415

    texts = []
    audio_s = 0.0
    kwargs = {
        "language": "en",
        "task": "transcribe",
        "max_new_tokens": tokens,
        "min_new_tokens": tokens,
    }
    for path in paths:
        audio = load_audio(path)
        audio_s += len(audio) / 16000
        out = pipe({"raw": audio, "sampling_rate": 16000}, generate_kwargs=kwargs)
        texts.append(out["text"])
    return texts, audio_s


def _score_baseline(
    classifier: Any, policy_text: str, contents: list[str]
) -> tuple[list[float], int]:
    """One full forward per item, batch 1, no cache reuse; P("1") from the last logits."""
    import torch  # noqa: PLC0415
    from earmark.inference.prompt import build_prompt  # noqa: PLC0415

    model, tokenizer = classifier.model, classifier.tokenizer
    one = tokenizer.encode("1", add_special_tokens=False)[0]
    zero = tokenizer.encode("0", add_special_tokens=False)[0]
    scores, tokens = [], 0
    with torch.inference_mode():
        for content in contents:
            ids = tokenizer(build_prompt(policy_text, content), return_tensors="pt")["input_ids"]
            tokens += ids.shape[1]
            logits = model(input_ids=ids.to(classifier.device)).logits[0, -1].float()
            scores.append(float(torch.softmax(logits[[one, zero]], dim=-1)[0]))
    return scores, tokens


def _prompt_tokens(classifier: Any, policy_text: str, contents: list[str]) -> int:
    from earmark.inference.prompt import build_prompt  # noqa: PLC0415

    return sum(
        _token_count(classifier.tokenizer, build_prompt(policy_text, c)) + 1 for c in contents
    )


# ---- orchestration ------------------------------------------------------------


def run_benchmark(options: BenchOptions, log: Callable[[str], None] = print) -> BenchReport:
    """Build models and corpus, run both paths, return the figures (progress goes to ``log``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    opts = options.resolved()
    assert opts.files and opts.minutes and opts.baseline_files and opts.tokens_per_window
    if _is_cuda(opts.device) and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch sees no CUDA device")
    if not opts.tiny and not _is_cuda(opts.device):
        raise SystemExit(
            "real-size mode needs a CUDA GPU (Gemma-2-9B alone is 18.9 GiB in bf16); "
            "use --tiny for the CPU version or --dry-run for the configs"
        )
    work = Path(opts.work_dir or tempfile.mkdtemp(prefix="earmark-bench-"))
    cleanup = opts.work_dir is None
    try:
        return _run(opts, work, log)
    finally:
        if cleanup:
            shutil.rmtree(work, ignore_errors=True)


def _run(opts: BenchOptions, work: Path, log: Callable[[str], None]) -> BenchReport:
    import torch  # noqa: PLC0415
    from earmark.inference.policies import Policy, load_policies  # noqa: PLC0415
    from earmark.inference.prompt import split_prompt  # noqa: PLC0415
    from earmark_dev.tiny_models import build_tiny_models  # noqa: PLC0415
    from transformers import AutoTokenizer  # noqa: PLC0415

    assert opts.files and opts.minutes and opts.baseline_files and opts.tokens_per_window
    torch.manual_seed(opts.seed)
    load_s: dict[str, float] = {}
    started = time.perf_counter()
    models_dir = Path(opts.models_dir or work / "models")
    if opts.tiny:
        tiny = build_tiny_models(models_dir)
        dirs = ModelDirs(asr=tiny.asr, base=tiny.base, adapter=tiny.adapter)
    else:
        log(f"building real-size random-weight models under {models_dir} (reused if present)")
        dirs = build_real_size_models(models_dir, opts.device, opts.dtype)
    load_s["build models"] = time.perf_counter() - started

    started = time.perf_counter()
    paths = make_corpus(work / "corpus", opts.files, opts.minutes, opts.seed)
    infos = [sf.info(str(p)) for p in paths]
    durations = [float(info.duration) for info in infos]
    rates = dict(Counter(int(info.samplerate) for info in infos))
    load_s["corpus"] = time.perf_counter() - started

    gemma_tokenizer = AutoTokenizer.from_pretrained(dirs.base)
    source = next(p for p in load_policies(POLICY_DIR) if p.name == POLICY_NAME)
    policy_text = fit_policy(source.text, gemma_tokenizer, opts.policy_tokens)
    policy = Policy(name=source.name, text=policy_text, sha256=source.sha256)
    policy_tokens = _token_count(gemma_tokenizer, policy_text)
    prefix_tokens = len(gemma_tokenizer(split_prompt(policy_text)[0])["input_ids"])
    contents = [
        stand_in_transcript(
            gemma_tokenizer,
            max(1, round(d / WINDOW_S * opts.tokens_per_window)),
            opts.seed * 100_003 + i,
        )
        for i, d in enumerate(durations)
    ]
    corpus = _Corpus(paths, durations, contents)
    subset = stratified_subset(durations, opts.baseline_files)

    # Batch sizes: explicit, else from the memory budget.
    prompt_tokens = (
        round(sum(len(gemma_tokenizer(c)["input_ids"]) for c in contents) / len(contents))
        + prefix_tokens
        + 10
    )
    sizes = None
    if opts.asr_batch is None or opts.classify_batch is None:
        sizes = _budget(opts, dirs, prompt_tokens, prefix_tokens)
    asr_batch = opts.asr_batch or (sizes.asr_batch if sizes else 1)
    classify_batch = opts.classify_batch or (sizes.classify_batch if sizes else 1)
    max_batch_tokens = None if opts.classify_batch or not sizes else sizes.classify_max_batch_tokens
    max_context = sizes.classify_max_context_tokens if sizes else 8192

    asr = _asr_stage(opts, dirs, corpus, subset, asr_batch, log)
    load_s["load whisper"] = asr.pop("load_s")
    cls = _classify_stage(
        opts, dirs, corpus, subset, policy, classify_batch, max_batch_tokens, max_context, log
    )
    load_s["load classifier"] = cls.pop("load_s")

    # ---- write: stands in for the results-DB upserts ----
    texts, scores = asr.pop("texts"), cls.pop("scores")
    opt_write_s = _write_results([(i, texts[i], contents[i], scores[i]) for i in range(len(paths))])
    base_texts, base_scores = asr.pop("base_texts"), cls.pop("base_scores")
    base_write_s = _write_results(
        [(i, t, contents[i], s) for i, t, s in zip(subset, base_texts, base_scores, strict=True)]
    )
    optimized = PathFigures(
        name="optimized",
        files=len(paths),
        audio_s=asr["audio_s"],
        asr_s=asr["asr_s"],
        classify_s=cls["cls_s"],
        write_s=opt_write_s,
        asr_windows=asr["windows"],
        classify_tokens=cls["tokens"],
        asr_peak_bytes=asr["peak"],
        classify_peak_bytes=cls["peak"],
        decode_wait_s=asr["waited"],
    )
    baseline = PathFigures(
        name="baseline",
        files=len(subset),
        audio_s=asr["base_audio_s"],
        asr_s=asr["base_asr_s"],
        classify_s=cls["base_cls_s"],
        write_s=base_write_s,
        asr_windows=asr["base_windows"],
        classify_tokens=cls["base_tokens"],
        asr_peak_bytes=asr["base_peak"],
        classify_peak_bytes=cls["base_peak"],
    )
    return BenchReport(
        options=opts,
        corpus_files=len(paths),
        corpus_audio_s=sum(durations),
        sample_rates=dict(sorted(rates.items())),
        policy_tokens=policy_tokens,
        prefix_tokens=prefix_tokens,
        sizes=sizes,
        asr_batch=asr_batch,
        classify_batch=classify_batch,
        max_batch_tokens=max_batch_tokens,
        max_context_tokens=max_context,
        optimized=optimized,
        baseline=baseline,
        classifier_weights_bytes=cls["weights"],
        load_s=load_s,
        rss_peak_bytes=_rss_peak_bytes(),
    )


def _budget(
    opts: BenchOptions, dirs: ModelDirs, prompt_tokens: int, prefix_tokens: int
) -> BatchSizes:
    """Batch sizes from ``--gpu-memory-gib``: Gemma-2-9B / turbo figures, or the tiny config's."""
    if not opts.tiny:
        return batch_sizes(
            opts.gpu_memory_gib,
            classifier_prompt_tokens=prompt_tokens,
            prefix_tokens=prefix_tokens,
            attn_implementation=opts.attn,
            asr=WHISPER_LARGE_V3_TURBO,
        )
    from transformers import AutoConfig  # noqa: PLC0415

    footprint = ClassifierFootprint.from_config(
        AutoConfig.from_pretrained(dirs.base), weights_gib=0.01
    )
    return batch_sizes(
        opts.gpu_memory_gib,
        classifier_prompt_tokens=prompt_tokens,
        prefix_tokens=prefix_tokens,
        attn_implementation=opts.attn,
        max_classify_batch=4,
        classifier=footprint,
        asr=AsrFootprint(peak_gib=0.05, max_batch=4),
        overhead_gib=0.0,
    )


def _timed(device: str, fn: Callable[[], Any]) -> tuple[Any, float, int | None]:
    """``fn()``, its wall seconds (device synchronised) and the peak GPU memory during it."""
    _reset_peak(device)
    started = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - started, _peak(device)


def _asr_stage(
    opts: BenchOptions,
    dirs: ModelDirs,
    corpus: _Corpus,
    subset: list[int],
    asr_batch: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Both transcription paths on one loaded Whisper (the pipeline shares the model)."""
    import torch  # noqa: PLC0415
    from earmark.inference.transcriber import Transcriber, TranscriberOptions  # noqa: PLC0415
    from transformers import pipeline  # noqa: PLC0415

    assert opts.tokens_per_window
    tokens = opts.tokens_per_window
    started = time.perf_counter()
    transcriber = Transcriber(
        TranscriberOptions(
            model_dir=dirs.asr,
            device=opts.device,
            dtype=opts.dtype,
            batch_size=asr_batch,
            max_new_tokens=tokens,
        )
    )
    force_decode_length(transcriber.model, transcriber.processor.tokenizer, tokens)
    pipe = pipeline(
        "automatic-speech-recognition",
        model=transcriber.model,
        tokenizer=transcriber.processor.tokenizer,
        feature_extractor=transcriber.processor.feature_extractor,
        chunk_length_s=30,
        batch_size=1,
        device=torch.device(opts.device),
    )
    out: dict[str, Any] = {"load_s": time.perf_counter() - started}
    warm = [np.zeros(16000 * 40, np.float32), np.zeros(16000 * 5, np.float32)]
    transcriber.transcribe(warm)
    _transcribe_baseline_arrays(pipe, warm[1:], tokens)
    counter = _WindowCounter()
    hook = transcriber.model.get_encoder().register_forward_hook(counter, with_kwargs=True)

    log(f"optimized transcribe: {len(corpus.paths)} files, asr batch {asr_batch}")
    (out["texts"], out["audio_s"], out["waited"]), out["asr_s"], out["peak"] = _timed(
        opts.device,
        partial(
            _transcribe_optimized,
            transcriber,
            corpus.paths,
            corpus.durations,
            asr_batch,
            opts.decode_workers,
        ),
    )
    out["windows"], counter.windows = counter.windows, 0

    log(f"baseline transcribe: {len(subset)} files, pipeline chunk_length_s=30 batch 1")
    (out["base_texts"], out["base_audio_s"]), out["base_asr_s"], out["base_peak"] = _timed(
        opts.device, partial(_transcribe_baseline, pipe, [corpus.paths[i] for i in subset], tokens)
    )
    out["base_windows"] = counter.windows
    hook.remove()
    del pipe, transcriber
    _free_memory(opts.device)
    return out


def _classify_stage(
    opts: BenchOptions,
    dirs: ModelDirs,
    corpus: _Corpus,
    subset: list[int],
    policy: Any,
    classify_batch: int,
    max_batch_tokens: int | None,
    max_context: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Both scoring paths on one loaded, merged classifier."""
    import torch  # noqa: PLC0415
    from earmark.inference.classifier import Classifier, ClassifierOptions  # noqa: PLC0415

    started = time.perf_counter()
    classifier = Classifier(
        ClassifierOptions(
            base_dir=dirs.base,
            adapter_dir=dirs.adapter,
            device=opts.device,
            dtype=opts.dtype,
            batch_size=classify_batch,
            max_context_tokens=max_context,
            attn_implementation=opts.attn,
            use_prefix_cache=True,
            max_batch_tokens=max_batch_tokens,
        )
    )
    out: dict[str, Any] = {"load_s": time.perf_counter() - started}
    out["weights"] = int(torch.cuda.memory_allocated()) if _is_cuda(opts.device) else None
    # Warm up on another policy text, so the timed run computes its own prefix cache.
    classifier.score("warm-up policy", corpus.contents[:2])
    _score_baseline(classifier, "warm-up policy", corpus.contents[:1])
    if opts.attn != "eager":
        drift = classifier.attention_drift(policy, corpus.contents[:4])
        log(
            f"attention check: {opts.attn} vs eager on 4 fixed prompts, max |score diff| "
            f"{drift:.2e}"
        )

    log(
        f"optimized classify: {len(corpus.contents)} items, batch {classify_batch}, "
        f"max batch tokens {max_batch_tokens}, attn {opts.attn}"
    )
    out["scores"], out["cls_s"], out["peak"] = _timed(
        opts.device, partial(classifier.score, policy, corpus.contents)
    )
    out["tokens"] = _prompt_tokens(classifier, policy.text, corpus.contents)

    log(f"baseline classify: {len(subset)} items, batch 1, full prompt")
    (out["base_scores"], out["base_tokens"]), out["base_cls_s"], out["base_peak"] = _timed(
        opts.device,
        partial(_score_baseline, classifier, policy.text, [corpus.contents[i] for i in subset]),
    )
    del classifier
    _free_memory(opts.device)
    return out


def _transcribe_baseline_arrays(pipe: Any, audios: list[np.ndarray], tokens: int) -> None:
    kwargs = {
        "language": "en",
        "task": "transcribe",
        "max_new_tokens": tokens,
        "min_new_tokens": tokens,
    }
    for audio in audios:
        pipe({"raw": audio, "sampling_rate": 16000}, generate_kwargs=kwargs)


# ---- report ------------------------------------------------------------


def _path_lines(fig: PathFigures, device: str, rss: int) -> list[str]:
    peak = (
        _gib(fig.peak_bytes)
        if _is_cuda(device)
        else f"n/a on CPU (process RSS peak {rss / 2**20:.0f} MiB)"
    )
    return [
        f"  files {fig.files}, audio {fig.audio_s:.1f} s, asr windows {fig.asr_windows}, "
        f"classify prompt tokens {fig.classify_tokens}",
        f"  decode wait {fig.decode_wait_s:.2f} s | transcribe {fig.asr_s:.2f} s | classify "
        f"{fig.classify_s:.2f} s | write {fig.write_s:.3f} s | total {fig.wall_s:.2f} s",
        f"  real-time factor {fig.real_time_factor:.2f}x | items/s {fig.items_per_s:.3f} | "
        f"peak GPU memory {peak}",
        f"  classify peak GPU memory {_gib(fig.classify_peak_bytes)} | transcribe peak GPU "
        f"memory {_gib(fig.asr_peak_bytes)}",
    ]


def format_report(report: BenchReport) -> str:
    """The human-readable summary (no transcript text)."""
    o, b, opts = report.optimized, report.baseline, report.options
    mode = "tiny" if opts.tiny else "real-size (random weights)"
    rates = ", ".join(f"{sr} Hz x{n}" for sr, n in report.sample_rates.items())
    lines = [
        f"Earmark GPU-stage benchmark: {mode}, device {opts.device}, dtype {opts.dtype}, "
        f"attn {opts.attn}",
        f"corpus: {report.corpus_files} files, {report.corpus_audio_s / 60:.1f} min audio "
        f"({rates}); decode forced to {opts.tokens_per_window} tokens per 30 s window",
        f"policy: {POLICY_NAME}, {report.policy_tokens} tokens (cached prefix "
        f"{report.prefix_tokens} tokens)",
        f"batch sizes: asr {report.asr_batch}, classify {report.classify_batch}, max batch "
        f"tokens {report.max_batch_tokens}, max context {report.max_context_tokens} "
        f"(budget {opts.gpu_memory_gib:g} GiB)",
        "setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.load_s.items()),
    ]
    if report.classifier_weights_bytes is not None:
        lines.append(f"classifier resident after load: {_gib(report.classifier_weights_bytes)}")
    lines.append(
        "optimized (load_many + Transcriber batched long-form + Classifier prefix cache, batched):"
    )
    lines += _path_lines(o, opts.device, report.rss_peak_bytes)
    lines.append(
        f"baseline (per file pipeline chunk_length_s=30 batch 1 + full-prompt forward "
        f"batch 1), subset {b.files} of {report.corpus_files} files:"
    )
    lines += _path_lines(b, opts.device, report.rss_peak_bytes)
    cls_rate = (o.audio_s / o.classify_s) / (b.audio_s / b.classify_s)
    asr_rate = (o.audio_s / o.asr_s) / (b.audio_s / b.asr_s)
    lines.append(
        f"ratio optimized/baseline (per audio second): real-time factor {report.rtf_ratio:.2f}x "
        f"(transcribe {asr_rate:.2f}x, classify {cls_rate:.2f}x); baseline subset "
        f"{b.files} files / {b.audio_s:.1f} s audio"
    )
    if _is_cuda(opts.device) and o.classify_peak_bytes is not None:
        within = o.classify_peak_bytes <= opts.gpu_memory_gib * GIB
        lines.append(
            f"classify peak {_gib(o.classify_peak_bytes)} vs budget "
            f"{opts.gpu_memory_gib:g} GiB: {'within' if within else 'OVER'}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> BenchOptions:
    """Command line -> BenchOptions."""
    parser = argparse.ArgumentParser(
        prog="python -m earmark_dev.bench.gpu_stage", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tiny", action="store_true", help="tiny offline models on a small corpus")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="real-size configs and parameter counts only; allocates nothing",
    )
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    parser.add_argument(
        "--attn",
        default="eager",
        choices=ATTN_CHOICES,
        help="Gemma-2 attention (never sdpa: it drops the soft-capping)",
    )
    parser.add_argument("--asr-batch", type=int, help="Whisper batch (default: from the budget)")
    parser.add_argument(
        "--classify-batch",
        type=int,
        help="classifier batch (default: from the budget, with max batch tokens)",
    )
    parser.add_argument(
        "--gpu-memory-gib",
        type=float,
        default=22.0,
        help="memory budget the batch sizes are chosen for (default 22)",
    )
    parser.add_argument("--files", type=int, help="corpus files (64; tiny 6)")
    parser.add_argument("--minutes", type=float, help="corpus minutes of audio (60; tiny 4)")
    parser.add_argument("--baseline-files", type=int, help="baseline subset size (8; tiny 3)")
    parser.add_argument(
        "--tokens-per-window",
        type=int,
        help="tokens per 30 s window, decoded and in stand-ins (100; tiny 16)",
    )
    parser.add_argument("--policy-tokens", type=int, default=1000)
    parser.add_argument("--decode-workers", type=int, default=4)
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="keep/reuse the built models here (default: a temporary folder)",
    )
    parser.add_argument("--work-dir", type=Path, help="keep corpus and models here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("asr_batch", "classify_batch", "files", "baseline_files", "tokens_per_window"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return BenchOptions(**vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the report."""
    options = parse_args(argv)
    if options.dry_run:
        dry_run(options)
        return 0
    report = run_benchmark(options, log=lambda msg: print(f"... {msg}", file=sys.stderr))
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
