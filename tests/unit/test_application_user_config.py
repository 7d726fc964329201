"""``[[applications]]`` fields ``user``, ``group`` and ``stale_files``: checked when the node
config is loaded, each refusal naming the file, the application and the field; and
``[replication] allow_other``."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path

import pytest

from tandem.agent.config import load_node_config
from tandem.agent.control import ApplicationConfig
from tandem.agent.control.procfiles import run_as
from tandem.agent.service import replicator_settings
from tandem.events.settings import SettingsError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node.toml"

BASE = """\
cluster = "c1"
node = "n1"
identity = "primary"
peers = ["n2"]
state_dir = "/tmp/tandem-test-state"

[[applications]]
name = "db"
start = ["/bin/true"]
"""

NO_SUCH_USER = "tandem-no-such-user-x"


@pytest.fixture(autouse=True)
def _no_tandem_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in os.environ:
        if key.startswith(("TANDEM_NODE_", "TANDEM_BUS_")):
            monkeypatch.delenv(key)


def load_error(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(BASE + extra, encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_node_config(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_an_unknown_user_or_group_names_the_application_and_the_field(tmp_path: Path) -> None:
    message = load_error(tmp_path, f'user = "{NO_SUCH_USER}"\n')
    assert f"application 'db': field 'user': no such user '{NO_SUCH_USER}'" in message
    message = load_error(tmp_path, 'user = "root"\ngroup = "tandem-no-such-group-x"\n')
    assert "application 'db': field 'group': no such group 'tandem-no-such-group-x'" in message
    assert "field 'group' needs field 'user'" in load_error(tmp_path, 'group = "root"\n')
    # A numeric id must exist too.
    assert "no such user '4000000000'" in load_error(tmp_path, 'user = "4000000000"\n')


def test_user_group_and_stale_files_are_for_process_control_only(tmp_path: Path) -> None:
    text = (
        BASE.replace('start = ["/bin/true"]', 'control = "systemd"\nunit = "postgresql.service"')
        + 'user = "root"\nstale_files = ["/run/x.pid"]\n'
    )
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError, match=r"user, stale_files apply only to control='process'"):
        load_node_config(path)


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ('[""]', "an entry is empty"),
        ('["../elsewhere/x.pid"]', "'../elsewhere/x.pid' may leave the application's cwd"),
        ('["a/../../x.pid"]', "'a/../../x.pid' may leave the application's cwd"),
        ('["a/../x.pid"]', "'a/../x.pid' may leave the application's cwd"),
        ('["."]', "'.' may leave the application's cwd"),
        ('["/"]', "'/' is not a file"),
    ],
)
def test_bad_stale_files_are_refused(tmp_path: Path, entries: str, why: str) -> None:
    message = load_error(tmp_path, f'cwd = "/srv/db"\nstale_files = {entries}\n')
    assert "stale_files" in message and why in message


def test_a_relative_stale_file_needs_a_cwd(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'stale_files = ["postmaster.pid"]\n')
    assert "application 'db': field 'stale_files': 'postmaster.pid' is relative" in message


def test_good_stale_files_and_user_load(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        BASE
        + 'user = "root"\ngroup = "0"\ncwd = "/srv/db"\n'
        + 'stale_files = ["postmaster.pid", "run/x.lock", "/run/db/db.pid"]\n',
        encoding="utf-8",
    )
    [app] = load_node_config(path).applications
    assert (app.user, app.group) == ("root", "0")
    assert [str(p) for p in app.stale_files] == ["postmaster.pid", "run/x.lock", "/run/db/db.pid"]


def test_run_as_the_user_with_its_groups_and_login_variables() -> None:
    me = pwd.getpwuid(os.geteuid())
    assert run_as(ApplicationConfig(name="a", start=["/bin/true"])) == ({}, {})
    who = run_as(ApplicationConfig(name="a", start=["/bin/true"], user=me.pw_name))
    assert who.env == {"HOME": me.pw_dir, "USER": me.pw_name, "LOGNAME": me.pw_name}
    if os.geteuid() == 0:
        assert who.popen == {
            "user": me.pw_uid,
            "group": me.pw_gid,
            "extra_groups": os.getgrouplist(me.pw_name, me.pw_gid),
        }
    else:  # a non-root agent running an app as itself: nothing to drop (setgroups needs root)
        assert who.popen == {}


def test_allow_other_is_a_replication_setting_passed_to_the_replicator(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        BASE + '\n[replication]\nprotected_root = "/srv/db"\ncapture = "intercept"\n'
        "allow_other = true\n",
        encoding="utf-8",
    )
    config = load_node_config(path)
    assert config.replication.allow_other is True
    assert replicator_settings(config).allow_other is True
    path.write_text(BASE, encoding="utf-8")
    assert replicator_settings(load_node_config(path)).allow_other is False


def test_the_example_documents_a_postgres_application(tmp_path: Path) -> None:
    """The example's PostgreSQL entry (commented out: the postgres user need not exist here)
    loads once uncommented, with the user swapped for one that exists."""
    text = EXAMPLE.read_text(encoding="utf-8")
    block = re.search(r"^# \[\[applications\]\]\n((?:# [a-z_]+ = .*\n)+)", text, re.M)
    assert block is not None, "the example's PostgreSQL application is missing"
    entry = "".join(ln[2:] + "\n" for ln in block.group(1).splitlines())
    entry = entry.replace('"postgres"', '"root"')
    path = tmp_path / "node.toml"
    path.write_text(BASE.split("[[applications]]")[0] + "[[applications]]\n" + entry)
    [pg] = load_node_config(path).applications
    assert (pg.name, pg.user, pg.group) == ("pg", "root", "root")
    assert [str(p) for p in pg.stale_files] == ["postmaster.pid"]
    assert pg.start is not None and pg.start[-2:] == ["-D", str(pg.cwd)]
    assert re.search(r"^# allow_other = true", text, re.M), "allow_other is not documented"
