// A real OpenID Connect provider (oidc-provider) for Tenantry's tests.
//
// Usage: node provider.mjs CONFIG.json
//
// CONFIG.json (written by tests/support/idp.py):
//   issuer            "http://127.0.0.1:PORT" (plain http is allowed by oidc-provider; it only
//                      matters for cookies, which the client-credentials grant never sets)
//   port              the port to bind on 127.0.0.1
//   jwks              a *private* JWK Set; every key must carry "kid" and "alg"
//   resource          the resource indicator (audience) access tokens are issued for by default
//   extra_resources   optional: further resource indicators a client may ask for with `resource=`
//   access_token_ttl  seconds
//   clients           [{client_id, client_secret, scopes: [..], extra_claims: {..} | null}]
//   interactive       optional: {accounts: {ID: {claims}}, resource_scopes: [..]} turns on the
//                      authorization code flow with PKCE, dynamic client registration and a scripted
//                      login and consent (below); an account's claims go into its access tokens, and
//                      a registered client may be granted the resource scopes it asks for
//   id_jag            optional: {audience, resource, accounts: {ID: {claims}}} enables
//                      POST /__test/id_jag (below)
//
// Access tokens are JWTs (typ "at+jwt") signed with the first configured key, obtained with the
// client-credentials grant at the token endpoint (client_secret_basic or client_secret_post).
// GET /__test/jwks_hits returns {"hits": N}: the number of GET requests to the JWKS endpoint.
//
// Scripted login and consent (interactive only), driven over HTTP by the test instead of a browser:
//   GET  /interaction/:uid          {"uid", "prompt": "login" | "consent", "client_id", "scope"}
//   POST /interaction/:uid/login    form account=ID (unknown accounts are refused) -> 303 to resume
//   POST /interaction/:uid/confirm  grants what was asked for -> 303 to resume
//   POST /interaction/:uid/abort    access_denied -> 303 to resume
// Cookies set by the authorization endpoint must be sent back (an httpx cookie jar does).
// Prints "READY <issuer>" on stdout once listening; exits on SIGTERM/SIGINT or when stdin closes
// (unless stdin is a terminal), so a provider never outlives the test process that started it.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { randomUUID } from 'node:crypto';

import { importJWK, SignJWT } from 'jose';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { issuer, port, jwks, resource } = config;
const resources = new Set([resource, ...(config.extra_resources ?? [])]);
const ttl = config.access_token_ttl;
const signingKey = jwks.keys[0];
if (!signingKey?.kid || !signingKey?.alg) {
  throw new Error('jwks.keys[0] must carry "kid" and "alg"');
}

const clientsById = new Map(config.clients.map((c) => [c.client_id, c]));
const interactive = config.interactive ?? null;
const accounts = interactive?.accounts ?? config.id_jag?.accounts ?? {};

// A minimal in-memory adapter. With JWT access tokens nothing is stored for the client-credentials
// grant; it only exists because passing no adapter prints a development-only warning.
class MemoryAdapter {
  static #stores = new Map();

  constructor(name) {
    if (!MemoryAdapter.#stores.has(name)) MemoryAdapter.#stores.set(name, new Map());
    this.store = MemoryAdapter.#stores.get(name);
  }

  async upsert(id, payload) { this.store.set(id, payload); }

  async find(id) { return this.store.get(id); }

  async findByUserCode() { return undefined; }

  async findByUid(uid) {
    for (const payload of this.store.values()) if (payload.uid === uid) return payload;
    return undefined;
  }

  async consume(id) { const p = this.store.get(id); if (p) p.consumed = Math.floor(Date.now() / 1000); }

  async destroy(id) { this.store.delete(id); }

  async revokeByGrantId(grantId) {
    for (const [id, payload] of this.store) if (payload.grantId === grantId) this.store.delete(id);
  }
}

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  jwks,
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    // oidc-provider accepts both client_secret_basic and client_secret_post for this method.
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  // Only what the enabled grants need is advertised in discovery.
  clientAuthMethods: interactive
    ? ['none', 'client_secret_basic', 'client_secret_post']
    : ['client_secret_basic', 'client_secret_post'],
  responseTypes: interactive ? ['code'] : [],
  clientDefaults: interactive
    ? {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: signingKey.alg,
    }
    : {
      grant_types: ['client_credentials'],
      response_types: [],
      id_token_signed_response_alg: signingKey.alg,
    },
  findAccount: (ctx, id) => (accounts[id] ? { accountId: id, claims: () => ({ sub: id }) } : undefined),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', ...(interactive?.resource_scopes ?? [])],
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: Boolean(interactive) },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // A client-credentials request without `resource=` gets the default resource (audience).
      defaultResource: () => resource,
      getResourceServerInfo: (ctx, resourceIndicator, client) => {
        if (!resources.has(resourceIndicator)) {
          throw new errors.InvalidTarget();
        }
        const scopes = clientsById.get(client.clientId)?.scopes ?? interactive?.resource_scopes ?? [];
        return {
          scope: scopes.join(' '),
          audience: resourceIndicator,
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: signingKey.alg, kid: signingKey.kid } },
        };
      },
    },
  },
  extraTokenClaims: (ctx, token) => {
    const claims = token.accountId ? accounts[token.accountId] : clientsById.get(token.clientId)?.extra_claims;
    return claims ? structuredClone(claims) : undefined;
  },
  ttl: {
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? ttl,
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? ttl,
  },
  // Errors are rendered as JSON anyway (no HTML flows are enabled).
  renderError: (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
});

// Server errors are logged (client errors such as invalid_client are answers, not failures).
provider.on('server_error', (ctx, err) => {
  console.error('server_error', ctx.method, ctx.path, err);
});

let jwksHits = 0;
const jwksPath = new URL(provider.urlFor('jwks')).pathname;
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/__test/jwks_hits') {
    ctx.type = 'json';
    ctx.body = { hits: jwksHits };
    return;
  }
  if (ctx.method === 'GET' && ctx.path === jwksPath) {
    jwksHits += 1;
  }
  const interaction = interactive && ctx.path.match(/^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/);
  if (interaction) {
    await interact(ctx, interaction[2]);
    return;
  }
  if (ctx.method === 'POST' && ctx.path === '/__test/id_jag' && config.id_jag) {
    await issueIdJag(ctx);
    return;
  }
  await next();
});

async function readForm(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interact(ctx, action) {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  if (!action && ctx.method === 'GET') {
    ctx.type = 'json';
    ctx.body = { uid: details.uid, prompt: prompt.name, client_id: params.client_id, scope: params.scope };
    return;
  }
  if (ctx.method !== 'POST') {
    ctx.status = 405;
    return;
  }
  let result;
  if (action === 'login') {
    const account = (await readForm(ctx)).get('account');
    if (prompt.name !== 'login' || !accounts[account]) {
      ctx.status = 400;
      ctx.type = 'json';
      ctx.body = { error: 'login_refused' };
      return;
    }
    result = { login: { accountId: account } };
  } else if (action === 'confirm') {
    if (prompt.name !== 'consent') {
      ctx.status = 400;
      ctx.type = 'json';
      ctx.body = { error: 'not_a_consent_prompt' };
      return;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: 'the user refused' };
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.status = 303;
  ctx.redirect(returnTo);
}

// An Identity Assertion JWT Authorization Grant (ID-JAG, typ "oauth-id-jag+jwt") for one of the
// configured clients, as the enterprise IdP's token exchange would issue it (the exchange itself,
// RFC 8693 with an ID token, is out of scope: the test asks here directly). Form: client_id, sub,
// and optional claims (JSON object merged last, so a test can set aud, exp, typ-independent claims).
async function issueIdJag(ctx) {
  const form = await readForm(ctx);
  const clientId = form.get('client_id');
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer,
    sub: form.get('sub'),
    aud: config.id_jag.audience,
    resource: config.id_jag.resource,
    client_id: clientId,
    jti: randomUUID(),
    iat: now,
    exp: now + 300,
    ...(accounts[form.get('sub')] ?? {}),
    ...JSON.parse(form.get('claims') ?? '{}'),
  };
  const typ = form.get('typ') ?? 'oauth-id-jag+jwt';
  const key = await importJWK(signingKey, signingKey.alg);
  const assertion = await new SignJWT(claims)
    .setProtectedHeader({ alg: signingKey.alg, kid: signingKey.kid, typ })
    .sign(key);
  ctx.type = 'json';
  ctx.body = { assertion, claims };
}

const server = createServer(provider.callback());
server.on('error', (err) => {
  console.error(`cannot listen on 127.0.0.1:${port}:`, err.message);
  process.exit(2);
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, shutdown);
}
// The test harness holds our stdin open: when it goes away (even killed), so do we.
if (!process.stdin.isTTY) {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
