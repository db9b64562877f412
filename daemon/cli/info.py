"""`rlrctl info`: a model artifact's manifest, after checking the file against its sha256."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("model_path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.option("--no-verify", is_flag=True, help="Read the header only, without checking the "
              "file against its sha256 (instant on any size; the checksum shown is unchecked).")
def info(model_path, as_json, no_verify) -> None:
    """Show a model artifact's manifest, after verifying the file against its sha256.

    A damaged or altered file exits with status 2 and says why, as `rlrctl score` would.
    """
    from rlr.artifact import read_manifest, verify_artifact

    m = read_manifest(model_path) if no_verify else verify_artifact(model_path)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    cfg, bb = m["config"], m["backbone"]
    rows = [
        ("schema", m["schema_version"]),
        ("created", m.get("created_at")),
        ("backbone", f"{bb['name']} {tuple(cfg['backbone']['out_indices'])} "
                     f"@ {bb['image_size']} px, weights {bb['weight_source']}"),
        ("levels", ", ".join(f"{tuple(g)} d={lv['d_model']} x{lv['n_layers']}"
                             for g, lv in zip(bb["grid_sizes"], cfg["levels"], strict=True))),
        ("classes", ", ".join(m["class_names"]) or "-"),
        ("thresholds", json.dumps(m.get("thresholds"))),
        ("sha256", f"{m['sha256']} " + ("(not verified: --no-verify)" if no_verify
                                          else "(verified)")),
    ]
    result = (m.get("training") or {}).get("result")
    if result:
        rows.append(("training", f"best epoch {result['best_epoch']}/{result['epochs_run']}, "
                                 f"val loss {result['best_val_loss']:.4f}"))
    for k, v in rows:
        click.echo(f"{k:<11} {v}")
