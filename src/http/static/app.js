// Portcullis security desk: sign in, watch every gate live, find and revoke passes.
// Plain browser JavaScript, no build step. Text is always set with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const QUEUE_SHOWN = 8;
const EVENTS_SHOWN = 60;

const state = {
  access: sessionStorage.getItem("pcl.access"),
  refresh: sessionStorage.getItem("pcl.refresh"),
  expiresAt: Number(sessionStorage.getItem("pcl.expiresAt") || 0),
  user: null,
  org: null,
  socket: null,
  lastSeq: null,
  retry: 0,
  gates: new Map(),      // id -> {id, name, mode, queue: []}
  zones: new Map(),      // id -> {zone_id, name, inside, capacity}
  alerts: [],
  refreshTimer: null,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const time = (iso) => new Date(iso).toLocaleTimeString([], { hour12: false });

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (state.access) headers.authorization = `Bearer ${state.access}`;
  let response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  if (response.status === 401 && state.refresh && path !== "/api/v1/auth/refresh") {
    if (await refreshTokens()) return api(method, path, body);
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(data?.error?.message || `HTTP ${response.status}`);
    error.code = data?.error?.code;
    throw error;
  }
  return data;
}

function keepTokens(pair) {
  state.access = pair.access_token;
  state.refresh = pair.refresh_token;
  state.expiresAt = Date.now() + pair.expires_in * 1000;
  sessionStorage.setItem("pcl.access", state.access);
  sessionStorage.setItem("pcl.refresh", state.refresh);
  sessionStorage.setItem("pcl.expiresAt", String(state.expiresAt));
  clearTimeout(state.refreshTimer);
  // Refresh a minute before the access token expires, so the stream never drops for it.
  state.refreshTimer = setTimeout(refreshTokens, Math.max(5000, state.expiresAt - Date.now() - 60000));
}

async function refreshTokens() {
  try {
    keepTokens(await api("POST", "/api/v1/auth/refresh", { refresh_token: state.refresh }));
    return true;
  } catch {
    signOut();
    return false;
  }
}

function signOut() {
  if (state.socket) state.socket.onclose = null, state.socket.close();
  state.socket = null;
  sessionStorage.clear();
  Object.assign(state, { access: null, refresh: null, org: null, lastSeq: null });
  $("desk").hidden = true;
  $("signin").hidden = false;
}

// ---- sign-in ----

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").textContent = "";
  try {
    keepTokens(await api("POST", "/api/v1/auth/login", { email: $("email").value, password: $("password").value }));
    $("password").value = "";
    await openDesk();
  } catch (error) {
    $("signin-error").textContent = error.code === "rate_limited" ? "Too many attempts; wait a minute." : "Email or password is wrong.";
  }
});

$("signout").addEventListener("click", async () => {
  try { await api("POST", "/api/v1/auth/logout"); } catch { /* signed out anyway */ }
  signOut();
});

async function openDesk() {
  state.user = await api("GET", "/api/v1/me");
  const orgs = (await api("GET", "/api/v1/orgs?limit=200")).items;
  const select = $("org-select");
  select.replaceChildren(...orgs.map((o) => el("option", { value: o.id, text: o.name })));
  $("who").textContent = state.user.email;
  $("signin").hidden = true;
  $("desk").hidden = false;
  if (orgs.length) watch(orgs[0].id);
}

$("org-select").addEventListener("change", (event) => watch(event.target.value));

// ---- the live stream ----

function setLink(text) {
  $("link").dataset.state = text;
  $("link").textContent = text;
}

function watch(orgId) {
  if (state.socket) state.socket.onclose = null, state.socket.close();
  state.org = orgId;
  state.lastSeq = null;
  state.gates.clear();
  state.alerts = [];
  $("events").replaceChildren();
  connect();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const since = state.lastSeq === null ? "" : `&since=${state.lastSeq}`;
  const url = `${scheme}://${location.host}/api/v1/orgs/${state.org}/stream?access_token=${encodeURIComponent(state.access)}${since}`;
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onopen = () => { state.retry = 0; setLink("live"); };
  socket.onmessage = (message) => receive(JSON.parse(message.data));
  socket.onclose = async (event) => {
    if (state.socket !== socket) return;
    setLink("reconnecting");
    if (event.reason === "token_expired" || event.reason === "token_revoked" || event.code === 1006 && Date.now() > state.expiresAt) {
      if (!(await refreshTokens())) return;
    }
    // Back off: 0.5 s, 1 s, 2 s … at most 10 s; resume from the last event seen.
    const delay = Math.min(10000, 500 * 2 ** state.retry++);
    setTimeout(() => state.socket === socket && connect(), delay);
  };
}

function receive(frame) {
  if (frame.type === "reset") { state.lastSeq = null; return; }
  if (frame.type === "snapshot") {
    state.lastSeq = frame.seq;
    state.gates = new Map(frame.gates.map((g) => [g.id, { ...g, queue: [...g.queue] }]));
    state.zones = new Map(frame.occupancy.map((z) => [z.zone_id, z]));
    state.alerts = frame.revoked_inside.map((p) => ({ text: `Revoked pass inside: ${p.holder_name}`, at: p.revoked_at }));
    renderAll();
    return;
  }
  if (state.lastSeq !== null && frame.seq <= state.lastSeq) return; // already shown
  state.lastSeq = frame.seq;
  logEvent(frame);
  if (frame.type === "decision") {
    const gate = state.gates.get(frame.gate_id);
    if (gate) {
      gate.queue.push(frame);
      gate.queue = gate.queue.slice(-50);
      renderGate(gate);
    }
  } else if (frame.type === "gate.mode") {
    const gate = state.gates.get(frame.gate_id);
    if (gate) { gate.mode = frame.mode; renderGate(gate); }
  } else if (frame.type === "alert") {
    // The engine's own health (journal_degraded, journal_recovered, database_restarted) carries a
    // detail and no gate.
    const where = frame.gate_id ? ` at ${state.gates.get(frame.gate_id)?.name || "a gate"}` : "";
    const detail = frame.detail ? `: ${frame.detail}` : "";
    state.alerts.unshift({ text: `${frame.alert.replaceAll("_", " ")}${where}${detail}`, at: frame.at });
    renderAlerts();
  } else if (frame.type === "gate.reader") {
    const name = state.gates.get(frame.gate_id)?.name || "a gate";
    const text = frame.online ? `reader online at ${name}` : `reader offline at ${name}${frame.reason ? `: ${frame.reason}` : ""}`;
    state.alerts.unshift({ text, at: frame.at });
    renderAlerts();
  }
}

function logEvent(frame) {
  let what = frame.type;
  if (frame.type === "decision") what = `${frame.decision} ${frame.reason} ${frame.holder_name || ""} @ ${state.gates.get(frame.gate_id)?.name || ""}`;
  if (frame.type === "pass.revoked") what = `pass.revoked ${frame.reason}`;
  const item = el("li", { "data-type": frame.type }, el("b", { text: `#${frame.seq} ${time(frame.at)} ` }), what);
  $("events").prepend(item);
  while ($("events").children.length > EVENTS_SHOWN) $("events").lastChild.remove();
}

// ---- rendering ----

function renderAll() {
  $("gates").replaceChildren();
  for (const gate of [...state.gates.values()]) renderGate(gate);
  $("gate-count").textContent = `(${state.gates.size})`;
  renderOccupancy();
  renderAlerts();
}

function renderGate(gate) {
  const entries = gate.queue.slice(-QUEUE_SHOWN).reverse().map((e) =>
    el("li", { className: "entry", "data-decision": e.decision },
      el("span", { className: "time", text: time(e.decided_at) }),
      el("span", { text: e.direction === "out" ? "←" : "→", title: e.direction }),
      el("span", { className: "holder", text: e.holder_name || "unknown credential" }),
      el("span", { className: "reason", text: e.reason.replaceAll("_", " ") })));
  const card = el("article", { className: "gate", id: `gate-${gate.id}`, "data-gate": gate.id },
    el("header", {},
      el("span", { className: "name", text: gate.name }),
      el("span", { className: "mode", "data-mode": gate.mode, text: gate.mode.replaceAll("_", " ") })),
    el("ol", { className: "queue" }, ...(entries.length ? entries : [el("li", { className: "muted", text: "No entries yet" })])));
  const existing = document.getElementById(`gate-${gate.id}`);
  if (existing) existing.replaceWith(card); else $("gates").append(card);
}

function renderOccupancy() {
  $("occupancy").replaceChildren(...[...state.zones.values()].map((z) => {
    const share = z.capacity ? Math.min(100, Math.round((100 * z.inside) / z.capacity)) : 0;
    return el("div", { className: "zone" },
      el("div", { className: "row" }, el("span", { text: z.name }), el("span", { text: z.capacity ? `${z.inside} / ${z.capacity}` : `${z.inside} inside` })),
      el("div", { className: "meter" }, el("span", { className: share >= 100 ? "full" : "", style: `width:${share}%` })));
  }));
}

function renderAlerts() {
  const items = state.alerts.slice(0, 30).map((a) => el("li", { text: `${a.at ? time(a.at) + " " : ""}${a.text}` }));
  $("alerts").replaceChildren(...(items.length ? items : [el("li", { className: "muted empty", text: "No alerts" })]));
}

// ---- find and revoke ----

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = $("search").value.trim();
  const page = await api("GET", `/api/v1/orgs/${state.org}/passes?limit=20&q=${encodeURIComponent(q)}`);
  $("results").replaceChildren(...page.items.map((p) => {
    const revoke = el("button", { className: "danger", text: "Revoke", disabled: p.status !== "active" && p.status !== "suspended" });
    revoke.addEventListener("click", () => askRevoke(p));
    return el("li", { "data-pass": p.id },
      el("span", { text: p.holder_name }),
      el("span", { className: "status", "data-status": p.status, text: p.status }),
      revoke);
  }));
  if (!page.items.length) $("results").replaceChildren(el("li", { className: "muted", text: "No pass found" }));
});

function askRevoke(pass) {
  const dialog = $("revoke-dialog");
  $("revoke-who").textContent = `${pass.holder_name} — in force at every gate when confirmed.`;
  $("revoke-reason").value = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "confirm") return;
    try {
      await api("POST", `/api/v1/orgs/${state.org}/passes/${pass.id}/revoke`, { reason: $("revoke-reason").value });
      $("search-form").requestSubmit();
    } catch (error) {
      alert(`Not revoked: ${error.message}`);
    }
  };
  dialog.showModal();
}

// ---- start ----

if (state.access) {
  openDesk().catch(signOut);
  if (state.expiresAt) state.refreshTimer = setTimeout(refreshTokens, Math.max(5000, state.expiresAt - Date.now() - 60000));
} else {
  $("signin").hidden = false;
}
