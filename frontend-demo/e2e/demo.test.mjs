// The demo, end to end, in a real browser: headless Chromium (Debian's `chromium`) driven
// by playwright-core. It starts Redis, the OpenID provider (tests/op/op.mjs), demo-api and
// spa-bff (serving frontend-demo/public) on free loopback ports, then plays a user: open a
// client-side route, log in through the provider's forms, come back to the same route, call
// the API, reload, log out; then log in again and log out at the provider only, which ends
// the spa-bff session through back-channel logout.
//
// Binaries come from target/debug ($CARGO_TARGET_DIR/debug; SPA_BFF_BIN_DIR overrides, e.g.
// target/release);
// `cargo build --bin spa-bff --bin demo-api` first. Logs and a screenshot of the signed-in
// page go to tests/artifacts/e2e/.
//
// Run: npm test --prefix frontend-demo/e2e   (or node --test frontend-demo/e2e/)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BIN_DIR = process.env.SPA_BFF_BIN_DIR
  ? resolve(process.env.SPA_BFF_BIN_DIR)
  : join(resolve(ROOT, process.env.CARGO_TARGET_DIR ?? 'target'), 'debug');
const ARTIFACTS = join(ROOT, 'tests/artifacts/e2e');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const AUDIENCE = 'urn:spa-bff:demo-api';
const CLIENT = { id: 'spa-bff-e2e', secret: 'e2e-secret-not-for-production' };
const USER = 'alice'; // the provider accepts any login; the name claim is "Alice"

const children = [];
let tmp;
let browser;
let page;
/** @type {{bff: string, op: string, cookieName: string}} */
let env;

// ---- processes -------------------------------------------------------------------------

async function freePort() {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/** Spawns a child whose stdout and stderr go to tests/artifacts/e2e/<name>.log. */
function start(name, command, args, options = {}) {
  const log = createWriteStream(join(ARTIFACTS, `${name}.log`));
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  child.name = name;
  child.exited = once(child, 'exit');
  children.push(child);
  return child;
}

/** Resolves with the first stdout line matching `pattern`; rejects if the child exits. */
function lineMatching(child, pattern) {
  return new Promise((resolvePromise, reject) => {
    let seen = '';
    const onData = (chunk) => {
      seen += chunk;
      const match = seen.match(pattern);
      if (match) {
        child.stdout.off('data', onData);
        resolvePromise(match);
      }
    };
    child.stdout.on('data', onData);
    child.exited.then(([code]) => reject(new Error(`${child.name} exited (${code}); see ${ARTIFACTS}/${child.name}.log`)));
  });
}

async function waitFor(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const bin of ['spa-bff', 'demo-api']) {
    assert.ok(existsSync(join(BIN_DIR, bin)),
      `${join(BIN_DIR, bin)} is missing: run \`cargo build --bin spa-bff --bin demo-api\``);
  }
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/install-deps (Debian chromium)`);
  tmp = mkdtempSync(join(tmpdir(), 'spa-bff-e2e-'));
  const [redisPort, opPort, bffPort] = [await freePort(), await freePort(), await freePort()];
  const bff = `http://localhost:${bffPort}`;
  const op = `http://localhost:${opPort}`;

  start('redis', 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--loglevel', 'warning']);

  const clients = [{
    client_id: CLIENT.id,
    client_secret: CLIENT.secret,
    redirect_uris: [`${bff}/callback`],
    post_logout_redirect_uris: [`${bff}/`],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    backchannel_logout_uri: `${bff}/backchannel-logout`,
    backchannel_logout_session_required: true,
  }];
  const provider = start('op', 'node', [join(ROOT, 'tests/op/op.mjs')], {
    cwd: join(ROOT, 'tests/op'),
    env: { ...process.env, PORT: String(opPort), ISSUER: op, CLIENTS: JSON.stringify(clients) },
  });
  await lineMatching(provider, /^listening /m);

  const api = start('demo-api', join(BIN_DIR, 'demo-api'), [], {
    env: { ...process.env, DEMO_API_ISSUER: op, DEMO_API_AUDIENCE: AUDIENCE, DEMO_API_LISTEN: '127.0.0.1:0' },
  });
  const [, apiAddr] = await lineMatching(api, /^listening (\S+)$/m);

  // The same shape as demo/spa-bff.toml, on free ports. [[routes]] is read from the file only.
  const config = join(tmp, 'spa-bff.toml');
  writeFileSync(config, `
[server]
listen = "127.0.0.1:${bffPort}"
public_url = "${bff}"
static_dir = "${join(ROOT, 'frontend-demo/public')}"
workers = 2

[oidc]
issuer = "${op}"
client_id = "${CLIENT.id}"
scopes = ["openid", "profile", "email", "offline_access", "api:read", "api:write"]
auth_params = { resource = "${AUDIENCE}" }

[session]
redis_url = "redis://127.0.0.1:${redisPort}"
key_prefix = "spa-bff-e2e:"
insecure_cookies = true

[[routes]]
prefix = "/api"
upstream = "http://${apiAddr}"
`);
  const cookieKey = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64');
  start('spa-bff', join(BIN_DIR, 'spa-bff'), ['--config', config], {
    env: {
      ...process.env,
      // debug: the log check at the end then also covers spa-bff's debug output.
      RUST_LOG: process.env.RUST_LOG ?? 'debug',
      SPA_BFF__OIDC__CLIENT_SECRET: CLIENT.secret,
      SPA_BFF__SESSION__COOKIE_KEYS: JSON.stringify([cookieKey]),
    },
  });
  await waitFor('spa-bff /readyz', async () => (await fetch(`${bff}/readyz`)).ok);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  context.setDefaultTimeout(15_000);
  page = await context.newPage();
  env = { bff, op, cookieName: 'spa-bff' }; // insecure_cookies drops the __Host- prefix
});

after(async () => {
  await browser?.close().catch(() => {});
  for (const child of children.reverse()) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([child.exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

// ---- the user's story (top-level tests in one file run in order) ------------------------

const text = (selector) => page.locator(selector).innerText();

/** Fills the provider's login form, and its consent form when it asks (once per grant). */
async function providerLogin() {
  await page.waitForURL((url) => url.href.startsWith(`${env.op}/interaction/`));
  await page.locator('input[name="login"]').fill(USER);
  await page.locator('input[name="password"]').fill('any password');
  await page.locator('button[type="submit"]').click();
  const back = page.waitForURL((url) => url.href.startsWith(env.bff));
  const consent = page.getByRole('button', { name: /continue/i });
  await Promise.race([back, consent.waitFor().then(() => consent.click())]);
  await back;
}

const providerStats = async () => (await fetch(`${env.op}/__test/stats`)).json();

test('a client-side route is served and shows the signed-out state', async () => {
  const res = await page.goto(`${env.bff}/orders/42`);
  assert.equal(res.status(), 200);
  await page.getByText('You are signed out.').waitFor();
  assert.equal(await text('#page-title'), 'Order 42');
  assert.ok(await page.getByRole('button', { name: 'Log in' }).isVisible());
  assert.ok(await page.getByRole('button', { name: 'Log out' }).isHidden());
});

test('login goes through the provider forms and lands back on the same route', async () => {
  await page.getByRole('button', { name: 'Log in' }).click();
  await providerLogin();
  await page.waitForURL(`${env.bff}/orders/42`);
  await page.getByText('You are signed in.').waitFor();
  assert.equal(await text('#user-name'), 'Alice');
  assert.equal(await text('#user-email'), 'alice@example.test');
  assert.equal(await text('#page-title'), 'Order 42');
});

test('the session countdown ticks', async () => {
  const first = await text('#session-remaining');
  assert.match(first, /^\d+:\d\d min$|^\d+ h \d\d min$/);
  await page.waitForFunction(
    (before) => document.getElementById('session-remaining').textContent !== before, first);
});

test('"Call API" shows the demo API\'s answer: it saw a valid token for alice', async () => {
  await page.getByRole('button', { name: 'Call API' }).click();
  await page.locator('#api-status[data-status="200"]').waitFor();
  const answer = JSON.parse(await text('#api-result'));
  assert.equal(answer.token.valid, true);
  assert.equal(answer.token.sub, USER);
  assert.equal(answer.token.audience, AUDIENCE);
  assert.equal(answer.token.issuer, env.op);
  assert.deepEqual(answer.token.scopes, ['api:read', 'api:write']);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'signed-in.png'), fullPage: true });
});

test('page scripts cannot see the session cookie, and nothing sits in web storage', async () => {
  const cookies = await page.context().cookies(env.bff);
  const session = cookies.find((c) => c.name === env.cookieName);
  assert.ok(session, `no ${env.cookieName} cookie among ${cookies.map((c) => c.name)}`);
  assert.equal(session.httpOnly, true);
  const { cookie, storage } = await page.evaluate(() => ({
    cookie: document.cookie,
    storage: localStorage.length + sessionStorage.length,
  }));
  assert.ok(!cookie.includes(`${env.cookieName}=`), `document.cookie: ${cookie}`);
  assert.ok(!cookie.includes(session.value));
  assert.equal(storage, 0);
});

test('a reload keeps the session and the route', async () => {
  await page.reload();
  await page.getByText('You are signed in.').waitFor();
  assert.equal(await text('#user-name'), 'Alice');
  assert.equal(new URL(page.url()).pathname, '/orders/42');
  // Client-side navigation works without a server round trip for the page.
  await page.getByRole('link', { name: 'Profile' }).click();
  assert.equal(new URL(page.url()).pathname, '/profile');
  await page.locator('#page').getByText('alice@example.test', { exact: true }).waitFor();
});

test('logout ends the session here and at the provider; /api then answers 401', async () => {
  await page.getByRole('button', { name: 'Log out' }).click();
  // The provider's RP-initiated logout confirmation page.
  await page.waitForURL((url) => url.href.startsWith(env.op));
  await page.getByRole('button', { name: /yes, sign me out/i }).click();
  await page.waitForURL(`${env.bff}/`);
  await page.getByText('You are signed out.').waitFor();
  assert.ok(await page.getByRole('button', { name: 'Log in' }).isVisible());
  const cookies = await page.context().cookies(env.bff);
  assert.ok(!cookies.some((c) => c.name === env.cookieName), 'session cookie cleared');

  await page.getByRole('button', { name: 'Call API' }).click();
  await page.locator('#api-status[data-status="401"]').waitFor();
  const status = await page.evaluate(async () =>
    (await fetch('/api/hello', { headers: { 'X-CSRF': '1' } })).status);
  assert.equal(status, 401);
});

test('logging out at the provider alone ends the spa-bff session (back-channel logout)', async () => {
  await page.goto(`${env.bff}/profile`);
  await page.getByRole('button', { name: 'Log in' }).click();
  await providerLogin();
  await page.waitForURL(`${env.bff}/profile`);
  await page.getByText('You are signed in.').waitFor();
  const before = await providerStats();

  // As if the user signed out in another app of the same provider session.
  const discovery = await (await fetch(`${env.op}/.well-known/openid-configuration`)).json();
  await page.goto(discovery.end_session_endpoint);
  await page.getByRole('button', { name: /yes, sign me out/i }).click();
  await page.waitForURL((url) => url.href.startsWith(env.op) && url.pathname !== new URL(discovery.end_session_endpoint).pathname);
  const after = await providerStats();
  assert.equal(after.backchannel_error, 0, JSON.stringify(after.backchannel_errors));
  assert.equal(after.backchannel_success, before.backchannel_success + 1);

  await page.goto(`${env.bff}/profile`);
  await page.getByText('You are signed out.').waitFor();
  const status = await page.evaluate(async () =>
    (await fetch('/api/hello', { headers: { 'X-CSRF': '1' } })).status);
  assert.equal(status, 401);
});

test('spa-bff never logged a token, a cookie, an authorization code or the client secret', async () => {
  const log = readFileSync(join(ARTIFACTS, 'spa-bff.log'), 'utf8');
  assert.ok(log.includes('login completed'), 'the log covers the logins of this run');
  for (const secret of ['eyJ', 'Bearer ', 'refresh_token', 'id_token_hint', CLIENT.secret]) {
    assert.ok(!log.includes(secret), `spa-bff.log contains ${JSON.stringify(secret)}`);
  }
  assert.ok(!/[?&](code|state)=/.test(log), 'spa-bff.log contains a callback query string');
  assert.ok(!/spa-bff(-login-[0-9a-f]+)?=[A-Za-z0-9+/]{20}/.test(log), 'spa-bff.log contains a cookie value');
});
