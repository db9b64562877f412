"""`rlrctl console`: the line's live web page."""

from __future__ import annotations

import click

from daemon.cli.options import lines_value, redis_options, settings_from


@click.command()
@click.option("--host", default=None, help="Address to bind [RLR_CONSOLE_HOST, 127.0.0.1]. "
              "Anything beyond loopback needs RLR_CONSOLE_TOKEN.")
@click.option("--port", type=int, default=None, help="Port [RLR_CONSOLE_PORT, 8780].")
@click.option("--line", "lines", multiple=True, help="Line(s) to show (default RLR_LINES).")
@redis_options
def console(host, port, lines, redis_url, config_file) -> None:
    """Serve the line console: camera tiles, alerts, rollouts, workers and jobs, live."""
    from daemon.cli.options import connect
    from daemon.console.app import create_app, serve

    settings = settings_from(config_file, redis_url, lines=lines_value(lines))
    host = host or settings.console_host
    port = port or settings.console_port
    create_app(settings, host)  # refuses a bind beyond loopback without a token, before Redis
    connect(settings)  # a one-line error when Redis is not there
    click.echo(f"console: http://{host}:{port}/  (lines {', '.join(settings.lines)})", err=True)
    serve(settings, host, port)
