"""The newest-frame reader that triggered shots of a live camera take their pictures from."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from daemon.line.newest import Newest
from daemon.line.sources import Captured


class Camera:
    """Frames 1, 2, 3 ... as fast as asked, released one by one by the test."""

    live = True

    def __init__(self, fail_after: int | None = None):
        self.release, self.stopped, self.fail_after = threading.Semaphore(0), False, fail_after
        self.made = 0
        self.made_event = threading.Event()

    def stop(self):
        self.stopped = True
        self.release.release()

    def __iter__(self):
        while True:
            self.release.acquire()
            if self.stopped:
                return
            if self.fail_after is not None and self.made == self.fail_after:
                raise OSError("camera unplugged")
            self.made += 1
            yield Captured(np.zeros((2, 2, 3), np.uint8), str(self.made))
            self.made_event.set()

    def shoot(self, n=1):
        for _ in range(n):
            self.made_event.clear()
            self.release.release()
            assert self.made_event.wait(2)


def _never():
    return False


def test_take_gives_the_newest_frame_never_a_buffered_one():
    cam = Camera()
    newest = Newest(cam)
    cam.shoot(3)
    assert newest.take(_never).name == "3"  # frames 1 and 2 went stale unseen
    took = []
    waiter = threading.Thread(target=lambda: took.append(newest.take(_never)))
    waiter.start()  # frame 3 was taken: the next take waits for a newer one
    waiter.join(0.3)
    assert took == []
    cam.shoot()
    waiter.join(2)
    assert took[0].name == "4"
    newest.stop()
    newest.join()
    assert newest.take(_never) is None  # ended


def test_take_returns_none_when_stopped_and_raises_what_the_source_raised():
    newest = Newest(Camera())
    assert newest.take(lambda: True) is None
    newest.stop()

    cam = Camera(fail_after=1)
    newest = Newest(cam)
    cam.shoot()
    assert newest.take(_never).name == "1"
    cam.release.release()
    newest.join()
    with pytest.raises(OSError, match="unplugged"):
        newest.take(_never)
