"""Settings machinery every part shares: `PartSettings`, loading, checks and descriptions.

Each part declares its own small `PartSettings` class next to its code (daemon/wire/settings.py,
daemon/serve/settings.py, ...); a process's settings inherit the parts it needs, and the CLI
loads the composition of all of them (daemon/cli/settings.py). This module imports no part.

Precedence: CLI option > environment > settings file (`RLR_CONFIG` or `--config`, the same
`KEY=value` format systemd `EnvironmentFile=`, compose `env_file:` and Kubernetes ConfigMaps
use) > defaults. Invalid values fail at start with the setting's variable name.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from daemon.errors import SettingsError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DOCS = "docs/configuration.md"

S = TypeVar("S", bound="PartSettings")


class PartSettings(BaseSettings):
    """Base of every part's settings: `RLR_*` variables, other names ignored, defaults checked."""

    model_config = SettingsConfigDict(env_prefix="RLR_", extra="ignore", validate_default=True)


def check_name(name: str) -> str:
    """A line, group or consumer name: it becomes part of Redis keys."""
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid name: use 1-64 letters, digits, '_', '.' "
                         "or '-' (it becomes part of Redis keys)")
    return name


def env_name(field: str) -> str:
    return f"RLR_{field.upper()}"


def load(cls: type[S], config_file: str | os.PathLike[str] | None = None,
         **overrides: Any) -> S:
    """`cls` from the environment, `config_file` (or `RLR_CONFIG`) and `overrides`.

    Every `RLR_*` name must be one of `cls`'s fields: load the composition of every part
    (daemon/cli/settings.py) so no part's setting is refused. `overrides` whose value is None
    are ignored (CLI options the user did not give). Raises `SettingsError` naming every bad
    setting.
    """
    config_file = config_file or os.environ.get("RLR_CONFIG")
    if config_file is not None:
        _check_text_file(Path(config_file))
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(cls.model_fields))
    if unknown:
        raise SettingsError(f"unknown setting(s) {unknown}")
    known = {env_name(name) for name in cls.model_fields} | {"RLR_CONFIG"}
    _check_names(os.environ, known, "the environment")
    if config_file is not None:
        _check_names(_file_keys(Path(config_file)), known, str(config_file), file=True)
    try:
        return cls(_env_file=config_file, **given)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, config_file)) from None


def _check_text_file(path: Path) -> None:
    if not path.is_file():
        raise SettingsError(f"settings file {path} not found; fix RLR_CONFIG / --config")
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"settings file {path} is not text (byte {exc.start} is not UTF-8); "
                            "give a file of KEY=value lines, e.g. RLR_LINES=line1") from None
    if b"\0" in data:
        raise SettingsError(f"settings file {path} is not text (it holds NUL bytes); give a "
                            "file of KEY=value lines, e.g. RLR_LINES=line1")


def _check_names(names: Iterable[str], known: set[str], where: str, file: bool = False) -> None:
    """A misspelt `RLR_*` name would silently fall back to a default: refuse it. Names
    without the prefix are left alone (a shared env file holds other programs' settings),
    unless they are one of ours with the prefix forgotten."""
    for var in sorted(names):
        if var.upper().startswith("RLR_") and var.upper() not in known:
            close = difflib.get_close_matches(var.upper(), sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; see {DOCS}"
            raise SettingsError(f"unknown setting {var} in {where}{hint}")
        if file and f"RLR_{var.upper()}" in known and var.upper() != "CONFIG":
            raise SettingsError(f"{var} in {where} is missing its prefix: write RLR_{var.upper()}")


def _file_keys(path: Path) -> list[str]:
    """Variable names in a KEY=value file (comments, blanks and `export ` allowed)."""
    names = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        names.append(line.removeprefix("export ").split("=", 1)[0].strip())
    return names


def _describe(exc: ValidationError, config_file: str | os.PathLike[str] | None) -> str:
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        name = env_name(loc[0]) if loc else "settings"
        value = err.get("input")
        shown = "" if not loc or isinstance(value, dict) else f"={value!r}"
        if loc and loc[0].endswith("password"):
            shown = ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"not a known setting; check the spelling ({DOCS})"
        problems.append(f"{name}{shown}: {msg}")
    where = f" (environment and {config_file})" if config_file else ""
    if len(problems) == 1:
        return f"invalid setting{where}: {problems[0]}"
    return "invalid settings" + where + ":\n  " + "\n  ".join(problems)


def own_fields(cls: type[PartSettings]) -> list[str]:
    """The fields `cls` itself declares (not those of the parts it inherits)."""
    declared = inspect.get_annotations(cls)
    return [name for name in cls.model_fields if name in declared]


def describe_settings(cls: type[PartSettings], names: Iterable[str] | None = None,
                      ) -> list[tuple[str, str, str]]:
    """(variable, default, description) for each of `names` (every field of `cls` when None),
    for docs/configuration.md and `--help`."""
    rows = []
    for name in cls.model_fields if names is None else names:
        field = cls.model_fields[name]
        default = field.default
        shown = ",".join(default) if isinstance(default, list) else default
        rows.append((env_name(name), "" if shown is None else str(shown), field.description or ""))
    return rows
