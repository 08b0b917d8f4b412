"""Real-size models with random weights for the GPU-stage benchmark, and what they decode.

Whisper large-v3-turbo and Gemma-2-9B (CoPE's base, with the LoRA r=16 adapter already merged)
have the real architectures and random weights: their speed and memory are the real ones, their
outputs are nonsense. Token ids come from the tiny byte-level tokenizers, which lay their ids
out like the real ones.

Random weights decode to arbitrary lengths, so ``scripted_decode`` decides what each window
writes from its audio, the same way in every path compared: about ``tokens_per_window`` tokens
for a 30 s window of speech (fewer for less speech, none for silence), spread around that
(log-normal), ending with EOS, and a few windows that loop until the loop guard or the token
limit stops them. The model's forward passes run in full; only the token picked is scripted.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from earmark_dev.tiny_models import TinyModelPaths

MARKER = ".earmark-bench-real-models-v3-complete"  # v3: built in prepared form
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

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
# The same builders at a width the CPU runs in seconds: the device script's rehearsal builds
# its models this way, so the path the lent machine takes is the one CI runs.
SMALL_WIDTH = {
    "whisper": {
        "d_model": 64,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 128,
        "decoder_ffn_dim": 128,
    },
    "gemma": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": 128,
        "query_pre_attn_scalar": 16,
        "sliding_window": 32,
    },
}


def free_memory(device: str) -> None:
    """Let go of what Python no longer holds, and of the CUDA cache on a GPU."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def whisper_token_ids() -> dict[str, int]:
    """Special-token ids of the tiny Whisper tokenizer: 256 byte symbols, then the specials."""
    from earmark_dev.tiny_models import WHISPER_SPECIALS

    return {tok: 256 + i for i, tok in enumerate(WHISPER_SPECIALS)}


def whisper_turbo_config(**width: int) -> Any:
    """WhisperConfig of large-v3-turbo (``width`` overrides its sizes) with the tiny
    tokenizer's special-token ids."""
    from earmark_dev.tiny_models import whisper_special_tokens
    from transformers import WhisperConfig

    ids = whisper_token_ids()
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    return WhisperConfig(**{**WHISPER_TURBO, **width}, **whisper_special_tokens(eot, sot))


def gemma2_9b_config(**width: int) -> Any:
    """Gemma2Config of Gemma-2-9B (``width`` overrides its sizes) with the tiny tokenizer's
    pad/eos/bos ids (0, 1, 2)."""
    from transformers import Gemma2Config

    arch = {**GEMMA2_9B_ARCH, **width}
    return Gemma2Config(**arch, pad_token_id=0, eos_token_id=1, bos_token_id=2)


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_real_size_models(
    dest: Path, device: str, dtype: str, *, small: bool = False
) -> TinyModelPaths:
    """Random-weight Whisper large-v3-turbo and Gemma-2-9B, saved in the form production loads.

    Built on ``device`` in ``dtype`` (a 9B model in fp32 on the CPU would need 37 GB) and
    reused on the next run (a marker file is written last). The classifier is written straight
    as ``earmark models prepare`` leaves it: merged weights (random: a LoRA merge would change
    no figure measured) and a manifest that ``check_prepared`` accepts for ``base`` and
    ``adapter`` folders holding their configs and tokenizer only. So there is no second 17 GiB
    copy, no merge on the CPU and no sha256 of the result. No network access. ``small``:
    the same at ``SMALL_WIDTH`` (the rehearsal on the CPU).
    """
    import shutil

    import torch
    from earmark_dev.tiny_models import build_tiny_models
    from peft import LoraConfig
    from transformers import AutoTokenizer, Gemma2ForCausalLM

    dest = Path(dest)
    dirs = TinyModelPaths(
        asr=dest / "asr", base=dest / "base", adapter=dest / "adapter", prepared=dest / "prepared"
    )
    marker = dest / (MARKER + ("-small" if small else ""))
    if marker.is_file():
        return dirs
    width: dict[str, dict[str, int]] = SMALL_WIDTH if small else {"whisper": {}, "gemma": {}}
    tiny = build_tiny_models(dest / "tiny")
    for sub in (dirs.asr, dirs.base, dirs.adapter, dirs.prepared):
        if sub.exists():
            shutil.rmtree(sub)
    whisper_cfg = whisper_turbo_config(**width["whisper"])
    _build_whisper_turbo(tiny.asr, dirs.asr, whisper_cfg, device, getattr(torch, dtype))

    gemma_cfg = gemma2_9b_config(**width["gemma"])
    tokenizer = AutoTokenizer.from_pretrained(tiny.base)
    gemma_cfg.save_pretrained(dirs.base)
    tokenizer.save_pretrained(dirs.base)
    LoraConfig(
        r=LORA_RANK,
        lora_alpha=2 * LORA_RANK,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(dirs.base),
    ).save_pretrained(dirs.adapter)
    torch.manual_seed(1)
    with torch.device(device), _default_dtype(getattr(torch, dtype)):
        merged = Gemma2ForCausalLM(gemma_cfg).eval()
    merged.save_pretrained(dirs.prepared)
    tokenizer.save_pretrained(dirs.prepared)
    del merged
    free_memory(device)
    _write_manifest(dirs, dtype)
    marker.write_text("ok\n", encoding="utf-8")
    return dirs


def _build_whisper_turbo(tiny_asr: Path, out: Path, config: Any, device: str, dtype: Any) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    tokenizer = WhisperTokenizer.from_pretrained(tiny_asr)
    for tok, expected in whisper_token_ids().items():
        if tokenizer.convert_tokens_to_ids(tok) != expected:
            raise RuntimeError(f"tiny Whisper tokenizer layout changed: {tok} is not {expected}")
    torch.manual_seed(0)
    with torch.device(device), _default_dtype(dtype):
        whisper = WhisperForConditionalGeneration(config).eval()
    whisper.generation_config = GenerationConfig.from_pretrained(tiny_asr)
    whisper.save_pretrained(out)
    del whisper
    free_memory(device)
    WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer
    ).save_pretrained(out)


def _write_manifest(dirs: TinyModelPaths, dtype: str) -> None:
    """The manifest ``check_prepared`` reads: sources, versions and each file's size."""
    from earmark.inference.prepared import MANIFEST, source_fingerprint

    manifest = {
        "kind": "cope-a merged classifier",
        "note": "benchmark weights: random, written in merged form, not hashed",
        "base_dir": str(dirs.base.resolve()),
        "adapter_dir": str(dirs.adapter.resolve()),
        "dtype": dtype,
        "versions": {name: version(name) for name in ("transformers", "peft", "torch")},
        "sources": source_fingerprint(dirs.base, dirs.adapter),
        "files": {
            p.name: {"size": p.stat().st_size, "sha256": None}
            for p in sorted(dirs.prepared.iterdir())
            if p.is_file()
        },
    }
    text = json.dumps(manifest, indent=2) + "\n"
    (dirs.prepared / MANIFEST).write_text(text, encoding="utf-8")


# ---- what each window decodes ---------------------------------------------------------------

# A frame is speech when its loudest mel bin is above this, in Whisper's normalised log-mel
# ((log10 + 4) / 4): espeak-ng speech peaks at 0.4-1.3, room noise at -60 dBFS stays near -0.2,
# padding near -0.7 or lower (measured with both the 80- and the 128-bin extractor).
SPEECH_LEVEL = 0.0
# Frames above SPEECH_LEVEL in a 30 s window of the bench corpus's speech (with its pauses):
# such a window is the one that writes ``tokens_per_window`` tokens on average.
SPEECH_S_PER_WINDOW = 21.5
FRAME_S = 0.01  # Whisper's hop: 160 samples at 16 kHz
SPACE, LETTERS = 32, (97, 123)  # byte-level ids: " " and "a".."z"


@dataclass(frozen=True)
class DecodeScript:
    """What random-weight Whisper writes in each window, fixed by the window's audio.

    A window with ``s`` seconds of speech frames writes about ``tokens_per_window * s / 21.5``
    tokens (log-normal, sigma ``spread``) and then EOS; none for a window without speech.
    A share ``loop_share`` of the windows with a second of speech or more loops instead: after
    a few tokens, a block of one of ``loop_periods`` tokens repeats with no EOS, until the
    loop guard or the token limit stops it. Text is lower-case letters and spaces (never
    repetitive by compression ratio). Each window's draw is seeded by its audio, so it does not
    depend on the batch it lands in.
    """

    tokens_per_window: float = 100.0
    spread: float = 0.25
    loop_share: float = 0.02
    loop_periods: tuple[int, ...] = (4, 12, 25, 60)
    seed: int = 0

    def row(self, key: tuple[int, ...], limit: int, eos: int) -> tuple[np.ndarray, bool]:
        """The ``limit + 1`` tokens a window picks in turn (EOS once done), and whether it
        loops. ``key[0]`` is its number of speech frames, the rest tell windows apart."""
        rng = np.random.default_rng([self.seed, *key])
        speech_s = key[0] * FRAME_S
        text = rng.integers(*LETTERS, size=limit + 1)
        text[rng.random(limit + 1) < 0.18] = SPACE
        if speech_s >= 1.0 and rng.random() < self.loop_share:
            start = int(rng.integers(1, 16))
            period = int(rng.choice(self.loop_periods))
            block = text[start : start + period]
            looped = np.concatenate([text[:start], np.resize(block, limit + 1 - start)])
            return looped, True
        mean = self.tokens_per_window * speech_s / SPEECH_S_PER_WINDOW
        n = round(mean * rng.lognormal(0.0, self.spread)) if speech_s > 0 else 0
        text[min(n, limit - 1) :] = eos
        return text, False


@dataclass
class DecodeTally:
    """What the scripted windows came to: ``tokens`` generated over ``rows`` windows in
    ``batches`` (``generates`` calls: one per batch in short-form, one per file in long-form)
    that ran ``row_steps`` row-steps (rows x steps: what lockstep decoding pays), loops
    started and loops stopped before the token limit, seconds in generate."""

    generates: int = 0
    batches: int = 0
    rows: int = 0
    tokens: int = 0
    row_steps: int = 0
    loop_rows: int = 0
    loops_cut: int = 0
    generate_s: float = 0.0

    def since(self, before: DecodeTally) -> DecodeTally:
        """The growth since ``before``, a copy taken earlier."""
        return DecodeTally(
            **{k: getattr(self, k) - getattr(before, k) for k in self.__dataclass_fields__}
        )

    def figures(self, prefix: str) -> dict[str, float]:
        """Tokens per window and lockstep occupancy (tokens ÷ row-steps), under ``prefix``."""
        return {
            f"{prefix}_tokens_per_window": round(self.tokens / self.rows, 1) if self.rows else 0.0,
            f"{prefix}_lockstep_occupancy": (
                round(self.tokens / self.row_steps, 4) if self.row_steps else 0.0
            ),
            f"{prefix}_loop_windows": self.loop_rows,
            f"{prefix}_loops_cut": self.loops_cut,
        }


@dataclass
class _Window:
    """The batch of windows being decoded: scripted tokens, tokens generated so far."""

    tokens: Any  # (rows, limit + 1) on the model's device
    loops: list[bool]
    limit: int
    start: int = -1
    steps: int = 0
    generated: Any = None


@dataclass
class _ScriptState:
    script: DecodeScript
    eos: int
    tally: DecodeTally = field(default_factory=DecodeTally)
    keys: list[tuple[int, ...]] | None = None  # of the encoder's latest batch
    limit: int = 224
    window: _Window | None = None
    hooks: list[Any] = field(default_factory=list)

    def on_encoder(self, _module: Any, args: tuple, kwargs: dict) -> None:
        """Forward pre-hook of Whisper's encoder: note each row's speech frames."""
        import torch

        features = kwargs.get("input_features", args[0] if args else None)
        if features is None:
            return
        loud = features.float().amax(dim=1) > SPEECH_LEVEL  # (rows, frames)
        frames = loud.shape[1]
        first = loud.int().argmax(dim=1)
        last = frames - 1 - loud.flip(1).int().argmax(dim=1)
        level = (features.float().amax(dim=1).clamp(min=0) * loud).sum(dim=1)
        stats = torch.stack([loud.sum(dim=1), first, last, (level * 8).round().long()], dim=1)
        self.keys = [tuple(row) for row in stats.tolist()]  # one copy to the host per batch

    def pick(self, input_ids: Any, scores: Any) -> Any:
        """The logits processor: every logit -inf but the scripted token's."""
        import torch

        if self.keys is not None:  # a new batch of windows: its first step
            self.close()
            rows = [self.script.row(key, self.limit, self.eos) for key in self.keys]
            tokens = torch.as_tensor(np.stack([r for r, _ in rows]), device=scores.device)
            self.window = _Window(tokens, [loop for _, loop in rows], self.limit)
            self.window.start = input_ids.shape[1]
            self.window.generated = torch.zeros(len(rows), dtype=torch.long, device=scores.device)
            self.keys = None
        window = self.window
        if window is None or window.tokens.shape[0] != input_ids.shape[0]:
            raise RuntimeError("scripted decode: the batch does not match the encoder's rows")
        step = min(input_ids.shape[1] - window.start, window.limit)
        window.steps += 1
        window.generated += input_ids[:, -1] != self.eos  # rows still writing
        picked = torch.full_like(scores, float("-inf"))
        return picked.scatter_(1, window.tokens[:, step : step + 1], 0.0)

    def close(self) -> None:
        window, self.window = self.window, None
        if window is None or window.steps == 0:
            return
        generated = window.generated.tolist()
        tally = self.tally
        tally.batches += 1
        tally.rows += len(generated)
        tally.tokens += sum(generated)
        tally.row_steps += len(generated) * window.steps
        tally.loop_rows += sum(window.loops)
        tally.loops_cut += sum(
            loop and n < window.limit for loop, n in zip(window.loops, generated, strict=True)
        )


@contextlib.contextmanager
def scripted_decode(script: DecodeScript) -> Iterator[DecodeTally]:
    """While open, every Whisper ``generate`` in this process writes what ``script`` says.

    Whisper's ``generate`` gets one more logits processor (last, after Whisper's own), and each
    model's encoder a pre-hook that reads the speech in the rows it encodes; short-form and
    long-form decoding alike. Yields the tally, which grows as windows are decoded.
    """
    from transformers import LogitsProcessor, LogitsProcessorList, WhisperForConditionalGeneration

    original = WhisperForConditionalGeneration.generate
    state = _ScriptState(script, eos=-1)

    class Pick(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return state.pick(input_ids, scores)

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self, "_earmark_scripted", False):
            hook = self.get_encoder().register_forward_pre_hook(state.on_encoder, with_kwargs=True)
            state.hooks.append((self, hook))
            self._earmark_scripted = True
        config = self.generation_config
        eos = config.eos_token_id
        state.eos = int(eos[0] if isinstance(eos, list) else eos)
        state.limit = int(kwargs.get("max_new_tokens") or config.max_new_tokens or 224)
        given = kwargs.get("logits_processor") or []
        kwargs["logits_processor"] = LogitsProcessorList([*given, Pick()])
        began = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            state.close()
            state.tally.generates += 1
            state.tally.generate_s += time.perf_counter() - began

    WhisperForConditionalGeneration.generate = generate  # type: ignore[method-assign]
    try:
        yield state.tally
    finally:
        WhisperForConditionalGeneration.generate = original  # type: ignore[method-assign]
        for model, hook in state.hooks:
            hook.remove()
            model._earmark_scripted = False
