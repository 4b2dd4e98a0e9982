"""Unit tests of settings and client building (no Redis contacted)."""

from __future__ import annotations

import logging
import ssl

import pytest
from conftest import make_app

from redbeat.client import build_client, display_url, get_redis
from redbeat.config import DEFAULT_LOCK_TIMEOUT, ConfigurationError, ensure_conf
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
