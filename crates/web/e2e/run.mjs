// Browser tests of the web app against a running `cashflow serve` (started by the Rust test
// crates/cashflow/tests/browser.rs, which passes its address and the demo credentials).
// Debian's chromium, driven by playwright-core; no browser is downloaded.
//
// Env: CASHFLOW_WEB_URL, CASHFLOW_WEB_USER, CASHFLOW_WEB_PASSWORD, CASHFLOW_CLIENT_ID,
// CASHFLOW_CLIENT_SECRET, and harness.mjs's.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, PHONE, axeViolations, launch, results, shots, test } from './harness.mjs';

const base = process.env.CASHFLOW_WEB_URL;
const user = process.env.CASHFLOW_WEB_USER;
const password = process.env.CASHFLOW_WEB_PASSWORD;
const liveSamples = Number(process.env.CASHFLOW_LIVE_SAMPLES || 50);
assert.ok(base && user && password, 'CASHFLOW_WEB_URL, CASHFLOW_WEB_USER and CASHFLOW_WEB_PASSWORD are required');

const browser = await launch();

const signIn = async (page, as = user, secret = password) => {
  await page.goto(`${base}/signin`);
  await page.getByLabel('Usuário').fill(as);
  await page.getByLabel('Senha').fill(secret);
  await page.getByRole('button', { name: 'Entrar' }).click();
  await page.waitForURL(`${base}/`);
};

const closing = (page) => page.locator('#closing-balance');

const phone = await browser.newContext({ viewport: PHONE, locale: 'pt-BR', deviceScaleFactor: 1, isMobile: true, hasTouch: true });
const page = await phone.newPage();
const figures = {};

await test('sign in with the demo user', async () => {
  await page.goto(`${base}/signin`);
  await page.screenshot({ path: join(shots, 'signin-phone.png'), fullPage: true });
  await signIn(page);
  await assert.doesNotReject(page.getByRole('heading', { name: /Hoje/ }).waitFor());
  await page.locator('[data-live][data-state="live"]').waitFor({ timeout: 5000 });
});

await test('a credit typed as 1.234,56 changes the balance without a reload', async () => {
  await page.evaluate(() => { window.__sameDocument = true; });
  const amount = page.getByLabel('Valor');
  await amount.click();
  await amount.pressSequentially('1.234,56');
  assert.equal(await amount.inputValue(), '1.234,56');
  await page.getByLabel('Descrição').fill('Venda balcão');
  await page.getByLabel('Categoria').fill('vendas');
  await page.getByRole('button', { name: 'Registrar', exact: true }).click();
  await page.getByText('Lançamento registrado.').waitFor();
  await page.waitForFunction(() => document.querySelector('#closing-balance')?.textContent === 'R$ 1.234,56', null, { timeout: 5000 });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
  await page.screenshot({ path: join(shots, 'today-phone.png'), fullPage: true });
});

await test('a debit is recorded and subtracted', async () => {
  await page.getByLabel('Débito').check();
  await page.getByLabel('Valor').pressSequentially('4050');
  assert.equal(await page.getByLabel('Valor').inputValue(), '40,50');
  await page.getByLabel('Descrição').fill('Fornecedor');
  await page.getByRole('button', { name: 'Registrar', exact: true }).click();
  await page.waitForFunction(() => document.querySelector('#closing-balance')?.textContent === 'R$ 1.194,06', null, { timeout: 5000 });
  assert.equal(await page.locator('#total-debits').textContent(), 'R$ 40,50');
});

await test('the debit is reversed after a confirmation', async () => {
  await page.getByRole('link', { name: 'Lançamentos' }).click();
  await page.screenshot({ path: join(shots, 'entries-phone.png'), fullPage: true });
  const row = page.locator('tr', { hasText: 'Fornecedor' });
  await row.getByRole('link', { name: 'Estornar' }).click();
  await page.getByRole('button', { name: 'Confirmar estorno' }).waitFor();
  await page.screenshot({ path: join(shots, 'reverse-phone.png'), fullPage: true });
  await page.getByRole('button', { name: 'Confirmar estorno' }).click();
  await page.getByText('Lançamento estornado.').waitFor();
  await page.getByRole('link', { name: 'Hoje' }).click();
  await page.waitForFunction(() => document.querySelector('#closing-balance')?.textContent === 'R$ 1.234,56', null, { timeout: 5000 });
});

await test('a field error from the API is shown next to the field', async () => {
  await page.getByLabel('Valor').fill('');
  await page.getByLabel('Descrição').fill('Sem valor');
  await page.locator('#amount').evaluate((el) => { el.removeAttribute('required'); el.value = '0,00'; });
  await page.getByRole('button', { name: 'Registrar', exact: true }).click();
  await page.locator('#amount-error').waitFor();
  assert.match(await page.locator('#amount-error').textContent(), /Valor inválido/);
});

await test('the report shows the period, a chart and its days, and exports the CSV', async () => {
  await page.getByRole('link', { name: 'Relatórios' }).click();
  await page.getByRole('heading', { name: 'Relatórios' }).waitFor();
  for (const label of ['Saldo inicial', 'Créditos', 'Débitos', 'Saldo final']) {
    await page.locator('.figures dt', { hasText: label }).first().waitFor();
  }
  assert.equal(await page.locator('#report-credits').textContent(), 'R$ 1.275,06');
  assert.equal(await page.locator('#report-closing').textContent(), 'R$ 1.234,56');
  const chart = page.getByRole('img', { name: 'Créditos, débitos e saldo final por dia' });
  await chart.waitFor();
  assert.equal(await page.locator('svg.chart rect.bar-credit').count(), 7, 'seven days by default');
  assert.equal(await page.locator('table.days tbody tr').count(), 7);
  await page.screenshot({ path: join(shots, 'reports-phone.png'), fullPage: true });
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Exportar CSV' }).click()]);
  assert.match(download.suggestedFilename(), /^cashflow-\d{4}-\d{2}-\d{2}-\d{4}-\d{2}-\d{2}\.csv$/);
  const rows = readFileSync(await download.path(), 'utf8').trim().split(/\r?\n/).map((line) => line.split(','));
  assert.deepEqual(rows[0], ['date', 'currency', 'opening_balance', 'total_credits', 'total_debits', 'net', 'closing_balance', 'entry_count', 'closed', 'closed_at', 'counted_cash', 'difference']);
  assert.equal(rows.length, 8, 'a header and seven days');
  const last = Object.fromEntries(rows[0].map((k, i) => [k, rows[7][i]]));
  assert.equal(last.total_credits, '1275.06');
  assert.equal(last.total_debits, '40.50');
  assert.equal(await page.locator('#report-debits').textContent(), 'R$ 40,50');
  assert.equal(last.closing_balance, '1234.56');
  await page.emulateMedia({ media: 'print' });
  assert.equal(await page.locator('header.top').isVisible(), false, 'the print stylesheet hides the app bar');
  assert.equal(await chart.isVisible(), true, 'and prints the chart');
  await page.screenshot({ path: join(shots, 'reports-print.png'), fullPage: true });
  await page.emulateMedia({ media: 'screen' });
});

await test('axe-core finds no violations on the phone pages', async () => {
  const found = [];
  for (const path of ['/', '/entries', '/record', '/reports']) {
    await page.goto(`${base}${path}`);
    found.push(...(await axeViolations(page)).map((v) => `${path} ${v}`));
  }
  assert.deepEqual(found, []);
});

const desktop = await browser.newContext({ viewport: DESKTOP, locale: 'pt-BR' });
const wide = await desktop.newPage();
await test('desktop: first page weight and server time', async () => {
  await wide.goto(`${base}/signin`);
  await wide.screenshot({ path: join(shots, 'signin-desktop.png') });
  await axeViolations(wide).then((v) => assert.deepEqual(v, [], 'sign-in page'));
  await wide.goto(`${base}/signin`); // fresh navigation timing without axe
  await signIn(wide);
  await wide.locator('[data-live][data-state="live"]').waitFor({ timeout: 5000 });
  const weight = await wide.evaluate(() => {
    const [nav] = performance.getEntriesByType('navigation');
    const resources = performance.getEntriesByType('resource').filter((r) => !r.name.includes('/events'));
    return {
      html_bytes: nav.encodedBodySize,
      assets_bytes: resources.reduce((sum, r) => sum + r.encodedBodySize, 0),
      assets: resources.map((r) => r.name.replace(location.origin, '')),
      server_ms: nav.responseStart - nav.requestStart,
    };
  });
  figures.first_page = weight;
  await wide.screenshot({ path: join(shots, 'today-desktop.png') });
  await wide.goto(`${base}/entries`);
  await wide.screenshot({ path: join(shots, 'entries-desktop.png') });
  for (const name of ['reports']) {
    await wide.goto(`${base}/${name}`);
    const navigation = await wide.evaluate(() => { const [nav] = performance.getEntriesByType('navigation'); return nav.responseStart - nav.requestStart; });
    figures[`${name}_server_ms`] = navigation;
    await wide.screenshot({ path: join(shots, `${name}-desktop.png`), fullPage: true });
    await axeViolations(wide).then((v) => assert.deepEqual(v, [], name));
  }
});

await test('a cashier sees no reports and is refused them', async () => {
  const context = await browser.newContext({ viewport: PHONE, locale: 'pt-BR', isMobile: true, hasTouch: true });
  const cashier = await context.newPage();
  await signIn(cashier, process.env.CASHFLOW_CASHIER_USER, process.env.CASHFLOW_ROLE_PASSWORD);
  await cashier.getByLabel('Valor').waitFor();
  assert.equal(await cashier.getByRole('link', { name: 'Relatórios' }).count(), 0, 'no Reports in the navigation');
  assert.equal(await cashier.getByRole('link', { name: 'Fechar o caixa' }).count(), 0);
  const refused = await cashier.goto(`${base}/reports`);
  assert.equal(refused.status(), 403);
  await cashier.getByText('Seu perfil não permite esta ação.').waitFor();
  await cashier.screenshot({ path: join(shots, 'reports-refused-phone.png'), fullPage: true });
  await axeViolations(cashier).then((v) => assert.deepEqual(v, [], 'refused page'));
  await cashier.setViewportSize(DESKTOP);
  await cashier.screenshot({ path: join(shots, 'reports-refused-desktop.png'), fullPage: true });
  await context.close();
});

const apiToken = async () => {
  const id = process.env.CASHFLOW_CLIENT_ID;
  const secret = process.env.CASHFLOW_CLIENT_SECRET;
  assert.ok(id && secret, 'CASHFLOW_CLIENT_ID and CASHFLOW_CLIENT_SECRET are required');
  const response = await fetch(`${base}/oauth2/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials',
  });
  return (await response.json()).access_token;
};

await test(`live update delay over ${liveSamples} entries (commit to page)`, async () => {
  const token = await apiToken();
  await page.goto(`${base}/`);
  await page.locator('[data-live][data-state="live"]').waitFor({ timeout: 5000 });
  await page.evaluate(() => {
    window.__seen = {};
    const record = () => {
      const count = document.querySelector('#entry-count')?.textContent;
      if (count && !window.__seen[count]) window.__seen[count] = Date.now();
    };
    new MutationObserver(record).observe(document.querySelector('[data-live]'), { childList: true, subtree: true, characterData: true });
  });
  const delays = [];
  let count = Number(await page.locator('#entry-count').textContent());
  for (let i = 0; i < liveSamples; i += 1) {
    const response = await fetch(`${base}/v1/entries`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'credit', amount: '1.00', description: `Live ${i}` }),
    });
    const committed = Date.now();
    assert.equal(response.status, 201);
    count += 1;
    await page.waitForFunction((n) => window.__seen && window.__seen[String(n)], count, { timeout: 5000 });
    delays.push((await page.evaluate((n) => window.__seen[String(n)], count)) - committed);
  }
  delays.sort((a, b) => a - b);
  const pick = (q) => delays[Math.min(delays.length - 1, Math.ceil(q * delays.length) - 1)];
  figures.live_delay_ms = { samples: delays.length, p50: pick(0.5), p99: pick(0.99), max: delays[delays.length - 1] };
  assert.ok(pick(0.99) <= 1000, `p99 ${pick(0.99)} ms over the 1 s target`);
});

// Integer cents as the page writes them, without floats: 123456 -> "R$ 1.234,56".
const brl = (minor) => `${minor < 0 ? '-' : ''}R$ ${String(Math.trunc(Math.abs(minor) / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, '.')},${String(Math.abs(minor) % 100).padStart(2, '0')}`;
const centsOf = (text) => (text.trim().startsWith('-') ? -1 : 1) * Number(text.replace(/\D/g, ''));

await test('offline: two entries wait on the device, count in a provisional balance, and are sent once online', async () => {
  const context = await browser.newContext({ viewport: PHONE, locale: 'pt-BR', isMobile: true, hasTouch: true });
  const tab = await context.newPage();
  await signIn(tab);
  await tab.evaluate(async () => { await navigator.serviceWorker.ready; });
  await tab.reload(); // now controlled by the service worker, which keeps this page for offline use
  assert.equal(await tab.evaluate(() => navigator.serviceWorker.controller?.scriptURL), `${base}/sw.js`);
  await tab.locator('[data-live][data-state="live"]').waitFor({ timeout: 5000 });
  const other = await context.newPage(); // a second tab: both try to send when back online
  await other.goto(`${base}/`);
  const before = centsOf(await closing(tab).textContent());

  await context.setOffline(true);
  for (const [kind, typed, description] of [['Crédito', '1000', 'Offline 1'], ['Débito', '250', 'Offline 2']]) {
    await tab.getByLabel(kind).check();
    await tab.getByLabel('Valor').pressSequentially(typed);
    await tab.getByLabel('Descrição').fill(description);
    await tab.getByRole('button', { name: 'Registrar', exact: true }).click();
    await tab.locator('#outbox-items li', { hasText: description }).waitFor();
  }
  await tab.getByText('Sem conexão: lançamento guardado no aparelho').waitFor();
  assert.equal(await tab.locator('[data-live]').getAttribute('data-state'), 'offline');
  assert.equal(await tab.locator('#outbox-items li').count(), 2);
  assert.equal(await tab.locator('#provisional-balance').textContent(), brl(before + 1000 - 250), 'counted in a provisional balance');
  await other.locator('#outbox-items li').nth(1).waitFor(); // the other tab heard of them
  await tab.screenshot({ path: join(shots, 'offline-phone.png'), fullPage: true });
  await tab.reload(); // offline: the service worker's copy of the page, and the queue is still there
  await tab.locator('#outbox-items li').nth(1).waitFor();
  await axeViolations(tab).then((v) => assert.deepEqual(v, [], 'offline page'));
  await tab.setViewportSize(DESKTOP);
  await tab.screenshot({ path: join(shots, 'offline-desktop.png'), fullPage: true });
  await tab.setViewportSize(PHONE);

  await context.setOffline(false);
  await tab.waitForFunction(() => document.getElementById('outbox')?.hidden === true, null, { timeout: 10000 });
  await other.waitForFunction(() => document.getElementById('outbox')?.hidden === true, null, { timeout: 10000 });

  const today = new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Sao_Paulo' }).format(new Date());
  const listed = await fetch(`${base}/v1/entries?date=${today}&limit=500`, { headers: { authorization: `Bearer ${await apiToken()}` } });
  const { items } = await listed.json();
  const offline = items.filter((e) => e.description.startsWith('Offline '));
  assert.deepEqual(offline.map((e) => [e.description, e.type, e.amount]).sort(), [['Offline 1', 'credit', '10.00'], ['Offline 2', 'debit', '2.50']], 'exactly two recorded');
  const sent = brl(before + 750);
  await tab.waitForFunction((n) => document.querySelector('#closing-balance')?.textContent === n, sent, { timeout: 15000 }).catch(async (e) => {
    const shown = await tab.evaluate(() => [document.querySelector('#closing-balance')?.textContent, document.querySelector('[data-live]')?.dataset.state]);
    throw new Error(`the balance shows ${shown[0]} (stream ${shown[1]}), not ${sent}: ${e.message}`);
  });
  await context.close();
});

await test('offline: a session that expired meanwhile keeps the queue, asks to sign in, then sends it once', async () => {
  const context = await browser.newContext({ viewport: PHONE, locale: 'pt-BR', isMobile: true, hasTouch: true });
  const tab = await context.newPage();
  await signIn(tab);
  const recorded = async () => {
    const today = new Intl.DateTimeFormat('en-CA', { timeZone: 'America/Sao_Paulo' }).format(new Date());
    const listed = await fetch(`${base}/v1/entries?date=${today}&limit=500`, { headers: { authorization: `Bearer ${await apiToken()}` } });
    return (await listed.json()).items.filter((e) => e.description === 'Offline 3').length;
  };

  await context.setOffline(true);
  await tab.getByLabel('Valor').pressSequentially('500');
  await tab.getByLabel('Descrição').fill('Offline 3');
  await tab.getByRole('button', { name: 'Registrar', exact: true }).click();
  await tab.locator('#outbox-items li', { hasText: 'Offline 3' }).waitFor();
  await context.clearCookies(); // the session ended while offline
  await context.setOffline(false);

  // Asked to sign in again: by the queue's note, or by the sign-in page the live panel opens.
  await Promise.race([tab.waitForURL(/\/signin/, { timeout: 10000 }), tab.locator('#outbox-expired').waitFor({ timeout: 10000 })]);
  assert.equal(await recorded(), 0, 'nothing sent without a session');
  await signIn(tab);
  for (let i = 0; i < 50 && (await recorded()) === 0; i += 1) await tab.waitForTimeout(200);
  await tab.waitForFunction(() => document.getElementById('outbox')?.hidden === true, null, { timeout: 10000 });
  assert.equal(await recorded(), 1, 'sent once after signing in again');
  await context.close();
});

// Last: closing today's till takes no more entries today.
await test('closing the till shows expected, counted and the difference', async () => {
  const context = await browser.newContext({ viewport: PHONE, locale: 'pt-BR', isMobile: true, hasTouch: true });
  const page = await context.newPage();
  await signIn(page, process.env.CASHFLOW_MANAGER_USER, process.env.CASHFLOW_ROLE_PASSWORD);
  const expected = await closing(page).textContent();
  await page.getByRole('link', { name: 'Fechar o caixa' }).click();
  await page.getByRole('heading', { name: 'Fechar o caixa' }).waitFor();
  figures.close_server_ms = await page.evaluate(() => { const [nav] = performance.getEntriesByType('navigation'); return nav.responseStart - nav.requestStart; });
  await page.screenshot({ path: join(shots, 'close-phone.png'), fullPage: true });
  await axeViolations(page).then((v) => assert.deepEqual(v, [], 'close page'));
  await page.setViewportSize(DESKTOP);
  await page.screenshot({ path: join(shots, 'close-desktop.png'), fullPage: true });
  await page.setViewportSize(PHONE);
  const counted = page.getByLabel('Dinheiro contado');
  await counted.click();
  await counted.pressSequentially('100');
  assert.equal(await counted.inputValue(), '1,00');
  await page.getByLabel('Observação').fill('Conferido no fim do dia');
  await page.getByRole('button', { name: 'Fechar o caixa' }).click();
  await page.getByText('Caixa fechado.').waitFor();
  assert.equal(await page.locator('#expected').textContent(), expected);
  assert.equal(await page.locator('#counted').textContent(), 'R$ 1,00');
  const cents = (text) => Number(text.replace(/[^\d-]/g, ''));
  assert.equal(cents(await page.locator('#difference').textContent()), 100 - cents(expected), 'counted minus expected');
  await page.screenshot({ path: join(shots, 'closed-phone.png'), fullPage: true });
  await page.setViewportSize(DESKTOP);
  await page.screenshot({ path: join(shots, 'closed-desktop.png'), fullPage: true });
  await axeViolations(page).then((v) => assert.deepEqual(v, [], 'closed page'));
  await context.close();
});

await browser.close();
writeFileSync(join(shots, 'figures.json'), JSON.stringify(figures, null, 2));
console.log(`figures: ${JSON.stringify(figures)}`);
const failed = results.filter((r) => !r.ok).length;
console.log(`e2e: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
