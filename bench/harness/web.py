"""HTTP for the benchmark: `Browser`, a scripted user agent (cookie jar, no automatic
redirects) that logs in through node-oidc-provider's development login and consent forms the
way tests/it/support/browser.rs does, and `Conn`, a minimal asyncio HTTP/1.1 keep-alive
client for the measurements wrk and oha cannot make (many connections held open, 500
requests released at once, an open-loop load with one cookie per session)."""

from __future__ import annotations

import asyncio
import email.utils
import html
import http.client
import time
import urllib.parse
from dataclasses import dataclass, field


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float = 0.0

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def location(self) -> str | None:
        return self.header("location")

    @property
    def is_redirect(self) -> bool:
        return 300 <= self.status < 400

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class _Cookie:
    name: str
    value: str
    path: str
    expires: float | None


def _path_matches(cookie_path: str, path: str) -> bool:
    return path == cookie_path or (path.startswith(cookie_path) and (
        cookie_path.endswith("/") or path[len(cookie_path):].startswith("/")))


def _default_path(path: str) -> str:
    i = path.rfind("/")
    return "/" if i <= 0 else path[:i]


@dataclass
class Browser:
    """Cookies per host:port with Path and expiry (Domain and Secure ignored: all loopback)."""

    user_agent: str = "spa-bff-bench"
    jar: dict[str, list[_Cookie]] = field(default_factory=dict)

    def request(self, method: str, url: str, headers: dict | None = None, body: bytes = b"") -> Resp:
        u = urllib.parse.urlsplit(url)
        key = u.netloc
        path = u.path or "/"
        target = path + (f"?{u.query}" if u.query else "")
        hdrs = {"User-Agent": self.user_agent, "Accept": "text/html,application/xhtml+xml"}
        hdrs.update(headers or {})
        cookie = self.cookie_header(key, path)
        if cookie and "Cookie" not in hdrs:
            hdrs["Cookie"] = cookie
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        started = time.perf_counter()
        try:
            conn.request(method, target, body=body or None, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        resp = Resp(r.status, r.getheaders(), data, time.perf_counter() - started)
        self.store(key, path, [v for k, v in resp.headers if k.lower() == "set-cookie"])
        return resp

    def get(self, url: str, headers: dict | None = None) -> Resp:
        return self.request("GET", url, headers)

    def post_form(self, url: str, form: dict) -> Resp:
        return self.request("POST", url, {"Content-Type": "application/x-www-form-urlencoded"},
                            urllib.parse.urlencode(form).encode())

    def cookie(self, origin: str, name: str) -> str | None:
        now = time.time()
        key = urllib.parse.urlsplit(origin).netloc
        return next((c.value for c in self.jar.get(key, [])
                     if c.name == name and (c.expires is None or c.expires > now)), None)

    def cookie_header(self, key: str, path: str) -> str | None:
        now = time.time()
        cookies = [c for c in self.jar.get(key, [])
                   if (c.expires is None or c.expires > now) and _path_matches(c.path, path)]
        cookies.sort(key=lambda c: -len(c.path))
        return "; ".join(f"{c.name}={c.value}" for c in cookies) or None

    def store(self, key: str, request_path: str, lines: list[str]) -> None:
        now = time.time()
        for line in lines:
            parts = [p.strip() for p in line.split(";")]
            if "=" not in parts[0]:
                continue
            name, value = parts[0].split("=", 1)
            attrs = {}
            for p in parts[1:]:
                k, _, v = p.partition("=")
                attrs[k.strip().lower()] = v.strip()
            path = attrs.get("path") if attrs.get("path", "").startswith("/") else _default_path(request_path)
            expires = None
            if "max-age" in attrs:
                expires = now + int(attrs["max-age"]) if int(attrs["max-age"]) > 0 else 0.0
            elif "expires" in attrs:
                try:
                    expires = email.utils.parsedate_to_datetime(attrs["expires"]).timestamp()
                except (TypeError, ValueError):
                    pass
            jar = self.jar.setdefault(key, [])
            jar[:] = [c for c in jar if not (c.name == name and c.path == path)]
            if expires is None or expires > now:
                jar.append(_Cookie(name, value, path, expires))

    def provider_login(self, authorize_url: str, user: str) -> str:
        """Drives node-oidc-provider's devInteractions (login, then consent) from the
        authorization URL as `user` (any password). Returns the URL the provider finally
        redirects to outside itself (the client's redirect URI with code, state and iss),
        without requesting it."""
        op = urllib.parse.urlsplit(authorize_url).netloc
        url = authorize_url
        for _ in range(20):
            resp = self.get(url)
            if resp.status != 200 or "<form" not in resp.text:
                if not resp.is_redirect:
                    raise RuntimeError(f"unexpected provider answer at {url} ({resp.status}): {resp.text[:500]}")
                url = urllib.parse.urljoin(url, resp.location)
                if urllib.parse.urlsplit(url).netloc != op:
                    return url
                continue
            page = resp.text
            action = urllib.parse.urljoin(url, _form_action(page))
            prompt = _hidden_input(page, "prompt")
            if prompt == "login":
                submitted = self.post_form(action, {"prompt": "login", "login": user, "password": "x"})
            elif prompt == "consent":
                submitted = self.post_form(action, {"prompt": "consent"})
            else:
                raise RuntimeError(f"unknown interaction prompt {prompt!r} at {url}")
            if not submitted.is_redirect:
                raise RuntimeError(f"interaction at {action} answered {submitted.status}: {submitted.text[:500]}")
            url = urllib.parse.urljoin(action, submitted.location)
            if urllib.parse.urlsplit(url).netloc != op:
                return url
        raise RuntimeError(f"no redirect out of the provider after 20 steps, last at {url}")


def _form_action(page: str) -> str:
    form = page[page.index("<form"):]
    start = form.index('action="') + len('action="')
    return html.unescape(form[start:form.index('"', start)])


def _hidden_input(page: str, name: str) -> str | None:
    at = page.find(f'name="{name}"')
    if at < 0:
        return None
    tag = page[page.rfind("<", 0, at):page.index(">", at)]
    start = tag.find('value="')
    if start < 0:
        return None
    start += len('value="')
    return html.unescape(tag[start:tag.index('"', start)])


# ---- asyncio keep-alive client ------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:<port>."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Conn":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @staticmethod
    def encode(method: str, path: str, port: int, headers: dict) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def send(self, raw: bytes) -> None:
        self.writer.write(raw)

    async def response(self) -> tuple[int, int]:
        """Reads one response; returns (status, body bytes)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            n = int(headers["content-length"])
            await self.reader.readexactly(n)
            return status, n
        if headers.get("transfer-encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                total += size
                if size == 0:
                    return status, total
        if status in (204, 304) or 100 <= status < 200:
            return status, 0
        body = await self.reader.read()
        return status, len(body)

    async def fetch(self, raw: bytes) -> tuple[int, int]:
        self.send(raw)
        await self.writer.drain()
        return await self.response()

    def close(self) -> None:
        self.writer.close()
