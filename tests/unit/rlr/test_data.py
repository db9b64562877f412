from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlr.data import (
    Sample,
    check_images,
    decode_image,
    list_images,
    load_image,
    split_validation,
    to_tensor,
)
from rlr.datasets import load_dataset
from rlr.errors import DataError


def _rgb(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(path: Path, image: Image.Image | np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, fmt)
    return path


def _mvtec(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        folder = root / name / "train" / "good"
        folder.mkdir(parents=True)
        for i in range(n):
            _save(folder / f"{i:03d}.png", _rgb(seed=i))
    return root


# ----------------------------------------------------------------------------- load_image


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    image = _rgb()
    out = load_image(_save(tmp_path / "a.png", image))
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3)
    np.testing.assert_array_equal(out, image)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    out = load_image(_save(tmp_path / "g.png", gray))
    assert out.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_sixteen_bit_is_scaled_by_bit_depth_not_min_max(tmp_path: Path, ext: str) -> None:
    values = np.array([[0, 257 * 100, 65535, 1000]], dtype=np.uint16)
    path = _save(tmp_path / f"d.{ext}", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    # 1000 / 257 rounds to 4; a min/max stretch would have made the dark image bright.
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255, 4])
    dark = np.full((4, 4), 1000, dtype=np.uint16)
    assert load_image(_save(tmp_path / f"dark.{ext}", Image.fromarray(dark))).max() == 4


def test_palette_and_opaque_alpha_are_accepted(tmp_path: Path) -> None:
    image = _rgb()
    rgba = np.concatenate([image, np.full((12, 16, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(_save(tmp_path / "o.png", rgba)), image)
    palette = Image.fromarray(image).quantize(colors=16)
    out = load_image(_save(tmp_path / "p.png", palette))
    np.testing.assert_array_equal(out, np.asarray(palette.convert("RGB")))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_image_is_rejected_with_a_fix(tmp_path: Path, mode: str) -> None:
    img = Image.new(mode, (8, 8))
    img.putpixel((0, 0), (0, 0, 0, 128) if mode == "RGBA" else (0, 128))
    path = _save(tmp_path / "t.png", img)
    with pytest.raises(DataError, match="transparency") as info:
        load_image(path)
    assert str(path) in str(info.value) and "RGB" in str(info.value)


def test_cmyk_is_rejected_naming_file_and_mode(tmp_path: Path) -> None:
    path = _save(tmp_path / "c.jpg", Image.new("CMYK", (8, 8), (0, 50, 100, 0)))
    with pytest.raises(DataError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and "CMYK" in message and "4 channel" in message
    assert "accepted" in message


def test_float_mode_is_rejected(tmp_path: Path) -> None:
    path = _save(tmp_path / "f.tif", Image.new("F", (4, 4)))
    with pytest.raises(DataError, match="mode F"):
        load_image(path)


def test_corrupt_truncated_and_missing_files_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png at all")
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for path in (garbage, truncated, tmp_path / "missing.png"):
        with pytest.raises(DataError) as info:
            load_image(path)
        assert str(path) in str(info.value)


def test_resize_and_decode_bytes(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(_rgb(40, 60)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), size=32).shape == (32, 32, 3)
    assert decode_image(buf.getvalue(), size=100).shape == (100, 100, 3)
    # A flat image stays flat: the filter must not ring or shift the level.
    flat = decode_image(_png_bytes(np.full((30, 50, 3), 77, np.uint8)), size=16)
    assert (flat == 77).all()
    with pytest.raises(DataError, match="frame-7"):
        decode_image(b"\x89PNG junk", name="frame-7")


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_to_tensor_layout_and_range() -> None:
    images = [np.zeros((5, 7, 3), np.uint8), np.full((5, 7, 3), 255, np.uint8)]
    images[0][1, 2] = (255, 0, 51)
    t = to_tensor(images)
    assert t.shape == (2, 3, 5, 7) and t.dtype == torch.float32
    assert t[0, :, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert t[1].min() == 1.0
    with pytest.raises(DataError, match="uint8"):
        to_tensor([np.zeros((5, 7, 3), np.float32)])


# ----------------------------------------------------------------------------- discovery


def _normals(root, classes=None) -> list:
    """The normal training images `rlrctl train --data ROOT` reads (the `folder` layout)."""
    return list(load_dataset("folder", root, classes).train)


def test_discover_finds_classes_sorted_and_skips_non_images(tmp_path: Path) -> None:
    root = _mvtec(tmp_path, {"zipper": 2, "bottle": 3})
    (root / "bottle" / "train" / "good" / "notes.txt").write_text("x")
    (root / "bottle" / "train" / "good" / "._000.png").write_bytes(b"macOS junk")
    _save(root / "bottle" / "train" / "good" / "UPPER.PNG", _rgb())
    (root / "stray").mkdir()  # not a class: no train/good
    samples = _normals(root)
    assert [(s.class_name, s.path.name) for s in samples] == [
        ("bottle", "000.png"),
        ("bottle", "001.png"),
        ("bottle", "002.png"),
        ("bottle", "UPPER.PNG"),
        ("zipper", "000.png"),
        ("zipper", "001.png"),
    ]
    assert all(s.label == 0 and s.mask_path is None for s in samples)
    assert {s.class_name for s in _normals(root, ["zipper"])} == {"zipper"}


def test_discover_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        _normals(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        _normals(a_file)

    with pytest.raises(DataError, match="no class folder") as info:
        _normals(tmp_path)
    assert "train/good" in str(info.value)


def test_class_folder_passed_as_root_gets_a_hint(tmp_path: Path) -> None:
    root = _mvtec(tmp_path, {"bottle": 1})
    with pytest.raises(DataError, match="pass its parent"):
        _normals(root / "bottle")


def test_missing_class_lists_the_classes_found(tmp_path: Path) -> None:
    root = _mvtec(tmp_path, {"bottle": 1, "cable": 1})
    with pytest.raises(DataError) as info:
        _normals(root, ["bottle", "screw"])
    message = str(info.value)
    assert "screw" in message and "bottle, cable" in message and str(root) in message


def test_empty_class_names_its_folder(tmp_path: Path) -> None:
    root = _mvtec(tmp_path, {"bottle": 1, "cable": 0})
    (root / "cable" / "train" / "good" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no training images") as info:
        _normals(root)
    assert str(root / "cable" / "train" / "good") in str(info.value)


# ----------------------------------------------------------------------------- check_images


def test_check_images_reports_every_bad_file_at_once(tmp_path: Path) -> None:
    root = _mvtec(tmp_path, {"bottle": 3})
    good = _normals(root)
    check_images(good)  # all fine: no error
    bad1 = root / "bottle" / "train" / "good" / "bad1.png"
    bad1.write_bytes(b"junk")
    bad2 = _save(root / "bottle" / "train" / "good" / "bad2.jpg", Image.new("CMYK", (4, 4)))
    with pytest.raises(DataError) as info:
        check_images(_normals(root), progress=True)
    message = str(info.value)
    assert "2 of 5 images" in message and str(bad1) in message and str(bad2) in message


def test_check_images_caps_the_list(tmp_path: Path) -> None:
    samples = []
    for i in range(13):
        path = tmp_path / f"bad{i:02d}.png"
        path.write_bytes(b"junk")
        samples.append(Sample(path=path, class_name="x"))
    with pytest.raises(DataError) as info:
        check_images(samples)
    message = str(info.value)
    assert "13 of 13" in message and "and 3 more" in message
    assert "bad09.png" in message and "bad10.png" not in message


# ----------------------------------------------------------------------------- split


def _samples(counts: dict[str, int]) -> list[Sample]:
    return [
        Sample(path=Path(f"/data/{name}/train/good/{i:04d}.png"), class_name=name)
        for name, n in counts.items()
        for i in range(n)
    ]


def test_split_is_deterministic_disjoint_and_complete() -> None:
    samples = _samples({"a": 200, "b": 50})
    train, val = split_validation(samples, 0.2, seed=1)
    assert (train, val) == split_validation(samples, 0.2, seed=1)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(samples)
    assert 25 <= sum(s.class_name == "a" for s in val) <= 55  # about 20% of 200
    assert split_validation(samples, 0.2, seed=2)[1] != val
    # The split depends on file names, not on where the data set is mounted.
    moved = [Sample(Path("/mnt") / s.path.name, s.class_name) for s in samples]
    assert [s.path.name for s in split_validation(moved, 0.2, seed=1)[1]] == [
        s.path.name for s in val
    ]


def test_split_guarantees_per_class() -> None:
    samples = _samples({"one": 1, "two": 2, "three": 3})
    train, val = split_validation(samples, 0.01, seed=0)
    per = {c: sum(s.class_name == c for s in val) for c in ("one", "two", "three")}
    assert per == {"one": 0, "two": 1, "three": 1}
    train, val = split_validation(samples, 0.99, seed=0)
    for c in ("one", "two", "three"):
        assert any(s.class_name == c for s in train)
    assert split_validation(samples, 0.0, seed=0) == (samples, [])
    with pytest.raises(ValueError, match="fraction"):
        split_validation(samples, 1.0, seed=0)


def test_adding_a_file_does_not_move_the_others() -> None:
    samples = _samples({"a": 60})
    _, val = split_validation(samples, 0.25, seed=3)
    extra = Sample(Path("/data/a/train/good/new.png"), "a")
    _, val2 = split_validation([*samples, extra], 0.25, seed=3)
    assert [s for s in val2 if s != extra] == val


# ----------------------------------------------------------------------------- list_images


def test_list_images_expands_folders_recursively(tmp_path: Path) -> None:
    a = _save(tmp_path / "d" / "b.png", _rgb())
    b = _save(tmp_path / "d" / "sub" / "a.JPG", _rgb(), "JPEG")
    (tmp_path / "d" / "skip.txt").write_text("x")
    single = _save(tmp_path / "single.bmp", _rgb())
    assert list_images([tmp_path / "d", str(single), a]) == sorted([a, b, single])
    with pytest.raises(DataError, match="does not exist"):
        list_images([tmp_path / "nope"])
    with pytest.raises(DataError, match="not an image"):
        list_images([tmp_path / "d" / "skip.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        list_images([tmp_path / "empty"])


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_close_to_the_full_decode() -> None:
    import cv2

    rng = np.random.default_rng(0)
    big = (rng.random((1200, 1600, 3)) * 40 + np.linspace(0, 200, 1600)[None, :, None])
    buf = io.BytesIO()
    Image.fromarray(big.astype(np.uint8)).save(buf, "JPEG", quality=90)
    fast = decode_image(buf.getvalue(), size=64)  # 1/8 scale is still over 2x 64 px
    full = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    ref = cv2.resize(full, (64, 64), interpolation=cv2.INTER_AREA)
    assert fast.shape == (64, 64, 3)
    assert np.abs(fast.astype(int) - ref).mean() < 1.0
