"""The dev environments keep a caller's Airflow users (the simple auth manager's
AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS), with admin added for the tools' own REST calls."""

from __future__ import annotations

from earmark.ops.deploy_config import parse_env
from earmark_dev.localenv import AUTH_USERS, LocalEnv, simple_auth_users
from earmark_dev.topology import Harness


def test_a_caller_s_users_are_kept_with_admin():
    assert simple_auth_users({}) == {}
    assert simple_auth_users({AUTH_USERS: " "}) == {}
    assert simple_auth_users({AUTH_USERS: "ana:user, lee:op,vi:viewer"}) == {
        AUTH_USERS: "ana:user,lee:op,vi:viewer,admin:admin"
    }
    assert simple_auth_users({AUTH_USERS: "admin:admin,ana:user"}) == {
        AUTH_USERS: "admin:admin,ana:user"
    }


def test_the_harness_keeps_the_caller_s_users(tmp_path, monkeypatch):
    """The harness drops every other AIRFLOW* variable of its caller (the template is the
    whole configuration), but not the users, which it renders into the template's
    AIRFLOW_USERS; without them, admin alone, as Airflow's default."""
    monkeypatch.setenv(AUTH_USERS, "ana:user,lee:op,vi:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "999")
    h = Harness(tmp_path / "with")
    env = h.configure()
    assert env[AUTH_USERS] == "ana:user,lee:op,vi:viewer,admin:admin"
    assert env["AIRFLOW__CORE__PARALLELISM"] != "999"
    written = parse_env((h.home / "airflow.env").read_text(encoding="utf-8"))
    assert written[AUTH_USERS] == env[AUTH_USERS]  # the shell of the README's steps too
    monkeypatch.delenv(AUTH_USERS)
    assert Harness(tmp_path / "without").configure()[AUTH_USERS] == "admin:admin"


def test_the_local_env_keeps_them_too(tmp_path, monkeypatch):
    monkeypatch.setenv(AUTH_USERS, "ana:user")
    env = LocalEnv(tmp_path)
    assert env.environ()[AUTH_USERS] == "ana:user,admin:admin"
    assert f"export {AUTH_USERS}=ana:user,admin:admin" in env.write_env_file().read_text()
