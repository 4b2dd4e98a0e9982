"""`redbeat status` and `redbeat liveness` as probes, run as real processes: they end within their Redis
timeout against a server that never answers, and every way of not getting an
answer from Redis is one line on stderr with its own documented exit code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from conftest import Processes, free_port, wait_for
from latency_proxy import LatencyProxy
from topologies import ExtraServer

from redbeat.records import InFlight

# docs/cli.rst, "Exit codes".
HEALTHY, UNHEALTHY, USAGE, DEGRADED, NO_REDIS, CONFIGURATION = 0, 1, 2, 3, 4, 5
# A Python interpreter that imports Celery takes a while to start, more on a busy machine.
STARTUP = 1.5


def run(args: list[str], env: dict, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """A command as a probe runs it: its own process; the result and the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    return result, time.monotonic() - started


def redbeat(*args: str, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    return run([sys.executable, "-m", "redbeat.cli", *args], env)


def one_line(result: subprocess.CompletedProcess, code: int) -> str:
    """The error line of a command that failed as a probe needs: its exit code, one line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture
def silent_port(tmp_path):
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    script = textwrap.dedent("""
        import socket, sys
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(100)
        print(server.getsockname()[1], flush=True)
        held = []
        while True:
            held.append(server.accept()[0])
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(timeout=10)


class PasswordServer(ExtraServer):
    """A redis-server that asks for a password."""

    PASSWORD = "s3cret-pw"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, "--requirepass", self.PASSWORD)

    def _answers(self) -> bool:
        try:
            return redis.Redis(port=self.port, password=self.PASSWORD, socket_timeout=1).ping()
        except redis.ConnectionError:
            return False


@pytest.fixture
def password_server(tmp_path):
    server = PasswordServer(tmp_path / "password-redis")
    yield server
    server.stop()


# -- a Redis that never answers ---------------------------------------------------------------

@pytest.mark.parametrize("args", [["status", "--timeout", "1"], ["--timeout", "1", "status"],
                                  ["liveness", "--timeout", "1"], ["--timeout", "1", "liveness"],
                                  ["--timeout", "1", "list"], ["--timeout", "1", "doctor"]])
def test_a_redis_that_never_answers_ends_the_command_within_its_timeout(silent_port, project_env, args):
    url = f"redis://:hunter2@127.0.0.1:{silent_port}/0"
    result, took = redbeat("--redis-url", url, *args, env=project_env)
    line = one_line(result, NO_REDIS)
    assert f"cannot reach Redis at redis://:**@127.0.0.1:{silent_port}/0: no answer within 1s" in line
    assert "hunter2" not in line
    assert took < 1 + STARTUP, took


def test_the_default_timeout_is_two_seconds_whatever_beats_socket_timeout(silent_port, project_env, tmp_path):
    # Beat's own client would wait 30 s here: the command's client does not.
    (tmp_path / "slowconf.py").write_text(
        f"from celery import Celery\napp = Celery('slow', broker='memory://')\n"
        f"app.conf.redbeat_redis_url = 'redis://127.0.0.1:{silent_port}/0'\n"
        f"app.conf.redbeat_redis_options = {{'socket_timeout': 30, 'socket_connect_timeout': 30}}\n")
    result, took = run([sys.executable, "-m", "celery", "-A", "slowconf", "redbeat", "status"], project_env,
                       cwd=tmp_path)
    assert "no answer within 2s" in one_line(result, NO_REDIS)
    assert 2 <= took < 2 + STARTUP, took


def test_the_timeout_setting_is_used_and_a_bad_one_is_a_configuration_error(silent_port, project_env, tmp_path):
    (tmp_path / "timeoutconf.py").write_text(
        f"import os\nfrom celery import Celery\napp = Celery('t', broker='memory://')\n"
        f"app.conf.redbeat_redis_url = 'redis://127.0.0.1:{silent_port}/0'\n"
        f"app.conf.redbeat_command_timeout = os.environ['TIMEOUT_SETTING']\n")
    result, took = run([sys.executable, "-m", "celery", "-A", "timeoutconf", "redbeat", "status"],
                       dict(project_env, TIMEOUT_SETTING="0.5"), cwd=tmp_path)
    assert "no answer within 0.5s" in one_line(result, NO_REDIS) and took < 0.5 + STARTUP
    result, _ = run([sys.executable, "-m", "celery", "-A", "timeoutconf", "redbeat", "list"],
                    dict(project_env, TIMEOUT_SETTING="soon"), cwd=tmp_path)
    assert "redbeat_command_timeout must be a number of seconds" in one_line(result, CONFIGURATION)


@pytest.mark.parametrize("scheme", ["redis-sentinel", "redis-cluster"])
def test_a_sentinel_or_cluster_that_never_answers_is_one_line_within_the_timeout(silent_port, project_env, scheme):
    result, took = redbeat("--redis-url", f"{scheme}://127.0.0.1:{silent_port}/0", "--prefix", "{redbeat}:",
                           "status", "--timeout", "1", env=project_env)
    line = one_line(result, NO_REDIS)
    assert f"cannot reach Redis at {scheme}://127.0.0.1:{silent_port}/0" in line
    assert "Redis<" not in line and "ConnectionPool" not in line  # no client's repr
    assert took < 1 + STARTUP, took


@pytest.mark.parametrize("scheme", ["redis", "redis-sentinel", "redis-cluster"])
def test_a_closed_port_is_one_line(project_env, scheme):
    port = free_port()
    result, took = redbeat("--redis-url", f"{scheme}://127.0.0.1:{port}/0", "--prefix", "{redbeat}:",
                           "status", "--timeout", "1", env=project_env)
    line = one_line(result, NO_REDIS)
    assert f"cannot reach Redis at {scheme}://127.0.0.1:{port}/0" in line
    assert took < 1 + STARTUP, took


@pytest.mark.parametrize("probe", ["status", "liveness"])
def test_a_slow_redis_ends_a_probe_within_its_timeout_in_all(redis_server, project_env, probe):
    # Each answer comes within the timeout, but a probe asks several times: the whole is bounded.
    proxy = LatencyProxy(redis_server.port, delay=0.4)
    try:
        result, took = redbeat("--redis-url", proxy.url(), probe, "--timeout", "1", env=project_env)
    finally:
        proxy.stop()
    assert "no answer within 1s" in one_line(result, NO_REDIS)
    assert took < 1 + STARTUP, took


def test_a_host_that_does_not_resolve_is_one_line(project_env):
    result, _ = redbeat("--redis-url", "redis://no-such-host.invalid:6379/0", "status", env=project_env)
    assert "cannot reach Redis at redis://no-such-host.invalid:6379/0" in one_line(result, NO_REDIS)


# -- credentials ----------------------------------------------------------------------------

@pytest.mark.parametrize("credentials", [":wrong-pw@", "someone:wrong-pw@", ""])
def test_refused_credentials_are_one_line(password_server, project_env, credentials):
    url = f"redis://{credentials}127.0.0.1:{password_server.port}/0"
    result, _ = redbeat("--redis-url", url, "status", "--timeout", "1", env=project_env)
    line = one_line(result, NO_REDIS)
    assert f"at redis://{credentials.replace('wrong-pw', '**')}127.0.0.1:{password_server.port}/0 refused the " \
           "credentials" in line
    assert "wrong-pw" not in line
    # The right password: beat's health, not Redis's.
    right = f"redis://:{PasswordServer.PASSWORD}@127.0.0.1:{password_server.port}/0"
    result, _ = redbeat("--redis-url", right, "status", env=project_env)
    assert result.returncode == UNHEALTHY and "no tick within" in result.stdout


# -- configuration --------------------------------------------------------------------------

@pytest.mark.parametrize("url, words", [
    ("redis://:hunter2@127.0.0.1:not-a-port/0", "bad Redis URL or options redis://**@127.0.0.1:not-a-port/0"),
    ("nosuch://127.0.0.1/0", "bad Redis URL or options nosuch://127.0.0.1/0"),
    ("redis://127.0.0.1:99999/0", "bad Redis URL or options redis://127.0.0.1:99999/0"),
])
def test_a_bad_url_is_a_configuration_error(project_env, url, words):
    for args in (["status"], ["list"]):
        result, _ = redbeat("--redis-url", url, *args, env=project_env)
        line = one_line(result, CONFIGURATION)
        assert words in line and "hunter2" not in line


def test_no_configuration_is_a_configuration_error(project_env, tmp_path):
    (tmp_path / "noconf.py").write_text("from celery import Celery\napp = Celery('noconf')\n")
    for command in ("status", "list", "doctor"):
        result, _ = run([sys.executable, "-m", "celery", "-A", "noconf", "redbeat", command], project_env,
                        cwd=tmp_path)
        assert "RedBeat needs a Redis server: set redbeat_redis_url" in one_line(result, CONFIGURATION)


def test_a_timeout_that_is_no_number_is_a_usage_error(project_env):
    result, _ = redbeat("--redis-url", "redis://127.0.0.1:1/0", "status", "--timeout", "0", env=project_env)
    assert result.returncode == USAGE and "Traceback" not in result.stderr


# -- beat's health ----------------------------------------------------------------------------

def heartbeat(client: redis.Redis, **fields: object) -> None:
    now = time.time()
    client.set("redbeat::heartbeat", json.dumps({"token": "h:1:t", "host": "h", "pid": 1, "last_tick": now,
                                                  "active_since": now, **fields}))


def test_status_is_healthy_unhealthy_or_degraded_by_exit_code(redis_url, schedule_redis, project_env):
    result, _ = redbeat("--redis-url", redis_url, "status", env=project_env)
    assert result.returncode == UNHEALTHY and "UNHEALTHY: no tick within 60s" in result.stdout
    heartbeat(schedule_redis)
    result, _ = redbeat("--redis-url", redis_url, "status", env=project_env)
    assert result.returncode == HEALTHY and result.stdout.rstrip().endswith("healthy")
    # A run claimed long ago and never published: beat ticks, the broker does not take its runs.
    now = time.time()
    stuck = InFlight(task_id="t-1", key="redbeat:e", scheduled=now - 300, claimed_at=now - 300, token="h:1:t",
                     retry_at=now - 200, attempts=3)
    fresh = InFlight(task_id="t-2", key="redbeat:e", scheduled=now, claimed_at=now, token="h:1:t", retry_at=now + 5)
    schedule_redis.hset("redbeat::inflight", mapping={"t-1": stuck.to_json(), "t-2": fresh.to_json()})
    result, _ = redbeat("--redis-url", redis_url, "status", "--json", env=project_env)
    report = json.loads(result.stdout)
    assert result.returncode == DEGRADED and report["healthy"] is True and report["stuck_in_flight"] == 1
    assert report["degraded"] == ["1 runs in flight not published for over 60s"]
    # Unhealthy wins over degraded.
    schedule_redis.delete("redbeat::heartbeat")
    result, _ = redbeat("--redis-url", redis_url, "status", env=project_env)
    assert result.returncode == UNHEALTHY and "UNHEALTHY" in result.stdout and "DEGRADED" not in result.stdout


@pytest.mark.e2e
def test_a_running_beat_is_healthy_through_celery(redis_server, redis_url, project_env, tmp_path):
    """`celery -A proj redbeat status` against a real beat: 0, and 4 when this side cannot reach Redis."""
    env = dict(project_env, E2E_REDBEAT_URL=redis_server.url(0), E2E_BROKER_URL=redis_server.url(1),
               E2E_RECORD_URL=redis_server.url(2), PYTHONUNBUFFERED="1")
    status = [sys.executable, "-m", "celery", "-A", "e2e_app", "redbeat", "status", "--timeout", "1"]
    with Processes(tmp_path, env) as processes:
        processes.start("beat", "beat", "-S", "redbeat", "-l", "info")
        wait_for(lambda: run(status, env, cwd=tmp_path)[0].returncode == HEALTHY, timeout=30,
                 message="status healthy with a running beat")
        elsewhere = dict(env, E2E_REDBEAT_URL=f"redis://127.0.0.1:{free_port()}/0")
        result, _ = run(status, elsewhere, cwd=tmp_path)
        assert "cannot reach Redis" in one_line(result, NO_REDIS)
