"""``earmark-gpu-worker``: ``airflow celery worker`` with the GPU stage's libraries loaded once.

Every GPU task runs in a process forked from the worker (Celery's pool, then Airflow's task
supervisor). Importing torch, transformers, peft and silero-vad costs seconds per task when
each task does it; imported here, before Celery forks its pool, every task inherits them and
starts with only its model to load. Nothing touches a GPU before the fork (importing torch
does not initialise CUDA), so each task still opens its own device.

    earmark-gpu-worker --queues gpu --concurrency 1 --celery-hostname gpu0@%H

takes exactly ``airflow celery worker``'s arguments.
"""

from __future__ import annotations

import importlib
import sys
import time

PRELOADED = (
    "earmark.inference.transcriber",
    "earmark.inference.segments",
    "earmark.inference.classifier",
    "earmark.gpu.transcribe",
    "earmark.gpu.classify",
)


def preload() -> float:
    """Import the GPU stage's modules; return the seconds it took."""
    started = time.perf_counter()
    for name in PRELOADED:
        importlib.import_module(name)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """Preload, then hand the command line to ``airflow celery worker`` in this process."""
    seconds = preload()
    print(f"earmark-gpu-worker: GPU stage libraries loaded in {seconds:.1f}s", flush=True)
    from airflow.__main__ import main as airflow_main

    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["airflow", "celery", "worker", *args]
    airflow_main()


if __name__ == "__main__":
    main()
