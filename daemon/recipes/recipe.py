"""A recipe as a plant engineer writes it (a TOML or JSON file) and as Redis keeps it.

    name = "bracket-a"          # an id (daemon.wire.ids)
    number = 3                  # optional: the PLC selects recipes by number (1-65535)
    product = "BRK-100-A"       # the product id the records and OPC UA carry
    class = "bracket"           # the unified model's class to score with
    model = "production"        # alias (production / canary) or version id that must serve
    threshold = 0.82            # optional: replaces the model's threshold for this product
    deadline_ms = 1500          # optional: RLR_PART_DEADLINE_MS for this product
    incomplete = "reject"       # what the gate does with a part missing a view: reject / pass

    [[views]]
    name = "top"
    camera = "cam1"             # optional: the camera that shoots this view
    [[views]]
    name = "side"
    camera = "cam1"
    threshold = 0.9             # optional, per view
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daemon.errors import DaemonError
from daemon.wire import ids


class RecipeError(DaemonError):
    """A recipe that cannot be read, stored or activated; the message says which field or
    why, in one line."""


def _id(kind: str, value: Any) -> str:
    try:
        return ids.check(kind, value)
    except ids.BadId as exc:
        raise ValueError(str(exc)) from None


class View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    camera: str | None = None
    threshold: float | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _id("view", v)

    @field_validator("camera")
    @classmethod
    def _camera(cls, v: str | None) -> str | None:
        return None if v is None else _id("camera", v)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    number: int | None = Field(default=None, ge=1, le=65535)
    product: str
    product_class: str = Field(alias="class")
    model: str = "production"
    threshold: float | None = Field(default=None, gt=0)
    deadline_ms: int | None = Field(default=None, ge=10, le=600_000)
    incomplete: Literal["reject", "pass"] = "reject"
    views: tuple[View, ...] = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=1000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _id("recipe", v)

    @field_validator("product")
    @classmethod
    def _product(cls, v: str) -> str:
        return _id("product", v)

    @field_validator("product_class")
    @classmethod
    def _class(cls, v: str) -> str:
        return _id("class", v)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _id("model", v) if v else "production"

    @model_validator(mode="after")
    def _unique_views(self) -> Recipe:
        names = [v.name for v in self.views]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"view(s) {', '.join(twice)} listed twice")
        return self

    # ------------------------------------------------------------------ reading it

    @property
    def view_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.views)

    def view(self, name: str) -> View | None:
        return next((v for v in self.views if v.name == name), None)

    def view_of(self, camera: str, view: str | None) -> str | None:
        """The view a frame of `camera` shows: its own `view` field, else the one view bound
        to that camera, else None (the frame names no view the recipe can place)."""
        if view is not None:
            return view
        bound = [v.name for v in self.views if v.camera == camera]
        if len(bound) == 1:
            return bound[0]
        if len(self.views) == 1 and self.views[0].camera is None:
            return self.views[0].name
        return None

    def threshold_for(self, view: str | None) -> float | None:
        """The threshold this recipe sets for `view` (None: the model's own)."""
        v = self.view(view) if view is not None else None
        return v.threshold if v is not None and v.threshold is not None else self.threshold

    def to_json(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _where(err: dict) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ())) or "recipe"
    return f"{loc}: {err.get('msg', 'invalid')}"


def parse(data: Any, source: str = "recipe") -> Recipe:
    """A recipe from its decoded form; `RecipeError` naming the first bad field."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a table of fields, not {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RecipeError(f"{source}: {_where(errors[0])}{more}") from None


def load(path: str | Path) -> Recipe:
    """A recipe file: `.toml` or `.json`. One line naming the field when it does not parse."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file {p}: {exc.strerror or exc}") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise RecipeError(f"{p}: not UTF-8 text") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{p}: not valid TOML ({exc})") from None
    except json.JSONDecodeError as exc:
        raise RecipeError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                          f"{exc.colno})") from None
    return parse(data, str(p))


def from_json(text: str | bytes) -> Recipe:
    return parse(json.loads(text), "stored recipe")


class Activation(BaseModel):
    """A recipe made active on a line: from `since` (seconds since the epoch) on, parts whose
    trigger (first capture) is at or after `since` are made under it; `previous` is the one
    it replaced, still in force for parts triggered before (frames in flight at the switch)."""

    model_config = ConfigDict(frozen=True)

    line: str
    recipe: Recipe
    revision: int
    since: float
    by: str = ""
    via: str = ""  # cli / modbus / opcua / console / env
    previous: Activation | None = None

    @property
    def label(self) -> str:
        """`name@revision`: how verdicts and records name the recipe."""
        return f"{self.recipe.name}@{self.revision}"

    def at(self, ts: float) -> Activation:
        """The activation in force for a part triggered at `ts`."""
        if ts < self.since and self.previous is not None:
            return self.previous.at(ts)
        return self

    def to_hash(self) -> dict[str, str]:
        """The fields of `keys.recipe_active(line)` (the previous one kept one level deep)."""
        prev = self.previous
        if prev is not None:
            prev = prev.model_copy(update={"previous": None})
        return {"name": self.recipe.name, "revision": str(self.revision),
                "since": repr(self.since), "by": self.by, "via": self.via,
                "recipe": json.dumps(self.recipe.to_json()),
                "previous": "" if prev is None else prev.model_dump_json(by_alias=True)}

    @classmethod
    def from_hash(cls, line: str, fields: dict) -> Activation | None:
        """The hash as Redis returns it (bytes or text); None when empty."""
        t = {(k.decode() if isinstance(k, bytes) else k):
             (v.decode() if isinstance(v, bytes) else v) for k, v in fields.items()}
        if not t.get("recipe"):
            return None
        prev = cls.model_validate_json(t["previous"]) if t.get("previous") else None
        return cls(line=line, recipe=from_json(t["recipe"]), revision=int(t["revision"]),
                   since=float(t["since"]), by=t.get("by", ""), via=t.get("via", ""),
                   previous=prev)
