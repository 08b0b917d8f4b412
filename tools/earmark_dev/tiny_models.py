"""Tiny, randomly initialised stand-ins for the production models.

Built offline in seconds with fixed seeds so tests and the local demo can run the
whole inference path (Whisper ASR, Gemma-2 base + LoRA adapter) without weights
from the Hub. Their outputs are meaningless; their shapes, tokenizers, configs and
file layouts match what the real loaders expect.

CLI: ``python -m earmark_dev.tiny_models DEST`` prints the model directories.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

# Short policies in the CoPE layout for the tiny models. The tiny Gemma tokenizer reads bytes, so a
# real 4 KB policy (include/policies/) is a 4,000-token prefix that costs seconds per policy on the
# CPU; everything that runs the tiny models (tests, harness, demo) uses these. Production uses
# include/policies/.
TINY_POLICIES = Path(__file__).parent / "policies"
MARKER = ".earmark-tiny-models-v3-complete"  # v3: prepared classifier, input-led Whisper
SEED = 1234

GEMMA_WORDS = ("0", "1", "▁", "a", "e", "i", "o", "u", "the", "and", "you")
WHISPER_SPECIALS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in 0.02 s steps


@dataclass(frozen=True)
class TinyModelPaths:
    """Directories of the tiny models: ASR processor+model, LM base, LoRA adapter, and the
    adapter merged into the base as ``earmark models prepare`` writes it."""

    asr: Path
    base: Path
    adapter: Path
    prepared: Path


def _paths(dest: Path) -> TinyModelPaths:
    return TinyModelPaths(
        asr=dest / "asr", base=dest / "base", adapter=dest / "adapter", prepared=dest / "prepared"
    )


def dev_cache() -> Path | None:
    """``EARMARK_DEV_CACHE``: a folder where tooling keeps what it can build once and copy
    (the tiny models, a migrated Airflow metadata DB). Unset: nothing is cached."""
    value = os.environ.get("EARMARK_DEV_CACHE")
    return Path(value) if value else None


def build_tiny_models(dest: Path) -> TinyModelPaths:
    """Build all three tiny models under ``dest`` (idempotent: a marker file is written last)."""
    dest = Path(dest)
    paths = _paths(dest)
    if (dest / MARKER).is_file():
        return paths
    cache = dev_cache()
    if cache is not None and cache.resolve() != dest.resolve().parent:
        # Built once per test run (or machine) in the shared cache, then copied: seconds saved
        # for every environment that needs them. A lock: parallel test workers share the cache.
        cache.mkdir(parents=True, exist_ok=True)
        with (cache / "tiny-models.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            built = build_tiny_models(cache / "tiny-models")
        shutil.copytree(built.base.parent, dest, dirs_exist_ok=True)
        return paths
    for sub in (paths.asr, paths.base, paths.adapter, paths.prepared):
        if sub.exists():
            shutil.rmtree(sub)
    dest.mkdir(parents=True, exist_ok=True)
    _build_whisper(paths.asr)
    _build_gemma(paths.base)
    _build_adapter(paths.base, paths.adapter)
    from earmark.inference.prepared import prepare_classifier

    prepare_classifier(paths.base, paths.adapter, paths.prepared, "float32")
    (dest / MARKER).write_text("ok\n", encoding="utf-8")
    return paths


def _byte_symbols() -> list[str]:
    """The 256 GPT-2 byte-level symbols, in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    mapping = dict(zip(printable, codes, strict=True))
    return [chr(mapping[b]) for b in range(256)]


def whisper_special_tokens(eot: int, sot: int) -> dict[str, object]:
    """WhisperConfig's special-token fields for the byte-level tokenizer (nothing suppressed)."""
    return {
        "pad_token_id": eot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "decoder_start_token_id": sot,
        "suppress_tokens": [],
        "begin_suppress_tokens": [],
    }


def _build_whisper(out: Path) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    vocab: dict[str, int] = {sym: i for i, sym in enumerate(_byte_symbols())}
    for tok in WHISPER_SPECIALS:
        vocab[tok] = len(vocab)
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(N_TIMESTAMPS)]
    for tok in timestamps:
        vocab[tok] = len(vocab)

    tokenizer = WhisperTokenizer(
        vocab=vocab,
        merges=[],
        pad_token="<|endoftext|>",  # noqa: S106 - a token, not a password
        extra_special_tokens=list(WHISPER_SPECIALS[1:]),
    )
    tokenizer.add_tokens(timestamps)
    ids = {tok: vocab[tok] for tok in WHISPER_SPECIALS}
    extractor = WhisperFeatureExtractor(feature_size=80)
    processor = WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)

    eot = ids["<|endoftext|>"]
    sot = ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(vocab),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        **whisper_special_tokens(eot, sot),
    )
    torch.manual_seed(SEED)
    model = WhisperForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # At the default init scale a model this small says the same letter whatever it hears;
        # larger weights make its (meaningless) text follow the input, so tests can tell one
        # file's transcript from another's.
        for name, weight in model.named_parameters():
            if weight.dim() == 2 and "embed_positions" not in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
        # Random weights favour the 1,501 timestamp tokens, which decode to nothing;
        # damp their (tied) embeddings so the tiny model emits visible text.
        model.model.decoder.embed_tokens.weight[len(WHISPER_SPECIALS) + 256 :] *= 0.1

    gen = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=24,
        lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        is_multilingual=True,
        forced_decoder_ids=None,
        begin_suppress_tokens=[eot],  # as real Whisper: never stop before the first token
        suppress_tokens=[],
        max_initial_timestamp_index=50,
    )
    model.generation_config = gen
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _build_gemma(out: Path) -> None:
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM, GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for word in GEMMA_WORDS:
        vocab.setdefault(word, len(vocab))
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=True, add_eos_token=False)

    config = Gemma2Config(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=32,
        max_position_embeddings=8192,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["<eos>"],
        bos_token_id=vocab["<bos>"],
    )
    torch.manual_seed(SEED)
    model = Gemma2ForCausalLM(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_adapter(base_dir: Path, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager")
    torch.manual_seed(SEED + 1)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    """CLI entry: build the tiny models into DEST and print their paths."""
    parser = argparse.ArgumentParser(description="Build tiny offline stand-in models.")
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    paths = build_tiny_models(args.dest)
    print(f"asr={paths.asr}")
    print(f"base={paths.base}")
    print(f"adapter={paths.adapter}")


if __name__ == "__main__":
    main()
