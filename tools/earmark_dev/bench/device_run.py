"""The GPU-stage benchmark as one prepared run on a lent GPU machine, or rehearsed on the CPU.

    tools/gpu-bench.sh --prepare    # here, with network: the wheels and the voices it carries
    tools/gpu-bench.sh              # on the GPU machine: installs the wheels, runs this
    tools/gpu-bench.sh --rehearse   # the same script on the CPU with the tiny models (CI)

Steps, each timed: the environment (versions, card), the models (real-size random weights
built on the card straight in their prepared form, or the tiny ones), the corpus (``--scale``
copies of each length: 9.9 h at the default 4), production and the fair baseline under the
22 GiB cap, then the batch-1 footnote on the shortest files. Writes ``gpu-bench.json`` (the
benchmark's figures, the environment, each step's seconds) and ``gpu-bench.txt`` (the summary)
to ``--out`` (``$OUT`` on the lent machine). A failure writes what it knows and the error, and
the exit status is 1. Transcript text is never written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# The lent machine's limits: 10 minutes a command, 15 minutes of device time a session with
# its start-up; the run is sized to finish well inside this.
BUDGET_S = 360
# Carried as cp312 wheels (``tools/gpu-bench.sh --prepare``): what the lent machine's image
# lacks, or holds in another version than requirements.txt pins.
CARRIED = (
    "transformers==5.24.0",
    "peft==0.21.2",
    "soundfile==0.14.0",
    "soxr==1.1.0",
    "silero-vad==6.2.3",
    "sqlalchemy==2.1.9",
    "regex==2026.11.19",
    "cffi==2.1.1",
    "pycparser==3.12",
)
# The lent machine's image, as the device notes list it (those this run could import).
DEVICE_IMAGE = frozenset(
    (
        "accelerate",
        "certifi",
        "charset-normalizer",
        "click",
        "filelock",
        "fsspec",
        "hf-xet",
        "huggingface-hub",
        "idna",
        "jinja2",
        "markupsafe",
        "mpmath",
        "networkx",
        "numpy",
        "packaging",
        "pillow",
        "prometheus-client",
        "protobuf",
        "psutil",
        "pyyaml",
        "regex",
        "requests",
        "rich",
        "safetensors",
        "scipy",
        "sentencepiece",
        "setuptools",
        "shellingham",
        "six",
        "sympy",
        "tokenizers",
        "torch",
        "torchaudio",
        "tqdm",
        "transformers",
        "triton",
        "typer",
        "typing-extensions",
        "urllib3",
        "peft",
        "nvidia-cublas",
        "nvidia-cuda-cupti",
        "nvidia-cuda-nvrtc",
        "nvidia-cuda-runtime",
        "nvidia-cudnn-cu13",
        "nvidia-cufft",
        "nvidia-cufile",
        "nvidia-curand",
        "nvidia-cusolver",
        "nvidia-cusparse",
        "nvidia-cusparselt-cu13",
        "nvidia-nccl-cu13",
        "nvidia-nvjitlink",
        "nvidia-nvshmem-cu13",
        "nvidia-nvtx",
        "cuda-bindings",
        "cuda-pathfinder",
        "markdown-it-py",
        "mdurl",
        "pygments",
        "annotated-doc",
    )
)


# Imported here only because they are installed (torch looks for dill, httpcore for sniffio):
# not needed there.
OPTIONAL = frozenset({"dill", "sniffio"})


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _with_requirements(names: frozenset[str]) -> set[str]:
    """``names`` and everything they require, by this machine's metadata (extras left out):
    what the lent machine's own packages bring along."""
    from importlib.metadata import PackageNotFoundError, requires

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(PackageNotFoundError):
            for requirement in requires(name) or []:
                if "extra ==" not in requirement:
                    todo.append(_norm(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]))
    return seen


def uncarried_imports() -> list[str]:
    """Distributions this process imported that the lent machine neither has (with what its
    packages require) nor is carried: a rehearsal that finds one names a wheel ``CARRIED``
    lacks. A module whose top-level name several distributions share passes if one of them is
    there (``google`` is protobuf's too)."""
    from importlib.metadata import packages_distributions

    carried = {_norm(pin.partition("==")[0]) for pin in CARRIED}
    there = _with_requirements(DEVICE_IMAGE) | carried | OPTIONAL
    owners = packages_distributions()
    missing: set[str] = set()
    for top in {module.partition(".")[0] for module in list(sys.modules)}:
        dists = {_norm(dist) for dist in owners.get(top, [])}
        if dists and not dists & there and "earmark" not in dists:
            missing |= dists
    return sorted(missing)


def environment() -> dict[str, Any]:
    """Versions and hardware, for the figures' record (no paths, no host names)."""
    import torch

    versions = {}
    for name in ("torch", "transformers", "peft", "numpy", "soundfile", "soxr", "silero-vad"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "versions": versions,
        "cpus": os.cpu_count(),
        "espeak_ng": shutil.which("espeak-ng") is not None,
        "card": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["card"] = props.name
        env["card_memory_gib"] = round(props.total_memory / 2**30, 1)
    return env


def bench_argv(args: argparse.Namespace) -> list[str]:
    """The benchmark's command line for this run."""
    work = args.work_dir
    argv = ["--json", "--work-dir", str(work), "--scale", str(args.scale)]
    argv += ["--batch1-max-s", str(args.batch1_max_s)]
    argv += ["--models-dir", str(args.models_dir or work / "models")]
    if args.rehearse:
        argv += ["--tiny", "--small-models", "--longest-s", str(args.longest_s or 300)]
    else:
        argv += ["--gpu-memory-gib", str(args.gpu_memory_gib)]
        if args.longest_s:
            argv += ["--longest-s", str(args.longest_s)]
    if args.voices_dir is not None and any(args.voices_dir.glob("*.flac")):
        argv += ["--voices-dir", str(args.voices_dir)]
    return argv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rehearse", action="store_true", help="tiny models on the CPU")
    parser.add_argument("--pins", action="store_true", help="print the wheels carried, exit")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    parser.add_argument("--scale", type=int, default=None, help="corpus copies: real 4, tiny 1")
    parser.add_argument("--longest-s", type=float, default=None, help="rehearsal: 300")
    parser.add_argument("--batch1-max-s", type=float, default=None, help="real 300, tiny 100")
    parser.add_argument("--gpu-memory-gib", type=float, default=22.0)
    parser.add_argument("--voices-dir", type=Path, default=Path("bench-voices"))
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "earmark-gpu-bench"
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="built models (reused)")
    args = parser.parse_args(argv)
    if args.scale is None:
        args.scale = 1 if args.rehearse else 4
    if args.batch1_max_s is None:
        args.batch1_max_s = 100.0 if args.rehearse else 300.0
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    args = parse_args(argv)
    if args.pins:
        print("\n".join(CARRIED))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"mode": "rehearsal" if args.rehearse else "device"}
    status = 0
    try:
        record["environment"] = environment()
        print(f"[gpu-bench] {json.dumps(record['environment'])}", file=sys.stderr, flush=True)
        from earmark_dev.bench.gpu_stage import format_report, run_benchmark
        from earmark_dev.bench.gpu_stage import parse_args as bench_args

        options, _ = bench_args(bench_argv(args))
        report = run_benchmark(options)
        record["report"] = asdict(report)
        (args.out / "gpu-bench.txt").write_text(format_report(report) + "\n", encoding="utf-8")
    except (Exception, KeyboardInterrupt) as exc:  # the record says what failed; status 1
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
        status = 1
    record["uncarried_imports"] = uncarried_imports()
    record["total_s"] = round(time.perf_counter() - started, 1)
    record["budget_s"] = BUDGET_S
    text = json.dumps(record, indent=2)
    (args.out / "gpu-bench.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
