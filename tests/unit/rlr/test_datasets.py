from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlr import datasets
from rlr.data import load_mask
from rlr.datasets import ELPV_FRACTIONS, check_dataset, elpv_split, load_dataset
from rlr.errors import ConfigError, DataError


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _rgb(seed: int, h: int = 8, w: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _mask(h: int = 8, w: int = 8, value: int = 255) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[2:5, 3:6] = value
    return mask


def _mvtec(root: Path, classes=("bottle", "cable"), masks: bool = True) -> Path:
    """Per class: 3 train, 2 test/good, 2 test/crack (+ masks), 1 test/hole (+ mask)."""
    for c in classes:
        for i in range(3):
            _png(root / c / "train" / "good" / f"{i:03d}.png", _rgb(i))
        for i in range(2):
            _png(root / c / "test" / "good" / f"{i:03d}.png", _rgb(10 + i))
        for defect, n in (("crack", 2), ("hole", 1)):
            for i in range(n):
                _png(root / c / "test" / defect / f"{i:03d}.png", _rgb(20 + i))
                if masks:
                    _png(root / c / "ground_truth" / defect / f"{i:03d}_mask.png", _mask())
    return root


# ----------------------------------------------------------------------------- load_mask


def test_load_mask_reads_binary_label_and_palette_masks(tmp_path: Path) -> None:
    expected = _mask() > 0
    binary = load_mask(_png(tmp_path / "b.png", _mask(value=255)))
    assert binary.dtype == bool and binary.shape == (8, 8)
    np.testing.assert_array_equal(binary, expected)
    labels = _mask(value=1)
    labels[6, 6] = 2  # VisA label images: 0 background, 1, 2, ... one value per defect
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "l.png", labels)), labels > 0)
    palette = Image.fromarray(_mask(value=1), mode="L").convert("P")
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "p.png"), expected)


def test_load_mask_resizes_with_nearest_neighbour(tmp_path: Path) -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 255
    out = load_mask(_png(tmp_path / "m.png", mask), size=8)
    assert out.shape == (8, 8) and out[:4, :4].all() and not out[4:].any()
    assert load_mask(tmp_path / "m.png", size=2).tolist() == [[True, False], [False, False]]


def test_load_mask_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        load_mask(tmp_path / "nope.png")
    assert "nope.png" in str(info.value)
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable mask") as info:
        load_mask(tmp_path / "bad.png")
    assert str(tmp_path / "bad.png") in str(info.value)


# ----------------------------------------------------------------------------- MVTec / folder


def test_mvtec_counts_labels_and_mask_paths(tmp_path: Path) -> None:
    root = _mvtec(tmp_path)
    ds = load_dataset("mvtec", root)
    assert ds.kind == "mvtec" and ds.class_names == ("bottle", "cable") and ds.has_masks
    assert ds.validation is None  # the trainer carves it from train
    assert len(ds.train) == 6 and all(s.label == 0 and s.mask_path is None for s in ds.train)
    bottle = ds.test_of("bottle")
    assert [s.label for s in bottle].count(0) == 2 and [s.label for s in bottle].count(1) == 3
    for s in bottle:
        if s.label:
            defect = s.path.parent.name
            assert (
                s.mask_path == root / "bottle" / "ground_truth" / defect / f"{s.path.stem}_mask.png"
            )
        else:
            assert s.mask_path is None and s.path.parent.name == "good"
    assert ds.summary()["classes"]["cable"] == {
        "train": 3, "validation": None, "test_normal": 2, "test_anomalous": 3, "groups": {}
    }  # fmt: skip
    assert ds.summary()["total"]["train"] == 6
    check_dataset(ds, progress=True)  # every file opens and every mask fits: no error


def test_mvtec_class_subset_and_unknown_class(tmp_path: Path) -> None:
    root = _mvtec(tmp_path, classes=("bottle", "cable", "zipper"))
    ds = load_dataset("mvtec", root, classes=["zipper", "bottle"])
    assert ds.class_names == ("bottle", "zipper")
    assert {s.class_name for s in (*ds.train, *ds.test)} == {"bottle", "zipper"}
    with pytest.raises(DataError, match="grid") as info:
        load_dataset("mvtec", root, classes=["grid"])
    assert "bottle, cable, zipper" in str(info.value)
    with pytest.raises(DataError, match="grid"):
        ds.test_of("grid")


def test_mvtec_defect_image_without_mask_is_named(tmp_path: Path) -> None:
    root = _mvtec(tmp_path)
    (root / "cable" / "ground_truth" / "hole" / "000_mask.png").unlink()
    with pytest.raises(DataError, match="no ground-truth mask") as info:
        load_dataset("mvtec", root)
    message = str(info.value)
    assert str(root / "cable" / "test" / "hole" / "000.png") in message
    assert "1 defect image" in message and "folder" in message


def test_missing_root_empty_class_and_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset("mvtec", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    with pytest.raises(DataError, match="no class folder"):
        load_dataset("mvtec", tmp_path)
    root = _mvtec(tmp_path / "set")
    for p in (root / "cable" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="no training images") as info:
        load_dataset("mvtec", root)
    assert str(root / "cable" / "train" / "good") in str(info.value)
    with pytest.raises(ConfigError, match="mvtec, visa, elpv, folder"):
        load_dataset("coco", root)
    with pytest.raises(ConfigError, match="root"):
        load_dataset("visa")


def test_require_test_names_the_test_folder(tmp_path: Path) -> None:
    root = _mvtec(tmp_path)
    shutil.rmtree(root / "bottle" / "test")
    assert len(load_dataset("mvtec", root).test_of("bottle")) == 0  # training needs no test set
    with pytest.raises(DataError, match="no test images") as info:
        load_dataset("mvtec", root, require_test=True)
    assert str(root / "bottle" / "test") in str(info.value)


def test_folder_kind_has_optional_masks_and_optional_train(tmp_path: Path) -> None:
    root = _mvtec(tmp_path, masks=False)
    ds = load_dataset("folder", root)
    assert not ds.has_masks and len(ds.test) == 10
    assert sum(s.label for s in ds.test) == 6 and all(s.mask_path is None for s in ds.test)
    with_masks = load_dataset("folder", _mvtec(tmp_path / "m"))
    assert with_masks.has_masks and all(s.mask_path for s in with_masks.test if s.label)
    shutil.rmtree(root / "cable" / "train")  # evaluation-only class
    with pytest.raises(DataError, match="cable"):
        load_dataset("folder", root, classes=["cable"])
    ds = load_dataset("folder", root, require_train=False, require_test=True)
    assert ds.class_names == ("bottle", "cable") and len(ds.test_of("cable")) == 5


# ----------------------------------------------------------------------------- VisA


def _visa(root: Path) -> Path:
    rows = [("object", "split", "label", "image", "mask")]
    for obj in ("candle", "pcb1"):
        for i in range(3):
            image = f"{obj}/Data/Images/Normal/{i:03d}.JPG"
            _png(root / image, _rgb(i))
            rows.append((obj, "train" if i < 2 else "test", "normal", image, ""))
        for i in range(2):
            image = f"{obj}/Data/Images/Anomaly/{i:03d}.JPG"
            mask = f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
            _png(root / image, _rgb(10 + i))
            _png(root / mask, _mask(value=i + 1))  # label image: values 0, 1, 2
            rows.append((obj, "test", "anomaly", image, mask))
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def test_visa_reads_the_split_csv(tmp_path: Path) -> None:
    root = _visa(tmp_path)
    ds = load_dataset("visa", root)
    assert ds.class_names == ("candle", "pcb1") and ds.has_masks and ds.validation is None
    assert len(ds.train) == 4 and len(ds.test) == 6
    anomalous = [s for s in ds.test_of("pcb1") if s.label]
    assert [s.mask_path for s in anomalous] == [
        root / "pcb1/Data/Masks/Anomaly/000.png",
        root / "pcb1/Data/Masks/Anomaly/001.png",
    ]
    assert load_mask(anomalous[1].mask_path).sum() == 9  # value 2 counts as defect too
    assert load_dataset("visa", root, classes=["pcb1"]).class_names == ("pcb1",)
    check_dataset(ds)


def test_visa_missing_csv_and_bad_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"split_csv/1cls\.csv") as info:
        load_dataset("visa", tmp_path)
    assert "--data" in str(info.value)
    root = _visa(tmp_path)
    csv_path = root / "split_csv" / "1cls.csv"
    lines = csv_path.read_text().splitlines()
    lines[-1] = ",".join(lines[-1].split(",")[:-1]) + ","  # anomaly row without a mask
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="has no mask") as info:
        load_dataset("visa", root)
    assert str(csv_path) in str(info.value) and f"line {len(lines)}" in str(info.value)
    csv_path.write_text("object,split,image\ncandle,train,x.png\n")
    with pytest.raises(DataError, match="label, mask"):
        load_dataset("visa", root)


# ----------------------------------------------------------------------------- check_dataset


def test_check_dataset_lists_every_problem_at_once(tmp_path: Path) -> None:
    root = _mvtec(tmp_path)
    broken = root / "bottle" / "train" / "good" / "001.png"
    broken.write_bytes(b"junk")
    wrong_size = _png(root / "cable" / "ground_truth" / "crack" / "001_mask.png", _mask(4, 6))
    bad_mask = root / "cable" / "ground_truth" / "hole" / "000_mask.png"
    bad_mask.write_bytes(b"junk")
    ds = load_dataset("mvtec", root)
    gone = root / "bottle" / "ground_truth" / "crack" / "000_mask.png"
    gone.unlink()  # vanished after loading
    with pytest.raises(DataError) as info:
        check_dataset(ds)
    message = str(info.value)
    assert message.startswith("4 problem(s)")
    for path in (broken, wrong_size, bad_mask, gone):
        assert str(path) in message
    assert "6x4" in message and "8x8" in message


def test_check_dataset_caps_the_list(tmp_path: Path) -> None:
    root = _mvtec(tmp_path, classes=("bottle",))
    for i in range(12):
        (root / "bottle" / "train" / "good" / f"bad{i:02d}.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="12 problem") as info:
        check_dataset(load_dataset("mvtec", root))
    assert "and 2 more" in str(info.value)


# ----------------------------------------------------------------------------- ELPV


@pytest.fixture(scope="module")
def elpv():
    return load_dataset("elpv")


def test_elpv_classes_groups_and_counts(elpv) -> None:
    assert elpv.class_names == ("mono", "poly") and not elpv.has_masks
    assert elpv.groups == ("p=1/3", "p=2/3")
    summary = elpv.summary()
    # labels.csv of elpv-dataset 1.0: p=0 / 1/3 / 2/3 / 1 = 588/117/56/313 mono, 920/178/50/402 poly
    for name, (normal, third, two_thirds, bad) in {
        "mono": (588, 117, 56, 313),
        "poly": (920, 178, 50, 402),
    }.items():
        c = summary["classes"][name]
        assert c["train"] + c["validation"] + c["test_normal"] == normal
        assert c["test_anomalous"] == bad
        assert c["groups"] == {"p=1/3": third, "p=2/3": two_thirds}
    assert all(s.label == 1 for s in elpv.test if s.group)
    assert all(s.mask_path is None for s in elpv.test)
    assert all(s.label == 0 and s.group == "" for s in (*elpv.train, *elpv.validation))


def test_elpv_split_is_disjoint_near_60_10_30_and_deterministic(elpv) -> None:
    names = [
        {s.path.name for s in part}
        for part in (elpv.train, elpv.validation, [s for s in elpv.test if s.label == 0])
    ]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    total = sum(len(n) for n in names)
    assert total == 588 + 920
    for got, want in zip((len(n) / total for n in names), ELPV_FRACTIONS, strict=True):
        assert abs(got - want) < 0.03
    assert load_dataset("elpv") == elpv
    other = load_dataset("elpv", seed=1)
    assert {s.path.name for s in other.train} != names[0]


def test_elpv_test_of_groups(elpv) -> None:
    headline = elpv.test_of("mono")
    assert all(s.group == "" for s in headline) and sum(s.label for s in headline) == 313
    third = elpv.test_of("mono", "p=1/3")
    assert sum(s.label for s in third) == 117
    assert {s for s in third if s.label == 0} == {s for s in headline if s.label == 0}
    assert len(elpv.test_of(group=None)) == len(elpv.test)


def test_elpv_split_is_stable_when_files_are_added(tmp_path: Path) -> None:
    source = Path(datasets._elpv_labels(None)).parent
    lines = (source / "labels.csv").read_text().splitlines()
    normals = [line for line in lines if float(line.split()[1]) == 0.0]
    for line in normals[:9]:
        image = line.split()[0]
        (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / image, tmp_path / image)
    (tmp_path / "labels.csv").write_text("\n".join(normals[:8]) + "\n")

    def splits(ds) -> dict[str, str]:
        parts = {"train": ds.train, "validation": ds.validation, "test": ds.test}
        return {s.path.name: k for k, part in parts.items() for s in part}

    before = splits(load_dataset("elpv", tmp_path))
    (tmp_path / "labels.csv").write_text("\n".join(normals[:9]) + "\n")
    after_ds = load_dataset("elpv", tmp_path)
    after = splits(after_ds)
    assert len(after) == 9 and {k: after[k] for k in before} == before
    assert all(after[name] == elpv_split(name) for name in after)
    check_dataset(after_ds)  # paths resolve against the given folder


def test_elpv_split_function() -> None:
    assert elpv_split("cell0001.png") == elpv_split("cell0001.png", seed=0)
    counts = {"train": 0, "validation": 0, "test": 0}
    for i in range(4000):
        counts[elpv_split(f"cell{i:04d}.png", seed=3)] += 1
    assert abs(counts["train"] / 4000 - 0.6) < 0.03
    assert abs(counts["validation"] / 4000 - 0.1) < 0.02


def test_elpv_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"labels\.csv"):
        load_dataset("elpv", tmp_path)
    (tmp_path / "labels.csv").write_text("images/cell0001.png  0.5  mono\n")
    with pytest.raises(DataError, match="line 1"):
        load_dataset("elpv", tmp_path)
    with pytest.raises(DataError, match="mono, poly"):
        load_dataset("elpv", classes=["cigs"])
    monkeypatch.setattr(datasets, "_ELPV_PACKAGE", "elpv_dataset_not_installed")
    with pytest.raises(DataError, match="pip install elpv-dataset"):
        load_dataset("elpv")
