"""The ACL user of docs/configuration.rst is exactly what RedBeat needs.

The ``ACL SETUSER`` command is read from the doc, so the doc and this test
cannot diverge. On a redis-server of the test's own with that user, real
beats, the command line and the entry API do what they do; Redis must refuse
nothing but the commands the doc says RedBeat carries on without, and every
command the doc grants must have been used. The broker is the session's
server with its default user, as the doc advises.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import redis
from click.testing import CliRunner
from conftest import ROOT, Processes, RedisServer, make_app, published, wait_for

from redbeat.census import snapshot
from redbeat.cli import redbeat
from redbeat.entry import RedBeatSchedulerEntry
from redbeat.records import InFlight
from redbeat.worker import EventRecorder

DOC = ROOT / "docs" / "configuration.rst"
USER = "redbeat"
PASSWORD = "acl-test-password"
# Asked for by RedBeat (CONFIG GET) or by redis-py (CLIENT SETINFO, Redis
# 7.2+), which carry on when refused: the doc leaves them out and says why.
TOLERATED_REFUSALS = {"config|get", "client|setinfo"}
# Allowed to every user, whatever its ACL.
ALWAYS_ALLOWED = {"auth", "hello"}
# What the test itself asks the server, as its default user.
TEST_ADMIN = {"acl|setuser", "acl|log", "config|resetstat", "info"}
LOCK_TIMEOUT = 2.0


def documented_acl_setuser() -> list[str]:
    """The arguments of the ``redis-cli ACL SETUSER`` command in docs/configuration.rst."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("redis-cli ACL SETUSER"))
    command = []
    for line in lines[start:]:
        command.append(line.strip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    return shlex.split(" ".join(command))[1:]


def granted_commands() -> set[str]:
    """The commands the documented user may run, as Redis names them: ``get``, ``script|load``."""
    return {rule[1:].lower() for rule in documented_acl_setuser() if rule.startswith("+")}


def test_the_documented_acl_user_is_limited_to_the_prefix_and_to_named_commands():
    setuser = documented_acl_setuser()
    assert setuser[:4] == ["ACL", "SETUSER", USER, "reset"]
    assert [rule for rule in setuser if rule.startswith("~")] == ["~redbeat:*"]
    assert [rule for rule in setuser if rule.startswith((">", "nopass", "allkeys", "allcommands", "+@", "&"))] \
        == [">change-me"]


def test_every_redis_command_named_in_redbeat_is_granted_by_the_documented_acl(redis_server):
    # Redis checks each command of a Lua script against the caller's ACL, and
    # some script paths are not reached by the end-to-end test below (a retry
    # after a broker error): read the command names from the source.
    known = {str(name).lower() for name in redis_server.client(0).command_list()}
    source = "\n".join(path.read_text() for path in (ROOT / "redbeat").glob("*.py"))
    named = {word.lower() for word in re.findall(r"""['"]([A-Z]{2,})['"]""", source)} & known
    assert {"get", "pexpire", "hmget", "type", "lpush", "ltrim", "hexists"} <= named
    assert named - granted_commands() == set(), "named in redbeat/ but not granted in docs/configuration.rst"


class AclServer(RedisServer):
    """A redis-server with the documented user, and what that user was refused and ran."""

    def grant_documented_user(self) -> None:
        admin = self.client(0)
        admin.execute_command(*[f">{PASSWORD}" if rule.startswith(">") else rule
                                for rule in documented_acl_setuser()])
        admin.config_resetstat()
        admin.execute_command("ACL", "LOG", "RESET")

    def user_url(self) -> str:
        # Database 1: a database number in the URL makes redis-py SELECT it.
        return f"redis://{USER}:{PASSWORD}@127.0.0.1:{self.port}/1"

    def refusals(self) -> list[tuple[str, str]]:
        """(reason, command or key) of each refusal but the tolerated ones."""
        return [(entry["reason"], entry["object"]) for entry in self.client(0).acl_log()
                if entry["reason"] != "command" or entry["object"] not in TOLERATED_REFUSALS]

    def commands_used(self) -> set[str]:
        """The commands run since the ACL was set, by the user (refused ones included)."""
        stats = self.client(0).info("commandstats")
        return {name.removeprefix("cmdstat_") for name in stats} - TEST_ADMIN - ALWAYS_ALLOWED

    def wait_for(self, condition: Callable[[], object], message: str, timeout: float = 10.0) -> object:
        """``wait_for``, failing at once (not at the timeout) when Redis refuses something."""
        def unrefused() -> object:
            assert not self.refusals(), f"Redis refused {self.refusals()} while waiting for {message}"
            return condition()
        return wait_for(unrefused, timeout=timeout, message=message)


@pytest.fixture
def acl_server(tmp_path: Path):
    server = AclServer(tmp_path / "acl-redis")
    try:
        server.grant_documented_user()
        yield server
    finally:
        server.stop()


@pytest.mark.e2e
def test_beat_the_command_line_and_the_entry_api_need_exactly_the_documented_acl(
        tmp_path, acl_server, redis_server, broker_redis, project_env):
    url = acl_server.user_url()
    as_user = redis.Redis.from_url(url, decode_responses=True)
    env = dict(project_env,
               # A health check after one idle second, not thirty: its PING is used here.
               E2E_REDBEAT_URL=url + "?health_check_interval=1",
               E2E_BROKER_URL=redis_server.url(1),
               E2E_RECORD_URL=redis_server.url(2),
               E2E_LOCK_TIMEOUT=str(LOCK_TIMEOUT),
               PYTHONUNBUFFERED="1")
    with Processes(tmp_path, env) as beats:
        beats.start("beat-a", "beat", "-S", "redbeat", "-l", "info")
        acl_server.wait_for(lambda: len(published(broker_redis)) >= 2, "runs under beat A", timeout=30)
        beats.start("beat-b", "beat", "-S", "redbeat", "-l", "info")
        acl_server.wait_for(lambda: "standing by" in beats.log("beat-b"), "beat B standing by", timeout=30)

        run_every_command(tmp_path, acl_server, broker_redis, env)
        use_the_entry_api(url)
        use_the_dashboard(url)
        record_runs_as_a_worker(url)

        beats.stop("beat-a")
        acl_server.wait_for(lambda: "Acquired lock" in beats.log("beat-b"), "beat B taking over")
        # A run left in flight by a beat that died before publishing it: the holder takes it over,
        # and publishes it or, when a newer slot was claimed since (catch_up once), records it missed.
        task_id = str(uuid.uuid4())
        now = time.time()
        as_user.hset("redbeat::inflight", task_id, InFlight(
            task_id=task_id, key="redbeat:static-every-second", scheduled=now - 1, claimed_at=now - 1,
            token="a-beat-that-died", retry_at=now + 60).to_json())
        acl_server.wait_for(lambda: task_id in {run["task_id"] for run in history(url, "static-every-second")},
                            "the run taken over in the entry's history")
        # A member whose hash another program deleted: beat drops it from the schedule.
        as_user.zadd("redbeat::schedule", {"redbeat:deleted-elsewhere": 0})
        acl_server.wait_for(lambda: as_user.zscore("redbeat::schedule", "redbeat:deleted-elsewhere") is None,
                            "beat dropping the orphan member")
        # A member outside the prefix, whose key this user may not read: dropped, and ticks go on.
        as_user.zadd("redbeat::schedule", {"session:42": 0})
        acl_server.wait_for(lambda: as_user.zscore("redbeat::schedule", "session:42") is None,
                            "beat dropping the member outside the prefix")
        # The in-flight key holding a string: moved aside, and runs are dispatched again.
        as_user.delete("redbeat::inflight")
        as_user.set("redbeat::inflight", "not a hash")
        acl_server.wait_for(lambda: as_user.type("redbeat::inflight") != "string", "the in-flight key moved aside")
        count = len(published(broker_redis))
        acl_server.wait_for(lambda: len(published(broker_redis)) >= count + 2, "runs after the move")
        beats.stop("beat-b")
        for name in ("beat-a", "beat-b"):
            assert "NOPERM" not in beats.log(name) and "tick failed" not in beats.log(name)

    assert acl_server.refusals() == []
    used, granted = acl_server.commands_used() - TOLERATED_REFUSALS, granted_commands()
    assert used == granted, (f"used but not granted: {sorted(used - granted)}; "
                             f"granted but not used: {sorted(granted - used)} (drop it from the doc, "
                             "or make this test use it)")


def use_the_dashboard(url: str) -> None:
    """The web dashboard's pages, its API and an action, as the documented user."""
    from starlette.testclient import TestClient

    from redbeat.web import create_app

    web = TestClient(create_app(make_app(url)), base_url="http://127.0.0.1")
    for page in ("/", "/chart.svg", "/schedule", "/schedule?page=2&size=1", "/schedule?sort=name",
                 "/schedule?name=acl&state=active", "/entry?name=acl-entry", "/api/overview", "/api/entries"):
        assert web.get(page).status_code == 200, page
    token = web.get("/api/csrf").json()["token"]
    for action in ("pause", "resume"):
        assert web.post(f"/api/{action}", json={"name": "acl-entry"}, headers={"X-CSRF-Token": token}).json()["ok"]


def cli(url: str, *args: str) -> str:
    result = CliRunner().invoke(redbeat, ["--redis-url", url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def history(url: str, name: str) -> list[dict]:
    return json.loads(cli(url, "show", name, "--json"))["history"]


def run_every_command(tmp_path: Path, server: AclServer, broker: redis.Redis, env: dict) -> None:
    """Each ``redbeat`` command that talks to Redis, against the live beat; each must succeed."""
    url = server.user_url()
    cli(url, "add", "acl-entry", "--task", "e2e_app.record", "--every", "3600", "--args", '["added"]')
    # A one-off entry, due at once (a past time: --force): once run, it is never due again, which ``status`` counts.
    cli(url, "add", "acl-once", "--task", "e2e_app.record", "--at", "2000-01-01T00:00:00+00:00",
        "--args", '["once"]', "--force")
    assert "acl-entry" in cli(url, "list")
    assert {e["name"] for e in json.loads(cli(url, "list", "--json"))} >= {"acl-entry", "static-every-second"}
    assert "e2e_app.record" in cli(url, "show", "acl-entry")
    cli(url, "edit", "acl-entry", "args", '["edited"]')
    cli(url, "pause", "acl-entry")
    cli(url, "resume", "acl-entry")
    cli(url, "run-now", "acl-entry")
    server.wait_for(lambda: {"['edited']", "['once']"} <= {m["argsrepr"] for m in published(broker)},
                    "the run-now and one-off runs dispatched")
    server.wait_for(lambda: json.loads(cli(url, "status", "--json"))["never_due"] == 1,
                    "the one-off entry never due again")
    cli(url, "remove", "acl-once")
    exported = tmp_path / "export.json"
    cli(url, "export", "-o", str(exported))
    cli(url, "remove", "acl-entry")
    assert "create: 1" in cli(url, "import", str(exported), "--apply")
    assert "healthy" in cli(url, "status")
    assert "nothing wrong found" in cli(url, "doctor")
    # What `redbeat metrics` and beat's metrics endpoint read (census.py's script too).
    assert snapshot(make_app(url)).census.active >= 1
    # The same command line inside a Celery project, with the app's configuration.
    status = subprocess.run([sys.executable, "-m", "celery", "-A", "e2e_app", "redbeat", "status"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stdout + status.stderr


def record_runs_as_a_worker(url: str) -> None:
    """What redbeat.worker writes (its recorder, in this process): the claim of a run's start,
    a duplicate refused, and the ends of runs with their counts and the failing set."""
    recorder = EventRecorder()
    for task_id, state, retval in (("acl-run-1", "FAILURE", ValueError("no")), ("acl-run-2", "SUCCESS", None)):
        task = SimpleNamespace(app=make_app(url), name="e2e_app.record", request=SimpleNamespace(
            id=task_id, hostname="celery@acl", retries=0, redbeat_key="redbeat:static-every-second"))
        assert recorder.claim(task) and not recorder.claim(task)
        recorder.finished(task, task_id, state, retval)
    assert recorder.dropped == 0


def use_the_entry_api(url: str) -> None:
    """The Python API applications manage entries with."""
    app = make_app(url)
    entry = RedBeatSchedulerEntry("acl-api", "e2e_app.record", 3600.0, args=["api"], app=app).save()
    names = [f"acl-api-{i}" for i in range(3)]
    saved = RedBeatSchedulerEntry.save_many([RedBeatSchedulerEntry(name, "e2e_app.record", 3600.0, app=app)
                                             for name in names], app=app)
    assert saved == 3
    assert RedBeatSchedulerEntry.from_key("redbeat:acl-api", app=app).args == ["api"]
    assert entry.rank is not None
    entry.reschedule()
    for name in ["acl-api", *names]:
        RedBeatSchedulerEntry.from_name(name, app=app).delete()
