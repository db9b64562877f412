"""The line console (`rlrctl console`): a live web page per line for the people on the floor
(camera tiles: latest picture, heat map, score against threshold, sparkline, stale and health
marks; alerts with their evidence) and the engineers behind them (rollouts with the canary's
and production's score distributions and promote / rollback / undeploy; workers, refused
versions, backlog and dead letters; training jobs).

One process reads each Redis stream once (`hub.Hub`) and fans what it read out to every open
page over Server-Sent Events, so fifty pages cost Redis what one does. Pages are plain HTML from
the server; a little JavaScript (`static/console.js`, no build step) applies the pushed
updates, writing every value that came from a stream as text, never as markup.

May import: `wire`, `models`, `jobs`, `rlr` and the top-level modules. Never `serve`, `line`
or `cli`.
"""
