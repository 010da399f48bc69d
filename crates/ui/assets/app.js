// Drover web UI: copy buttons, live cluster updates (server-sent events),
// the member pickers' directory search, the explorer's live lists, a pod's
// log tail and shell, forms sent in the background so a refusal shows in
// place, and "/" to search.
// Everything user-supplied is set with textContent, never as HTML.
"use strict";

// The page's open streams, closed when another page is written over it
// (sendInPlace): document.open() does not stop them.
function keep(stream) {
  window.droverStreams = window.droverStreams || [];
  window.droverStreams.push(stream);
  return stream;
}

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
  const source = keep(new EventSource(url));
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

// An explorer list: on any change its watch reports, fetch the page again
// and swap in its rows (rendered by the server, so escaped there).
function liveList(table) {
  let timer = null;
  const refresh = async () => {
    const res = await fetch(window.location.href, { credentials: "same-origin" });
    if (!res.ok) return;
    const doc = new DOMParser().parseFromString(await res.text(), "text/html");
    const rows = doc.getElementById("explorer-rows");
    const count = doc.getElementById("explorer-count");
    if (rows) document.getElementById("explorer-rows").replaceWith(rows);
    if (count) document.getElementById("explorer-count").replaceWith(count);
  };
  const source = keep(new EventSource(table.dataset.watch));
  source.addEventListener("change", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  });
  // The watch cannot resume (its resourceVersion is gone): start over.
  source.addEventListener("reload", () => { source.close(); window.location.reload(); });
}

// A pod's log tail: the last lines, then new ones as they come, for the
// chosen container (or its previous instance); the search box shows only
// the lines that hold its text.
function logTail(section) {
  const lines = document.getElementById("log-lines");
  const error = document.getElementById("log-error");
  const container = document.getElementById("log-container");
  const previous = document.getElementById("log-previous");
  const search = document.getElementById("log-search");
  const follow = document.getElementById("log-follow");
  const download = document.getElementById("log-download");
  let source = null;
  const matches = (el) => !search.value || el.textContent.toLowerCase().includes(search.value.toLowerCase());
  const start = () => {
    if (source) source.close();
    lines.replaceChildren();
    error.hidden = true;
    const q = "?container=" + encodeURIComponent(container.value) +
      (previous.checked ? "&previous=true" : "") + (follow.checked ? "" : "&follow=false");
    download.href = section.dataset.src + "/download" + q;
    source = keep(new EventSource(section.dataset.src + q));
    // A reconnect sends the tail again: start over rather than repeat it.
    source.onopen = () => lines.replaceChildren();
    source.addEventListener("line", (e) => {
      const atEnd = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
      const div = document.createElement("div");
      div.textContent = JSON.parse(e.data);
      div.hidden = !matches(div);
      lines.appendChild(div);
      while (lines.childElementCount > 5000) lines.firstElementChild.remove();
      if (atEnd) lines.scrollTop = lines.scrollHeight;
    });
    source.addEventListener("failure", (e) => {
      error.textContent = "The log cannot be read: " + e.data;
      error.hidden = false;
      source.close();
    });
    source.addEventListener("end", () => source.close());
    source.onerror = () => { if (!follow.checked) source.close(); };
  };
  search.addEventListener("input", () => {
    for (const div of lines.children) div.hidden = !matches(div);
  });
  for (const el of [container, previous, follow]) el.addEventListener("change", start);
  start();
}

// A pod's shell: xterm.js over the proxy's exec, in the v4.channel.k8s.io
// protocol (a channel byte, then data: 0 stdin, 1 stdout, 2 stderr,
// 3 status, 4 terminal size).
function shell(section) {
  const button = document.getElementById("shell-connect");
  const error = document.getElementById("shell-error");
  const container = document.getElementById("shell-container");
  let term = null;
  let ws = null;
  let send = () => {};
  button.addEventListener("click", () => {
    if (ws) ws.close();
    if (!term) {
      term = new Terminal({ cols: 80, rows: 20, convertEol: false });
      term.open(document.getElementById("terminal"));
      term.onData((d) => send(0, d));
      term.onResize(({ cols, rows }) => send(4, JSON.stringify({ Width: cols, Height: rows })));
      // Follow the page's width (a cell is about 0.6 of the font's size).
      const fit = () => {
        const width = document.getElementById("terminal").clientWidth;
        const cols = Math.max(20, Math.floor(width / (term.options.fontSize * 0.6)));
        if (cols !== term.cols) term.resize(cols, term.rows);
      };
      window.addEventListener("resize", fit);
      fit();
    }
    term.reset();
    error.hidden = true;
    const url = new URL(section.dataset.src + "?container=" + encodeURIComponent(container.value), window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    ws = keep(new WebSocket(url, ["v4.channel.k8s.io"]));
    ws.binaryType = "arraybuffer";
    const enc = new TextEncoder();
    const socket = ws;
    send = (channel, text) => {
      const data = enc.encode(text);
      const frame = new Uint8Array(data.length + 1);
      frame[0] = channel;
      frame.set(data, 1);
      if (socket.readyState === WebSocket.OPEN) socket.send(frame);
    };
    const resize = () => send(4, JSON.stringify({ Width: term.cols, Height: term.rows }));
    ws.onopen = () => { resize(); term.focus(); };
    ws.onmessage = (e) => {
      const bytes = new Uint8Array(e.data);
      if (bytes.length === 0) return;
      if (bytes[0] === 1 || bytes[0] === 2) term.write(bytes.subarray(1));
      if (bytes[0] === 3) {
        const status = JSON.parse(new TextDecoder().decode(bytes.subarray(1)) || "{}");
        if (status.status && status.status !== "Success") {
          error.textContent = status.message || "The shell ended with an error.";
          error.hidden = false;
        }
      }
    };
    ws.onclose = (e) => {
      if (socket !== ws) return; // a shell since replaced by a new one
      term.write("\r\n[the shell has ended]\r\n");
      if (e.code !== 1000 && e.code !== 1005) {
        error.textContent = "The shell closed (" + e.code + (e.reason ? ": " + e.reason : "") + ").";
        error.hidden = false;
      }
    };
  });
}

// Forms are sent in the background, so that a refusal shows beside its
// form with what was entered kept, inside the page: a generic error page
// (data-error-page) gives its message; any other answer replaces the page,
// at the address a redirect led to. Forms marked data-native (sign-in,
// sign-out, the password form, downloads) are sent as the browser does.
function sendInPlace(form) {
  form.addEventListener("submit", async (e) => {
    if (form.method.toLowerCase() !== "post" || "native" in form.dataset) return;
    e.preventDefault();
    const body = new URLSearchParams(new FormData(form, e.submitter));
    let res;
    try {
      res = await fetch(form.action, { method: "POST", body, credentials: "same-origin" });
    } catch {
      form.submit();
      return;
    }
    const html = await res.text();
    const doc = new DOMParser().parseFromString(html, "text/html");
    const refused = doc.querySelector("main[data-error-page] #error-message");
    if (!res.ok && refused) {
      let note = form.nextElementSibling;
      if (!note || !note.classList.contains("form-error")) {
        note = document.createElement("p");
        note.className = "error form-error";
        note.setAttribute("role", "alert");
        note.id = "form-error-" + Math.random().toString(36).slice(2);
        form.after(note);
      }
      note.textContent = refused.textContent;
      for (const el of form.querySelectorAll("input:not([type=hidden]), select, textarea")) {
        el.setAttribute("aria-describedby", note.id);
      }
      const first = form.querySelector("input:not([type=hidden]), select, textarea");
      if (first) first.focus();
      return;
    }
    // A page with a policy of its own (the pod page's terminal) is loaded
    // afresh, since a written page keeps this one's policy.
    if (res.redirected && doc.getElementById("shell")) {
      window.location.assign(res.url);
      return;
    }
    // The answer (after any redirect, already followed) becomes the page,
    // at its own address.
    for (const s of window.droverStreams || []) s.close();
    window.droverStreams = [];
    document.open();
    document.write(html);
    document.close();
    if (res.redirected) history.pushState(null, "", res.url);
    window.droverShown = window.location.pathname + window.location.search;
  });
}

// Back or forward to another page than the one shown (one written over
// another by sendInPlace): load it. Moving within the page (#main) is not.
window.droverShown = window.location.pathname + window.location.search;
window.addEventListener("popstate", () => {
  if (window.location.pathname + window.location.search !== window.droverShown) window.location.reload();
});

document.addEventListener("keydown", (e) => {
  if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName) || t.closest(".xterm")) return;
  const search = document.getElementById("site-search");
  if (search) {
    e.preventDefault();
    search.focus();
  }
});

function start() {
  for (const form of document.querySelectorAll("form[method=post]")) sendInPlace(form);
  const explorer = document.getElementById("explorer");
  if (explorer && explorer.dataset.watch) liveList(explorer);
  const logs = document.getElementById("logs");
  if (logs) logTail(logs);
  const sh = document.getElementById("shell");
  if (sh && typeof Terminal === "function") shell(sh);
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
}

// Once every deferred script (the terminal's too) has run; at once if the
// page was written over a form's page after loading (sendInPlace).
if (document.readyState === "complete") {
  start();
} else {
  document.addEventListener("DOMContentLoaded", start);
}
