"""Stream schemas: frames survive encode -> parse -> decode, every kind of poison frame is
refused with its dead-letter reason, and results / alerts / dead letters round-trip."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from daemon.errors import FrameError
from daemon.wire.codec import decode_frame, decode_mask, encode_image, mask_png
from daemon.wire.schema import (
    Alert,
    DeadLetter,
    Result,
    encode_frame,
    keep_for_dead_letter,
    parse_frame,
)
from tests.helpers import png_header

LIMIT = 1_000_000
TS = 1_700_000_000.125


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def _fields(image: np.ndarray, encoding: str = "png", **kw) -> dict:
    data, extra = encode_image(image, encoding)
    return encode_frame("cam-1", "f-1", TS, data, encoding, **extra, **kw)


def _reason(fields: dict, max_payload: int = LIMIT, size: int = 16,
            max_side: int = 8192) -> str:
    with pytest.raises(FrameError) as info:
        decode_frame(parse_frame(fields, max_payload), size, max_side)
    return info.value.reason


# ----------------------------------------------------------------------------- frames


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_lossless_frames_round_trip_exactly(image, encoding):
    frame = parse_frame(_fields(image, encoding, product_class="washer", want_mask=True), LIMIT)
    assert (frame.camera, frame.frame_id, frame.ts, frame.encoding) == \
        ("cam-1", "f-1", TS, encoding)
    assert frame.product_class == "washer" and frame.want_mask
    np.testing.assert_array_equal(decode_frame(frame, 16, 8192), image)


def test_jpeg_frame_round_trips_closely(image):
    smooth = np.repeat(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], 16, 0)
    smooth = np.repeat(smooth, 3, 2)
    frame = parse_frame(_fields(smooth, "jpeg"), LIMIT)
    assert frame.encoding == "jpeg" and frame.product_class is None and not frame.want_mask
    out = decode_frame(frame, 16, 8192)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).mean() < 4


def test_frames_of_another_size_are_resized_for_the_model(image):
    out = decode_frame(parse_frame(_fields(image, "png"), LIMIT), 64, 8192)
    assert out.shape == (64, 64, 3)


def test_raw_grayscale_becomes_three_equal_channels():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    data, extra = encode_image(gray, "raw")
    assert extra == {"shape": (8, 8), "dtype": "uint8"}
    out = decode_frame(parse_frame(encode_frame("c", "f", TS, data, "raw", **extra), LIMIT),
                       8, 8192)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_raw_uint16_keeps_the_high_byte():
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    data, extra = encode_image(deep, "raw")
    out = decode_frame(parse_frame(encode_frame("c", "f", TS, data, "raw", **extra), LIMIT),
                       8, 8192)
    np.testing.assert_array_equal(out[..., 0], (deep >> 8).astype(np.uint8))


def test_bytes_keys_as_redis_returns_them_parse(image):
    fields = {k.encode(): v for k, v in _fields(image).items()}
    frame = parse_frame(fields, LIMIT)
    assert (frame.camera, frame.frame_id, frame.ts) == ("cam-1", "f-1", TS)


@pytest.mark.parametrize("drop", ["camera", "frame_id", "ts", "encoding", "data"])
def test_missing_field_is_malformed(image, drop):
    fields = _fields(image)
    del fields[drop]
    with pytest.raises(FrameError, match=drop) as info:
        parse_frame(fields, LIMIT)
    assert info.value.reason == "malformed"


def test_missing_version_is_malformed(image):
    fields = _fields(image)
    del fields["v"]
    assert _reason(fields) == "malformed"


def test_another_major_version_is_unsupported(image):
    with pytest.raises(FrameError, match="v=2") as info:
        parse_frame({**_fields(image), "v": b"2"}, LIMIT)
    assert info.value.reason == "unsupported_version"


def test_a_payload_over_the_limit_is_oversized(image):
    fields = encode_frame("cam-1", "f-1", TS, b"\xff" * 2048, "jpeg")
    with pytest.raises(FrameError, match="RLR_MAX_PAYLOAD_BYTES") as info:
        parse_frame(fields, 2047)
    assert info.value.reason == "oversized"
    assert parse_frame(fields, 2048).data == b"\xff" * 2048  # at the limit is fine


def test_garbage_bytes_are_corrupt():
    assert _reason(encode_frame("c", "f", TS, b"not an image at all", "jpeg")) == "corrupt"


def test_a_truncated_jpeg_is_corrupt(image):
    data, _ = encode_image(image, "jpeg")
    assert _reason(encode_frame("c", "f", TS, data[: len(data) // 2], "jpeg")) == "corrupt"


def test_a_png_declared_as_jpeg_is_corrupt(image):
    data, _ = encode_image(image, "png")
    with pytest.raises(FrameError, match="data is PNG") as info:
        decode_frame(parse_frame(encode_frame("c", "f", TS, data, "jpeg"), LIMIT), 16, 8192)
    assert info.value.reason == "corrupt"


def test_an_image_wider_than_the_limit_has_bad_dimensions():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 9000), np.uint8)).save(buf, format="PNG")
    fields = encode_frame("c", "f", TS, buf.getvalue(), "png")
    assert _reason(fields, max_side=8192) == "bad_dimensions"
    assert _reason(fields, max_side=16) == "bad_dimensions"


def test_a_png_too_big_even_for_pillow_has_bad_dimensions_not_corrupt():
    fields = encode_frame("c", "f", TS, png_header(100_000, 100_000), "png")  # 10^10 pixels
    assert _reason(fields, max_side=200_000) == "bad_dimensions"
    assert _reason(encode_frame("c", "f", TS, png_header(12_000, 12_000), "png")) == \
        "bad_dimensions"  # over RLR_MAX_IMAGE_SIDE: the same reason


@pytest.mark.parametrize(("ts", "says"), [(-5.0, "before 2001"), (0.0, "before 2001"),
                                          (1.7e12, "milliseconds")])
def test_a_capture_time_that_is_not_seconds_since_the_epoch_is_malformed(image, ts, says):
    data, _ = encode_image(image, "png")
    with pytest.raises(FrameError, match=says) as info:
        parse_frame(encode_frame("c", "f", ts, data, "png"), LIMIT)
    assert info.value.reason == "malformed"


def test_a_raw_image_over_the_side_limit_has_bad_dimensions():
    data, extra = encode_image(np.zeros((4, 40), np.uint8), "raw")
    assert _reason(encode_frame("c", "f", TS, data, "raw", **extra), max_side=32) == \
        "bad_dimensions"


@pytest.mark.parametrize("change", [
    {"data": b"\x00" * 10},  # 16x16x3 needs 768 bytes
    {"shape": b"16,16,2"},
    {"shape": b"16"},
    {"shape": b"16,x"},
    {"dtype": b"float32"},
])
def test_raw_frames_with_a_bad_layout_are_malformed(image, change):
    fields = {**_fields(image, "raw"), **change}
    with pytest.raises(FrameError) as info:
        parse_frame(fields, LIMIT)
    assert info.value.reason == "malformed"


def test_raw_frame_without_shape_is_malformed(image):
    fields = _fields(image, "raw")
    del fields["shape"]
    with pytest.raises(FrameError, match="shape") as info:
        parse_frame(fields, LIMIT)
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("change", [
    {"ts": b"noon"},
    {"ts": b"inf"},
    {"ts": b"nan"},
    {"camera": b"cam 1"},
    {"camera": b"cam\t1"},
    {"frame_id": b""},
    {"frame_id": b"x" * 129},
    {"encoding": b"gif"},
    {"camera": b"\xff\xfe"},
    {"data": b""},
])
def test_bad_metadata_is_malformed(image, change):
    with pytest.raises(FrameError) as info:
        parse_frame({**_fields(image), **change}, LIMIT)
    assert info.value.reason == "malformed"


# ----------------------------------------------------------------------------- results


def _result(**kw) -> Result:
    base = dict(frame_id="f-1", camera="cam-1", score=0.5, is_anomaly=True, threshold=0.25,
                model_version="sha256:abc", capture_ts=TS, queue_ms=1.25, infer_ms=3.5,
                latency_ms=7.75, worker="w1", product_class="washer", mask=b"\x89PNG...")
    return Result(**{**base, **kw})


@pytest.mark.parametrize("changes", [
    {},
    {"mask": None},
    {"threshold": None, "is_anomaly": False, "product_class": None, "mask": None},
])
def test_result_round_trips(changes):
    res = _result(**changes)
    assert Result.from_fields(res.to_fields()) == res
    flat = res.to_flat()  # what the publish script gets: the same fields, flat
    pairs = dict(zip(flat[::2], flat[1::2], strict=True))
    assert {k: v if isinstance(v, bytes) else v.encode() for k, v in pairs.items()} == \
        res.to_fields()


def test_result_normalized_score():
    assert _result().normalized == 2.0
    assert _result(threshold=None).normalized is None


def test_alert_round_trips_and_serialises_to_json():
    alert = Alert("a1", "line1", "cam-1", TS, "2/3", ["f1", "f2"], [0.5, 0.75],
                  ["1-1", "2-1"], "sha256:abc", 0.25, "washer")
    assert Alert.from_fields(alert.to_fields()) == alert
    no_thr = Alert("a2", "line1", "cam-1", TS, "2/3", [], [], [], "v", None, None)
    assert Alert.from_fields(no_thr.to_fields()) == no_thr
    doc = json.loads(json.dumps(alert.to_json()))
    assert doc["frame_ids"] == ["f1", "f2"] and doc["class"] == "washer"


def test_dead_letter_keeps_the_original_fields_with_a_prefix(image):
    original = _fields(image, "png")
    letter = DeadLetter("5-0", "corrupt", "bad", "w1", TS, 2, "frame", dict(original))
    fields = letter.to_fields()
    assert fields["orig.camera"] == b"cam-1"
    assert fields["orig.data"] == original["data"]
    back = DeadLetter.from_fields(fields)
    assert (back.source_id, back.reason, back.detail, back.worker, back.ts, back.deliveries,
            back.kind) == ("5-0", "corrupt", "bad", "w1", TS, 2, "frame")
    assert back.original["camera"] == "cam-1" and back.original["frame_id"] == "f-1"
    assert back.original["data"] == f"<{len(original['data'])} bytes>"  # binary shown by size


def test_keep_for_dead_letter_drops_only_an_oversized_payload():
    fields = {b"camera": b"cam-1", b"data": b"x" * 100}
    assert keep_for_dead_letter(fields, 100) == {"camera": b"cam-1", "data": b"x" * 100}
    kept = keep_for_dead_letter(fields, 99)
    assert "data" not in kept
    assert kept["camera"] == b"cam-1"
    assert b"100 bytes" in kept["data_dropped"]


def test_mask_marks_exactly_the_pixels_above_threshold():
    amap = np.random.default_rng(1).random((24, 24)).astype(np.float32)
    mask = decode_mask(mask_png(amap, 0.7))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, amap > 0.7)
    assert decode_mask(mask_png(amap, 0.7), size=48).shape == (48, 48)


# ----------------------------------------------------------------------------- parts (v1.1)


def test_a_frame_carries_its_part_and_view_into_its_result(image):
    frame = parse_frame(_fields(image, part="SN-40122", view="top"), LIMIT)
    assert (frame.part, frame.view) == ("SN-40122", "top")
    res = Result("f-1", "cam-1", 0.5, False, 1.0, "m-1", TS, 1, 2, 3, "w", None, None,
                 frame.part, frame.view)
    assert Result.from_fields(res.to_fields()) == res
    flat = res.to_flat()
    assert dict(zip(flat[::2], flat[1::2], strict=True))["part"] == "SN-40122"


def test_the_old_form_without_part_still_reads(image):
    fields = _fields(image)
    fields[b"v" if b"v" in fields else "v"] = b"1"
    frame = parse_frame(fields, LIMIT)
    assert frame.part is None and frame.view is None
    res = Result("f-1", "cam-1", 0.5, False, 1.0, "m-1", TS, 1, 2, 3, "w")
    assert b"part" not in {k if isinstance(k, bytes) else k.encode() for k in res.to_fields()}


@pytest.mark.parametrize(("part", "why"), [
    ("x" * 129, "129 bytes"), ("SN\x07", "control"), ("SN 1", "whitespace"),
    ("SN\u202e1", "format"),
])
def test_a_bad_part_id_is_dead_lettered_with_the_reason(image, part, why):
    with pytest.raises(FrameError, match=why) as info:
        parse_frame(_fields(image, part=part), LIMIT)
    assert info.value.reason == "malformed" and "part id" in info.value.detail


def test_a_part_id_that_is_not_utf8_is_malformed(image):
    fields = _fields(image)
    fields["part"] = b"\xff\xfeSN"
    with pytest.raises(FrameError, match="not UTF-8"):
        parse_frame(fields, LIMIT)


def test_a_view_without_a_part_is_malformed(image):
    fields = _fields(image)
    fields["view"] = b"top"
    with pytest.raises(FrameError, match="without a part"):
        parse_frame(fields, LIMIT)


def test_an_8192_square_png_is_refused_from_its_header_in_milliseconds():
    import time

    from daemon.serve.settings import DecodeSettings

    buf = io.BytesIO()  # 67 M pixels in 200 KB: seconds and a gigabyte to decode
    Image.fromarray(np.zeros((8192, 8192), np.uint8)).save(buf, format="PNG", compress_level=1)
    frame = parse_frame(encode_frame("c", "f", TS, buf.getvalue(), "png"), 10**8)
    limits = DecodeSettings()
    t0 = time.perf_counter()
    with pytest.raises(FrameError, match="RLR_MAX_PIXELS") as info:
        decode_frame(frame, 64, limits.max_image_side, limits.max_pixels)
    assert info.value.reason == "bad_dimensions"
    assert time.perf_counter() - t0 < 0.2
    jpeg, _ = encode_image(np.zeros((300, 300, 3), np.uint8), "jpeg")
    with pytest.raises(FrameError, match="RLR_MAX_PIXELS"):
        decode_frame(parse_frame(encode_frame("c", "f", TS, jpeg, "jpeg"), LIMIT), 16, 8192,
                     max_pixels=300 * 299)
