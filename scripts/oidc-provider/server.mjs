// A real, certified OpenID Provider for the tests of the web app's sign-in (authorization code
// + PKCE): npm's oidc-provider (panva; OpenID Certified), shaped like Amazon Cognito where our
// verifier looks: JWT access tokens (RFC 9068, through resource indicators) carrying
// `client_id`, `token_use: access`, and the account's `custom:merchant_id` and
// `cognito:groups`; RS256 keys at `/jwks`, discovery at `/.well-known/openid-configuration`,
// RP-initiated logout. PKCE (S256) is required of every client. Sign-in is oidc-provider's
// development interaction: any login (the account id) with any password; the first-party
// clients are granted without a consent screen, as Cognito's app clients are. Cancelling the
// interaction (`/interaction/{uid}/abort`) answers `access_denied`.
//
// Started by crates/cashflow/tests/oidc_sign_in.rs and browser.rs. Env:
//   PORT                 port on 127.0.0.1 (default 0: any free port)
//   OIDC_HOST            the host name of the issuer URL (default 127.0.0.1; `localhost` makes
//                        the provider another site than an app at 127.0.0.1, as Cognito's is)
//   OIDC_CLIENTS         JSON array of clients: {client_id, client_secret?, redirect_uris,
//                        post_logout_redirect_uris}; without a secret, a public client
//   OIDC_ACCOUNTS_FILE   JSON object, login → extra access-token claims, e.g.
//                        {"maria": {"custom:merchant_id": "…", "cognito:groups": ["owner"]}};
//                        read at each token, so a test may write it after the start
//   OIDC_RESOURCE        the API's identifier (an absolute URI), the access tokens' `aud`
//                        (default `urn:cashflow:api`; Cognito's access tokens have no `aud`)
// Prints one JSON line, {"issuer": "http://127.0.0.1:PORT"}, once it accepts connections.
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const resource = process.env.OIDC_RESOURCE || 'urn:cashflow:api';
const accountsFile = process.env.OIDC_ACCOUNTS_FILE;
const clients = JSON.parse(process.env.OIDC_CLIENTS || '[]').map((c) => ({
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: c.client_secret ? 'client_secret_basic' : 'none',
  ...c,
}));

const accounts = () => {
  if (!accountsFile) return {};
  try {
    return JSON.parse(readFileSync(accountsFile, 'utf8'));
  } catch {
    return {};
  }
};

const server = createServer();
await new Promise((resolve) => server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve));
const issuer = `http://${process.env.OIDC_HOST || '127.0.0.1'}:${server.address().port}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid'],
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'cashflow/entries:write cashflow/entries:read cashflow/reports:read cashflow/days:close',
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: 600,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // First-party clients: what they ask for is granted, no consent screen.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    const existing = grantId && (await ctx.oidc.provider.Grant.find(grantId));
    if (existing) return existing;
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    const asked = String(ctx.oidc.params.scope || '').split(' ');
    grant.addOIDCScope(asked.filter((s) => s === 'openid').join(' '));
    grant.addResourceScope(resource, asked.filter((s) => s.startsWith('cashflow/')).join(' '));
    await grant.save();
    return grant;
  },
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  extraTokenClaims: async (_ctx, token) => {
    if (token.kind !== 'AccessToken') return undefined;
    return { token_use: 'access', ...(accounts()[token.accountId] || {}) };
  },
  ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
});
// Quiet: the tests read stdout for the issuer line only.
provider.on('server_error', (_ctx, error) => console.error('oidc-provider server_error', error));
server.on('request', provider.callback());
console.log(JSON.stringify({ issuer }));
