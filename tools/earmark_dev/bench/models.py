"""Real-size models with random weights for the GPU-stage benchmark, built offline.

Whisper large-v3-turbo and Gemma-2-9B + a LoRA r=16 adapter have the real architectures and
random weights: their speed and memory are the real ones, their outputs are nonsense. Token ids
come from the tiny byte-level tokenizers, which lay their ids out like the real ones. Random
weights decode to arbitrary lengths and loop, so ``fix_decode_length`` makes every window
decode exactly a given number of tokens, the same in every path that is compared.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earmark_dev.tiny_models import TinyModelPaths

MARKER = ".earmark-bench-real-models-v2-complete"
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


def _free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def whisper_token_ids() -> dict[str, int]:
    """Special-token ids of the tiny Whisper tokenizer: 256 byte symbols, then the specials."""
    from earmark_dev.tiny_models import WHISPER_SPECIALS

    return {tok: 256 + i for i, tok in enumerate(WHISPER_SPECIALS)}


def whisper_turbo_config() -> Any:
    """WhisperConfig of large-v3-turbo with the tiny tokenizer's special-token ids."""
    from earmark_dev.tiny_models import whisper_special_tokens
    from transformers import WhisperConfig

    ids = whisper_token_ids()
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    return WhisperConfig(**WHISPER_TURBO, **whisper_special_tokens(eot, sot))


def gemma2_9b_config() -> Any:
    """Gemma2Config of Gemma-2-9B with the tiny tokenizer's pad/eos/bos ids (0, 1, 2)."""
    from transformers import Gemma2Config

    return Gemma2Config(**GEMMA2_9B_ARCH, pad_token_id=0, eos_token_id=1, bos_token_id=2)


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_real_size_models(dest: Path, device: str, dtype: str) -> TinyModelPaths:
    """Random-weight Whisper large-v3-turbo and Gemma-2-9B + LoRA r=16, saved under ``dest``.

    Built directly on ``device`` in ``dtype`` (a 9B model in fp32 on the CPU would need
    37 GB), saved with ``save_pretrained`` and reused on the next run (a marker file is
    written last). Tokenizers are the tiny byte-level ones. No network access.
    """
    import torch
    from earmark_dev.tiny_models import build_tiny_models
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoTokenizer,
        Gemma2ForCausalLM,
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    dest = Path(dest)
    dirs = TinyModelPaths(
        asr=dest / "asr", base=dest / "base", adapter=dest / "adapter", prepared=dest / "prepared"
    )
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
    from earmark.inference.prepared import prepare_classifier

    prepare_classifier(dirs.base, dirs.adapter, dirs.prepared, dtype)
    (dest / MARKER).write_text("ok\n", encoding="utf-8")
    return dirs


def fix_decode_length(asr_dir: Path, out_dir: Path, tokens: int) -> Path:
    """A copy of ``asr_dir`` whose every 30 s window decodes exactly ``tokens`` tokens.

    EOS is held off until ``tokens`` new tokens (min = max); no 4-gram may repeat, so a
    random model cannot loop (the loop guard never fires and both paths decode the same
    amount); special tokens other than EOS and every timestamp after <|0.00|> are suppressed,
    so long-form decoding advances a full window each time, as real speech roughly does.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(asr_dir, out_dir)
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    gen_path = out_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8"))
    vocab = config["vocab_size"]
    no_timestamps = gen["no_timestamps_token_id"]
    timestamp_begin = no_timestamps + 1
    specials = set(range(256, no_timestamps + 1))  # the byte tokenizer's special tokens
    suppress = specials | set(range(timestamp_begin + 1, vocab))
    suppress -= {gen["eos_token_id"], timestamp_begin}
    gen.update(
        suppress_tokens=sorted(i for i in suppress if 0 <= i < vocab),
        min_new_tokens=tokens,
        max_new_tokens=tokens,
        max_length=None,
        no_repeat_ngram_size=4,
    )
    gen_path.write_text(json.dumps(gen, indent=2), encoding="utf-8")
    return out_dir
