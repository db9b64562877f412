"""Any GenICam GigE Vision camera through Aravis (Debian's gir1.2-aravis-0.8 with PyGObject,
the optional extra `rlr[genicam]`): `gige://` for the first camera found, `gige://ID` by
Aravis device id, serial number or IP address. Aravis's fake camera
(arv-fake-gv-camera-0.8) speaks real GVCP / GVSP over UDP in the tests."""

from __future__ import annotations

import contextlib

import numpy as np

from daemon.line import camera as cam
from daemon.line.camera import CameraConfig, CameraGone, CameraSource, FeatureRefused, Grab
from daemon.line.sources.base import register
from rlr.errors import DataError

_BUFFERS = 16  # queued stream buffers: a short stall of the producer loses no frame
_CCP = 0x0A00  # GigE Vision bootstrap: control channel privilege


def _aravis():
    import gi

    try:
        gi.require_version("Aravis", "0.8")
    except ValueError:
        raise DataError("the gige source needs Aravis's GObject bindings: apt-get install "
                        "gir1.2-aravis-0.8 (Debian / Ubuntu)") from None
    from gi.repository import Aravis, GLib

    return Aravis, GLib


class AravisDriver:
    """One GigE Vision camera: the control channel (GVCP) for features and triggers, a stream
    (GVSP) of queued buffers whose frame ids show every frame lost."""

    def __init__(self, target: str | None) -> None:
        self.Aravis, self.GLib = _aravis()
        self.target = target
        self.name = f"gige {target or '(first camera)'}"
        self.cam = self.stream = None

    def _find(self) -> str:
        aravis = self.Aravis
        aravis.update_device_list()
        found = []
        for i in range(aravis.get_n_devices()):
            ids = (aravis.get_device_id(i), aravis.get_device_serial_nbr(i),
                   aravis.get_device_address(i))
            if aravis.get_device_protocol(i) == "GigEVision":
                if not self.target or self.target in ids:
                    return ids[0]
                found.append(f"{ids[0]} at {ids[2]}")
        raise CameraGone(f"no GigE Vision camera {self.target} (found: "
                         f"{', '.join(found) or 'none'})" if self.target
                         else "no GigE Vision camera found")

    def connect(self) -> str:
        device_id = self._find()
        try:
            self.cam = self.Aravis.Camera.new(device_id)
            self.dev = self.cam.get_device()
            return f"{self.cam.get_model_name()} {self.cam.get_device_serial_number()}"
        except self.GLib.Error as exc:
            raise CameraGone(cam.one_line(exc.message)) from None

    def has(self, feature: str) -> bool:
        node = self.dev.get_feature(feature)
        return node is not None and hasattr(node, "set_value_from_string")

    def write(self, feature: str, value: str) -> None:
        try:
            self.dev.get_feature(feature).set_value_from_string(value)
        except self.GLib.Error as exc:
            raise FeatureRefused(cam.one_line(exc.message)) from None

    def read(self, feature: str) -> str:
        return self.dev.get_feature(feature).get_value_as_string()

    def start(self) -> None:
        try:
            self.pixel_format = self.read("PixelFormat")
            self.stream = self.cam.create_stream(None, None)
            payload = self.cam.get_payload()
            for _ in range(_BUFFERS):
                self.stream.push_buffer(self.Aravis.Buffer.new_allocate(payload))
            self.cam.start_acquisition()
        except self.GLib.Error as exc:
            raise CameraGone(cam.one_line(exc.message)) from None

    def fire(self) -> None:
        try:
            self.cam.software_trigger()
        except self.GLib.Error as exc:
            raise CameraGone(cam.one_line(exc.message)) from None

    def grab(self, timeout_s: float) -> Grab | None:
        buffer = self.stream.timeout_pop_buffer(int(timeout_s * 1e6))
        if buffer is None:
            self.check()
            return None
        try:
            if buffer.get_status() != self.Aravis.BufferStatus.SUCCESS:
                return None  # incomplete or missing packets: the frame id's gap counts it
            h, w = buffer.get_image_height(), buffer.get_image_width()
            shape = (h, w, 3) if self.pixel_format.startswith(("RGB", "BGR")) else (h, w)
            raw = np.frombuffer(buffer.get_data(), np.uint8)[:int(np.prod(shape))]
            return Grab(raw.reshape(shape).copy(), self.pixel_format, buffer.get_timestamp(),
                        buffer.get_frame_id())
        finally:
            self.stream.push_buffer(buffer)

    def check(self) -> None:
        """Reads the control channel privilege register of the GigE Vision bootstrap: it
        fails when the camera stops answering, and reads 0 when a camera that came back
        (rebooted, power cycled) no longer knows this host holds its control."""
        try:
            privilege = self.dev.read_register(_CCP)
        except self.GLib.Error as exc:
            raise CameraGone(cam.one_line(exc.message)) from None
        if isinstance(privilege, tuple):  # (ok, value) in some binding versions
            privilege = privilege[-1]
        if not privilege & 0x3:
            raise CameraGone("the camera restarted and dropped this host's control")

    def close(self) -> None:
        camera, self.cam, self.stream = self.cam, None, None
        if camera is not None:
            with contextlib.suppress(self.GLib.Error):  # gone already: nothing to stop
                camera.stop_acquisition()


@register("gige", form="a GigE Vision camera: gige://[ID|SERIAL|IP]", schemes=("gige://",),
          needs=("gi",), extra="genicam", camera=True)
def open_gige(spec: str, loop: bool, camera: CameraConfig | None) -> CameraSource:
    target = spec.partition("://")[2].strip("/") or None
    return CameraSource(AravisDriver(target), camera or CameraConfig())
