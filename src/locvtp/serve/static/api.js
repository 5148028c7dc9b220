/* Renders /openapi.json (served by this server) as a readable list: no Swagger UI, no CDN. */
"use strict";
(async () => {
  const box = document.getElementById("api");
  let spec;
  try { spec = await LV.api("/openapi.json"); } catch (e) { LV.showError(e.message); return; }
  const h = document.createElement("h2");
  h.textContent = `${spec.info.title} ${spec.info.version}`;
  const desc = document.createElement("p"); desc.textContent = spec.info.description || "";
  box.append(h, desc);
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const div = document.createElement("div"); div.className = "endpoint";
      const m = document.createElement("span"); m.className = "method " + method; m.textContent = method.toUpperCase();
      const p = document.createElement("code"); p.textContent = path;
      const s = document.createElement("span"); s.textContent = "  " + (op.summary || "");
      div.append(m, p, s);
      if (op.description) { const d = document.createElement("p"); d.textContent = op.description; div.appendChild(d); }
      if (op.parameters && op.parameters.length) {
        const pre = document.createElement("pre");
        pre.textContent = op.parameters.map(q => `${q.in} ${q.name}${q.required ? " (required)" : ""}: ${(q.schema && (q.schema.type || JSON.stringify(q.schema))) || ""}`).join("\n");
        div.appendChild(pre);
      }
      div.dataset.path = path;
      box.appendChild(div);
    }
  }
})();
