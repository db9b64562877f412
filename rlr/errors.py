"""Every error rlr raises on purpose. Messages name the bad value and the way out."""

from __future__ import annotations


class RLRError(Exception):
    """Base class: catch this to handle any problem rlr diagnosed itself."""


class ConfigError(RLRError, ValueError):
    """A configuration value is invalid or inconsistent."""


class CacheDamaged(ConfigError):
    """A cached export's files differ from their record, and damaged caches are refused."""


class BackboneError(RLRError):
    """Backbone weights could not be found, loaded or matched to the architecture."""


class DataError(RLRError):
    """A data set path, image or mask is missing, unreadable or malformed."""


class ArtifactError(RLRError):
    """A model artifact is corrupt, tampered with, of an unknown schema or inconsistent."""


class CheckpointError(RLRError):
    """A training checkpoint or an official checkpoint could not be read or mapped."""
