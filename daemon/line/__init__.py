"""What runs beside the workers on a line: camera producers and their sources (`producer`,
`sources`), alert bridges and PLC / SCADA bridges (`bridges/`, one module per protocol: MQTT,
webhook, Modbus TCP, OPC UA, Sparkplug B; a base feed loop and the line state they share), frame
capture into a training layout (`capture`), the embedded Redis (`embedded`) and the
one-command demo (`demo`).

May import: `wire`, `recipes`, `rlr` and the top-level modules, and `models` for the registry
the PLC bridges' recipe switch checks against. Never `serve`, `jobs`, `cli` or `console`: these
are separate processes that meet the workers only on Redis.
"""
