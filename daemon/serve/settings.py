"""The worker's settings, one class per concern (batching, delivery, decode, engine, results,
alert rule, camera health, metrics), and `WorkerSettings`, the worker process's composition of
them with the wire's. The policy logic reads these classes: `BatchPolicy` (batching.py),
`AlertRule` (alerts.py), `CameraWatch` (camera_health.py), `Engine` (engine.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from daemon.logs import LogSettings
from daemon.models.settings import DeviceSettings, RolloutSettings
from daemon.recipes.settings import RecipeSettings
from daemon.settings import PartSettings
from daemon.supervisor import SupervisorSettings
from daemon.wire import ids
from daemon.wire.settings import LivenessSettings, StreamCapSettings, WireSettings

if TYPE_CHECKING:  # torch is imported only by the commands that run a model
    import torch


def default_engine_cache() -> Path:
    """Where exported engines are kept unless RLR_ENGINE_CACHE says: the user's cache."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rlr" / "engines"


class BatchSettings(PartSettings):
    """How the worker fills batches and which frames it admits, skips or dead-letters."""

    batch_size: int = Field(8, ge=1, le=1024, description="max frames per inference batch")
    batch_wait_ms: float = Field(20.0, ge=0, le=10_000,
                                 description="max wait for a batch to fill after its first frame")
    prefetch_batches: int = Field(2, ge=1, le=64, description="decoded batches read ahead")
    max_deliveries: int = Field(3, ge=1, le=100,
                                description="deliveries before a frame is dead-lettered")
    backlog_limit: int = Field(500, ge=1, description="backlog above which old frames are skipped")
    max_frame_age_s: float = Field(2.0, gt=0, description="age beyond which a frame is skipped "
                                   "while the backlog is over the limit")
    max_payload_bytes: int = Field(20_000_000, ge=1024, description="largest accepted frame")
    max_clock_skew_s: float = Field(300.0, gt=0, description="frames whose capture time is "
                                    "further in the future than this are dead-lettered "
                                    "(clock_skew): the camera's clock is wrong")

    @property
    def batch_wait_s(self) -> float:
        return self.batch_wait_ms / 1000


class DeliverySettings(PartSettings):
    """What the worker remembers of delivered frames, and how it leaves its group."""

    dedup_ttl_s: int = Field(86_400, ge=60, description="how long a frame id is remembered")
    prune_consumers_s: float = Field(3600.0, gt=0, description="consumers of a group idle this "
                                     "long with nothing pending (dead workers) are removed")
    shutdown_grace_s: float = Field(30.0, gt=0, description="time to finish the batch in flight")


class DecodeSettings(PartSettings):
    """Where and how the worker decodes frames, and the largest image it accepts."""

    decode_threads: int = Field(2, ge=1, le=64, description="threads decoding frames")
    decode_inline: Literal["auto", "yes", "no"] = Field("auto", description="decode on the "
        "inference thread between batches (auto: model on the CPU), not RLR_DECODE_THREADS")
    device_decode: Literal["auto", "yes", "no"] = Field("auto", description="decode JPEG "
        "frames on the model's GPU in batches (nvJPEG); auto: when the model runs on CUDA")
    max_image_side: int = Field(8192, ge=16, description="largest accepted image width/height")
    max_pixels: int = Field(8192 * 4096, ge=256, description="largest accepted image in "
                            "pixels (width x height), checked from its header before decoding")


class EngineSettings(PartSettings):
    """The model a worker serves and the engine that scores its frames."""

    model: Path | None = Field(None, description="model artifact (.rlr) the worker serves")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on "
        "CUDA (torch, tensorrt), else fp32; bf16 on a CPU: RLR_ENGINE=openvino, a bf16 CPU")
    engine: str = Field(
        "torch", pattern=r"^[a-z][a-z0-9_]{0,31}$", description="engine that scores frames: "
        "one of rlr/engines/ (`rlrctl engines` lists them: torch, onnxruntime, openvino, "
        "tensorrt), or auto: measure every one installed at model load and keep the fastest "
        "(never slower than torch); an unknown name stops the worker at model load")
    compile: Literal["off", "default", "max-autotune"] = Field("off", description="torch."
        "compile the model (RLR_ENGINE=torch), once per fixed batch size at start")
    engine_cache: Path | None = Field(None, description="exported engines (~/.cache/rlr/engines)")
    engine_cache_damaged: Literal["reexport", "refuse"] = Field(
        "reexport", description="a cached export whose files differ from the sha256 recorded "
        "at export (edited, truncated, missing): export it again, or refuse to load the model "
        "(one line naming the file); a warning names the file either way")
    threads: int = Field(0, ge=0, le=1024, description="CPU threads of the model in this worker "
                         "process; 0: the engine's default (every core); N processes: cores/N")

    @field_validator("model", mode="before")
    @classmethod
    def _blank_model_is_unset(cls, value: Any) -> Any:
        # RLR_MODEL= (empty) in an env file means "no model", not the current folder
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_compile(self) -> EngineSettings:
        if self.compile != "off" and self.engine != "torch":
            raise ValueError(f"RLR_COMPILE={self.compile} compiles the torch engine, not "
                             f"RLR_ENGINE={self.engine}: set one of them to off / torch")
        return self

    @property
    def cache(self) -> Path:
        """Where exported engines are kept: RLR_ENGINE_CACHE, or the user's cache."""
        return self.engine_cache or default_engine_cache()

    def precision_on(self, device: torch.device) -> str:
        if self.precision != "auto":
            return self.precision
        return "bf16" if device.type == "cuda" and self.engine in ("torch", "tensorrt") \
            else "fp32"


class EngineChoice(EngineSettings, BatchSettings):
    """What a served model's engine is built from: the engine and the batch it measures and pads
    to."""


class PublishSettings(PartSettings):
    """What a worker publishes beside the scores: masks, and thumbnails for the console."""

    masks: Literal["anomalous", "always", "never"] = Field(
        "anomalous", description="when results carry a PNG mask (a frame can also ask)")
    thumb_interval_s: float = Field(0.5, ge=0, description="a worker writes a camera's latest "
                                    "frame as a thumbnail at most this often (0: never)")
    thumb_ttl_s: float = Field(10.0, gt=0, description="how long a thumbnail lives in Redis")
    thumb_side: int = Field(256, ge=16, le=2048, description="side of a thumbnail the worker "
                            "has to shrink (JPEG frames within RLR_THUMB_MAX_BYTES go as they are)")
    thumb_max_bytes: int = Field(100_000, ge=1024, description="largest JPEG frame kept as its "
                                 "own thumbnail without re-encoding")


class StationSettings(PartSettings):
    """Parts: how the views of one part are joined into one verdict on a line without an
    active recipe (a recipe sets its own views, deadline and outcome)."""

    part_views: str = Field("", description="comma-separated views that make up a part (empty: "
                            "any one view completes it)")
    part_deadline_ms: int = Field(2000, ge=10, le=600_000, description="a part still missing "
                                  "a view this long after its first capture is incomplete")
    part_incomplete: Literal["reject", "pass"] = Field(
        "reject", description="what the gate does with an incomplete part (fail safe: reject)")
    part_done_ttl_s: int = Field(86_400, ge=60, description="how long a decided part id is "
                                 "remembered: a view of it arriving later is late, not a new part")
    part_sweep_ms: int = Field(100, ge=10, le=10_000, description="how often a worker looks for "
                               "parts past their deadline")

    @field_validator("part_views")
    @classmethod
    def _views(cls, v: str) -> str:
        names = [n.strip() for n in v.split(",") if n.strip()]
        for name in names:
            ids.check("view", name)  # BadId is a ValueError: the setting's error names it
        return ",".join(names)

    @property
    def station_views(self) -> tuple[str, ...]:
        return tuple(n for n in self.part_views.split(",") if n)


class AlertSettings(PartSettings):
    """The alert rule: k anomalous frames among a camera's last n, then a cool-down."""

    alert_k: int = Field(3, ge=1, description="alert when k of the last n frames are anomalous")
    alert_n: int = Field(5, ge=1, description="window of the alert rule, per camera")
    alert_cooldown_s: float = Field(30.0, ge=0, description="quiet time per camera after an alert")

    @model_validator(mode="after")
    def _check_alert(self) -> AlertSettings:
        if self.alert_k > self.alert_n:
            raise ValueError(f"RLR_ALERT_K={self.alert_k} is more than RLR_ALERT_N={self.alert_n}: "
                             "an alert needs k anomalous frames among the last n")
        return self


class CameraHealthSettings(PartSettings):
    """When a camera's own frames or scores show a camera fault (camera_health.py).
    Levels are 8-bit gray levels; `health_shift_px` is in pixels of the 64x64 thumbnail (6 =
    about 9 % of the frame)."""

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
                                        "sharpness and framing reference are learned from "
                                        "(per product class)")
    health_min_hold_s: float = Field(30.0, ge=0, description="a raised condition stays raised "
                                     "at least this long (capture time), so a flickering "
                                     "camera raises once instead of raising and clearing")
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

    @model_validator(mode="after")
    def _check_health(self) -> CameraHealthSettings:
        if not self.health_clear_k < self.health_raise_k <= self.health_window:
            raise ValueError(f"camera health needs RLR_HEALTH_CLEAR_K={self.health_clear_k} < "
                             f"RLR_HEALTH_RAISE_K={self.health_raise_k} <= RLR_HEALTH_WINDOW="
                             f"{self.health_window}")
        if self.health_drift_clear_psi >= self.health_drift_psi:
            raise ValueError("RLR_HEALTH_DRIFT_CLEAR_PSI must be below RLR_HEALTH_DRIFT_PSI")
        return self


class MetricsSettings(PartSettings):
    """The worker's Prometheus endpoint."""

    metrics_port: int = Field(9108, ge=0, le=65535, description="Prometheus port (0 disables)")
    metrics_host: str = Field("0.0.0.0", description="address the metrics server binds")


class WorkerSettings(WireSettings, StreamCapSettings, LivenessSettings, SupervisorSettings,
                     LogSettings, DeviceSettings, RolloutSettings, EngineChoice,
                     DeliverySettings, DecodeSettings, PublishSettings, AlertSettings,
                     StationSettings, RecipeSettings, CameraHealthSettings, MetricsSettings):
    """The worker process (`rlrctl worker`)."""

    @model_validator(mode="after")
    def _check_backlog(self) -> WorkerSettings:
        if self.backlog_limit >= self.frames_maxlen:
            raise ValueError(f"RLR_BACKLOG_LIMIT={self.backlog_limit} must be below "
                             f"RLR_FRAMES_MAXLEN={self.frames_maxlen}: frames trimmed by the cap "
                             "are lost before the worker can skip and count them")
        return self
