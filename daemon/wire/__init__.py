"""The line's wire format and Redis plumbing, shared by every other part.

Message schemas (`schema`), the image codec with size checks before decoding (`codec`), Redis
key names (`keys`), Redis clients and backoff (`clients`), the one consumer-group helper used
by the worker, the bridges and the job queue (`groups`), worker heartbeats (`heartbeat`),
bytes-to-text (`text`) and the connection, group and stream-cap settings (`settings`).

May import: `rlr`, `daemon.settings`, `daemon.errors`, `daemon.logs`. No other daemon part.
"""
