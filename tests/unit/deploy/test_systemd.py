"""deploy/systemd/: the units pass `systemd-analyze verify` where systemd is installed, and
always: every service runs rlrctl as the rlr user with its settings files, restarts, has
resource limits, stops within the worker's drain grace, and workers are health-checked with
`rlrctl check`. The example settings files load in rlrctl."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.deploy.files import (
    DEPLOY,
    default,
    known_settings,
    read_env_file,
    seconds,
    settings_from,
)

SYSTEMD = DEPLOY / "systemd"
ENV = SYSTEMD / "env"
RLRCTL = "/opt/rlr/venv/bin/rlrctl"
# example instance of each template, as the files in env/ name them
INSTANCES = {"rlr-worker@": "gpu0", "rlr-worker-check@": "gpu0", "rlr-worker-restart@": "gpu0",
             "rlr-producer@": "cam1", "rlr-bridge@": "mqtt", "rlr-plc@": "modbus"}
LONG_RUNNING = ["rlr-worker@.service", "rlr-producer@.service", "rlr-bridge@.service",
                "rlr-plc@.service", "rlr-trainer.service", "rlr-console.service",
                "rlr-recorder.service"]


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> [(key, value)] in order (systemd keys repeat, e.g. EnvironmentFile=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        assert "=" in line, f"{path.name}: {line!r} is not Key=value"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: dict, section: str, key: str) -> str | None:
    found = values(unit, section, key)
    return found[-1] if found else None


def units() -> dict[str, dict]:
    return {p.name: parse_unit(p) for p in sorted(SYSTEMD.glob("rlr*.*"))
            if p.suffix in (".service", ".timer")}


def _instance(name: str) -> str:
    return INSTANCES.get(name.split("@")[0] + "@", "") if "@" in name else ""


def _expand(text: str, name: str) -> str:
    return text.replace("%i", _instance(name)).replace("%H", "host1")


def service_env(name: str, unit: dict) -> dict[str, str]:
    """The environment systemd gives the example instance: Environment=, then the files."""
    env: dict[str, str] = {}
    for assignment in values(unit, "Service", "Environment"):
        for word in shlex.split(_expand(assignment, name)):
            key, val = word.split("=", 1)
            env[key] = val
    for entry in values(unit, "Service", "EnvironmentFile"):
        optional = entry.startswith("-")
        installed = _expand(entry.lstrip("-"), name)
        example = ENV / Path(installed).relative_to("/etc/rlr")
        if not example.exists():
            assert optional, f"{name}: no example for {installed} in deploy/systemd/env/"
            continue
        env.update(read_env_file(example))
    return env


def exec_start(unit: dict) -> list[str]:
    return shlex.split(value(unit, "Service", "ExecStart"))


# ------------------------------------------------------------------------- systemd itself


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the parser tests below still run")
    # verify checks that ExecStart= binaries exist: point the units at a stand-in rlrctl
    stub = tmp_path / "bin" / "rlrctl"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    names = []
    for path in sorted(SYSTEMD.glob("rlr*.*")):
        if path.suffix not in (".service", ".timer"):
            continue
        (tmp_path / path.name).write_text(path.read_text().replace(RLRCTL, str(stub)))
        if "@" in path.name:  # templates are verified through an instance
            instance = path.name.replace("@.", f"@{_instance(path.name)}.")
            os.symlink(path.name, tmp_path / instance)
            names.append(instance)
        else:
            names.append(path.name)
    out = subprocess.run([analyze, "verify", "--man=no", *[str(tmp_path / n) for n in names]],
                         capture_output=True, text=True, timeout=60)
    # unknown keys and unparsable values are only warnings (exit 0): refuse them too
    complaints = [ln for ln in out.stderr.splitlines()
                  if str(tmp_path) in ln or "rlr-" in ln or "rlrctl" in ln]
    assert out.returncode == 0 and not complaints, out.stderr


# --------------------------------------------------------------------- every service unit


def test_the_expected_units_are_there():
    assert set(units()) == {
        "rlr-worker@.service", "rlr-worker-check@.service", "rlr-worker-check@.timer",
        "rlr-worker-restart@.service", "rlr-producer@.service", "rlr-bridge@.service",
        "rlr-plc@.service", "rlr-trainer.service", "rlr-console.service",
        "rlr-recorder.service"}


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_restart_with_limits_as_the_rlr_user(name):
    unit = units()[name]
    argv = exec_start(unit)
    assert argv[0] == RLRCTL
    assert value(unit, "Service", "User") == "rlr"
    assert value(unit, "Service", "Restart") in ("always", "on-failure")
    assert seconds(value(unit, "Service", "RestartSec")) >= 1
    assert "/etc/rlr/rlr.env" in values(unit, "Service", "EnvironmentFile")
    for limit in ("MemoryMax", "CPUQuota", "TasksMax"):
        assert value(unit, "Service", limit), f"{name}: no {limit}="
    assert value(unit, "Service", "NoNewPrivileges") == "yes"
    assert value(unit, "Service", "KillSignal") in (None, "SIGTERM")
    assert value(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_example_settings_files_load_in_rlrctl(name, monkeypatch):
    unit = units()[name]
    env = service_env(name, unit)
    unknown = {k for k in env if k.startswith("RLR_")} - known_settings()
    assert not unknown, f"{name}: unknown settings {unknown}"
    settings_from(env, monkeypatch)  # raises SettingsError naming the bad variable


def test_every_example_env_file_holds_known_settings_only():
    for path in ENV.rglob("*.env"):
        unknown = {k for k in read_env_file(path) if k.startswith("RLR_")} - known_settings()
        assert not unknown, f"{path.relative_to(DEPLOY)}: unknown settings {unknown}"
        lowered = {k for k in read_env_file(path) if re.fullmatch(r"[a-z_]+", k)}
        assert not lowered, f"{path.relative_to(DEPLOY)}: {lowered}"


# ------------------------------------------------------------------------------- workers


def test_worker_stop_timeout_outlasts_the_batch_drain(monkeypatch):
    unit = units()["rlr-worker@.service"]
    assert exec_start(unit)[1] == "worker"
    grace = settings_from(service_env("rlr-worker@.service", unit), monkeypatch)
    assert seconds(value(unit, "Service", "TimeoutStopSec")) > grace.shutdown_grace_s + 5
    assert value(unit, "Service", "KillMode") in ("mixed", "control-group")
    env = service_env("rlr-worker@.service", unit)
    assert env["RLR_CONSUMER"] == "host1-gpu0", "workers need a stable consumer name"
    assert env.get("RLR_DEVICE", default("device")).startswith("cuda")
    assert "-/etc/rlr/workers/%i.env" in values(unit, "Service", "EnvironmentFile")


def test_worker_health_is_checked_with_rlrctl_check_and_failures_restart_it():
    all_units = units()
    worker = all_units["rlr-worker@.service"]
    assert "rlr-worker-check@%i.timer" in value(worker, "Unit", "Wants").split()
    timer = all_units["rlr-worker-check@.timer"]
    assert value(timer, "Unit", "PartOf") == "rlr-worker@%i.service"
    assert seconds(value(timer, "Timer", "OnUnitActiveSec")) <= 60
    # the first check waits for the model to load (a starting worker is not `ready` yet)
    assert seconds(value(timer, "Timer", "OnActiveSec")) >= 60

    check = all_units["rlr-worker-check@.service"]
    argv = exec_start(check)
    assert argv[:4] == [RLRCTL, "check", "--worker", "${RLR_CONSUMER}"] and "-q" in argv
    assert value(check, "Service", "Type") == "oneshot"
    assert value(check, "Service", "User") == "rlr"
    # the same settings as the worker, so ${RLR_CONSUMER} names that worker
    assert service_env("rlr-worker-check@.service", check)["RLR_CONSUMER"] == \
        service_env("rlr-worker@.service", worker)["RLR_CONSUMER"]
    assert seconds(value(check, "Service", "TimeoutStartSec")) >= 20
    restart = all_units[value(check, "Unit", "OnFailure").replace("%i", "")]
    assert "try-restart rlr-worker@%i.service" in value(restart, "Service", "ExecStart")


# --------------------------------------------------------------- producers, bridges, trainer


def test_producer_is_one_instance_per_camera_reading_its_camera_file():
    unit = units()["rlr-producer@.service"]
    argv = exec_start(unit)
    assert argv[1] == "produce"
    assert argv[argv.index("--camera") + 1] == "%i"
    assert argv[argv.index("--source") + 1] == "${CAMERA_SOURCE}"
    assert "/etc/rlr/cameras/%i.env" in values(unit, "Service", "EnvironmentFile")
    camera = read_env_file(ENV / "cameras" / "cam1.env")
    assert camera["CAMERA_SOURCE"]
    assert float(service_env("rlr-producer@.service", unit)["CAMERA_FPS"]) > 0


def test_bridge_template_runs_the_bridge_named_by_the_instance():
    unit = units()["rlr-bridge@.service"]
    assert exec_start(unit)[1:] == ["bridge", "%i"]
    env = service_env("rlr-bridge@.service", unit)
    assert env["RLR_MQTT_URL"].startswith(("mqtt://", "mqtts://"))
    assert env["RLR_WEBHOOK_URL"].startswith(("http://", "https://"))


@pytest.mark.parametrize("kind", ["modbus", "opcua", "sparkplug"])
def test_plc_template_runs_each_bridge_as_its_own_acl_user(kind, monkeypatch):
    unit = units()["rlr-plc@.service"]
    assert exec_start(unit)[1:] == ["bridge", "%i"]
    assert "/etc/rlr/plc/%i.env" in values(unit, "Service", "EnvironmentFile")
    env = {**read_env_file(ENV / "rlr.env"), **read_env_file(ENV / "plc" / f"{kind}.env")}
    assert env["RLR_REDIS_USERNAME"] == f"rlr-{kind}"
    assert f"rlr-{kind}" in (DEPLOY / "redis" / "users.acl").read_text()
    settings = settings_from(env, monkeypatch)
    if kind != "sparkplug":
        assert settings.plc_cameras, "a fixed camera list: the Modbus map must not move"
    from daemon.cli import main

    bridge = main.get_command(None, "bridge")
    assert bridge.get_command(None, kind) is not None


def test_trainer_uses_the_gpu_a_persistent_workdir_and_a_long_stop():
    unit = units()["rlr-trainer.service"]
    argv = exec_start(unit)
    assert argv[1] == "trainer"
    assert argv[argv.index("--device") + 1].startswith("cuda")
    workdir = argv[argv.index("--workdir") + 1]
    assert workdir.startswith("/var/lib/rlr/")
    state = value(unit, "Service", "StateDirectory").split()
    assert workdir.removeprefix("/var/lib/") in state
    # the first SIGTERM finishes the epoch: minutes, not seconds
    assert seconds(value(unit, "Service", "TimeoutStopSec")) >= 300


def test_recorder_runs_as_its_acl_user_with_a_stable_name_and_its_own_settings(monkeypatch):
    from daemon.records.settings import RecordsSettings

    unit = units()["rlr-recorder.service"]
    assert exec_start(unit)[1:] == ["recorder"]
    env = service_env("rlr-recorder.service", unit)
    assert env["RLR_REDIS_USERNAME"] == "rlr-recorder"
    assert "rlr-recorder" in (DEPLOY / "redis" / "users.acl").read_text()
    assert env["RLR_RECORDS_CONSUMER"] == "host1-recorder"
    # the recorder's own settings sit in its env file, not in the rlr.env every service reads
    assert not [k for k in read_env_file(ENV / "rlr.env") if k.startswith("RLR_RECORDS_")]
    settings_from(env, monkeypatch)
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    records = RecordsSettings()
    assert records.records_url.startswith("postgresql://")
    assert str(records.records_dir).startswith("/var/lib/rlr/")
    assert str(records.records_dir).removeprefix("/var/lib/") in \
        value(unit, "Service", "StateDirectory").split()
