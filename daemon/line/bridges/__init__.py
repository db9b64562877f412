"""Bridges: deliver what the workers publish to the plant's systems, one module per protocol
(`mqtt`, `webhook`: alerts one at a time; `modbus`, `opcua`, `sparkplug`: the latched line
state). Each such module declares `BRIDGE` (`base.BridgeSpec`) and `registry` finds it;
`rlrctl bridge <name>` is built from it. Shared and not bridges: `base` (the description, the
feed loop that rides out Redis outages, dead letters, signals), `alertfeed` (delivery of
alerts to a sink) and `linestate` (the line state the PLC bridges serve), `registry`.

May import: what `line` may. A bridge module imports `base` and the shared modules, never
another bridge; the shared modules import no bridge.
"""
