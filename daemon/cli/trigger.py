"""`rlrctl trigger`: announce a part on a line, as a PLC would (for tests, demos and stations
triggered by hand)."""

from __future__ import annotations

import click

from daemon.cli.options import connect, redis_options, settings_from


@click.command()
@click.argument("part_id")
@click.option("--line", help="Production line of the station.  [default: first of RLR_LINES]")
@click.option("--via", default="cli", show_default=True,
              help="What fired the trigger, recorded with it (cli, modbus, opcua ...).")
@click.option("--by", help="Who fired it (an operator's name), recorded with it.")
@redis_options
def trigger(part_id, line, via, by, redis_url, config_file) -> None:
    """Trigger PART_ID: add it to rlr:triggers:{line} and set the line's next part id.

    Producers started with --part-from trigger (or key) shoot the part; prints the entry id.
    """
    from daemon.line.part_ids import announce

    settings = settings_from(config_file, redis_url, lines=line)
    client = connect(settings, timeout_s=10)
    try:
        entry_id = announce(client, settings.line, part_id, via=via, by=by)
    finally:
        client.close()
    click.echo(entry_id)
