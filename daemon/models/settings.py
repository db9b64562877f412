"""Settings of the model side shared by the worker and the trainer: the device a model runs
on, and how often workers re-check the lines' rollouts."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from daemon.settings import PartSettings


class DeviceSettings(PartSettings):
    """The device a process runs its model on (worker inference, trainer training)."""

    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N")
        return value


class RolloutSettings(PartSettings):
    """How workers follow the lines' rollouts (daemon/models/rollout.py)."""

    rollout_poll_s: float = Field(5.0, gt=0, description="how often workers re-check the "
                                  "lines' rollouts (pub/sub wakes them at once as well)")
