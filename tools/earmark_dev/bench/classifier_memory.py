"""Classifier memory at real width on the CPU, against ``earmark.inference.budget``'s estimate.

Gemma-2-9B's layer shapes (hidden 3584, 16 heads of 256, 8 KV heads, MLP 14336) with a few
layers and random bf16 weights, run through the production ``Classifier``: one policy prefix
of ``--prefix-tokens`` (computed once) and batches of ``--rows`` contents whose prompts add
``--suffix-tokens`` each. The budget's per-layer figures scale with the layer count, so a
few layers price what 42 do.

Host memory is read from the kernel: each measurement runs in a fresh process whose large
allocations go straight to ``mmap`` (``MALLOC_MMAP_THRESHOLD_``), so freeing a tensor returns
its pages and the resident set follows what torch holds; the peak is ``VmHWM`` after a reset
through ``/proc/self/clear_refs``. Prints one JSON object::

    python -m earmark_dev.bench.classifier_memory --rows 1,6 --layers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from earmark_dev.bench.models import GEMMA2_9B_ARCH

MARKER = ".earmark-real-width-classifier-v1"
MMAP_THRESHOLD = 128 * 1024


def build_model(dest: Path, layers: int) -> Path:
    """Gemma-2-9B's width, ``layers`` layers, the tiny byte-level tokenizer, bf16; reused."""
    import torch
    from earmark_dev.tiny_models import build_tiny_models
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

    out = dest / f"gemma2-width-{layers}-layers"
    if (out / MARKER).is_file():
        return out
    tiny = build_tiny_models(dest / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(tiny.base)
    arch = {**GEMMA2_9B_ARCH, "num_hidden_layers": layers, "vocab_size": len(tokenizer)}
    config = Gemma2Config(**arch, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = Gemma2ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / MARKER).write_text("ok\n", encoding="utf-8")
    return out


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _text(tokens: int, seed: int) -> str:
    """About ``tokens`` byte tokens of letters and spaces (no vocabulary words), by ``seed``."""
    letters = "qxzjkvw "
    return "".join(letters[(i * i + seed * 7) % len(letters)] for i in range(tokens))


def measure(
    model_dir: Path, rows: list[int], prefix_tokens: int, suffix_tokens: int
) -> dict[str, Any]:
    """In this process: the prefix pass's peak, then each batch's of ``rows`` suffixes."""
    import gc

    import torch
    from earmark.inference.classifier import Classifier, ClassifierOptions
    from earmark.inference.prompt import build_prompt, split_prompt

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    classifier = Classifier(
        ClassifierOptions(
            base_dir=model_dir, adapter_dir=None, dtype="bfloat16", batch_size=max(rows)
        )
    )
    tokenizer = classifier.tokenizer
    template_tokens = len(tokenizer(split_prompt("")[0])["input_ids"])
    policy = _text(prefix_tokens - template_tokens, seed=1)
    contents = [_text(suffix_tokens - 20, seed=2 + k) for k in range(max(rows))]
    # Warm-up with the same shapes under another policy: thread pools, kernels' workspaces and
    # the allocator reach their steady state before the baseline.
    classifier.score(_text(prefix_tokens - template_tokens, seed=99), contents)
    classifier._prefixes.clear()
    gc.collect()

    baseline = _memory_kib("VmRSS")
    _reset_peak()
    prefix = classifier._get_prefix(policy)
    classifier._prefix_cache(prefix)
    prefix_peak = _memory_kib("VmHWM")
    with_prefix = _memory_kib("VmRSS")
    batches = []
    for n in rows:
        gc.collect()
        _reset_peak()
        classifier.score(policy, contents[:n])
        batches.append({"rows": n, "peak_bytes": (_memory_kib("VmHWM") - baseline) * 1024})
    prompt = max(len(tokenizer(build_prompt(policy, c))["input_ids"]) for c in contents)
    return {
        "prefix_tokens": len(prefix.ids),
        "prompt_tokens": prompt,
        "prefix_cache_bytes": (with_prefix - baseline) * 1024,
        "prefix_pass_peak_bytes": (prefix_peak - baseline) * 1024,
        "batches": batches,
    }


def _compared(measured: float, estimate: float) -> dict[str, float]:
    return {"measured": measured, "estimate": estimate, "ratio": round(measured / estimate, 3)}


def compare(measured: dict[str, Any], layers: int) -> dict[str, Any]:
    """Each measured figure beside the budget's for the same shapes (no weights, no overhead)."""
    from earmark.inference.budget import (
        GEMMA2_9B,
        prefix_pass_bytes,
        suffix_pass_bytes,
    )

    footprint = replace(GEMMA2_9B, weights_gib=0.0, layers=layers)
    prefix, prompt = measured["prefix_tokens"], measured["prompt_tokens"]
    return {
        "layers": layers,
        "prefix_tokens": prefix,
        "prompt_tokens": prompt,
        "prefix_cache": _compared(
            measured["prefix_cache_bytes"], prefix * footprint.kv_bytes_per_token
        ),
        "prefix_pass": _compared(
            measured["prefix_pass_peak_bytes"],
            prefix_pass_bytes(prefix, classifier=footprint, overhead_gib=0),
        ),
        "batches": [
            {
                "rows": batch["rows"],
                **_compared(
                    batch["peak_bytes"],
                    suffix_pass_bytes(
                        batch["rows"],
                        prompt,
                        prefix_tokens=prefix,
                        classifier=footprint,
                        overhead_gib=0,
                    ),
                ),
            }
            for batch in measured["batches"]
        ],
    }


def run(
    models: Path, *, rows: list[int], layers: int, prefix_tokens: int, suffix_tokens: int
) -> dict[str, Any]:
    """Build (or reuse) the model, measure in a fresh process, compare with the budget."""
    model_dir = build_model(models, layers)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    child = [str(model_dir), ",".join(map(str, rows)), str(prefix_tokens), str(suffix_tokens)]
    out = subprocess.run(
        [sys.executable, "-m", "earmark_dev.bench.classifier_memory", "--child", *child],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"measurement failed:\n{out.stderr[-4000:]}")
    return compare(json.loads(out.stdout.strip().splitlines()[-1]), layers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=Path(".bench-models"))
    parser.add_argument("--rows", default="1,6", help="batch sizes, comma-separated")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--prefix-tokens", type=int, default=1050)
    parser.add_argument("--suffix-tokens", type=int, default=250)
    parser.add_argument("--child", nargs=4, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model_dir, rows, prefix, suffix = args.child
        sizes = [int(n) for n in rows.split(",")]
        print(json.dumps(measure(Path(model_dir), sizes, int(prefix), int(suffix))))
        return 0
    result = run(
        args.models,
        rows=[int(n) for n in args.rows.split(",")],
        layers=args.layers,
        prefix_tokens=args.prefix_tokens,
        suffix_tokens=args.suffix_tokens,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
