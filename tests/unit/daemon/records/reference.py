"""Generated records and the answers to the queries computed in plain Python, apart from the
SQL, for the query tests on SQLite and PostgreSQL alike."""

from __future__ import annotations

import random
from collections import Counter

T0_MS = 1_796_601_600_000  # 2026-12-07 00:00 UTC
HOUR = 3_600_000


def frame_rows(n: int, lines=("l1", "l2"), seed: int = 1, span_h: int = 72) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        anomalous = rng.random() < 0.1
        rows.append({"line": rng.choice(lines), "camera": f"cam{i % 3}", "frame_id": f"f{i}",
                     "ts_ms": T0_MS + rng.randrange(span_h * HOUR),
                     "score": rng.random() * 2, "threshold": 1.0, "is_anomaly": anomalous,
                     "model_version": rng.choice(("v1", "v2")), "latency_ms": rng.random() * 50,
                     "product_class": "bottle", "part_id": f"P{i // 3}" if i % 5 else None,
                     "view": ("top", "side", "end")[i % 3] if i % 5 else None,
                     "picture_ref": None, "mask_ref": None, "entry_id": f"{i}-0",
                     "recorded_ms": T0_MS})
    return rows


def part_rows(n: int, lines=("l1", "l2"), seed: int = 2, span_h: int = 72) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ts = T0_MS + rng.randrange(span_h * HOUR)
        verdict = rng.choices(("pass", "reject", "incomplete"), (85, 10, 5))[0]
        # an incomplete part is rejected unless its recipe lets it pass
        outcome = verdict if verdict != "incomplete" else rng.choice(("reject", "pass"))
        rows.append({"line": rng.choice(lines), "part_id": f"SN-{i}",
                     "recipe": "r1", "product": "bottle", "verdict": verdict,
                     "views": {"top": {"camera": "cam0", "score": 0.5}},
                     "first_ts_ms": ts - 40, "ts_ms": ts, "total_ms": 40.0,
                     "entry_id": f"{i}-0", "recorded_ms": ts, "outcome": outcome,
                     "missing": "side" if verdict == "incomplete" else None,
                     "product_class": "bottle"})
    return rows


def yield_reference(rows: list[dict], size: int, shift: int, of: str,
                    line: str | None = None, since_ms: int | None = None
                    ) -> list[tuple[str, int, int, int, int]]:
    """(line, bucket start, count, rejects, incomplete), oldest first then by line. Counted
    by the UTC hour of each row, as the rollups are: an hour belongs whole to the bucket its
    start falls in, and `since_ms` takes whole hours."""
    n, rej, inc = Counter(), Counter(), Counter()
    for r in rows:
        hour = r["ts_ms"] // HOUR * HOUR
        if (line is not None and r["line"] != line) or \
                (since_ms is not None and hour < since_ms // HOUR * HOUR):
            continue
        key = (r["line"], (hour - shift) // size * size + shift)
        n[key] += 1
        if of == "frames":
            rej[key] += r["is_anomaly"]
        else:
            rej[key] += r["outcome"] == "reject"  # the gate's decision, incomplete or not
            inc[key] += r["verdict"] == "incomplete"
    return [(k[0], k[1], n[k], rej[k], inc[k]) for k in sorted(n, key=lambda k: (k[1], k[0]))]


def rollups_and_raw_counts(store) -> list[tuple[list, list]]:
    """(rollup rows, the same counts made from the raw rows) of frames, then of parts."""
    import sqlalchemy as sa

    from daemon.records.tables import frame_hours, frame_results, part_hours, part_verdicts

    f, v = frame_results, part_verdicts
    raw_frames = sa.select(
        f.c.line, f.c.camera, sa.func.coalesce(f.c.product_class, "").label("p"),
        f.c.ts_ms.op("/")(HOUR).op("*")(HOUR).label("h"), sa.func.count(),
        sa.func.sum(sa.case((f.c.is_anomaly, 1), else_=0)), sa.literal(0)
    ).group_by(f.c.line, f.c.camera, "p", "h")
    raw_parts = sa.select(
        v.c.line, sa.func.coalesce(v.c.recipe, "").label("r"),
        sa.func.coalesce(v.c.product, "").label("p"),
        v.c.ts_ms.op("/")(HOUR).op("*")(HOUR).label("h"), sa.func.count(),
        sa.func.sum(sa.case((v.c.outcome == "reject", 1), else_=0)),
        sa.func.sum(sa.case((v.c.verdict == "incomplete", 1), else_=0))
    ).group_by(v.c.line, "r", "p", "h")
    out = []
    with store.engine.connect() as conn:
        for rolled, raw in ((frame_hours, raw_frames), (part_hours, raw_parts)):
            got = sorted(tuple(int(x) if isinstance(x, (int, float)) else x for x in r)
                         for r in conn.execute(sa.select(*rolled.columns)))
            want = sorted(tuple(int(x) if isinstance(x, (int, float)) else x for x in r)
                          for r in conn.execute(raw))
            out.append((got, want))
    return out
