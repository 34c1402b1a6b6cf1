// Drives the operator dashboard in Debian's Chromium, as a security desk would use it.
// Run by tests/api/dashboard.rs, which starts the engine and passes what to use in the environment.
import { environment, launch } from "./launch.mjs";

const env = environment(["BASE_URL", "EMAIL", "PASSWORD", "GATE_ID", "DEVICE_KEY", "CREDENTIAL", "HOLDER", "SCREENSHOT"]);
const browser = await launch();
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  // The one 401 expected is the deliberately wrong password below.
  let expected401 = 1;
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    if (message.text().includes("status of 401") && expected401-- > 0) return;
    problems.push(`console: ${message.text()}`);
  });
  page.setDefaultTimeout(15000);

  const decide = async (direction) => {
    const response = await fetch(`${env.BASE_URL}/api/v1/gates/${env.GATE_ID}/decisions`, {
      method: "POST",
      headers: { authorization: `Bearer ${env.DEVICE_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ credential: JSON.parse(env.CREDENTIAL), direction }),
    });
    return response.json();
  };
  const gate = `[data-gate="${env.GATE_ID}"]`;

  // Sign in.
  await page.goto(`${env.BASE_URL}/`);
  await page.fill("#email", env.EMAIL);
  await page.fill("#password", "wrong password, surely");
  await page.click("#signin-button");
  await page.waitForSelector("#signin-error:has-text('wrong')");
  await page.fill("#password", env.PASSWORD);
  await page.click("#signin-button");
  await page.waitForSelector('#link[data-state="live"]');
  await page.waitForSelector(gate);

  // A decision made over HTTP appears on the gate's live queue with its verdict and reason.
  const allowed = await decide("in");
  if (allowed.decision !== "allow") throw new Error(`expected allow, got ${JSON.stringify(allowed)}`);
  const entry = await page.waitForSelector(`${gate} .entry[data-decision="allow"]:has-text("${env.HOLDER}")`);
  if (!(await entry.textContent()).includes("allowed")) throw new Error("the entry does not say allowed");

  // The network drops; a decision happens meanwhile; the page resumes on its own and shows it.
  await page.evaluate(() => state.socket.close());
  await page.waitForSelector('#link[data-state="reconnecting"]');
  const meanwhile = await decide("out");
  if (meanwhile.decision !== "allow") throw new Error(`expected the exit allowed, got ${JSON.stringify(meanwhile)}`);
  await page.waitForSelector('#link[data-state="live"]');
  await page.waitForSelector(`${gate} .entry[data-decision="allow"]:has-text("${env.HOLDER}") >> nth=0`);
  const exits = await page.locator(`${gate} .entry:has-text("${env.HOLDER}")`).count();
  if (exits < 2) throw new Error(`the entry made while disconnected is missing (${exits} shown)`);

  // Find the pass and revoke it, with a reason.
  await page.fill("#search", env.HOLDER);
  await page.click("#search-form button");
  await page.click(`#results li:has-text("${env.HOLDER}") button.danger`);
  await page.fill("#revoke-reason", "badge reported lost");
  await page.click("#revoke-confirm");
  await page.waitForSelector('#events li[data-type="pass.revoked"]');
  await page.waitForSelector(`#results li:has-text("${env.HOLDER}") .status[data-status="revoked"]`);

  // The next swipe is refused, and the desk sees it.
  const refused = await decide("in");
  if (refused.reason !== "pass_revoked") throw new Error(`expected pass_revoked, got ${JSON.stringify(refused)}`);
  await page.waitForSelector(`${gate} .entry[data-decision="deny"]:has-text("pass revoked")`);

  await page.screenshot({ path: env.SCREENSHOT, fullPage: true });
  if (problems.length) throw new Error(problems.join("\n"));
  console.log("dashboard: ok");
} finally {
  await browser.close();
}
