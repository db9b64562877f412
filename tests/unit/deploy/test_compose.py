"""deploy/compose.yaml and deploy/Dockerfile: the compose file parses and wires Redis with an
append-only file, a GPU worker with a health check and a drain-long stop, a producer and the
MQTT bridge (`docker compose config` too, where Docker Compose is installed); the Dockerfile
builds the package on a CUDA base as a non-root user with an `rlrctl check` health check.
No image is built here."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from tests.unit.deploy.files import DEPLOY, REPO, read_env_file, seconds, settings_from

COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _argv(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _env(compose: dict, name: str) -> dict[str, str]:
    service = compose["services"][name]
    env = {}
    files = service.get("env_file", [])
    for f in [files] if isinstance(files, str) else files:
        env.update(read_env_file(DEPLOY / (f if isinstance(f, str) else f["path"])))
    extra = service.get("environment", {})
    if isinstance(extra, list):
        extra = dict(item.split("=", 1) for item in extra)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_services_are_there(compose):
    assert {"redis", "worker", "producer", "bridge-mqtt"} <= set(compose["services"])


def test_redis_persists_with_an_append_only_file_and_never_evicts(compose):
    redis = compose["services"]["redis"]
    argv = _argv(redis)
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    volume, target = redis["volumes"][0].split(":")[:2]
    assert target == "/data" and volume in compose["volumes"], "AOF must be on a named volume"
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_worker_gets_a_gpu_a_health_check_and_time_to_drain(compose, monkeypatch):
    worker = compose["services"]["worker"]
    assert _argv(worker)[:2] == ["rlrctl", "worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:4] == ["rlrctl", "check", "-q"]
    assert seconds(worker["healthcheck"]["timeout"]) >= 10  # rlrctl imports torch
    settings = settings_from(_env(compose, "worker"), monkeypatch)
    assert settings.device.startswith("cuda")
    assert seconds(worker["stop_grace_period"]) > settings.shutdown_grace_s + 5
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    build = worker["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


@pytest.mark.parametrize("name", ["worker", "producer", "bridge-mqtt", "rlrctl", "recorder"])
def test_rlr_services_settings_load_in_rlrctl(compose, name, monkeypatch):
    settings = settings_from(_env(compose, name), monkeypatch)
    assert settings.redis_url.startswith("redis://redis:"), "containers reach the redis service"


def test_producer_and_bridge_start_after_redis_without_the_worker_probe(compose):
    producer = compose["services"]["producer"]
    argv = _argv(producer)
    assert argv[:2] == ["rlrctl", "produce"] and "--source" in argv and "--camera" in argv
    bridge = compose["services"]["bridge-mqtt"]
    assert _argv(bridge) == ["rlrctl", "bridge", "mqtt"]
    broker = _env(compose, "bridge-mqtt")["RLR_MQTT_URL"]
    assert re.match(r"mqtts?://([^:/]+)", broker).group(1) in compose["services"]
    for service in (producer, bridge):
        # the image's HEALTHCHECK looks for a worker in the container
        assert service["healthcheck"] == {"disable": True}
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("kind", ["modbus", "opcua", "sparkplug"])
def test_plc_bridges_are_services_of_the_plc_profile(compose, kind, monkeypatch):
    service = compose["services"][f"bridge-{kind}"]
    assert _argv(service) == ["rlrctl", "bridge", kind]
    assert service["profiles"] == ["plc"]
    assert service["healthcheck"] == {"disable": True}
    env = _env(compose, f"bridge-{kind}")
    if kind == "opcua":  # not loopback in a container: a user, its password from the shell
        assert env["RLR_OPCUA_PASSWORD"].startswith("${OPCUA_PASSWORD")
        env["RLR_OPCUA_PASSWORD"] = "from-the-shell"
    settings = settings_from(env, monkeypatch)
    assert settings.redis_url.startswith("redis://redis:")
    for port in service.get("ports", []):
        assert port.startswith("127.0.0.1:"), "published on the host's loopback only"


def test_host_side_variables_never_look_like_settings():
    # ${VAR} in compose.yaml are read from the user's shell, where an RLR_ name that is no
    # setting would stop every rlrctl command started from that shell
    assert not re.findall(r"\$\{RLR_", COMPOSE.read_text())


def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        pytest.skip("the Docker Compose plugin is not installed")
    out = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------------------ Dockerfile


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_installs_the_package_with_pinned_cuda_torch_on_a_cuda_base():
    steps = _instructions()
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    base = next(rest for op, rest in steps if op == "FROM")
    assert base == "${CUDA_IMAGE}" and args["CUDA_IMAGE"].startswith("nvidia/cuda:")
    assert "runtime" in args["CUDA_IMAGE"]
    assert args["TORCH_VERSION"] == "2.14.1" and args["TORCHVISION_VERSION"] == "0.29.1"
    runs = " ".join(rest for op, rest in steps if op == "RUN")
    assert '"torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" .' in runs
    assert "torch.version.cuda" in runs, "the build must refuse a CPU-only torch"


def test_dockerfile_runs_as_a_non_root_user_with_an_rlrctl_health_check():
    steps = _instructions()
    user = [rest for op, rest in steps if op == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    check = next(rest for op, rest in steps if op == "HEALTHCHECK")
    assert '"rlrctl", "check", "-q"' in check and "--timeout=20s" in check
    assert next(rest for op, rest in steps if op == "CMD") == '["rlrctl", "worker"]'


def test_build_context_sends_what_the_dockerfile_copies_and_nothing_else():
    ignore = [ln.strip() for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]

    def sent(path: str) -> bool:  # .dockerignore semantics: the last matching rule wins
        keep = True
        for rule in ignore:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negate
        return keep

    copied = [w for op, rest in _instructions() if op == "COPY" for w in rest.split()[:-1]]
    assert copied, "no COPY in the Dockerfile"
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert sent(src), f"COPY {src} is excluded by Dockerfile.dockerignore"
    for heavy in (".venv", ".git", "demo", "tests"):
        assert not sent(heavy), f"{heavy} would be sent to the Docker daemon"
