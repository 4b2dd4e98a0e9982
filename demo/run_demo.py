"""The RedBeat demo: a throwaway redis-server, a Celery worker and beat, the web
dashboard on a free loopback port (its address printed), and a task added with raw
redis-cli commands while beat runs.

Run it with ./run.sh demo [--seconds N]. Everything it starts listens on
127.0.0.1 only and is stopped, by PID, when the demo ends.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
RAW_ENTRY = (
    '{"name": "from-redis-cli", "task": "demo.tasks.greet",'
    ' "schedule": {"__type__": "interval", "every": 3},'
    ' "args": ["an entry added with redis-cli while beat runs"]}'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What the demo echoes of the worker's and beat's logs; the dashboard's few lines are all shown.
SHOWN = ("TASK RAN", "Sending due task", "lock", "redis ->", "ERROR")
DASHBOARD_URL = re.compile(r"http://127\.0\.0\.1:\d+/")


def stream(prefix: str, process: subprocess.Popen, shown: tuple[str, ...], urls: queue.Queue | None) -> None:
    for line in process.stdout:
        text = line.rstrip()
        if any(word in text for word in shown):
            print(f"{prefix} {text}", flush=True)
        found = DASHBOARD_URL.search(text)
        if found and urls is not None:
            urls.put(found.group(0))


def start(prefix: str, args: list[str], env: dict, processes: list, shown: tuple[str, ...] = SHOWN,
          urls: queue.Queue | None = None) -> subprocess.Popen:
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    processes.append(process)
    threading.Thread(target=stream, args=(prefix, process, shown, urls), daemon=True).start()
    return process


def start_dashboard(celery: list[str], env: dict, processes: list) -> None:
    """``celery redbeat web`` on a free port (the app's tasks known), and its address said plainly."""
    urls: queue.Queue = queue.Queue()
    process = start("[web]   ", celery + ["redbeat", "web", "--port", "0"], env, processes, ("",), urls)
    deadline = time.monotonic() + 30
    while True:
        try:
            url = urls.get(timeout=0.1)
            break
        except queue.Empty:
            if process.poll() is not None or time.monotonic() > deadline:
                print("==> the dashboard did not start (see [web] above); the demo goes on without it", flush=True)
                return
    print(f"==> the dashboard: open {url} (until the demo ends; --seconds N for longer)", flush=True)


def wait_for_redis(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port).ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30, help="how long to run (default 30)")
    options = parser.parse_args()

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="redbeat-demo-"))
    processes: list[subprocess.Popen] = []
    env = dict(os.environ)
    env.update(
        DEMO_REDIS_URL=f"redis://127.0.0.1:{port}/1",
        DEMO_BROKER_URL=f"redis://127.0.0.1:{port}/0",
        DEMO_RECORD_URL=f"redis://127.0.0.1:{port}/2",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    celery = [sys.executable, "-m", "celery", "--config", "exampleconf"]
    try:
        print(f"==> redis-server on 127.0.0.1:{port} (data in {workdir})", flush=True)
        processes.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_redis(port)
        print("==> celery worker and celery beat -S redbeat", flush=True)
        start("[worker]", celery + ["worker", "-P", "solo", "-l", "info"], env, processes)
        start("[beat]  ", celery + ["beat", "-S", "redbeat", "-l", "info",
                                     "--schedule", str(workdir / "unused")], env, processes)
        start_dashboard(celery, env, processes)
        time.sleep(min(8, options.seconds / 3))
        print("==> adding an entry from outside Python, with raw redis-cli:", flush=True)
        cli = ["redis-cli", "-p", str(port), "-n", "1"]
        for command in (["HSET", "redbeat:from-redis-cli", "definition", RAW_ENTRY],
                        ["ZADD", "redbeat::schedule", "0", "redbeat:from-redis-cli"]):
            print("    $ " + " ".join(command[:3]) + (" '...'" if command[0] == "HSET" else f" {command[3]}"),
                  flush=True)
            subprocess.run(cli + command, check=True, stdout=subprocess.DEVNULL)
        time.sleep(max(options.seconds - 8, 5))
        ran = [entry.decode().split(" ", 1)[1] for entry in redis.Redis(port=port, db=2).lrange("demo:ran", 0, -1)]
        print("==> tasks executed by the worker, per entry:")
        for who, count in Counter(ran).most_common():
            print(f"    {count:3d}  {who}")
        return 0 if any("redis-cli" in who for who in ran) else 1
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
