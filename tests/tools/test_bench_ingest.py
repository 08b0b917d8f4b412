"""The ingest benchmark runs the production intake end to end (small, so it stays quick)."""

from __future__ import annotations

import pytest
from earmark_dev.bench import ingest
from earmark_dev.postgres import admin_url

pytestmark = pytest.mark.bench


def test_small_run_prints_its_figures(tmp_path, capsys):
    assert (
        ingest.main(
            [
                "--gb",
                "0.003",
                "--files",
                "4",
                "--repeat",
                "1",
                "--pg-url",
                admin_url(),
                "--workdir",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "tar -xf" in out and "files/s" in out, out
