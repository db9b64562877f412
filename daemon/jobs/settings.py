"""Settings of training jobs and of the trainer process that runs them (`rlrctl trainer`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from daemon.logs import LogSettings
from daemon.models.settings import DeviceSettings
from daemon.settings import PartSettings
from daemon.supervisor import SupervisorSettings
from daemon.wire.settings import LivenessSettings, WireSettings


class JobSettings(PartSettings):
    """Training jobs: when a silent one is failed, where the trainer keeps its files."""

    job_timeout_s: float = Field(120.0, gt=0, description="a running training job whose trainer "
                                 "sent no heartbeat for this long is marked failed")
    trainer_workdir: Path = Field(Path("rlr-trainer"), description="where `rlrctl trainer` keeps "
                                  "job artifacts, checkpoints and its feature cache")


class TrainerSettings(WireSettings, LivenessSettings, SupervisorSettings, LogSettings,
                      DeviceSettings, JobSettings):
    """The trainer process (`rlrctl trainer`)."""
