"""What code written against celery-redbeat 2.x imports and sets keeps working:
every public name of 2.x's modules, a client set on ``app.redbeat_redis``, "no
limit" values in entry options, and the broker's Sentinel and TLS settings."""

from __future__ import annotations

import importlib
import json
import shutil
import ssl
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import fakeredis
import pytest
import redis
from click.testing import CliRunner
from conftest import RAW_DEFINITION, ROOT, make_app, published, tasks_sent, tick_until
from redis.cluster import RedisCluster

from redbeat import RedBeatScheduler, RedBeatSchedulerEntry
from redbeat.cli import redbeat as redbeat_cli
from redbeat.client import build_client, bytes_twin, get_redis, get_store
from redbeat.config import MAX_CATCH_UP, ConfigurationError, ensure_conf
from redbeat.decoder import meta_json

# -- the names of 2.x's public modules: the contract -------------------------------------

# Every module-level name of celery-redbeat 2.4.2's public modules (its private
# helpers, with a leading underscore, aside), by the path 2.x had them at.
NAMES_2X = {
    "redbeat": ["RedBeatScheduler", "RedBeatSchedulerEntry"],
    "redbeat.schedulers": [
        "json", "ssl", "warnings", "MINYEAR", "datetime", "Any", "redis", "app_or_default", "DEFAULT_MAX_INTERVAL",
        "ScheduleEntry", "Scheduler", "beat_init", "get_logger", "humanize_seconds", "cached_property",
        "maybe_sanitize_url", "Redis", "MasterNotFoundError", "Sentinel", "retry", "retry_if_exception_type",
        "stop_after_delay", "wait_exponential", "RedBeatJSONDecoder", "RedBeatJSONEncoder", "to_timestamp", "logger",
        "LUA_EXTEND_TO_SCRIPT", "REDBEAT_REDIS_KEY", "REDBEAT_SENTINEL_KEY", "RetryingConnection", "ensure_conf",
        "REDBEAT_INTERNAL_OPTIONS", "get_redis", "ADD_ENTRY_ERROR", "RedBeatConfig", "RedBeatSchedulerEntry",
        "RedBeatScheduler", "acquire_distributed_beat_lock",
    ],
    "redbeat.decoder": [
        "calendar", "json", "datetime", "timedelta", "timezone", "crontab", "schedule", "weekday", "zoneinfo",
        "rrule", "to_timestamp", "get_utcoffset_minutes", "from_timestamp", "RedBeatJSONDecoder",
        "RedBeatJSONEncoder",
    ],
    "redbeat.schedules": [
        "schedule", "schedstate", "DAILY", "HOURLY", "MINUTELY", "MONTHLY", "SECONDLY", "WEEKLY", "YEARLY",
        "dateutil_rrule", "rrule",
    ],
}
# Names whose 2.x meaning is gone: each warns, saying what RedBeat does instead.
DEPRECATED = {
    "redbeat.schedulers": {"LUA_EXTEND_TO_SCRIPT", "REDBEAT_SENTINEL_KEY", "RetryingConnection", "retry",
                           "retry_if_exception_type", "stop_after_delay", "wait_exponential"},
}
# 2.x's re-exports of tenacity, which RedBeat does not depend on.
TENACITY = {"retry", "retry_if_exception_type", "stop_after_delay", "wait_exponential"}


def _tenacity_installed() -> bool:
    return importlib.util.find_spec("tenacity") is not None


@pytest.mark.parametrize("module_name, name", [(m, n) for m, names in NAMES_2X.items() for n in names])
def test_every_public_name_of_2x_imports_from_its_2x_path(module_name, name):
    module = importlib.import_module(module_name)
    deprecated = name in DEPRECATED.get(module_name, set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if name in TENACITY and not _tenacity_installed():
            with pytest.raises(AttributeError, match="import it from tenacity"):
                getattr(module, name)
        else:
            exec(f"from {module_name} import {name}", {})  # the statement 2.x users wrote
    ours = [w for w in caught if issubclass(w.category, DeprecationWarning) and "redbeat" in str(w.message)]
    if deprecated:
        assert ours and f"{module_name}.{name} is deprecated: " in str(ours[0].message)
        assert "redbeat/" not in ours[0].filename  # points at the importing line, not at RedBeat
    else:
        assert not ours, [str(w.message) for w in ours]


def test_aliases_are_the_real_things_under_their_new_names():
    import celery.schedules
    import dateutil.rrule

    import redbeat.decoder
    import redbeat.schedulers
    import redbeat.schedules
    assert redbeat.schedulers.RedBeatJSONEncoder is redbeat.decoder.RedBeatJSONEncoder
    assert redbeat.schedulers.to_timestamp is redbeat.decoder.to_timestamp
    assert redbeat.schedulers.redis is redis and redbeat.schedulers.Redis is redis.Redis
    assert redbeat.schedules.schedule is celery.schedules.BaseSchedule  # 2.x's meaning, not Celery's interval
    assert redbeat.schedules.dateutil_rrule is dateutil.rrule.rrule and redbeat.schedules.DAILY == dateutil.rrule.DAILY
    assert set(redbeat.schedulers.REDBEAT_INTERNAL_OPTIONS) == {
        "retry_period", "cluster", "sentinels", "service_name", "sentinel_kwargs", "startup_nodes"}
    assert redbeat.schedulers.ADD_ENTRY_ERROR % ("n", "e", "c")  # 2.x's three arguments
    with pytest.raises(AttributeError):
        redbeat.schedulers.no_such_name  # noqa: B018


def test_importing_the_2x_modules_warns_nothing():
    code = "import redbeat, redbeat.schedulers, redbeat.decoder, redbeat.schedules"
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning:redbeat", "-c", code],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_lock_extend_script_of_2x_extends_a_redis_py_lock_to_a_fixed_expiry(schedule_redis):
    with pytest.warns(DeprecationWarning, match="renews itself"):
        from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT
    lock = schedule_redis.lock("redbeat::lock", timeout=60)
    lock.lua_extend = schedule_redis.register_script(LUA_EXTEND_TO_SCRIPT)  # as 2.x's beat_init handler did
    assert lock.acquire(blocking=False)
    lock.extend(5)  # 2.x's meaning: expire 5 s from now, not 65
    assert 4000 < schedule_redis.pttl("redbeat::lock") <= 5000
    other = schedule_redis.lock("redbeat::lock", timeout=60)
    other.lua_extend = lock.lua_extend
    other.local.token = b"not-the-owner"
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        other.extend(30)


def test_retrying_connection_warns_and_delegates_to_the_client(schedule_redis):
    with pytest.warns(DeprecationWarning, match="without retrying"):
        from redbeat.schedulers import RetryingConnection
    wrapped = RetryingConnection(10, schedule_redis)
    wrapped.set("k", "v")
    assert wrapped.get("k") == "v" and wrapped.wrapped_connection is schedule_redis


def test_retry_period_warns_that_it_has_no_effect(caplog):
    app = make_app("redis://localhost/0", redbeat_redis_options={"retry_period": 60})
    with pytest.warns(DeprecationWarning, match="'retry_period' has no effect"):
        ensure_conf(app)
    assert "retry_period" in caplog.text


def test_redbeat_config_keeps_2x_attribute_names():
    conf = ensure_conf(make_app("redis://localhost/0", redbeat_redis_options={"socket_timeout": 3}))
    assert conf.redbeat_redis_options == {"socket_timeout": 3}
    assert conf.is_key_in_conf("redbeat_redis_url") and conf.is_key_in_conf("REDBEAT_REDIS_URL")
    assert not conf.is_key_in_conf("redbeat_key_prefix")


# -- a client set on app.redbeat_redis ---------------------------------------------------

def test_a_client_set_on_the_app_serves_every_read_and_write(app, schedule_server, schedule_redis, broker_redis):
    """The app's URL names the session's server; the injected client another one: all goes there."""
    elsewhere = schedule_server.client()
    app.redbeat_redis = redis.Redis(port=schedule_server.port, decode_responses=True)
    assert get_redis(app) is app.redbeat_redis
    entry = RedBeatSchedulerEntry("injected", "tasks.injected", 3600.0, app=app).save()
    entry.run_now()  # saved from Python, it ran "now": ask for a run at the next tick
    assert elsewhere.hexists("redbeat:injected", "definition")
    assert RedBeatSchedulerEntry.from_key(entry.key, app=app).task == "tasks.injected"
    app.conf.beat_schedule = {}
    scheduler = RedBeatScheduler(app=app)
    try:
        tick_until(scheduler, lambda: "tasks.injected" in tasks_sent(broker_redis), message="the injected entry sent")
        assert elsewhere.exists("redbeat::heartbeat") and elsewhere.exists("redbeat::lock")
    finally:
        scheduler.close()
    listed = CliRunner().invoke(redbeat_cli, ["list", "--json"], obj=SimpleNamespace(app=app), catch_exceptions=False)
    assert "injected" in [item["name"] for item in json.loads(listed.output)]
    assert schedule_redis.keys("redbeat*") == []  # nothing on the server of the URL


def test_the_store_follows_a_client_replaced_on_the_app(app, schedule_server, schedule_redis):
    RedBeatSchedulerEntry("before", "tasks.t", 60.0, app=app).save()
    first = get_store(app)
    get_redis(app)  # the client get_redis builds from the settings is no injection
    assert get_store(app) is first
    app.redbeat_redis = redis.Redis(port=schedule_server.port)  # bytes already: used as it is
    assert get_store(app).client is app.redbeat_redis
    RedBeatSchedulerEntry("after", "tasks.t", 60.0, app=app).save()
    assert schedule_server.client().exists("redbeat:after") and schedule_redis.exists("redbeat:before")
    assert not schedule_redis.exists("redbeat:after")


def test_a_fakeredis_client_set_on_the_app_saves_loads_and_ticks():
    app = make_app(None, broker_url="memory://")  # no Redis URL at all: the client is enough
    app.redbeat_redis = fakeredis.FakeStrictRedis(server=fakeredis.FakeServer(), decode_responses=True)
    entry = RedBeatSchedulerEntry("fake", "tasks.fake", 3600.0, app=app).save()
    entry.run_now()
    assert json.loads(app.redbeat_redis.hget(entry.key, "definition"))["task"] == "tasks.fake"
    assert RedBeatSchedulerEntry.from_key(entry.key, app=app).name == "fake"
    scheduler = RedBeatScheduler(app=app)
    try:
        tick_until(scheduler, lambda: RedBeatSchedulerEntry.from_key(entry.key, app=app).total_run_count == 1,
                   message="the fakeredis entry run")
    finally:
        scheduler.close()


def test_a_client_that_answers_in_text_and_cannot_be_twinned_is_refused_clearly():
    conf = ensure_conf(make_app("redis://localhost/0"))

    class Decoding:
        def get_encoder(self):
            return SimpleNamespace(decode_responses=True)

    class Raw:
        def get_encoder(self):
            return SimpleNamespace(decode_responses=False)

    with pytest.raises(ConfigurationError, match="answers in text.*decode_responses=False"):
        bytes_twin(Decoding(), conf)
    raw = Raw()
    assert bytes_twin(raw, conf) is raw


def test_a_cluster_client_on_the_app_needs_a_hash_tag_prefix():
    cluster = object.__new__(RedisCluster)  # never connects: refused before
    with pytest.raises(ConfigurationError, match="hash-tag prefix"):
        bytes_twin(cluster, ensure_conf(make_app("redis://localhost/0")))


def test_the_twin_of_a_sentinel_client_keeps_its_master_and_credentials():
    app = make_app("redis-sentinel://127.0.0.1:26379/3",
                   redbeat_redis_options={"sentinels": [("127.0.0.1", 26379)], "service_name": "mymaster",
                                          "password": "pw"})
    text_client = build_client(ensure_conf(app), decode_responses=True)
    twin = bytes_twin(text_client, ensure_conf(app))
    pool = twin.connection_pool
    assert pool.service_name == "mymaster" and pool.sentinel_manager is text_client.connection_pool.sentinel_manager
    assert pool.connection_kwargs["password"] == "pw" and pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["decode_responses"] is False


# -- "no limit" values in the options of an entry, decided by a real tick ------------------

def _raw(schedule_redis, name, schedule=None, meta=None, **fields):
    """An entry written as another program would, with HSET and ZADD (due now)."""
    definition = json.loads(RAW_DEFINITION) | {"name": name, "task": f"tasks.{name}"}
    if schedule is not None:
        definition["schedule"] = schedule
    schedule_redis.hset(f"redbeat:{name}", "definition", json.dumps(definition | fields))
    if meta is not None:
        schedule_redis.hset(f"redbeat:{name}", "meta", meta)
    schedule_redis.zadd("redbeat::schedule", {f"redbeat:{name}": 0})


def _parked(schedule_redis, name):
    parked = schedule_redis.hget(f"redbeat:{name}", "parked")
    return json.loads(parked)["reason"] if parked else None


NONE_VALUES = [
    ("catch_up", None), ("catch_up_max", None), ("catch_up_max", -1), ("starting_deadline", None),
    ("starting_deadline", -1), ("starting_deadline", 0), ("start_at", None), ("end_at", None), ("max_runs", None),
    ("max_runs", -1), ("on_finish", None), ("jitter", None), ("jitter", 0),
]


@pytest.mark.parametrize("field, value", NONE_VALUES)
def test_none_values_of_every_option_are_accepted_and_the_entry_runs(scheduler_for, schedule_redis, broker_redis,
                                                                    field, value):
    _raw(schedule_redis, "opt", **{field: value})
    scheduler = scheduler_for()
    tick_until(scheduler, lambda: tasks_sent(broker_redis) == ["tasks.opt"], message="the entry sent")
    assert _parked(schedule_redis, "opt") is None


@pytest.mark.parametrize("kind", ["crontab", "rrule"])
@pytest.mark.parametrize("zone", [None, ""])
def test_a_schedule_timezone_of_null_or_empty_means_none_of_its_own(scheduler_for, schedule_redis, kind, zone):
    schedule = ({"__type__": "crontab", "minute": "*", "timezone": zone} if kind == "crontab" else
                {"__type__": "rrule", "freq": "MINUTELY", "dtstart": time.time() - 30, "timezone": zone})
    _raw(schedule_redis, "zoned", schedule=schedule)
    scheduler = scheduler_for()
    scheduler.tick()
    assert _parked(schedule_redis, "zoned") is None
    assert schedule_redis.zscore("redbeat::schedule", "redbeat:zoned") > time.time()  # its next minute


def _ran_at(seconds_ago: float) -> str:
    return meta_json(datetime.now(timezone.utc) - timedelta(seconds=seconds_ago), 1)


@pytest.mark.parametrize("value", [-1, 0])
def test_a_starting_deadline_of_minus_one_or_zero_lifts_the_settings_deadline(scheduler_for, schedule_redis,
                                                                             broker_redis, value):
    every = {"__type__": "interval", "every": 3600}
    _raw(schedule_redis, "strict", schedule=every, meta=_ran_at(5400))  # its slot is 30 minutes late
    _raw(schedule_redis, "lifted", schedule=every, meta=_ran_at(5400), starting_deadline=value)
    scheduler = scheduler_for(redbeat_starting_deadline=60)
    tick_until(scheduler, lambda: schedule_redis.hget("redbeat:strict", "status"), message="both decided")
    assert tasks_sent(broker_redis) == ["tasks.lifted"]
    assert json.loads(schedule_redis.hget("redbeat:strict", "status"))["missed"] == 1


def test_catch_up_max_minus_one_replays_every_missed_slot_up_to_the_cap(scheduler_for, schedule_redis,
                                                                      broker_redis):
    every = {"__type__": "interval", "every": 60}
    _raw(schedule_redis, "all", schedule=every, meta=_ran_at(150 * 60 + 30), catch_up="all", catch_up_max=-1)
    scheduler = scheduler_for()
    tick_until(scheduler, lambda: len(published(broker_redis)) >= 150, message="150 slots replayed")
    assert len(published(broker_redis)) == 150  # more than the default 100
    entry = RedBeatSchedulerEntry.from_key("redbeat:all", app=scheduler.app)
    assert entry.policy().catch_up_max == MAX_CATCH_UP


def test_max_runs_minus_one_never_ends_the_entry(scheduler_for, schedule_redis, broker_redis):
    _raw(schedule_redis, "forever", meta=meta_json(None, 10**6), max_runs=-1)
    scheduler = scheduler_for()
    tick_until(scheduler, lambda: tasks_sent(broker_redis) == ["tasks.forever"], message="sent")
    assert json.loads(schedule_redis.hget("redbeat:forever", "definition")).get("enabled", True) is True


@pytest.mark.parametrize("field, value, words", [
    ("max_runs", 0, "could mean never or no limit"),
    ("catch_up", False, "'catch_up' must be one of"),
    ("catch_up", True, "'catch_up' must be one of"),
    ("jitter", -1, "'jitter' must be a number of seconds from 0"),
    ("catch_up_max", -2, "-1 or null: no limit of its own"),
])
def test_truly_ambiguous_option_values_are_parked_with_the_reason(scheduler_for, schedule_redis, broker_redis,
                                                                 field, value, words):
    _raw(schedule_redis, "vague", **{field: value})
    scheduler_for().tick()
    assert words in _parked(schedule_redis, "vague")
    assert tasks_sent(broker_redis) == []


@pytest.mark.parametrize("value, read", [(-1, MAX_CATCH_UP), ("-1", MAX_CATCH_UP), (None, 100)])
def test_the_catch_up_max_setting_takes_minus_one_for_no_limit(value, read):
    assert ensure_conf(make_app("redis://x/1", redbeat_catch_up_max=value)).catch_up_max == read


@pytest.mark.parametrize("value", [-1, "-1", 0, None])
def test_the_starting_deadline_setting_takes_minus_one_and_zero_for_none(value):
    assert ensure_conf(make_app("redis://x/1", redbeat_starting_deadline=value)).starting_deadline is None


# -- the broker's Sentinel credentials and TLS files ---------------------------------------

def test_sentinel_credentials_in_broker_transport_options_reach_the_master_connection():
    # A Sentinel set-up with passwords takes five servers; the client's connection
    # settings are what 2.x passed on, and what redis-py authenticates with.
    app = make_app(None, broker_url="redis-sentinel://127.0.0.1:26379/0",
                   broker_transport_options={"sentinels": [("127.0.0.1", 26379)], "service_name": "mymaster",
                                             "username": "beat", "password": "s3cret", "visibility_timeout": 3600})
    kwargs = build_client(ensure_conf(app), decode_responses=True).connection_pool.connection_kwargs
    assert kwargs["username"] == "beat" and kwargs["password"] == "s3cret"
    assert "visibility_timeout" not in kwargs


def test_broker_credentials_are_not_taken_for_a_plain_url_of_redbeats_own():
    app = make_app("redis://127.0.0.1:6379/0", broker_url="redis://127.0.0.1:6379/1",
                   broker_transport_options={"password": "broker-only"})
    kwargs = build_client(ensure_conf(app), decode_responses=True).connection_pool.connection_kwargs
    assert kwargs.get("password") is None


@pytest.fixture
def tls_server(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    from topologies import TlsServer, make_certificates
    server = TlsServer(tmp_path / "tls", make_certificates(tmp_path))
    yield server
    server.stop()


def test_tls_files_in_broker_use_ssl_apply_to_a_rediss_url(tls_server):
    ca = tls_server.certs["ca.crt"]
    app = make_app(f"rediss://127.0.0.1:{tls_server.port}/0", broker_url="memory://",
                   broker_use_ssl={"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": ca},
                   beat_schedule={"s": {"task": "tasks.s", "schedule": 60.0}})
    scheduler = RedBeatScheduler(app=app)
    try:
        scheduler.tick()
        assert scheduler.health.failing_since is None  # the tick reached the server and trusted it
    finally:
        scheduler.close()
    direct = redis.Redis(port=tls_server.port, ssl=True, ssl_ca_certs=ca, decode_responses=True)
    assert direct.sismember("redbeat::statics", "s")
