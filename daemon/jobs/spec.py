"""The spec of a training job: what to train, on which data, and where to deploy the result.

Checked twice: cheaply where it is submitted (`JobSpec.validate`), and by the trainer, which
alone can see the data path.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import PurePosixPath, PureWindowsPath

from daemon.errors import JobError
from rlr.config import DATASET_KINDS as KINDS
from rlr.config import PRESETS, TrainingRun
from rlr.errors import RLRError

SPEC_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _absolute(path: str) -> bool:
    return PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute()


@dataclass(frozen=True)
class JobSpec(TrainingRun):
    """What to train (the fields of `rlr.config.TrainingRun`), as the TRAINER machine sees it
    (paths are checked there, not here), and what to calibrate and deploy afterwards.

    Overrides left None keep the preset's values. `deploy_line` with `canary_cameras` or
    `canary_percent` rolls the new version out as that line's canary when the
    job succeeds.
    """

    far: float = 0.005
    deploy_line: str | None = None
    canary_cameras: tuple[str, ...] | None = None
    canary_percent: float | None = None

    def __post_init__(self) -> None:
        for name in ("classes", "canary_cameras"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value) or None)

    def validate(self) -> JobSpec:
        """Check everything that can be checked away from the trainer; raise `JobError`."""
        problems = []
        if self.dataset not in KINDS:
            problems.append(f"dataset {self.dataset!r} unknown; use one of {', '.join(KINDS)}")
        if self.preset not in PRESETS:
            problems.append(f"preset {self.preset!r} unknown; use one of "
                            f"{', '.join(sorted(PRESETS))}")
        if self.dataset != "elpv" and not self.data:
            problems.append(f"dataset {self.dataset} needs a data path (--data), as the trainer "
                            "machine sees it")
        if self.data and not _absolute(self.data):
            problems.append(f"data path {self.data!r} is relative; give it absolute, as the "
                            "trainer machine sees it (e.g. /data/mvtec)")
        weights = self.backbone_weights
        if weights and weights not in ("packaged", "hub", "none") and not _absolute(weights):
            problems.append(f"backbone weights {weights!r}: use packaged, hub, none or an "
                            "absolute path on the trainer machine")
        if self.classes is not None and any(not c or "," in c for c in self.classes):
            problems.append(f"classes {list(self.classes)} must be non-empty names")
        if self.epochs is not None and self.epochs < 1:
            problems.append(f"epochs {self.epochs} must be at least 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            problems.append(f"max_minutes {self.max_minutes} must be positive")
        if not (isinstance(self.far, (int, float)) and 0.0 < self.far < 1.0):
            problems.append(f"far {self.far} must be in (0, 1), e.g. 0.005 for 0.5 % false alarms")
        problems += self._deploy_problems()
        if not problems:
            try:
                self.config()  # batch size, lr, image size ...: the library's own checks
            except RLRError as exc:
                problems.append(str(exc))
        if problems:
            raise JobError("invalid training job: " + "; ".join(problems))
        return self

    def _deploy_problems(self) -> list[str]:
        out = []
        canary = self.canary_cameras is not None or self.canary_percent is not None
        if canary and not self.deploy_line:
            out.append("canary cameras / percent need a line to deploy to (--deploy-line)")
        if self.deploy_line and not canary:
            out.append(f"deploying to line {self.deploy_line} is a canary: give "
                       "--canary-cameras a,b or --canary-percent P")
        if self.canary_cameras is not None and self.canary_percent is not None:
            out.append("give --canary-cameras or --canary-percent, not both")
        for kind, name in [("line", self.deploy_line), *(("camera", c)
                                                         for c in self.canary_cameras or ())]:
            if name is not None and not _NAME.match(name):
                out.append(f"{kind} {name!r} is not a valid name (1-64 letters, digits, _ . -)")
        p = self.canary_percent
        if p is not None and not (isinstance(p, (int, float)) and 0 < p <= 100):
            out.append(f"canary percent {p} must be in (0, 100]")
        return out

    def run(self) -> TrainingRun:
        """What to train, as `rlrctl train` asks for it."""
        return TrainingRun(**{f.name: getattr(self, f.name) for f in fields(TrainingRun)})

    def to_json(self) -> str:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return json.dumps({"v": SPEC_VERSION, **d}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> JobSpec:
        d = json.loads(text)
        if d.pop("v", None) != SPEC_VERSION:
            raise JobError(f"job spec version is not {SPEC_VERSION}; resubmit it with this "
                           "rlrctl version")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def describe(self) -> str:
        where = self.data or "(elpv package)"
        what = f"{self.preset} on {self.dataset} {where}"
        if self.classes:
            what += f" [{', '.join(self.classes)}]"
        if self.deploy_line:
            target = ", ".join(filter(None, [
                f"cameras {','.join(self.canary_cameras)}" if self.canary_cameras else "",
                f"{self.canary_percent:g} %" if self.canary_percent is not None else ""]))
            what += f" -> canary on {self.deploy_line} ({target})"
        return what
