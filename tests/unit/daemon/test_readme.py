"""The README's configuration table lists every `RLR_*` setting, with its default."""

from __future__ import annotations

from pathlib import Path

from daemon.settings import describe_settings

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_setting_is_documented_with_its_default():
    text = README.read_text()
    for var, default, _ in describe_settings():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{var}` |")), None)
        assert row is not None, f"{var} is missing from the README's Configuration table"
        if default:
            assert f"`{default}`" in row, f"{var}: README default differs from {default}"
