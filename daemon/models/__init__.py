"""Model versions and where they serve: the registry of versions (artifacts kept in Redis, so
any worker can fetch them), per-line rollouts (production / canary / shadow, with history),
and the line status `rlrctl status` shows.

May import: `wire`, `rlr` and the top-level modules. Never `serve`, `jobs`, `line`, `cli` or
`console` (they build on it).
"""
