from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from rlr.data import load_image
from rlr.datasets import load_dataset
from rlr.errors import ConfigError, DataError
from rlr.synthetic import CLASSES, DEFECTS, add_defect, make_normal, write_dataset


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_write_dataset_makes_the_mvtec_layout(tmp_path: Path) -> None:
    root = write_dataset(
        tmp_path / "syn",
        ["fabric", "washer"],
        n_train=3,
        n_test_good=2,
        n_test_defect=2,
        size=64,
        seed=0,
    )
    assert root == tmp_path / "syn"
    for name in ("fabric", "washer"):
        cls = root / name
        assert sorted(p.name for p in (cls / "train" / "good").iterdir()) == [
            "000.png",
            "001.png",
            "002.png",
        ]
        assert sorted(p.name for p in (cls / "test").iterdir()) == sorted([*DEFECTS, "good"])
        assert len(list((cls / "test" / "good").iterdir())) == 2
        assert sorted(p.name for p in (cls / "ground_truth").iterdir()) == sorted(DEFECTS)
        for kind in DEFECTS:
            images = sorted((cls / "test" / kind).iterdir())
            assert len(images) == 2
            for image_path in images:
                mask_path = cls / "ground_truth" / kind / f"{image_path.stem}_mask.png"
                image = load_image(image_path)
                mask = load_image(mask_path)[..., 0]
                assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
                assert set(np.unique(mask)) == {0, 255}
                assert 0.005 <= (mask > 0).mean() <= 0.08
    samples = list(load_dataset('folder', root).train)
    assert len(samples) == 6 and {s.class_name for s in samples} == {"fabric", "washer"}


def test_write_dataset_is_deterministic_per_seed_and_per_class(tmp_path: Path) -> None:
    kwargs = {"n_train": 2, "n_test_good": 1, "n_test_defect": 1, "size": 48}
    a = _files(write_dataset(tmp_path / "a", ["tile", "wood"], seed=7, **kwargs))
    b = _files(write_dataset(tmp_path / "b", ["tile", "wood"], seed=7, **kwargs))
    assert a == b
    c = _files(write_dataset(tmp_path / "c", ["tile", "wood"], seed=8, **kwargs))
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    # A class's images do not depend on which other classes are written with it.
    alone = _files(write_dataset(tmp_path / "d", ["wood"], seed=7, **kwargs))
    assert alone == {k: v for k, v in a.items() if k.startswith("wood")}


def test_write_dataset_refuses_to_mix_with_old_files(tmp_path: Path) -> None:
    write_dataset(tmp_path, ["carpet"], n_train=1, n_test_good=0, n_test_defect=0, size=32)
    with pytest.raises(DataError, match="not empty") as info:
        write_dataset(tmp_path, ["carpet"], n_train=1, size=32)
    assert str(tmp_path / "carpet") in str(info.value)
    with pytest.raises(ConfigError, match="bogus"):
        write_dataset(tmp_path / "x", ["bogus"])


def _stats(image: np.ndarray) -> np.ndarray:
    """Mean colour, contrast and edge energy along x and y: a crude texture signature."""
    f = image.astype(np.float32)
    gray = f.mean(axis=2)
    return np.array(
        [
            *f.reshape(-1, 3).mean(axis=0),
            gray.std(),
            np.abs(np.diff(gray, axis=1)).mean() * 4,
            np.abs(np.diff(gray, axis=0)).mean() * 4,
        ]
    )


def test_classes_differ_visibly_and_samples_vary() -> None:
    rng = np.random.default_rng(0)
    images = {c: [make_normal(c, rng, 96) for _ in range(4)] for c in CLASSES}
    for c, imgs in images.items():
        assert imgs[0].dtype == np.uint8 and imgs[0].shape == (96, 96, 3)
        assert not np.array_equal(imgs[0], imgs[1]), f"{c}: samples should vary"
    centre = {c: np.mean([_stats(i) for i in imgs], axis=0) for c, imgs in images.items()}
    spread = max(np.linalg.norm(_stats(i) - centre[c]) for c, imgs in images.items() for i in imgs)
    for a, b in itertools.combinations(CLASSES, 2):
        distance = np.linalg.norm(centre[a] - centre[b])
        assert distance > 30, f"{a} and {b} look alike"
        assert distance > 2 * spread, f"{a} vs {b}: class gap smaller than sample variation"


@pytest.mark.parametrize("kind", DEFECTS)
def test_defects_change_pixels_mostly_inside_the_mask(kind: str) -> None:
    rng = np.random.default_rng(1)
    for name in CLASSES:
        for _ in range(3):
            clean = make_normal(name, rng, 128)
            before = clean.copy()
            image, mask = add_defect(clean, rng, kind)
            np.testing.assert_array_equal(clean, before)  # input untouched
            assert mask.dtype == np.uint8 and mask.shape == (128, 128)
            assert set(np.unique(mask)) == {0, 255}
            inside = mask > 0
            assert 0.005 <= inside.mean() <= 0.08, f"{name}/{kind}: area {inside.mean():.4f}"
            change = np.abs(image.astype(np.int16) - clean).max(axis=2)
            assert change[inside].mean() >= 25, f"{name}/{kind}: defect barely visible"
            changed = change > 12
            assert changed[inside].mean() >= 0.85
            # Outside the mask only anti-aliasing fringes may differ, and only a little.
            assert changed[~inside].sum() <= 0.1 * inside.sum()


def test_add_defect_picks_a_kind_and_rejects_unknown() -> None:
    rng = np.random.default_rng(2)
    image, mask = add_defect(make_normal("tile", rng, 64), rng)
    assert mask.any() and image.shape == (64, 64, 3)
    with pytest.raises(ConfigError, match="crack"):
        add_defect(image, rng, "crack")
    with pytest.raises(ConfigError, match="unknown synthetic class"):
        make_normal("bottle", rng, 64)
