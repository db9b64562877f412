"""How batches reach the model's device: fixed batch-size buckets, one staging step that agrees
with `to_tensor` on the CPU and on CUDA, padding rows whose outputs are dropped, JPEG decoding
on the device, and torch.compile behind RLR_COMPILE. CUDA cases run where a GPU is at hand
(benchmarks/gpu_check.sh runs them)."""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg
import torch

from daemon.errors import SettingsError
from daemon.serve.feed import Feed, bucket_for, buckets, decode_jpegs
from daemon.serve.served_model import ServedModel
from daemon.serve.settings import DecodeSettings, EngineChoice, EngineSettings
from daemon.wire.codec import encode_image
from rlr.artifact import load_artifact
from rlr.data import to_tensor
from rlr.engines import create_engine
from rlr.errors import ConfigError, DataError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_buckets_are_powers_of_two_up_to_the_batch_size():
    assert buckets(1) == (1,)
    assert buckets(8) == (1, 2, 4, 8)
    assert buckets(12) == (1, 2, 4, 8, 12)
    assert [bucket_for(n, buckets(12)) for n in (1, 3, 5, 8, 9, 12)] == [1, 4, 8, 8, 12, 12]
    with pytest.raises(ValueError, match="at least 1"):
        buckets(0)


def test_staging_on_the_cpu_is_to_tensor_and_pads_with_zero_rows():
    batch = images(5)
    plain = Feed(torch.device("cpu"), 8).stage(batch)
    assert torch.equal(plain, to_tensor(batch))
    padded = Feed(torch.device("cpu"), 8, bucketed=True).stage(batch)
    assert padded.shape == (8, 3, 64, 64)
    assert torch.equal(padded[:5], plain) and not padded[5:].any()
    with pytest.raises(DataError, match="no images"):
        Feed(torch.device("cpu"), 8).stage([])


def test_a_bucketed_engine_scores_like_an_unbucketed_one(artifact):
    model, manifest = load_artifact(artifact)
    plain = ServedModel(model, manifest, torch.device("cpu"), EngineChoice(batch_size=8))
    model, manifest = load_artifact(artifact)
    bucketed = ServedModel(model, manifest, torch.device("cpu"), EngineChoice(batch_size=8))
    bucketed.feed = Feed(torch.device("cpu"), 8, bucketed=True)
    batch = images(3, seed=1)
    a, b = plain.infer(batch), bucketed.infer(batch)
    assert a.scores.shape == b.scores.shape == (3,)
    assert a.maps.shape == b.maps.shape == (3, 64, 64)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.maps, b.maps, rtol=1e-5, atol=1e-6)


def test_compile_is_a_setting_of_the_torch_engine_only(artifact, tmp_path):
    assert EngineSettings(compile="default").compile == "default"
    with pytest.raises(ValueError, match="compiles the torch engine, not RLR_ENGINE=openvino"):
        EngineSettings(compile="default", engine="openvino")
    model, manifest = load_artifact(artifact)
    with pytest.raises(ConfigError, match="compile mode 'fast'"):
        create_engine("torch", model, manifest, torch.device("cpu"), "fp32", tmp_path,
                      compile="fast")
    with pytest.raises(ConfigError, match="torch engine only"):
        create_engine("onnxruntime", model, manifest, torch.device("cpu"), "fp32", tmp_path,
                      compile="default")
    with pytest.raises(SettingsError, match="RLR_ENGINE=onnxruntime"):
        ServedModel(model, manifest, torch.device("cpu"),
               EngineChoice.model_construct(engine="onnxruntime", engine_cache=tmp_path,
                                            compile="default"))


def _compiled_like_eager(artifact, device: torch.device, batch: int) -> ServedModel:
    model, manifest = load_artifact(artifact)
    eager = ServedModel(model, manifest, device, EngineChoice(batch_size=batch, precision="fp32"))
    model, manifest = load_artifact(artifact)
    compiled = ServedModel(model, manifest, device, EngineChoice(batch_size=batch, precision="fp32",
                                                            compile="default"))
    compiled.warm_up()  # compiles each batch size here, not mid-line
    frames = images(batch, seed=2)
    a, b = eager.infer(frames), compiled.infer(frames)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(a.maps, b.maps, rtol=1e-3, atol=1e-4)
    return compiled


@pytest.mark.slow
def test_a_compiled_engine_scores_like_eager(artifact):
    # one batch size: compiling costs ~45 s per size on a 2-core CPU (the CUDA case does 3)
    assert _compiled_like_eager(artifact, torch.device("cpu"), 1).feed.sizes == (1,)


def test_jpeg_frames_decode_in_a_batch_to_the_model_size():
    frames = [encode_image(img, "jpeg", 90)[0] for img in images(2, 64, seed=3)]
    frames.append(encode_image(images(1, 128, seed=4)[0], "jpeg", 90)[0])
    out = decode_jpegs(frames, 64, torch.device("cpu"))
    assert out.shape == (3, 3, 64, 64) and out.dtype == torch.uint8
    for i in range(2):  # same library family as the worker's CPU decoder: within a level or two
        ref = simplejpeg.decode_jpeg(frames[i], colorspace="RGB")
        diff = np.abs(out[i].permute(1, 2, 0).numpy().astype(int) - ref.astype(int))
        assert diff.mean() < 1.0
    with pytest.raises(DataError, match="does not decode"):
        decode_jpegs([frames[0], b"\xff\xd8\xff not a jpeg"], 64, torch.device("cpu"))


@cuda
def test_staging_on_cuda_agrees_with_the_cpu_and_reuses_pinned_buffers():
    dev = torch.device("cuda")
    feed = Feed(dev, 8, bucketed=True)
    batch = images(5)
    first = feed.stage(batch)
    assert first.device.type == "cuda" and first.shape == (8, 3, 64, 64)
    assert torch.equal(first[:5].cpu(), to_tensor(batch))
    torch.cuda.synchronize()
    again = feed.stage(images(6, seed=1))
    torch.cuda.synchronize()
    assert sum(len(v) for v in feed._free.values()) == 1  # the finished buffer was reused
    assert torch.equal(again[:6].cpu(), to_tensor(images(6, seed=1)))


@cuda
def test_jpeg_frames_decode_on_cuda_like_on_the_cpu():
    frames = [encode_image(img, "jpeg", 90)[0] for img in images(4, 64, seed=5)]
    on_gpu = decode_jpegs(frames, 64, torch.device("cuda")).cpu().int()
    on_cpu = decode_jpegs(frames, 64, torch.device("cpu")).int()
    assert (on_gpu - on_cpu).abs().float().mean() < 1.0


@cuda
def test_a_compiled_cuda_engine_warms_every_bucket_and_scores_like_eager(artifact):
    compiled = _compiled_like_eager(artifact, torch.device("cuda"), 3)
    assert compiled.feed.sizes == (1, 2, 3)
    assert compiled.infer(images(2)).scores.shape == (2,)  # a padded batch, no recompile


@cuda
def test_a_cuda_engine_scores_like_the_cpu_one(artifact):
    model, manifest = load_artifact(artifact)
    cpu = ServedModel(model, manifest, torch.device("cpu"), EngineChoice(batch_size=8))
    model, manifest = load_artifact(artifact)
    gpu = ServedModel(model, manifest, torch.device("cuda"),
                 EngineChoice(batch_size=8, precision="fp32"))
    batch = images(5, seed=6)
    a, b = cpu.infer(batch), gpu.infer(batch)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3, atol=1e-4)


def _frame(i: int, data: bytes, encoding: str = "jpeg"):
    from daemon.wire.schema import encode_frame, parse_frame

    fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode()
              for k, v in encode_frame("cam", f"f{i}", 1.8e9, data, encoding).items()}
    return parse_frame(fields, 1 << 20)


def test_a_chunk_decodes_on_the_device_and_what_it_refuses_goes_the_cpu_path():
    from daemon.errors import FrameError
    from daemon.serve.decode import Threads

    threads = Threads(DecodeSettings(device_decode="yes", max_image_side=256))
    jpegs = [encode_image(img, "jpeg", 90)[0] for img in images(2, 128, seed=7)]
    frames = [_frame(0, jpegs[0]), _frame(1, encode_image(images(1)[0], "png")[0], "png"),
              _frame(2, jpegs[1]), _frame(3, jpegs[0][:300]),  # cut short: no end marker
              _frame(4, encode_image(images(1, 300)[0], "jpeg")[0])]  # over the side limit
    measured = []
    out = threads.decode_many(frames, 64, lambda i, f, img: measured.append((i, img.shape)),
                              torch.device("cpu"))
    assert [type(img).__name__ for img, _ in out[:3]] == ["Tensor", "ndarray", "Tensor"]
    assert out[0][0].shape == (3, 64, 64) and out[1][0].shape == (64, 64, 3)
    assert isinstance(out[3][0], FrameError) and out[3][0].reason == "corrupt"
    assert isinstance(out[4][0], FrameError) and out[4][0].reason == "bad_dimensions"
    assert sorted(measured) == [(0, (64, 64, 3)), (1, (64, 64, 3)), (2, (64, 64, 3))]
    cpu = Threads(DecodeSettings(device_decode="no")).decode_many(frames[:1], 64)[0][0]
    assert np.abs(out[0][0].permute(1, 2, 0).numpy().astype(int) - cpu.astype(int)).mean() < 3



def test_a_chunk_the_device_refuses_goes_the_cpu_path_and_a_broken_device_is_left(monkeypatch):
    import daemon.serve.decode as decode
    from daemon.serve.decode import Threads

    threads = Threads(DecodeSettings(device_decode="yes"))
    frames = [_frame(i, encode_image(img, "jpeg")[0]) for i, img in enumerate(images(2))]

    def refuses(datas, size, device):  # as nvJPEG does for a variant it does not decode
        raise DataError("a JPEG frame of the batch does not decode")

    monkeypatch.setattr(decode, "decode_jpegs", refuses)
    out = threads.decode_many(frames, 64, None, torch.device("cpu"))
    assert all(isinstance(img, np.ndarray) for img, _ in out)
    assert threads.device(type("E", (), {"device": torch.device("cpu")})()) is not None

    def broken(datas, size, device):
        raise RuntimeError("nvjpeg: library not initialised")

    monkeypatch.setattr(decode, "decode_jpegs", broken)
    out = threads.decode_many(frames, 64, None, torch.device("cpu"))
    assert all(isinstance(img, np.ndarray) for img, _ in out)
    assert threads.device(type("E", (), {"device": torch.device("cpu")})()) is None  # left


def test_mixed_device_and_host_images_stage_as_one_batch():
    frames = images(3, seed=8)
    mixed = [torch.from_numpy(frames[0]).permute(2, 0, 1), frames[1],
             torch.from_numpy(frames[2]).permute(2, 0, 1)]
    staged = Feed(torch.device("cpu"), 4, bucketed=True).stage(mixed)
    assert staged.shape == (4, 3, 64, 64)
    assert torch.equal(staged[:3], to_tensor(frames)) and not staged[3].any()


def test_rlr_threads_reaches_the_engine(artifact, clean_env_threads):
    # A CPU host runs a worker process per core or two, each computing with RLR_THREADS.
    s = EngineChoice(threads=1)
    assert s.threads == 1
    with pytest.raises(ValueError, match="threads"):
        EngineSettings(threads=-1)
    model, manifest = load_artifact(artifact)
    ServedModel(model, manifest, torch.device("cpu"), s)
    assert torch.get_num_threads() == 1


@pytest.fixture
def clean_env_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
