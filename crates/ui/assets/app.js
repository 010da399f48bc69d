// Drover web UI: copy buttons, live cluster updates (server-sent events),
// and the member pickers' directory search.
// Everything user-supplied is set with textContent, never as HTML.
"use strict";

function copyText(id, button) {
  const el = document.getElementById(id);
  if (!el) return;
  const text = el.textContent.trim();
  const done = () => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => selectText(el));
  } else {
    selectText(el);
  }
}

function selectText(el) {
  const range = document.createRange();
  range.selectNodeContents(el);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}

function badge(state) {
  const span = document.createElement("span");
  span.className = "badge " + ({ Active: "active", Unavailable: "unavailable" }[state] || "pending");
  span.dataset.state = state;
  span.textContent = state;
  return span;
}

function setBadge(cell, state) {
  if (!cell) return;
  const current = cell.querySelector(".badge");
  if (current && current.dataset.state === state) return;
  cell.replaceChildren(badge(state));
}

function applyRow(table, row) {
  const body = table.tBodies[0];
  let tr = body.querySelector(`tr[data-id="${CSS.escape(row.id)}"]`);
  if (row.type === "DELETED") {
    if (tr) tr.remove();
    return;
  }
  if (!tr) {
    if (!table.dataset.liveAdds) return;
    tr = document.createElement("tr");
    tr.dataset.id = row.id;
    for (const col of ["display", "state", "version", "nodes", "cpu", "memory"]) {
      const td = document.createElement("td");
      td.dataset.col = col;
      tr.appendChild(td);
    }
    const a = document.createElement("a");
    a.href = "/dashboard/clusters/" + encodeURIComponent(row.id);
    tr.querySelector('[data-col="display"]').appendChild(a);
    body.appendChild(tr);
  }
  const link = tr.querySelector('[data-col="display"] a');
  if (link) link.textContent = row.display;
  setBadge(tr.querySelector('[data-col="state"]'), row.state);
  for (const col of ["version", "nodes", "cpu", "memory"]) {
    const td = tr.querySelector(`[data-col="${col}"]`);
    if (td && td.textContent !== row[col]) td.textContent = row[col];
  }
}

function follow(rv, onRow, name) {
  let url = "/dashboard/clusters/events?rv=" + encodeURIComponent(rv);
  if (name) url += "&name=" + encodeURIComponent(name);
  const source = new EventSource(url);
  source.addEventListener("cluster", (e) => {
    const row = JSON.parse(e.data);
    onRow(row);
    // Resume from here after a reconnect.
    if (row.rv) rv = row.rv;
  });
  source.addEventListener("reload", () => { source.close(); window.location.reload(); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(() => follow(rv, onRow, name), 2000);
    }
  };
}

// Fill a member picker's suggestions with the directory's users and groups
// whose names contain what was typed (each option's value is the principal
// id that the binding will name).
function principalSearch(input) {
  const list = document.getElementById(input.dataset.principalSearch);
  let timer = null;
  let asked = "";
  input.addEventListener("input", () => {
    clearTimeout(timer);
    const q = input.value.trim();
    if (q.length < 2 || q.includes("://") || q === asked) return;
    timer = setTimeout(async () => {
      asked = q;
      const res = await fetch("/dashboard/principals?q=" + encodeURIComponent(q), { credentials: "same-origin" });
      if (!res.ok) return;
      const found = await res.json();
      const options = (found.items || []).map((p) => {
        const o = document.createElement("option");
        o.value = p.id;
        o.textContent = p.kind + " " + p.name + (p.displayName ? " (" + p.displayName + ")" : "");
        return o;
      });
      list.replaceChildren(...options);
    }, 250);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const input of document.querySelectorAll("input[data-principal-search]")) {
    principalSearch(input);
  }
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", () => copyText(button.dataset.copy, button));
  }
  const table = document.getElementById("clusters");
  if (table && table.dataset.rv) {
    follow(table.dataset.rv, (row) => applyRow(table, row));
  }
  // A single cluster's state (its page, its import page) follows too.
  const single = document.querySelector("#cluster-state, #import-state");
  if (single) {
    follow("", (row) => { if (row.id === single.dataset.id) setBadge(single, row.state); }, single.dataset.id);
  }
});
