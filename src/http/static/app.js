// Portcullis security desk: sign in, watch every gate live (entries and denials per minute,
// reader health, modes, lockdown, who is inside), find and revoke passes; the reception desk
// (today's visitors, check in and out, walk-ins, badges); a host's own visitors and invitations.
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
  role: null,            // the user's role in the organization watched
  lockdown: false,
  readers: new Map(),    // gate id -> {online, reason}
  view: "gates",
  pending: new Map(),    // debounced refreshes by name
};

const CHART_MINUTES = 15;
// What each role may do from the desk (the server checks again; this only hides what would fail).
const can = {
  setModes: () => ["platform_admin", "org_admin", "security_officer"].includes(state.role),
  reception: () => ["platform_admin", "org_admin", "security_officer", "operator"].includes(state.role),
  invite: () => ["platform_admin", "org_admin", "security_officer", "operator", "host"].includes(state.role),
  muster: () => ["platform_admin", "org_admin", "security_officer", "operator", "developer"].includes(state.role),
};

/// Runs `task` once after `ms`, however often it is asked for meanwhile.
function soon(name, ms, task) {
  if (state.pending.has(name)) return;
  state.pending.set(name, setTimeout(() => { state.pending.delete(name); task(); }, ms));
}

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
    error.fields = data?.error?.details?.fields;
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

function roleIn(orgId) {
  if (state.user?.is_platform_admin) return "platform_admin";
  return state.user?.roles?.find((r) => r.org_id === orgId)?.role || null;
}

function watch(orgId) {
  if (state.socket) state.socket.onclose = null, state.socket.close();
  state.org = orgId;
  state.role = roleIn(orgId);
  state.readers.clear();
  for (const tab of document.querySelectorAll(".view-tab")) {
    const view = tab.dataset.view;
    tab.hidden = view === "reception" ? !can.reception() : view === "host" ? !can.invite() : false;
  }
  $("lockdown").hidden = !can.setModes();
  api("GET", `/api/v1/orgs/${orgId}`).then((org) => {
    Object.assign(state, { lockdown: org.lockdown, orgName: org.name, orgTz: org.timezone });
    renderLockdown();
  }).catch(() => {});
  showView(state.role === "host" ? "host" : state.view);
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
    refreshMuster();
    refreshView();
    return;
  }
  if (state.lastSeq !== null && frame.seq <= state.lastSeq) return; // already shown
  state.lastSeq = frame.seq;
  logEvent(frame);
  if (frame.type === "decision") {
    const gate = state.gates.get(frame.gate_id);
    if (gate) {
      gate.queue.push(frame);
      gate.queue = gate.queue.slice(-200);
      gate.health = { last_seen_at: frame.decided_at };
      renderGate(gate);
    }
    if (frame.decision === "allow") soon("muster", 1000, refreshMuster);
  } else if (frame.type.startsWith("pass.")) {
    soon("muster", 1000, refreshMuster);
  } else if (frame.type === "visit") {
    if (frame.status === "denied") {
      state.alerts.unshift({ text: `Deny list: ${frame.visitor_name}'s visit is held for review`, at: frame.at });
      renderAlerts();
    }
    soon("view", 300, refreshView);
  } else if (frame.type === "org.lockdown") {
    state.lockdown = frame.lockdown;
    renderLockdown();
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
    state.readers.set(frame.gate_id, { online: frame.online, reason: frame.reason });
    const gate = state.gates.get(frame.gate_id);
    if (gate) renderGate(gate);
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
  if (frame.type === "visit") what = `visit ${frame.status.replaceAll("_", " ")} ${frame.visitor_name}`;
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
  // An organization-wide lockdown overrides every gate's own mode while it lasts.
  const effective = state.lockdown ? "locked_down" : gate.mode;
  let mode = el("span", { className: "mode", "data-mode": effective, text: state.lockdown ? "lockdown" : gate.mode.replaceAll("_", " ") });
  if (can.setModes()) {
    const select = el("select", { className: "mode-select", "aria-label": `Mode of ${gate.name}` },
      ...["normal", "locked_down", "free_passage"].map((m) => el("option", { value: m, text: m.replaceAll("_", " "), selected: m === gate.mode })));
    select.addEventListener("change", async () => {
      try { await api("POST", `/api/v1/orgs/${state.org}/gates/${gate.id}/mode`, { mode: select.value }); }
      catch (error) { alert(`Mode not changed: ${error.message}`); select.value = gate.mode; }
    });
    mode = el("span", { className: "mode", "data-mode": effective, title: state.lockdown ? "lockdown" : "" }, select);
  }
  const card = el("article", { className: "gate", id: `gate-${gate.id}`, "data-gate": gate.id },
    el("header", {}, el("span", { className: "name", text: gate.name }), mode),
    health(gate),
    chart(gate),
    el("ol", { className: "queue" }, ...(entries.length ? entries : [el("li", { className: "muted", text: "No entries yet" })])));
  const existing = document.getElementById(`gate-${gate.id}`);
  if (existing) existing.replaceWith(card); else $("gates").append(card);
}

/// The gate's health at a glance: its reader's link, and when its device last asked.
function health(gate) {
  const reader = state.readers.get(gate.id);
  const seen = gate.health?.last_seen_at;
  const link = reader ? (reader.online ? "reader online" : `reader offline${reader.reason ? ": " + reader.reason : ""}`) : "";
  return el("div", { className: "health", "data-online": reader ? String(reader.online) : "unknown" },
    el("span", { text: seen ? `last decision ${time(seen)}` : "no decision yet" }),
    el("span", { text: link }));
}

/// Entries (green) and denials (red) per minute over the last CHART_MINUTES minutes.
function chart(gate) {
  const ns = "http://www.w3.org/2000/svg";
  const now = Date.now();
  const allow = new Array(CHART_MINUTES).fill(0);
  const deny = new Array(CHART_MINUTES).fill(0);
  for (const e of gate.queue) {
    const ago = Math.floor((now - new Date(e.decided_at).getTime()) / 60000);
    if (ago < 0 || ago >= CHART_MINUTES) continue;
    (e.decision === "allow" ? allow : deny)[CHART_MINUTES - 1 - ago]++;
  }
  const peak = Math.max(1, ...allow.map((a, i) => a + deny[i]));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", `0 0 ${CHART_MINUTES * 10} 36`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const total = allow.reduce((a, b) => a + b, 0);
  const denied = deny.reduce((a, b) => a + b, 0);
  svg.setAttribute("aria-label", `${gate.name}: ${total} entries and ${denied} denials in ${CHART_MINUTES} minutes`);
  svg.dataset.allow = String(total);
  svg.dataset.deny = String(denied);
  for (let i = 0; i < CHART_MINUTES; i++) {
    const a = (allow[i] / peak) * 34, d = (deny[i] / peak) * 34;
    for (const [cls, h, y] of [["allow", a, 36 - a], ["deny", d, 36 - a - d]]) {
      if (h <= 0) continue;
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("class", cls);
      bar.setAttribute("x", String(i * 10 + 1));
      bar.setAttribute("width", "8");
      bar.setAttribute("y", String(y));
      bar.setAttribute("height", String(h));
      svg.append(bar);
    }
  }
  return svg;
}

function renderLockdown() {
  for (const gate of state.gates.values()) renderGate(gate);
  const button = $("lockdown");
  button.textContent = state.lockdown ? "Lift lockdown" : "Lock down";
  button.dataset.lockdown = String(state.lockdown);
}

$("lockdown").addEventListener("click", async () => {
  const next = !state.lockdown;
  if (next && !confirm("Lock every gate down now?")) return;
  try { await api("POST", `/api/v1/orgs/${state.org}/lockdown`, { lockdown: next }); }
  catch (error) { alert(`Not changed: ${error.message}`); }
});

async function refreshMuster() {
  if (!state.org || !can.muster()) { $("muster").replaceChildren(); return; }
  try {
    const page = await api("GET", `/api/v1/orgs/${state.org}/muster?limit=200`);
    const byZone = new Map();
    for (const p of page.items) {
      if (!byZone.has(p.zone_id)) byZone.set(p.zone_id, []);
      byZone.get(p.zone_id).push(p);
    }
    $("muster-count").textContent = `(${page.items.length}${page.next_cursor ? "+" : ""})`;
    $("muster").replaceChildren(...(byZone.size ? [...byZone].map(([zone, people]) =>
      el("div", { className: "zone-inside", "data-zone": zone },
        el("b", { text: `${state.zones.get(zone)?.name || "Zone"} — ${people.length}` }),
        el("ul", {}, ...people.map((p) => el("li", { "data-status": p.status, text: `${p.holder_name}${p.since ? " since " + time(p.since) : ""}${p.status === "revoked" ? " (revoked)" : ""}` })))))
      : [el("p", { className: "muted", text: "Nobody inside" })]));
  } catch { /* shown next time */ }
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

// ---- views ----

function showView(view) {
  state.view = view;
  for (const tab of document.querySelectorAll(".view-tab")) tab.setAttribute("aria-pressed", String(tab.dataset.view === view));
  for (const name of ["gates", "reception", "host"]) $(`view-${name}`).hidden = name !== view;
  refreshView();
}

for (const tab of document.querySelectorAll(".view-tab")) tab.addEventListener("click", () => showView(tab.dataset.view));

function refreshView() {
  if (!state.org) return;
  if (state.view === "reception") loadReception();
  if (state.view === "host") loadHost();
}

// Times of visits are shown in the organization's zone (where the meetings happen).
const zone = () => (state.orgTz ? { timeZone: state.orgTz } : {});
const dayOf = (date) => date.toLocaleDateString("sv", zone()); // YYYY-MM-DD
const hhmm = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false, ...zone() });

// ---- reception ----

async function loadReception() {
  if (!$("reception-date").value) $("reception-date").value = dayOf(new Date());
  const page = await api("GET", `/api/v1/orgs/${state.org}/visits?limit=200&date=${$("reception-date").value}`);
  const rows = page.items.sort((a, b) => a.starts_at.localeCompare(b.starts_at)).map((v) => {
    const actions = el("td");
    if (["invited", "registered", "arrived"].includes(v.status)) {
      const button = el("button", { text: "Check in", className: "check-in" });
      button.addEventListener("click", () => act(button, async () => showBadge((await api("POST", `/api/v1/orgs/${state.org}/visits/${v.id}/check-in`)))));
      actions.append(button);
    }
    if (v.status === "checked_in") {
      const out = el("button", { text: "Check out", className: "check-out ghost" });
      out.addEventListener("click", () => act(out, () => api("POST", `/api/v1/orgs/${state.org}/visits/${v.id}/check-out`)));
      const badge = el("button", { text: "Badge", className: "ghost" });
      badge.addEventListener("click", () => act(badge, async () => {
        const qr = await api("GET", `/api/v1/orgs/${state.org}/passes/${v.pass_id}/qr`);
        showBadge({ visit: v, qr });
      }));
      actions.append(out, " ", badge);
    }
    return el("tr", { "data-visit": v.id, "data-visitor": v.visitor_name },
      el("td", { text: `${hhmm(v.starts_at)}–${hhmm(v.ends_at)}` }),
      el("td", { text: v.company ? `${v.visitor_name} (${v.company})` : v.visitor_name }),
      el("td", { text: v.host_name }),
      el("td", {}, el("span", { className: "status", "data-status": v.status, text: v.status.replaceAll("_", " ") })),
      actions);
  });
  $("reception-visits").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: 5, className: "muted", text: "Nobody expected" }))]));
  if (!$("walkin-host").options.length) {
    const hosts = await api("GET", `/api/v1/orgs/${state.org}/hosts?limit=200`);
    hosts.items.sort((a, b) => a.name.localeCompare(b.name));
    $("walkin-host").replaceChildren(...hosts.items.map((h) =>
      el("option", { value: h.user_id, text: `${h.name}${h.department ? " · " + h.department : ""}${h.present_now === false ? " (away)" : ""}` })));
  }
}

async function act(button, task) {
  button.disabled = true;
  try { await task(); } catch (error) { alert(error.code === "visitor_denied" ? "Deny list: the visit is held for security's review." : error.message); }
  finally { button.disabled = false; loadReception(); }
}

$("reception-date").addEventListener("change", loadReception);

$("walkin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("walkin-error").textContent = "";
  const visitor = { name: $("walkin-name").value };
  if ($("walkin-company").value) visitor.company = $("walkin-company").value;
  if ($("walkin-email").value) visitor.email = $("walkin-email").value;
  const ends = new Date(Date.now() + Number($("walkin-hours").value) * 3600000).toISOString();
  try {
    const checkedIn = await api("POST", `/api/v1/orgs/${state.org}/visits/walk-in`, { visitor, host_id: $("walkin-host").value, ends_at: ends });
    $("walkin-form").reset();
    showBadge(checkedIn);
    loadReception();
  } catch (error) {
    $("walkin-error").textContent = error.code === "visitor_denied" ? "Deny list: held for security's review." : error.message;
  }
});

/// The printable badge: name, host, validity, and the pass's QR code.
async function showBadge({ visit, qr }) {
  $("badge-org").textContent = state.orgName || "";
  $("badge-name").textContent = visit.visitor_name;
  $("badge-host").textContent = `Visiting ${visit.host_name}`;
  $("badge-valid").textContent = `Valid ${hhmm(visit.starts_at)}–${hhmm(visit.ends_at)}, ${new Date(visit.starts_at).toLocaleDateString([], zone())}`;
  $("badge-qr").removeAttribute("src");
  $("badge-qr").dataset.payload = qr?.payload || "";
  if (visit.pass_id) {
    const response = await fetch(`/api/v1/orgs/${state.org}/passes/${visit.pass_id}/qr?format=svg`, { headers: { authorization: `Bearer ${state.access}` } });
    if (response.ok) $("badge-qr").src = `data:image/svg+xml;base64,${btoa(await response.text())}`;
  }
  $("badge-dialog").showModal();
}

$("badge-close").addEventListener("click", () => $("badge-dialog").close());
$("badge-print").addEventListener("click", () => window.print());

// ---- a host's own visitors ----

async function loadHost() {
  if (!$("invite-start").value) {
    const start = new Date(Date.now() + 5 * 60000);
    start.setSeconds(0, 0);
    $("invite-start").value = new Date(start.getTime() - start.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  }
  const page = await api("GET", `/api/v1/orgs/${state.org}/appointments?limit=50`);
  const mine = page.items.filter((a) => state.role !== "host" || a.host_id === state.user.id);
  const items = await Promise.all(mine.map(async (a) => {
    const full = await api("GET", `/api/v1/orgs/${state.org}/appointments/${a.id}`);
    const next = full.visits.filter((v) => new Date(v.ends_at) > Date.now() - 3600000);
    return el("li", { "data-appointment": a.id },
      el("b", { text: a.title }), el("span", { className: "muted", text: ` ${a.room ? "· " + a.room : ""}` }),
      el("ul", { className: "visits" }, ...next.slice(0, 10).map((v) =>
        el("li", { "data-visitor": v.visitor_name },
          el("span", { text: `${new Date(v.starts_at).toLocaleString([], { dateStyle: "short", timeStyle: "short", ...zone() })} ${v.visitor_name} ` }),
          el("span", { className: "status", "data-status": v.status, text: v.status === "arrived" ? "is here" : v.status.replaceAll("_", " ") })))));
  }));
  $("host-appointments").replaceChildren(...(items.length ? items : [el("li", { className: "muted", text: "No appointments to come" })]));
}

$("invite-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("invite-error").textContent = "";
  const start = new Date($("invite-start").value);
  const end = new Date(start.getTime() + Number($("invite-minutes").value) * 60000);
  const body = {
    title: $("invite-title").value,
    starts_at: start.toISOString(),
    ends_at: end.toISOString(),
    visitors: [{ name: $("invite-name").value, email: $("invite-email").value }],
  };
  if ($("invite-room").value) body.room = $("invite-room").value;
  try {
    await api("POST", `/api/v1/orgs/${state.org}/appointments`, body);
    for (const id of ["invite-title", "invite-room", "invite-name", "invite-email"]) $(id).value = "";
    loadHost();
  } catch (error) {
    const fields = error.fields ? Object.entries(error.fields).map(([k, v]) => `${k} ${v}`).join("; ") : "";
    $("invite-error").textContent = fields || error.message;
  }
});

// ---- start ----

if (state.access) {
  openDesk().catch(signOut);
  if (state.expiresAt) state.refreshTimer = setTimeout(refreshTokens, Math.max(5000, state.expiresAt - Date.now() - 60000));
} else {
  $("signin").hidden = false;
}
