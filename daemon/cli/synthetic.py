"""`rlrctl synthetic`: write a synthetic multi-class data set with defect masks."""

from __future__ import annotations

import click


@click.command()
@click.argument("out", type=click.Path())
@click.option("--classes", default="", help="Comma-separated subset of the synthetic classes.")
@click.option("--n-train", default=40, show_default=True, help="Normal training images per class.")
@click.option("--n-test", default=6, show_default=True, help="Test images per class and kind.")
@click.option("--size", default=256, show_default=True, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True)
def synthetic(out, classes, n_train, n_test, size, seed) -> None:
    """Write a synthetic multi-class data set (MVTec-AD layout, with defect masks) to OUT."""
    from rlr.synthetic import write_dataset

    root = write_dataset(out, classes=[c for c in classes.split(",") if c] or None,
                         n_train=n_train, n_test_good=n_test, n_test_defect=n_test, size=size,
                         seed=seed, progress=True)
    click.echo(f"wrote synthetic data set to {root}")
