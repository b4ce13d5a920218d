// Sign-in through an OpenID Provider's hosted UI (authorization code + PKCE) in a real browser:
// `cashflow serve` trusting scripts/oidc-provider (both started by the Rust test
// crates/cashflow/tests/browser.rs), Debian's chromium driven by playwright-core. The provider
// is at `localhost` and the app at `127.0.0.1`, so coming back from the provider is a
// cross-site navigation, as it is from Cognito's domain.
//
// Env: CASHFLOW_WEB_URL, OIDC_ISSUER, and harness.mjs's.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DESKTOP, axeViolations, launch, results, shots, test } from './harness.mjs';

const base = process.env.CASHFLOW_WEB_URL;
const issuer = process.env.OIDC_ISSUER;
assert.ok(base && issuer, 'CASHFLOW_WEB_URL and OIDC_ISSUER are required');

const browser = await launch();

// The provider's development login: any password.
const signInAtProvider = async (page, login) => {
  await page.goto(`${base}/signin`);
  await page.getByRole('link', { name: 'Entrar com Cognito' }).click();
  await page.waitForURL((url) => url.href.startsWith(`${issuer}/interaction/`));
  await page.locator('input[name=login]').fill(login);
  await page.locator('input[name=password]').fill('qualquer-senha');
  await page.getByRole('button', { name: 'Sign-in' }).click();
  await page.waitForURL(`${base}/`);
};

const desktop = await browser.newContext({ viewport: DESKTOP, locale: 'pt-BR' });
const page = await desktop.newPage();

await test('the sign-in page offers the provider and passes axe-core', async () => {
  await page.goto(`${base}/signin`);
  await page.getByRole('link', { name: 'Entrar com Cognito' }).waitFor();
  await page.screenshot({ path: join(shots, 'oidc-signin-desktop.png'), fullPage: true });
  assert.deepEqual(await axeViolations(page), []);
});

await test('an owner signs in at the provider and sees every page of her role', async () => {
  await signInAtProvider(page, 'maria');
  await page.getByRole('heading', { name: /Hoje/ }).waitFor();
  const nav = page.getByRole('navigation');
  for (const name of ['Lançamentos', 'Relatórios', 'Fechar o caixa']) {
    await nav.getByRole('link', { name }).waitFor();
  }
  const cookies = await desktop.cookies(base);
  const session = cookies.find((c) => c.name === 'cf_session');
  assert.ok(session && session.httpOnly && session.sameSite === 'Strict', JSON.stringify(session));
  assert.equal(cookies.find((c) => c.name === 'cf_oidc'), undefined, 'the flow cookie is gone');
  assert.equal(await page.evaluate(() => document.cookie.includes('cf_session')), false, 'no script reads the session');
});

await test('she records an entry and the balance shows it', async () => {
  await page.getByLabel('Valor').pressSequentially('2500');
  await page.getByLabel('Descrição').fill('Venda pelo Cognito');
  await page.getByRole('button', { name: 'Registrar', exact: true }).click();
  await page.getByText('Lançamento registrado.').waitFor();
  await page.waitForFunction(() => document.querySelector('#closing-balance')?.textContent === 'R$ 25,00', null, { timeout: 10000 });
  await page.screenshot({ path: join(shots, 'oidc-today-desktop.png'), fullPage: true });
});

await test('signing out ends the session here and at the provider', async () => {
  await page.getByRole('button', { name: 'Sair' }).click();
  await page.waitForURL((url) => url.href.startsWith(`${issuer}/session/end`));
  await page.getByRole('button', { name: 'Yes, sign me out' }).click();
  await page.waitForURL((url) => url.href.startsWith(`${base}/signin`));
  assert.equal((await desktop.cookies(base)).find((c) => c.name === 'cf_session'), undefined);
  await page.goto(`${base}/`);
  await page.waitForURL(`${base}/signin`);
});

await test('a cashier signing in after her sees no reports and is refused them', async () => {
  await signInAtProvider(page, 'joao');
  const nav = page.getByRole('navigation');
  await nav.getByRole('link', { name: 'Lançamentos' }).waitFor();
  assert.equal(await nav.getByRole('link', { name: 'Relatórios' }).count(), 0);
  const refused = await page.goto(`${base}/reports`);
  assert.equal(refused.status(), 403);
});

await test('a callback that is not this browser\'s sign-in is a clear page', async () => {
  const response = await page.goto(`${base}/auth/callback?code=forged&state=forged`);
  assert.equal(response.status(), 400);
  await page.getByRole('link', { name: 'Tentar de novo' }).waitFor();
  await page.screenshot({ path: join(shots, 'oidc-refused-desktop.png'), fullPage: true });
});

await browser.close();
const failed = results.filter((r) => !r.ok);
console.log(`${results.length - failed.length}/${results.length} passed`);
process.exit(failed.length ? 1 : 0);
