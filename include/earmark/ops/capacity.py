"""How many GPUs a day needs: hours of audio per day, screened between the start time and the
deadline, at the throughput the GPU work units measured (``work_units``, the last two weeks,
as the planner uses it), with headroom for a retry and late archives.

    GPU seconds = audio seconds / realtime factor + units x model-load seconds
    GPUs        = ceil(GPU seconds / (window seconds x headroom))

The realtime factor is audio seconds per GPU second, loading excluded, over the finished units;
with none measured, ``EARMARK_ASSUMED_REALTIME_X`` (and the answer says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

from earmark.config import Settings
from earmark.gpu.work_units import RATE_WINDOW_DAYS, measured_rate
from earmark.store.db import Store

HEADROOM = 0.7  # plan to be busy 70 % of the window: a retried unit, a late archive


@dataclass(frozen=True)
class Capacity:
    """The sizing for ``audio_hours`` a day, and the figures behind it."""

    audio_hours: float
    window_hours: float
    realtime_x: float
    load_s: float
    measured_units: int
    units: int
    gpu_hours: float
    gpus: int

    def describe(self) -> str:
        source = (
            f"measured over {self.measured_units} GPU work"
            f" unit{'s' if self.measured_units != 1 else ''} of the last {RATE_WINDOW_DAYS} days"
            if self.measured_units
            else "ASSUMED (no finished GPU work unit yet: EARMARK_ASSUMED_REALTIME_X)"
        )
        return "\n".join(
            [
                f"{self.audio_hours:g} h of audio a day, screened in {self.window_hours:g} h"
                f" (start to deadline), at most {HEADROOM:.0%} busy:",
                f"  throughput  {self.realtime_x:.1f}x real time per GPU, {self.load_s:.1f} s"
                f" to load the models per unit ({source})",
                f"  GPU time    {self.gpu_hours:.2f} h in {self.units} work units",
                f"  GPUs        {self.gpus}"
                f"  (= ceil({self.gpu_hours:.2f} / ({self.window_hours:g} x {HEADROOM:g})));"
                " EARMARK_GPU_SLOTS and the gpu pool are set to the GPUs of all GPU hosts",
            ]
        )


def capacity(
    settings: Settings, store: Store, audio_hours: float, run_date: str | None = None
) -> Capacity:
    """GPUs needed for ``audio_hours`` of audio a day (measured up to ``run_date``, default
    today)."""
    if audio_hours <= 0:
        raise ValueError("the hours of audio a day must be more than 0")
    day = run_date or date.today().isoformat()
    rate = measured_rate(store, day, settings.assumed_realtime_x)
    start = datetime.combine(date.min, settings.start_time)
    deadline = datetime.combine(date.min, settings.deadline_time)
    window_s = (deadline - start).total_seconds()
    if window_s <= 0:
        raise ValueError("EARMARK_DEADLINE_TIME must be after EARMARK_START_TIME")
    busy_s = audio_hours * 3600 / rate.realtime_x
    target_s = settings.unit_target_minutes * 60
    units = max(1, math.ceil(busy_s / target_s)) if target_s > 0 else 1
    gpu_s = busy_s + units * rate.load_s
    return Capacity(
        audio_hours=audio_hours,
        window_hours=window_s / 3600,
        realtime_x=rate.realtime_x,
        load_s=rate.load_s,
        measured_units=rate.measured_units,
        units=units,
        gpu_hours=gpu_s / 3600,
        gpus=max(1, math.ceil(gpu_s / (window_s * HEADROOM))),
    )
