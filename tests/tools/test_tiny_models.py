"""The tiny offline models build, reload through the Auto classes and look like the real ones."""

from __future__ import annotations

import torch
from earmark_dev.tiny_models import MARKER, TinyModelPaths, build_tiny_models, main
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    AutoTokenizer,
)


def test_layout_and_marker(tiny_models: TinyModelPaths):
    assert (tiny_models.asr / "config.json").is_file()
    assert (tiny_models.asr / "generation_config.json").is_file()
    assert (tiny_models.base / "tokenizer.json").is_file()
    assert (tiny_models.adapter / "adapter_config.json").is_file()
    assert (tiny_models.base.parent / MARKER).is_file()


def test_build_is_idempotent(tiny_models: TinyModelPaths):
    weights = tiny_models.base / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = build_tiny_models(tiny_models.base.parent)
    assert again == tiny_models
    assert weights.stat().st_mtime_ns == before


def test_cli_prints_paths(tiny_models: TinyModelPaths, capsys):
    main([str(tiny_models.base.parent)])
    out = capsys.readouterr().out
    for path in (tiny_models.asr, tiny_models.base, tiny_models.adapter):
        assert str(path) in out


def test_gemma_reloads_with_hybrid_cache_and_answer_tokens(tiny_models: TinyModelPaths):
    tok = AutoTokenizer.from_pretrained(tiny_models.base)
    assert len(tok.encode("0", add_special_tokens=False)) == 1
    assert len(tok.encode("1", add_special_tokens=False)) == 1
    ids = tok("héllo ✓")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "héllo ✓"
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base, attn_implementation="eager")
    assert model.config.model_type == "gemma2"
    assert model.config.vocab_size == len(tok)
    assert set(model.config.layer_types) == {"sliding_attention", "full_attention"}
    assert model.config.sliding_window < 64


def test_adapter_loads_merges_and_changes_weights(tiny_models: TinyModelPaths):
    base = AutoModelForCausalLM.from_pretrained(tiny_models.base, attn_implementation="eager")
    reference = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    merged = PeftModel.from_pretrained(base, tiny_models.adapter).merge_and_unload()
    weight = merged.model.layers[0].self_attn.q_proj.weight
    assert isinstance(weight, torch.Tensor)
    assert not torch.allclose(weight, reference)
    # The saved base stays un-adapted.
    fresh = AutoModelForCausalLM.from_pretrained(tiny_models.base, attn_implementation="eager")
    assert torch.equal(fresh.model.layers[0].self_attn.q_proj.weight, reference)


def test_whisper_reloads_with_timestamp_layout(tiny_models: TinyModelPaths):
    processor = AutoProcessor.from_pretrained(tiny_models.asr)
    tok = processor.tokenizer
    model = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_models.asr)
    gen = model.generation_config
    assert tok.pad_token_id is not None
    assert tok.convert_tokens_to_ids("<|0.00|>") == gen.no_timestamps_token_id + 1
    assert tok.convert_tokens_to_ids("<|30.00|>") == gen.no_timestamps_token_id + 1501
    assert gen.lang_to_id["<|en|>"] == tok.convert_tokens_to_ids("<|en|>")
    assert gen.task_to_id["transcribe"] == tok.convert_tokens_to_ids("<|transcribe|>")
    assert model.config.max_source_positions == 1500
    assert processor.feature_extractor.feature_size == model.config.num_mel_bins == 80
