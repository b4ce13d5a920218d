// What the browser scenarios (run.mjs, oidc.mjs) share: Debian's chromium launched the one way
// they both run it, the screenshot directory and viewports, axe-core, and a small test runner
// whose results each scenario turns into its exit status.
//
// Env: CASHFLOW_SCREENSHOTS (a directory), CHROMIUM (default /usr/bin/chromium).
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export const shots = process.env.CASHFLOW_SCREENSHOTS || 'screenshots';
export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };

// Called by a scenario once it has checked its environment, so nothing is started without it.
export const launch = () => {
  mkdirSync(shots, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    // playwright starts chromium with a fresh temporary --user-data-dir of its own each run.
    headless: true,
  });
};

// Every test's outcome, in order; a test that throws is reported and the scenario goes on.
export const results = [];
export const test = async (name, fn) => {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    results.push({ name, ok: false });
    console.log(`not ok - ${name}\n${error && error.stack ? error.stack : error}`);
  }
};

// axe-core's violations on the page, each with the elements it names.
export const axeViolations = async (page) => {
  // Evaluated through the devtools protocol: the page's CSP (rightly) refuses an injected <script>.
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
};
