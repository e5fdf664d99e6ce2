// Switchyard operator dashboard: one page, fed by the server's event stream
// (/dashboard/api/events, Server-Sent Events). No libraries, no build step; charts are drawn on
// <canvas>. Pages: the overview (/dashboard) and a device (/dashboard/device/ID), switched with
// the History API so the stream and the page stay up.
"use strict";

const KEPT = 900; // samples: 15 minutes, one a second
const TILES = [
  { key: "connections", label: "Connections" },
  { key: "appSessions", label: "App sessions" },
  { key: "deviceSessions", label: "Device sessions" },
  { key: "devicesOnline", label: "Devices online" },
  { key: "commandsPs", label: "Commands/s", rate: true },
  { key: "reportsPs", label: "Reports/s", rate: true },
  { key: "timeoutsPs", label: "504s/s", rate: true },
  { key: "slowConsumersPs", label: "Slow consumers/s", rate: true, total: "slowConsumers" },
  { key: "refusedFramesPs", label: "Refused frames/s", rate: true, total: "refusedFrames" },
];

const $ = (sel) => document.querySelector(sel);
let samples = [];
let stream = null;
let query = "";
let device = null; // the id whose page is open
let historyTimer = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function fmt(v, rate) {
  if (v == null) return "–";
  if (rate) return v >= 100 ? Math.round(v).toString() : (Math.round(v * 10) / 10).toString();
  return v.toLocaleString();
}

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  return Math.floor(s / 3600) + " h ago";
}

function clock(ms) {
  return new Date(ms).toLocaleString();
}

// --- tiles and charts --------------------------------------------------------------------

function buildTiles() {
  const tiles = $("#tiles");
  for (const t of TILES) {
    tiles.append(
      el("div", { class: "tile", "data-key": t.key },
        el("div", { class: "label" }, t.label),
        el("div", { class: "value" }, "–"),
        el("canvas", { width: 180, height: 40 })));
  }
}

function draw(canvas, values) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 180, h = canvas.clientHeight || 40;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#e2e6ec";
  g.beginPath(); g.moveTo(0, h - 1.5); g.lineTo(w, h - 1.5); g.stroke();
  if (values.length < 2) return;
  const max = Math.max(1, ...values);
  const step = w / (KEPT - 1);
  const x0 = w - (values.length - 1) * step;
  g.beginPath();
  values.forEach((v, i) => {
    const x = x0 + i * step, y = h - 2 - (v / max) * (h - 4);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.strokeStyle = "#2f6fdf";
  g.lineWidth = 1.5;
  g.stroke();
  g.lineTo(w, h); g.lineTo(x0, h); g.closePath();
  g.fillStyle = "rgba(47,111,223,0.12)";
  g.fill();
  g.fillStyle = "#6b7585";
  g.font = "10px system-ui, sans-serif";
  g.fillText(fmt(max, true), 2, 10);
}

function renderTiles() {
  const last = samples[samples.length - 1];
  for (const t of TILES) {
    const tile = document.querySelector(`.tile[data-key="${t.key}"]`);
    let text = last ? fmt(last[t.key], t.rate) : "–";
    if (last && t.total) text += ` (${fmt(last[t.total])} total)`;
    tile.querySelector(".value").textContent = text;
    draw(tile.querySelector("canvas"), samples.map((s) => s[t.key]));
  }
}

// --- the device list ---------------------------------------------------------------------

function renderDevices(listing) {
  const body = $("#device-list tbody");
  const rows = listing.rows.map((d) =>
    el("tr", { "data-id": d.id },
      el("td", {}, d.id),
      el("td", {}, d.name),
      el("td", {}, d.productModel ? `${d.model} (${d.productModel})` : d.model),
      el("td", {}, d.owner),
      el("td", { class: "state" }, d.state),
      el("td", { "data-ts": d.lastSeen, title: clock(d.lastSeen) }, ago(d.lastSeen))));
  body.replaceChildren(...rows);
  const more = listing.matched > listing.rows.length ? `, first ${listing.rows.length} shown` : "";
  $("#device-count").textContent = query ? `(${listing.matched} of ${listing.online} match${more})` : `(${listing.online}${more})`;
}

// --- a device's page ---------------------------------------------------------------------

function renderLive(live) {
  if (!device || live.id !== device) return;
  const badge = $("#device-online");
  badge.textContent = live.online ? "online" : "offline";
  badge.className = live.online ? "badge" : "badge off";
  $("#device-state").textContent = live.online ? JSON.stringify(live.state, null, 2) : "(offline: no live state)";
  const facts = $("#device-facts");
  facts.querySelectorAll(".live").forEach((e) => e.remove());
  if (live.online) {
    facts.append(
      el("dt", { class: "live" }, "Online since"), el("dd", { class: "live" }, clock(live.since)),
      el("dt", { class: "live" }, "Last seen"), el("dd", { class: "live", "data-ts": live.lastSeen }, ago(live.lastSeen)),
      el("dt", { class: "live" }, "Commands waiting"), el("dd", { class: "live" }, live.pending),
      el("dt", { class: "live" }, "Sharees"), el("dd", { class: "live" }, live.sharees));
  }
  scheduleHistory(400);
}

function renderHistory(entries) {
  $("#history tbody").replaceChildren(...entries.map((h) =>
    el("tr", {},
      el("td", { title: String(h.opsTime) }, clock(h.opsTime)),
      el("td", {}, h.userAgent),
      el("td", {}, h.opsAccount),
      el("td", { class: "request" }, h.request))));
}

async function loadDevice(id) {
  const r = await fetch(`/dashboard/api/devices/${encodeURIComponent(id)}`, { headers: { Accept: "application/json" } });
  if (r.status === 401) { location.assign("/dashboard/login"); return; }
  if (!r.ok || device !== id) return;
  const d = await r.json();
  $("#device-title").textContent = d.id;
  $("#device-facts").replaceChildren(
    el("dt", {}, "Name"), el("dd", {}, d.name || "–"),
    el("dt", {}, "Model"), el("dd", {}, d.productModel ? `${d.model} (${d.productModel})` : d.model || "–"),
    el("dt", {}, "Owner"), el("dd", {}, d.owner || "–"));
  renderLive(d.live);
  renderHistory(d.history);
}

function scheduleHistory(ms) {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(async () => {
    if (!device) return;
    const id = device;
    const r = await fetch(`/dashboard/api/devices/${encodeURIComponent(id)}`);
    if (r.ok && device === id) renderHistory((await r.json()).history);
  }, ms);
}

async function sendCommand(ev) {
  ev.preventDefault();
  const result = $("#cmd-result");
  const action = $("#cmd-action").value;
  let params;
  try {
    const text = $("#cmd-params").value.trim();
    params = text ? JSON.parse(text) : (action === "query" ? [] : {});
  } catch (e) {
    result.className = "bad";
    result.textContent = "params are not JSON: " + e.message;
    return;
  }
  result.className = "muted";
  result.textContent = "sending…";
  const r = await fetch(`/dashboard/api/devices/${encodeURIComponent(device)}/command`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ action, params }),
  });
  const answer = await r.json().catch(() => ({ reason: r.statusText }));
  if (r.ok && answer.error === 0) {
    result.className = "ok";
    result.textContent = `acked (error 0)` + (answer.params ? ": " + JSON.stringify(answer.params) : "");
  } else {
    result.className = "bad";
    result.textContent = answer.reason ? `${r.status}: ${answer.reason}` : `device answered error ${answer.error}`;
  }
  scheduleHistory(600);
}

// --- pages and the stream ----------------------------------------------------------------

function connect() {
  if (stream) stream.close();
  const params = new URLSearchParams();
  if (query) params.set("q", query);
  if (device) params.set("device", device);
  stream = new EventSource("/dashboard/api/events?" + params);
  const badge = $("#stream");
  stream.onopen = () => { badge.textContent = "live"; badge.className = "badge"; };
  stream.onerror = () => {
    // A refused stream (503: too many pages open, 401: logged out) is not retried by the browser.
    const closed = stream.readyState === EventSource.CLOSED;
    badge.textContent = closed ? "not live: reload to retry" : "reconnecting…";
    badge.className = "badge off";
  };
  stream.addEventListener("history", (e) => { samples = JSON.parse(e.data); renderTiles(); });
  stream.addEventListener("sample", (e) => {
    samples.push(JSON.parse(e.data));
    if (samples.length > KEPT) samples.splice(0, samples.length - KEPT);
    renderTiles();
  });
  stream.addEventListener("devices", (e) => renderDevices(JSON.parse(e.data)));
  stream.addEventListener("device", (e) => renderLive(JSON.parse(e.data)));
  stream.addEventListener("logout", () => { stream.close(); location.assign("/dashboard/login"); });
}

function route() {
  const m = location.pathname.match(/^\/dashboard\/device\/([^/]+)$/);
  device = m ? decodeURIComponent(m[1]) : null;
  $("#overview").hidden = !!device;
  $("#device-page").hidden = !device;
  if (device) {
    $("#device-title").textContent = device;
    $("#device-state").textContent = "";
    $("#cmd-result").textContent = "";
    $("#history tbody").replaceChildren();
    loadDevice(device);
  }
  connect();
}

function go(path) {
  history.pushState(null, "", path);
  route();
}

document.addEventListener("DOMContentLoaded", () => {
  buildTiles();
  let typing = null;
  $("#search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { query = e.target.value.trim(); connect(); }, 200);
  });
  $("#device-list tbody").addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-id]");
    if (row) go("/dashboard/device/" + encodeURIComponent(row.dataset.id));
  });
  for (const a of [$("#home"), $("#back")]) a.addEventListener("click", (e) => { e.preventDefault(); go("/dashboard"); });
  $("#command-form").addEventListener("submit", sendCommand);
  $("#cmd-action").addEventListener("change", (e) => {
    const p = $("#cmd-params");
    if (e.target.value === "query" && p.value.trim().startsWith("{")) p.value = "[]";
    if (e.target.value === "update" && p.value.trim().startsWith("[")) p.value = '{"switch":"on"}';
  });
  window.addEventListener("popstate", route);
  window.addEventListener("resize", renderTiles);
  setInterval(() => document.querySelectorAll("[data-ts]").forEach((e) => { e.textContent = ago(Number(e.dataset.ts)); }), 1000);
  route();
});
