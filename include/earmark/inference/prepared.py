"""The classifier prepared once per GPU host: the CoPE adapter merged into Gemma-2, saved.

Why: merging the LoRA at every task means reading the 17 GiB base into host memory, merging on
the CPU and copying from pageable memory, a minute or more per task. ``earmark models prepare``
does it once; tasks then load the merged safetensors straight onto their GPU.

A manifest beside the weights records what they were made from: each source file's size and a
digest of its first and last MiB (whole files when small), the dtype and the library versions.
A task refuses weights whose sources or versions changed, naming the command that fixes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "earmark-manifest.json"
_EDGE = 1 << 20  # bytes hashed at each end of a large source file
PREPARE_COMMAND = "earmark models prepare"


class PreparedModelError(RuntimeError):
    """The prepared classifier is missing, incomplete or stale; the message says what to run."""


@dataclass(frozen=True)
class PreparedModel:
    """Where the merged classifier lies and what its manifest says."""

    path: Path
    manifest: dict[str, Any]


def _digest(path: Path) -> str:
    size = path.stat().st_size
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        if size <= 2 * _EDGE:
            sha.update(fh.read())
        else:
            sha.update(fh.read(_EDGE))
            fh.seek(size - _EDGE)
            sha.update(fh.read(_EDGE))
    return sha.hexdigest()


def source_fingerprint(*dirs: Path) -> dict[str, dict[str, Any]]:
    """Every file of the source directories: size and edge digest, keyed ``dirname/relpath``."""
    files: dict[str, dict[str, Any]] = {}
    for directory in dirs:
        for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
            key = f"{Path(directory).name}/{path.relative_to(directory).as_posix()}"
            files[key] = {"size": path.stat().st_size, "digest": _digest(path)}
    return files


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("transformers", "peft", "torch")}


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def prepare_classifier(
    base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str
) -> PreparedModel:
    """Merge ``adapter_dir`` into ``base_dir`` and save to ``out_dir`` (replaced atomically)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # Gemma-2 overflows in fp16
    if dtype not in dtypes:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(dtypes)}")
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtypes[dtype])
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.save_pretrained(staging, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(staging)
    manifest = {
        "kind": "cope-a merged classifier",
        "base_dir": str(Path(base_dir).resolve()),
        "adapter_dir": str(Path(adapter_dir).resolve()),
        "dtype": dtype,
        "versions": _versions(),
        "sources": source_fingerprint(base_dir, adapter_dir),
        "files": {
            p.name: {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in sorted(staging.iterdir())
            if p.is_file()
        },
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    old = out_dir.with_name(out_dir.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    if old.exists():
        shutil.rmtree(old)
    return PreparedModel(out_dir, manifest)


def check_prepared(base_dir: Path, adapter_dir: Path, prepared_dir: Path) -> PreparedModel:
    """The prepared classifier, or :class:`PreparedModelError` saying why it cannot be used."""
    prepared_dir = Path(prepared_dir)
    manifest_path = prepared_dir / MANIFEST
    fix = f"run `{PREPARE_COMMAND}` on this host"
    if not manifest_path.is_file():
        raise PreparedModelError(f"no prepared classifier at {prepared_dir}: {fix}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PreparedModelError(f"unreadable manifest {manifest_path}: {fix}") from exc
    for name, entry in manifest.get("files", {}).items():
        path = prepared_dir / name
        if not path.is_file() or path.stat().st_size != entry["size"]:
            raise PreparedModelError(f"prepared classifier file {name} is missing or cut: {fix}")
    if manifest.get("sources") != source_fingerprint(base_dir, adapter_dir):
        raise PreparedModelError(
            f"the prepared classifier at {prepared_dir} was made from other base or adapter "
            f"files than {base_dir} and {adapter_dir}: {fix}"
        )
    made_with = manifest.get("versions", {}).get("transformers", "?")
    running = _versions()["transformers"]
    if _minor(made_with) != _minor(running):
        raise PreparedModelError(
            f"the prepared classifier was saved by transformers {made_with}, this is "
            f"{running}: {fix}"
        )
    return PreparedModel(prepared_dir, manifest)
