"""What runs beside the workers on a line: camera producers and their sources (`producer`,
`sources`), alert bridges (`bridge`, the consumer loop; `sinks`, MQTT and webhook), PLC and
SCADA bridges (`plcstate`, the line state they serve; `modbus`, `opcua`, `sparkplug`), frame
capture into a training layout (`capture`), the embedded Redis (`embedded`) and the
one-command demo (`demo`).

May import: `wire`, `rlr` and the top-level modules. Never `serve`, `models`, `jobs`, `cli` or
`console`: these are separate processes that meet the workers only on Redis.
"""
