"""Which torch device to run on: the one rule every command and the worker share."""

from __future__ import annotations

import torch

from rlr.errors import ConfigError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto" (or None) picks CUDA when present, else the CPU. A CUDA device that is not
    there is refused here, with the way out, rather than failing deep inside torch."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but no CUDA device is available "
                          "here; use cpu or auto")
    return dev
