"""Real `celery beat` on RedBeat under sentry-sdk's Celery integration with beat
monitoring on: sentry-sdk 2.0 to 2.28 wraps ``RedBeatScheduler.maybe_due``,
later versions ``RedBeatScheduler.apply_async``. Either way beat starts, publishes,
and each run of a monitored entry sends one check-in to Sentry (here a local
HTTP server that records the envelopes) whose id the published task carries."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sentry_sdk
from celery.schedules import schedule
from conftest import ROOT, published, wait_for

from redbeat import RedBeatSchedulerEntry

OLD_SENTRY = "2.28.0"  # the last version that wraps maybe_due

APP = textwrap.dedent('''
    import os

    import sentry_sdk
    from celery import Celery
    from sentry_sdk.integrations.celery import CeleryIntegration

    sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], integrations=[CeleryIntegration(monitor_beat_tasks=True)])
    print("sentry-sdk", sentry_sdk.VERSION, flush=True)

    app = Celery("sentry_beat_app")
    app.conf.update(
        broker_url=os.environ["BROKER_URL"],
        redbeat_redis_url=os.environ["REDBEAT_URL"],
        redbeat_lock_timeout=5,
        beat_max_loop_interval=1,
        timezone="UTC",
        broker_connection_retry_on_startup=True,
        # Sentry Crons does not monitor intervals under a minute: runs, not check-ins.
        beat_schedule={"every-second": {"task": "sentry_beat_app.noop", "schedule": 1.0}},
    )


    @app.task
    def noop():
        pass
''')


class Envelopes(ThreadingHTTPServer):
    """Sentry's ingest endpoint, on loopback: keeps the items of every envelope posted."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EnvelopeHandler)
        self.items: list[tuple[dict, dict]] = []  # (item header, payload)

    def check_ins(self) -> list[dict]:
        return [payload for header, payload in list(self.items) if header.get("type") == "check_in"]


class _EnvelopeHandler(BaseHTTPRequestHandler):
    server: Envelopes

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.split(b"\n")
        # An envelope: its header, then each item's header and payload, a line each.
        for header_line, payload in zip(lines[1::2], lines[2::2]):
            header = json.loads(header_line)
            self.server.items.append((header, json.loads(payload) if payload.startswith(b"{") else {}))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def envelopes() -> Iterator[Envelopes]:
    server = Envelopes()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def old_sentry_path() -> str:
    """sentry-sdk 2.28, installed in .cache/ on its own: put first on PYTHONPATH, it takes the
    place of the suite's newer one, with the same Celery and this checkout."""
    target = ROOT / ".cache" / f"sentry-sdk-{OLD_SENTRY}"
    done = target / ".installed"
    if not done.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target",
                        str(target), f"sentry-sdk=={OLD_SENTRY}"], check=True, timeout=600, stdin=subprocess.DEVNULL)
        done.write_text(OLD_SENTRY)
    return str(target)


@pytest.fixture(params=["old", "current"])
def sentry_version(request) -> tuple[str, str | None]:
    """(version, directory to put first on PYTHONPATH) of the sentry-sdk beat runs under."""
    if request.param == "old":
        return OLD_SENTRY, request.getfixturevalue("old_sentry_path")
    return sentry_sdk.VERSION, None


def start_beat(tmp_path: Path, env: dict) -> subprocess.Popen:
    (tmp_path / "sentry_beat_app.py").write_text(APP)
    with open(tmp_path / "beat.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "sentry_beat_app", "beat", "-S", "redbeat",
                                 "-l", "info"],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_beat_under_sentry_monitoring_publishes_and_checks_in_once_per_run(
        tmp_path, app, redis_server, redis_url, broker_redis, project_env, envelopes, sentry_version):
    version, first_on_path = sentry_version
    # An entry of a minute (what Sentry Crons monitors), last run an hour ago: due at once.
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    RedBeatSchedulerEntry("every-minute", "sentry_beat_app.noop", schedule(60), app=app,
                          last_run_at=an_hour_ago).save()
    env = dict(project_env,
               SENTRY_DSN=f"http://public@127.0.0.1:{envelopes.server_port}/1",
               REDBEAT_URL=redis_url, BROKER_URL=redis_server.url(1), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = ":".join(filter(None, [first_on_path, str(tmp_path), env["PYTHONPATH"]]))
    beat = start_beat(tmp_path, env)
    try:
        wait_for(lambda: beat.poll() is not None or len(published(broker_redis)) >= 4, timeout=30,
                 message="beat publishing")
        wait_for(lambda: beat.poll() is not None or envelopes.check_ins(), timeout=30, message="a check-in")
        assert beat.poll() is None, "beat exited"
    finally:
        stop(beat)
        log = (tmp_path / "beat.log").read_text(errors="replace")
        print(log[-4000:])
    assert f"sentry-sdk {version}" in log
    assert "Traceback" not in log
    messages = published(broker_redis)
    monitored = [m for m in messages if m["headers"].get("sentry-monitor-slug") == "every-minute"]
    assert len(monitored) == 1
    assert len(messages) - len(monitored) >= 3  # the entry of every second, not monitored
    # One check-in per run, and the one the task carries: the hook ran once around the real send.
    [check_in] = envelopes.check_ins()
    assert check_in["monitor_slug"] == "every-minute"
    assert check_in["status"] == "in_progress"
    assert check_in["check_in_id"] == monitored[0]["headers"]["sentry-monitor-check-in-id"]
