"""``earmark evaluate`` on both backends: a constructed set of decided items scored by a
deterministic classifier, so each side's figures and the missed list are known exactly
(unclear, undecided, second-review and out-of-range items left out; items without a transcript
skipped with their reason); then the real path through the CLI with the tiny models, which
writes nothing and prints no transcript text."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from earmark.cli import main
from earmark.config import Settings
from earmark.review.stats import wilson
from earmark.store.db import Store
from earmark.versions.evaluate import (
    CAVEAT,
    Candidate,
    EvaluationError,
    as_json,
    evaluate,
    format_evaluation,
)

DAY = "2026-11-29"
ASR = "asr-now"
THRESHOLD = 0.5
HARASSMENT_V1 = "# Harassment\n\nThreats and degrading insults aimed at a person.\n"
HARASSMENT_V2 = HARASSMENT_V1 + "\nA raised voice alone is not harassment.\n"
SELF_HARM = "# Self-harm\n\nIntent or plans to hurt oneself.\n"

# name: (policy, kind, decision or None (pending), transcript by ASR ('' = no speech; None =
# none by ASR), day). Each transcript is a made-up sentence a leak would show. v1 was decided
# once before, under an earlier version (that decision is superseded: decided_later).
ITEMS = {
    "v1": ("harassment", "flag", "violation", "secret words of v1", DAY),
    "v2": ("harassment", "flag", "violation", "secret words of v2", DAY),
    "v3": ("harassment", "sample", "violation", "secret words of v3", DAY),
    "v4": ("harassment", "sample", "violation", "secret words of v4", DAY),
    "e1": ("harassment", "flag", "violation", "", DAY),
    "n1": ("harassment", "flag", "no_violation", "secret words of n1", DAY),
    "n2": ("harassment", "sample", "no_violation", "secret words of n2", DAY),
    "n3": ("harassment", "flag", "no_violation", "secret words of n3", DAY),
    "u1": ("harassment", "flag", "unclear", None, DAY),  # unclear whatever else
    "p1": ("harassment", "flag", None, "secret words of p1", DAY),
    "s1": ("harassment", "flag", "violation", None, DAY),  # retention removed the transcript
    "s2": ("harassment", "flag", "no_violation", None, DAY),  # an older ASR model's only
    "s3": ("harassment", "sample", "no_violation", None, DAY),  # no transcript, no reason known
    "x1": ("harassment", "flag", "violation", "secret words of x1", DAY),  # erasure under way
    "o1": ("harassment", "flag", "violation", "secret words of o1", "2026-11-20"),  # out of range
    "h1": ("self_harm", "flag", "violation", "secret words of h1", DAY),
    "r1": ("retired", "flag", "violation", "secret words of r1", DAY),
}
SKIPPED = {
    "being_erased": 1,
    "decided_later": 1,
    "no_transcript": 1,
    "other_asr_model": 1,
    "transcript_retention": 1,
}
# Scores per side, by item; the current catches v1 v2 (and n1 n3 wrongly), the candidate v1 v3
# (and n2 wrongly).
CURRENT = {"v1": 0.9, "v2": 0.7, "v3": 0.2, "v4": 0.3, "n1": 0.8, "n2": 0.1, "n3": 0.6, "h1": 0.9}
NEW = {"v1": 0.8, "v2": 0.3, "v3": 0.6, "v4": 0.1, "n1": 0.2, "n2": 0.55, "n3": 0.4, "h1": 0.4}


class TableClassifier:
    """A ClassifierLike whose score for a transcript is looked up (by policy version, or by
    policy name for a model): an item that should not be scored raises KeyError."""

    def __init__(self, table: dict[tuple[str, str], float], by: str = "sha") -> None:
        self.table, self.by, self.calls = table, by, []

    def score(self, policy, contents):
        self.calls.append((policy.name, list(contents)))
        key = policy.sha256 if self.by == "sha" else policy.name
        return [self.table[(key, text)] for text in contents]


def _text(name: str) -> str:
    return ITEMS[name][3]


def _build(store: Store) -> dict[str, int]:
    """The items of ITEMS, decided as given, and a blind second review of v1: item ids."""
    ids: dict[str, int] = {}
    with store.begin() as conn:

        def insert(sql: str, **params: object) -> int:
            return conn.execute(sa.text(sql + " RETURNING id"), params).scalar_one()

        def item(file_id: int, policy: str, kind: str, decision: str | None, sha: str) -> int:
            return insert(
                "INSERT INTO review_queue (file_id, policy, policy_sha, model, score, kind,"
                " status, decision, claimed_by, resolved_at)"
                " VALUES (:f, :p, :sha, 'model-then', 0.5, :k, :st, :d, :by, :at)",
                f=file_id,
                p=policy,
                sha=sha,
                k=kind,
                st="pending" if decision is None else "resolved",
                d=decision,
                by=None if decision is None else "ana",
                at=None if decision is None else "2026-11-30 09:00:00",
            )

        def erasure(file_id: int, archive_id: int, scope: str, target: str, status: str) -> None:
            insert(
                "INSERT INTO erasures (actor, reason, scope, target, file_id, archive_id, status)"
                " VALUES ('dpo', 'asked', :scope, :target, :f, :a, :st)",
                scope=scope,
                target=target,
                f=file_id,
                a=archive_id,
                st=status,
            )

        archives = {
            day: insert(
                "INSERT INTO archives (name, sha256, run_date, path, status)"
                " VALUES (:n, :s, :d, '/p', 'unpacked')",
                n=f"{day}.tar",
                s=day,
                d=day,
            )
            for day in sorted({row[4] for row in ITEMS.values()})
        }
        for name, (policy, kind, decision, text, day) in ITEMS.items():
            file_id = insert(
                "INSERT INTO audio_files (archive_id, member_path, path, status)"
                " VALUES (:a, :m, :p, 'classified')",
                a=archives[day],
                m=f"{name}.wav",
                p=f"/audio/{name}.wav",
            )
            if text is not None or name == "s2":
                insert(
                    "INSERT INTO transcripts (file_id, model, text, n_chars)"
                    " VALUES (:f, :m, :t, 1)",
                    f=file_id,
                    m="asr-old" if name == "s2" else ASR,
                    t="an older transcript" if text is None else text,
                )
            if name == "v1":
                item(file_id, policy, kind, "no_violation", "sha-before")
            if name == "s1":
                erasure(file_id, archives[day], "retention", "transcripts", "done")
            if name == "x1":
                erasure(file_id, archives[day], "file", str(file_id), "intended")
            ids[name] = item(file_id, policy, kind, decision, "sha-then")
        insert(
            "INSERT INTO review_queue (file_id, policy, policy_sha, model, score, kind, status,"
            " decision, claimed_by, first_item_id) SELECT file_id, policy, policy_sha, model,"
            " score, 'qa', 'resolved', 'no_violation', 'ben', id FROM review_queue WHERE id = :i",
            i=ids["v1"],
        )
    return ids


def _untouched(store: Store) -> dict[str, list[tuple]]:
    return {
        table: [tuple(r) for r in store.rows(f"SELECT * FROM {table} ORDER BY id")]
        for table in ("labels", "review_queue", "review_events", "transcripts")
    }


@pytest.fixture
def policies(tmp_path) -> dict[str, Path]:
    """The current policies folder and a candidate version of harassment beside it."""
    current = tmp_path / "policies"
    current.mkdir()
    (current / "harassment.md").write_text(HARASSMENT_V1)
    (current / "self_harm.md").write_text(SELF_HARM)
    (tmp_path / "candidate").mkdir()
    candidate = tmp_path / "candidate" / "harassment.md"
    candidate.write_text(HARASSMENT_V2)
    return {"current": current, "candidate": candidate}


@pytest.fixture
def settings(policies) -> Settings:
    return replace(
        Settings.from_env(),
        policies_dir=policies["current"],
        asr_model_dir=Path("/models") / ASR,
        flag_threshold=THRESHOLD,
    )


def _names(ids: dict[str, int], listed) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[i.item_id] for i in listed]


def _counts(side) -> tuple[int, ...]:
    """decided, violations, TP, FP, FN"""
    fields = ("decided", "violations", "true_positives", "false_positives", "false_negatives")
    return tuple(getattr(side, name) for name in fields)


def test_a_candidate_policy_against_the_decisions(store, settings, policies):
    from earmark.inference.policies import load_policies

    ids = _build(store)
    before = _untouched(store)
    now = next(p for p in load_policies(policies["current"]) if p.name == "harassment")
    new_sha = load_policies(policies["candidate"].parent)[0].sha256
    table = {(now.sha256, _text(k)): v for k, v in CURRENT.items() if k != "h1"}
    table |= {(new_sha, _text(k)): v for k, v in NEW.items() if k != "h1"}
    classifier = TableClassifier(table)

    result = evaluate(
        settings,
        store,
        Candidate(policy_file=policies["candidate"]),
        "2026-11-28",
        DAY,
        current=classifier,
        batch_items=2,
    )

    [harassment] = result.policies  # only the candidate's policy
    assert harassment.policy == "harassment"
    assert (harassment.unclear, harassment.skipped) == (1, SKIPPED)
    now_side, new_side = harassment.current, harassment.candidate
    assert (now_side.policy_sha, new_side.policy_sha) == (now.sha256, new_sha)
    assert now_side.model == new_side.model  # a policy candidate runs on the current model
    assert _counts(now_side) == (8, 5, 2, 2, 3)
    assert _counts(new_side) == (8, 5, 2, 1, 3)
    assert (now_side.precision, now_side.precision_ci) == (0.5, wilson(2, 4))
    assert (new_side.precision, new_side.precision_ci) == (2 / 3, wilson(2, 3))
    assert (now_side.recall, now_side.recall_ci) == (0.4, wilson(2, 5))
    assert (new_side.recall, new_side.recall_ci) == (0.4, wilson(2, 5))
    assert _names(ids, harassment.missed) == ["v2", "v4", "e1"]
    assert [(i.current, i.candidate, i.current_flagged) for i in harassment.missed] == [
        (0.7, 0.3, True),
        (0.3, 0.1, False),
        (0.0, 0.0, False),  # no speech: 0 without the model
    ]
    assert _names(ids, harassment.new_false_flags) == ["n2"]
    assert {i.day for i in harassment.items} == {DAY}

    scored = [text for _, texts in classifier.calls for text in texts]
    assert all(len(texts) <= 2 for _, texts in classifier.calls)  # batched
    assert sorted(scored) == sorted(2 * [_text(k) for k in CURRENT if k != "h1"])
    assert result.scored == len(scored) == 14
    assert _untouched(store) == before  # shadow: nothing written

    data = json.loads(json.dumps(as_json(result)))
    assert data["caveat"] == CAVEAT
    [entry] = data["policies"]
    assert entry["current"]["precision_ci"] == list(wilson(2, 4))
    assert [i["item_id"] for i in entry["missed"]] == [ids["v2"], ids["v4"], ids["e1"]]
    text = format_evaluation(result)
    assert "not on all recordings" in text and "nothing written" in text
    assert f"item {ids['n2']}  file " in text
    for dumped in (text, json.dumps(data)):
        assert "secret" not in dumped and "Harassment" not in dumped


def test_a_candidate_model_on_every_policy(store, settings, policies):
    ids = _build(store)
    now = TableClassifier({(ITEMS[k][0], _text(k)): v for k, v in CURRENT.items()}, by="name")
    new = TableClassifier({(ITEMS[k][0], _text(k)): v for k, v in NEW.items()}, by="name")
    adapter = policies["current"].parent / "cope-a-v2"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")

    result = evaluate(
        settings,
        store,
        Candidate(adapter_dir=adapter),
        "2026-11-28",
        DAY,
        current=now,
        candidate_model=new,
    )

    assert [p.policy for p in result.policies] == ["harassment", "self_harm"]
    harassment, self_harm = result.policies
    assert harassment.candidate.model.endswith("+cope-a-v2")
    assert harassment.current.model != harassment.candidate.model
    assert harassment.current.policy_sha == harassment.candidate.policy_sha
    assert (harassment.candidate.true_positives, harassment.candidate.false_positives) == (2, 1)
    assert _names(ids, self_harm.missed) == ["h1"]
    assert (self_harm.current.recall, self_harm.candidate.recall) == (1.0, 0.0)
    assert {name for name, _ in now.calls} == {name for name, _ in new.calls}
    assert result.notes == [
        "1 decided item(s) of policies no longer current (retired) not evaluated"
    ]


def test_what_is_refused(store, settings, policies, tmp_path):
    def refused(candidate, first="2026-11-28", last=DAY):
        with pytest.raises(EvaluationError) as caught:
            evaluate(settings, store, candidate, first, last, current=TableClassifier({}))
        return caught.value.exit_code, str(caught.value)

    same = tmp_path / "same" / "harassment.md"
    same.parent.mkdir()
    shutil.copy(policies["current"] / "harassment.md", same)
    assert refused(Candidate(policy_file=same))[1].endswith("(same sha256): nothing to compare")
    unknown = tmp_path / "candidate" / "hate.md"
    unknown.write_text("# Hate\n")
    assert "no current policy named 'hate'" in refused(Candidate(policy_file=unknown))[1]
    assert "not a peft adapter dir" in refused(Candidate(adapter_dir=tmp_path))[1]
    assert "is after the last" in refused(Candidate(adapter_dir=tmp_path), DAY, "2026-11-01")[1]
    with pytest.raises(EvaluationError):
        Candidate()


def test_a_nan_score_is_refused_naming_the_item(store, settings, policies):
    ids = _build(store)
    now = TableClassifier({(ITEMS[k][0], _text(k)): v for k, v in CURRENT.items()}, by="name")
    now.table[("harassment", _text("v3"))] = float("nan")
    with pytest.raises(EvaluationError) as caught:
        evaluate(
            settings,
            store,
            Candidate(policy_file=policies["candidate"]),
            DAY,
            DAY,
            current=now,
        )
    assert caught.value.exit_code == 1
    assert f"item(s) {ids['v3']} " in str(caught.value) and "secret" not in str(caught.value)


# The real path: `earmark evaluate` with the tiny random-weight models on the CPU.

REAL = {  # file: (policy, kind, decision, transcript)
    "a": ("harassment", "flag", "violation", "zanzibar quokka one"),
    "b": ("harassment", "flag", "no_violation", "zanzibar quokka two, longer this time"),
    "c": ("harassment", "sample", "violation", "zanzibar quokka three"),
    "d": ("self_harm", "flag", "violation", "zanzibar quokka four"),
    "e": ("self_harm", "sample", "no_violation", "zanzibar quokka five and more"),
    "f": ("self_harm", "flag", "unclear", "zanzibar quokka six"),
}


@pytest.fixture
def real(tmp_path, tiny_models, tiny_settings, monkeypatch):
    """A SQLite results DB with REAL decided, and the environment the command reads."""
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store = Store.from_url(url)
    store.migrate()
    with store.begin() as conn:
        archive = conn.execute(
            sa.text(
                "INSERT INTO archives (name, sha256, run_date, path, status)"
                " VALUES ('a.tar', 's', :d, '/p', 'unpacked') RETURNING id"
            ),
            {"d": DAY},
        ).scalar_one()
        for name, (policy, kind, decision, text) in REAL.items():
            file_id = conn.execute(
                sa.text(
                    "INSERT INTO audio_files (archive_id, member_path, path, status)"
                    " VALUES (:a, :m, '/x', 'classified') RETURNING id"
                ),
                {"a": archive, "m": f"{name}.wav"},
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO transcripts (file_id, model, text, n_chars) VALUES (:f, :m, :t, 1)"
                ),
                {"f": file_id, "m": tiny_models.asr.name, "t": text},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO review_queue (file_id, policy, policy_sha, model, score, kind,"
                    " status, decision) VALUES (:f, :p, 'sha', 'model', 0.5, :k, 'resolved', :d)"
                ),
                {"f": file_id, "p": policy, "k": kind, "d": decision},
            )
    env = {
        "EARMARK_ASR_MODEL_DIR": tiny_models.asr,
        "EARMARK_BASE_MODEL_DIR": tiny_models.base,
        "EARMARK_ADAPTER_DIR": tiny_models.adapter,
        "EARMARK_PREPARED_MODEL_DIR": tiny_models.prepared,
        "EARMARK_POLICIES_DIR": tiny_settings.policies_dir,
        "EARMARK_DEVICE": "cpu",
        "EARMARK_DTYPE": "float32",
        "EARMARK_FLAG_THRESHOLD": tiny_settings.flag_threshold,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    yield url, store
    store.dispose()


def _run(capsys, *argv: str) -> str:
    """``earmark --db-url URL evaluate ARGV --from DAY --to DAY``'s output (exit 0)."""
    assert main([*argv, "--from", DAY, "--to", DAY]) == 0
    out = capsys.readouterr().out
    assert "zanzibar" not in out and "quokka" not in out
    return out


def _scaled_adapter(source: Path, dest: Path) -> Path:
    """A copy of the adapter with its LoRA B weights tripled: another candidate."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, dest)
    weights = load_file(dest / "adapter_model.safetensors")
    save_file(
        {k: v * 3 if "lora_B" in k else v for k, v in weights.items()},
        dest / "adapter_model.safetensors",
    )
    return dest


def test_the_command_with_the_real_classifier(
    real, capsys, caplog, tmp_path, tiny_models, tiny_settings
):
    url, store = real
    before = _untouched(store)
    caplog.set_level("INFO")
    candidate = tmp_path / "candidate" / "harassment.md"
    candidate.parent.mkdir()
    candidate.write_text(
        (tiny_settings.policies_dir / "harassment.md").read_text()
        + "\n- **Mockery**: ridicule of a present person.\n"
    )
    by_policy = json.loads(
        _run(capsys, "--db-url", url, "evaluate", "--policy", str(candidate), "--json")
    )
    assert by_policy["candidate_kind"] == "policy" and by_policy["caveat"] == CAVEAT
    [harassment] = by_policy["policies"]
    now, new = harassment["current"], harassment["candidate"]
    assert now["policy_sha"] != new["policy_sha"] and now["model"] == new["model"]
    assert (now["decided"], now["violations"], harassment["unclear"]) == (3, 2, 0)
    for side in (now, new):
        assert side["true_positives"] + side["false_negatives"] == 2
        assert side["flagged"] == side["true_positives"] + side["false_positives"]
    scores = [(i["current"], i["candidate"]) for i in harassment["items"]]
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for pair in scores for s in pair)
    assert set(harassment["items"][0]) == {
        "item_id",
        "file_id",
        "day",
        "kind",
        "violation",
        "current",
        "candidate",
        "current_flagged",
        "candidate_flagged",
    }

    text = _run(capsys, "--db-url", url, "evaluate", "--policy", str(candidate))
    assert text.startswith("Candidate policy harassment (sha256 ")
    assert "not on all recordings" in text and "precision" in text and "recall" in text

    same = json.loads(
        _run(capsys, "--db-url", url, "evaluate", "--model", str(tiny_models.adapter), "--json")
    )
    assert [p["policy"] for p in same["policies"]] == ["harassment", "self_harm"]
    assert same["policies"][1]["unclear"] == 1
    for policy in same["policies"]:  # the adapter merged at load scores as the prepared model
        for item in policy["items"]:
            assert item["candidate"] == pytest.approx(item["current"], abs=1e-5)

    other = _scaled_adapter(tiny_models.adapter, tmp_path / "cope-a-v2")
    moved = json.loads(_run(capsys, "--db-url", url, "evaluate", "--model", str(other), "--json"))
    assert moved["policies"][0]["candidate"]["model"].endswith("+cope-a-v2")
    assert (
        max(abs(i["candidate"] - i["current"]) for p in moved["policies"] for i in p["items"])
        > 1e-3
    )
    assert "zanzibar" not in caplog.text and "quokka" not in caplog.text

    assert main(["--db-url", url, "evaluate", "--policy", str(tmp_path / "nope.md")]) == 2
    assert "not evaluated: --policy" in capsys.readouterr().out
    assert _untouched(store) == before  # shadow: no run wrote anything
