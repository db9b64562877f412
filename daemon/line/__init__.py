"""What runs beside the workers on a line: camera producers and their sources (`producer`,
`sources`), alert bridges and PLC / SCADA bridges (`bridges/`, one module per protocol: MQTT,
webhook, Modbus TCP, OPC UA, Sparkplug B; a base feed loop and the line state they share), frame
capture into a training layout (`capture`), the embedded Redis (`embedded`) and the
one-command demo (`demo`).

May import: `wire`, `recipes` (the PLC bridges switch recipes through its store), `rlr` and the
top-level modules. Never `serve`, `models`, `jobs`, `cli` or `console`: these are separate
processes that meet the workers only on Redis.
"""
