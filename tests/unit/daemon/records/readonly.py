"""A folder nobody may write, root included (chmod alone does not stop root: the immutable
attribute does, where the file system has it)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only(folder: Path):
    folder.chmod(0o555)
    immutable = False
    if _writable(folder):
        immutable = subprocess.run(["chattr", "+i", str(folder)],
                                   capture_output=True).returncode == 0
    try:
        if _writable(folder):
            pytest.skip("cannot make a folder read-only here")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        folder.chmod(0o755)


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    os.unlink(probe)
    return True
