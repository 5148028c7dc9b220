/* The ground page: pick or upload a video, ground a sentence, draw the curve, the windows and the heatmap. */
"use strict";
(() => {
  const $ = id => document.getElementById(id);
  const player = $("player"), select = $("video-select"), query = $("query");
  let health = null, last = null, pollTimer = null;

  async function loadVideos(selectId) {
    const data = await LV.api("/api/videos");
    const keep = selectId || select.value;
    select.replaceChildren();
    for (const v of data.videos) {
      if (v.job && v.job.state === "error") continue;
      const o = document.createElement("option");
      o.value = v.id;
      o.textContent = (v.source === "upload" ? "⬆ " : "") + v.name;
      select.appendChild(o);
    }
    if (!data.videos.length) {
      const o = document.createElement("option"); o.value = ""; o.textContent = "(no videos: upload one, or start with --videos DIR)";
      select.appendChild(o);
    }
    if (keep && [...select.options].some(o => o.value === keep)) select.value = keep;
    setVideo(select.value);
  }

  function setVideo(id) {
    clearResults();
    if (!id) { player.removeAttribute("src"); player.load(); return; }
    const src = "/api/media?video=" + encodeURIComponent(id);
    if (player.getAttribute("src") !== src) { player.src = src; player.load(); }
  }

  function clearResults() {
    last = null;
    $("curve").replaceChildren(); $("heatmap").replaceChildren(); $("windows").replaceChildren();
    LV.showWarnings([]);
  }

  // ---------------------------------------------------------------- upload with progress
  function setUpload(frac, text) {
    $("upload-status").hidden = false;
    $("upload-progress").value = frac;
    $("upload-text").textContent = text;
  }

  function upload(file) {
    LV.showError(null);
    const limit = health ? health.max_upload_mb * 1024 * 1024 : Infinity;
    if (file.size > limit) {
      LV.showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB: over the server's limit of ${health.max_upload_mb} MB (--max-upload-mb)`);
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/upload?filename=" + encodeURIComponent(file.name));
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = e => { if (e.lengthComputable) setUpload(0.3 * e.loaded / e.total, `uploading ${Math.round(100 * e.loaded / e.total)} %`); };
    xhr.onerror = () => { LV.showError("upload failed: the server does not answer"); $("upload-status").hidden = true; };
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
      if (xhr.status >= 400 || !data) {
        LV.showError((data && data.detail) || ("upload failed: HTTP " + xhr.status));
        $("upload-status").hidden = true;
        return;
      }
      poll(data.job.id, data.video.id);
    };
    setUpload(0, "uploading…");
    xhr.send(file);
  }

  function poll(jobId, videoId) {
    clearTimeout(pollTimer);
    LV.api("/api/jobs/" + encodeURIComponent(jobId)).then(j => {
      if (j.state === "error") { LV.showError(j.message); $("upload-status").hidden = true; loadVideos(); return; }
      setUpload(0.3 + 0.7 * j.progress, `${j.state} ${Math.round(100 * j.progress)} %` + (j.clips ? ` (${j.clips} clips)` : ""));
      if (j.state === "ready") {
        setUpload(1, `ready: ${j.message} in ${j.seconds.toFixed(1)} s`);
        loadVideos(videoId);
      } else pollTimer = setTimeout(() => poll(jobId, videoId), 300);
    }).catch(e => { LV.showError(e.message); $("upload-status").hidden = true; });
  }

  // ---------------------------------------------------------------- grounding
  async function ground(ev) {
    ev.preventDefault();
    LV.showError(null);
    const video = select.value;
    if (!video) { LV.showError("pick or upload a video first"); return; }
    $("ground-button").disabled = true; $("busy").hidden = false;
    try {
      const res = await LV.api("/api/ground", {video, query: query.value, top_k: 5});
      last = res;
      render(res);
    } catch (e) {
      clearResults();
      LV.showError(e.message);
    } finally { $("ground-button").disabled = false; $("busy").hidden = true; }
  }

  // The API's grounding result carries Moment-DETR's pred_relevant_windows: [[start, end, score], ...] best first.
  function ranked(res) {
    return (res.pred_relevant_windows || []).map(([start, end, score]) => ({start, end, score}));
  }

  function render(res) {
    LV.showWarnings(res.warnings);
    drawCurve(res);
    drawWindows(res);
    drawHeatmap(res);
  }

  function drawWindows(res) {
    const ol = $("windows");
    ol.replaceChildren();
    ranked(res).forEach((w, i) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "window-item";
      b.dataset.start = w.start; b.dataset.end = w.end; b.dataset.rank = i + 1;
      const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = LV.RANK[i % LV.RANK.length];
      b.append(sw, `${LV.fmt(w.start)} – ${LV.fmt(w.end)} s  ·  score ${w.score.toFixed(3)}`);
      b.addEventListener("click", () => select_window(i));
      li.appendChild(b);
      ol.appendChild(li);
    });
  }

  function select_window(i) {
    if (!last) return;
    const w = ranked(last)[i];
    document.querySelectorAll(".window-item").forEach((b, j) => b.classList.toggle("active", j === i));
    document.querySelectorAll("#curve .win").forEach(r => r.setAttribute("stroke", r.dataset.rank == i + 1 ? "#111" : "none"));
    document.querySelectorAll("#heatmap .win-band").forEach(r => r.setAttribute("visibility", r.dataset.rank == i + 1 ? "visible" : "hidden"));
    LV.playWindow(player, w.start, w.end);
  }

  function drawCurve(res) {
    const box = $("curve"); box.replaceChildren();
    const W = 720, H = 220, L = 44, R = 10, T = 10, B = 70;
    const s = LV.svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "score per clip"}, box);
    const dur = Math.max(res.duration, 1e-6);
    const ys = res.clip_scores;
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }
    const pad = 0.08 * (hi - lo); lo -= pad; hi += pad;
    const x = t => L + (W - L - R) * t / dur, y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    // axes
    LV.svg("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#9ca3af"}, s);
    LV.svg("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#9ca3af"}, s);
    const nt = Math.min(10, Math.max(2, Math.round(dur)));
    for (let i = 0; i <= nt; i++) {
      const t = dur * i / nt;
      LV.svg("line", {x1: x(t), y1: H - B, x2: x(t), y2: H - B + 4, stroke: "#9ca3af"}, s);
      LV.svg("text", {x: x(t), y: H - B + 15, "font-size": 10, "text-anchor": "middle", fill: "#6b7280"}, s).textContent = LV.fmt(t);
    }
    for (const v of [lo + pad, hi - pad]) {
      LV.svg("text", {x: L - 4, y: y(v) + 3, "font-size": 10, "text-anchor": "end", fill: "#6b7280"}, s).textContent = v.toFixed(2);
    }
    LV.svg("text", {x: W - R, y: H - B + 28, "font-size": 10, "text-anchor": "end", fill: "#6b7280"}, s).textContent = "time (s)";
    // windows as bars under the axis, one lane per rank
    ranked(res).forEach((w, i) => {
      const lane = H - B + 34 + 7 * i;
      const r = LV.svg("rect", {x: x(w.start), y: lane, width: Math.max(2, x(w.end) - x(w.start)), height: 5,
        fill: LV.RANK[i % LV.RANK.length], class: "win", "data-rank": i + 1, stroke: "none", "stroke-width": 1.5, cursor: "pointer"}, s);
      r.addEventListener("click", () => select_window(i));
      // shade the best window on the curve
      if (i === 0) LV.svg("rect", {x: x(w.start), y: T, width: Math.max(1, x(w.end) - x(w.start)), height: H - B - T, fill: LV.RANK[0], opacity: 0.10}, s);
    });
    // the curve: one point per clip at its centre
    const pts = res.clip_windows.map((cw, i) => `${x((cw[0] + cw[1]) / 2).toFixed(1)},${y(ys[i]).toFixed(1)}`);
    LV.svg("polyline", {points: pts.join(" "), fill: "none", stroke: "#2563eb", "stroke-width": 1.8}, s);
    res.clip_windows.forEach((cw, i) => {
      const c = LV.svg("circle", {cx: x((cw[0] + cw[1]) / 2), cy: y(ys[i]), r: 2.6, fill: "#2563eb", cursor: "pointer"}, s);
      const tt = LV.svg("title", {}, c); tt.textContent = `${LV.fmt(cw[0])}–${LV.fmt(cw[1])} s: ${ys[i].toFixed(3)}`;
      c.addEventListener("click", () => LV.playWindow(player, cw[0], cw[1]));
    });
    const head = LV.svg("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#111", "stroke-dasharray": "3 3", id: "playhead"}, s);
    player.ontimeupdate = () => { const px = x(Math.min(player.currentTime, dur)); head.setAttribute("x1", px); head.setAttribute("x2", px); };
  }

  function drawHeatmap(res) {
    const box = $("heatmap"); box.replaceChildren();
    const words = res.words || [], M = res.heatmap || [];
    if (!words.length || !M.length) { box.textContent = "(no known words in the query)"; return; }
    const n = M.length, L = words.length;
    const cw = Math.max(18, Math.min(48, 640 / L)), ch = Math.max(6, Math.min(18, 360 / n));
    const left = 52, top = 8, bottom = 70;
    const W = left + cw * L + 60, H = top + ch * n + bottom;
    const s = LV.svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "clip by word similarity"}, box);
    s.style.maxWidth = `${W * 1.4}px`;  // CSSOM, not a style attribute: the page's CSP forbids inline styles
    let lo = Infinity, hi = -Infinity;
    for (const row of M) for (const v of row) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (hi - lo < 1e-9) hi = lo + 1e-9;
    M.forEach((row, i) => row.forEach((v, j) => {
      const r = LV.svg("rect", {x: left + j * cw, y: top + i * ch, width: cw + 0.5, height: ch + 0.5, fill: LV.viridis((v - lo) / (hi - lo))}, s);
      LV.svg("title", {}, r).textContent = `${words[j]} @ ${LV.fmt(res.clip_windows[i][0])} s: ${v.toFixed(3)}`;
    }));
    const every = Math.max(1, Math.ceil(n / 20));
    for (let i = 0; i < n; i += every) {
      LV.svg("text", {x: left - 4, y: top + i * ch + ch / 2 + 3, "font-size": 9, "text-anchor": "end", fill: "#6b7280"}, s).textContent = LV.fmt(res.clip_windows[i][0]) + "s";
    }
    words.forEach((w, j) => {
      const tx = left + j * cw + cw / 2, ty = top + n * ch + 6;
      LV.svg("text", {x: tx, y: ty, "font-size": 10, "text-anchor": "end", transform: `rotate(-55 ${tx} ${ty})`, fill: "#1d2330"}, s).textContent = w;
    });
    ranked(res).forEach((w, k) => {  // outline each ranked window's clips (shown when it is selected)
      const rows = res.clip_windows.map((c, i) => [c, i]).filter(([c]) => c[0] >= w.start - 1e-6 && c[1] <= w.end + 1e-6).map(([, i]) => i);
      if (!rows.length) return;
      LV.svg("rect", {x: left - 1, y: top + rows[0] * ch, width: cw * L + 2, height: ch * rows.length, fill: "none",
        stroke: "#fff", "stroke-width": 2, class: "win-band", "data-rank": k + 1, visibility: k === 0 ? "visible" : "hidden"}, s);
    });
    // colour bar
    for (let k = 0; k < 40; k++) LV.svg("rect", {x: W - 44, y: top + (ch * n) * (1 - (k + 1) / 40), width: 10, height: ch * n / 40 + 0.5, fill: LV.viridis(k / 39)}, s);
    LV.svg("text", {x: W - 30, y: top + 8, "font-size": 9, fill: "#6b7280"}, s).textContent = hi.toFixed(2);
    LV.svg("text", {x: W - 30, y: top + ch * n, "font-size": 9, fill: "#6b7280"}, s).textContent = lo.toFixed(2);
  }

  select.addEventListener("change", () => setVideo(select.value));
  $("upload-input").addEventListener("change", e => { if (e.target.files.length) upload(e.target.files[0]); e.target.value = ""; });
  $("ground-form").addEventListener("submit", ground);
  LV.modelInfo().then(h => { health = h; return loadVideos(); }).catch(e => LV.showError(e.message));
  window.locvtpGround = {selectWindow: select_window, last: () => last};
})();
