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


def test_render_config_writes_the_hosts_environment_file(tmp_path, capsys):
    from earmark.config import PROJECT_ROOT
    from earmark.ops.deploy_config import parse_env

    out = tmp_path / "airflow.env"
    assert (
        main(
            [
                "render-config",
                "--values",
                str(PROJECT_ROOT / "deploy" / "values.env"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    rendered = parse_env(out.read_text())
    assert rendered["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert rendered["EARMARK_RETRY_DELAY_SECONDS"] == "60"
    assert "${" not in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o640


def test_render_config_reads_a_setting_under_its_former_name(tmp_path, caplog):
    from earmark.config import PROJECT_ROOT
    from earmark.ops.deploy_config import parse_env

    values = (PROJECT_ROOT / "deploy" / "values.env").read_text()
    assert "EARMARK_UNIT_MAX_FILES=" in values
    old = tmp_path / "values.env"
    old.write_text(values.replace("EARMARK_UNIT_MAX_FILES=", "EARMARK_BATCH_MAX_FILES="))
    out = tmp_path / "airflow.env"
    with caplog.at_level("WARNING"):
        assert main(["render-config", "--values", str(old), "--out", str(out)]) == 0
    expected = parse_env(values)["EARMARK_UNIT_MAX_FILES"]
    assert parse_env(out.read_text())["EARMARK_UNIT_MAX_FILES"] == expected
    assert "EARMARK_BATCH_MAX_FILES is deprecated: rename it EARMARK_UNIT_MAX_FILES" in caplog.text


def test_report_stores_the_day_s_page_and_a_bad_date_is_a_usage_error(tmp_path, capsys):
    import pytest
    from earmark.day.report import stored_report
    from earmark.store.db import Store

    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["--db-url", url, "migrate"]) == 0
    out = tmp_path / "day.html"
    assert main(["--db-url", url, "report", "--date", "2026-11-29", "--out", str(out)]) == 0
    assert "report for 2026-11-29 stored" in capsys.readouterr().out
    store = Store.from_url(url)
    assert (
        stored_report(store, "2026-11-29") == out.read_text() and out.read_text().count("<svg") == 5
    )
    store.dispose()
    with pytest.raises(SystemExit) as refused:
        main(["--db-url", url, "report", "--date", "2026-13-01"])
    assert refused.value.code == 2
    assert "'2026-13-01' is not a day as YYYY-MM-DD" in capsys.readouterr().err
