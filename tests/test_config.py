"""Settings and client building: unit tests (no Redis contacted), a TLS
connection to a real redis-server, and what ``celery report`` shows."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import sys

import pytest
import redis
from conftest import free_port, make_app

from redbeat.client import build_client, display_url, get_redis
from redbeat.config import DEFAULT_LOCK_TIMEOUT, MAX_CATCH_UP, ConfigurationError, ensure_conf
from redbeat.schedulers import RedBeatScheduler


def test_defaults_match_the_data_contract():
    conf = ensure_conf(make_app("redis://localhost:6379/1"))
    assert conf.key_prefix == "redbeat:"
    assert conf.schedule_key == "redbeat::schedule"
    assert conf.statics_key == "redbeat::statics"
    assert conf.lock_key == "redbeat::lock"
    assert conf.lock_timeout == DEFAULT_LOCK_TIMEOUT == 10.0


def test_old_upper_case_settings_are_read():
    app = make_app(None, REDBEAT_REDIS_URL="redis://h:1/2", REDBEAT_KEY_PREFIX="rb:",
                   REDBEAT_LOCK_TIMEOUT=30, REDBEAT_REDIS_OPTIONS={"socket_timeout": 2})
    conf = ensure_conf(app)
    assert conf.redis_url == "redis://h:1/2"
    assert conf.key_prefix == "rb:"
    assert conf.schedule_key == "rb::schedule"
    assert conf.lock_key == "rb::lock"
    assert conf.lock_timeout == 30
    assert conf.redis_options == {"socket_timeout": 2}


def test_lower_case_wins_over_upper_case():
    app = make_app("redis://lower/1", REDBEAT_REDIS_URL="redis://upper/1")
    assert ensure_conf(app).redis_url == "redis://lower/1"


def test_lock_key_none_disables_the_lock():
    for name in ("redbeat_lock_key", "REDBEAT_LOCK_KEY"):
        app = make_app("redis://localhost/1", **{name: None})
        assert ensure_conf(app).lock_key is None


def test_lock_key_without_the_prefix_gets_it():
    assert ensure_conf(make_app("redis://x/1", redbeat_lock_key="mylock")).lock_key == "redbeat:mylock"
    assert ensure_conf(make_app("redis://x/1", redbeat_lock_key="redbeat:own")).lock_key == "redbeat:own"


def test_redis_broker_is_the_fallback_with_a_warning(caplog):
    app = make_app(None, broker_url="redis://:secret@broker:6379/0")
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        conf = ensure_conf(app)
    assert conf.redis_url == "redis://:secret@broker:6379/0"
    assert "redbeat_redis_url is not set" in caplog.text
    assert "secret" not in caplog.text


def test_without_any_redis_url_beat_refuses_to_start_naming_the_setting():
    app = make_app(None, broker_url="amqp://guest@localhost//")
    with pytest.raises(ConfigurationError, match="redbeat_redis_url"):
        RedBeatScheduler(app=app, lazy=True)


def test_own_options_are_not_passed_to_redis_py():
    app = make_app("redis://localhost:6379/3",
                   redbeat_redis_options={"retry_period": 5, "socket_timeout": 7, "max_connections": 3})
    client = build_client(ensure_conf(app), decode_responses=True)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 7
    assert kwargs["db"] == 3
    assert "retry_period" not in kwargs
    assert client.connection_pool.max_connections == 3


def test_rediss_url_takes_the_ssl_settings():
    app = make_app("rediss://localhost:6380/0",
                   redbeat_redis_use_ssl={"ssl_cert_reqs": ssl.CERT_NONE, "ssl_ca_certs": "/tmp/ca.pem"})
    client = build_client(ensure_conf(app), decode_responses=False)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_NONE
    assert kwargs["ssl_ca_certs"] == "/tmp/ca.pem"
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"


def test_unix_socket_url():
    client = build_client(ensure_conf(make_app("unix:///tmp/redis.sock?db=2")), decode_responses=True)
    assert client.connection_pool.connection_kwargs["path"] == "/tmp/redis.sock"
    assert client.connection_pool.connection_kwargs["db"] == 2


def test_get_redis_is_cached_and_answers_in_text():
    app = make_app("redis://localhost:6379/1")
    client = get_redis(app)
    assert client is get_redis(app)
    assert client.connection_pool.connection_kwargs["decode_responses"] is True


def test_passwords_never_show_in_the_banner():
    app = make_app("redis://user:hunter2@db.example:6379/1")
    info = RedBeatScheduler(app=app, lazy=True).info
    assert "hunter2" not in info
    assert "redis://user:**@db.example:6379/1" in info
    assert "`redbeat::lock` 10.00 seconds (10s)" in info
    assert display_url(None) == "(not set)"


def test_banner_says_when_the_lock_is_disabled():
    info = RedBeatScheduler(app=make_app("redis://localhost/1", redbeat_lock_key=None), lazy=True).info
    assert ". lock -> disabled" in info


def test_sentinel_settings_in_broker_transport_options_still_count_when_sharing_the_broker(caplog):
    app = make_app(None, broker_url="redis-sentinel://sentinel:26379/0",
                   broker_transport_options={"sentinels": [("s1", 26379)], "service_name": "mymaster",
                                             "visibility_timeout": 3600})
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        conf = ensure_conf(app)
    assert conf.redis_options == {"sentinels": [("s1", 26379)], "service_name": "mymaster"}
    assert "broker_transport_options" in caplog.text


def test_sentinel_url_db_and_db_option_together():
    app = make_app("redis-sentinel://127.0.0.1:26379/2",
                   redbeat_redis_options={"sentinels": [("127.0.0.1", 26379)], "db": 5})
    client = build_client(ensure_conf(app), decode_responses=True)
    assert client.connection_pool.connection_kwargs["db"] == 2


# -- TLS ----------------------------------------------------------------------------

def test_use_ssl_on_a_plain_redis_url_turns_tls_on_with_its_options():
    app = make_app("redis://localhost:6380/2", redbeat_redis_use_ssl={"ssl_cert_reqs": ssl.CERT_REQUIRED,
                                                                      "ssl_ca_certs": "/tmp/ca.pem"})
    client = build_client(ensure_conf(app), decode_responses=True)
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert kwargs["ssl_ca_certs"] == "/tmp/ca.pem" and kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert kwargs["db"] == 2 and kwargs["port"] == 6380


def test_broker_use_ssl_turns_tls_on_for_the_broker_url_fallback():
    app = make_app(None, broker_url="redis://localhost:6379/0", broker_use_ssl={"ssl_cert_reqs": ssl.CERT_NONE})
    client = build_client(ensure_conf(app), decode_responses=True)
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"


def test_use_ssl_on_a_unix_socket_is_refused_at_start():
    with pytest.raises(ConfigurationError, match="unix socket"):
        RedBeatScheduler(app=make_app("unix:///tmp/redis.sock", redbeat_redis_use_ssl=True), lazy=True)


@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server answering only TLS on a free loopback port, with a throwaway CA: (port, CA file)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    from topologies import TlsServer, make_certificates
    server = TlsServer(tmp_path / "tls", make_certificates(tmp_path))
    try:
        yield server.port, server.certs["ca.crt"]
    finally:
        server.stop()


def test_beat_ticks_over_tls_with_a_plain_url_and_use_ssl(tls_redis):
    port, ca = tls_redis
    app = make_app(f"redis://127.0.0.1:{port}/0", beat_schedule={"s": {"task": "tasks.s", "schedule": 60.0}},
                   redbeat_redis_use_ssl={"ssl_cert_reqs": "required", "ssl_ca_certs": ca})
    scheduler = RedBeatScheduler(app=app)
    try:
        scheduler.tick()
        assert scheduler.health.failing_since is None  # the tick did not fail
    finally:
        scheduler.close()
    direct = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca, decode_responses=True)
    assert direct.sismember("redbeat::statics", "s") and direct.exists("redbeat::heartbeat")


# -- secrets in the banner, logs and celery report --------------------------------------

FAILOVER_BROKER = "redis://:pw-one@h1:6379/3;redis://:pw-two@h2:6379/3"


def test_every_url_of_a_failover_list_is_masked():
    assert display_url(FAILOVER_BROKER) == "redis://:**@h1:6379/3;redis://:**@h2:6379/3"


def test_a_failover_broker_list_stores_the_schedule_on_the_first_and_shows_no_password(caplog):
    app = make_app(None, broker_url=FAILOVER_BROKER)
    with caplog.at_level(logging.WARNING, logger="celery.beat"):
        info = RedBeatScheduler(app=app, lazy=True).info
    assert "pw-" not in info and "pw-" not in caplog.text
    assert "redis -> redis://:**@h1:6379/3" in info
    client = build_client(ensure_conf(app), decode_responses=True)
    assert client.connection_pool.connection_kwargs["db"] == 3
    assert client.connection_pool.connection_kwargs["host"] == "h1"


def test_the_redis_unavailable_line_masks_every_password(caplog):
    closed = free_port()
    app = make_app(f"redis://:pw-one@127.0.0.1:{closed}/0;redis://:pw-two@127.0.0.1:{closed}/0",
                   redbeat_redis_options={"socket_connect_timeout": 1})
    scheduler = RedBeatScheduler(app=app)
    with caplog.at_level(logging.INFO, logger="celery.beat"):
        scheduler.tick()
    assert "is unavailable" in caplog.text and "pw-" not in caplog.text


def test_celery_report_shows_no_redbeat_secret(tmp_path, project_env):
    (tmp_path / "reportapp.py").write_text(
        "from celery import Celery\n"
        "app = Celery('reportapp', broker='memory://')\n"
        "app.conf.redbeat_redis_url = 'redis://beat:url-secret@db.example:6379/1'\n"
        "app.conf.redbeat_redis_options = {'password': 'option-secret', 'service_name': 'mymaster',\n"
        "                                  'sentinel_kwargs': {'password': 'sentinel-secret'}}\n"
        "app.conf.redbeat_redis_use_ssl = {'ssl_keyfile': '/k.pem', 'ssl_password': 'key-secret'}\n")
    report = subprocess.run([sys.executable, "-m", "celery", "-A", "reportapp", "report"], cwd=tmp_path,
                            env=project_env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "redbeat_redis_url" in report.stdout and "mymaster" in report.stdout
    for secret in ("url-secret", "option-secret", "sentinel-secret", "key-secret"):
        assert secret not in report.stdout + report.stderr, secret


# -- numeric settings ----------------------------------------------------------------

@pytest.mark.parametrize("setting, value, read", [
    ("redbeat_catch_up_max", 0, 0), ("redbeat_catch_up_max", "50", 50), ("redbeat_catch_up_max", None, 100),
    ("redbeat_starting_deadline", "2.5", 2.5), ("redbeat_starting_deadline", 0, None),
    ("redbeat_max_in_flight", None, 10_000), ("redbeat_max_in_flight", "50", 50), ("redbeat_max_in_flight", 1, 1),
])
def test_numeric_settings_are_read(setting, value, read):
    assert getattr(ensure_conf(make_app("redis://x/1", **{setting: value})), setting[len("redbeat_"):]) == read


@pytest.mark.parametrize("setting, value", [
    ("redbeat_catch_up_max", MAX_CATCH_UP + 1), ("redbeat_catch_up_max", -2), ("redbeat_catch_up_max", True),
    ("redbeat_catch_up_max", "many"), ("redbeat_starting_deadline", float("nan")),
    ("redbeat_starting_deadline", "inf"), ("redbeat_starting_deadline", -2), ("redbeat_starting_deadline", True),
    ("redbeat_max_in_flight", 0), ("redbeat_max_in_flight", 2.5), ("redbeat_max_in_flight", True),
])
def test_ambiguous_or_unbounded_numeric_settings_stop_beat_naming_the_setting(setting, value):
    with pytest.raises(ConfigurationError, match=f"{setting} must be a (whole number|number of seconds)"):
        ensure_conf(make_app("redis://x/1", **{setting: value}))


@pytest.mark.parametrize("value", ["twenty", -1, 2.5, True])
def test_a_history_size_that_is_no_whole_number_is_a_configuration_error(value):
    app = make_app("redis://localhost:6379/0", redbeat_history_size=value)
    with pytest.raises(ConfigurationError, match="redbeat_history_size"):
        ensure_conf(app)
