"""Edges of the observability work found in review, each once a bug: the metrics password in
Celery's reports, idle connections to the metrics server, a former active beat's backlog,
credentials of the wrong type, probes of a silent Cluster, a failed tick's traceback.
Real redis-server, real processes."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import free_port, make_app, raw_entry, tick_until
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

import redbeat  # noqa: F401  (what hides RedBeat's secret settings from Celery's reports)
from redbeat.lock import BeatLock
from redbeat.metricsserver import MetricsEndpoint, serve

# A Python interpreter that imports Celery takes a while to start (as in tests/test_probes.py).
STARTUP = 1.5


def scrape(port: int) -> dict[str, float]:
    """The unlabelled samples of beat's endpoint, by name."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}


# -- secrets ------------------------------------------------------------------------------------

def test_the_metrics_password_is_masked_where_celery_shows_the_settings():
    app = make_app("redis://127.0.0.1:6379/0", redbeat_metrics_port=9639,
                   redbeat_metrics_auth="prometheus:a-long-secret")
    shown = app.conf.humanize(with_defaults=False, censored=True)
    assert "redbeat_redis_url" in shown  # the report does list RedBeat's settings
    assert "a-long-secret" not in shown, shown


# -- the metrics server -------------------------------------------------------------------------

def test_a_connection_that_never_sends_a_request_is_closed_by_the_metrics_server():
    registry = CollectorRegistry()
    Counter("redbeat_example", "a counter", registry=registry).inc()
    server = serve(registry, MetricsEndpoint(port=0, auth="prometheus:secret"))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
            idle.settimeout(15.0)  # far longer than a scrape or a sane server read timeout
            try:
                closed = idle.recv(1024) == b""
            except (socket.timeout, TimeoutError):
                closed = False
        assert closed, "the server still holds an idle connection (and its thread) after 15 s"
    finally:
        server.close()


# -- beat's gauges on a standby ------------------------------------------------------------------

def test_a_beat_that_lost_the_lock_serves_no_backlog_of_its_own(scheduler_for, schedule_redis):
    port = free_port()
    scheduler = scheduler_for(redbeat_metrics_port=port, redbeat_claim_batch_size=1, redbeat_lock_timeout=5)
    for n in range(30):  # more than the 20 batches of one claim each that a tick reads
        raw_entry(schedule_redis, name=f"due-{n}")
    scheduler.tick()
    active = scrape(port)
    assert active["redbeat_lock_held"] == 1 and active["redbeat_due_backlog"] > 0
    # Another beat takes the lock (this one stalled past its lock timeout, say).
    schedule_redis.delete("redbeat::lock")
    assert BeatLock(scheduler.store.client, "redbeat::lock", 5, "other:1:x").acquire()
    tick_until(scheduler, lambda: not scheduler.lock.held, message="the lock lost")
    scheduler.tick()  # standing by now
    standby = scrape(port)
    assert standby["redbeat_lock_held"] == 0 and standby["redbeat_lock_losses_total"] == 1
    assert standby["redbeat_due_backlog"] == 0, "a standby reads no schedule, yet serves a backlog"


# -- bad settings -------------------------------------------------------------------------------

def test_credentials_given_as_bytes_cost_the_metrics_not_the_beat(scheduler_for, schedule_redis):
    scheduler = scheduler_for(redbeat_metrics_port=free_port(), redbeat_metrics_auth=b"prometheus:secret")
    raw_entry(schedule_redis, name="still-runs")
    tick_until(scheduler, lambda: schedule_redis.llen("redbeat::history:still-runs"), message="a run anyway")


# -- probes bounded as a whole ------------------------------------------------------------------

@pytest.fixture
def silent_ports():
    """Five TCP listeners on 127.0.0.1 that accept connections and never answer."""
    script = textwrap.dedent("""
        import select, socket
        servers = []
        for _ in range(5):
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen(100)
            servers.append(server)
        print(" ".join(str(s.getsockname()[1]) for s in servers), flush=True)
        held = []
        while True:
            ready, _, _ = select.select(servers, [], [])
            held += [server.accept()[0] for server in ready]
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        yield [int(port) for port in process.stdout.readline().split()]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("probe", ["status", "liveness"])
def test_a_probe_of_a_cluster_whose_nodes_never_answer_ends_within_its_timeout(silent_ports, project_env,
                                                                             tmp_path, probe):
    first, *others = silent_ports
    nodes = ", ".join(f'{{"host": "127.0.0.1", "port": {port}}}' for port in others)
    (tmp_path / "clusterconf.py").write_text(textwrap.dedent(f"""
        from celery import Celery
        app = Celery("clusterconf")
        app.conf.update(broker_url="memory://", redbeat_redis_url="redis-cluster://127.0.0.1:{first}/0",
                        redbeat_key_prefix="{{redbeat}}:", redbeat_redis_options={{"startup_nodes": [{nodes}]}})
    """))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "clusterconf", "redbeat", probe, "--timeout", "1"],
                            cwd=tmp_path, env=project_env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 4 and "Traceback" not in result.stderr, result.stderr
    assert took < 1 + STARTUP, f"a probe with --timeout 1 took {took:.1f}s"


# -- a failed tick's log -------------------------------------------------------------------------

def test_a_failed_tick_logs_no_password_from_the_exception_text(scheduler_for, caplog):
    scheduler = scheduler_for()

    def unexpected() -> None:
        raise ValueError("cannot use the transport amqp://beat:hunter2@broker.example:5672//")
    scheduler._build_ticker = unexpected  # any unexpected error of a tick
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        scheduler.tick()
    assert "<url>" in caplog.text  # the message itself is masked
    assert "hunter2" not in caplog.text, caplog.text
