"""Every error the daemon raises on purpose, in one place. Messages name the bad value and the
way out. All derive from `rlr.errors.RLRError`, so `rlrctl` turns any of them into one line on
stderr and exit status 2 instead of a traceback.
"""

from __future__ import annotations

from rlr.errors import RLRError


class DaemonError(RLRError):
    """Base class for operational problems (settings, Redis, bridges, jobs, registry)."""


class SettingsError(DaemonError):
    """An `RLR_*` setting (or CLI option) is invalid; the message names the setting."""


class RedisUnavailable(DaemonError):
    """Redis cannot be reached, or refused the credentials."""


class SourceUnavailable(DaemonError):
    """A port of the worker (frame source or result sink) cannot be reached for now.

    Raised by the port implementations in place of their transport's own exceptions, so the
    worker retries through an outage without knowing which transport it talks to."""


class FrameError(DaemonError):
    """A frame cannot be processed. `reason` is a short stable code for the dead-letter stream."""

    REASONS = ("malformed", "unsupported_version", "oversized", "corrupt", "bad_dimensions",
               "too_many_deliveries", "trimmed", "inference_failed", "clock_skew",
               "unknown_view")

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DeliveryError(DaemonError):
    """A bridge's sink could not deliver an alert. `permanent` ones are dead-lettered at once."""

    def __init__(self, reason: str, detail: str, permanent: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.permanent = reason, detail, permanent


class RegistryError(DaemonError):
    """A registry or rollout request cannot be done; the message says why and what to do."""


class TaskFailed(DaemonError):
    """A supervised task kept failing; the process exits non-zero so it gets restarted."""


class JobError(DaemonError):
    """A job spec is invalid, a job does not exist, or a job operation is not possible."""


# Signals between a trainer and the job it runs: control flow, not errors a user sees.


class JobCancelled(Exception):
    """The job's cancel was requested (or the job was taken away from this trainer)."""


class TrainerStopping(Exception):
    """This trainer was asked to stop; the job goes back on the queue."""


class ConsoleError(DaemonError):
    """The console cannot start as configured (e.g. bound beyond loopback with no token)."""


class BadRequest(DaemonError):
    """A console request names a line, alert or action that is not there (HTTP 400)."""


class RecordsError(DaemonError):
    """The records database cannot be used as configured (RLR_RECORDS_URL, a bad option)."""


class RecordsUnavailable(RecordsError):
    """The records database cannot be reached for now (down, refusing, locked)."""


class SchemaOutdated(RecordsError):
    """The database's schema is not the one this code writes: `rlrctl records migrate`."""
