"""The worker: frames in, batched inference, verdicts, results and alerts out.

`worker` holds the run loop and lifecycle only; around it: the batching policy
(`batching`: admission, stale skip, fill-or-timeout; pure logic), the model version served
(`served_model`), verdicts and results of a batch (`verdicts`), settling frames through the
result sink (`publish`), the decode and inference threads (`decode`), the serving set and hot
reload of rollouts (`serving`), the rules over published results (`rules`: k-of-n alerts,
camera health; frames measured by `camera_measures`), Prometheus metrics (`prometheus`),
its liveness heartbeat (`liveness`), and its ports (`ports`) with their Redis (`redis_io`) and
in-memory (`memory_io`) implementations.

May import: `wire`, `models` (the registry, to follow rollouts), `rlr` and the top-level
modules. Never `cli`, `jobs`, `line` or `console`; `worker` itself never touches Redis types
(it sees `daemon.errors.SourceUnavailable` from its ports).
"""
