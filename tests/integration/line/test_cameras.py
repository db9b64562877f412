"""Industrial cameras end to end: `rlrctl produce` as a real process reading pylon's camera
emulator (PYLON_CAMEMU) and Aravis's fake GigE Vision camera (real GVCP / GVSP over UDP on
the loopback), pushing into a real Redis; software triggers from `rlr:triggers:{line}`; the
fake camera killed mid-stream and started again."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from daemon.wire import keys
from daemon.wire.schema import parse_frame

FAKE = "arv-fake-gv-camera-0.8"
H, W = 48, 64
WAIT_S = 180.0  # a producer starts in seconds, but in minutes on a box shared by many runs


def _aravis_missing() -> str | None:
    if shutil.which(FAKE) is None:
        return f"{FAKE} is not installed (Debian: apt-get install aravis-tools; .ci/run does)"
    try:
        import gi

        gi.require_version("Aravis", "0.8")
    except (ImportError, ValueError) as exc:
        return f"Aravis's Python bindings are missing ({exc}): apt-get install " \
               "gir1.2-aravis-0.8 and pip install 'rlr[genicam]' (.ci/run does)"
    return None


class Producer:
    """`rlrctl produce` in the background, its log read line by line as it comes."""

    def __init__(self, redis_url, line, source, *args, **env):
        cmd = [sys.executable, "-m", "daemon.cli", "produce", "--source", source,
               "--camera", "cam1", "--line", line, *args]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("RLR_")}
        environ.update(RLR_REDIS_URL=redis_url, RLR_LOG_FORMAT="json", PYLON_CAMEMU="1", **env)
        self.proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for text in self.proc.stderr:
            self.log.append(text)

    def wait_for(self, event: str, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not any(f'"event": "{event}"' in t for t in self.log):
            assert self.proc.poll() is None, "".join(self.log)
            assert time.monotonic() < deadline, f"no {event} in {''.join(self.log)}"
            time.sleep(0.05)

    def finish(self, timeout: float = WAIT_S) -> str:
        out = self.proc.stdout.read() if self.proc.wait(timeout) is not None else ""
        self._reader.join(5)
        assert self.proc.returncode == 0, "".join(self.log)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
        if self.proc.poll() is None:
            self.proc.kill()


@pytest.fixture
def producers():
    started: list[Producer] = []
    yield lambda *a, **kw: started.append(Producer(*a, **kw)) or started[-1]
    for producer in started:
        producer.stop()


@pytest.fixture
def pictures(tmp_path):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i:02d}.png")
    return tmp_path, images


def _emulator_feed(folder) -> list[str]:
    return ["--pixel-format", "RGB8Packed", "--roi", f"0,0,{W},{H}", "--feature",
            "TestImageSelector=Off", "--feature", f"ImageFilename={folder}", "--feature",
            "ImageFileMode=On", "--encoding", "png"]


def _frames(rclient, line):
    return [(fields, parse_frame(fields, 10**7)) for _, fields in
            rclient.xrange(keys.frames(line))]


def _pixels(frame) -> np.ndarray:
    with Image.open(io.BytesIO(frame.data)) as image:
        return np.asarray(image.convert("RGB"))


def _trigger(rclient, line, *parts):
    pipe = rclient.pipeline(transaction=False)  # a burst: each arrives while one is read
    for part in parts:
        pipe.xadd(keys.triggers(line), {"part_id": part, "ts": repr(time.time()),
                                        "via": "test"})
    pipe.execute()


# ----------------------------------------------------------------------------- pylon


def test_pylon_free_run_sends_the_pictures_with_the_camera_counter(redis_url, line, rclient,
                                                                     pictures, producers):
    folder, images = pictures
    pfs = folder.parent / f"{folder.name}.pfs"  # pylon's: Name<TAB>Value lines
    pfs.write_text("# GenApi persistence file\nTestImageSelector\tOff\n"
                   f"ImageFilename\t{folder}\nImageFileMode\tOn\n")
    producer = producers(redis_url, line, "pylon://0815-0000", "--fps", "30", "--limit", "6",
                         "--pixel-format", "RGB8Packed", "--roi", f"0,0,{W},{H}",
                         "--encoding", "png", "--feature", f"@{pfs}")
    assert "sent 6 frames" in producer.finish()
    frames = _frames(rclient, line)
    counters = [int(fields[b"cam_frame"]) for fields, _ in frames]
    assert counters == list(range(counters[0], counters[0] + 6))  # none lost
    assert all(b"cam_ts" in fields for fields, _ in frames)
    for i, (_, frame) in enumerate(frames):
        np.testing.assert_array_equal(_pixels(frame), images[i % 3])


def test_pylon_software_triggers_give_frames_with_their_part_ids(redis_url, line, rclient,
                                                                   pictures, producers):
    folder, images = pictures
    _trigger(rclient, line, "OLD-1")  # written before the producer started: long gone by
    producer = producers(redis_url, line, "pylon://", "--trigger", "software", "--limit",
                         "4", *_emulator_feed(folder))
    producer.wait_for("camera_connected")
    _trigger(rclient, line, "SN-1", "bad id", "SN-2", "SN-3", "SN-4")
    producer.finish()
    frames = [frame for _, frame in _frames(rclient, line)]
    assert [f.part for f in frames] == ["SN-1", "SN-2", "SN-3", "SN-4"]
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(_pixels(frame), images[i % 3])
    assert any('"event": "trigger_skipped"' in t for t in producer.log)


# (values out of range and formats that cannot be converted: tests/unit/.../test_pylon.py)
@pytest.mark.parametrize(("source", "args", "words"), [
    ("pylon://0815-0000", ["--feature", "ExposureTme=800"], "has no feature 'ExposureTme'"),
    ("pylon://4711", [], "no camera with serial 4711 (found: 0815-0000)"),
    ("pylom://0815-0000", [], "is none of the known forms"),
    ("FOLDER", ["--trigger", "software"], "apply to industrial cameras"),
])
def test_bad_camera_input_is_one_line_and_exit_2(redis_url, line, tmp_path, source, args,
                                                 words):
    source = str(tmp_path) if source == "FOLDER" else source
    producer = Producer(redis_url, line, source, "--limit", "1", *args)
    producer.proc.wait(WAIT_S)
    producer._reader.join(5)
    errors = [t for t in producer.log if t.startswith("error:")]
    assert producer.proc.returncode == 2, "".join(producer.log)
    assert len(errors) == 1 and words in errors[0], "".join(producer.log)
    assert "Traceback" not in "".join(producer.log)


# ----------------------------------------------------------------------------- GigE Vision


@pytest.fixture
def fake_camera():
    """Aravis's fake GigE Vision camera on the loopback; `restart()` kills and restarts it."""
    missing = _aravis_missing()
    if missing:
        pytest.skip(missing)

    class Fake:
        proc: subprocess.Popen | None = None

        def start(self):
            self.proc = subprocess.Popen([FAKE, "-i", "127.0.0.1", "-s", "RLRTEST"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            assert self.proc.poll() is None, "the fake camera did not start: is another one " \
                "holding GVCP's port 3956 on 127.0.0.1?"

        def kill(self):
            self.proc.kill()
            self.proc.wait(5)

    fake = Fake()
    fake.start()
    yield fake
    fake.kill()


def test_gige_camera_killed_mid_stream_is_reconnected(redis_url, line, rclient, fake_camera,
                                                      producers):
    producer = producers(redis_url, line, "gige://RLRTEST", "--fps", "20", "--size", "64",
                         "--pixel-format", "BayerRG8")
    _wait_frames(rclient, line, 10)
    fake_camera.kill()
    producer.wait_for("camera_unavailable")
    fake_camera.start()
    producer.wait_for("camera_reconnected")
    before = rclient.xlen(keys.frames(line))
    _wait_frames(rclient, line, before + 10)
    producer.stop()
    assert producer.proc.returncode == 0, "".join(producer.log)
    frames = _frames(rclient, line)
    assert all(_pixels(f).shape == (64, 64, 3) for _, f in frames)
    log = "".join(producer.log)
    assert log.index('"camera_unavailable"') < log.index('"camera_reconnected"')


def test_gige_software_triggers_take_the_part_ids(redis_url, line, rclient, fake_camera,
                                                  producers):
    producer = producers(redis_url, line, "gige://127.0.0.1", "--trigger", "software",
                         "--limit", "3", "--encoding", "png")
    producer.wait_for("camera_connected")
    _trigger(rclient, line, "G-1", "G-2", "G-3")
    producer.finish()
    frames = [frame for _, frame in _frames(rclient, line)]
    assert [f.part for f in frames] == ["G-1", "G-2", "G-3"]
    assert _pixels(frames[0]).shape == (512, 512, 3)


def test_gige_feature_out_of_bounds_is_the_nodes_refusal(redis_url, line, fake_camera):
    producer = Producer(redis_url, line, "gige://127.0.0.1", "--limit", "1", "--feature",
                        "PixelFormat=Purple8")
    producer.proc.wait(WAIT_S)
    producer._reader.join(5)
    assert producer.proc.returncode == 2
    errors = [t for t in producer.log if t.startswith("error:")]
    assert len(errors) == 1 and "refused PixelFormat=Purple8" in errors[0]


def _wait_frames(rclient, line, n, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while rclient.xlen(keys.frames(line)) < n:
        assert time.monotonic() < deadline, f"fewer than {n} frames"
        time.sleep(0.05)
