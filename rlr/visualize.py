"""Heat-map overlays for people to look at."""

from __future__ import annotations

import cv2
import numpy as np


def colorize(amap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) float map -> (H, W, 3) uint8 RGB with the JET colour map over [vmin, vmax]."""
    scale = max(vmax - vmin, 1e-12)
    norm = np.clip((amap - vmin) / scale, 0.0, 1.0)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float,
            alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised map over an (H, W, 3) uint8 RGB image."""
    heat = colorize(amap, vmin, vmax)
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


def side_by_side(*panels: np.ndarray, gap: int = 4) -> np.ndarray:
    """Concatenate equally tall RGB panels horizontally with a white gap."""
    h = panels[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    out = [panels[0]]
    for p in panels[1:]:
        out += [sep, p]
    return np.concatenate(out, axis=1)


def save_rgb(path: str, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}; check the folder exists and is writable")
