"""Inference on CPU with the tiny models: audio, prompt, policies, ASR and classifier."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from earmark.inference.audio import AudioDecodeError, load_audio, load_many
from earmark.inference.classifier import (
    Classifier,
    ClassifierOptions,
    NonFiniteScoreError,
    _Prefix,
)
from earmark.inference.policies import Policy, load_policies
from earmark.inference.prompt import COPE_TEMPLATE, build_prompt, render_suffix, split_prompt
from earmark.inference.transcriber import Transcriber, TranscriberOptions

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "policies"

EXPECTED_TEMPLATE = (
    "INSTRUCTIONS\n============\n\nExamine the given POLICY and determine if the given CONTENT "
    'meets the criteria for ANY of the LABELS. Answer "1" if yes, and "0" if no.\n\n\nPOLICY\n'
    "======\n\n{policy}\n\n\nCONTENT\n=======\n\n{content}\n\n\nANSWER\n======\n\n"
)

POLICY = (
    "# Criteria for Classifying Rudeness\n\n## Overview\n\nFlags insults aimed at a person.\n\n"
    "## Definition of Labels\n\n### (RU) Rudeness\n\n#### Includes\n\n- Name-calling.\n"
)
CONTENTS = [
    "you are an idiot and everyone knows it",
    "thanks for calling, have a nice day",
    "x",
    "é ünïcode ✓ and {braces} too",
    "the meeting moved to three o'clock " * 12,
    "0 1 0 1",
    "I'll find where you live",
]


# ---- prompt and policies ------------------------------------------------------------


def test_template_is_the_published_cope_prompt():
    assert COPE_TEMPLATE == EXPECTED_TEMPLATE
    expected = EXPECTED_TEMPLATE.replace("{policy}", "P").replace("{content}", "C")
    assert build_prompt("P", "C").encode() == expected.encode()


def test_build_prompt_leaves_braces_alone():
    prompt = build_prompt("policy {content}", "text {policy}")
    assert "POLICY\n======\n\npolicy {content}\n\n\nCONTENT" in prompt
    assert "=======\n\ntext {policy}\n\n\nANSWER" in prompt


def test_split_prompt_reassembles_the_prompt():
    prefix, suffix_template = split_prompt("P")
    assert prefix.endswith("CONTENT\n=======\n\n")
    assert prefix + render_suffix(suffix_template, "C") == build_prompt("P", "C")


def test_load_policies_reads_shipped_files():
    policies = load_policies(POLICY_DIR)
    assert [p.name for p in policies] == ["harassment", "self_harm"]
    for policy in policies:
        raw = (POLICY_DIR / f"{policy.name}.md").read_bytes()
        assert policy.sha256 == hashlib.sha256(raw).hexdigest()
        assert policy.text.startswith("# Criteria for Classifying")
        for heading in (
            "## Overview",
            "## Definition of Terms",
            "## Interpretation of Language",
            "## Definition of Labels",
            "#### Includes",
            "#### Excludes",
        ):
            assert heading in policy.text


def test_load_policies_sorted_and_rejects_empty_dir(tmp_path):
    with pytest.raises(ValueError, match=r"no \*\.md"):
        load_policies(tmp_path)
    (tmp_path / "b.md").write_text("B\n")
    (tmp_path / "a.md").write_text("A\n")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in load_policies(tmp_path)] == ["a", "b"]
    assert load_policies(tmp_path)[0] == Policy("a", "A", hashlib.sha256(b"A\n").hexdigest())


# ---- audio --------------------------------------------------------------------------


def test_load_audio_downmixes_and_resamples(tmp_path):
    sr, seconds = 44100, 2.0
    t = np.arange(int(sr * seconds)) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 220 * t)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo.astype(np.float32), sr, subtype="FLOAT")
    audio = load_audio(path)
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert abs(len(audio) - 32000) <= 1
    assert np.isfinite(audio).all()
    assert 0.3 < np.abs(audio).max() < 1.0  # mean of the channels, not a sum


def test_load_audio_keeps_16k_mono_as_is(tmp_path):
    signal = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    path = tmp_path / "mono.wav"
    sf.write(path, signal, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), signal)


def test_load_audio_rejects_garbage_nan_and_empty(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00not really audio" * 10)
    with pytest.raises(AudioDecodeError):
        load_audio(garbage)

    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        load_audio(nan)

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError):
        load_audio(empty)

    with pytest.raises(AudioDecodeError):
        load_audio(tmp_path / "missing.wav")


def test_load_many_keeps_order_and_yields_errors_in_place(tmp_path):
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.wav"
        if i in (2, 5):
            path.write_bytes(b"garbage")
        else:
            sf.write(path, np.full(800 * (i + 1), 0.1, dtype=np.float32), 16000, subtype="FLOAT")
        paths.append(path)
    results = list(load_many(paths, 16000, workers=3))
    assert [i for i, _ in results] == list(range(7))
    for i, value in results:
        if i in (2, 5):
            assert isinstance(value, AudioDecodeError)
        else:
            assert isinstance(value, np.ndarray)
            assert len(value) == 800 * (i + 1)


# ---- transcriber --------------------------------------------------------------------


def _tone(seconds: float, seed: int) -> np.ndarray:
    """Synthetic speech-band audio ending in 0.1 s of silence."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * np.sin(t)) * t) + 0.05 * rng.standard_normal(n)
    audio[-1600:] = 0.0
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def transcriber(tiny_models):
    return Transcriber(
        TranscriberOptions(model_dir=tiny_models.asr, batch_size=4, max_new_tokens=16)
    )


def test_transcriber_mixed_batch_matches_one_by_one(transcriber):
    audios = [_tone(75, 1), _tone(5, 2), _tone(47, 3)]
    batched = transcriber.transcribe_longform(audios)
    assert len(batched) == 3
    assert all(isinstance(text, str) for text in batched)
    assert any(batched)
    assert batched == [transcriber.transcribe_longform([a])[0] for a in audios]


def test_transcriber_short_only_batch(transcriber):
    audios = [_tone(5, 4), _tone(2, 5), _tone(29.9, 6)]
    batched = transcriber.transcribe_longform(audios)
    assert len(batched) == 3
    assert batched == [transcriber.transcribe_longform([a])[0] for a in audios]
    assert transcriber.transcribe_longform([]) == []


# ---- classifier ---------------------------------------------------------------------


def _classifier(tiny_models, **overrides):
    options = ClassifierOptions(base_dir=tiny_models.base, adapter_dir=tiny_models.adapter)
    for key, value in overrides.items():
        setattr(options, key, value)
    return Classifier(options)


@pytest.fixture(scope="module")
def classifier(tiny_models):
    return _classifier(tiny_models, batch_size=3)


def _reference_score(clf, policy: str, content: str) -> float:
    """P("1") the textbook way: full logits of the whole prompt via the LM head."""
    tok = clf.tokenizer
    ids = tok(build_prompt(policy, content), return_tensors="pt")
    with torch.inference_mode():
        logits = clf.model(**ids, logits_to_keep=1).logits[0, -1].float()
    one, zero = tok.convert_tokens_to_ids(["1", "0"])
    return torch.softmax(logits[[one, zero]], dim=-1)[0].item()


def test_scores_are_probabilities_and_match_reference(classifier):
    scores = classifier.score(POLICY, CONTENTS)
    assert len(scores) == len(CONTENTS)
    assert all(0.0 <= s <= 1.0 for s in scores)
    reference = [_reference_score(classifier, POLICY, c) for c in CONTENTS]
    np.testing.assert_allclose(scores, reference, atol=1e-5)
    assert classifier.score(POLICY, []) == []


def test_prompt_spans_the_sliding_window(classifier):
    prefix, _ = split_prompt(POLICY)
    assert len(classifier.tokenizer(prefix)["input_ids"]) > classifier.model.config.sliding_window


def test_policy_object_and_text_score_alike(classifier):
    policy = Policy(name="rudeness", text=POLICY, sha256="x")
    assert classifier.score(policy, CONTENTS[:2]) == classifier.score(POLICY, CONTENTS[:2])


def test_prefix_cache_equals_full_pass_and_batching_is_invisible(classifier):
    options = classifier.options
    results = {}
    try:
        for cached in (True, False):
            for batch_size in (1, 3, 16):
                options.use_prefix_cache, options.batch_size = cached, batch_size
                results[cached, batch_size] = classifier.score(POLICY, CONTENTS)
    finally:
        options.use_prefix_cache, options.batch_size = True, 3
    reference = results[False, 1]
    for key, scores in results.items():
        np.testing.assert_allclose(scores, reference, atol=1e-4, err_msg=str(key))


def test_prefix_cache_path_is_taken(classifier, monkeypatch):
    calls = {"full": 0, "cached": 0}
    real_full, real_cached = classifier._forward_full, classifier._forward_suffixes

    def full(rows):
        calls["full"] += 1
        return real_full(rows)

    def cached(prefix, suffixes):
        calls["cached"] += 1
        return real_cached(prefix, suffixes)

    monkeypatch.setattr(classifier, "_forward_full", full)
    monkeypatch.setattr(classifier, "_forward_suffixes", cached)
    classifier.score(POLICY, CONTENTS)
    assert calls == {"full": 0, "cached": 3}  # 7 contents, batch_size 3


def test_prefix_mismatch_falls_back_to_full_pass(classifier, monkeypatch):
    expected = classifier.score(POLICY, CONTENTS)
    bogus = _Prefix(text="bogus", ids=[classifier.tokenizer.bos_token_id, 7, 7, 7])
    monkeypatch.setattr(classifier, "_get_prefix", lambda _text: bogus)
    monkeypatch.setattr(classifier, "_forward_suffixes", None)  # must not be reached
    np.testing.assert_allclose(classifier.score(POLICY, CONTENTS), expected, atol=1e-5)


def test_adapter_is_applied(tiny_models, classifier):
    base_only = _classifier(tiny_models, adapter_dir=None)
    merged = np.array(classifier.score(POLICY, CONTENTS))
    plain = np.array(base_only.score(POLICY, CONTENTS))
    assert np.abs(merged - plain).max() > 1e-3


def test_long_content_is_split_and_max_is_kept(tiny_models):
    clf = _classifier(tiny_models, max_context_tokens=320, batch_size=4)
    policy = "Flag insults."
    long_text = " ".join(f"word{i} you fool" for i in range(120))
    pieces = clf.split_content(policy, long_text)
    assert len(pieces) > 2
    spans = clf.split_spans(policy, long_text)
    assert [long_text[a:b] for a, b in spans] == pieces
    assert spans[0][0] == 0 and spans[-1][1] == len(long_text)
    for (a0, b0), (a1, b1) in itertools.pairwise(spans):
        assert a0 < a1 < b0 < b1  # in order, each overlapping the next: nothing left out
    for piece in pieces:
        assert len(clf.tokenizer(build_prompt(policy, piece))["input_ids"]) <= 320
    piece_scores = clf.score(policy, pieces)
    scores = clf.score(policy, ["short one", long_text])
    assert scores[1] == pytest.approx(max(piece_scores), abs=1e-5)
    assert scores[0] == pytest.approx(clf.score(policy, ["short one"])[0], abs=1e-5)


def test_a_sentence_across_a_piece_boundary_is_scored_whole(tiny_models):
    """Without overlap the first piece would end inside the sentence and the next begin there:
    the sentence would be scored only as two halves."""
    clf = _classifier(tiny_models, max_context_tokens=360, batch_size=4)
    policy = "Flag insults."
    sentence = "You are a fool."
    filler = " ".join(f"word{i} fine" for i in range(80))
    first_end = clf.split_spans(policy, filler)[0][1]
    cut = filler.rindex(" ", 0, first_end - len(sentence) // 2)  # a word boundary before it
    content = f"{filler[:cut]} {sentence}{filler[cut:]}"
    pieces = clf.split_content(policy, content)
    assert sentence not in pieces[0] and pieces[0].endswith(
        tuple(sentence[:k] for k in range(4, 15))
    )
    whole = [piece for piece in pieces if sentence in piece]
    assert whole, "no piece holds the sentence whole"
    score = clf.score(policy, [content])[0]
    assert score == pytest.approx(max(clf.score(policy, pieces)), abs=1e-5)
    assert score >= max(clf.score(policy, whole)) - 1e-5


def test_float16_runs_as_float32_and_says_why(tiny_models, caplog):
    with caplog.at_level("WARNING", logger="earmark.inference.classifier"):
        clf = _classifier(tiny_models, dtype="float16")
    assert clf.dtype == "float32"
    assert {p.dtype for p in clf.model.parameters()} == {torch.float32}
    assert "float16" in caplog.text and "overflows" in caplog.text


def _poison_rows(decoder, monkeypatch, marker_ids: set[int], value: float) -> None:
    """The real forward, then ``value`` in the hidden states of rows holding a marker token."""
    real = decoder.forward

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        ids = kwargs["input_ids"]
        hit = torch.isin(ids, torch.tensor(sorted(marker_ids), device=ids.device)).any(dim=1)
        out.last_hidden_state[hit] = value
        return out

    monkeypatch.setattr(decoder, "forward", poisoned)


def test_a_non_finite_forward_raises_instead_of_scoring(classifier, monkeypatch):
    """An inf hidden state in one row: the soft-cap would turn it into a finite, plausible
    score, and max(0.0, nan) would record 0; the batch raises naming the content and policy."""
    marker = set(classifier.tokenizer.encode("zzz", add_special_tokens=False))
    contents = [*CONTENTS[:3], "zzz zzz", *CONTENTS[3:]]
    others = classifier.tokenizer(build_prompt(POLICY, "\n".join(CONTENTS)))["input_ids"]
    assert not marker & set(others)
    policy = Policy(name="rudeness", text=POLICY, sha256="x")
    for value in (float("inf"), float("nan")):
        with monkeypatch.context() as patch:
            _poison_rows(classifier.decoder, patch, marker, value)
            with pytest.raises(NonFiniteScoreError) as caught:
                classifier.score(policy, contents)
        assert caught.value.positions == [3] and caught.value.policy == "rudeness"
        assert str(caught.value).startswith("non-finite score (NaN or inf) for content #3 under")
        assert "zzz" not in str(caught.value)
        named = caught.value.for_files([10, 11, 12, 13, 14, 15, 16, 17])
        assert "file 13 under policy 'rudeness'" in str(named)


def test_rejects_sdpa_and_tiny_context(tiny_models):
    with pytest.raises(ValueError, match="attn_implementation"):
        _classifier(tiny_models, attn_implementation="sdpa")
    clf = _classifier(tiny_models, max_context_tokens=64)
    with pytest.raises(ValueError, match="too small"):
        clf.score(POLICY, ["some words " * 20])


@pytest.mark.parametrize("attn", ["sdpa", "flex_attention", "flash_attention_2"])
def test_only_eager_attention_is_accepted(tiny_models, attn):
    with pytest.raises(ValueError, match="unsupported attn_implementation"):
        _classifier(tiny_models, attn_implementation=attn)
