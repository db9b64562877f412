"""Producer sources, one module per kind: `folder` (images), `video` (a file), `live` (an
OpenCV camera index or a stream URL). `base` holds what they share and the registry:
`open_source(spec, loop)` picks the kind that registered the spec's form.

May import: what `daemon.line` may. A source module imports `base`, never another source.
"""

from daemon.line.sources.base import Captured, Source, open_source, redact

__all__ = ["Captured", "Source", "open_source", "redact"]
