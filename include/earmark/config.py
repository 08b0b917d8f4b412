"""Earmark's configuration: one place, environment variables with documented defaults.

Read at run time (``Settings.from_env()``), never cached at import, so a worker picks up a changed
environment on its next task. The README's configuration table is generated from ``SETTINGS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from datetime import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default and what it means."""

    env: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "EARMARK_DATA_ROOT",
        "/mnt/data",
        "Data volume holding incoming/, claimed/, audio/, quarantine/ and processed/.",
    ),
    Setting(
        "EARMARK_DB_CONN_ID",
        "earmark_db",
        "Airflow connection of the results DB (Postgres in production, SQLite embedded).",
    ),
    Setting(
        "EARMARK_TIMEZONE", "Europe/London", "Timezone of the daily schedule and the deadline."
    ),
    Setting("EARMARK_START_TIME", "06:00", "Local time the daily run starts (HH:MM)."),
    Setting(
        "EARMARK_DEADLINE_TIME",
        "12:00",
        "Local time by which the day must be done; missing it sends an email (HH:MM).",
    ),
    Setting(
        "EARMARK_INTAKE_CUTOFF",
        "10:00",
        "Local time until which archives arriving after the day's run took its deliveries are "
        "still screened that day, by a catch-up run; later ones wait for the next day's run and "
        "are named in the noon check (HH:MM, between the start and the deadline).",
    ),
    Setting(
        "EARMARK_CATCHUP_EVERY_MINUTES",
        "10",
        "How often earmark_catchup looks in incoming/ for archives that arrived after the "
        "day's run took its deliveries.",
    ),
    Setting(
        "EARMARK_DEADLINE_ALERTS",
        "true",
        "Attach the Deadline Alert to the DAG. Only `airflow dags test` runs turn it off.",
    ),
    Setting(
        "EARMARK_RETRY_DELAY_SECONDS",
        "60",
        "First retry delay of every earmark_daily task (then doubling, at most 15 min).",
    ),
    Setting(
        "EARMARK_SENSOR_POKE_SECONDS",
        "60",
        "How often the deferred FileSensor looks for ready markers in incoming/.",
    ),
    Setting("EARMARK_ALERT_EMAIL", "ops@example.org", "Where deadline and failure emails go."),
    Setting("EARMARK_SMTP_CONN_ID", "smtp_default", "Airflow SMTP connection used for alerts."),
    Setting(
        "EARMARK_METRICS_BIND",
        "127.0.0.1",
        "Address `earmark metrics` serves Prometheus metrics on (local by default).",
    ),
    Setting("EARMARK_METRICS_PORT", "9464", "Port `earmark metrics` serves /metrics on."),
    Setting(
        "EARMARK_HEALTH_DISK_WARN_GIB",
        "100",
        "`earmark health` warns below this many GiB free on the data volume.",
    ),
    Setting(
        "EARMARK_HEALTH_DISK_CRITICAL_GIB",
        "20",
        "`earmark health` is critical below this many GiB free on the data volume.",
    ),
    Setting(
        "EARMARK_HEALTH_QUEUE_WARN",
        "1000",
        "`earmark health` warns when a Celery queue holds more messages than this.",
    ),
    Setting(
        "EARMARK_HEALTH_REVIEW_WARN_ITEMS",
        "500",
        "`earmark health` warns when more review items than this are open.",
    ),
    Setting(
        "EARMARK_HEALTH_REVIEW_WARN_HOURS",
        "48",
        "`earmark health` warns when the oldest open review item is older than this.",
    ),
    Setting(
        "EARMARK_HEALTH_TASK_WARN_MINUTES",
        "180",
        "`earmark health` warns about task instances running longer than this.",
    ),
    Setting(
        "EARMARK_HEALTH_WORKER_WAIT_SECONDS",
        "0.5",
        "`earmark health` asks the Celery workers with one broadcast and stops listening this "
        "many seconds after the last reply; when a queue or GPU slot then seems missing it asks "
        "once more, waiting four times as long, before saying so.",
    ),
    Setting(
        "EARMARK_STALL_MINUTES",
        "30",
        "The deadline mail calls a run stalled, and gives no ETA, when none of its tasks is "
        "running or nothing of the day has changed in the results DB for this long.",
    ),
    Setting(
        "EARMARK_ASR_MODEL_DIR",
        "/models/whisper-large-v3-turbo",
        "Local Whisper model directory (transformers format).",
    ),
    Setting("EARMARK_BASE_MODEL_DIR", "/models/gemma-2-9b", "Local Gemma-2 base model directory."),
    Setting("EARMARK_ADAPTER_DIR", "/models/cope-a-lora", "Local CoPE-A LoRA adapter (peft)."),
    Setting(
        "EARMARK_PREPARED_MODEL_DIR",
        "/models/prepared/cope-a-merged",
        "The classifier with its adapter merged, written by `earmark models prepare` on each "
        "GPU host; GPU tasks load only this.",
    ),
    Setting(
        "EARMARK_POLICIES_DIR",
        "include/policies",
        "Policy markdown files, every *.md screened (a relative path: from the project).",
    ),
    Setting("EARMARK_DEVICE", "auto", "Inference device: auto, cuda or cpu."),
    Setting("EARMARK_DTYPE", "auto", "Inference dtype: auto (bfloat16 on GPU, float32 on CPU)."),
    Setting("EARMARK_LANGUAGE", "en", "Whisper language."),
    Setting(
        "EARMARK_ASR_MAX_NEW_TOKENS",
        "224",
        "Whisper token limit per 30 s segment (Whisper's own is 224); loops are cut earlier.",
    ),
    Setting(
        "EARMARK_ASR_SEGMENTER",
        "vad",
        "How audio becomes Whisper's <= 30 s segments: vad (speech found by silero-vad; "
        "silence is never decoded) or windows (fixed 30 s windows).",
    ),
    Setting(
        "EARMARK_FLAG_THRESHOLD",
        "0.5",
        "A (file, policy) score at or above this goes to the RA review queue.",
    ),
    Setting(
        "EARMARK_REVIEW_QA_SHARE",
        "0.1",
        "Share (0-1) of decided flags that go to a second reviewer, blind to the first "
        "decision: the agreement figures come from these.",
    ),
    Setting(
        "EARMARK_REVIEW_SAMPLE_SHARE",
        "0",
        "Share (0-1) of the (file, policy) scores BELOW the threshold queued for review anyway, "
        "to estimate what the threshold misses. 0: none.",
    ),
    Setting(
        "EARMARK_REVIEW_CORRECT_MINUTES",
        "15",
        "How long after a decision its reviewer may still correct it (kept as a new event).",
    ),
    Setting(
        "EARMARK_GPU_SLOTS",
        "1",
        "GPUs serving the gpu queue in total (one worker per GPU); the gpu pool's size. "
        "A day is planned into at least this many work units.",
    ),
    Setting(
        "EARMARK_UNIT_TARGET_MINUTES",
        "20",
        "Expected GPU minutes per work unit (one mapped GPU task each): long enough that "
        "loading the models is a few percent of it, well inside the task token's life.",
    ),
    Setting(
        "EARMARK_ASSUMED_REALTIME_X",
        "100",
        "Audio seconds per GPU second assumed when planning before any unit has been "
        "measured (conservative); afterwards the recent units' measured rate is used.",
    ),
    Setting("EARMARK_BATCH_MAX_FILES", "2000", "Most files in one GPU work unit."),
    Setting(
        "EARMARK_UNPACK_TASKS_MAX",
        "256",
        "Most mapped unpack tasks in one run: above it archives are unpacked in even groups, "
        "one group per task (never more than Airflow's [core] max_map_length).",
    ),
    Setting(
        "EARMARK_ASR_BATCH_SIZE",
        "64",
        "Whisper segments per generate call (on GPU the memory budget may lower it).",
    ),
    Setting(
        "EARMARK_CLASSIFY_BATCH_SIZE",
        "64",
        "Most prompts per CoPE forward pass (on GPU the memory budget may lower it).",
    ),
    Setting(
        "EARMARK_GPU_MEMORY_GIB",
        "22",
        "GPU memory the GPU stage may use; batch sizes are derived from it.",
    ),
    Setting(
        "EARMARK_CLASSIFIER_ATTENTION",
        "eager",
        "Gemma-2 attention: eager, the only path shipped (sdpa drops Gemma-2's soft-capping; "
        "flex_attention and flash_attention_2 are not tested here).",
    ),
    Setting("EARMARK_MAX_AUDIO_SECONDS", "14400", "Longest accepted recording."),
    Setting(
        "EARMARK_MAX_COMPRESSION_RATIO",
        "100",
        "A .tar.gz whose members declare more than this many bytes per compressed byte is "
        "rejected (gzip bomb); speech gzips to about 1.1x.",
    ),
    Setting(
        "EARMARK_FREE_DISK_MARGIN_MB",
        "1024",
        "Free space an unpack leaves on the data volume beyond what the archive's members need "
        "(MiB); an archive that would eat into it waits for a rerun. Lower it on a small volume.",
    ),
    Setting(
        "EARMARK_FREE_DISK_MARGIN_SHARE",
        "0",
        "A further margin as a share of what the members need (0.1: 10 % more), for volumes "
        "that must also hold what the day's later archives unpack.",
    ),
    Setting(
        "EARMARK_REGISTER_TIMEOUT_MINUTES",
        "30",
        "Longest the register_archives task may run before Airflow stops and retries it.",
    ),
    Setting(
        "EARMARK_PROCESSED_RETENTION_DAYS",
        "30",
        "Archives in processed/ older than this are pruned.",
    ),
    Setting(
        "EARMARK_TRANSFER_SOURCE",
        "",
        "Where earmark_transfer fetches archives from: an ObjectStoragePath URL "
        "(`file:///srv/dropbox`, `sftp://conn_id@host/path`). Empty: the DAG does nothing.",
    ),
    Setting(
        "EARMARK_TRANSFER_SETTLE_SECONDS",
        "120",
        "A source archive without a companion NAME.sha256 is copied only once its size and "
        "mtime have not changed for this long.",
    ),
    Setting(
        "EARMARK_TRANSFER_KNOWN_HOSTS",
        "/etc/earmark/known_hosts",
        "OpenSSH known_hosts file the SFTP source's host key is checked against (required for "
        "sftp:// sources; `ssh-keyscan -p PORT HOST`, then compare the fingerprint).",
    ),
    Setting(
        "EARMARK_TRANSFER_DELETE_SOURCE",
        "false",
        "Delete a source archive (and its NAME.sha256) once copied, only when its companion "
        "digest matched the copied bytes. Off: sources are never deleted.",
    ),
)

_DEFAULTS = {s.env: s.default for s in SETTINGS}


def _get(name: str) -> str:
    return os.environ.get(name, _DEFAULTS[name])


def _hhmm(name: str) -> time:
    """The local time in variable ``name``; a clear error naming it when it is not HH:MM."""
    value = _get(name)
    try:
        hour, minute = value.split(":")
        return time(int(hour), int(minute))
    except ValueError:
        raise ValueError(f"{name} must be a local time HH:MM, got {value!r}") from None


def _share(name: str) -> float:
    """A share 0-1 in variable ``name``; a clear error naming it otherwise."""
    value = _get(name)
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{name} must be a share from 0 to 1, got {value!r}")
    return share


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment at one moment."""

    data_root: Path
    db_conn_id: str
    timezone: str
    start_time: time
    deadline_time: time
    intake_cutoff: time
    catchup_every_minutes: int
    deadline_alerts: bool
    retry_delay_seconds: float
    sensor_poke_seconds: int
    alert_email: str
    smtp_conn_id: str
    asr_model_dir: Path
    base_model_dir: Path
    adapter_dir: Path
    prepared_model_dir: Path
    policies_dir: Path
    device: str
    dtype: str
    language: str
    asr_max_new_tokens: int
    asr_segmenter: str
    flag_threshold: float
    review_qa_share: float
    review_sample_share: float
    review_correct_minutes: float
    gpu_slots: int
    unit_target_minutes: float
    assumed_realtime_x: float
    batch_max_files: int
    unpack_tasks_max: int
    asr_batch_size: int
    classify_batch_size: int
    gpu_memory_gib: float
    classifier_attention: str
    max_audio_seconds: float
    max_compression_ratio: float
    free_disk_margin_mb: float
    free_disk_margin_share: float
    register_timeout_minutes: float
    processed_retention_days: int
    transfer_source: str
    transfer_settle_seconds: int
    transfer_known_hosts: Path
    transfer_delete_source: bool
    metrics_bind: str
    metrics_port: int
    health_disk_warn_gib: float
    health_disk_critical_gib: float
    health_queue_warn: int
    health_review_warn_items: int
    health_review_warn_hours: float
    health_task_warn_minutes: float
    health_worker_wait_seconds: float
    stall_minutes: float

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            data_root=Path(_get("EARMARK_DATA_ROOT")),
            db_conn_id=_get("EARMARK_DB_CONN_ID"),
            timezone=_get("EARMARK_TIMEZONE"),
            start_time=_hhmm("EARMARK_START_TIME"),
            deadline_time=_hhmm("EARMARK_DEADLINE_TIME"),
            intake_cutoff=_hhmm("EARMARK_INTAKE_CUTOFF"),
            catchup_every_minutes=int(_get("EARMARK_CATCHUP_EVERY_MINUTES")),
            deadline_alerts=_bool(_get("EARMARK_DEADLINE_ALERTS")),
            retry_delay_seconds=float(_get("EARMARK_RETRY_DELAY_SECONDS")),
            sensor_poke_seconds=int(_get("EARMARK_SENSOR_POKE_SECONDS")),
            alert_email=_get("EARMARK_ALERT_EMAIL"),
            smtp_conn_id=_get("EARMARK_SMTP_CONN_ID"),
            asr_model_dir=Path(_get("EARMARK_ASR_MODEL_DIR")),
            base_model_dir=Path(_get("EARMARK_BASE_MODEL_DIR")),
            adapter_dir=Path(_get("EARMARK_ADAPTER_DIR")),
            prepared_model_dir=Path(_get("EARMARK_PREPARED_MODEL_DIR")),
            policies_dir=PROJECT_ROOT / _get("EARMARK_POLICIES_DIR"),
            device=_get("EARMARK_DEVICE"),
            dtype=_get("EARMARK_DTYPE"),
            language=_get("EARMARK_LANGUAGE"),
            asr_max_new_tokens=int(_get("EARMARK_ASR_MAX_NEW_TOKENS")),
            asr_segmenter=_get("EARMARK_ASR_SEGMENTER"),
            flag_threshold=float(_get("EARMARK_FLAG_THRESHOLD")),
            review_qa_share=_share("EARMARK_REVIEW_QA_SHARE"),
            review_sample_share=_share("EARMARK_REVIEW_SAMPLE_SHARE"),
            review_correct_minutes=float(_get("EARMARK_REVIEW_CORRECT_MINUTES")),
            gpu_slots=int(_get("EARMARK_GPU_SLOTS")),
            unit_target_minutes=float(_get("EARMARK_UNIT_TARGET_MINUTES")),
            assumed_realtime_x=float(_get("EARMARK_ASSUMED_REALTIME_X")),
            batch_max_files=int(_get("EARMARK_BATCH_MAX_FILES")),
            unpack_tasks_max=int(_get("EARMARK_UNPACK_TASKS_MAX")),
            asr_batch_size=int(_get("EARMARK_ASR_BATCH_SIZE")),
            classify_batch_size=int(_get("EARMARK_CLASSIFY_BATCH_SIZE")),
            gpu_memory_gib=float(_get("EARMARK_GPU_MEMORY_GIB")),
            classifier_attention=_get("EARMARK_CLASSIFIER_ATTENTION"),
            max_audio_seconds=float(_get("EARMARK_MAX_AUDIO_SECONDS")),
            max_compression_ratio=float(_get("EARMARK_MAX_COMPRESSION_RATIO")),
            free_disk_margin_mb=float(_get("EARMARK_FREE_DISK_MARGIN_MB")),
            free_disk_margin_share=float(_get("EARMARK_FREE_DISK_MARGIN_SHARE")),
            register_timeout_minutes=float(_get("EARMARK_REGISTER_TIMEOUT_MINUTES")),
            processed_retention_days=int(_get("EARMARK_PROCESSED_RETENTION_DAYS")),
            transfer_source=_get("EARMARK_TRANSFER_SOURCE"),
            transfer_settle_seconds=int(_get("EARMARK_TRANSFER_SETTLE_SECONDS")),
            transfer_known_hosts=Path(_get("EARMARK_TRANSFER_KNOWN_HOSTS")),
            transfer_delete_source=_bool(_get("EARMARK_TRANSFER_DELETE_SOURCE")),
            metrics_bind=_get("EARMARK_METRICS_BIND"),
            metrics_port=int(_get("EARMARK_METRICS_PORT")),
            health_disk_warn_gib=float(_get("EARMARK_HEALTH_DISK_WARN_GIB")),
            health_disk_critical_gib=float(_get("EARMARK_HEALTH_DISK_CRITICAL_GIB")),
            health_queue_warn=int(_get("EARMARK_HEALTH_QUEUE_WARN")),
            health_review_warn_items=int(_get("EARMARK_HEALTH_REVIEW_WARN_ITEMS")),
            health_review_warn_hours=float(_get("EARMARK_HEALTH_REVIEW_WARN_HOURS")),
            health_task_warn_minutes=float(_get("EARMARK_HEALTH_TASK_WARN_MINUTES")),
            health_worker_wait_seconds=float(_get("EARMARK_HEALTH_WORKER_WAIT_SECONDS")),
            stall_minutes=float(_get("EARMARK_STALL_MINUTES")),
        )

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


def settings_table_markdown() -> str:
    """The configuration table for the README, from ``SETTINGS``."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [
        f"| `{s.env}` | {f'`{s.default}`' if s.default else '(empty)'} | {s.help} |"
        for s in SETTINGS
    ]
    return "\n".join(rows)


assert {f.name for f in fields(Settings)} == {
    s.env.removeprefix("EARMARK_").lower() for s in SETTINGS
}, "Settings and SETTINGS must list the same variables"
