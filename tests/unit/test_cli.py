from __future__ import annotations

import json

from earmark.cli import main


def test_migrate_then_status_on_an_empty_day(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["--db-url", url, "migrate"]) == 0
    assert "applied 0001" in capsys.readouterr().out
    assert main(["--db-url", url, "migrate"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["--db-url", url, "status", "--date", "2026-11-29", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["run_date"] == "2026-11-29" and status["files"] == {}
    assert main(["--db-url", url, "quarantine", "--date", "2026-11-29"]) == 0
    assert "nothing quarantined" in capsys.readouterr().out
