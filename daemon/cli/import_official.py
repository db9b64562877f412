"""`rlrctl import-official`: a checkpoint of the authors' official code as an rlr artifact."""

from __future__ import annotations

from pathlib import Path

import click

from rlr.config import PRESETS, configure


@click.command("import-official")
@click.argument("checkpoint", type=click.Path())
@click.option("--preset", "preset_name", default="paper", show_default=True,
              type=click.Choice(sorted(PRESETS)), help="Config the checkpoint was trained with.")
@click.option("--out", required=True, type=click.Path(), help="Model artifact to write.")
@click.option("--image-size", type=int)
@click.option("--backbone-weights", help="packaged | hub | none | PATH to a weights file.")
@click.option("--classes", default="", help="Comma-separated class names to record.")
def import_official(checkpoint, preset_name, out, image_size, backbone_weights, classes) -> None:
    """Convert a checkpoint trained with the authors' official code into an rlr artifact."""
    from rlr.artifact import save_artifact
    from rlr.compat import import_official as do_import

    cfg = configure(preset_name, backbone_weights=backbone_weights, image_size=image_size)
    cfg = cfg.replace(feature_norm="none")
    model, meta = do_import(checkpoint, cfg)
    manifest = save_artifact(Path(out), model, [c for c in classes.split(",") if c],
                             training={"imported_from": str(checkpoint), "official": meta})
    click.echo(f"imported {checkpoint} -> {out}  sha256 {manifest['sha256'][:16]}")
