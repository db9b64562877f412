"""Pixel metrics at MVTec AD scale: wall time and extra peak memory of `rlr.metrics`.

Builds synthetic maps and masks the size of the MVTec AD test set: 1,725 images at 256x256,
about 113 M pixels. About half of the images get 1-3 random elliptic defects. A map is noise,
plus a bump of random strength inside each defect, plus some defect-like false-positive blobs.
Generation runs in chunks and is timed separately. Two paths are then timed:

* `pixel_metrics(maps, masks)`: one shot, two passes (the range first, then the bins).
* `PixelMetricAccumulator`: batches of `--batch` maps with a known range. This is the path an
  evaluator takes when it streams maps.

Peak memory is the resident-set high-water mark (VmHWM) above the RSS just before each timed
call. VmHWM is reset through /proc/self/clear_refs (Linux >= 4.0). Where that is not possible,
the ru_maxrss delta of resource.getrusage is reported instead; it reads 0 when the peak happened
during generation. tracemalloc is not used because it misses numpy's buffers.

    python benchmarks/pixel_metrics.py [--n 1725] [--size 256] [--bins 100000] [--batch 32]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import resource
import time
from pathlib import Path

import numpy as np

from rlr.metrics import PixelMetricAccumulator, pixel_metrics

_STATUS = Path("/proc/self/status")
_M_MMAP_THRESHOLD = -3


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _return_freed_memory_to_os() -> None:
    # glibc raises its mmap threshold after large frees and then keeps freed buffers on the heap.
    # A later call would reuse them without its RSS growing, and its peak would read too low.
    # A fixed 1 MiB threshold makes every large buffer an mmap that goes back to the OS on free.
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        libc.malloc_trim(0)


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Extra peak RSS (MiB) of the code in the `with` block."""

    def __enter__(self) -> PeakMemory:
        _return_freed_memory_to_os()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.method, self.start = "VmHWM after clear_refs reset", _status_kib("VmRSS")
        except OSError:
            self.method = "ru_maxrss delta"
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc) -> None:
        if self.method.startswith("VmHWM"):
            peak = _status_kib("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mib = max(0, peak - self.start) / 1024


def _ellipses(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    yy, xx = np.ogrid[:size, :size]
    out = np.zeros((size, size), bool)
    for _ in range(k):
        cy, cx = rng.integers(0, size, 2)
        ry, rx = rng.uniform(0.01, 0.12, 2) * size + 1
        out |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return out


def generate(n: int, size: int, seed: int = 0, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    maps = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, size, size), bool)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        maps[start:stop] = rng.standard_normal((stop - start, size, size), np.float32)
        maps[start:stop] *= 0.3
        for i in range(start, stop):
            if rng.random() < 0.5:
                masks[i] = _ellipses(rng, size, int(rng.integers(1, 4)))
                maps[i][masks[i]] += rng.uniform(0.3, 1.5)
            if rng.random() < 0.3:  # false-positive blob
                maps[i][_ellipses(rng, size, 1)] += rng.uniform(0.3, 1.0)
    return maps, masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1725)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--bins", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    t0 = time.perf_counter()
    maps, masks = generate(args.n, args.size)
    print(f"generated {args.n} maps of {args.size}x{args.size} ({maps.size / 1e6:.1f} M pixels, "
          f"{masks.mean():.2%} defect) in {time.perf_counter() - t0:.1f} s")

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        one_shot = pixel_metrics(maps, masks, n_bins=args.bins)
        wall = time.perf_counter() - t0
    print(f"pixel_metrics, one shot:   {wall:6.2f} s   +{mem.mib:7.1f} MiB peak ({mem.method})")

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        acc = PixelMetricAccumulator(float(maps.min()), float(maps.max()), n_bins=args.bins)
        for i in range(0, args.n, args.batch):
            acc.update(maps[i : i + args.batch], masks[i : i + args.batch])
        streamed = acc.compute()
        wall = time.perf_counter() - t0
    print(f"accumulator, batch {args.batch:<4}: {wall:6.2f} s   +{mem.mib:7.1f} MiB peak "
          f"({mem.method})")
    print(f"regions: {acc.n_regions}, bins: {args.bins}")
    for key, value in one_shot.items():
        print(f"  {key:7s} {value:.6f}   (streamed {streamed[key]:.6f})")


if __name__ == "__main__":
    main()
