"""The components of a run: Redis, the test OpenID provider, the upstream (nginx answering a
1 KB JSON body), and the peers measured against it (nginx as a plain reverse proxy, Apache
with mod_auth_openidc, express-openid-connect, spa-bff), each configured here, started on a
free loopback port and, where it authenticates, logged in through the provider. Every proxy
maps /api/<rest> to the upstream's /<rest>."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .procs import Failure, Proc, Procs, free_port
from .web import Browser

ROOT = Path(__file__).resolve().parents[2]
APACHE_MODULES = Path("/usr/lib/apache2/modules")

# The upstream's answer: exactly 1024 bytes of JSON.
_head = '{"orders":[{"id":1,"item":"book","qty":2},{"id":2,"item":"pen","qty":10}],"pad":"'
BODY_1K = _head + "x" * (1024 - len(_head) - 2) + '"}'
assert len(BODY_1K) == 1024


@dataclass
class Target:
    """Something wrk and oha load: a URL, the headers that authenticate, the processes that
    serve it (for the record) and how it proved it attaches the access token."""

    name: str
    url: str
    headers: dict = field(default_factory=dict)
    procs: list = field(default_factory=list)
    bearer_checked: str = "n/a"


@dataclass
class Client:
    """A static client of the test provider (its CLIENTS environment variable)."""

    client_id: str
    redirect_uri: str
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    backchannel_logout: bool = False  # spa-bff: register /backchannel-logout, with `sid`

    def metadata(self) -> dict:
        base = self.redirect_uri.rsplit("/", 1)[0]
        extra = {"backchannel_logout_uri": f"{base}/backchannel-logout",
                 "backchannel_logout_session_required": True} if self.backchannel_logout else {}
        return {**extra,
            "client_id": self.client_id,
            "client_secret": self.secret,
            "redirect_uris": [self.redirect_uri],
            "post_logout_redirect_uris": [f"{base}/"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }


# ---- Redis ------------------------------------------------------------------------------


def start_redis(procs: Procs) -> int:
    port = free_port()
    p = procs.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--loglevel", "warning"])
    p.wait_port(port)
    return port


# ---- the OpenID provider ----------------------------------------------------------------


@dataclass
class Provider:
    port: int
    proc: Proc

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        return json.loads(Browser().get(f"{self.issuer}/__test/stats").body)

    def reset_stats(self) -> None:
        Browser().request("POST", f"{self.issuer}/__test/reset-stats")


def start_provider(procs: Procs, name: str, clients: list[Client], access_token_ttl: int) -> Provider:
    """node tests/op/op.mjs (as tests/it/support/procs.rs starts it), with static clients."""
    port = free_port()
    env = {
        "PORT": str(port),
        "ISSUER": f"http://127.0.0.1:{port}",
        "ACCESS_TOKEN_TTL": str(access_token_ttl),
        "CLIENTS": json.dumps([c.metadata() for c in clients]),
        "BACKCHANNEL_ALLOW_LOOPBACK": "1",
    }
    p = procs.start(name, ["node", str(ROOT / "tests/op/op.mjs")], env=env, cwd=ROOT / "tests/op")
    p.wait_port(port)
    return Provider(port, p)


def token_lengths(provider: Provider, client: Client) -> dict:
    """Runs the code flow (PKCE S256, the scopes spa-bff asks for) as `client` and returns the
    lengths of the access, refresh and ID tokens the provider issues: the tokens' own share of
    what a session stores."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client.client_id, "redirect_uri": client.redirect_uri,
        "scope": "openid profile email offline_access", "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16), "code_challenge": challenge, "code_challenge_method": "S256",
    })
    back = Browser().provider_login(f"{provider.issuer}/auth?{query}", "bench-probe")
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(back).query)["code"][0]
    basic = base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()
    resp = Browser().request("POST", f"{provider.issuer}/token", {
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {basic}",
    }, urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
                               "redirect_uri": client.redirect_uri, "code_verifier": verifier}).encode())
    tokens = json.loads(resp.body)
    if resp.status != 200:
        raise Failure(f"probe code exchange failed: {resp.status} {tokens}")
    return {k: len(tokens.get(k, "")) for k in ("access_token", "refresh_token", "id_token")}


# ---- nginx: the upstream and the plain reverse proxy --------------------------------------


def _nginx_conf(dir: Path, workers: int, http_block: str) -> Path:
    (dir / "tmp").mkdir(parents=True, exist_ok=True)
    conf = dir / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  client_body_temp_path {dir}/tmp/body;
  proxy_temp_path {dir}/tmp/proxy;
  fastcgi_temp_path {dir}/tmp/fastcgi;
  uwsgi_temp_path {dir}/tmp/uwsgi;
  scgi_temp_path {dir}/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
{http_block}
}}
""")
    return conf


def start_upstream(procs: Procs, dir: Path) -> Target:
    """nginx (one worker, no access log) answering every path with the 1 KB JSON body, and
    /echo-auth with the Authorization header it received (the proxies' token check)."""
    port = free_port()
    conf = _nginx_conf(dir, 1, f"""
  access_log off;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    default_type application/json;
    location = /echo-auth {{ return 200 "$http_authorization"; }}
    location / {{ return 200 '{BODY_1K}'; }}
  }}""")
    p = procs.start("upstream-nginx", ["nginx", "-p", str(dir), "-c", str(conf)])
    p.wait_port(port)
    return Target("upstream directly", f"http://127.0.0.1:{port}/orders", procs=[p])


def start_nginx_proxy(procs: Procs, dir: Path, workers: int, upstream_port: int) -> Target:
    """nginx as a plain reverse proxy, no auth: keep-alive to the upstream, access log on (as
    Debian ships it)."""
    port = free_port()
    conf = _nginx_conf(dir, workers, f"""
  access_log {dir}/access.log;
  upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location /api/ {{
      proxy_pass http://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}""")
    p = procs.start("nginx-proxy", ["nginx", "-p", str(dir), "-c", str(conf)])
    p.wait_port(port)
    return Target("nginx, plain reverse proxy (no auth)", f"http://127.0.0.1:{port}/api/orders", procs=[p])


# ---- Apache + mod_auth_openidc ------------------------------------------------------------


def apache_client() -> tuple[Client, int]:
    port = free_port()
    return Client("bench-apache", f"http://127.0.0.1:{port}/redirect_uri"), port


def start_apache(procs: Procs, dir: Path, port: int, client: Client, provider: Provider,
                 redis_port: int, upstream_port: int) -> Target:
    """Apache 2 (event MPM) with mod_auth_openidc: sessions in Redis (OIDCCacheType redis), the
    access token passed as `Authorization: Bearer` to the upstream by mod_proxy, access log on
    (as Debian's default site has it)."""
    dir.mkdir(parents=True, exist_ok=True)
    os.chmod(dir, 0o755)
    mods = ["mpm_event", "authz_core", "authz_user", "authn_core", "headers", "proxy", "proxy_http", "auth_openidc"]
    load = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in mods)
    conf = dir / "apache2.conf"
    conf.write_text(f"""
ServerRoot "{dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {dir}/apache2.pid
DefaultRuntimeDir {dir}
Mutex file:{dir} default
ErrorLog {dir}/error.log
LogLevel warn
User www-data
Group www-data
{load}
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
CustomLog {dir}/access.log combined
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 120
StartServers 2
ServerLimit 4
ThreadsPerChild 64
MinSpareThreads 64
MaxSpareThreads 256
MaxRequestWorkers 256
MaxConnectionsPerChild 0

OIDCProviderMetadataURL {provider.issuer}/.well-known/openid-configuration
OIDCClientID {client.client_id}
OIDCClientSecret {client.secret}
OIDCRedirectURI {client.redirect_uri}
OIDCCryptoPassphrase {secrets.token_hex(32)}
OIDCScope "openid profile email"
OIDCPKCEMethod S256
OIDCCacheType redis
OIDCRedisCacheServer 127.0.0.1:{redis_port}
OIDCPassClaimsAs environment
OIDCSessionInactivityTimeout 3600

<Location />
  AuthType openid-connect
  Require valid-user
</Location>
<Location /api/>
  RequestHeader set Authorization "Bearer %{{OIDC_access_token}}e"
  RequestHeader unset Cookie
</Location>
ProxyPass /api/ http://127.0.0.1:{upstream_port}/
""")
    p = procs.start("apache", ["apache2", "-f", str(conf), "-DFOREGROUND"])
    p.wait_port(port)
    return Target("Apache + mod_auth_openidc", f"http://127.0.0.1:{port}/api/orders", procs=[p])


def login_apache(target: Target) -> None:
    """A navigation to /api/orders starts the login; /redirect_uri sets the session cookie."""
    b = Browser()
    first = b.get(target.url)
    if first.status != 302:
        raise Failure(f"Apache: GET {target.url} answered {first.status}, not a redirect to the provider: "
                      f"{first.text[:300]}")
    back = b.provider_login(first.location, "bench-apache")
    done = b.get(back)
    if done.status != 302:
        raise Failure(f"Apache: {back.split('?')[0]} answered {done.status}: {done.text[:300]}")
    cookie = b.cookie(target.url, "mod_auth_openidc_session")
    if not cookie:
        raise Failure("Apache: no mod_auth_openidc_session cookie after the login")
    target.headers = {"Cookie": f"mod_auth_openidc_session={cookie}"}


# ---- express-openid-connect -----------------------------------------------------------------


def express_client() -> tuple[Client, int]:
    port = free_port()
    return Client("bench-express", f"http://127.0.0.1:{port}/callback"), port


def start_express(procs: Procs, port: int, client: Client, provider: Provider, redis_port: int,
                  upstream_port: int) -> Target:
    env = {
        "PORT": str(port), "ISSUER": provider.issuer, "CLIENT_ID": client.client_id,
        "CLIENT_SECRET": client.secret, "UPSTREAM": f"http://127.0.0.1:{upstream_port}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "SECRET": secrets.token_hex(32),
        "NODE_ENV": "production",
    }
    p = procs.start("express", ["node", str(ROOT / "bench/node/server.mjs")], env=env, cwd=ROOT / "bench/node")
    p.wait_port(port)
    return Target("express-openid-connect (Node)", f"http://127.0.0.1:{port}/api/orders", procs=[p])


def login_express(target: Target) -> None:
    b = Browser()
    origin = target.url.split("/api/")[0]
    first = b.get(f"{origin}/login")
    if first.status != 302:
        raise Failure(f"express: GET /login answered {first.status}: {first.text[:300]}")
    back = b.provider_login(first.location, "bench-express")
    done = b.get(back)
    if done.status != 302:
        raise Failure(f"express: /callback answered {done.status}: {done.text[:300]}")
    cookie = b.cookie(origin, "appSession")
    if not cookie:
        raise Failure("express: no appSession cookie after the login")
    target.headers = {"Cookie": f"appSession={cookie}"}


# ---- spa-bff --------------------------------------------------------------------------------

SPA_BFF_COOKIE = "spa-bff"  # session.cookie_name without the __Host- prefix (insecure_cookies)


@dataclass
class SpaBff:
    """One spa-bff instance (of a pair, when `public_url` is the other's)."""

    port: int
    public_url: str
    proc: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def spa_bff_client(name: str = "bench-spa-bff") -> tuple[Client, int]:
    """A client as a deployment registers it: with back-channel logout and `sid`, so each
    session also has its `sid` index entry in Redis."""
    port = free_port()
    return Client(name, f"http://127.0.0.1:{port}/callback", backchannel_logout=True), port


def start_spa_bff(procs: Procs, dir: Path, name: str, *, binary: Path, port: int, public_port: int,
                  client: Client, provider: Provider, redis_port: int, upstream_port: int, workers: int,
                  key_prefix: str, cookie_key: str, rust_log: str, launcher: list[str] | None = None,
                  proxy_toml: str = "") -> SpaBff:
    """spa-bff (release build) with one [[routes]] `/api` to the upstream; `proxy_toml`: more
    `[proxy]` keys."""
    dir.mkdir(parents=True, exist_ok=True)
    conf = dir / f"{name}.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{public_port}"
workers = {workers}
# Every scripted login comes from 127.0.0.1: the per-IP login rate limit would refuse them.
login_rate_limit = 0

[oidc]
issuer = "{provider.issuer}"
client_id = "{client.client_id}"
client_secret = "{client.secret}"

[session]
redis_url = "redis://127.0.0.1:{redis_port}"
key_prefix = "{key_prefix}"
cookie_keys = ["{cookie_key}"]
insecure_cookies = true
idle_timeout = "1h"

[proxy]
{proxy_toml}

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:{upstream_port}"
""")
    p = procs.start(name, [*(launcher or []), str(binary), "--config", str(conf)], env={"RUST_LOG": rust_log})
    p.wait_port(port)
    app = SpaBff(port, f"http://127.0.0.1:{public_port}", p)
    deadline = time.monotonic() + 30
    while Browser().get(f"{app.url}/readyz").status != 200:
        if time.monotonic() > deadline or not p.alive():
            raise Failure(f"{name}: /readyz not 200 within 30 s; {p.log}:\n{p.log_tail()}")
        time.sleep(0.1)
    return app


def new_cookie_key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


@dataclass
class SpaBffLogin:
    cookie: str  # "spa-bff=<value>"
    login_seconds: float  # GET /login
    callback_seconds: float  # GET /callback, seen by the browser
    provider_seconds: float  # of which the provider spent answering spa-bff (token, userinfo, ...)
    done_at: float  # time.monotonic() when the callback answered


def login_spa_bff(app: SpaBff, provider: Provider, user: str, *, timed: bool = False) -> SpaBffLogin:
    """/login -> the provider's forms -> /callback. With `timed`, the provider's counters are
    reset just before /callback and read just after, so the provider's own time inside the
    callback (token endpoint, userinfo, anything else spa-bff asked it) is known."""
    b = Browser()
    start = b.get(f"{app.url}/login?returnTo=/")
    if start.status != 302:
        raise Failure(f"spa-bff: GET /login answered {start.status}: {start.text[:300]}")
    back = b.provider_login(start.location, user).replace(app.public_url, app.url, 1)
    if timed:
        provider.reset_stats()
    done = b.get(back)
    done_at = time.monotonic()
    provider_ms = sum(provider.stats()["durations_ms"].values()) if timed else 0.0
    if done.status != 302:
        raise Failure(f"spa-bff: /callback answered {done.status}: {done.text[:300]}")
    cookie = b.cookie(app.url, SPA_BFF_COOKIE)
    if not cookie:
        raise Failure("spa-bff: no session cookie after the login")
    return SpaBffLogin(f"{SPA_BFF_COOKIE}={cookie}", start.seconds, done.seconds, provider_ms / 1000, done_at)


def spa_bff_target(app: SpaBff, name: str, login: SpaBffLogin, proc_list: list) -> Target:
    return Target(name, f"{app.url}/api/orders", {"Cookie": login.cookie, "X-CSRF": "1"}, proc_list)


def check_target(target: Target, expect_bearer: bool) -> None:
    """One request as the load generators will send it: 200 with the 1 KB body; for an
    authenticating proxy, the upstream saw `Authorization: Bearer <token>`."""
    resp = Browser().get(target.url, {**target.headers, "Accept": "application/json"})
    if resp.status != 200 or len(resp.body) != 1024:
        raise Failure(f"{target.name}: GET {target.url} answered {resp.status} with {len(resp.body)} bytes "
                      f"(expected 200 with the 1 KB body): {resp.text[:300]}")
    if expect_bearer:
        echo = Browser().get(target.url.replace("/orders", "/echo-auth"),
                             {**target.headers, "Accept": "application/json"})
        token = echo.text.removeprefix("Bearer ")
        if echo.status != 200 or not echo.text.startswith("Bearer ") or len(token) < 16:
            raise Failure(f"{target.name}: the upstream did not see a Bearer token ({echo.status}: {echo.text[:100]})")
        target.bearer_checked = f"Bearer ({len(token)} chars), checked"
