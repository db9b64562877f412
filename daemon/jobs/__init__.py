"""Training jobs: the queue on Redis (`queue`: submission, records, cancel, the stale-job
reaper), what a job asks for (`spec`), what a trainer does for one job (`runner`: train,
calibrate, evaluate, register, deploy) and the trainer process that takes jobs one at a time
(`trainer`). The trainer imports the runner; the runner sees the trainer only as a Protocol.

May import: `wire`, `models` (to register and deploy what it trained), `rlr` and the top-level
modules. Never `serve`, `line`, `cli` or `console`.
"""
