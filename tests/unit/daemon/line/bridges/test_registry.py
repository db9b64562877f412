"""The bridge registry finds a bridge from its file alone, and `rlrctl bridge` gets its command
from the bridge's description."""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

from daemon.cli.bridge import bridge, command_for
from daemon.line.bridges import registry

DUMMY = '''
"""A bridge that records how it was run."""
from daemon.line.bridges.base import LINE, BridgeSpec, Option

RUNS = []


def run(settings, greeting="hello", loud=False):
    RUNS.append((settings.lines, settings.mqtt_url, greeting, loud))


BRIDGE = BridgeSpec(
    name="dummy", help="Say hello to the line.", run=run,
    options=(LINE,
             Option("--broker", "broker", "Where (default RLR_MQTT_URL).", setting="mqtt_url"),
             Option("--greeting", "greeting", "What to say.", default="hello"),
             Option("--loud", "loud", "Shout.", kind="flag")))
'''


@pytest.fixture
def package(tmp_path, monkeypatch):
    pkg = tmp_path / "somebridges"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "shared.py").write_text("X = 1\n")  # no BRIDGE: not a bridge
    (pkg / "dummy.py").write_text(DUMMY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "somebridges"
    for name in [m for m in sys.modules if m.split(".")[0] == "somebridges"]:
        del sys.modules[name]


def test_a_new_bridge_file_is_found_and_becomes_a_command(package, monkeypatch):
    found = registry.bridges(package)
    assert list(found) == ["dummy"]
    command = command_for(found["dummy"])
    for key in [k for k in os.environ if k.startswith("RLR_")]:
        monkeypatch.delenv(key)
    res = CliRunner().invoke(command, ["--line", "l1", "--line", "l2", "--broker",
                                       "mqtt://b:1883", "--loud"])
    assert res.exit_code == 0, res.output
    runs = sys.modules[f"{package}.dummy"].RUNS
    # setting options become settings, the others arguments, with their defaults
    assert runs == [(["l1", "l2"], "mqtt://b:1883", "hello", True)]
    res = CliRunner().invoke(command, ["--help"])
    assert "Say hello to the line." in res.output and "--redis-url" in res.output


def test_a_bridge_is_named_after_its_module(package, tmp_path):
    assert registry.get("dummy", package).help == "Say hello to the line."
    (tmp_path / package / "again.py").write_text(DUMMY)
    with pytest.raises(ValueError, match="again declares the bridge 'dummy'"):
        registry.bridges(package)


def test_the_shipped_bridges_are_the_commands_of_rlrctl_bridge():
    assert {"modbus", "mqtt", "opcua", "sparkplug", "webhook"} <= set(registry.bridges())
    assert bridge.list_commands(None) == list(registry.bridges())
    assert bridge.get_command(None, "modbus").name == "modbus"
    assert bridge.get_command(None, "profinet") is None
    with pytest.raises(KeyError, match=r"no bridge named .profinet.; known: .*modbus"):
        registry.get("profinet")
