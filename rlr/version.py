"""The library's version: one place, read by the package and by the artifact manifest."""

__version__ = "0.1.0"
