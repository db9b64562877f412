"""Shared helpers of the deploy/ tests: paths, KEY=value files and the daemon's settings."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from daemon.settings import Settings, env_name, load_settings

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
RLR_NAME = re.compile(r"\bRLR_[A-Z0-9_]*[A-Z0-9]\b")


def known_settings() -> set[str]:
    from daemon.records.settings import RecordsSettings

    return {env_name(name) for name in [*Settings.model_fields, *RecordsSettings.model_fields]} \
        | {"RLR_CONFIG"}


def default(field: str):
    return Settings.model_fields[field].default


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as systemd `EnvironmentFile=` and compose `env_file:` read them."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert "=" in line, f"{path}: {raw!r} is not a KEY=value line"
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if value[:1] in "\"'" and value[-1:] == value[:1]:
            value = shlex.split(value)[0]
        env[key.strip()] = value
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What `rlrctl` would make of this environment (and nothing else from the test's)."""
    for var in list(os.environ):
        if var.upper().startswith("RLR_"):
            monkeypatch.delenv(var)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    # RLR_RECORDS_* are the recorder's own (RecordsSettings), hidden from the line settings as
    # `rlrctl recorder` does
    from daemon.records.settings import RecordsSettings

    RecordsSettings()
    for key in env:
        if key.startswith("RLR_RECORDS_"):
            monkeypatch.delenv(key)
    return load_settings()


def seconds(value) -> float:
    """A duration as compose ("1m30s", "60s") or systemd ("10min", "60", "1h") write it."""
    if isinstance(value, (int, float)):
        return float(value)
    units = {"h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1, "ms": 0.001, "us": 1e-6}
    text = str(value).replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|min|ms|us|m|sec|s)", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"cannot read duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)
