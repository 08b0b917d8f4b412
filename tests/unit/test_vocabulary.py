"""The named vocabularies hold: every reason code the runtime package records is registered, the
README's table is generated from the registry, and every status the schema allows or the SQL
names is one of ``earmark.statuses``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from earmark.config import PROJECT_ROOT
from earmark.ingest.extract import FILTER_CODES
from earmark.reasons import BY_CODE, reasons_table_markdown
from earmark.statuses import BY_TABLE

RUNTIME = PROJECT_ROOT / "include" / "earmark"
_RECORDED = re.compile(r"^([a-z][a-z_]*): ")  # "code: detail", as stored


TOOLING = ("harness.py", "localenv.py", "demo.py", "sampledata.py", "tiny_models.py", "bench")


def _runtime_sources() -> list[Path]:
    return sorted(
        p
        for p in RUNTIME.rglob("*.py")
        if not any(part in TOOLING for part in p.relative_to(RUNTIME).parts)
    )


def _strings(node: ast.AST) -> list[str]:
    """String constants a code may come from: a literal, either branch of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    return []


def _raised_codes(tree: ast.AST) -> set[str]:
    codes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name.endswith("Rejected"):
                codes.update(_strings(node.args[0]))
        # Recorded directly as "code: detail" (f-strings start with their literal part).
        text = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else node
        if isinstance(text, ast.Constant) and isinstance(text.value, str):
            match = _RECORDED.match(text.value)
            if match:
                codes.add(match.group(1))
    return codes


def test_every_recorded_reason_code_is_registered():
    found: dict[str, str] = {}
    for path in _runtime_sources():
        for code in _raised_codes(ast.parse(path.read_text(encoding="utf-8"))):
            found.setdefault(code, str(path.relative_to(PROJECT_ROOT)))
    found.update(dict.fromkeys(FILTER_CODES.values(), "ingest/extract.py FILTER_CODES"))
    found["unsafe_member_type"] = "ingest/extract.py"
    unregistered = {code: where for code, where in found.items() if code not in BY_CODE}
    assert unregistered == {}, "add these to earmark.reasons.REASONS"
    # The scan sees the codes it must: a registry entry nobody records is dead weight.
    assert set(BY_CODE) - set(found) == set()


def test_scan_finds_a_new_unregistered_code():
    tree = ast.parse('raise AudioRejected("made_up_code", "x")\nerror = f"other_code: {x}"')
    assert _raised_codes(tree) == {"made_up_code", "other_code"}


def test_readme_reason_table_is_generated_from_the_registry():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert reasons_table_markdown() in readme


_CHECK = re.compile(r"CREATE TABLE (\w+) \((.*?)\n\);", re.S)
_STATUS_CHECK = re.compile(r"status\s+TEXT.*?CHECK \(status IN \(([^)]*)\)\)", re.S)
_STATUS_LITERAL = re.compile(
    r"\bstatus\s*(?:=|<>|!=)\s*'(\w+)'|\bstatus\s+(?:NOT\s+)?IN\s*\(([^)]*)\)", re.I
)


def _quoted(text: str) -> set[str]:
    return set(re.findall(r"'(\w+)'", text))


def test_schema_status_checks_equal_the_enums():
    checks: dict[str, set[str]] = {}
    for path in sorted((RUNTIME / "store" / "migrations").glob("*.sql")):
        for table, body in _CHECK.findall(path.read_text(encoding="utf-8")):
            match = _STATUS_CHECK.search(body)
            if match:  # a SQLite rebuild creates `<table>_rebuilt`, renamed to the table
                checks[table.removesuffix("_rebuilt")] = _quoted(match.group(1))
    assert checks == {table: {s.value for s in enum} for table, enum in BY_TABLE.items()}


def test_every_status_literal_in_the_sql_is_a_known_status():
    known = {s.value for enum in BY_TABLE.values() for s in enum}
    sources = [
        *sorted((PROJECT_ROOT / "include" / "earmark" / "store" / "queries").glob("*.sql")),
        *_runtime_sources(),
        *sorted((PROJECT_ROOT / "dags").glob("*.py")),
    ]
    seen: set[str] = set()
    for path in sources:
        for single, many in _STATUS_LITERAL.findall(path.read_text(encoding="utf-8")):
            seen |= {single} if single else _quoted(many)
    assert seen - known == set()
    assert {"ready", "classified", "quarantined", "registered", "pending"} <= seen  # it scans
