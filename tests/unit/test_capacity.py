"""GPU sizing from the measured throughput of the GPU work units (``earmark capacity``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import time

import pytest
import sqlalchemy as sa
from earmark.cli import main as cli_main
from earmark.config import Settings
from earmark.ops.capacity import HEADROOM, capacity

DAY = "2026-11-29"


@pytest.fixture
def settings():
    return replace(
        Settings.from_env(),
        start_time=time(6, 0),
        deadline_time=time(12, 0),
        unit_target_minutes=20,
        assumed_realtime_x=100,
    )


def _unit(store, seq: int, audio_s: float, wall_s: float, load_s: float) -> None:
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO work_units (run_id, run_date, seq, n_files, audio_s,"
                " transcribe_wall_s, classify_wall_s, transcribe_load_s, classify_load_s)"
                " VALUES ('r', :d, :s, 3, :a, :w, :w, :l, :l)"
            ),
            {"d": DAY, "s": seq, "a": audio_s, "w": wall_s / 2, "l": load_s / 2},
        )


def test_sized_from_the_measured_units(store, settings):
    # 2 units: 36,000 s of audio in 2 x (630 s of wall, 30 s of it loading): 30x real time
    _unit(store, 1, 18_000, 630, 30)
    _unit(store, 2, 18_000, 630, 30)
    _unit(store, 3, 9_000, 300, 0)  # a unit still running: classify not done
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE work_units SET classify_wall_s = NULL WHERE seq = 3"))
    sized = capacity(settings, store, 40, DAY)
    assert sized.measured_units == 2
    assert sized.realtime_x == pytest.approx(30.0) and sized.load_s == pytest.approx(30.0)
    busy = 40 * 3600 / 30  # 4,800 s of GPU time: 4 units of at most 20 min
    assert sized.units == 4
    assert sized.gpu_hours == pytest.approx((busy + 4 * 30) / 3600)
    assert sized.gpus == 1  # 1.37 h in a 6 h window at 70 %
    big = capacity(settings, store, 1000, DAY)
    assert big.gpus == -(-(1000 * 3600 / 30 + big.units * 30) // (6 * 3600 * HEADROOM))
    assert big.gpus == 9  # 34.2 h of GPU time in 6 h windows at 70 %
    assert "measured over 2 GPU work units" in big.describe()


def test_assumed_rate_before_any_unit_and_bad_input(store, settings, capsys):
    sized = capacity(settings, store, 40, DAY)
    assert sized.measured_units == 0 and sized.realtime_x == 100
    assert "ASSUMED" in sized.describe()
    with pytest.raises(ValueError, match="more than 0"):
        capacity(settings, store, 0, DAY)
    url = store.engine.url.render_as_string(hide_password=False)
    assert cli_main(["--db-url", url, "capacity", "--hours", "40", "--date", DAY]) == 0
    assert "GPUs        1" in capsys.readouterr().out
    assert cli_main(["--db-url", url, "capacity", "--hours", "-1"]) == 2
