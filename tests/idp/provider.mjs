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
//
// Access tokens are JWTs (typ "at+jwt") signed with the first configured key, obtained with the
// client-credentials grant at the token endpoint (client_secret_basic or client_secret_post).
// GET /__test/jwks_hits returns {"hits": N}: the number of GET requests to the JWKS endpoint.
// Prints "READY <issuer>" on stdout once listening; exits on SIGTERM/SIGINT or when stdin closes
// (unless stdin is a terminal), so a provider never outlives the test process that started it.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

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

  async findByUid() { return undefined; }

  async consume(id) { const p = this.store.get(id); if (p) p.consumed = Math.floor(Date.now() / 1000); }

  async destroy(id) { this.store.delete(id); }

  async revokeByGrantId() {}
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
  // Only what the client-credentials grant needs is advertised in discovery.
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  responseTypes: [],
  clientDefaults: {
    grant_types: ['client_credentials'],
    response_types: [],
    id_token_signed_response_alg: signingKey.alg,
  },
  features: {
    devInteractions: { enabled: false },
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
        const scopes = clientsById.get(client.clientId)?.scopes ?? [];
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
    const claims = clientsById.get(token.clientId)?.extra_claims;
    return claims ? structuredClone(claims) : undefined;
  },
  ttl: {
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? ttl,
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
  await next();
});

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
