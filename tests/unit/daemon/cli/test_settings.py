"""The composition of every part's settings: each setting defined once, every part composed,
each part's checks kept by the compositions, and docs/configuration.md generated from them and
up to date (it lists every `RLR_*` setting with its default)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from daemon.cli.settings import PARTS, PROCESSES, AllSettings, markdown
from daemon.errors import SettingsError
from daemon.settings import PartSettings, describe_settings, load, own_fields

ROOT = Path(__file__).resolve().parents[4]
DOCS = ROOT / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in list(os.environ):
        if var.startswith("RLR_"):
            monkeypatch.delenv(var)
    return monkeypatch


def _every_settings_class() -> list[type[PartSettings]]:
    """Every PartSettings subclass defined in daemon/ (each settings module imported)."""
    for path in sorted((ROOT / "daemon").rglob("*.py")):
        if path.name == "settings.py" or path.stem in ("logs", "supervisor"):
            rel = path.relative_to(ROOT).with_suffix("")
            importlib.import_module(".".join(rel.parts))
    found, todo = [], [PartSettings]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("daemon.") and sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def test_docs_configuration_is_up_to_date():
    assert DOCS.read_text() == markdown(), (
        "docs/configuration.md is stale: run `make docs` "
        "(python -m daemon.cli.settings --markdown > docs/configuration.md)")


def test_every_setting_is_documented_with_its_default():
    text = DOCS.read_text()
    for var, default, _ in describe_settings(AllSettings):
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{var}` |")), None)
        assert row is not None, f"{var} is missing from docs/configuration.md"
        if default:
            assert f"`{default}`" in row, f"{var}: docs/configuration.md default differs"


def test_each_setting_is_defined_once():
    owner: dict[str, str] = {}
    for cls in _every_settings_class():
        for name in own_fields(cls):
            assert name not in owner, f"{name} is defined in {owner[name]} and {cls.__name__}"
            owner[name] = cls.__name__
    assert set(owner) == set(AllSettings.model_fields)


def test_every_part_is_listed_and_in_the_full_composition():
    parts = [cls for cls in _every_settings_class() if own_fields(cls)]
    assert sorted(p.__name__ for p in parts) == sorted(p.__name__ for p in PARTS)
    assert all(issubclass(AllSettings, part) for part in parts)
    assert sum(len(own_fields(p)) for p in PARTS) == len(AllSettings.model_fields)


def test_every_process_composition_is_in_the_full_composition():
    for _, cls in PROCESSES:
        assert issubclass(AllSettings, cls), cls.__name__
        assert not own_fields(cls), f"{cls.__name__} composes parts; it defines no setting"


@pytest.mark.parametrize("cls, overrides, names", [
    ("daemon.serve.settings.AlertSettings", {"alert_k": 6, "alert_n": 5}, ("RLR_ALERT_K=6",)),
    ("daemon.serve.settings.WorkerSettings", {"alert_k": 6, "alert_n": 5}, ("RLR_ALERT_K=6",)),
    ("daemon.serve.settings.WorkerSettings", {"backlog_limit": 100, "frames_maxlen": 100},
     ("RLR_BACKLOG_LIMIT=100",)),
    ("daemon.wire.settings.WireSettings", {"block_ms": 2000, "redis_timeout_s": 2},
     ("RLR_BLOCK_MS=2000",)),
    ("daemon.jobs.settings.TrainerSettings", {"heartbeat_s": 5, "heartbeat_ttl_s": 5},
     ("RLR_HEARTBEAT_TTL_S=5",)),
    ("daemon.line.settings.PlcBridgeSettings", {"opcua_username": "op"},
     ("RLR_OPCUA_USERNAME",)),
    ("daemon.serve.settings.CameraHealthSettings", {"health_raise_k": 11},
     ("RLR_HEALTH_RAISE_K=11",)),
])
def test_a_part_s_checks_run_in_every_class_that_composes_it(cls, overrides, names):
    module, _, name = cls.rpartition(".")
    with pytest.raises(SettingsError) as info:
        load(getattr(importlib.import_module(module), name), **overrides)
    for var in names:
        assert var in str(info.value)


def test_a_process_composition_loads_with_its_parts_defaults():
    from daemon.jobs.settings import TrainerSettings

    s = load(TrainerSettings, lines="a,b", device="cpu")
    assert (s.lines, s.device, s.job_timeout_s, s.heartbeat_s) == (["a", "b"], "cpu", 120.0, 2.0)
    assert not hasattr(s, "batch_size")
