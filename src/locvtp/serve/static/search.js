/* The search page: a query over the server's --index corpus; moments with thumbnails; click to play. */
"use strict";
(() => {
  const $ = id => document.getElementById(id);
  const player = $("search-player");

  async function search(ev) {
    ev.preventDefault();
    LV.showError(null);
    $("search-button").disabled = true; $("busy").hidden = false;
    try {
      const res = await LV.api("/api/search", {query: $("search-query").value, top_k: 12});
      LV.showWarnings(res.warnings);
      render(res);
    } catch (e) {
      $("results").replaceChildren();
      LV.showError(e.message);
    } finally { $("search-button").disabled = false; $("busy").hidden = true; }
  }

  function render(res) {
    const box = $("results");
    box.replaceChildren();
    if (!res.moments.length) { box.textContent = "no moments"; return; }
    res.moments.forEach((m, i) => {
      const card = document.createElement("button");
      card.type = "button";
      card.className = "result-card";
      card.dataset.video = m.video || "";
      card.dataset.start = m.start; card.dataset.end = m.end;
      if (m.thumbnail) {
        const img = document.createElement("img");
        img.className = "thumb"; img.loading = "lazy"; img.alt = `${m.video_id} at ${LV.fmt(m.start)} s`;
        img.src = m.thumbnail;
        card.appendChild(img);
      } else {
        const d = document.createElement("div"); d.className = "nothumb"; d.textContent = "not in --videos"; card.appendChild(d);
      }
      const meta = document.createElement("div"); meta.className = "meta";
      const title = document.createElement("b"); title.textContent = `${i + 1}. ${m.video_id}`;
      meta.append(title, `${LV.fmt(m.start)} – ${LV.fmt(m.end)} s · score ${m.score.toFixed(3)}`);
      card.appendChild(meta);
      card.addEventListener("click", () => play(m, card));
      box.appendChild(card);
    });
  }

  function play(m, card) {
    document.querySelectorAll(".result-card").forEach(c => c.classList.toggle("active", c === card));
    if (!m.video) { LV.showError(`${m.video_id} is in the index but not in --videos: nothing to play`); return; }
    LV.showError(null);
    const src = "/api/media?video=" + encodeURIComponent(m.video);
    if (player.getAttribute("src") !== src) { player.src = src; player.load(); }
    $("now-playing").textContent = `${m.video_id}: ${LV.fmt(m.start)} – ${LV.fmt(m.end)} s`;
    LV.playWindow(player, m.start, m.end);
  }

  $("search-form").addEventListener("submit", search);
  LV.modelInfo().then(h => {
    if (h && !h.index) LV.showError("this server has no moment index: start it with --index DIR (built by `locvtp index`) to search");
  });
})();
