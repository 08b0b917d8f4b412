"""Earmark's configuration: one place, environment variables with documented defaults.

Read at run time (``Settings.from_env()``), never cached at import, so a worker picks up a changed
environment on its next task. Each setting is declared once, as a ``Settings`` field made by
:func:`setting` (its variable, default, meaning and parser); ``from_env`` and the README's
configuration table (``settings_table_markdown``) both come from those declarations.

Why one module over 500 lines: it is the one place every setting is declared, and most of its
lines are the settings' own documentation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from datetime import time
from pathlib import Path
from typing import Any, TypeVar, dataclass_transform, overload

PROJECT_ROOT = Path(__file__).resolve().parents[2]

log = logging.getLogger(__name__)

T = TypeVar("T")

_METADATA_KEY = "earmark_setting"
_warned_old_names: set[str] = set()


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default (as written in the environment), what it means,
    how its text becomes the attribute's value, and the name it had before (``old``), still
    read while the new one is unset."""

    env: str
    default: str
    doc: str
    parse: Callable[[str], Any]
    old: str | None = None

    def raw(self) -> str:
        """The variable's text: the new name's, else the old name's (logged as deprecated once
        per process), else the default."""
        former = os.environ.get(self.old) if self.old else None
        if self.old and former is not None and self.old not in _warned_old_names:
            _warned_old_names.add(self.old)
            log.warning(
                "%s is deprecated: rename it %s (read while that is unset)", self.old, self.env
            )
        return os.environ.get(self.env, self.default if former is None else former)

    def read(self) -> Any:
        """The parsed value; a ValueError naming the variable when its text does not parse."""
        text = self.raw()
        try:
            return self.parse(text)
        except ValueError as why:
            raise ValueError(f"{self.env} {why}, got {text!r}") from None


@overload
def setting(env: str, default: str, doc: str, *, old: str | None = None) -> str: ...


@overload
def setting(
    env: str, default: str, doc: str, *, parse: Callable[[str], T], old: str | None = None
) -> T: ...


def setting(
    env: str, default: str, doc: str, *, parse: Callable[[str], Any] = str, old: str | None = None
) -> Any:
    """A ``Settings`` field read from variable ``env`` (``default`` when unset) by ``parse``.

    Typed as what ``parse`` returns, so mypy sees each attribute's own type; at run time it is
    a dataclass field (no default: ``from_env`` supplies every value) carrying the
    :class:`Setting` in its metadata.
    """
    return field(metadata={_METADATA_KEY: Setting(env, default, doc, parse, old)})


def _checked(convert: Callable[[str], T], expected: str) -> Callable[[str], T]:
    """``convert`` whose ValueError says what was expected (``Setting.read`` names the
    variable and the text)."""

    def parse(text: str) -> T:
        try:
            return convert(text)
        except ValueError:
            raise ValueError(f"must be {expected}") from None

    return parse


def _hh_mm(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def _zero_to_one(text: str) -> float:
    share = float(text)
    if not 0.0 <= share <= 1.0:
        raise ValueError(text)
    return share


def _whole_days_or_forever(text: str) -> int | None:
    """A retention: a whole number of days (0 or more), or ``forever`` (None: never removed)."""
    if text.strip().lower() == "forever":
        return None
    days = int(text)
    if days < 0:
        raise ValueError(text)
    return days


def _flag(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


def _project_path(text: str) -> Path:
    """A path relative to the project root (an absolute one stays as it is)."""
    return PROJECT_ROOT / text


@dataclass_transform(frozen_default=True, field_specifiers=(setting,))
def _settings_dataclass(cls: type[T]) -> type[T]:
    """``dataclass(frozen=True)``, declared so that type checkers and linters take each
    :func:`setting` as a required field typed as its parser's result."""
    return dataclass(frozen=True)(cls)


_whole = _checked(int, "a whole number")
_number = _checked(float, "a number")
_local_time = _checked(_hh_mm, "a local time HH:MM")
_share = _checked(_zero_to_one, "a share from 0 to 1")
_days_or_forever = _checked(_whole_days_or_forever, "a whole number of days or `forever`")


@_settings_dataclass
class Settings:
    """Typed view of the environment at one moment; the fields' order is the README table's."""

    data_root: Path = setting(
        "EARMARK_DATA_ROOT",
        "/mnt/data",
        "Data volume holding incoming/, claimed/, audio/, quarantine/ and processed/.",
        parse=Path,
    )
    db_conn_id: str = setting(
        "EARMARK_DB_CONN_ID",
        "earmark_db",
        "Airflow connection of the results DB (Postgres in production, SQLite embedded).",
    )
    timezone: str = setting(
        "EARMARK_TIMEZONE", "Europe/London", "Timezone of the daily schedule and the deadline."
    )
    start_time: time = setting(
        "EARMARK_START_TIME", "06:00", "Local time the daily run starts (HH:MM).", parse=_local_time
    )
    deadline_time: time = setting(
        "EARMARK_DEADLINE_TIME",
        "12:00",
        "Local time by which the day must be done; missing it sends an email (HH:MM).",
        parse=_local_time,
    )
    intake_cutoff: time = setting(
        "EARMARK_INTAKE_CUTOFF",
        "10:00",
        "Local time until which archives arriving after the day's run took its deliveries are "
        "still screened that day, by a catch-up run; later ones wait for the next day's run and "
        "are named in the noon check (HH:MM, between the start and the deadline).",
        parse=_local_time,
    )
    catchup_every_minutes: int = setting(
        "EARMARK_CATCHUP_EVERY_MINUTES",
        "10",
        "How often earmark_catchup looks in incoming/ for archives that arrived after the day's "
        "run took its deliveries.",
        parse=_whole,
    )
    deadline_alerts: bool = setting(
        "EARMARK_DEADLINE_ALERTS",
        "true",
        "Attach the Deadline Alert to the DAG. Only `airflow dags test` runs turn it off.",
        parse=_flag,
    )
    retry_delay_seconds: float = setting(
        "EARMARK_RETRY_DELAY_SECONDS",
        "60",
        "First retry delay of every earmark_daily task (then doubling, at most 15 min).",
        parse=_number,
    )
    sensor_poke_seconds: int = setting(
        "EARMARK_SENSOR_POKE_SECONDS",
        "60",
        "How often the deferred FileSensor looks for ready markers in incoming/.",
        parse=_whole,
    )
    alert_email: str = setting(
        "EARMARK_ALERT_EMAIL", "ops@example.org", "Where deadline and failure emails go."
    )
    smtp_conn_id: str = setting(
        "EARMARK_SMTP_CONN_ID", "smtp_default", "Airflow SMTP connection used for alerts."
    )
    metrics_bind: str = setting(
        "EARMARK_METRICS_BIND",
        "127.0.0.1",
        "Address `earmark metrics` serves Prometheus metrics on (local by default).",
    )
    metrics_port: int = setting(
        "EARMARK_METRICS_PORT", "9464", "Port `earmark metrics` serves /metrics on.", parse=_whole
    )
    health_disk_warn_gib: float = setting(
        "EARMARK_HEALTH_DISK_WARN_GIB",
        "100",
        "`earmark health` warns below this many GiB free on the data volume.",
        parse=_number,
    )
    health_disk_critical_gib: float = setting(
        "EARMARK_HEALTH_DISK_CRITICAL_GIB",
        "20",
        "`earmark health` is critical below this many GiB free on the data volume.",
        parse=_number,
    )
    health_queue_warn: int = setting(
        "EARMARK_HEALTH_QUEUE_WARN",
        "1000",
        "`earmark health` warns when a Celery queue holds more messages than this.",
        parse=_whole,
    )
    health_review_warn_items: int = setting(
        "EARMARK_HEALTH_REVIEW_WARN_ITEMS",
        "500",
        "`earmark health` warns when more review items than this are open.",
        parse=_whole,
    )
    health_review_warn_hours: float = setting(
        "EARMARK_HEALTH_REVIEW_WARN_HOURS",
        "48",
        "`earmark health` warns when the oldest open review item is older than this.",
        parse=_number,
    )
    health_task_warn_minutes: float = setting(
        "EARMARK_HEALTH_TASK_WARN_MINUTES",
        "180",
        "`earmark health` warns about task instances running longer than this.",
        parse=_number,
    )
    health_worker_wait_seconds: float = setting(
        "EARMARK_HEALTH_WORKER_WAIT_SECONDS",
        "0.5",
        "`earmark health` asks the Celery workers with one broadcast and stops listening this "
        "many seconds after the last reply; when a queue or GPU slot then seems missing it asks "
        "once more, waiting four times as long, before saying so.",
        parse=_number,
    )
    stall_minutes: float = setting(
        "EARMARK_STALL_MINUTES",
        "30",
        "The deadline mail calls a run stalled, and gives no ETA, when none of its tasks is "
        "running or nothing of the day has changed in the results DB for this long.",
        parse=_number,
    )
    asr_model_dir: Path = setting(
        "EARMARK_ASR_MODEL_DIR",
        "/models/whisper-large-v3-turbo",
        "Local Whisper model directory (transformers format).",
        parse=Path,
    )
    base_model_dir: Path = setting(
        "EARMARK_BASE_MODEL_DIR",
        "/models/gemma-2-9b",
        "Local Gemma-2 base model directory.",
        parse=Path,
    )
    adapter_dir: Path = setting(
        "EARMARK_ADAPTER_DIR",
        "/models/cope-a-lora",
        "Local CoPE-A LoRA adapter (peft).",
        parse=Path,
    )
    prepared_model_dir: Path = setting(
        "EARMARK_PREPARED_MODEL_DIR",
        "/models/prepared/cope-a-merged",
        "The classifier with its adapter merged, written by `earmark models prepare` on each "
        "GPU host; GPU tasks load only this.",
        parse=Path,
    )
    policies_dir: Path = setting(
        "EARMARK_POLICIES_DIR",
        "include/policies",
        "Policy markdown files, every *.md screened (a relative path: from the project).",
        parse=_project_path,
    )
    device: str = setting("EARMARK_DEVICE", "auto", "Inference device: auto, cuda or cpu.")
    dtype: str = setting(
        "EARMARK_DTYPE",
        "auto",
        "Inference dtype: auto (bfloat16 on a GPU that has it, float32 on the CPU). On a GPU"
        " without bfloat16, Whisper runs in float16 and the classifier in float32 (Gemma-2"
        " overflows in float16).",
    )
    language: str = setting("EARMARK_LANGUAGE", "en", "Whisper language.")
    asr_max_new_tokens: int = setting(
        "EARMARK_ASR_MAX_NEW_TOKENS",
        "224",
        "Whisper token limit per 30 s segment (Whisper's own is 224); loops are cut earlier.",
        parse=_whole,
    )
    asr_segmenter: str = setting(
        "EARMARK_ASR_SEGMENTER",
        "vad",
        "How audio becomes Whisper's <= 30 s segments: vad (speech found by silero-vad; silence "
        "is never decoded) or windows (fixed 30 s windows).",
    )
    decode_held_mib: int = setting(
        "EARMARK_DECODE_HELD_MIB",
        "512",
        "Decoded 16 kHz segments waiting for Whisper, at most, in MiB (the decode threads wait "
        "beyond it); audio is decoded in blocks, so no file is held whole whatever its length.",
        parse=_whole,
    )
    flag_threshold: float = setting(
        "EARMARK_FLAG_THRESHOLD",
        "0.5",
        "A (file, policy) score at or above this goes to the RA review queue.",
        parse=_number,
    )
    review_qa_share: float = setting(
        "EARMARK_REVIEW_QA_SHARE",
        "0.1",
        "Share (0-1) of decided flags that go to a second reviewer, blind to the first "
        "decision: the agreement figures come from these.",
        parse=_share,
    )
    review_sample_share: float = setting(
        "EARMARK_REVIEW_SAMPLE_SHARE",
        "0",
        "Share (0-1) of the (file, policy) scores BELOW the threshold queued for review anyway, "
        "to estimate what the threshold misses. 0: none.",
        parse=_share,
    )
    review_correct_minutes: float = setting(
        "EARMARK_REVIEW_CORRECT_MINUTES",
        "15",
        "How long after a decision its reviewer may still correct it (kept as a new event).",
        parse=_number,
    )
    gpu_slots: int = setting(
        "EARMARK_GPU_SLOTS",
        "1",
        "GPUs serving the gpu queue in total (one worker per GPU); the gpu pool's size. A day "
        "is planned into at least this many work units.",
        parse=_whole,
    )
    unit_target_minutes: float = setting(
        "EARMARK_UNIT_TARGET_MINUTES",
        "20",
        "Expected GPU minutes per work unit (one mapped GPU task each): long enough that "
        "loading the models is a few percent of it, well inside the task token's life.",
        parse=_number,
    )
    assumed_realtime_x: float = setting(
        "EARMARK_ASSUMED_REALTIME_X",
        "100",
        "Audio seconds per GPU second assumed when planning before any unit has been measured "
        "(conservative); afterwards the recent units' measured rate is used.",
        parse=_number,
    )
    unit_max_files: int = setting(
        "EARMARK_UNIT_MAX_FILES",
        "2000",
        "Most files in one GPU work unit.",
        parse=_whole,
        old="EARMARK_BATCH_MAX_FILES",
    )
    unpack_tasks_max: int = setting(
        "EARMARK_UNPACK_TASKS_MAX",
        "256",
        "Most mapped unpack tasks in one run: above it archives are unpacked in even groups, "
        "one group per task (never more than Airflow's [core] max_map_length).",
        parse=_whole,
    )
    asr_batch_size: int = setting(
        "EARMARK_ASR_BATCH_SIZE",
        "64",
        "Whisper segments per generate call (on GPU the memory budget may lower it).",
        parse=_whole,
    )
    classify_batch_size: int = setting(
        "EARMARK_CLASSIFY_BATCH_SIZE",
        "64",
        "Most prompts per CoPE forward pass (on GPU the memory budget may lower it).",
        parse=_whole,
    )
    gpu_memory_gib: float = setting(
        "EARMARK_GPU_MEMORY_GIB",
        "22",
        "GPU memory the GPU stage may use; batch sizes are derived from it.",
        parse=_number,
    )
    classifier_attention: str = setting(
        "EARMARK_CLASSIFIER_ATTENTION",
        "eager",
        "Gemma-2 attention: eager, the only path shipped (sdpa drops Gemma-2's soft-capping; "
        "flex_attention and flash_attention_2 are not tested here).",
    )
    max_audio_seconds: float = setting(
        "EARMARK_MAX_AUDIO_SECONDS", "14400", "Longest accepted recording.", parse=_number
    )
    max_compression_ratio: float = setting(
        "EARMARK_MAX_COMPRESSION_RATIO",
        "100",
        "A .tar.gz whose members declare more than this many bytes per compressed byte is "
        "rejected (gzip bomb); speech gzips to about 1.1x.",
        parse=_number,
    )
    free_disk_margin_mb: float = setting(
        "EARMARK_FREE_DISK_MARGIN_MB",
        "1024",
        "Free space an unpack leaves on the data volume beyond what the archive's members need "
        "(MiB); an archive that would eat into it waits for a rerun. Lower it on a small "
        "volume.",
        parse=_number,
    )
    free_disk_margin_share: float = setting(
        "EARMARK_FREE_DISK_MARGIN_SHARE",
        "0",
        "A further margin as a share of what the members need (0.1: 10 % more), for volumes "
        "that must also hold what the day's later archives unpack.",
        parse=_number,
    )
    register_timeout_minutes: float = setting(
        "EARMARK_REGISTER_TIMEOUT_MINUTES",
        "30",
        "Longest the register_archives task may run before Airflow stops and retries it.",
        parse=_number,
    )
    processed_retention_days: int = setting(
        "EARMARK_PROCESSED_RETENTION_DAYS",
        "30",
        "Retention of delivered archives: the archives in processed/ (and duplicate deliveries "
        "of them) of a day older than this many days are removed, by the daily retention task.",
        parse=_whole,
    )
    retain_unflagged_audio_days: int | None = setting(
        "EARMARK_RETAIN_UNFLAGGED_AUDIO_DAYS",
        "30",
        "Retention of the audio files of recordings never flagged (no label 1, no review item; "
        "refused ones in quarantine/ too), in days from their run date, or `forever`.",
        parse=_days_or_forever,
    )
    retain_flagged_audio_days: int | None = setting(
        "EARMARK_RETAIN_FLAGGED_AUDIO_DAYS",
        "90",
        "Retention of the audio files of flagged recordings, in days from the later of their "
        "run date and the last review decision of their items, or `forever`; never while one "
        "of their items is open.",
        parse=_days_or_forever,
    )
    retain_transcripts_days: int | None = setting(
        "EARMARK_RETAIN_TRANSCRIPTS_DAYS",
        "365",
        "Retention of transcripts, in days from the run date or the recording's last review "
        "decision (the later), or `forever`; never while one of its review items is open.",
        parse=_days_or_forever,
    )
    retain_labels_days: int | None = setting(
        "EARMARK_RETAIN_LABELS_DAYS",
        "forever",
        "Retention of labels (the scores), counted as transcripts are, in days or `forever`.",
        parse=_days_or_forever,
    )
    retain_reviews_days: int | None = setting(
        "EARMARK_RETAIN_REVIEWS_DAYS",
        "730",
        "Retention of decided review items with their review_events and audio_fetches (the "
        "audit trail), in days from the last decision, or `forever`; only once the audio is gone.",
        parse=_days_or_forever,
    )
    transfer_source: str = setting(
        "EARMARK_TRANSFER_SOURCE",
        "",
        "Where earmark_transfer fetches archives from: an ObjectStoragePath URL "
        "(`file:///srv/dropbox`, `sftp://conn_id@host/path`). Empty: the DAG does nothing.",
    )
    transfer_settle_seconds: int = setting(
        "EARMARK_TRANSFER_SETTLE_SECONDS",
        "120",
        "A source archive without a companion NAME.sha256 is copied only once its size and "
        "mtime have not changed for this long.",
        parse=_whole,
    )
    transfer_known_hosts: Path = setting(
        "EARMARK_TRANSFER_KNOWN_HOSTS",
        "/etc/earmark/known_hosts",
        "OpenSSH known_hosts file the SFTP source's host key is checked against (required for "
        "sftp:// sources; `ssh-keyscan -p PORT HOST`, then compare the fingerprint).",
        parse=Path,
    )
    transfer_delete_source: bool = setting(
        "EARMARK_TRANSFER_DELETE_SOURCE",
        "false",
        "Delete a source archive (and its NAME.sha256) once copied, only when its companion "
        "digest matched the copied bytes. Off: sources are never deleted.",
        parse=_flag,
    )

    @classmethod
    def from_env(cls) -> Settings:
        """Every setting read from the environment now."""
        return cls(**{f.name: declared(f).read() for f in fields(cls)})

    @property
    def incoming(self) -> Path:
        return self.data_root / "incoming"

    @property
    def audio(self) -> Path:
        return self.data_root / "audio"

    @property
    def quarantine(self) -> Path:
        return self.data_root / "quarantine"

    @property
    def processed(self) -> Path:
        return self.data_root / "processed"

    @property
    def claimed(self) -> Path:
        """Deliveries intake has taken out of incoming/ and not yet given a verdict or home."""
        return self.data_root / "claimed"

    def ensure_layout(self) -> None:
        """Create the data-root folders; harmless when they exist."""
        for folder in (self.incoming, self.claimed, self.audio, self.quarantine, self.processed):
            folder.mkdir(parents=True, exist_ok=True)


def declared(settings_field: Field[Any]) -> Setting:
    """The :class:`Setting` a ``Settings`` field was declared with."""
    found: Setting = settings_field.metadata[_METADATA_KEY]
    return found


def settings_table_markdown() -> str:
    """The configuration table for the README, from the ``Settings`` declarations."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for settings_field in fields(Settings):
        s = declared(settings_field)
        default = f"`{s.default}`" if s.default else "(empty)"
        former = f" Formerly `{s.old}`, still read while this is unset." if s.old else ""
        rows.append(f"| `{s.env}` | {default} | {s.doc}{former} |")
    return "\n".join(rows)
