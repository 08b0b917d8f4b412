"""The classifier's memory budget against host memory measured at real width on the CPU.

Gemma-2-9B's layer shapes (2 layers, random bf16 weights) through the production ``Classifier``:
the cached policy prefix, the pass that builds it, and batches of 1 and 6 typical rows (a
1,050-token policy prefix, 250 tokens of transcript each) each within 15% of
``earmark.inference.budget``'s estimate for the same shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from earmark_dev.bench.classifier_memory import run

pytestmark = [pytest.mark.bench, pytest.mark.long]  # 7 min on 2 cores: make test-long


def test_budget_prices_the_prefix_cached_path_within_15_percent(tmp_path: Path) -> None:
    result = run(tmp_path, rows=[1, 6], layers=2, prefix_tokens=1050, suffix_tokens=250)
    print(json.dumps(result))
    assert result["prefix_tokens"] == 1050
    assert 1290 <= result["prompt_tokens"] <= 1310
    assert [batch["rows"] for batch in result["batches"]] == [1, 6]
    for figure in (result["prefix_cache"], result["prefix_pass"], *result["batches"]):
        assert 0.85 <= figure["ratio"] <= 1.15, result
    # The per-row cost is real: six rows need well over the prefix and one row.
    one, six = (batch["measured"] for batch in result["batches"])
    assert six > one + 4 * (one - result["prefix_cache"]["measured"])
