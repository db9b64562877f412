"""Daemon settings as `rlrctl` loads them (every part composed): defaults, RLR_* variables,
settings file, CLI overrides, and refusals that name the variable to fix."""

from __future__ import annotations

import os

import pytest

from daemon.cli.settings import AllSettings, load_settings
from daemon.errors import SettingsError
from daemon.settings import describe_settings
from daemon.wire.settings import DEFAULT_REDIS_URL


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in list(os.environ):
        if var.startswith("RLR_"):
            monkeypatch.delenv(var)
    return monkeypatch


def _error(**overrides) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    return str(info.value)


def test_defaults_load_without_any_configuration():
    s = load_settings()
    assert s.lines == ["line1"] and s.line == "line1"
    assert s.batch_size == 8
    assert s.redis_url is None and s.effective_redis_url == DEFAULT_REDIS_URL
    assert s.masks == "anomalous"
    assert s.consumer_name  # host-pid when RLR_CONSUMER is unset


def test_environment_variables_are_parsed(clean_env):
    clean_env.setenv("RLR_LINES", "a, b")
    clean_env.setenv("RLR_BATCH_SIZE", "32")
    clean_env.setenv("RLR_BATCH_WAIT_MS", "7.5")
    clean_env.setenv("RLR_MASKS", "always")
    clean_env.setenv("RLR_REDIS_URL", "rediss://cache:6380/2")
    clean_env.setenv("RLR_REDIS_PASSWORD", "s3cret")
    clean_env.setenv("RLR_CONSUMER", "cam-worker-1")
    s = load_settings()
    assert s.lines == ["a", "b"]
    assert s.batch_size == 32 and s.batch_wait_ms == 7.5
    assert s.masks == "always"
    assert s.effective_redis_url == "rediss://cache:6380/2"
    assert s.redis_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.consumer_name == "cam-worker-1"


@pytest.mark.parametrize("var, value", [
    ("RLR_BATCH_SIZE", "0"),
    ("RLR_BATCH_SIZE", "eight"),
    ("RLR_MASKS", "sometimes"),
    ("RLR_METRICS_PORT", "70000"),
    ("RLR_MQTT_URL", "tcp://broker:1883"),
    ("RLR_WEBHOOK_URL", "ftp://hooks"),
])
def test_an_invalid_value_names_its_variable(clean_env, var, value):
    clean_env.setenv(var, value)
    msg = _error()
    assert var in msg
    assert repr(value) in msg


def test_a_bad_password_is_not_echoed(clean_env):
    clean_env.setenv("RLR_REDIS_PASSWORD", "hunter2")
    clean_env.setenv("RLR_REDIS_URL", "http://cache")
    msg = _error()
    assert "RLR_REDIS_URL" in msg
    assert "hunter2" not in msg


@pytest.mark.parametrize("overrides, names", [
    ({"alert_k": 6, "alert_n": 5}, ("RLR_ALERT_K=6", "RLR_ALERT_N=5")),
    ({"heartbeat_s": 5, "heartbeat_ttl_s": 5}, ("RLR_HEARTBEAT_TTL_S=5", "RLR_HEARTBEAT_S=5")),
    ({"backlog_limit": 100, "frames_maxlen": 100},
     ("RLR_BACKLOG_LIMIT=100", "RLR_FRAMES_MAXLEN=100")),
    ({"block_ms": 2000, "redis_timeout_s": 2}, ("RLR_BLOCK_MS=2000", "RLR_REDIS_TIMEOUT_S=2")),
])
def test_inconsistent_settings_name_both_sides(overrides, names):
    msg = _error(**overrides)
    for name in names:
        assert name in msg


def test_consistent_edge_values_are_accepted():
    s = load_settings(alert_k=5, alert_n=5, backlog_limit=99, frames_maxlen=100,
                      block_ms=1999, redis_timeout_s=2)
    assert (s.alert_k, s.alert_n, s.backlog_limit, s.block_ms) == (5, 5, 99, 1999)


def test_a_misspelt_variable_is_refused_with_a_hint(clean_env):
    clean_env.setenv("RLR_BACH_SIZE", "16")
    msg = _error()
    assert "RLR_BACH_SIZE" in msg
    assert "did you mean RLR_BATCH_SIZE?" in msg


def test_an_unknown_override_is_refused():
    assert "bogus" in _error(bogus=1)


def test_settings_file_is_read_and_the_environment_overrides_it(clean_env, tmp_path):
    path = tmp_path / "rlr.env"
    path.write_text("RLR_BATCH_SIZE=16\nRLR_LINES=press, paint\nRLR_DEVICE=cpu\n")
    s = load_settings(path)
    assert (s.batch_size, s.lines, s.device) == (16, ["press", "paint"], "cpu")

    clean_env.setenv("RLR_BATCH_SIZE", "32")
    s = load_settings(path)
    assert s.batch_size == 32
    assert s.lines == ["press", "paint"]  # untouched by the environment


def test_settings_file_from_rlr_config(clean_env, tmp_path):
    path = tmp_path / "rlr.env"
    path.write_text("RLR_BATCH_SIZE=16\n")
    clean_env.setenv("RLR_CONFIG", str(path))
    assert load_settings().batch_size == 16


def test_cli_overrides_beat_the_environment_and_none_is_ignored(clean_env, tmp_path):
    path = tmp_path / "rlr.env"
    path.write_text("RLR_BATCH_SIZE=16\nRLR_DEVICE=cpu\n")
    clean_env.setenv("RLR_BATCH_SIZE", "32")
    assert load_settings(path, batch_size=2).batch_size == 2
    s = load_settings(path, batch_size=None, device=None)
    assert (s.batch_size, s.device) == (32, "cpu")


def test_a_missing_settings_file_fails_clearly(tmp_path):
    missing = tmp_path / "nope.env"
    with pytest.raises(SettingsError, match="not found") as info:
        load_settings(missing)
    assert str(missing) in str(info.value)


def test_a_bad_value_in_the_settings_file_names_variable_and_file(tmp_path):
    path = tmp_path / "rlr.env"
    path.write_text("RLR_BATCH_SIZE=0\n")
    msg = _error(config_file=path)
    assert "RLR_BATCH_SIZE" in msg
    assert str(path) in msg


def test_a_misspelt_key_in_the_settings_file_is_refused(tmp_path):
    path = tmp_path / "rlr.env"
    path.write_text("RLR_BATCH_SZE=16\n")
    msg = _error(config_file=path)
    assert "BATCH_SZE" in msg
    assert "did you mean RLR_BATCH_SIZE" in msg


@pytest.mark.parametrize("overrides, var", [
    ({"redis_url": "http://cache:6379"}, "RLR_REDIS_URL"),
    ({"device": "gpu"}, "RLR_DEVICE"),
    ({"device": "cuda:x"}, "RLR_DEVICE"),
    ({"lines": "line 1"}, "RLR_LINES"),
    ({"lines": "a,a"}, "RLR_LINES"),
    ({"lines": " , "}, "RLR_LINES"),
    ({"consumer": "w/1"}, "RLR_CONSUMER"),
])
def test_bad_urls_devices_and_names_are_refused(overrides, var):
    assert var in _error(**overrides)


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h:6380/1", "unix:///run/r.sock"])
def test_every_redis_url_scheme_is_accepted(url):
    assert load_settings(redis_url=url).effective_redis_url == url


def test_describe_settings_lists_every_variable_with_its_default():
    rows = {var: (default, text) for var, default, text in describe_settings(AllSettings)}
    assert rows["RLR_BATCH_SIZE"][0] == "8"
    assert rows["RLR_LINES"][0] == "line1"
    assert rows["RLR_REDIS_URL"][0] == ""
    assert all(var.startswith("RLR_") for var in rows)


def test_settings_file_misspelling_gets_a_hint_and_other_programs_keys_pass(tmp_path):
    path = tmp_path / "rlr.env"
    path.write_text("# plant settings\nPATH_X=1\nexport RLR_BATCH_SZE=16\n")
    msg = _error(config_file=path)
    assert "did you mean RLR_BATCH_SIZE" in msg and "RLR_RLR_" not in msg
    path.write_text("OTHER_TOOL=1\nRLR_BATCH_SIZE=16\n")
    assert load_settings(path).batch_size == 16


def test_settings_file_key_without_prefix_is_refused(tmp_path):
    path = tmp_path / "rlr.env"
    path.write_text("BATCH_SIZE=16\n")
    assert "write RLR_BATCH_SIZE" in _error(config_file=path)


def test_an_empty_model_setting_means_no_model(clean_env):
    clean_env.setenv("RLR_MODEL", "")
    assert load_settings().model is None
    clean_env.setenv("RLR_MODEL", "  ")
    assert load_settings().model is None


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/abc", "redis://h:6379/0/x",
                                 "rediss://h:6380/db1"])
def test_a_redis_url_whose_path_is_not_a_database_number_is_refused(url):
    msg = _error(redis_url=url)
    assert "RLR_REDIS_URL" in msg and "not a database number" in msg


@pytest.mark.parametrize("url", ["redis://h:6379", "redis://h:6379/", "redis://h:6379/3",
                                 "rediss://u:p@h:6380/15", "unix:///run/redis.sock"])
def test_redis_urls_with_a_database_number_or_none_load(url):
    assert load_settings(redis_url=url).redis_url == url
