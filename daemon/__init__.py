"""rlr's operational side: everything that runs a line around the model library `rlr`.

The parts, in the order they build on each other:

    wire/     the line's wire format and Redis plumbing (schemas, image codec, keys, clients,
              the one consumer-group helper, heartbeats)
    models/   model versions in Redis, per-line rollouts, line status
    serve/    the worker: run loop, batching policy, served model, verdicts, publishing, reload
    jobs/     training jobs: queue, spec, runner, trainer
    line/     what runs beside the workers: producers, alert bridges, capture, embedded Redis,
              the demo
    console/  the line console: live web page, one reader per stream fanned out over SSE
    cli/      `rlrctl`, one module per command group

and, at the top, `settings` (what every part's settings share: the `PartSettings` base, loading
`RLR_*` variables, the settings file and CLI overrides, the checks), `errors` (every error
class), `logs` and `supervisor` (every long-running task of a process runs under it).

Each part declares its own settings in its `settings` module (one small class per concern);
a process's settings inherit the parts it reads, and `cli/settings` composes all of them.

Import rules (tests/unit/test_import_boundary.py enforces them): no import cycle anywhere;
a part imports only the parts before it that its docstring names (`wire` none, `models` wire,
`serve` wire and models, `jobs` wire and models, `line` wire, `console` wire, models and
jobs, `cli` any); the top-level modules import no part; only `cli` imports `click`; `rlr`
imports nothing of `daemon`.
"""
