"""The console's HTML, rendered on the server. Every value that came from Redis goes through
`esc` (names, classes, versions, history entries); the live parts of a page are filled in by
`static/console.js`, which writes stream values as text only."""

from __future__ import annotations

import html
import json
import time

from daemon.console.views import histogram

PAGES = (("/", "Line"), ("/alerts", "Alerts"), ("/models", "Models"),
         ("/workers", "Workers"), ("/jobs", "Jobs"))


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def shell(page: str, title: str, body: str, lines: list[str]) -> str:
    nav = "".join(f'<a href="{href}"{" class=here" if href == page else ""}>{esc(name)}</a>'
                  for href, name in PAGES)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rlr console · {esc(title)}</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body data-page="{esc(page)}" data-lines="{esc(json.dumps(lines))}">
<header><b>rlr</b> <nav>{nav}</nav>
<span id="live" class="live off" title="live updates">●</span>
<label>operator <input id="operator" size="10" autocomplete="username"></label>
<label>token <input id="token" type="password" size="10" autocomplete="off"></label>
</header>
<main>{body}</main>
<div id="toast" role="status"></div>
</body></html>"""


def overview(lines: list[str]) -> str:
    sections = "".join(f'<section class="line" data-line="{esc(line)}"><h2>line '
                       f'{esc(line)}</h2><div class="tiles"></div></section>' for line in lines)
    return shell("/", "line", sections or "<p>No lines configured (RLR_LINES).</p>", lines)


def alerts_page(lines: list[str]) -> str:
    body = ('<h2>Alerts</h2><p class="hint">Newest first; live. Each alert keeps the pictures '
            'and masks of its anomalous frames.</p><div id="alerts"></div>')
    return shell("/alerts", "alerts", body, lines)


def workers_page(lines: list[str]) -> str:
    return shell("/workers", "workers", '<div id="workers">waiting for the first status…</div>',
                 lines)


def jobs_page(lines: list[str]) -> str:
    return shell("/jobs", "jobs", '<div id="jobs">waiting for the first status…</div>'
                 '<pre id="joblog" hidden></pre>', lines)


# ----------------------------------------------------------------------------- models


_COLORS = {"production": "#3b82f6", "canary": "#f59e0b", "shadow": "#a855f7"}


def _svg(values: list[float], lo: float, hi: float, thresholds: list[float], color: str) -> str:
    shares = histogram(values, lo, hi)
    top = max(shares) or 1.0
    w, h, n = 300, 80, len(shares)
    bars = "".join(f'<rect x="{i * w / n:.1f}" y="{h - s / top * h:.1f}" width="{w / n - 1:.1f}"'
                   f' height="{s / top * h:.1f}" fill="{color}"/>' for i, s in enumerate(shares))
    lines = "".join(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{h}" class="thr"/>'
                    for t in thresholds if lo <= t <= hi
                    for x in [(t - lo) / (hi - lo) * w])
    return (f'<svg viewBox="0 0 {w} {h}" class="dist" role="img" '
            f'aria-label="score distribution">{bars}{lines}</svg>')


def _thresholds(row: dict) -> list[float]:
    return [float(v) for v in (row["thresholds"] or {}).values() if isinstance(v, (int, float))]


def models_page(lines: list[str], views: list[dict]) -> str:
    parts = ["<h2>Models and rollout</h2>"]
    for v in views:
        line, ro = v["line"], v["rollout"]
        lo, hi = _axis([s for r in v["rows"] for s in r["scores"]],
                       [t for r in v["rows"] for t in _thresholds(r)])
        rows = []
        for r in v["rows"]:
            metrics = ", ".join(f"{esc(k)} {esc(_num(x))}" for k, x in
                                sorted((r["metrics"] or {}).items())[:6]) or "–"
            thr = ", ".join(f"{esc(k)} {esc(_num(x))}" for k, x in
                            sorted((r["thresholds"] or {}).items())[:6]) or "uncalibrated"
            n = len(r["scores"])
            rows.append(
                f'<tr data-role="{esc(r["role"])}"><th>{esc(r["role"])}</th>'
                f'<td class="version">{esc(r["version"])}'
                f'{" <b class=bad>(not in registry)</b>" if r["missing"] else ""}</td>'
                f'<td>{metrics}</td><td>{thr}</td>'
                f'<td>{_svg(r["scores"], lo, hi, _thresholds(r), _COLORS[r["role"]])}'
                f'<div class="hint">{n} recent scores, {esc(_num(lo))} … {esc(_num(hi))}'
                f'</div></td></tr>')
        if ro.get("canary"):
            rows.append(f'<tr><td></td><td colspan="4" class="hint">canary serves '
                        f'{esc(v["canary_scope"])}</td></tr>')
        buttons = "".join(
            f'<button data-action="{a}" data-line="{esc(line)}"{"" if ok else " disabled"}>'
            f'{label}</button>'
            for a, label, ok in (("promote", "Promote canary", ro.get("canary")),
                                 ("rollback", "Roll back", ro.get("previous")),
                                 ("undeploy_canary", "Undeploy canary", ro.get("canary")),
                                 ("undeploy_shadow", "Undeploy shadow", ro.get("shadow"))))
        history = "".join(
            f'<tr><td>{esc(_when(h["ts"]))}</td><td>{esc(h["action"])}</td>'
            f'<td>{esc(h["version"])}</td><td>{esc(h["by"])}</td><td>{esc(h["why"])}</td></tr>'
            for h in v["history"])
        corrupt = (f'<p class="bad">rollout record unreadable: {esc(ro["corrupt"])}</p>'
                   if ro.get("corrupt") else "")
        parts.append(
            f'<section class="rollout" data-line="{esc(line)}"><h3>line {esc(line)} '
            f'<span class="hint">revision {esc(ro.get("revision"))}</span></h3>{corrupt}'
            f'<table class="roles"><tr><th>role</th><th>version</th><th>metrics</th>'
            f'<th>thresholds</th><th>recent scores (same axis)</th></tr>{"".join(rows)}'
            f'</table><p class="actions">{buttons}</p>'
            f'<details open><summary>history</summary><table class="history"><tr><th>when'
            f'</th><th>action</th><th>version</th><th>by</th><th>why</th></tr>{history}'
            f'</table></details></section>')
    return shell("/models", "models", "".join(parts), lines)


def _axis(scores: list[float], thresholds: list[float]) -> tuple[float, float]:
    """The scores' range, widened to the thresholds that lie near it (a far one would flatten
    every bar against one edge)."""
    if not scores:
        return (min(thresholds), max(thresholds) + 1.0) if thresholds else (0.0, 1.0)
    lo, hi = min(scores), max(scores)
    span = (hi - lo) or abs(hi) or 1.0
    near = [t for t in thresholds if lo - span < t < hi + span]
    lo, hi = min([lo, *near]), max([hi, *near])
    return lo, hi if hi > lo else lo + 1.0


def _num(x: object) -> str:
    if x is None:
        return "–"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""
