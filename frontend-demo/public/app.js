// The demo SPA: client-side routes (history API), the session as spa-bff reports it at
// /user, a call to the demo API through spa-bff's /api proxy, and logout.
//
// It never sees a token and stores nothing: no localStorage, no sessionStorage. The
// session lives in an HttpOnly cookie that JavaScript cannot read; spa-bff adds the access
// token when it forwards /api calls.

const $ = (id) => document.getElementById(id);

// The header spa-bff requires on proxied calls: a simple cross-site request cannot set it.
const CSRF = { 'X-CSRF': '1' };

/** @type {{claims: Record<string, unknown>, session: {expires_at: number}} | null} */
let user = null;
let ticker = 0;

// ---- routes ----------------------------------------------------------------------------

const routes = [
  { pattern: /^\/$/, title: () => 'Home', render: home },
  { pattern: /^\/profile$/, title: () => 'Profile', render: profile },
  { pattern: /^\/orders\/(\d+)$/, title: (id) => `Order ${id}`, render: order },
];

function home(page) {
  page.append(
    paragraph('This single-page app is served by spa-bff, which logs you in with OpenID Connect ' +
      'and keeps your tokens server-side. Every address below is a client-side route: ' +
      'open one directly or reload it, and spa-bff answers with this index.html.'),
    paragraph('Log in from any page: you come back to the page you started from.'),
  );
}

function profile(page) {
  if (!user) {
    page.append(paragraph('Log in to see the claims spa-bff holds for you.'));
    return;
  }
  const list = document.createElement('dl');
  list.className = 'claims';
  for (const [name, value] of Object.entries(user.claims)) {
    const dt = document.createElement('dt');
    dt.textContent = name;
    const dd = document.createElement('dd');
    dd.textContent = typeof value === 'string' ? value : JSON.stringify(value);
    list.append(dt, dd);
  }
  page.append(paragraph('Claims from GET /user (ID token and userinfo; never a token):'), list);
}

function order(page, id) {
  page.append(paragraph(`Order ${id} is a client-side route: its address survives a login round trip ` +
    'and a reload.'));
}

function notFound(page) {
  page.append(paragraph('No such page in this app.'));
}

function paragraph(text) {
  const p = document.createElement('p');
  p.textContent = text;
  return p;
}

function render({ focus = false } = {}) {
  const path = location.pathname;
  let route = null;
  let match = null;
  for (const candidate of routes) {
    match = path.match(candidate.pattern);
    if (match) { route = candidate; break; }
  }
  const title = route ? route.title(...match.slice(1)) : 'Not found';
  $('page-title').textContent = title;
  document.title = `${title} · spa-bff demo`;
  const page = $('page');
  page.replaceChildren();
  (route ? route.render : notFound)(page, ...(match ? match.slice(1) : []));
  for (const link of document.querySelectorAll('a[data-route]')) {
    if (link.getAttribute('href') === path) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (focus) $('page-title').focus();
}

function navigate(event) {
  const link = event.target.closest('a[data-route]');
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  if (link.getAttribute('href') !== location.pathname) history.pushState(null, '', link.href);
  render({ focus: true });
}

// ---- session ---------------------------------------------------------------------------

async function loadUser() {
  try {
    const res = await fetch('/user', { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (res.status === 401) {
      user = null;
    } else if (res.ok) {
      user = await res.json();
    } else {
      showSession(`Could not check the session (HTTP ${res.status}).`);
      return;
    }
  } catch (err) {
    showSession(`Could not reach spa-bff: ${err.message}`);
    return;
  }
  showSession();
}

function showSession(problem) {
  clearInterval(ticker);
  const signedIn = Boolean(user) && !problem;
  $('login').hidden = signedIn;
  $('logout').hidden = !signedIn;
  $('session').hidden = !signedIn;
  if (problem) {
    $('status').textContent = problem;
  } else if (signedIn) {
    const { claims } = user;
    $('status').textContent = 'You are signed in.';
    $('user-name').textContent = claims.name ?? claims.preferred_username ?? claims.sub;
    $('user-email').textContent = claims.email ?? '(no email claim)';
    tick();
    ticker = setInterval(tick, 1000);
  } else {
    $('status').textContent = 'You are signed out.';
  }
  render();
}

// The session ends at the earlier of its idle and absolute limits; spa-bff reports that as
// expires_at (Unix seconds). Activity such as an API call moves the idle limit.
function tick() {
  const left = Math.max(0, Math.round(user.session.expires_at - Date.now() / 1000));
  const el = $('session-remaining');
  el.dateTime = `PT${left}S`;
  el.textContent = formatDuration(left);
  if (left === 0) loadUser();
}

function formatDuration(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, '0');
  return h > 0 ? `${h} h ${String(m).padStart(2, '0')} min` : `${m}:${s} min`;
}

function login() {
  const returnTo = location.pathname + location.search;
  location.assign(`/login?returnTo=${encodeURIComponent(returnTo)}`);
}

async function logout() {
  $('logout').disabled = true;
  try {
    const res = await fetch('/logout', { method: 'POST', headers: CSRF });
    const body = await res.json().catch(() => ({}));
    if (res.ok && body.logoutUrl) {
      location.assign(body.logoutUrl); // the provider ends its session, then sends us back
      return;
    }
    $('status').textContent = `Logout failed (HTTP ${res.status}).`;
  } catch (err) {
    $('status').textContent = `Logout failed: ${err.message}`;
  }
  $('logout').disabled = false;
}

// ---- the demo API ----------------------------------------------------------------------

async function callApi() {
  const status = $('api-status');
  const result = $('api-result');
  status.textContent = 'Calling /api/hello…';
  try {
    const res = await fetch('/api/hello', { headers: { ...CSRF, Accept: 'application/json' } });
    const text = await res.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON: show as is */ }
    status.textContent = res.ok
      ? `The API answered ${res.status}:`
      : `The API call failed with HTTP ${res.status}${res.status === 401 ? ' (not signed in)' : ''}:`;
    status.dataset.status = String(res.status);
    result.textContent = shown;
    result.hidden = false;
    if (res.ok && user) loadUser(); // the call moved the idle timeout
  } catch (err) {
    status.textContent = `The API call failed: ${err.message}`;
    delete status.dataset.status;
    result.hidden = true;
  }
}

// ---- start -----------------------------------------------------------------------------

$('login').addEventListener('click', login);
$('logout').addEventListener('click', logout);
$('call-api').addEventListener('click', callApi);
document.addEventListener('click', navigate);
addEventListener('popstate', () => render({ focus: true }));
render();
loadUser();
