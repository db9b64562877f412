"""Comparing a module's state dict with tensors from a file, for errors that say what differs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor


def state_mismatches(own: Mapping[str, Tensor], given: Mapping[str, Tensor],
                     allowed: Iterable[str] = (), limit: int = 5) -> list[str]:
    """Human-readable problems: shape mismatches, missing keys, unexpected keys (empty if none).

    Keys in `allowed` may appear in `given` without a counterpart in `own`.
    """
    allowed = set(allowed)
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own and k not in allowed]
    wrong = [f"{k} {tuple(given[k].shape)} (file) vs {tuple(v.shape)} (model)"
             for k, v in own.items() if k in given and given[k].shape != v.shape]
    return [f"{len(items)} {label} {items[:limit]}{' ...' if len(items) > limit else ''}"
            for label, items in (("shape mismatches", wrong), ("missing keys", missing),
                                 ("unexpected keys", unexpected)) if items]
