// Renders the PNG icons of the manifest (192 and 512 px) from assets/icon.svg with the same
// chromium the browser tests use; run it after changing the icon: `node icons.mjs`.
// Square corners: the launcher masks the icon itself ("maskable"), and the mark stays inside
// the safe zone (the centre circle of 80%).
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const svg = readFileSync(new URL('../assets/icon.svg', import.meta.url), 'utf8').replace(/ rx="\d+"/, '');
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
for (const size of [192, 512]) {
  const page = await browser.newPage({ viewport: { width: size, height: size } });
  await page.setContent(`<body style="margin:0">${svg.replace('<svg ', `<svg width="${size}" height="${size}" `)}</body>`);
  await page.screenshot({ path: new URL(`../assets/icon-${size}.png`, import.meta.url).pathname });
  await page.close();
}
await browser.close();
