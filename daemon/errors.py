"""Errors the daemon raises on purpose. Messages name the bad value and the way out."""

from __future__ import annotations

from rlr.errors import RLRError


class DaemonError(RLRError):
    """Base class for operational problems (settings, Redis, bridges)."""


class SettingsError(DaemonError):
    """An `RLR_*` setting (or CLI option) is invalid; the message names the setting."""


class RedisUnavailable(DaemonError):
    """Redis cannot be reached, or refused the credentials."""


class FrameError(DaemonError):
    """A frame cannot be processed. `reason` is a short stable code for the dead-letter stream."""

    REASONS = ("malformed", "unsupported_version", "oversized", "corrupt", "bad_dimensions",
               "too_many_deliveries", "trimmed", "inference_failed")

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
