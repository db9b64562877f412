"""Rules: what the publisher judges over a batch's new results and emits beside them (the k-of-n
alert rule, camera health; next, part rules). One module per rule, each implementing
`base.Rule`; `registry.build_rules` lists them, in the order the publisher runs them.

May import `daemon.serve.ports`, `daemon.serve.camera_measures`, `wire` and the top-level
modules. A rule module imports `base` (and `window`), never another rule module; rules never
import the publisher, the worker or a port implementation.
"""
