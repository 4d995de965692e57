"""The measurements other than req/s and latency at a rate: spa-bff's memory with many open
connections, Redis bytes per session, the refresh storm over two instances, the cost of a
login inside spa-bff, and the two-instance refresh workload."""

from __future__ import annotations

import asyncio
import collections
import random
import statistics
import subprocess
import time
from dataclasses import dataclass, field

from .procs import Failure
from .web import Conn


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round((len(sorted_values) - 1) * p))]


# ---- open connections ------------------------------------------------------------------------


async def _open_and_hold(port: int, path: str, headers: dict, n: int) -> list[Conn]:
    raw = Conn.encode("GET", path, port, headers)
    gate = asyncio.Semaphore(100)

    async def one() -> Conn:
        async with gate:
            conn = await Conn.open(port)
            status, _ = await conn.fetch(raw)
            if status != 200:
                raise Failure(f"a held connection's request answered {status}")
            return conn

    return await asyncio.gather(*(one() for _ in range(n)))


def rss_with_open_connections(port: int, path: str, headers: dict, n: int, rss) -> int:
    """Opens `n` keep-alive connections, each after one authenticated request, holds them,
    and returns `rss()` (KiB) while they are open."""

    async def run() -> int:
        conns = await _open_and_hold(port, path, headers, n)
        await asyncio.sleep(1.0)
        value = rss()
        for c in conns:
            c.close()
        return value

    return asyncio.run(run())


# ---- Redis ------------------------------------------------------------------------------------


def redis_cli(port: int, *args: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise Failure(f"redis-cli {' '.join(args)}: {out.stderr}")
    return out.stdout.strip()


def redis_keys(port: int, prefix: str) -> set[str]:
    return set(redis_cli(port, "--scan", "--pattern", f"{prefix}*").split())


@dataclass
class SessionBytes:
    sessions: int
    per_session: float  # MEMORY USAGE of every key the logins added, divided by the sessions
    by_kind: dict  # kind of key (the word after the prefix) -> bytes per session
    tokens: dict  # access/refresh/id token lengths
    record_bytes: float  # the encrypted record (the hash field `data`), per session

    @property
    def beyond_tokens(self) -> float:
        return self.per_session - sum(self.tokens.values())


def session_bytes(port: int, prefix: str, before: set[str], sessions: int, tokens: dict) -> SessionBytes:
    new = sorted(redis_keys(port, prefix) - before)
    by_kind: dict = collections.Counter()
    record = 0
    for key in new:
        kind = key[len(prefix):].split(":", 1)[0].split("{", 1)[0]
        by_kind[kind] += int(redis_cli(port, "MEMORY", "USAGE", key, "SAMPLES", "0") or 0)
        if redis_cli(port, "TYPE", key) == "hash":
            record += int(redis_cli(port, "HSTRLEN", key, "data") or 0)
    total = sum(by_kind.values())
    return SessionBytes(sessions, total / sessions, {k: v / sessions for k, v in sorted(by_kind.items())},
                        tokens, record / sessions)


# ---- the refresh storm ------------------------------------------------------------------------


@dataclass
class Storm:
    requests: int
    statuses: dict
    token_calls: int  # refresh_token grants the provider answered during the storm
    seconds: float  # from release to the last answer


def storm(ports: list[int], path: str, headers: dict, n: int) -> tuple[dict, float]:
    """Opens `n` connections spread over `ports`, then writes one request on each at once."""

    async def run():
        conns = await asyncio.gather(*(Conn.open(ports[i % len(ports)]) for i in range(n)))
        raws = [Conn.encode("GET", path, ports[i % len(ports)], headers) for i in range(n)]
        started = time.perf_counter()
        for conn, raw in zip(conns, raws):
            conn.send(raw)

        async def answer(conn: Conn) -> int:
            await conn.writer.drain()
            status, _ = await conn.response()
            conn.close()
            return status

        statuses = await asyncio.gather(*(answer(c) for c in conns), return_exceptions=True)
        return statuses, time.perf_counter() - started

    statuses, seconds = asyncio.run(run())
    counts = collections.Counter(s if isinstance(s, int) else type(s).__name__ for s in statuses)
    return dict(counts), seconds


# ---- the two-instance refresh workload --------------------------------------------------------


@dataclass
class Workload:
    seconds: float
    requests: int
    statuses: dict
    p50_ms: float
    p99_ms: float
    p999_ms: float
    refreshes: int = 0
    refresh_errors: int = 0
    latencies: list = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, seconds: float, latencies: list[float], statuses: dict) -> "Workload":
        ordered = sorted(latencies)
        return cls(seconds, len(ordered), dict(statuses), percentile(ordered, 0.5) * 1000,
                   percentile(ordered, 0.99) * 1000, percentile(ordered, 0.999) * 1000, latencies=ordered)

    def merge(self, other: "Workload") -> "Workload":
        statuses = collections.Counter(self.statuses)
        statuses.update(other.statuses)
        return Workload.of(self.seconds + other.seconds, self.latencies + other.latencies, statuses)


def workload(ports: list[int], path: str, cookies: list[str], ticks_per_second: float, seconds: float) -> Workload:
    """Open loop: every session sends, `ticks_per_second` times a second, one request to EACH
    instance at the same moment (so when its token comes due both instances race to refresh).
    Latency counts from the moment a request was due (no coordinated omission); connections
    come from a per-session, per-instance pool and are opened when all are busy."""

    async def run() -> Workload:
        pools: dict = collections.defaultdict(list)
        latencies: list[float] = []
        statuses: collections.Counter = collections.Counter()
        pending: set = set()
        raws = {(s, p): Conn.encode("GET", path, p, {"Cookie": c, "X-CSRF": "1"})
                for s, c in enumerate(cookies) for p in ports}

        async def one(session: int, port: int, due: float) -> None:
            pool = pools[(session, port)]
            reused = bool(pool)
            conn = pool.pop() if reused else await Conn.open(port)
            try:
                status, _ = await conn.fetch(raws[(session, port)])
            except (OSError, asyncio.IncompleteReadError) as e:
                conn.close()
                if not reused:
                    statuses[type(e).__name__] += 1
                    return
                # The server closed this idle keep-alive connection (its keep-alive timeout)
                # as we reused it: retry once on a new one, as browsers do. The latency keeps
                # counting from `due`.
                conn = await Conn.open(port)
                try:
                    status, _ = await conn.fetch(raws[(session, port)])
                except (OSError, asyncio.IncompleteReadError) as e:
                    statuses[type(e).__name__] += 1
                    conn.close()
                    return
            latencies.append(time.perf_counter() - due)
            statuses[status] += 1
            pool.append(conn)

        async def session_loop(session: int, start: float) -> None:
            interval = 1.0 / ticks_per_second
            due = start + random.random() * interval  # sessions spread over the interval
            while due < start + seconds:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                for port in ports:
                    task = asyncio.create_task(one(session, port, due))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                due += interval

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(session_loop(s, start) for s in range(len(cookies))))
        if pending:
            await asyncio.wait(pending, timeout=30)
        for pool in pools.values():
            for conn in pool:
                conn.close()
        return Workload.of(seconds, latencies, statuses)

    return asyncio.run(run())
