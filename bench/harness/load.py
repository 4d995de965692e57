"""The load generators. wrk (Debian) measures the most requests per second a target serves
over 64 keep-alive connections: a closed loop, each connection sends its next request when the
previous answer arrives. oha (crates.io) holds a FIXED rate with --latency-correction: each
request's latency counts from the moment it was due, not from when a busy connection got round
to sending it, so a stall is not hidden by the requests that were never sent during it
(coordinated omission). Both reject a run with errors, non-2xx answers or short bodies."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

from .procs import Failure
from .peers import Target


@dataclass
class Throughput:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float


@dataclass
class FixedRate:
    rate: float  # asked for
    achieved: float  # served (requests answered / duration)
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def held(self) -> bool:
        """Whether the target kept up with the rate (within 5 %)."""
        return self.achieved >= 0.95 * self.rate and self.errors == 0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise Failure(f"wrk: cannot read the duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _pin(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def _header_args(target: Target) -> list[str]:
    return [arg for k, v in target.headers.items() for arg in ("-H", f"{k}: {v}")]


def wrk(wrk_bin: str, target: Target, *, seconds: int, connections: int, threads: int,
        cpus: str | None) -> Throughput:
    argv = [*_pin(cpus), wrk_bin, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
            *_header_args(target), target.url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise Failure(f"wrk against {target.name} failed:\n{text}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if bad or (errors and any(int(n) for n in errors.groups())):
        raise Failure(f"wrk against {target.name}: errors or non-2xx answers:\n{text}")
    done = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+)(B|KB|MB|GB) read", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not done or not rps:
        raise Failure(f"wrk against {target.name}: cannot read its report:\n{text}")
    requests = int(done.group(1))
    per_response = float(done.group(3)) * _BYTES[done.group(4)] / max(requests, 1)
    if per_response < 1024:  # a redirect to a login page is fast and small: refuse it
        raise Failure(f"wrk against {target.name}: {per_response:.0f} bytes per response, less than the 1 KB body:\n{text}")
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", text, re.M))
    return Throughput(float(rps.group(1)), requests, _ms(pct["50"]), _ms(pct["99"]))


def oha(oha_bin: str, target: Target, *, rate: float, seconds: int, connections: int,
        cpus: str | None) -> FixedRate:
    argv = [*_pin(cpus), oha_bin, "--no-tui", "--output-format", "json", "--latency-correction",
            "-q", f"{rate:.0f}", "-z", f"{seconds}s", "-c", str(connections), *_header_args(target), target.url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise Failure(f"oha against {target.name} failed:\n{out.stdout}\n{out.stderr}")
    report = json.loads(out.stdout)
    codes = {int(k): v for k, v in report.get("statusCodeDistribution", {}).items()}
    errors = sum(report.get("errorDistribution", {}).values())
    # oha counts requests cut off when the time is up as errors ("aborted due to deadline")
    errors -= sum(v for k, v in report.get("errorDistribution", {}).items() if "deadline" in k)
    not_2xx = sum(v for k, v in codes.items() if not 200 <= k < 300)
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    pct = report["latencyPercentiles"]
    return FixedRate(rate, ok / seconds, pct["p50"] * 1000, pct["p99"] * 1000, errors + not_2xx)
