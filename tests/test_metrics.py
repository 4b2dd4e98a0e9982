"""Beat's own Prometheus metrics (redbeat_metrics_port): scraped from a real beat on a
real redis-server, before and after known dispatches and failures; and the endpoint's
guards (loopback unless authenticated, the extra, a taken port)."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest
from conftest import entry_missing_its_argument, free_port, raw_entry, start_beat, tick_until, wait_for
from prometheus_client.parser import text_string_to_metric_families

from redbeat.config import ConfigurationError
from redbeat.decoder import meta_json
from redbeat.metrics import BeatMetrics, MissedReason
from redbeat.metricsserver import MetricsEndpoint, endpoint_from_settings, is_loopback, serve

# -- reading a scrape -------------------------------------------------------------------


def scrape(port: int, path: str = "/metrics", auth: str | None = None) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def try_scrape(port: int) -> dict | None:
    try:
        return samples(scrape(port))
    except (urllib.error.URLError, ConnectionError):
        return None


# -- a real beat ---------------------------------------------------------------------------

@pytest.fixture
def metrics_port(beats) -> int:
    port = free_port()
    beats.env["E2E_METRICS_PORT"] = str(port)
    return port


def test_a_real_beat_counts_its_dispatches_and_their_lateness(beats, metrics_port, schedule_server):
    schedule = schedule_server.client()
    start_beat(beats, "beat")
    before = wait_for(lambda: try_scrape(metrics_port), timeout=30, message="the metrics endpoint")
    wait_for(lambda: value(samples(scrape(metrics_port)), "redbeat_runs_published_total") >= 1, timeout=30,
             message="the static entry's first run counted")
    before = samples(scrape(metrics_port))
    # Three runs of a raw entry due now: counted as published, each with its lateness.
    for n in range(3):
        schedule.hset(f"redbeat:now-{n}", "definition", json.dumps({
            "name": f"now-{n}", "task": "e2e_app.record", "args": ["x"],
            "schedule": {"__type__": "interval", "every": 3600}}))
        schedule.zadd("redbeat::schedule", {f"redbeat:now-{n}": 0})
    wait_for(lambda: all(schedule.llen(f"redbeat::history:now-{n}") for n in range(3)), timeout=30,
             message="the three runs recorded")
    after = wait_for(lambda: (lambda s: s if value(s, "redbeat_dispatch_lateness_seconds_count")
                              - value(before, "redbeat_dispatch_lateness_seconds_count") >= 3 else None)(
        samples(scrape(metrics_port))), timeout=10, message="the lateness observed")
    published = value(after, "redbeat_runs_published_total") - value(before, "redbeat_runs_published_total")
    observed = (value(after, "redbeat_dispatch_lateness_seconds_count")
                - value(before, "redbeat_dispatch_lateness_seconds_count"))
    assert published == observed >= 3  # the static entry runs every second meanwhile
    # Score 0 means "due now": its slot is when beat read it, so each went out within a bucket of seconds.
    assert value(after, "redbeat_dispatch_lateness_seconds_bucket", le="5.0") - value(
        before, "redbeat_dispatch_lateness_seconds_bucket", le="5.0") == observed
    assert value(after, "redbeat_lock_held") == 1
    assert value(after, "redbeat_lock_acquisitions_total") == 1
    assert value(after, "redbeat_runs_given_up_total", **{"class": "bad-arguments"}) == 0
    assert value(after, "redbeat_tick_duration_seconds_count") > value(before, "redbeat_tick_duration_seconds_count")
    assert value(after, "redbeat_last_tick_timestamp_seconds") > 1.7e9
    assert scrape(metrics_port, "/healthz").startswith("ticking")


def test_a_run_that_can_never_publish_is_counted_given_up_on_its_first_attempt(beats, metrics_port,
                                                                              schedule_server):
    schedule = schedule_server.client()
    entry_missing_its_argument(schedule)
    start_beat(beats, "beat")
    wait_for(lambda: schedule.llen("redbeat::history:no-label") == 1, timeout=30, message="the run given up")
    scraped = wait_for(lambda: try_scrape(metrics_port), timeout=10, message="the metrics endpoint")
    assert value(scraped, "redbeat_runs_given_up_total", **{"class": "bad-arguments"}) == 1
    assert value(scraped, "redbeat_publish_failures_total", **{"class": "bad-arguments"}) == 1
    assert value(scraped, "redbeat_publish_failures_total", **{"class": "transient"}) == 0


def test_a_standby_beat_serves_its_metrics_without_the_lock(beats, schedule_server):
    active, standby = free_port(), free_port()
    beats.env["E2E_METRICS_PORT"] = str(active)
    start_beat(beats, "active")
    wait_for(lambda: (try_scrape(active) or {}).get(("redbeat_lock_held", ())) == 1, timeout=30,
             message="the first beat active")
    beats.env["E2E_METRICS_PORT"] = str(standby)
    start_beat(beats, "standby")
    scraped = wait_for(lambda: (lambda s: s if s and value(s, "redbeat_tick_duration_seconds_count") else None)(
        try_scrape(standby)), timeout=30, message="the standby ticking")
    assert value(scraped, "redbeat_lock_held") == 0
    assert value(scraped, "redbeat_lock_acquisitions_total") == 0
    assert "healthz" in scrape(standby, "/") and scrape(standby, "/healthz").startswith(("ticking", "starting"))


# -- in-process: what each event counts -----------------------------------------------------

def test_catch_up_misses_and_refused_claims_are_counted(scheduler_for, schedule_redis):
    port = free_port()
    scheduler = scheduler_for(redbeat_metrics_port=port)
    # An entry that missed 5 slots of a minute while beat was away: catch-up 'once' runs the newest.
    schedule_redis.hset("redbeat:behind", mapping={
        "definition": json.dumps({"name": "behind", "task": "tasks.behind",
                                  "schedule": {"__type__": "interval", "every": 60}}),
        "meta": meta_json(datetime.fromtimestamp(schedule_redis.time()[0] - 330, timezone.utc), 1)})
    schedule_redis.zadd("redbeat::schedule", {"redbeat:behind": 1})
    tick_until(scheduler, lambda: schedule_redis.llen("redbeat::history:behind"), message="the catch-up run")
    scraped = samples(scrape(port))
    assert value(scraped, "redbeat_runs_missed_total", reason=MissedReason.CATCH_UP) == 4
    assert value(scraped, "redbeat_runs_published_total") == 1


def test_entry_labels_only_when_asked_for(scheduler_for, schedule_redis):
    port = free_port()
    scheduler = scheduler_for(redbeat_metrics_port=port, redbeat_metrics_entry_labels=True)
    raw_entry(schedule_redis, name="labelled")
    tick_until(scheduler, lambda: schedule_redis.llen("redbeat::history:labelled"), message="its first run")
    assert value(samples(scrape(port)), "redbeat_runs_published_total", entry="redbeat:labelled") == 1


def test_no_port_no_server_and_a_no_op_sink(scheduler_for):
    scheduler = scheduler_for()
    assert type(scheduler.metrics) is BeatMetrics


def test_a_taken_port_costs_the_metrics_not_the_beat(scheduler_for, schedule_redis, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        scheduler = scheduler_for(redbeat_metrics_port=taken.getsockname()[1])
        raw_entry(schedule_redis, name="still-runs")
        assert type(scheduler.metrics) is BeatMetrics
        assert "not serving metrics: cannot listen" in caplog.text
        tick_until(scheduler, lambda: schedule_redis.llen("redbeat::history:still-runs"), message="a run anyway")


# -- the endpoint's guards ----------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "beat.example.com"])
def test_listening_beyond_loopback_needs_credentials(host):
    with pytest.raises(ConfigurationError, match="without authentication"):
        MetricsEndpoint(port=9100, host=host)
    assert MetricsEndpoint(port=9100, host=host, auth="prometheus:s3cret").host == host


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "192.168.1.1", "example.com"))


def test_the_credentials_never_show_in_the_endpoint_repr():
    assert "s3cret" not in repr(MetricsEndpoint(port=1, auth="u:s3cret"))


class Settings:
    def __init__(self, **values):
        self.values = values

    def either_or(self, name, default=None):
        return self.values.get(name, default)


@pytest.mark.parametrize("port", [None, 0, "", "0"])
def test_the_port_setting_unset_or_zero_is_off(port):
    assert endpoint_from_settings(Settings(redbeat_metrics_port=port)) is None


def test_a_port_that_is_no_number_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="redbeat_metrics_port"):
        endpoint_from_settings(Settings(redbeat_metrics_port="ninety"))


def test_basic_authentication_when_set():
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("redbeat_probe", "a test counter", registry=registry).inc()
    server = serve(registry, MetricsEndpoint(port=0, auth="prometheus:s3cret"), lambda: (False, "stalled: test"))
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(server.port)
        assert refused.value.code == 401
        with pytest.raises(urllib.error.HTTPError):
            scrape(server.port, auth="prometheus:wrong")
        assert "redbeat_probe_total 1.0" in scrape(server.port, auth="prometheus:s3cret")
        with pytest.raises(urllib.error.HTTPError) as stalled:
            scrape(server.port, "/healthz", auth="prometheus:s3cret")
        assert stalled.value.code == 503
    finally:
        server.close()
