"""A Basler camera through pylon (`pypylon`, the optional extra `rlr[pylon]`): `pylon://` for
the first camera found, `pylon://SERIAL` for one. pylon's camera emulator (PYLON_CAMEMU=N)
stands in for real cameras in the tests."""

from __future__ import annotations

import contextlib

from daemon.line import camera as cam
from daemon.line.camera import CameraConfig, CameraGone, CameraSource, FeatureRefused, Grab
from daemon.line.sources.base import register

_BUFFERS = 16  # queued grab buffers: a short stall of the producer loses no frame


class PylonDriver:
    """One pylon camera (GigE, USB3 or the emulator), grabbing one buffer at a time so that
    the frame counter shows every frame lost."""

    def __init__(self, serial: str | None) -> None:
        from pypylon import genicam, pylon

        self.pylon, self.genicam = pylon, genicam
        self.serial = serial
        self.name = f"pylon {serial or '(first camera)'}"
        self.cam = None

    def connect(self) -> str:
        pylon = self.pylon
        try:
            factory = pylon.TlFactory.GetInstance()
            devices = factory.EnumerateDevices()
            found = [d for d in devices if not self.serial or d.GetSerialNumber() == self.serial]
            if not found:
                serials = ", ".join(d.GetSerialNumber() for d in devices) or "none"
                raise CameraGone(f"no camera with serial {self.serial} (found: {serials})"
                                 if self.serial else "no pylon camera found")
            self.cam = pylon.InstantCamera(factory.CreateDevice(found[0]))
            self.cam.Open()
            info = self.cam.GetDeviceInfo()
            return f"{info.GetModelName()} {info.GetSerialNumber()}"
        except self.genicam.GenericException as exc:
            raise CameraGone(cam.one_line(exc)) from None

    def _node(self, feature: str):
        node = self.cam.GetNodeMap().GetNode(feature)
        placeholder = getattr(self.pylon, "PlaceholderParameter", ())
        return None if node is None or isinstance(node, placeholder) else node

    def has(self, feature: str) -> bool:
        return self._node(feature) is not None

    def write(self, feature: str, value: str) -> None:
        try:
            self._node(feature).FromString(value)
        except self.genicam.GenericException as exc:
            raise FeatureRefused(cam.one_line(exc)) from None

    def read(self, feature: str) -> str:
        return self._node(feature).ToString()

    def start(self) -> None:
        self.cam.MaxNumBuffer.Value = _BUFFERS
        self.cam.StartGrabbing(self.pylon.GrabStrategy_OneByOne)
        self.pixel_format = self.read("PixelFormat")

    def fire(self) -> None:
        pylon = self.pylon
        try:
            self.cam.WaitForFrameTriggerReady(1000, pylon.TimeoutHandling_ThrowException)
            self.cam.ExecuteSoftwareTrigger()
        except self.genicam.GenericException as exc:
            self.check()
            raise CameraGone(cam.one_line(exc)) from None

    def grab(self, timeout_s: float) -> Grab | None:
        try:
            result = self.cam.RetrieveResult(int(timeout_s * 1000),
                                             self.pylon.TimeoutHandling_Return)
        except self.genicam.GenericException as exc:
            raise CameraGone(cam.one_line(exc)) from None
        if not result.IsValid():
            self.check()
            return None
        try:
            if not result.GrabSucceeded():  # incomplete: the counter's gap counts it
                return None
            return Grab(result.GetArray(), self.pixel_format, result.GetTimeStamp(),
                        result.GetBlockID())
        finally:
            result.Release()

    def check(self) -> None:
        if self.cam is None or self.cam.IsCameraDeviceRemoved():
            raise CameraGone("the camera was removed")

    def close(self) -> None:
        camera, self.cam = self.cam, None
        if camera is None:
            return
        with contextlib.suppress(self.genicam.GenericException):  # gone: nothing to release
            camera.StopGrabbing()
            camera.Close()
            camera.DestroyDevice()


@register("pylon", form="a Basler camera: pylon://[SERIAL]", schemes=("pylon://",),
          needs=("pypylon",), extra="pylon", camera=True)
def open_pylon(spec: str, loop: bool, camera: CameraConfig | None) -> CameraSource:
    serial = spec.partition("://")[2].strip("/") or None
    return CameraSource(PylonDriver(serial), camera or CameraConfig())
