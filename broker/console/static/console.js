// Live feed: ask /api/decisions for what came in since the newest row every 2 s and put
// new rows on top. Rows are built with textContent only, never innerHTML.
"use strict";
(function () {
  const table = document.getElementById("feed");
  if (!table) return;
  const body = table.tBodies[0];
  const state = document.getElementById("live-state");
  const seen = new Set(Array.from(body.rows, (row) => row.dataset.trace).filter(Boolean));
  let after = Number(table.dataset.after) || 0;
  const MAX_ROWS = 500;

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text == null ? "" : String(text);
    return td;
  }

  function didCell(did) {
    const td = document.createElement("td");
    if (!did) { td.textContent = "?"; return td; }
    const a = document.createElement("a");
    a.className = "did";
    a.href = "/peers/" + encodeURIComponent(did);
    a.title = did;
    a.textContent = did.slice(0, 16) + "…" + did.slice(-6);
    td.appendChild(a);
    return td;
  }

  function row(d) {
    const tr = document.createElement("tr");
    tr.dataset.trace = d.trace || "";
    tr.className = "fresh";
    tr.appendChild(cell(d.when));
    const action = cell("");
    const badge = document.createElement("span");
    badge.className = "action " + (d.action || "");
    badge.textContent = d.action || "";
    action.appendChild(badge);
    tr.appendChild(action);
    tr.appendChild(cell(d.tier));
    tr.appendChild(cell(d.composite == null ? "–" : Number(d.composite).toFixed(3), "num"));
    tr.appendChild(cell(d.reason));
    tr.appendChild(didCell(d.from));
    tr.appendChild(didCell(d.to));
    tr.appendChild(cell(d.kind));
    return tr;
  }

  async function poll() {
    try {
      const reply = await fetch("/api/decisions?after=" + after + "&limit=200",
        { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (reply.status === 401) { window.location.assign("/login?next=/"); return; }
      if (!reply.ok) throw new Error(String(reply.status));
      const data = await reply.json();
      const fresh = data.decisions.filter((d) => d.trace && !seen.has(d.trace));
      const empty = body.querySelector("tr.empty");
      if (empty && fresh.length) empty.remove();
      // The reply is newest first: insert oldest first so the newest ends on top.
      for (const d of fresh.reverse()) {
        seen.add(d.trace);
        body.insertBefore(row(d), body.firstChild);
        if (d.t > after) after = d.t;
      }
      while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
      state.textContent = "live";
      state.className = "live";
    } catch (err) {
      state.textContent = "reconnecting";
      state.className = "live stale";
    }
  }
  setInterval(poll, 2000);
})();
