"""Producer sources (`base`)."""

from daemon.line.sources.base import (
    Captured,
    FolderSource,
    LiveSource,
    VideoSource,
    nap,
    open_source,
    redact,
)

__all__ = ["Captured", "FolderSource", "LiveSource", "VideoSource", "nap", "open_source",
           "redact"]
