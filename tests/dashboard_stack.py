"""What the dashboard's browser tests and screenshots run against: a redis-server of their own
(the schedule on db 0, the broker on db 1, the worker's record of runs on db 2), a real
``celery beat``, a real worker that reports run outcomes (``redbeat.worker``) and a real
``celery -A e2e_app redbeat web`` on a free loopback port; every process stopped by PID."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from conftest import Processes, RedisServer, start_beat, wait_for

SERVING = re.compile(r"http://127\.0\.0\.1:\d+/")


@dataclass
class Stack:
    server: RedisServer
    processes: Processes

    @property
    def schedule(self) -> redis.Redis:
        return self.server.client(0)

    def runs(self, label: str) -> int:
        """How many times the worker ran ``e2e_app.record(label)``."""
        return self.server.client(2).lrange("e2e:ran", 0, -1).count(label)

    def start_web(self, name: str, *options: str) -> str:
        """A ``redbeat web --port 0`` of the app; its address (ending in /) read from the line it prints."""
        self.processes.start(name, "redbeat", "web", "--port", "0", *options)
        process = self.processes.started[name]
        found = wait_for(lambda: process.poll() is None and SERVING.search(self.processes.log(name)),
                         timeout=30, message=f"{name} to serve")
        assert isinstance(found, re.Match)
        return found.group(0)

    def beat_holds_the_lock(self) -> bool:
        return bool(self.schedule.get("redbeat::lock"))


@contextlib.contextmanager
def running_stack(workdir: Path, env: dict) -> Iterator[Stack]:
    server = RedisServer(workdir / "redis")
    env = dict(env, E2E_REDBEAT_URL=server.url(0), E2E_BROKER_URL=server.url(1), E2E_RECORD_URL=server.url(2),
               E2E_LOCK_TIMEOUT="2", E2E_IMPORTS="redbeat.worker", PYTHONUNBUFFERED="1")
    try:
        with Processes(workdir, env) as processes:
            processes.start("worker", "worker", "-P", "solo", "-l", "info", "--without-gossip", "--without-mingle",
                            "--without-heartbeat")
            start_beat(processes, "beat")
            stack = Stack(server, processes)
            wait_for(stack.beat_holds_the_lock, timeout=30, message="beat to take the lock")
            yield stack
    finally:
        server.stop()
