"""The classifier prepared once per host: merged weights + manifest; stale ones are refused."""

from __future__ import annotations

import shutil

import pytest
from earmark.cli import main as earmark
from earmark.inference.classifier import Classifier, ClassifierOptions
from earmark.inference.prepared import PreparedModelError, check_prepared, prepare_classifier

CONTENTS = ["thanks for the lovely afternoon", "I know where you live and I will find you"]


@pytest.fixture
def sources(tiny_models, tmp_path):
    base, adapter = tmp_path / "gemma", tmp_path / "cope"
    shutil.copytree(tiny_models.base, base)
    shutil.copytree(tiny_models.adapter, adapter)
    return base, adapter, tmp_path / "prepared"


def test_prepared_scores_equal_merging_at_load(tiny_models):
    prepared = check_prepared(tiny_models.base, tiny_models.adapter, tiny_models.prepared)
    assert prepared.manifest["dtype"] == "float32"
    merged_now = Classifier(ClassifierOptions(tiny_models.base, tiny_models.adapter))
    loaded = Classifier(ClassifierOptions(prepared.path, None))
    policy = "Flag content that threatens a person."
    assert loaded.score(policy, CONTENTS) == pytest.approx(
        merged_now.score(policy, CONTENTS), abs=1e-5
    )


def test_missing_or_stale_prepared_model_names_the_command(sources):
    base, adapter, out = sources
    with pytest.raises(PreparedModelError, match="earmark models prepare"):
        check_prepared(base, adapter, out)
    prepare_classifier(base, adapter, out, "float32")
    check_prepared(base, adapter, out)
    weights = next(adapter.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a new adapter version
    weights.write_bytes(bytes(data))
    with pytest.raises(PreparedModelError, match=r"other base or adapter files.*models prepare"):
        check_prepared(base, adapter, out)
    prepare_classifier(base, adapter, out, "float32")  # replaces the stale one
    check_prepared(base, adapter, out)
    next(out.glob("*.safetensors")).write_bytes(b"cut")
    with pytest.raises(PreparedModelError, match="missing or cut"):
        check_prepared(base, adapter, out)


def test_earmark_models_prepare_and_check(sources, monkeypatch, capsys):
    base, adapter, out = sources
    monkeypatch.setenv("EARMARK_BASE_MODEL_DIR", str(base))
    monkeypatch.setenv("EARMARK_ADAPTER_DIR", str(adapter))
    monkeypatch.setenv("EARMARK_PREPARED_MODEL_DIR", str(out))
    assert earmark(["models", "check"]) == 1
    assert "earmark models prepare" in capsys.readouterr().out
    assert earmark(["models", "prepare", "--dtype", "float32"]) == 0
    assert earmark(["models", "check"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"Ready: {out}")
