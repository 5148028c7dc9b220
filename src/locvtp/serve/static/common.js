/* Shared by the pages: JSON calls with one-sentence errors, SVG helpers, colours. No external library. */
"use strict";
const LV = (() => {
  async function api(path, body) {
    const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
    let resp;
    try { resp = await fetch(path, opts); } catch (e) { throw new Error("the server does not answer (" + e.message + ")"); }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const msg = data && data.detail ? data.detail : ("HTTP " + resp.status);
      const err = new Error(msg); err.status = resp.status; throw err;
    }
    return data;
  }
  function showError(msg) {
    const el = document.getElementById("error");
    if (!el) return;
    if (msg) { el.textContent = msg; el.hidden = false; } else { el.textContent = ""; el.hidden = true; }
  }
  function showWarnings(list) {
    const ul = document.getElementById("warnings");
    if (!ul) return;
    ul.replaceChildren(...(list || []).map(w => { const li = document.createElement("li"); li.textContent = w; return li; }));
  }
  const NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, parent) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    if (parent) parent.appendChild(el);
    return el;
  }
  // viridis, 6 stops
  const VIR = [[68, 1, 84], [65, 68, 135], [42, 120, 142], [34, 168, 132], [122, 209, 81], [253, 231, 37]];
  function viridis(t) {
    t = Math.max(0, Math.min(1, t)) * (VIR.length - 1);
    const i = Math.min(VIR.length - 2, Math.floor(t)), f = t - i;
    const c = VIR[i].map((a, j) => Math.round(a + f * (VIR[i + 1][j] - a)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }
  const RANK = ["#ef4444", "#f59e0b", "#10b981", "#3b82f6", "#8b5cf6", "#ec4899", "#14b8a6", "#84cc16", "#f97316", "#6366f1"];
  function fmt(t) { return (Math.round(t * 10) / 10).toFixed(1); }
  /* Play [start, end) of a <video>: seek, play, pause at the end. */
  function playWindow(video, start, end) {
    const go = () => {
      video._stopAt = end;
      video.currentTime = start;
      const p = video.play();
      if (p && p.catch) p.catch(() => {});
    };
    if (video.readyState >= 1) go(); else video.addEventListener("loadedmetadata", go, {once: true});
    if (!video._stopHook) {
      video._stopHook = true;
      video.addEventListener("timeupdate", () => {
        if (video._stopAt != null && video.currentTime >= video._stopAt) { video.pause(); video._stopAt = null; }
      });
    }
  }
  async function modelInfo() {
    try {
      const h = await api("/api/health");
      const el = document.getElementById("model-info");
      if (el) el.textContent = `checkpoint ${h.checkpoint || "?"} · ${h.preprocessing.clip_seconds}s clips` +
        (h.index ? ` · index ${h.index.rows} clips` : "");
      return h;
    } catch (e) { showError(e.message); return null; }
  }
  return {api, showError, showWarnings, svg, viridis, RANK, fmt, playWindow, modelInfo};
})();
