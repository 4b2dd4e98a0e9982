"""Shared fixtures: a real redis-server per test session, apps, and waiting helpers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import fakeredis
import pytest
import redis
from celery import Celery

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class RedisServer:
    """A redis-server process of our own on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed: run the tests through ./run.sh test")
        self.exe = exe
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"],
            stdout=open(self.workdir / "redis.log", "ab"), stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, timeout=10, message=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def _answers(self) -> bool:
        try:
            return redis.Redis(port=self.port, socket_timeout=1).ping()
        except redis.ConnectionError:
            return False

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0, decode: bool = True) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, decode_responses=decode)


class Processes:
    """Celery processes started by a test, each logging to its own file, stopped by PID."""

    def __init__(self, tmp_path: Path, env: dict, app_module: str = "e2e_app") -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.app_module = app_module
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", self.app_module, *args],
            cwd=self.tmp_path, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.started[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.started[name]
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name in list(self.started):
            self.stop(name)
        for name in self.started:
            print(f"----- {name} log -----\n{self.log(name)[-4000:]}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database 0 on the session's real redis-server (broker on db 1)."""
    redis_server.client(0).flushall()
    return redis_server.url(0)


@pytest.fixture
def schedule_redis(redis_server: RedisServer, redis_url: str) -> redis.Redis:
    return redis_server.client(0)


@pytest.fixture
def broker_redis(redis_server: RedisServer, redis_url: str) -> redis.Redis:
    return redis_server.client(1)


def make_app(redis_url: str | None, broker_url: str = "memory://", **settings) -> Celery:
    app = Celery("tests", set_as_current=False)
    conf = {"broker_url": broker_url, "timezone": "UTC"}
    if redis_url is not None:
        conf["redbeat_redis_url"] = redis_url
    conf.update(settings)
    app.conf.update(conf)
    return app


@pytest.fixture
def app(redis_server: RedisServer, redis_url: str) -> Celery:
    """An app storing its schedule in the real redis-server and publishing to it (db 1)."""
    return make_app(redis_url, broker_url=redis_server.url(1))


@pytest.fixture
def fake_app() -> Celery:
    """An app whose schedule lives in fakeredis: for fast unit tests."""
    app = make_app("redis://fake:6379/0")
    server = fakeredis.FakeServer()
    from redbeat.client import get_store
    from redbeat.config import ensure_conf
    from redbeat.store import ScheduleStore

    conf = ensure_conf(app)
    app.redbeat_redis = fakeredis.FakeRedis(server=server, decode_responses=True)
    app.redbeat_store = ScheduleStore(fakeredis.FakeRedis(server=server), conf)
    assert get_store(app) is app.redbeat_store
    return app


def published(broker: redis.Redis, queue: str = "celery") -> list[dict]:
    """The task messages waiting in a queue of the Redis broker, oldest first."""
    messages = []
    for raw in reversed(broker.lrange(queue, 0, -1)):
        message = json.loads(raw)
        headers = message["headers"]
        messages.append({"task": headers["task"], "id": headers["id"], "argsrepr": headers.get("argsrepr"),
                         "headers": headers})
    return messages


def project_environment() -> dict:
    """Environment for subprocesses that import this checkout and its test tasks."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")]))
    env.pop("CELERY_CONFIG_MODULE", None)
    return env


@pytest.fixture
def project_env() -> dict:
    return project_environment()


# -- an in-process scheduler against the real redis-server --------------------------

RAW_DEFINITION = json.dumps({
    "name": "raw", "task": "tasks.raw", "args": [7],
    "schedule": {"__type__": "interval", "every": 3600},
})


def tick_until(scheduler, condition, timeout=10.0, message="condition"):
    """Run beat's loop (tick, then sleep what it asks, at most 50 ms) until ``condition``."""
    def step():
        interval = scheduler.tick()
        if condition():
            return True
        time.sleep(min(interval, 0.05))
        return False
    return wait_for(step, timeout=timeout, interval=0, message=message)


def tasks_sent(broker):
    return [message["task"] for message in published(broker)]


def raw_entry(schedule_redis, name="raw", every=3600, score=0, **fields):
    """An entry written as another program would: HSET of its definition, then ZADD."""
    definition = json.loads(RAW_DEFINITION) | {"name": name, "schedule": {"__type__": "interval", "every": every}}
    schedule_redis.hset(f"redbeat:{name}", "definition", json.dumps(definition | fields))
    schedule_redis.zadd("redbeat::schedule", {f"redbeat:{name}": score})


@pytest.fixture
def scheduler_for(app):
    made = []

    def build(schedule_=None, target_app=None, **settings):
        target = target_app or app
        target.conf.update(beat_schedule=schedule_ or {}, **settings)
        from redbeat import RedBeatScheduler

        scheduler = RedBeatScheduler(app=target)
        made.append(scheduler)
        return scheduler
    yield build
    for scheduler in made:
        scheduler.close()


# -- real beats against a redis-server of the test's own ---------------------------------------

@pytest.fixture
def lock_timeout() -> float:
    """The beats' redbeat_lock_timeout: a module overrides this fixture to change it."""
    return 2.0


@pytest.fixture
def schedule_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def beats(tmp_path, schedule_server, redis_server, redis_url, project_env, lock_timeout):
    """Beats of tests/e2e_app.py on ``schedule_server``, publishing to the session's server (db 1)."""
    env = dict(project_env,
               E2E_REDBEAT_URL=schedule_server.url(0),
               E2E_BROKER_URL=redis_server.url(1),
               E2E_RECORD_URL=redis_server.url(2),
               E2E_LOCK_TIMEOUT=str(lock_timeout),
               PYTHONUNBUFFERED="1")
    with Processes(tmp_path, env) as processes:
        yield processes


def start_beat(beats: Processes, name: str) -> subprocess.Popen:
    return beats.start(name, "beat", "-S", "redbeat", "-l", "info")


def entry_missing_its_argument(schedule: redis.Redis, name: str = "no-label") -> None:
    """A raw entry due now of e2e_app.record(label) without its label: Celery's argument
    check refuses every run of it, so a real beat gives each up at once."""
    schedule.hset(f"redbeat:{name}", "definition", json.dumps({
        "name": name, "task": "e2e_app.record", "schedule": {"__type__": "interval", "every": 3600}}))
    schedule.zadd("redbeat::schedule", {f"redbeat:{name}": 0})


def messages(broker: redis.Redis) -> list[dict]:
    return published(broker)


def slots(broker: redis.Redis) -> Counter:
    """How many messages were published for each (entry, scheduled time)."""
    return Counter((m["headers"]["redbeat_key"], m["headers"]["redbeat_scheduled"]) for m in messages(broker))


def assert_each_slot_once(broker: redis.Redis, key: str | None = None) -> list[float]:
    """Fail if a slot was published twice; the scheduled times published (of entry ``key`` if given), sorted."""
    counts = slots(broker)
    duplicates = {slot: n for slot, n in counts.items() if n > 1}
    assert not duplicates, f"slots dispatched more than once: {duplicates}"
    ids = [m["id"] for m in messages(broker)]
    assert len(ids) == len(set(ids))
    return sorted(scheduled for slot_key, scheduled in counts if key is None or slot_key == key)
