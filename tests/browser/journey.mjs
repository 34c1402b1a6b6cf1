// The visitor journey in Debian's Chromium: a host invites a visitor from the dashboard; the
// invitation e-mail (the engine's mail sink, a directory of .eml files) holds the link; the guest
// page shows a QR code; that code is refused at the gates until reception checks the visitor in,
// opens them after, and is refused everywhere after check-out. Security watches: the chart, the
// muster list, and a deny-list alert.
// Run by tests/api/dashboard.rs, which starts the engine and passes what to use in the environment.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { environment, launch } from "./launch.mjs";

const env = environment(["BASE_URL", "HOST_EMAIL", "RECEPTION_EMAIL", "SECURITY_EMAIL", "PASSWORD", "GATE_IDS",
                         "DEVICE_KEY", "MAIL_DIR", "SCREENSHOTS"]);
const gates = env.GATE_IDS.split(",");
const browser = await launch();
const problems = [];

async function page(viewport = { width: 1440, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const p = await context.newPage();
  p.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  p.on("console", (message) => {
    // A refused check-in is answered 409 on purpose below.
    if (message.type() === "error" && !message.text().includes("status of 409")) problems.push(`console: ${message.text()}`);
  });
  p.on("dialog", (dialog) => dialog.accept());
  p.setDefaultTimeout(20000);
  return p;
}

async function signIn(p, email) {
  await p.goto(`${env.BASE_URL}/`);
  await p.fill("#email", email);
  await p.fill("#password", env.PASSWORD);
  await p.click("#signin-button");
  await p.waitForSelector('#link[data-state="live"]');
}

async function decide(gate, payload, direction = "in") {
  const response = await fetch(`${env.BASE_URL}/api/v1/gates/${gate}/decisions`, {
    method: "POST",
    headers: { authorization: `Bearer ${env.DEVICE_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ credential: { kind: "qr", value: payload }, direction }),
  });
  return response.json();
}

function expect(verdict, decision, reason, what) {
  if (verdict.decision !== decision || (reason && verdict.reason !== reason)) {
    throw new Error(`${what}: expected ${decision} ${reason || ""}, got ${JSON.stringify(verdict)}`);
  }
}

/// The link in the invitation mailed to `address`, from the mail sink.
async function invitationLink(address) {
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    let files = [];
    try { files = readdirSync(env.MAIL_DIR); } catch { /* not made yet */ }
    for (const file of files) {
      const mail = readFileSync(join(env.MAIL_DIR, file), "utf8").replaceAll("=\r\n", "").replaceAll("=3D", "=");
      if (!mail.includes(address)) continue;
      const match = mail.match(/(https?:\/\/[^\s"<]+\/guest#link=[A-Za-z0-9_-]+)/);
      if (match) return match[1];
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`no invitation to ${address} in ${env.MAIL_DIR}`);
}

try {
  const security = await page();
  await signIn(security, env.SECURITY_EMAIL);
  await security.waitForSelector(`[data-gate="${gates[0]}"] svg.chart`);
  if (await security.isHidden("#lockdown")) throw new Error("security cannot see the lockdown control");

  // The host invites Ada from their view.
  const host = await page();
  await signIn(host, env.HOST_EMAIL);
  await host.waitForSelector("#view-host:not([hidden])");
  if (!(await host.isHidden('.view-tab[data-view="reception"]'))) throw new Error("a host sees the reception view");
  await host.fill("#invite-title", "Design review");
  await host.fill("#invite-room", "4.12");
  await host.fill("#invite-name", "Ada Lovelace");
  await host.fill("#invite-email", "ada@example.test");
  // Starts now, so that the pass is valid at once.
  await host.evaluate(() => {
    const now = new Date();
    document.getElementById("invite-start").value =
      new Date(now.getTime() - now.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  });
  await host.click("#invite-button");
  await host.waitForSelector('#host-appointments li[data-visitor="Ada Lovelace"] .status[data-status="invited"]');

  // The guest opens the link from the invitation on their phone and sees a QR code.
  const link = await invitationLink("ada@example.test");
  const guest = await page({ width: 390, height: 844 });
  await guest.goto(link);
  await guest.waitForSelector(".qr-box img.qr");
  await guest.waitForSelector(".qr-box[data-payload]");
  if (new URL(guest.url()).hash.includes("link=")) throw new Error("the spent link stays in the address bar");
  const payload = await guest.getAttribute(".qr-box", "data-payload");
  // She completes her registration: details and consent.
  await guest.fill("form.register input[name=company]", "Analytical Engines");
  await guest.check("form.register input[name=consent]");
  await guest.click("form.register button");
  await guest.waitForSelector(".status-registered");
  await guest.waitForSelector("text=Design review");
  await guest.screenshot({ path: join(env.SCREENSHOTS, "guest.png"), fullPage: true });

  // Before check-in the code is refused at every gate.
  for (const gate of gates) expect(await decide(gate, payload), "deny", "pass_suspended", "before check-in");

  // Reception checks Ada in; the badge shows her name and QR code.
  const reception = await page();
  await signIn(reception, env.RECEPTION_EMAIL);
  await reception.click('.view-tab[data-view="reception"]');
  const row = 'tr[data-visitor="Ada Lovelace"]';
  await reception.waitForSelector(`${row} .status[data-status="registered"]`);
  await reception.waitForSelector(`${row}:has-text("Analytical Engines")`);
  await reception.click(`${row} button.check-in`);
  await reception.waitForSelector("#badge-dialog[open] #badge-name:has-text('Ada Lovelace')");
  await reception.waitForSelector("#badge-qr[src^='data:image/svg+xml']");
  await reception.screenshot({ path: join(env.SCREENSHOTS, "badge.png") });
  await reception.click("#badge-close");
  await reception.waitForSelector(`${row} .status[data-status="checked_in"]`);

  // Now the same code opens the gate; the host sees it live.
  expect(await decide(gates[0], payload), "allow", "allowed", "after check-in");
  await host.waitForSelector('#host-appointments li[data-visitor="Ada Lovelace"] .status[data-status="checked_in"]');
  // Security sees the entry on the gate's chart and Ada inside.
  await security.waitForSelector(`[data-gate="${gates[0]}"] svg.chart[data-allow="1"]`);
  await security.waitForSelector('#muster li:has-text("Ada Lovelace")');

  // Check-out: the next entry is refused at every gate.
  await reception.click(`${row} button.check-out`);
  await reception.waitForSelector(`${row} .status[data-status="checked_out"]`);
  for (const gate of gates) expect(await decide(gate, payload), "deny", "pass_revoked", "after check-out");
  await reception.screenshot({ path: join(env.SCREENSHOTS, "reception.png"), fullPage: true });

  // A visitor on the deny list: the host's invitation is held, security is alerted live.
  await host.fill("#invite-title", "Contract");
  await host.fill("#invite-name", "Mallory");
  await host.fill("#invite-email", "mallory@example.test");
  await host.click("#invite-button");
  await host.waitForSelector('#host-appointments li[data-visitor="Mallory"] .status[data-status="denied"]');
  await security.waitForSelector('#alerts li:has-text("Deny list: Mallory")');
  await security.screenshot({ path: join(env.SCREENSHOTS, "security.png"), fullPage: true });

  // A walk-in at the desk: checked in at once, with a badge.
  await reception.fill("#walkin-name", "Charles Babbage");
  await reception.fill("#walkin-company", "Difference Engines");
  await reception.click("#walkin-form button[type=submit]");
  await reception.waitForSelector("#badge-dialog[open] #badge-name:has-text('Charles Babbage')");
  const walkIn = await reception.getAttribute("#badge-qr", "data-payload");
  await reception.click("#badge-close");
  await reception.waitForSelector('tr[data-visitor="Charles Babbage"] .status[data-status="checked_in"]');
  expect(await decide(gates[1], walkIn), "allow", "allowed", "the walk-in's badge");

  // Security locks every gate down from the desk, then lifts it.
  await security.click("#lockdown");
  await security.waitForSelector('#lockdown[data-lockdown="true"]');
  await security.waitForSelector(`[data-gate="${gates[1]}"] .mode[data-mode="locked_down"]`);
  expect(await decide(gates[1], walkIn), "deny", "gate_locked_down", "entering during a lockdown");
  await security.click("#lockdown");
  await security.waitForSelector('#lockdown[data-lockdown="false"]');
  // And sets one gate's mode.
  await security.selectOption(`[data-gate="${gates[1]}"] select.mode-select`, "free_passage");
  await security.waitForSelector(`[data-gate="${gates[1]}"] .mode[data-mode="free_passage"]`);

  if (problems.length) throw new Error(problems.join("\n"));
  console.log("journey: ok");
} finally {
  await browser.close();
}
