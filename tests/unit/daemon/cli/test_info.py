"""`rlrctl info` checks the file it describes: an operator is never told a checksum the file
no longer has."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _rlrctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture()
def damaged(tiny_artifact, tmp_path) -> Path:
    """A copy of a good artifact with one byte flipped in its tensor data (the file's end)."""
    path = tmp_path / "damaged.rlr"
    shutil.copy(tiny_artifact, path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def test_info_says_verified_for_a_good_file(tiny_artifact):
    out = _rlrctl("info", str(tiny_artifact))
    assert out.returncode == 0, out.stderr
    [line] = [ln for ln in out.stdout.splitlines() if ln.startswith("sha256")]
    assert line.endswith("(verified)")


def test_info_refuses_a_file_with_one_flipped_byte_like_score_does(damaged):
    info = _rlrctl("info", str(damaged))
    assert info.returncode == 2
    assert info.stdout == ""
    [line] = info.stderr.strip().splitlines()
    assert "sha256" in line and str(damaged) in line
    score = _rlrctl("score", "--model", str(damaged), str(damaged))
    assert score.returncode == 2
    assert score.stderr.strip() == info.stderr.strip()


def test_no_verify_reads_the_header_and_says_so(damaged):
    out = _rlrctl("info", "--no-verify", str(damaged))
    assert out.returncode == 0, out.stderr
    assert "(not verified: --no-verify)" in out.stdout
