"""Daemon settings: `RLR_*` environment variables, an optional env file, CLI overrides.

Precedence: CLI option > environment > settings file (`RLR_CONFIG` or `--config`, the same
`KEY=value` format systemd `EnvironmentFile=`, compose `env_file:` and Kubernetes ConfigMaps
use) > defaults. Invalid values fail at start with the setting's variable name.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from redis.connection import parse_url

from daemon.errors import SettingsError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_URL_SCHEMES = ("redis://", "rediss://", "unix://")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RLR_", extra="ignore", validate_default=True)

    # --- Redis
    redis_url: str | None = Field(None, description="redis://, rediss:// (TLS) or unix:// URL; "
                                  "unset: 127.0.0.1:6379 (the demo starts an embedded Redis)")
    redis_username: str | None = Field(None, description="ACL user (overrides the URL's)")
    redis_password: SecretStr | None = Field(None, description="password (overrides the URL's)")
    redis_timeout_s: float = Field(10.0, gt=0, description="socket timeout for Redis calls")
    redis_cluster: bool = Field(False, description="RLR_REDIS_URL names one node of a Redis "
                                "Cluster: use the cluster client (lines spread over shards)")

    # --- what to serve
    lines: Annotated[list[str], NoDecode] = Field(["line1"], description="comma-separated lines")
    group: str = Field("rlr-workers", description="consumer group of the workers on a line")
    consumer: str | None = Field(None, description="this worker's name (default host-pid)")
    model: Path | None = Field(None, description="model artifact (.rlr) the worker serves")
    # --- batching, device, engine
    batch_size: int = Field(8, ge=1, le=1024, description="max frames per inference batch")
    batch_wait_ms: float = Field(20.0, ge=0, le=10_000,
                                 description="max wait for a batch to fill after its first frame")
    block_ms: int = Field(500, ge=1, le=60_000, description="XREADGROUP BLOCK when idle")
    prefetch_batches: int = Field(2, ge=1, le=64, description="decoded batches read ahead")
    decode_threads: int = Field(2, ge=1, le=64, description="threads decoding frames")
    decode_inline: Literal["auto", "yes", "no"] = Field("auto", description="decode on the "
        "inference thread between batches (auto: model on the CPU), not RLR_DECODE_THREADS")
    device_decode: Literal["auto", "yes", "no"] = Field("auto", description="decode JPEG "
        "frames on the model's GPU in batches (nvJPEG); auto: when the model runs on CUDA")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on "
        "CUDA (torch, tensorrt), else fp32; bf16 on a CPU: RLR_ENGINE=openvino, a bf16 CPU")
    engine: Literal["auto", "torch", "onnxruntime", "openvino", "tensorrt"] = Field(
        "torch", description="runtime that scores frames; auto measures every one installed "
        "at model load and keeps the fastest (never slower than torch)")
    compile: Literal["off", "default", "max-autotune"] = Field("off", description="torch."
        "compile the model (RLR_ENGINE=torch), once per fixed batch size at start")
    engine_cache: Path | None = Field(None, description="exported engines (~/.cache/rlr/engines)")
    threads: int = Field(0, ge=0, le=1024, description="CPU threads of the model in this worker "
                         "process; 0: the engine's default (every core); N processes: cores/N")

    # --- stream caps (MAXLEN ~)
    frames_maxlen: int = Field(10_000, ge=10, description="cap of rlr:frames:{line}")
    results_maxlen: int = Field(100_000, ge=10, description="cap of rlr:results:{line}")
    alerts_maxlen: int = Field(10_000, ge=10, description="cap of rlr:alerts:{line}")
    dlq_maxlen: int = Field(10_000, ge=10, description="cap of rlr:dlq:{line}")

    # --- delivery, retries, backpressure
    max_deliveries: int = Field(3, ge=1, le=100,
                                description="deliveries before a frame is dead-lettered")
    claim_idle_ms: int = Field(30_000, ge=100,
                               description="idle time after which a pending frame is taken over")
    claim_interval_s: float = Field(5.0, gt=0, description="how often to look for stale frames")
    dedup_ttl_s: int = Field(86_400, ge=60, description="how long a frame id is remembered")
    backlog_limit: int = Field(500, ge=1, description="backlog above which old frames are skipped")
    max_frame_age_s: float = Field(2.0, gt=0, description="age beyond which a frame is skipped "
                                   "while the backlog is over the limit")
    max_payload_bytes: int = Field(20_000_000, ge=1024, description="largest accepted frame")
    max_image_side: int = Field(8192, ge=16, description="largest accepted image width/height")
    max_clock_skew_s: float = Field(300.0, gt=0, description="frames whose capture time is "
                                    "further in the future than this are dead-lettered "
                                    "(clock_skew): the camera's clock is wrong")
    masks: Literal["anomalous", "always", "never"] = Field(
        "anomalous", description="when results carry a PNG mask (a frame can also ask)")

    # --- alerts
    alert_k: int = Field(3, ge=1, description="alert when k of the last n frames are anomalous")
    alert_n: int = Field(5, ge=1, description="window of the alert rule, per camera")
    alert_cooldown_s: float = Field(30.0, ge=0, description="quiet time per camera after an alert")

    # --- health, metrics, logs
    metrics_port: int = Field(9108, ge=0, le=65535, description="Prometheus port (0 disables)")
    metrics_host: str = Field("0.0.0.0", description="address the metrics server binds")
    heartbeat_s: float = Field(2.0, gt=0, description="heartbeat interval")
    heartbeat_ttl_s: float = Field(10.0, gt=0, description="heartbeat key TTL")
    stall_s: float = Field(60.0, gt=0, description="`rlrctl check` fails when the worker loop "
                           "made no progress for this long")
    shutdown_grace_s: float = Field(30.0, gt=0, description="time to finish the batch in flight")
    task_max_failures: int = Field(5, ge=1, description="a task of a daemon that fails this "
                                   "often within RLR_TASK_FAILURE_WINDOW_S makes the process "
                                   "exit non-zero (its service manager restarts it)")
    task_failure_window_s: float = Field(300.0, gt=0, description="of RLR_TASK_MAX_FAILURES")
    prune_consumers_s: float = Field(3600.0, gt=0, description="consumers of a group idle this "
                                     "long with nothing pending (dead workers) are removed")
    log_format: Literal["json", "console"] = Field("json", description="structlog renderer")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug adds per-batch timing events")

    # --- camera health (daemon/serve/camera_health.py)
    health: bool = Field(True, description="watch each camera's frames and scores for camera "
                         "faults (frozen, dark, bright, blur, framing moved, score drift)")
    health_max_fps: float = Field(30.0, ge=0, description="frames/s per camera that camera "
                                  "health measures (faults last seconds); 0: every frame")
    health_window: int = Field(10, ge=2, le=1000, description="frames each image condition is "
                               "judged over, per camera")
    health_raise_k: int = Field(8, ge=1, description="a condition is raised when this many of "
                                "the last RLR_HEALTH_WINDOW frames show it")
    health_clear_k: int = Field(2, ge=0, description="a raised condition is cleared when at "
                                "most this many of the last RLR_HEALTH_WINDOW frames show it")
    health_dark_level: float = Field(25.0, ge=0, le=255, description="mean gray level below "
                                     "which a frame is too dark")
    health_bright_level: float = Field(230.0, ge=0, le=255, description="mean gray level above "
                                       "which a frame is too bright")
    health_clipped_fraction: float = Field(0.5, gt=0, le=1, description="fraction of pixels "
                                           "at 0-4 (or 251-255) above which a frame is clipped "
                                           "dark (bright)")
    health_frozen_mad: float = Field(0.3, ge=0, description="a frame whose 8x8 gray signature "
                                     "differs from the previous one by at most this (mean "
                                     "gray levels), with the same perceptual hash, is a repeat")
    health_blur_ratio: float = Field(0.2, gt=0, lt=1, description="sharpness (variance of the "
                                     "Laplacian) below this share of the camera's baseline "
                                     "is out of focus")
    health_shift_px: float = Field(6.0, gt=0, description="framing moved: shift against the "
                                   "camera's reference above this many pixels of a 64x64 "
                                   "thumbnail")
    health_shift_response: float = Field(0.2, ge=0, le=1, description="phase-correlation peak "
                                         "below which a shift is not trusted (the scene "
                                         "changed, the camera did not move)")
    health_baseline_frames: int = Field(30, ge=1, description="healthy frames a camera's "
                                        "sharpness and framing reference are learned from")
    health_drift_window: int = Field(200, ge=20, description="frames a camera's score "
                                     "distribution and alarm rate are judged over")
    health_drift_psi: float = Field(1.5, gt=0, description="score drift raised when the "
                                    "window's population stability index against the "
                                    "calibration normals' deciles exceeds this")
    health_drift_clear_psi: float = Field(0.5, gt=0, description="score drift cleared below "
                                          "this PSI")
    health_alarm_rate: float = Field(0.5, gt=0, le=1, description="alarm rate raised when "
                                     "more than this share of the window (or 10x the "
                                     "calibrated false-alarm rate) is anomalous")
    health_maxlen: int = Field(10_000, ge=10, description="cap of rlr:health:{line}")

    # --- alert bridges
    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="mqtt:// or mqtts:// broker")
    mqtt_topic: str = Field("rlr/{line}/alerts/{camera}", description="topic template")
    mqtt_health_topic: str = Field("rlr/{line}/health/{camera}", description="topic template "
                                   "of camera health events")
    mqtt_qos: int = Field(1, ge=0, le=2, description="MQTT QoS of alert messages")
    mqtt_username: str | None = Field(None, description="MQTT user")
    mqtt_password: SecretStr | None = Field(None, description="MQTT password")
    webhook_url: str | None = Field(None, description="http(s) URL alerts are POSTed to")
    webhook_timeout_s: float = Field(5.0, gt=0, description="HTTP timeout per webhook call")
    bridge_max_attempts: int = Field(8, ge=1, description="tries before an alert is dead-lettered")

    # --- PLC and SCADA bridges (daemon/line/bridges/)
    plc_cameras: str = Field("", description="comma-separated cameras the Modbus map and OPC UA "
                             "tree are built for (empty: the cameras seen in recent results)")
    modbus_host: str = Field("127.0.0.1", description="address the Modbus TCP server binds")
    modbus_port: int = Field(5020, ge=0, le=65535, description="Modbus TCP port (502 needs "
                             "root or CAP_NET_BIND_SERVICE)")
    modbus_pulse_ms: float = Field(500.0, gt=0, le=60_000, description="how long the reject "
                                   "coil stays 1 after an anomalous frame")
    opcua_endpoint: str = Field("opc.tcp://127.0.0.1:4840/rlr/", description="OPC UA endpoint "
                                "the server binds")
    opcua_username: str | None = Field(None, description="OPC UA user (required, with the "
                                       "password, when the endpoint is not loopback)")
    opcua_password: SecretStr | None = Field(None, description="OPC UA password")
    opcua_cert: Path | None = Field(None, description="server certificate (DER or PEM): "
                                    "enables Basic256Sha256 Sign and SignAndEncrypt")
    opcua_key: Path | None = Field(None, description="private key of RLR_OPCUA_CERT (PEM)")
    sparkplug_group: str = Field("rlr", description="Sparkplug B group id (rlrctl bridge mqtt "
                                 "--format sparkplug)")
    sparkplug_node: str = Field("", description="Sparkplug B edge node id (empty: the line "
                                "name, or rlr when serving several lines)")

    # --- model rollout
    rollout_poll_s: float = Field(5.0, gt=0, description="how often workers re-check the "
                                  "lines' rollouts (pub/sub wakes them at once as well)")

    # --- the console (rlrctl console) and the thumbnails the workers write for it
    thumb_interval_s: float = Field(0.5, ge=0, description="a worker writes a camera's latest "
                                    "frame as a thumbnail at most this often (0: never)")
    thumb_ttl_s: float = Field(10.0, gt=0, description="how long a thumbnail lives in Redis")
    thumb_side: int = Field(256, ge=16, le=2048, description="side of a thumbnail the worker "
                            "has to shrink (JPEG frames within RLR_THUMB_MAX_BYTES go as they are)")
    thumb_max_bytes: int = Field(100_000, ge=1024, description="largest JPEG frame kept as its "
                                 "own thumbnail without re-encoding")
    console_host: str = Field("127.0.0.1", description="address `rlrctl console` binds")
    console_port: int = Field(8780, ge=1, le=65535, description="port of the console")
    console_token: SecretStr | None = Field(None, description="operator token: needed for every "
                                            "console action, and for every request when the "
                                            "console is bound beyond loopback")

    # --- training jobs (rlrctl trainer / jobs)
    job_timeout_s: float = Field(120.0, gt=0, description="a running training job whose trainer "
                                 "sent no heartbeat for this long is marked failed")
    trainer_workdir: Path = Field(Path("rlr-trainer"), description="where `rlrctl trainer` keeps "
                                  "job artifacts, checkpoints and its feature cache")

    @field_validator("lines", mode="before")
    @classmethod
    def _split_lines(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("lines")
    @classmethod
    def _check_lines(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one line name")
        for name in value:
            _check_name(name)
        if len(set(value)) != len(value):
            raise ValueError(f"line names repeat: {value}")
        return value

    @field_validator("group", "consumer")
    @classmethod
    def _check_names(cls, value: str | None) -> str | None:
        return value if value is None else _check_name(value)

    @field_validator("redis_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        hint = ("use redis://host:port/db, rediss://host:port/db (TLS) or "
                "unix:///path/to/redis.sock")
        if value is not None and not value.startswith(_URL_SCHEMES):
            raise ValueError(f"{value!r} is not a Redis URL; {hint}")
        if value is not None:
            try:
                parse_url(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a valid Redis URL ({exc}); {hint}") from None
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"{value!r}: use mqtt://host:port or mqtts://host:port")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r}: use an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.alert_k > self.alert_n:
            raise ValueError(f"RLR_ALERT_K={self.alert_k} is more than RLR_ALERT_N={self.alert_n}: "
                             "an alert needs k anomalous frames among the last n")
        if self.heartbeat_ttl_s <= self.heartbeat_s:
            raise ValueError(f"RLR_HEARTBEAT_TTL_S={self.heartbeat_ttl_s} must exceed "
                             f"RLR_HEARTBEAT_S={self.heartbeat_s}, or healthy workers look dead")
        if self.block_ms >= self.redis_timeout_s * 1000:
            raise ValueError(f"RLR_BLOCK_MS={self.block_ms} must be below RLR_REDIS_TIMEOUT_S="
                             f"{self.redis_timeout_s} (in ms), or idle reads time out")
        if not self.health_clear_k < self.health_raise_k <= self.health_window:
            raise ValueError(f"camera health needs RLR_HEALTH_CLEAR_K={self.health_clear_k} < "
                             f"RLR_HEALTH_RAISE_K={self.health_raise_k} <= RLR_HEALTH_WINDOW="
                             f"{self.health_window}")
        if self.compile != "off" and self.engine != "torch":
            raise ValueError(f"RLR_COMPILE={self.compile} compiles the torch engine, not "
                             f"RLR_ENGINE={self.engine}: set one of them to off / torch")
        if self.health_drift_clear_psi >= self.health_drift_psi:
            raise ValueError("RLR_HEALTH_DRIFT_CLEAR_PSI must be below RLR_HEALTH_DRIFT_PSI")
        if (self.opcua_username is None) != (self.opcua_password is None):
            raise ValueError("set both RLR_OPCUA_USERNAME and RLR_OPCUA_PASSWORD, or neither")
        if self.opcua_password is not None and not self.opcua_password.get_secret_value():
            raise ValueError("RLR_OPCUA_PASSWORD is empty: set a password for "
                             "RLR_OPCUA_USERNAME")
        if (self.opcua_cert is None) != (self.opcua_key is None):
            raise ValueError("set both RLR_OPCUA_CERT and RLR_OPCUA_KEY, or neither")
        if self.backlog_limit >= self.frames_maxlen:
            raise ValueError(f"RLR_BACKLOG_LIMIT={self.backlog_limit} must be below "
                             f"RLR_FRAMES_MAXLEN={self.frames_maxlen}: frames trimmed by the cap "
                             "are lost before the worker can skip and count them")
        return self

    # --- derived values
    @property
    def line(self) -> str:
        """The first line: what single-line commands (produce, alerts) use."""
        return self.lines[0]

    @property
    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid name: use 1-64 letters, digits, '_', '.' "
                         "or '-' (it becomes part of Redis keys)")
    return name


def env_name(field: str) -> str:
    return f"RLR_{field.upper()}"


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, `config_file` (or `RLR_CONFIG`) and `overrides`.

    `overrides` whose value is None are ignored (CLI options the user did not give).
    Raises `SettingsError` naming every bad setting.
    """
    config_file = config_file or os.environ.get("RLR_CONFIG")
    if config_file is not None:
        _check_text_file(Path(config_file))
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(f"unknown setting(s) {unknown}")
    _check_names(os.environ, "the environment")
    if config_file is not None:
        _check_names(_file_keys(Path(config_file)), str(config_file), file=True)
    try:
        return Settings(_env_file=config_file, **given)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, config_file)) from None


def _check_text_file(path: Path) -> None:
    if not path.is_file():
        raise SettingsError(f"settings file {path} not found; fix RLR_CONFIG / --config")
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"settings file {path} is not text (byte {exc.start} is not UTF-8); "
                            "give a file of KEY=value lines, e.g. RLR_LINES=line1") from None
    if b"\0" in data:
        raise SettingsError(f"settings file {path} is not text (it holds NUL bytes); give a "
                            "file of KEY=value lines, e.g. RLR_LINES=line1")


def _check_names(names, where: str, file: bool = False) -> None:
    """A misspelt `RLR_*` name would silently fall back to a default: refuse it. Names
    without the prefix are left alone (a shared env file holds other programs' settings),
    unless they are one of ours with the prefix forgotten."""
    known = {env_name(name) for name in Settings.model_fields} | {"RLR_CONFIG"}
    for var in sorted(names):
        if var.upper().startswith("RLR_") and var.upper() not in known:
            close = difflib.get_close_matches(var.upper(), sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; see docs/configuration.md"
            raise SettingsError(f"unknown setting {var} in {where}{hint}")
        if file and f"RLR_{var.upper()}" in known and var.upper() != "CONFIG":
            raise SettingsError(f"{var} in {where} is missing its prefix: write RLR_{var.upper()}")


def _file_keys(path: Path) -> list[str]:
    """Variable names in a KEY=value file (comments, blanks and `export ` allowed)."""
    names = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        names.append(line.removeprefix("export ").split("=", 1)[0].strip())
    return names


def _describe(exc: ValidationError, config_file: str | os.PathLike[str] | None) -> str:
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        name = env_name(loc[0]) if loc else "settings"
        value = err.get("input")
        shown = "" if not loc or isinstance(value, dict) else f"={value!r}"
        if loc and loc[0].endswith("password"):
            shown = ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "not a known setting; check the spelling (docs/configuration.md)"
        problems.append(f"{name}{shown}: {msg}")
    where = f" (environment and {config_file})" if config_file else ""
    if len(problems) == 1:
        return f"invalid setting{where}: {problems[0]}"
    return "invalid settings" + where + ":\n  " + "\n  ".join(problems)


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, for the README and `--help`."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = ",".join(default) if isinstance(default, list) else default
        rows.append((env_name(name), "" if shown is None else str(shown), field.description or ""))
    return rows
