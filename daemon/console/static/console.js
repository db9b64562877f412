// The console's live parts. One EventSource per page; everything from a stream is written
// with text nodes (el() below), never as markup.
"use strict";

const page = document.body.dataset.page;
const lines = JSON.parse(document.body.dataset.lines || "[]");
let offset = 0; // server clock - browser clock, seconds
window.rlrShown = []; // [result id, published ms (server), shown ms (server clock)] for tests

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined) continue;
    e.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}
const q = (params) => new URLSearchParams(params).toString();
const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toPrecision(d));
const when = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "");
// An id as it is: bidi controls (a right-to-left override would show the name reversed) made
// visible as <U+202E>; the element is also isolated (unicode-bidi: isolate in the CSS).
const BIDI = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;
const shownId = (s) => String(s ?? "").replace(
  BIDI, (c) => "<U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + ">");

function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = ""), 6000);
}

// operator name and token: kept in this browser (token only for the tab's session)
const opInput = document.getElementById("operator");
const tokInput = document.getElementById("token");
opInput.value = localStorage.getItem("rlr-operator") || "";
tokInput.value = sessionStorage.getItem("rlr-token") || "";
opInput.addEventListener("change", () => localStorage.setItem("rlr-operator", opInput.value));
tokInput.addEventListener("change", () => sessionStorage.setItem("rlr-token", tokInput.value));

async function act(path, body) {
  const r = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json", "x-rlr-token": tokInput.value },
    body: JSON.stringify({ ...body, by: opInput.value }),
  });
  let out = {};
  try { out = await r.json(); } catch (e) { out = { error: r.statusText }; }
  if (!r.ok) { toast(out.error || r.statusText, true); return null; }
  toast("done by " + out.by);
  return out;
}

// ------------------------------------------------------------------------ overview tiles
const tiles = new Map();
const STALE_S = 5;

function tileOf(t) {
  const key = t.line + "\u0000" + t.camera;
  let tile = tiles.get(key);
  if (tile) return tile;
  const sec = [...document.querySelectorAll("section.line")].find((s) => s.dataset.line === t.line);
  if (!sec) return null;
  const img = el("img", { class: "thumb", alt: "latest frame" });
  const over = el("img", { class: "overlay", alt: "", hidden: true });
  const canvas = el("canvas", { class: "spark", width: 300, height: 48 });
  const parts = {
    img, over, canvas, score: el("span", { class: "score" }), verdict: el("span", { class: "verdict" }),
    thr: el("span", { class: "thr" }), fps: el("span"), lat: el("span"), model: el("span", { class: "model" }),
    health: el("span", { class: "health" }), stale: el("span", { class: "stale-mark" }, "stale"),
    cap: el("div", { class: "pic-caption" }),
  };
  const root = el("article", { class: "tile" },
    el("h3", {}, el("span", { class: "camera" }, shownId(t.camera)), parts.health, parts.stale),
    el("div", { class: "pic" }, img, over), parts.cap,
    el("div", { class: "nums" }, parts.score, " / ", parts.thr, " ", parts.verdict),
    el("div", { class: "meta" }, parts.fps, " fps · p50 ", parts.lat, " · ", parts.model),
    canvas);
  sec.querySelector(".tiles").appendChild(root);
  tile = { root, parts, scores: [], last: {} };
  tiles.set(key, tile);
  return tile;
}

function updateTile(t, now) {
  const tile = tileOf(t);
  if (!tile) return;
  const p = tile.parts;
  tile.scores = t.full ? t.scores : tile.scores.concat(t.scores).slice(-300);
  if (t.rid) {
    tile.last = t;
    p.score.textContent = fmt(t.score);
    p.thr.textContent = t.threshold === null ? "no threshold" : fmt(t.threshold);
    p.verdict.textContent = t.anomalous ? "ANOMALY" : "ok";
    tile.root.classList.toggle("anomalous", !!t.anomalous);
    p.fps.textContent = fmt(t.fps, 2);
    p.lat.textContent = (t.p50 === null ? "–" : Math.round(t.p50)) + " / p99 " +
      (t.p99 === null ? "–" : Math.round(t.p99)) + " ms";
    p.model.textContent = t.model || "";
    tile.root.dataset.rid = t.rid;
    if (!t.full) window.rlrShown.push([t.rid, t.published * 1000, Date.now() + offset * 1000]);
    if (window.rlrShown.length > 2000) window.rlrShown.splice(0, 1000);
  }
  if (t.thumb && t.thumb !== tile.thumb) {
    tile.thumb = t.thumb;
    p.img.src = "/thumb?" + q({ line: t.line, camera: t.camera, v: t.thumb });
    p.over.hidden = !t.overlay;
    if (t.overlay) p.over.src = "/overlay?" + q({ line: t.line, camera: t.camera, frame: t.thumb_frame });
    // The picture is refreshed a few times a second at most, so it is not always the frame the
    // score below belongs to: say which frame it shows and whether that one was anomalous.
    p.cap.textContent = "picture: frame " + (t.thumb_frame || "?") +
      (t.overlay ? " · anomalous, heat map shown" : "");
  }
  const kinds = Object.keys(t.health || {});
  p.health.textContent = kinds.length ? "⚠ " + kinds.join(", ") : "";
  p.health.title = kinds.length ? "camera health: " + kinds.join(", ") : "";
  draw(tile);
  markStale(tile, now);
}

function markStale(tile, now) {
  const stale = tile.last.published !== undefined && now - tile.last.published > STALE_S;
  tile.root.classList.toggle("stale", stale);
}

function draw(tile) {
  const c = tile.parts.canvas, g = c.getContext("2d"), s = tile.scores;
  g.clearRect(0, 0, c.width, c.height);
  if (!s.length) return;
  // the axis spans the scores, and the threshold when it is near them (else it sits at an edge)
  const sc = s.map((x) => x[0]), thr = s[s.length - 1][1];
  let lo = Math.min(...sc), hi = Math.max(...sc) + 1e-9;
  const span = hi - lo || Math.abs(hi) || 1;
  if (thr !== null && thr > lo - span && thr < hi + span) { lo = Math.min(lo, thr); hi = Math.max(hi, thr); }
  const y = (v) => Math.min(c.height - 1, Math.max(1, c.height - 2 - ((v - lo) / (hi - lo)) * (c.height - 4)));
  const x = (i) => (i / Math.max(1, s.length - 1)) * c.width;
  g.strokeStyle = "#60a5fa"; g.beginPath();
  s.forEach((p, i) => (i ? g.lineTo(x(i), y(p[0])) : g.moveTo(x(i), y(p[0]))));
  g.stroke();
  if (thr !== null) { g.strokeStyle = "#ef4444"; g.setLineDash([4, 3]); g.beginPath();
    g.moveTo(0, y(thr)); g.lineTo(c.width, y(thr)); g.stroke(); g.setLineDash([]); }
  g.fillStyle = "#ef4444";
  s.forEach((p, i) => { if (p[2]) g.fillRect(x(i) - 1, y(p[0]) - 1, 3, 3); });
}

// ------------------------------------------------------------------------ alerts
const alertIds = new Set();

function alertCard(a) {
  const figs = [];
  for (let i = 0; i < a.evidence; i++) {
    const base = { line: a.line, alert: a.id, i };
    figs.push(el("figure", {},
      el("div", { class: "pic" }, el("img", { class: "evidence", alt: "evidence frame", src: "/evidence?" + q({ ...base, kind: "image" }) }),
        a.has_mask[i] ? el("img", { class: "overlay", alt: "", src: "/evidence?" + q({ ...base, kind: "mask" }) }) : null),
      el("figcaption", {}, a.frame_ids[i] || "")));
  }
  const ack = el("span", { class: "ack" }, a.ack ? "acknowledged by " + a.ack.by + " at " + when(a.ack.ts) : "");
  const button = el("button", { class: "ack-button", hidden: !!a.ack, onclick: async () => {
    const out = await act("/api/ack", { line: a.line, alert_id: a.id });
    if (out) { button.hidden = true; ack.textContent = "acknowledged by " + out.by; }
  } }, "Acknowledge");
  return el("article", { class: "alert" + (a.ack ? " acked" : ""), "data-id": a.id },
    el("h3", {}, el("span", { class: "camera" }, shownId(a.camera)), " · line ", a.line, " · ", when(a.ts)),
    el("p", {}, "rule ", a.rule, " · scores ", a.scores.map((s) => fmt(s)).join(", "),
      " · threshold ", fmt(a.threshold), " · model ", a.model,
      a.health.length ? " · camera unhealthy: " + a.health.join(", ") : ""),
    el("div", { class: "evidence-row" }, figs), el("p", {}, button, ack));
}

function addAlert(a, atTop) {
  if (alertIds.has(a.line + a.id)) return;
  alertIds.add(a.line + a.id);
  const box = document.getElementById("alerts");
  if (atTop) box.prepend(alertCard(a)); else box.appendChild(alertCard(a));
}

async function loadAlerts() {
  for (const line of lines) {
    const r = await fetch("/api/alerts?" + q({ line }));
    if (r.ok) (await r.json()).forEach((a) => addAlert(a, false));
  }
}

// ------------------------------------------------------------------------ workers and jobs
function table(head, rows) {
  return el("table", {}, el("tr", {}, head.map((h) => el("th", {}, h))),
    rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c)))));
}

function renderWorkers(status) {
  const box = document.getElementById("workers");
  box.replaceChildren(...status.lines.map((ln) => el("section", { class: "line" },
    el("h2", {}, "line ", ln.line),
    el("p", {}, "frames: ", ln.frames.length, " in stream, lag ", ln.frames.lag ?? "–",
      ", pending ", ln.frames.pending ?? "–", " · skipped ", ln.skipped,
      " · dead letters ", ln.dead_letters),
    table(["worker", "host", "status", "device", "loaded", "refused", "backlog", "pending", "done", "heartbeat"],
      ln.workers.map((w) => [w.worker, w.host, w.status + (w.why ? " (" + w.why + ")" : ""), w.device ?? "",
        w.models.join(", "), Object.entries(w.model_errors).map(([v, why]) => v + ": " + why).join("; "),
        w.backlog ?? "–", w.pending ?? "–", w.done, w.age_s + " s ago"])),
    el("h3", {}, "dead letters by reason"),
    table(["reason", "count"], Object.entries(ln.dead_by_reason)),
    el("h3", {}, "newest dead letters"),
    el("div", {}, ln.dead_recent.map((d) => el("details", {},
      el("summary", {}, when(d.ts), " · ", d.reason, " · ", el("span", { class: "camera" }, shownId(d.original.camera)), " ",
        shownId(d.original.frame_id)),
      el("pre", {}, shownId(d.detail + "\n" + JSON.stringify(d.original, null, 1)))))))));
}

function renderJobs(status) {
  const box = document.getElementById("jobs");
  const rows = status.jobs.map((j) => {
    const done = j.epochs ? (j.epoch || 0) / j.epochs : (j.finished ? 1 : 0);
    const bar = el("progress", { max: 1, value: done, title: Math.round(done * 100) + "%" });
    const buttons = el("span", {},
      j.finished ? null : el("button", { onclick: () => act("/api/job", { job_id: j.id, action: "cancel" }) }, "Cancel"),
      j.finished ? el("button", { onclick: () => act("/api/job", { job_id: j.id, action: "retry" }) }, "Retry") : null,
      el("button", { onclick: () => showLog(j.id) }, "Log"));
    return [j.id, j.state + (j.cancel_requested ? " (cancel requested)" : ""), bar,
      (j.epoch ?? "–") + "/" + (j.epochs ?? "–"), fmt(j.loss), j.eta_s ? Math.round(j.eta_s) + " s" : "",
      j.by, j.trainer, j.version, j.error, buttons];
  });
  box.replaceChildren(el("h2", {}, "Training jobs"),
    el("p", {}, "trainers: ", status.trainers.map((t) => t.name || t.host || "?").join(", ") || "none"),
    table(["job", "state", "progress", "epoch", "loss", "ETA", "by", "trainer", "version", "error", ""], rows));
}

async function showLog(id) {
  const r = await fetch("/api/joblog?" + q({ job: id }));
  const pre = document.getElementById("joblog");
  pre.hidden = false;
  pre.textContent = "log of " + id + "\n" + (r.ok ? (await r.json()).join("\n") : r.statusText);
}

// ------------------------------------------------------------------------ models page
document.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", async () => {
  if (!confirm(b.textContent + " on line " + b.dataset.line + "?")) return;
  const out = await act("/api/rollout", { line: b.dataset.line, action: b.dataset.action });
  if (out) setTimeout(() => location.reload(), 800);
}));

// ------------------------------------------------------------------------ live updates
function onEvent(ev) {
  offset = ev.now - Date.now() / 1000;
  if (ev.type === "snapshot" || ev.type === "tiles") {
    if (page === "/") (ev.tiles || []).forEach((t) => updateTile(t, ev.now));
  }
  if ((ev.type === "snapshot" || ev.type === "status") && ev.status && ev.status.lines.length) {
    if (page === "/workers") renderWorkers(ev.status);
  }
  if ((ev.type === "snapshot" || ev.type === "status") && ev.status && page === "/jobs") {
    renderJobs(ev.status);
  }
  if (ev.type === "alert" && page === "/alerts") addAlert(ev.alert, true);
  if (ev.type === "ack" && page === "/alerts") {
    const card = [...document.querySelectorAll("article.alert")].find((c) => c.dataset.id === ev.id);
    if (card) {
      card.classList.add("acked");
      card.querySelector(".ack-button").hidden = true;
      card.querySelector(".ack").textContent = "acknowledged by " + ev.ack.by + " at " + when(ev.ack.ts);
    }
  }
  if (ev.type === "alert" && page === "/") toast("alert: " + shownId(ev.alert.camera) + " on line " + ev.alert.line, true);
}

function connectLive() {
  const live = document.getElementById("live");
  const es = new EventSource("/events");
  es.onopen = () => (live.className = "live on");
  es.onerror = () => (live.className = "live off");
  es.onmessage = (m) => onEvent(JSON.parse(m.data));
}

if (page === "/alerts") loadAlerts();
if (page !== "/models") connectLive(); else document.getElementById("live").hidden = true;
setInterval(() => { const now = Date.now() / 1000 + offset; tiles.forEach((t) => markStale(t, now)); }, 1000);
