"""Small helpers shared by tests."""

from __future__ import annotations

from pathlib import Path


def split_test_images(root: Path, cls: str) -> tuple[list[Path], list[int]]:
    good = sorted((root / cls / "test" / "good").glob("*.png"))
    bad = sorted(p for d in (root / cls / "test").iterdir() if d.name != "good"
                 for p in d.glob("*.png"))
    return good + bad, [0] * len(good) + [1] * len(bad)


def make_visa_tree(mvtec_root: Path, out: Path) -> Path:
    """Re-lay an MVTec-style tree as VisA: `<obj>/Data/Images/...`, label-image masks and
    `split_csv/1cls.csv`."""
    import csv

    import numpy as np
    from PIL import Image

    rows = []
    for cls_dir in sorted(p for p in mvtec_root.iterdir() if p.is_dir()):
        obj = cls_dir.name
        img_dir = out / obj / "Data" / "Images"
        mask_dir = out / obj / "Data" / "Masks" / "Anomaly"
        for sub in ("Normal", "Anomaly"):
            (img_dir / sub).mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(sorted((cls_dir / "train" / "good").glob("*.png"))):
            dst = img_dir / "Normal" / f"tr{i:03d}.JPG"
            Image.open(p).convert("RGB").save(dst, quality=95)
            rows.append([obj, "train", "normal", dst.relative_to(out).as_posix(), ""])
        for d in sorted((cls_dir / "test").iterdir()):
            for i, p in enumerate(sorted(d.glob("*.png"))):
                name = f"{d.name}{i:03d}"
                if d.name == "good":
                    dst = img_dir / "Normal" / f"{name}.JPG"
                    Image.open(p).convert("RGB").save(dst, quality=95)
                    rows.append([obj, "test", "normal", dst.relative_to(out).as_posix(), ""])
                    continue
                dst = img_dir / "Anomaly" / f"{name}.JPG"
                Image.open(p).convert("RGB").save(dst, quality=95)
                m = np.asarray(Image.open(cls_dir / "ground_truth" / d.name / f"{p.stem}_mask.png"))
                label = (m > 127).astype(np.uint8) * 2  # VisA masks are label images
                mdst = mask_dir / f"{name}.png"
                Image.fromarray(label).save(mdst)
                rows.append([obj, "test", "anomaly", dst.relative_to(out).as_posix(),
                             mdst.relative_to(out).as_posix()])
    (out / "split_csv").mkdir(parents=True, exist_ok=True)
    with (out / "split_csv" / "1cls.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(rows)
    return out


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG file whose header declares `width` x `height` pixels (its data is a stub):
    what a hostile or broken camera can send to make a decoder allocate gigabytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
