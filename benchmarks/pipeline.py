"""Streaming pipeline throughput and latency, measured in one run.

1. model-only frames/s: `model.predict` on decoded batches of the worker's batch size;
2. end-to-end frames/s: pre-encoded JPEG frames XADDed to the frames stream (the producer's
   code path) → Redis → a real `rlrctl worker` process → results stream, timed from the
   first XADD to the last result;
3. their ratio (target >= 0.9);
4. p50 / p99 end-to-end latency (capture → result published) with frames paced at half of
   the measured end-to-end capacity.

With --compare-health, the cost of camera health instead: two workers on two lines, one with
RLR_HEALTH=false, measured in alternating rounds, plus the checks' CPU time per frame.

With --compare-parts, the cost of joining parts: two workers on two lines, one fed plain
frames, the other the same frames as parts of two views (`top`, `side`); each worker's CPU
time per frame (from /proc) in alternating rounds, and every part checked to have one verdict.

The worker runs as its own process on the same machine, like in production; camera-side JPEG
encoding is done before timing (cameras encode on their own hardware). Redis: an embedded
server unless --redis-url is given.

    python benchmarks/pipeline.py [--preset lite] [--batch 8] [--seconds 20] [--device cpu]
                                  [--engine openvino] [--compare-health]
                                  [--cameras 8] [--thumb-interval 0]
                                  [--workers 2 --threads 1]   # a CPU host: a process per core
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis
import torch

from daemon.line.embedded import EmbeddedRedis
from daemon.line.producer import push_images
from daemon.serve.settings import BatchSettings
from daemon.wire import keys
from daemon.wire.codec import encode_image
from daemon.wire.schema import Result, encode_frame
from rlr.artifact import save_artifact
from rlr.config import preset
from rlr.data import list_images, load_image, to_tensor
from rlr.model import create_model
from rlr.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def make_model(name: str, workdir: Path, images: list[np.ndarray]) -> Path:
    """The preset's model (packaged backbone weights) with a threshold at the median score."""
    cfg = preset(name)
    if cfg.backbone.weights == "hub":  # not on this machine; random weights time the same
        cfg = cfg.replace(backbone=dataclasses.replace(cfg.backbone, weights="none"))
        print(f"preset {name}: random backbone weights (speed only; scores mean nothing)",
              flush=True)
    model = create_model(cfg).eval()
    scores = model.predict(to_tensor(images[:16])).score.numpy()
    path = workdir / f"{name}.rlr"
    save_artifact(path, model, ["bench"], thresholds={"default": float(np.median(scores))})
    return path


def model_only_fps(path: Path, images: list[np.ndarray], batch: int, seconds: float,
                   device: str, engine: str = "torch", cache: Path | None = None) -> float:
    from rlr.artifact import load_artifact
    from rlr.engines import create_engine

    model, manifest = load_artifact(path, device=device)
    if engine != "torch":  # the same engine the worker builds (from the same cache)
        model = create_engine(engine, model, manifest, torch.device(device), "fp32",
                              cache or path.parent / "engines")
    x = to_tensor((images * batch)[:batch]).to(device)
    model.predict(x)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.predict(x)
        n += batch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def start_worker(url: str, line: str, model: Path, batch: int, device: str,
                 log: Path, name: str = "bench-worker", probe: Path | None = None,
                 null: bool = False, **extra: str) -> subprocess.Popen:
    """A real `rlrctl worker` process; with `probe`, the measuring one (`probe_worker.py`:
    CPU by stage written to that file; with `null`, the null engine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLR_", "BENCH_"))}
    env.update({"RLR_REDIS_URL": url, "RLR_LINES": line, "RLR_MODEL": str(model),
                "RLR_BATCH_SIZE": str(batch), "RLR_DEVICE": device, "RLR_METRICS_PORT": "0",
                "RLR_CONSUMER": name, "RLR_BACKLOG_LIMIT": "50000",
                "RLR_FRAMES_MAXLEN": "100000", "RLR_RESULTS_MAXLEN": "100000",
                "RLR_MAX_FRAME_AGE_S": "600", "RLR_ALERT_COOLDOWN_S": "3600",
                **{f"RLR_{k.upper()}": v for k, v in extra.items()}})
    cmd = [sys.executable, "-m", "daemon.cli", "worker"]
    if probe is not None:
        env.update({"BENCH_PROBE_FILE": str(probe), "BENCH_PROBE_NULL": "1" if null else "0",
                    "PYTHONPATH": str(ROOT)})
        cmd = [sys.executable, str(ROOT / "benchmarks" / "probe_worker.py"), "worker"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)


STAGES = ("read", "decode", "batching", "model", "results", "publish", "masks",
          "housekeeping", "loop")


def probe_totals(paths: list[Path]) -> dict:
    """The probes' running totals (each rewrites its file every half second), summed over
    the worker processes."""
    time.sleep(0.6)
    out: dict = {"cpu_s": 0.0, "stages": {}}
    for path in paths:
        one = json.loads(path.read_text())
        out["cpu_s"] += one["cpu_s"]
        for k, v in one["stages"].items():
            out["stages"][k] = out["stages"].get(k, 0.0) + v
    return out


def print_stages(before: dict, after: dict, frames: int) -> None:
    """The worker's CPU time per frame by stage, between two probe readings."""
    cpu = (after["cpu_s"] - before["cpu_s"]) * 1e6 / frames
    parts = {k: (after["stages"].get(k, 0.0) - before["stages"].get(k, 0.0)) * 1e6 / frames
             for k in set(after["stages"]) | set(before["stages"])}
    print(f"worker CPU      {cpu:8.0f} us/frame over {frames} frames (process CPU clock), "
          "by stage:", flush=True)
    for k in [*STAGES, *sorted(set(parts) - set(STAGES))]:
        if k in parts:
            print(f"  {k:<13} {parts[k]:8.1f} us", flush=True)
    print(f"  {'other':<13} {cpu - sum(parts.values()):8.1f} us (interpreter, GC, threads "
          "outside the stages)", flush=True)


def wait_ready(client: redis.Redis, proc: subprocess.Popen, log: Path,
               name: str = "bench-worker") -> None:
    deadline = time.monotonic() + 180
    while b'"ready"' not in (client.get(keys.worker(name)) or b""):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"worker did not start; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def results_after(client: redis.Redis, line: str, start_id: str) -> list[tuple[str, Result]]:
    return [(eid.decode(), Result.from_fields(f))
            for eid, f in client.xrange(keys.results(line), min=f"({start_id}")]


def wait_results(client: redis.Redis, line: str, n: int, timeout: float) -> float:
    """Blocks until the results stream holds n entries; returns when the n-th was published.

    Polls slowly (the benchmark must not steal CPU from the worker it measures) and takes
    the time from the last result's entry id (Redis's clock, milliseconds).
    """
    deadline = time.monotonic() + timeout
    while client.xlen(keys.results(line)) < n:
        if time.monotonic() > deadline:
            sys.exit(f"only {client.xlen(keys.results(line))} of {n} results after {timeout}s")
        time.sleep(0.1)
    last_id = client.xrevrange(keys.results(line), count=1)[0][0].decode()
    return int(last_id.split("-")[0]) / 1000


def throughput(client: redis.Redis, line: str, frames: list[bytes], n: int,
               cameras: int = 1) -> float:
    have = client.xlen(keys.results(line))
    t0 = time.time()
    todo = (frames * (n // len(frames) + 1))[:n]
    if cameras == 1:
        push_images(client, line, "cam-tput", todo, maxlen=None)
    else:  # round robin, so that every batch holds frames of several cameras
        session, pipe = uuid.uuid4().hex[:6], client.pipeline(transaction=False)
        for i, data in enumerate(todo):
            cam = f"cam-tput{i % cameras}"
            pipe.xadd(keys.frames(line), encode_frame(cam, f"{cam}-{session}-{i}", time.time(),
                                                      data, "jpeg"))
            if len(pipe) >= 256:
                pipe.execute()
        pipe.execute()
    t1 = wait_results(client, line, have + n, timeout=60 + n)
    return n / (t1 - t0)


def latency(client: redis.Redis, line: str, frames: list[bytes], fps: float,
            seconds: float) -> np.ndarray:
    last = client.xrevrange(keys.results(line), count=1)
    start_id = last[0][0].decode() if last else "0-0"
    n = int(fps * seconds)
    period, t_next = 1.0 / fps, time.perf_counter()
    for i in range(n):
        t_next += period
        time.sleep(max(0.0, t_next - time.perf_counter()))
        push_images(client, line, "cam-lat", [frames[i % len(frames)]], maxlen=None)
    have = client.xlen(keys.results(line))
    wait_results(client, line, have, timeout=60)
    deadline = time.monotonic() + 60
    while len(got := results_after(client, line, start_id)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return np.array([r.latency_ms for _, r in got if r.camera == "cam-lat"])


def health_cost(args, client: redis.Redis, url: str, model: Path, images: list[np.ndarray],
                frames: list[bytes], work: Path) -> None:
    """Frames/s with and without camera health, alternating rounds; and the checks' own CPU
    time per frame (thumbnail measures, then the per-camera judgement)."""
    from daemon.serve.camera_measures import measure
    from daemon.serve.rules.camera_health import CameraWatch
    from daemon.serve.settings import CameraHealthSettings

    watch = CameraWatch("bench", CameraHealthSettings(),
                        quantiles={"fabric": [i / 10 for i in range(1, 10)]}, far=0.01)
    ref = measure(images[0])
    n = 2000
    t0 = time.process_time()
    ms = [measure(images[i % len(images)], ref.thumb) for i in range(n)]
    t1 = time.process_time()
    for m in ms:
        watch.observe(m, float(np.random.random()), False, "fabric", time.time())
    t2 = time.process_time()
    print(f"health checks: measure {1e6 * (t1 - t0) / n:.0f} us/frame, judge "
          f"{1e6 * (t2 - t1) / n:.0f} us/frame ({images[0].shape[0]} px frames)", flush=True)

    lines = {"on": f"hon{uuid.uuid4().hex[:6]}", "off": f"hoff{uuid.uuid4().hex[:6]}"}
    procs = {k: start_worker(url, lines[k], model, args.batch, args.device,
                             work / f"worker-{k}.log", name=f"bench-{k}",
                             health="true" if k == "on" else "false") for k in lines}
    try:
        for k, proc in procs.items():
            wait_ready(client, proc, work / f"worker-{k}.log", f"bench-{k}")
            throughput(client, lines[k], frames, 4 * args.batch)
        fps: dict[str, list[float]] = {"on": [], "off": []}
        per_round = max(int(args.seconds / args.rounds * 10), 4 * args.batch)
        for r in range(args.rounds):
            for k in (("off", "on") if r % 2 == 0 else ("on", "off")):
                fps[k].append(throughput(client, lines[k], frames, per_round))
                per_round = max(int(fps[k][-1] * args.seconds / args.rounds), 4 * args.batch)
        on, off = float(np.median(fps["on"])), float(np.median(fps["off"]))
        for k, v in (("health off", off), ("health on", on)):
            rounds = ", ".join(f"{x:.1f}" for x in fps[k.split()[-1]])
            print(f"{k:<15} {v:8.1f} frames/s (rounds: {rounds})", flush=True)
        print(f"cost            {100 * (1 - on / off):8.1f} % fewer frames/s (target <= 5 %)",
              flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push_parts(client: redis.Redis, line: str, frames: list[bytes], n: int) -> None:
    """`n` frames as parts of two views each (views `top` and `side` of one camera)."""
    session, pipe = uuid.uuid4().hex[:6], client.pipeline(transaction=False)
    for i in range(n):
        part, view = f"SN-{session}-{i // 2}", ("top", "side")[i % 2]
        pipe.xadd(keys.frames(line), encode_frame("cam-parts", f"{part}-{view}", time.time(),
                                                  frames[i % len(frames)], "jpeg", part=part,
                                                  view=view))
        if len(pipe) >= 256:
            pipe.execute()
    pipe.execute()


def parts_cost(args, client: redis.Redis, url: str, model: Path, frames: list[bytes],
               work: Path) -> None:
    """Each worker's CPU per frame, plain frames against the same frames as parts."""
    lines = {"plain": f"pplain{uuid.uuid4().hex[:6]}", "parts": f"pparts{uuid.uuid4().hex[:6]}"}
    null = args.engine == "null"
    procs = {k: start_worker(url, lines[k], model, args.batch, args.device,
                             work / f"worker-{k}.log", name=f"bench-{k}",
                             probe=work / f"probe-{k}.json" if null else None, null=null,
                             engine="torch" if null else args.engine,
                             engine_cache=str(work / "engines"),
                             **({"part_views": "top,side", "part_deadline_ms": "600000"}
                                if k == "parts" else {}))
             for k in lines}
    try:
        for k, proc in procs.items():
            wait_ready(client, proc, work / f"worker-{k}.log", f"bench-{k}")
        per_round = max(2 * int(args.seconds / args.rounds * 20), 8 * args.batch)
        cpu: dict[str, list[float]] = {"plain": [], "parts": []}
        sent = 0
        for r in range(args.rounds + 1):  # round 0 warms both paths up and is not counted
            for k in (("plain", "parts") if r % 2 == 0 else ("parts", "plain")):
                have = client.xlen(keys.results(lines[k]))
                c0 = cpu_s(procs[k].pid)
                if k == "parts":
                    push_parts(client, lines[k], frames, per_round)
                else:
                    push_images(client, lines[k], "cam-plain", (frames * per_round)[:per_round],
                                maxlen=None)
                wait_results(client, lines[k], have + per_round, timeout=60 + per_round)
                if k == "parts":  # the last verdicts follow their results
                    deadline = time.monotonic() + 30
                    while client.xlen(keys.parts(lines[k])) < (sent + per_round) // 2 and \
                            time.monotonic() < deadline:
                        time.sleep(0.02)
                if r:
                    cpu[k].append(1000 * (cpu_s(procs[k].pid) - c0) / per_round)
            sent += per_round
        verdicts = client.xlen(keys.parts(lines["parts"]))
        plain, parts = float(np.median(cpu["plain"])), float(np.median(cpu["parts"]))
        for k, v in (("plain frames", plain), ("parts of 2 views", parts)):
            rounds = ", ".join(f"{x:.2f}" for x in cpu[k.split()[0]])
            print(f"{k:<17} {v:7.2f} ms CPU per frame in the worker (rounds: {rounds})",
                  flush=True)
        print(f"joining parts    {100 * (parts / plain - 1):+7.1f} % CPU per frame (target <= "
              f"10 %); {verdicts} part verdicts for {sent // 2} parts", flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="lite", help="tiny or lite (or paper on a GPU)")
    ap.add_argument("--batch", type=int, default=8, help="worker batch size")
    ap.add_argument("--seconds", type=float, default=40,
                    help="total length of each measurement (split over the rounds)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=4, help="alternating measurement rounds")
    ap.add_argument("--redis-url", help="use this Redis instead of an embedded one")
    ap.add_argument("--engine", default="torch",
                    help="RLR_ENGINE of the worker (and of the model-only figure); null: no "
                         "model at all (measurement only), for the daemon's own ceiling")
    ap.add_argument("--stages", action="store_true",
                    help="run the measuring worker (benchmarks/probe_worker.py) and print its "
                         "CPU time per frame by stage (always on with --engine null)")
    ap.add_argument("--compare-health", action="store_true",
                    help="measure what camera health costs instead (workers with it on / off)")
    ap.add_argument("--compare-parts", action="store_true",
                    help="CPU per frame with and without part joining (two workers)")
    ap.add_argument("--cameras", type=int, default=1,
                    help="spread the throughput frames over this many cameras")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes in the line's consumer group (several per GPU)")
    ap.add_argument("--threads", type=int, default=0,
                    help="the workers' RLR_THREADS (CPU threads of the model per process; 0: "
                         "the engine's default); the model-only figure keeps the default")
    ap.add_argument("--compile", default="off",
                    help="the worker's RLR_COMPILE (off, default, max-autotune)")
    ap.add_argument("--thumb-interval", type=float,
                    help="the worker's RLR_THUMB_INTERVAL_S (0: no console thumbnails)")
    args = ap.parse_args()
    # A timeout's SIGTERM unwinds like Ctrl-C: the workers and the embedded Redis are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="rlr-bench-"))
    size = preset(args.preset).backbone.image_size
    data = write_dataset(work / "data", classes=["fabric", "tile", "wood"], n_train=8,
                         n_test_good=4, n_test_defect=4, size=size, seed=1, progress=False)
    images = [load_image(p, size) for p in list_images(sorted(data.glob("*/test")))]
    frames = [encode_image(img, "jpeg", 90)[0] for img in images]
    model = make_model(args.preset, work, images)
    print(f"preset {args.preset}: {size} px, batch {args.batch}, device {args.device}, "
          f"engine {args.engine}, torch threads {torch.get_num_threads()} (model-only), "
          f"{args.threads or 'default'} per worker process, {os.cpu_count()} CPUs", flush=True)

    server = None if args.redis_url else EmbeddedRedis(work / "redis").start()
    url = args.redis_url or server.url
    client = redis.Redis.from_url(url)
    if args.compare_health or args.compare_parts:
        try:
            if args.compare_parts:
                parts_cost(args, client, url, model, frames, work)
            else:
                health_cost(args, client, url, model, images, frames, work)
        finally:
            if server is not None:
                server.stop()
        return
    line = f"bench{uuid.uuid4().hex[:6]}"
    extra = {} if args.thumb_interval is None else {"thumb_interval_s": str(args.thumb_interval)}
    if args.compile != "off":
        extra["compile"] = args.compile
    if args.threads:
        extra["threads"] = str(args.threads)
    null = args.engine == "null"
    names = [f"bench-worker{i or ''}" for i in range(args.workers)]
    probes = [work / f"probe-{n}.json" for n in names] if null or args.stages else []
    logs = [work / f"{n}.log" for n in names]
    workers = [start_worker(url, line, model, args.batch, args.device, logs[i], name=names[i],
                            probe=probes[i] if probes else None, null=null,
                            engine="torch" if null else args.engine,
                            engine_cache=str(work / "engines"), **extra)
               for i in range(args.workers)]
    if args.workers > 1:
        print(f"{args.workers} worker processes in one consumer group", flush=True)
    try:
        for i, worker in enumerate(workers):
            wait_ready(client, worker, logs[i], names[i])
        throughput(client, line, frames, 4 * args.batch * args.workers)  # warm their paths
        # Alternate the two measurements (this machine's speed drifts over minutes) and
        # compare their medians: the ratio is then not an artefact of when each one ran.
        models, e2es, sent = [], [], 0
        before = probe_totals(probes) if probes else None
        for _ in range(args.rounds):
            if not null:
                models.append(model_only_fps(model, images, args.batch,
                                             args.seconds / args.rounds, args.device,
                                             args.engine))
            guess = models[-1] if models else (e2es[-1] if e2es else 500.0)
            n = max(int(guess * args.seconds / args.rounds), 4 * args.batch)
            e2es.append(throughput(client, line, frames, n, args.cameras))
            sent += n
        after = probe_totals(probes) if probes else None
        fps_e2e = float(np.median(e2es))
        if null:
            print("model-only          none (null engine: scores and maps at once)", flush=True)
        else:
            fps_model = float(np.median(models))
            print(f"model-only      {fps_model:8.1f} frames/s (predict on decoded batches; "
                  f"rounds: {', '.join(f'{x:.1f}' for x in models)})", flush=True)
        print(f"end-to-end      {fps_e2e:8.1f} frames/s (XADD -> worker -> results; rounds: "
              f"{', '.join(f'{x:.1f}' for x in e2es)})", flush=True)
        if not null:
            print(f"ratio           {fps_e2e / fps_model:8.2f}   (target >= 0.90)", flush=True)
        if probes:
            print_stages(before, after, sent)
        infer = [(r.infer_ms, r.worker) for _, r in results_after(client, line, "0-0")
                 if r.camera.startswith("cam-tput")]
        per_batch = float(np.median([ms for ms, _ in infer]))
        print(f"inside the worker: {per_batch:.1f} ms per batch of {args.batch} "
              f"({args.batch * 1000 / max(per_batch, 1e-3):.1f} frames/s while decoding and "
              "publishing run alongside)", flush=True)
        rate = fps_e2e / 2
        lat = latency(client, line, frames, rate, args.seconds)
        print(f"latency @ {rate:5.1f} fps (half capacity), {lat.size} frames: "
              f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
              f"max {lat.max():.1f} ms")
        # A batch's time: how long one takes through a worker at capacity (model and the
        # work around it; with the null engine the model's own time is ~0). With N worker
        # processes each one moves 1/N of the line's frames.
        per_worker = fps_e2e / args.workers
        wait_ms, batch_ms = BatchSettings().batch_wait_ms, 1000 * args.batch / per_worker
        bound, p99 = wait_ms + 2 * batch_ms, float(np.percentile(lat, 99))
        print(f"latency bound   p99 {p99:.1f} ms vs max wait {wait_ms:.0f} ms + 2 batch times "
              f"(2 x {batch_ms:.1f} ms: {args.batch} frames at {per_worker:.0f} frames/s per "
              f"worker) = {bound:.1f} ms: {'within' if p99 <= bound else 'OVER'}", flush=True)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
