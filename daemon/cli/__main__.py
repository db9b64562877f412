"""`python -m daemon.cli` = `rlrctl` (the demo starts its processes this way)."""

from daemon.cli import main

main()
