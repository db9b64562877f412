"""The sources' registry: every module of the folder found, specs matched to their kind,
and one clear line for a spec no source accepts or a source whose extra is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import daemon.line.sources as sources_package
from daemon.line.sources import base, open_source, redact
from daemon.line.sources.folder import FolderSource
from daemon.line.sources.live import LiveSource
from daemon.line.sources.video import VideoSource
from rlr.errors import DataError

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def registry(monkeypatch):
    """The registry as it is, restored after the test (with any module the test added)."""
    monkeypatch.setattr(base, "_KINDS", dict(base._KINDS))
    before = set(sys.modules)
    yield base
    for name in set(sys.modules) - before:
        if name.startswith("daemon.line.sources."):
            del sys.modules[name]


def test_open_source_picks_the_kind(folder, video):
    assert isinstance(open_source(str(folder[0])), FolderSource)
    assert isinstance(open_source(str(video)), VideoSource)
    cam = open_source("0")
    assert isinstance(cam, LiveSource) and cam.target == 0
    url = open_source("rtsp://user:secret@cam1:554/stream")
    assert isinstance(url, LiveSource) and url.target.startswith("rtsp://")
    assert redact(url.target) == "rtsp://user:***@cam1:554/stream"


def test_open_source_names_what_it_expected(tmp_path):
    with pytest.raises(DataError) as err:
        open_source(str(tmp_path / "missing"))
    message = str(err.value)
    assert "\n" not in message and "missing" in message
    for form in ("folder of images", "video file", "camera index", "rtsp://"):
        assert form in message


def test_every_module_of_the_folder_registers_a_kind():
    names = {k.name for k in base.kinds()}
    assert {"folder", "video", "live"} <= names
    modules = {p.stem for p in Path(base.__file__).parent.glob("*.py")} - {"__init__", "base"}
    assert modules <= names  # a source file that registers nothing is a mistake


def test_a_new_file_in_the_folder_is_found_and_opened(registry, monkeypatch):
    monkeypatch.setattr(sources_package, "__path__", [*sources_package.__path__, str(PLUGINS)])
    assert "dummy" in {k.name for k in registry.kinds()}
    frames = list(open_source("dummy://3"))
    assert [c.name for c in frames] == ["dummy#1", "dummy#2", "dummy#3"]
    assert "dummy://N" in registry.known_forms()


def test_a_registered_scheme_wins_over_the_catch_all_url(registry):
    registry.register("cam", form="cam://ID", schemes=("cam://",))(lambda spec, loop: spec)
    assert open_source("cam://7") == "cam://7"
    assert isinstance(open_source("rtmp://7"), LiveSource)  # another of FFmpeg's protocols


def test_a_scheme_nobody_reads_is_one_line_listing_the_forms():
    with pytest.raises(DataError) as err:
        open_source("pylom://0815-0000")  # a typo is refused, not retried forever by FFmpeg
    message = str(err.value)
    assert "\n" not in message and "pylon://[SERIAL]" in message and "gige://" in message


def test_a_missing_extra_is_one_line_naming_it(registry):
    opened = []
    registry.register("pylon", form="pylon://SERIAL", schemes=("pylon://",),
                      needs=("no_such_camera_sdk",), extra="pylon")(
        lambda spec, loop: opened.append(spec))
    with pytest.raises(DataError) as err:
        open_source("pylon://4711")
    assert str(err.value) == ("the pylon source needs no_such_camera_sdk, which is not "
                              "installed: pip install 'rlr[pylon]'")
    assert opened == []


def test_a_kind_must_say_what_it_accepts():
    with pytest.raises(ValueError, match="no scheme and no accepts"):
        base.register("vague", form="?")
