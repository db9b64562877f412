"""Data-set loaders: MVTec-AD, VisA, ELPV and a generic folder layout, all as one `Dataset`.

`load_dataset` only reads folder listings and label files; `check_dataset` then opens every
image and mask once, so a broken file stops a job before training or evaluation starts.

ELPV (PyPI `elpv-dataset`, electroluminescence images of solar cells) is licensed
CC BY-NC-SA 4.0: use it for tests and benchmarks only. It is read from the installed package
and never vendored into this repository or into a model artifact.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlr.config import DATASET_KINDS
from rlr.data import Sample, format_problems, is_image_file, load_image, load_mask
from rlr.errors import ConfigError, DataError

KINDS: tuple[str, ...] = DATASET_KINDS

# ELPV normals (p = 0) go to train / validation / test by these shares; see `elpv_split`.
ELPV_FRACTIONS: tuple[float, float, float] = (0.6, 0.1, 0.3)
_ELPV_PACKAGE = "elpv_dataset"
_ELPV_GROUPS = {1: "p=1/3", 2: "p=2/3"}  # probability * 3 -> group; 0 normal, 3 headline defect
_VISA_CSV = Path("split_csv") / "1cls.csv"
_VISA_COLUMNS = ("object", "split", "label", "image", "mask")


@dataclass(frozen=True)
class Dataset:
    """A loaded data set. `validation=None`: the trainer carves one from `train`
    (`rlr.data.split_validation`). Test samples with a non-empty `group` are reported as their
    own rows and kept out of the headline metrics."""

    kind: str
    root: Path
    class_names: tuple[str, ...]
    train: tuple[Sample, ...]
    validation: tuple[Sample, ...] | None
    test: tuple[Sample, ...]
    has_masks: bool

    @property
    def groups(self) -> tuple[str, ...]:
        """The non-headline test groups present, sorted (e.g. ("p=1/3", "p=2/3"))."""
        return tuple(sorted({s.group for s in self.test if s.group}))

    def test_of(self, class_name: str | None = None, group: str | None = "") -> tuple[Sample, ...]:
        """Test samples of one class (None: all classes), each result a set to score as one.

        `group=""`: the headline set (normals and headline anomalies); a group name: the
        headline normals plus that group's samples; `None`: every test sample.
        """
        if class_name is not None and class_name not in self.class_names:
            raise DataError(
                f"class {class_name!r} is not in this {self.kind} data set; "
                f"classes: {', '.join(self.class_names)}"
            )
        if group and group not in self.groups:
            raise DataError(
                f"test group {group!r} is not in this {self.kind} data set; "
                f"groups: {', '.join(self.groups) or '(none)'}"
            )
        out = []
        for s in self.test:
            if class_name is not None and s.class_name != class_name:
                continue
            if group is None or s.group == group or (not s.group and s.label == 0):
                out.append(s)
        return tuple(out)

    def summary(self) -> dict[str, Any]:
        """Image counts per class and in total, JSON-ready (for logs and the model manifest).

        Per class: train, validation (None when carved from train later), test_normal,
        test_anomalous (headline only) and groups ({group: count}).
        """
        per_class = {name: _counts(self, name) for name in self.class_names}
        total = _counts(self, None)
        return {
            "kind": self.kind,
            "root": str(self.root),
            "has_masks": self.has_masks,
            "classes": per_class,
            "total": total,
        }


def _counts(ds: Dataset, class_name: str | None) -> dict[str, Any]:
    def mine(samples: Iterable[Sample]) -> list[Sample]:
        return [s for s in samples if class_name is None or s.class_name == class_name]

    test = mine(ds.test)
    groups: dict[str, int] = {}
    for s in test:
        if s.group:
            groups[s.group] = groups.get(s.group, 0) + 1
    return {
        "train": len(mine(ds.train)),
        "validation": None if ds.validation is None else len(mine(ds.validation)),
        "test_normal": sum(1 for s in test if not s.group and s.label == 0),
        "test_anomalous": sum(1 for s in test if not s.group and s.label != 0),
        "groups": dict(sorted(groups.items())),
    }


# ----------------------------------------------------------------------------- loading


def load_dataset(
    kind: str,
    root: str | Path | None = None,
    classes: Sequence[str] | None = None,
    seed: int = 0,
    *,
    require_train: bool = True,
    require_test: bool = False,
) -> Dataset:
    """Load a data set of `kind` ("mvtec", "visa", "elpv" or "folder") from `root`.

    `classes=None` takes every class found. `seed` drives the ELPV split only.
    `require_train`: every class needs normal training images (set False to evaluate a
    folder set that has only test images); `require_test`: every class needs test images.
    Reads listings and label files only; run `check_dataset` to open every file.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown data set kind {kind!r}; choose from {', '.join(KINDS)}")
    if isinstance(classes, str):  # "bottle" means one class, not six one-letter ones
        classes = [classes]
    if classes is not None and not list(classes):
        raise ConfigError("classes is empty; pass None for every class, or name at least one")
    if kind == "elpv":
        ds = _load_elpv(root, classes, seed)
    elif root is None:
        raise ConfigError(f"data set kind {kind!r} needs a root folder; pass it with --data")
    elif kind == "visa":
        ds = _load_visa(Path(root), classes)
    else:
        ds = _load_tree(Path(root), classes, kind, require_train)
    for name in ds.class_names:
        if require_train and not any(s.class_name == name for s in ds.train):
            raise DataError(
                f"class {name!r} has no training images in {_source(ds, name, 'train')}; add "
                "normal images or leave the class out"
            )
        if require_test and not any(s.class_name == name for s in ds.test):
            raise DataError(
                f"class {name!r} has no test images in {_source(ds, name, 'test')}; add test "
                "images or leave the class out"
            )
    return ds


def _source(ds: Dataset, class_name: str, split: str) -> str:
    """Where a class's images of `split` come from, for error messages."""
    if ds.kind == "visa":
        return f"{ds.root / _VISA_CSV} (object {class_name}, split {split})"
    if ds.kind == "elpv":
        return f"{ds.root / 'labels.csv'} (type {class_name})"
    return str(ds.root / class_name / ("train/good" if split == "train" else "test"))


def _existing_dir(root: Path, layout: str) -> Path:
    if not root.exists():
        raise DataError(f"data root {root} does not exist; pass the folder that holds {layout}")
    if not root.is_dir():
        raise DataError(f"data root {root} is a file; pass the folder that holds {layout}")
    return root


def _select(found: Sequence[str], classes: Sequence[str] | None, where: str) -> list[str]:
    if classes is None:
        return sorted(found)
    missing = [c for c in classes if c not in found]
    if missing:
        raise DataError(
            f"class(es) {', '.join(missing)} not found in {where}; classes available: "
            f"{', '.join(sorted(found))}"
        )
    return sorted(set(classes))


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


# ----------------------------------------------------------------------------- MVTec / folder


def _load_tree(
    root: Path, classes: Sequence[str] | None, kind: str, require_train: bool
) -> Dataset:
    """MVTec-AD (`kind="mvtec"`, a mask per defect image) or the same tree, masks optional."""
    layout = "one folder per class: <class>/train/good, <class>/test/<good or defect>"
    root = _existing_dir(root, layout)

    def is_class(d: Path) -> bool:
        return (d / "train" / "good").is_dir() or (not require_train and (d / "test").is_dir())

    found = [d.name for d in root.iterdir() if d.is_dir() and is_class(d)]
    if not found:
        hint = f" {root} looks like one class folder; pass its parent." if is_class(root) else ""
        raise DataError(
            f"no class folder with train/good found under {root}; expected {layout}.{hint}"
        )
    wanted = _select(found, classes, str(root))

    train: list[Sample] = []
    test: list[Sample] = []
    missing: list[str] = []
    for name in wanted:
        train += [Sample(p, name) for p in _images(root / name / "train" / "good")]
        test_dir = root / name / "test"
        subs = sorted(d for d in test_dir.iterdir() if d.is_dir()) if test_dir.is_dir() else []
        for sub in subs:
            label = 0 if sub.name == "good" else 1
            gt_dir = root / name / "ground_truth" / sub.name
            masks = _mask_index(gt_dir) if label else {}
            for image in _images(sub):
                mask = masks.get(image.stem)
                # A ground_truth/<defect> folder promises a mask per image, in either layout.
                if label and mask is None and (kind == "mvtec" or gt_dir.is_dir()):
                    missing.append(f"{image}: expected mask {gt_dir / (image.stem + '_mask.png')}")
                test.append(Sample(image, name, label, mask))
    if missing:
        raise DataError(
            f"{len(missing)} defect image(s) under {root} have no ground-truth mask:\n"
            f"{format_problems(missing)}\nEvery test/<defect>/<name>.png needs "
            "ground_truth/<defect>/<name>_mask.png; add the masks, or load the set as kind "
            "'folder' for image-level labels only"
        )
    anomalous = [s for s in test if s.label]
    has_masks = bool(anomalous) and all(s.mask_path is not None for s in anomalous)
    return Dataset(kind, root, tuple(wanted), tuple(train), None, tuple(test), has_masks)


def _mask_index(gt_dir: Path) -> dict[str, Path]:
    """{image stem: mask path} for `<stem>_mask.<ext>` files; .png wins over other formats."""
    out: dict[str, Path] = {}
    for p in sorted(_images(gt_dir), key=lambda p: (p.suffix.lower() != ".png", p.name)):
        if p.stem.endswith("_mask"):
            out.setdefault(p.stem[: -len("_mask")], p)
    return out


# ----------------------------------------------------------------------------- VisA


def _load_visa(root: Path, classes: Sequence[str] | None) -> Dataset:
    root = _existing_dir(root, f"VisA ({_VISA_CSV} and one folder per object)")
    csv_path = root / _VISA_CSV
    if not csv_path.is_file():
        raise DataError(
            f"{csv_path} not found; point --data at the VisA root folder, the one that "
            f"contains {_VISA_CSV.as_posix()}"
        )
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        absent = [c for c in _VISA_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise DataError(
                f"{csv_path} lacks column(s) {', '.join(absent)}; expected the header "
                f"{','.join(_VISA_COLUMNS)} (found: {','.join(reader.fieldnames or [])})"
            )
        rows = [
            (n, {k: (row.get(k) or "").strip() for k in _VISA_COLUMNS})
            for n, row in enumerate(reader, start=2)
        ]

    problems: list[str] = []
    parsed: list[tuple[str, Sample]] = []  # (split, sample)
    for n, row in rows:
        split, label = row["split"].lower(), row["label"].lower()
        if split not in {"train", "test"} or label not in {"normal", "anomaly"}:
            problems.append(
                f"line {n}: split {row['split']!r} / label {row['label']!r}; "
                "expected split train|test and label normal|anomaly"
            )
        elif not row["object"] or not row["image"]:
            problems.append(f"line {n}: empty object or image column")
        elif split == "train" and label == "anomaly":
            problems.append(
                f"line {n}: training image {row['image']} is labelled anomaly; "
                "training uses normal images only (use 1cls.csv)"
            )
        elif label == "anomaly" and not row["mask"]:
            problems.append(f"line {n}: anomalous image {row['image']} has no mask")
        else:
            mask = root / row["mask"] if label == "anomaly" else None
            is_bad = int(label == "anomaly")
            parsed.append((split, Sample(root / row["image"], row["object"], is_bad, mask)))
    if problems:
        raise DataError(f"{len(problems)} bad row(s) in {csv_path}:\n{format_problems(problems)}")
    if not parsed:
        raise DataError(f"{csv_path} has no image rows; re-download the VisA split files")

    wanted = _select(sorted({s.class_name for _, s in parsed}), classes, str(csv_path))
    keep = set(wanted)
    train = tuple(s for split, s in parsed if split == "train" and s.class_name in keep)
    test = tuple(s for split, s in parsed if split == "test" and s.class_name in keep)
    return Dataset("visa", root, tuple(wanted), train, None, test, True)


# ----------------------------------------------------------------------------- ELPV


def elpv_split(file_name: str, seed: int = 0) -> str:
    """The split of an ELPV normal image: "train", "validation" or "test".

    u = sha256(f"{seed}|{file_name}") read as a number in [0, 1); u < 0.6 train, u < 0.7
    validation, else test (`ELPV_FRACTIONS`). Each file's split depends on its own name
    only, so adding or removing files never moves the others.
    """
    digest = hashlib.sha256(f"{seed}|{file_name}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < ELPV_FRACTIONS[0]:
        return "train"
    if u < ELPV_FRACTIONS[0] + ELPV_FRACTIONS[1]:
        return "validation"
    return "test"


def _elpv_labels(root: str | Path | None) -> Path:
    if root is None:
        spec = importlib.util.find_spec(_ELPV_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(
                "ELPV needs the elpv-dataset package: pip install elpv-dataset (licence "
                "CC BY-NC-SA 4.0, test and benchmark use only); or pass a folder holding "
                "labels.csv and images/"
            )
        return Path(next(iter(spec.submodule_search_locations))) / "data" / "labels.csv"
    root = Path(root)
    labels = root if root.is_file() else root / "labels.csv"
    if not labels.is_file():
        raise DataError(
            f"{labels} not found; pass a folder with the ELPV labels.csv and images/, or no "
            "folder to use the installed elpv-dataset package"
        )
    return labels


def _load_elpv(root: str | Path | None, classes: Sequence[str] | None, seed: int) -> Dataset:
    labels = _elpv_labels(root)
    base = labels.parent
    problems: list[str] = []
    rows: list[tuple[Path, int, str]] = []  # (image, probability * 3, type)
    for n, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            path, prob, cell_type = parts[0], float(parts[1]), parts[2].lower()
            thirds = round(prob * 3)
            if len(parts) != 3 or abs(prob * 3 - thirds) > 1e-6 or not 0 <= thirds <= 3:
                raise ValueError
        except (ValueError, IndexError):
            problems.append(f"line {n}: {line.strip()!r}; expected '<image> <0|1/3|2/3|1> <type>'")
            continue
        rows.append((base / path, thirds, cell_type))
    if problems:
        raise DataError(f"{len(problems)} bad line(s) in {labels}:\n{format_problems(problems)}")
    if not rows:
        raise DataError(f"{labels} lists no images")

    wanted = _select(sorted({t for _, _, t in rows}), classes, str(labels))
    keep = set(wanted)
    split: dict[str, list[Sample]] = {"train": [], "validation": [], "test": []}
    for path, thirds, cell_type in sorted(rows, key=lambda r: (r[2], r[0].name)):
        if cell_type not in keep:
            continue
        if thirds == 0:
            split[elpv_split(path.name, seed)].append(Sample(path, cell_type))
        else:
            group = _ELPV_GROUPS.get(thirds, "")
            split["test"].append(Sample(path, cell_type, 1, None, group))
    train, val, test = (tuple(split[k]) for k in ("train", "validation", "test"))
    return Dataset("elpv", base, tuple(wanted), train, val, test, False)


# ----------------------------------------------------------------------------- checking


def check_dataset(ds: Dataset, progress: bool = False) -> None:
    """Open every image and mask once; raise one DataError listing every problem found.

    Problems: unreadable or missing images and masks, masks whose size differs from their
    image, and anomalous images without a mask in a set that has masks.
    """
    samples = [*ds.train, *(ds.validation or ()), *ds.test]
    iterator: Iterable[Sample] = samples
    if progress:
        from tqdm import tqdm

        iterator = tqdm(samples, desc=f"checking {ds.kind} data", unit="img")
    problems: list[str] = []
    files = 0
    for s in iterator:
        files += 1
        try:
            shape = load_image(s.path).shape[:2]
        except DataError as exc:
            problems.append(str(exc))
            shape = None
        if s.mask_path is None:
            if ds.has_masks and s.label:
                problems.append(f"{s.path}: anomalous image without a ground-truth mask")
            continue
        files += 1
        try:
            mask_shape = load_mask(s.mask_path).shape
        except DataError as exc:
            problems.append(str(exc))
            continue
        if shape is not None and mask_shape != shape:
            problems.append(
                f"{s.mask_path}: mask is {mask_shape[1]}x{mask_shape[0]} (WxH) but its image "
                f"{s.path} is {shape[1]}x{shape[0]}; a mask must match its image pixel for pixel"
            )
    if problems:
        raise DataError(
            f"{len(problems)} problem(s) in the {ds.kind} data set at {ds.root} "
            f"({files} files checked):\n{format_problems(problems)}\n"
            "Fix or remove these files, then run again."
        )
