"""RedBeat on real Redis deployments on loopback: Sentinel with a forced fail-over,
a three-master Redis Cluster, and TLS (rediss://)."""

from __future__ import annotations

import pytest
from celery.schedules import schedule
from conftest import make_app, published, tick_until
from topologies import ClusterSetup, SentinelSetup, TlsServer, make_certificates

from redbeat import RedBeatScheduler, RedBeatSchedulerEntry
from redbeat.config import ConfigurationError

pytestmark = pytest.mark.e2e

FAST = {"fast": {"task": "tasks.fast", "schedule": 0.2}}


def runs_of(app, name: str) -> int:
    return RedBeatSchedulerEntry.from_name(name, app=app).total_run_count


def test_beat_carries_on_through_a_sentinel_fail_over(tmp_path, redis_server, redis_url, broker_redis):
    setup = SentinelSetup(tmp_path)
    app = make_app(f"redis-sentinel://127.0.0.1:{setup.sentinels[0].port}/0", broker_url=redis_server.url(1),
                   redbeat_redis_options={"sentinels": setup.sentinel_addresses, "service_name": "mymaster"},
                   beat_schedule=FAST)
    scheduler = RedBeatScheduler(app=app)
    try:
        tick_until(scheduler, lambda: runs_of(app, "fast") >= 2, message="runs before the fail-over")
        old_master = setup.master_port()
        new_master = setup.failover()
        assert new_master != old_master
        before = len(published(broker_redis))
        tick_until(scheduler, lambda: len(published(broker_redis)) >= before + 3, timeout=15,
                   message="runs after the fail-over")
        # The schedule now lives on the promoted replica.
        assert new_master == setup.replica.port
        assert setup.replica.client().hexists("redbeat:fast", "meta")
        assert RedBeatSchedulerEntry.from_name("fast", app=app).total_run_count >= 5
    finally:
        scheduler.close()
        setup.stop()


def test_entries_save_claim_and_dispatch_on_a_redis_cluster(tmp_path, redis_server, redis_url, broker_redis):
    cluster = ClusterSetup(tmp_path)
    app = make_app(cluster.url(), broker_url=redis_server.url(1), redbeat_key_prefix="{redbeat}:",
                   beat_schedule=FAST)
    scheduler = RedBeatScheduler(app=app)
    try:
        RedBeatSchedulerEntry("dynamic", "tasks.dynamic", schedule(0.3), app=app).save()
        tick_until(scheduler, lambda: {"tasks.fast", "tasks.dynamic"} <= {m["task"] for m in published(broker_redis)},
                   message="both entries dispatched from the cluster")
        assert runs_of(app, "dynamic") >= 1
        # A member outside the prefix names a key of another slot: reading it from the
        # script would fail the whole tick. It is dropped, the key left alone.
        client = cluster.client()
        foreign = '{"name": "x", "task": "tasks.foreign", "schedule": {"__type__": "interval", "every": 1}}'
        client.hset("session:42", "definition", foreign)
        client.zadd("{redbeat}::schedule", {"session:42": 0})
        before = len(published(broker_redis))
        tick_until(scheduler, lambda: client.zscore("{redbeat}::schedule", "session:42") is None
                   and len(published(broker_redis)) > before, message="the foreign member dropped, runs going on")
        assert client.hgetall("session:42") == {"definition": foreign}
        assert "tasks.foreign" not in {m["task"] for m in published(broker_redis)}
        RedBeatSchedulerEntry.from_name("dynamic", app=app).delete()
        with pytest.raises(KeyError):
            RedBeatSchedulerEntry.from_name("dynamic", app=app)
    finally:
        scheduler.close()
        cluster.stop()


def test_a_cluster_without_a_hash_tag_prefix_is_refused_at_start():
    app = make_app("redis-cluster://127.0.0.1:7000")
    with pytest.raises(ConfigurationError, match=r"hash-tag prefix such as '\{redbeat\}:'"):
        RedBeatScheduler(app=app, lazy=True)


def test_tls_with_a_verified_server_certificate(tmp_path, redis_server, redis_url, broker_redis):
    server = TlsServer(tmp_path / "tls", make_certificates(tmp_path))
    app = make_app(f"rediss://127.0.0.1:{server.port}/0", broker_url=redis_server.url(1),
                   redbeat_redis_use_ssl={"ssl_cert_reqs": "required", "ssl_ca_certs": server.certs["ca.crt"]},
                   beat_schedule=FAST)
    scheduler = RedBeatScheduler(app=app)
    try:
        tick_until(scheduler, lambda: "tasks.fast" in {m["task"] for m in published(broker_redis)},
                   message="dispatch with the schedule on TLS")
        assert runs_of(app, "fast") >= 1
    finally:
        scheduler.close()
        server.stop()
