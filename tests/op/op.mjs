// A real OpenID Provider (node-oidc-provider) for spa-bff's integration tests and demo.
// TEST/DEMO ONLY: it accepts any user name with any password.
//
// Environment:
//   PORT (required)              port to listen on; the server binds 127.0.0.1 only
//   ISSUER                       default http://127.0.0.1:$PORT
//   ACCESS_TOKEN_TTL             seconds, default 300 (opaque and JWT access tokens alike)
//   CLIENTS                      optional JSON array of static client metadata (the demo's client)
//   BACKCHANNEL_ALLOW_LOOPBACK   default "1": allow back-channel logout POSTs to loopback
//   STATE_FILE                   optional: keep grants, clients, keys across restarts (written on
//                                shutdown, read at start), for "the provider went away and came back"
//   REQUIRE_PAR                  "1": require pushed authorization requests from every client
//                                (`require_pushed_authorization_requests: true` in discovery)
//
// Choices:
// - devInteractions: the library's built-in login and consent forms. Any login name becomes `sub`.
// - Open dynamic registration (no initial access token): each test registers its own
//   confidential client with its exact redirect URI, so tests do not share state.
// - PKCE required for every client; oidc-provider 9 only knows S256.
// - Refresh tokens: oidc-provider drops `offline_access` from a request that does not carry
//   prompt=consent, and by default issues refresh tokens only for offline_access. issueRefreshToken
//   is therefore "the client may use the refresh_token grant". rotateRefreshToken: true rotates on
//   every use; presenting a consumed refresh token revokes the whole grant (library default).
// - resourceIndicators: `resource=<uri>` at /auth yields JWT access tokens with aud=<uri>, scopes
//   api:read api:write (and reports:read orders:read for client credentials tokens), the same
//   TTL; useGrantedResource makes the code exchange and refreshes keep
//   using the granted resource. Without `resource` there is no default resource: access tokens are
//   opaque and usable at userinfo (which refuses the resource-bound JWTs).
//   Per-route audiences (spa-bff's routes.resource) rely on this as configured: /auth may name
//   several resources; the code exchange must then name one (else invalid_target); a refresh with
//   `resource=<uri>` returns a JWT for that audience (and an ID token), and one naming a resource
//   the grant does not cover is invalid_target AFTER rotating (the refresh token is then spent).
// - Back-channel logout: oidc-provider 9 routes its outgoing fetches through an undici dispatcher
//   that destroys connections to special-use addresses (loopback included) and then calls the
//   `fetch` configuration hook. Our hook drops that dispatcher for loopback URLs only.
// - Signing key: a fresh RSA key with a fresh `kid` per process, so a restart rotates keys
//   (unless STATE_FILE keeps them, with the grants and clients, across a restart).
// - Storage: the default in-memory adapter is an LRU of 1000 entries (grants get evicted in long
//   runs); MapAdapter below is an unbounded Map honouring expiresIn, with a grant index for revocation.
// - Client authentication: client_secret_basic/_post, and private_key_jwt with RS256, PS256 or ES256
//   (clients register their public `jwks` or a `jwks_uri`, fetched over loopback like back-channel
//   logout). The client credentials grant is on (opaque tokens, or JWTs for a `resource`, living
//   ACCESS_TOKEN_TTL like the others); PAR is on (required of everyone with REQUIRE_PAR=1).
// - DPoP (RFC 9449): on, ES256 among the proof algorithms, with a nonce secret so that it can
//   demand nonces: it sends a fresh `DPoP-Nonce` on answers to DPoP requests, and demands a nonce
//   (400 use_dpop_nonce at the token endpoint) only of the clients named by
//   /__test/dpop-require-nonce. Clients registered with `dpop_bound_access_tokens: true` must send
//   a proof on every token request (a refresh without one is invalid_grant, before rotation); the
//   tokens are then bound to the proof's key (`cnf.jkt` in JWT access tokens).
// - Only response_type=code. The built-in HTML pages lose their web-font @import (no internet here).
// - /__test/* admin routes live on the same server, in front of provider.callback(): stats,
//   reset-stats, revoke (an account's grants), delay-token (hold the next token answers of a
//   grant type after processing them), refresh-tokens (an account's usable refresh tokens),
//   dpop-require-nonce (token requests of a client must carry the provider's DPoP nonce).
// - Prints exactly one line `listening <port>` when ready; exits on SIGTERM/SIGINT and when stdin
//   (if it is a pipe, as when spawned by the Rust tests) reaches EOF.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, fstatSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

console.info = console.error; // library notices go to stderr: stdout carries only `listening`

const PORT = Number(process.env.PORT);
if (!Number.isInteger(PORT) || PORT <= 0) {
  console.error('op.mjs: PORT must be set to a port number');
  process.exit(2);
}
const ISSUER = process.env.ISSUER || `http://127.0.0.1:${PORT}`;
const ACCESS_TOKEN_TTL = Number(process.env.ACCESS_TOKEN_TTL || 300);
const CLIENTS = process.env.CLIENTS ? JSON.parse(process.env.CLIENTS) : [];
const ALLOW_LOOPBACK = !['0', 'false', 'no'].includes(process.env.BACKCHANNEL_ALLOW_LOOPBACK ?? '1');
const REQUIRE_PAR = process.env.REQUIRE_PAR === '1';

// ---- storage: unbounded Map, honours expiresIn, indexes grant members for revokeByGrantId ----
const store = new Map(); // key -> { payload, expiresAt }
const grants = new Map(); // grantId -> Set of keys
const get = (key) => {
  const entry = store.get(key);
  if (entry && entry.expiresAt <= Date.now()) { store.delete(key); return undefined; }
  return entry?.payload;
};
setInterval(() => { for (const k of store.keys()) get(k); }, 60_000).unref();

// ---- optional persistence across restarts (STATE_FILE) ----
const STATE_FILE = process.env.STATE_FILE;
const saved = STATE_FILE && existsSync(STATE_FILE) ? JSON.parse(readFileSync(STATE_FILE, 'utf8')) : null;
for (const [key, { payload, expiresAt }] of saved?.store ?? []) {
  store.set(key, { payload, expiresAt: expiresAt ?? Infinity });
}
for (const [grantId, keys] of saved?.grants ?? []) grants.set(grantId, new Set(keys));
function saveState() {
  if (!STATE_FILE) return;
  const entries = [...store.entries()].map(([k, v]) =>
    [k, { payload: v.payload, expiresAt: Number.isFinite(v.expiresAt) ? v.expiresAt : null }]);
  writeFileSync(STATE_FILE, JSON.stringify({
    store: entries,
    grants: [...grants.entries()].map(([id, keys]) => [id, [...keys]]),
    jwk: signingJwk,
    cookieKey,
  }));
}

class MapAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, expiresAt });
    if (this.model === 'Session') store.set(`sessionUid:${payload.uid}`, { payload: id, expiresAt });
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, { payload: id, expiresAt });
    if (payload.grantId) {
      if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
      grants.get(payload.grantId).add(key);
    }
  }
  async find(id) { return get(this.key(id)); }
  async findByUid(uid) { const id = get(`sessionUid:${uid}`); return id && this.find(id); }
  async findByUserCode(code) { const id = get(`userCode:${code}`); return id && this.find(id); }
  async consume(id) { const p = get(this.key(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const key of grants.get(grantId) ?? []) store.delete(key);
    grants.delete(grantId);
  }
}

// ---- accounts: any login name is an account ----
const capitalize = (s) => s.charAt(0).toUpperCase() + s.slice(1);
async function findAccount(_ctx, id) {
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        name: capitalize(id),
        given_name: capitalize(id),
        family_name: 'Tester',
        email: `${id}@example.test`,
        email_verified: true,
      };
    },
  };
}

const LOOPBACK_HOSTS = new Set(['localhost', '[::1]', '::1']);
const isLoopback = (url) => {
  const { hostname } = new URL(url);
  return LOOPBACK_HOSTS.has(hostname) || /^127\.\d+\.\d+\.\d+$/.test(hostname);
};

const signingJwk = saved?.jwk ?? {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  use: 'sig', alg: 'RS256', kid: `rs256-${randomBytes(6).toString('hex')}`,
};
const cookieKey = saved?.cookieKey ?? randomBytes(32).toString('base64url');
// Clients whose DPoP proofs must carry the provider's nonce (/__test/dpop-require-nonce).
const nonceClients = new Set();
const provider = new Provider(ISSUER, {
  adapter: MapAdapter,
  clients: CLIENTS,
  findAccount,
  jwks: { keys: [signingJwk] },
  cookies: { keys: [cookieKey] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'given_name', 'family_name'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  responseTypes: ['code'],
  pkce: { required: () => true },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  enabledJWA: {
    clientAuthSigningAlgValues: ['HS256', 'RS256', 'PS256', 'ES256'],
  },
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    ClientCredentials: ACCESS_TOKEN_TTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
  },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true, initialAccessToken: false },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
    introspection: { enabled: true, allowedPolicy: async () => true },
    userinfo: { enabled: true },
    clientCredentials: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      requireNonce: (ctx) => nonceClients.has(ctx.oidc?.client?.clientId),
    },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: REQUIRE_PAR },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf, // no default resource
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => ({
        scope: 'api:read api:write reports:read orders:read',
        audience: resourceIndicator,
        accessTokenTTL: ACCESS_TOKEN_TTL,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // oidc-provider passes options.dispatcher = its SSRF-guarding undici Agent; omit it for loopback.
  fetch: (url, options) => {
    if (ALLOW_LOOPBACK && isLoopback(String(url))) delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
});

// ---- statistics for the tests ----
const freshStats = () => ({
  token_requests: {}, token_success: {}, token_error: {},
  refresh_success: 0, refresh_error: 0,
  backchannel_success: 0, backchannel_error: 0, backchannel_errors: [],
  requests: {}, // by path, e.g. "/token", "/me"
  durations_ms: {}, // by path: total milliseconds spent answering (the benchmark subtracts them)
  by_client: {}, // client_id -> token requests by grant type (successful or not)
});
let stats = freshStats();
const bump = (map, key) => { map[key] = (map[key] ?? 0) + 1; };
const grantType = (ctx) => ctx.oidc?.params?.grant_type ?? ctx.oidc?.body?.grant_type ?? 'unknown';
const bumpClient = (ctx, gt) => {
  const id = ctx.oidc?.client?.clientId;
  if (id) bump(stats.by_client[id] ??= {}, gt);
};
provider.on('grant.success', (ctx) => {
  const gt = grantType(ctx);
  bump(stats.token_requests, gt); bump(stats.token_success, gt); bumpClient(ctx, gt);
  if (gt === 'refresh_token') stats.refresh_success += 1;
});
provider.on('grant.error', (ctx) => {
  const gt = grantType(ctx);
  bump(stats.token_requests, gt); bump(stats.token_error, gt); bumpClient(ctx, gt);
  if (gt === 'refresh_token') stats.refresh_error += 1;
});
provider.on('backchannel.success', () => { stats.backchannel_success += 1; });
provider.on('backchannel.error', (_ctx, err, client) => {
  stats.backchannel_error += 1;
  stats.backchannel_errors.push(`${client.clientId}: ${err.message} ${err.cause?.message ?? ''}`.trim());
});
// The built-in pages @import a web font from the internet; browsers in tests must stay on loopback.
provider.use(async (ctx, next) => {
  await next();
  if (typeof ctx.body === 'string' && ctx.response.is('html')) {
    ctx.body = ctx.body.replace(/@import url\(https:[^)]*\);?/g, '');
  }
});
provider.on('server_error', (_ctx, err) => console.error('op server_error:', err));

// /__test/delay-token: hold the next answers of one grant type AFTER the grant was processed
// (tokens rotated), so a test can act while the provider's answer is on its way.
const tokenDelays = []; // { grantType, ms, count }
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method !== 'POST' || ctx.path !== '/token') return;
  const delay = tokenDelays.find((d) => d.grantType === grantType(ctx) && d.count > 0);
  if (delay) {
    delay.count -= 1;
    await new Promise((resolve) => { setTimeout(resolve, delay.ms); });
  }
});

// Destroys every grant of an account, with all tokens issued under it.
async function revokeAccount(sub) {
  const ids = [];
  for (const key of [...store.keys()]) {
    const payload = key.startsWith('Grant:') && get(key);
    if (payload && payload.accountId === sub) ids.push(key.slice('Grant:'.length));
  }
  const adapter = new MapAdapter('Grant');
  for (const id of ids) { await adapter.revokeByGrantId(id); await adapter.destroy(id); }
  return ids.length;
}

const json = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
};
const callback = provider.callback();
const server = createServer((req, res) => {
  const url = new URL(req.url, ISSUER);
  if (!url.pathname.startsWith('/__test/')) {
    bump(stats.requests, url.pathname);
    const started = process.hrtime.bigint();
    const counted = stats;
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      counted.durations_ms[url.pathname] = (counted.durations_ms[url.pathname] ?? 0) + ms;
    });
    return callback(req, res);
  }
  const route = `${req.method} ${url.pathname}`;
  if (route === 'GET /__test/stats') {
    const totals = { authorization_code: 0, refresh_token: 0, ...stats.token_requests };
    return json(res, 200, { ...totals, ...stats });
  }
  if (route === 'POST /__test/reset-stats') { stats = freshStats(); return json(res, 200, {}); }
  if (route === 'POST /__test/delay-token') {
    tokenDelays.push({
      grantType: url.searchParams.get('grant_type') ?? 'refresh_token',
      ms: Number(url.searchParams.get('ms') ?? 1000),
      count: Number(url.searchParams.get('count') ?? 1),
    });
    return json(res, 200, {});
  }
  if (route === 'GET /__test/refresh-tokens' && url.searchParams.get('sub')) {
    // The provider's own record: refresh tokens of an account that are still usable
    // (not revoked, not consumed by rotation, not expired). Opaque token value = its id.
    const sub = url.searchParams.get('sub');
    const active = [];
    for (const key of [...store.keys()]) {
      const payload = key.startsWith('RefreshToken:') && get(key);
      if (payload && payload.accountId === sub && !payload.consumed) active.push(key.slice('RefreshToken:'.length));
    }
    return json(res, 200, { active });
  }
  if (route === 'POST /__test/dpop-require-nonce' && url.searchParams.get('client_id')) {
    nonceClients.add(url.searchParams.get('client_id'));
    return json(res, 200, {});
  }
  if (route === 'POST /__test/revoke' && url.searchParams.get('sub')) {
    return revokeAccount(url.searchParams.get('sub')).then((n) => json(res, 200, { revoked_grants: n }));
  }
  return json(res, 404, { error: 'not_found' });
});

const shutdown = () => { saveState(); server.close(); process.exit(0); };
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
let stdin;
try { stdin = fstatSync(0); } catch { /* no stdin at all */ }
if (stdin?.isFIFO() || stdin?.isSocket()) {
  process.stdin.on('end', shutdown).on('close', shutdown).resume();
}

server.listen(PORT, '127.0.0.1', () => { process.stdout.write(`listening ${PORT}\n`); });
