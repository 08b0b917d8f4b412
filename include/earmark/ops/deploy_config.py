"""The one configuration file every host runs with, rendered from ``deploy/airflow.env.template``.

Production renders it with ``earmark render-config --values values.env --out airflow.env`` (the
setup scripts do); the test harness renders the very same template with its own values, so what
the tests run is what production runs.
"""

from __future__ import annotations

import logging
import shlex
import string
from dataclasses import fields
from pathlib import Path

from earmark.config import PROJECT_ROOT, Settings, declared

log = logging.getLogger(__name__)

TEMPLATE = PROJECT_ROOT / "deploy" / "airflow.env.template"


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines (comments, blanks skipped; one pair of surrounding quotes stripped)."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def render_template(text: str, values: dict[str, str]) -> dict[str, str]:
    """``${NAME}`` substitution (every name must have a value), then KEY=VALUE lines."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return parse_env(string.Template(body).substitute(values))


def with_current_names(values: dict[str, str]) -> dict[str, str]:
    """``values`` where a setting written under its former name (an older ``values.env``) also
    counts for its current name, with a line saying to rename it; the current name wins."""
    renamed = dict(values)
    for settings_field in fields(Settings):
        declaration = declared(settings_field)
        if declaration.old and declaration.old in values and declaration.env not in values:
            log.warning("%s is deprecated: rename it %s", declaration.old, declaration.env)
            renamed[declaration.env] = values[declaration.old]
    return renamed


def env_file_text(settings: dict[str, str]) -> str:
    """Settings as a systemd EnvironmentFile that a shell can source too."""
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in settings.items())


def render_config(values: Path, out: Path, template: Path = TEMPLATE) -> dict[str, str]:
    """Render ``template`` with the KEY=VALUE ``values`` file into ``out`` (mode 0640)."""
    rendered = render_template(
        template.read_text(encoding="utf-8"),
        with_current_names(parse_env(values.read_text(encoding="utf-8"))),
    )
    out.write_text(env_file_text(rendered), encoding="utf-8")
    out.chmod(0o640)
    return rendered
