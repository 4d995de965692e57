"""Installs what a run needs when it is missing, from Debian's packages, npm and crates.io
only, so that a new Debian machine with Rust and Node.js reproduces the table: redis-server,
nginx, apache2 + libapache2-mod-auth-openidc and wrk (apt), the test provider's and the
express peer's npm packages (npm ci against their lock files), oha (cargo install, into
target/bench-tools), and spa-bff's release build."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .peers import ROOT

APT = {  # command -> Debian package
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "nginx": "nginx",
    "apache2": "apache2",
    "wrk": "wrk",
    "taskset": "util-linux",
}
OHA_VERSION = "1.16.0"


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def _run(argv: list[str], **kw) -> None:
    subprocess.run(argv, check=True, **kw)


def apt_packages() -> None:
    missing = sorted({pkg for cmd, pkg in APT.items() if not shutil.which(cmd, path=os.environ["PATH"] + ":/usr/sbin")})
    if not Path("/usr/lib/apache2/modules/mod_auth_openidc.so").exists():
        missing.append("libapache2-mod-auth-openidc")
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    say(f"installing {' '.join(missing)} with apt-get")
    # Debian starts a package's service on install (nginx and Apache on port 80) unless
    # policy-rc.d says no: the benchmark starts its own instances on free ports and wants no
    # system web server competing for the CPU. Our policy-rc.d lives only during the install.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        _run([*sudo, "sh", "-c", f"printf '#!/bin/sh\\nexit 101\\n' > {policy} && chmod +x {policy}"])
    try:
        _run([*sudo, "apt-get", "update", "-qq"])
        _run([*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
              "--no-install-recommends", *missing], stdout=subprocess.DEVNULL)
    finally:
        if ours:
            _run([*sudo, "rm", "-f", str(policy)])


def npm_ci(dir: Path) -> None:
    """`npm ci` when node_modules is missing or older than the lock file (stamp as in
    scripts/install-deps)."""
    stamp = dir / "node_modules/.spa-bff-npm-ci"
    lock = dir / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    say(f"npm ci --prefix {dir.relative_to(ROOT)}")
    _run(["npm", "ci", "--prefix", str(dir), "--no-audit", "--no-fund", "--loglevel=error"], stdout=subprocess.DEVNULL)
    stamp.touch()


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve()


def oha() -> str:
    """oha from crates.io (pinned version) in target/bench-tools; about 5 minutes the first time."""
    found = shutil.which("oha")
    if found:
        return found
    root = target_dir() / "bench-tools"
    binary = root / "bin/oha"
    if not binary.exists():
        say(f"cargo install oha {OHA_VERSION} into {root} (once; about 5 minutes)")
        _run(["cargo", "install", "oha", "--version", OHA_VERSION, "--locked", "--root", str(root)])
    return str(binary)


def spa_bff() -> Path:
    say("cargo build --release --locked --bin spa-bff")
    _run(["cargo", "build", "--release", "--locked", "--bin", "spa-bff"], cwd=ROOT)
    return target_dir() / "release/spa-bff"


def everything(skip_build: bool) -> tuple[Path, str]:
    for tool in ("cargo", "node", "npm"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: '{tool}' is not installed; install Rust (rustup) and Node.js 20+ first")
    apt_packages()
    npm_ci(ROOT / "tests/op")
    npm_ci(ROOT / "bench/node")
    oha_bin = oha()
    binary = target_dir() / "release/spa-bff" if skip_build else spa_bff()
    if not binary.exists():
        raise SystemExit(f"bench: {binary} is missing (run without --skip-build)")
    return binary, oha_bin
