// What every browser scenario starts with: the variables it needs, and Debian's Chromium started
// headless with the flags this machine allows (no sandbox, no GPU, no background traffic).
import { chromium } from "playwright-core";

/// The environment, once every name in `need` is set.
export function environment(need) {
  const env = process.env;
  for (const name of need) if (!env[name]) throw new Error(`missing ${name}`);
  return env;
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-quic"],
  });
}
