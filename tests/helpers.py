"""Small helpers shared by tests."""

from __future__ import annotations

from pathlib import Path


def split_test_images(root: Path, cls: str) -> tuple[list[Path], list[int]]:
    good = sorted((root / cls / "test" / "good").glob("*.png"))
    bad = sorted(p for d in (root / cls / "test").iterdir() if d.name != "good"
                 for p in d.glob("*.png"))
    return good + bad, [0] * len(good) + [1] * len(bad)
