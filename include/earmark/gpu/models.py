"""The GPU stage's models: which device and batch sizes they get, and loading each one once.

The inference modules import torch, so they are imported inside the functions that need them;
a task that is handed its model (the tests, the benchmark) never loads one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from earmark.config import Settings

if TYPE_CHECKING:  # the inference modules load torch: imported inside the tasks that run them
    from earmark.inference.budget import BatchFits
    from earmark.inference.policies import Policy
    from earmark.inference.transcriber import AsrCounters


class TranscriberLike(Protocol):
    counters: AsrCounters

    def transcribe_segments(self, segments: list[Any]) -> list[str]: ...


class ClassifierLike(Protocol):
    def score(self, policy: Policy | str, contents: list[str]) -> list[float]: ...


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(setting: str, device: str) -> str:
    """bfloat16 on a GPU that supports it, float16 on one that does not, float32 on the CPU.

    float16 is for Whisper only: the classifier runs it as float32 (Gemma-2 overflows in
    float16), see :func:`earmark.inference.classifier.classifier_dtype`.
    """
    if setting != "auto":
        return setting
    if not device.startswith("cuda"):
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def asr_model_id(settings: Settings) -> str:
    return settings.asr_model_dir.name


def classifier_model_id(settings: Settings) -> str:
    return f"{settings.base_model_dir.name}+{settings.adapter_dir.name}"


# A typical CoPE prompt: a ~1,050-token policy prefix (cached) and ~250 tokens of transcript.
TYPICAL_PREFIX_TOKENS = 1050
TYPICAL_PROMPT_TOKENS = 1300


@dataclass(frozen=True)
class StagePlan:
    """Device, dtype and batch limits of the GPU stage: the settings, capped by the budget."""

    device: str
    dtype: str
    asr_batch: int
    classify_batch: int
    classify_max_batch_tokens: int | None = None
    classify_max_context_tokens: int = 8192
    classify_fits: BatchFits | None = None  # fits(rows, prompt tokens, prefix tokens), on a GPU


def stage_plan(settings: Settings) -> StagePlan:
    """On a GPU, batch sizes are the smaller of the settings and what the memory budget fits."""
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if not device.startswith("cuda"):
        return StagePlan(device, dtype, settings.asr_batch_size, settings.classify_batch_size)
    from earmark.inference.budget import batch_sizes, classifier_fits

    fits = batch_sizes(
        settings.gpu_memory_gib,
        classifier_prompt_tokens=TYPICAL_PROMPT_TOKENS,
        prefix_tokens=TYPICAL_PREFIX_TOKENS,
        attn_implementation=settings.classifier_attention,
        max_classify_batch=settings.classify_batch_size,
    )
    return StagePlan(
        device,
        dtype,
        min(settings.asr_batch_size, fits.asr_batch),
        settings.classify_batch_size,
        None,  # the memory estimate closes batches, for each policy's real prefix length
        fits.classify_max_context_tokens,
        classifier_fits(settings.gpu_memory_gib, attn_implementation=settings.classifier_attention),
    )


def load_transcriber(settings: Settings) -> TranscriberLike:
    from earmark.inference.transcriber import Transcriber, TranscriberOptions

    plan = stage_plan(settings)
    return Transcriber(
        TranscriberOptions(
            model_dir=settings.asr_model_dir,
            device=plan.device,
            dtype=plan.dtype,
            batch_size=plan.asr_batch,
            language=settings.language,
            max_new_tokens=settings.asr_max_new_tokens,
        )
    )


def segmenter_options(settings: Settings) -> Any:
    from earmark.inference.segments import SegmenterOptions

    return SegmenterOptions(mode=settings.asr_segmenter)


def load_classifier(settings: Settings, adapter_dir: Path | None = None) -> ClassifierLike:
    """The classifier the GPU stage runs: the prepared (merged) model, checked against the base
    and adapter it was made from. With ``adapter_dir`` (a candidate judged by ``earmark
    evaluate``) the base with that adapter applied by peft at load instead, nothing prepared or
    saved. Either way on the device and within the batch limits the GPU stage would use."""
    from earmark.inference.classifier import Classifier, ClassifierOptions
    from earmark.inference.prepared import check_prepared

    plan = stage_plan(settings)
    if adapter_dir is None:
        prepared = check_prepared(
            settings.base_model_dir, settings.adapter_dir, settings.prepared_model_dir
        )
        base_dir, adapter = prepared.path, None
    else:
        base_dir, adapter = settings.base_model_dir, adapter_dir
    return Classifier(
        ClassifierOptions(
            base_dir=base_dir,
            adapter_dir=adapter,
            device=plan.device,
            dtype=plan.dtype,
            batch_size=plan.classify_batch,
            max_batch_tokens=plan.classify_max_batch_tokens,
            max_context_tokens=plan.classify_max_context_tokens,
            attn_implementation=settings.classifier_attention,
            fits=plan.classify_fits,
            max_cached_prefixes=1 if plan.device.startswith("cuda") else 8,
        )
    )


Model = TypeVar("Model")


class ModelOnce(Generic[Model]):
    """A stage's model: the one handed in, or loaded on first use, timed for the unit's figures.

    A unit with nothing to decode or score never loads a model (``loads`` stays 0).
    """

    def __init__(self, given: Model | None, load: Callable[[], Model]) -> None:
        self._model = given
        self._load = load
        self.load_s = 0.0
        self.loads = 0

    def get(self) -> Model:
        if self._model is None:
            loading = time.perf_counter()
            self._model = self._load()
            self.load_s, self.loads = time.perf_counter() - loading, 1
        return self._model
