// The guest page: signs in with the invitation's single-use link (in the URL fragment, never
// sent to a server) or a mailed code, then shows the visitor's meetings and, for each that is
// coming or under way, the pass's QR code, refreshed before it expires.
"use strict";

const store = window.sessionStorage;
const $ = (id) => document.getElementById(id);
let timers = [];

function text(tag, content, cls) {
  const el = document.createElement(tag);
  el.textContent = content == null ? "" : String(content);
  if (cls) el.className = cls;
  return el;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = store.getItem("guest_token");
  if (token) headers.Authorization = "Bearer " + token;
  if (body) headers["Content-Type"] = "application/json";
  const res = await fetch("/api/v1/guest" + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  if (res.status === 401) {
    store.removeItem("guest_token");
    showSignIn("Your link has been used or has expired. Ask for a code below.");
    throw new Error("signed out");
  }
  if (!res.ok) {
    let message = res.statusText;
    try { message = (await res.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return res.status === 204 || res.status === 202 ? null : res.json();
}

function showSignIn(message) {
  $("visit").hidden = true;
  $("signin").hidden = false;
  $("signin-message").textContent = message || "";
}

function when(visit, tz) {
  const opts = { dateStyle: "full", timeStyle: "short", timeZone: tz };
  const end = { timeStyle: "short", timeZone: tz };
  try {
    return new Date(visit.starts_at).toLocaleString(undefined, opts) + " – " +
      new Date(visit.ends_at).toLocaleTimeString(undefined, end);
  } catch (_) {
    return visit.starts_at + " – " + visit.ends_at;
  }
}

const STATUS = {
  invited: "Invited", registered: "Registered", arrived: "At reception", checked_in: "Checked in",
  checked_out: "Checked out", cancelled: "Cancelled", no_show: "Missed", denied: "Please see reception",
};

async function refreshQr(visit, box) {
  try {
    const res = await fetch("/api/v1/guest/visits/" + visit.id + "/qr?format=svg", {
      headers: { Authorization: "Bearer " + store.getItem("guest_token") },
    });
    if (!res.ok) throw new Error(res.statusText);
    const svg = await res.text();
    const img = document.createElement("img");
    img.alt = "QR code for " + (visit.title || "your visit");
    img.className = "qr";
    img.src = "data:image/svg+xml;base64," + btoa(svg);
    box.replaceChildren(img);
    const code = await api("GET", "/visits/" + visit.id + "/qr");
    box.dataset.payload = code.payload;
    timers.push(setTimeout(() => refreshQr(visit, box), Math.max(2, code.expires_in - 2) * 1000));
  } catch (err) {
    box.replaceChildren(text("p", "The QR code is not available: " + err.message, "error"));
  }
}

/// The form that completes the registration: details reception may need, and consent.
function registration(visit) {
  const form = document.createElement("form");
  form.className = "register";
  const field = (label, name, type = "text") => {
    const wrap = text("label", label);
    const input = document.createElement("input");
    input.name = name;
    input.type = type;
    wrap.append(input);
    return wrap;
  };
  const consent = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.name = "consent";
  box.required = true;
  consent.append(box, " I agree to the visitor policy (v1).");
  const send = text("button", "Complete registration");
  send.type = "submit";
  form.append(text("h3", "Before you come"), field("Phone", "phone", "tel"), field("Company", "company"),
    field("ID document number", "document_number"), consent, send);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = { consents: [{ kind: "visitor_policy", text_version: "v1" }] };
    for (const key of ["phone", "company", "document_number"]) if (data.get(key)) body[key] = data.get(key);
    send.disabled = true;
    try { await api("POST", "/visits/" + visit.id + "/register", body); await render(); }
    catch (err) { send.disabled = false; form.append(text("p", err.message, "error")); }
  });
  return form;
}

async function render() {
  timers.forEach(clearTimeout);
  timers = [];
  const home = await api("GET", "/me");
  $("signin").hidden = true;
  $("visit").hidden = false;
  $("org-name").textContent = home.organization.name;
  $("welcome").textContent = "Welcome, " + home.visitor_name + ".";
  $("address").textContent = home.organization.address || "";
  $("instructions").textContent = home.organization.instructions || "";
  const list = $("visits");
  list.replaceChildren();
  for (const visit of home.visits) {
    const item = document.createElement("li");
    item.className = "card visit";
    item.dataset.visit = visit.id;
    item.append(text("h2", visit.title || "Visit"));
    item.append(text("p", when(visit, home.organization.timezone)));
    item.append(text("p", "Host: " + visit.host_name + (visit.room ? " · Room " + visit.room : ""), "muted"));
    item.append(text("p", STATUS[visit.status] || visit.status, "status status-" + visit.status));
    if (["invited", "registered", "arrived", "checked_in"].includes(visit.status)) {
      const box = document.createElement("div");
      box.className = "qr-box";
      item.append(box);
      refreshQr(visit, box);
      if (visit.status === "invited") item.append(registration(visit));
      if (visit.status !== "arrived" && visit.status !== "checked_in") {
        const here = text("button", "I have arrived");
        here.addEventListener("click", async () => {
          here.disabled = true;
          try { await api("POST", "/visits/" + visit.id + "/arrive"); await render(); } catch (err) { here.disabled = false; }
        });
        item.append(here);
      }
    }
    list.append(item);
  }
  if (home.visits.length === 0) list.append(text("li", "No visits to come.", "card muted"));
}

async function start() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const link = fragment.get("link");
  if (link) {
    // The link works once: spend it, then forget it.
    history.replaceState(null, "", window.location.pathname);
    try {
      const session = await api("POST", "/session", { link });
      store.setItem("guest_token", session.token);
    } catch (err) {
      if (err.message !== "signed out") showSignIn(err.message);
    }
  }
  if (!store.getItem("guest_token")) {
    showSignIn();
    return;
  }
  try { await render(); } catch (err) { if (err.message !== "signed out") showSignIn(err.message); }
}

$("code-request").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    await api("POST", "/code", { org: $("org").value, email: $("email").value });
    $("code-form").hidden = false;
    $("signin-message").textContent = "If a visit is booked for this address, a code is on its way.";
  } catch (err) { $("signin-message").textContent = err.message; }
});

$("code-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const session = await api("POST", "/session", { org: $("org").value, email: $("email").value, code: $("code").value });
    store.setItem("guest_token", session.token);
    await render();
  } catch (err) { $("signin-message").textContent = err.message; }
});

start();
