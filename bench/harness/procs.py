"""Child processes of the benchmark: started on loopback, on free ports, each in its own
process group (so a master and its workers stop together), optionally pinned to a core with
taskset, with their output in the run's log directory. Everything started is stopped when the
run ends, also on Ctrl-C or an error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


class Failure(Exception):
    """A setup step failed; the message says which and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and not handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in free_port.given:
            free_port.given.add(port)
            return port


free_port.given = set()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Proc:
    """One started command (and its process group)."""

    def __init__(self, name: str, popen: subprocess.Popen, log: Path):
        self.name, self.popen, self.log = name, popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(port):
            if not self.alive():
                raise Failure(f"{self.name} exited ({self.popen.returncode}); {self.log}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise Failure(f"{self.name} did not listen on port {port} within {timeout:.0f} s; {self.log}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL after 5 s."""
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait()


class Procs:
    """Starts commands and stops all of them at the end (a context manager)."""

    def __init__(self, logs: Path, cpus: str | None):
        self.logs, self.cpus, self.started = logs, cpus, []

    def start(self, name: str, argv: list[str], *, env: dict | None = None, cwd: Path | None = None,
              cpus: str | None = "default") -> Proc:
        """Starts `argv` (pinned to `cpus`, default: the server cores) with stdout+stderr to
        `<logs>/<name>.log`."""
        cpus = self.cpus if cpus == "default" else cpus
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        log = self.logs / f"{name}.log"
        out = open(log, "wb")
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin",
                                      **(env or {})}, cwd=cwd, start_new_session=True)
        out.close()
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def __enter__(self) -> "Procs":
        # The processes run in sessions of their own (so that a stop reaches their
        # children): a SIGTERM to this script must stop them too, as Ctrl-C does, rather
        # than leave them running.
        self.previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *_exc) -> None:
        for proc in reversed(self.started):
            proc.stop()
        signal.signal(signal.SIGTERM, self.previous_sigterm)


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def rss_kib(pid: int) -> int:
    """VmRSS of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise Failure(f"no VmRSS for pid {pid}")


def children_rss_kib(pid: int) -> int:
    """VmRSS of a process and all its descendants, KiB (a process group's memory)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            total += rss_kib(p)
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, Failure):
            pass
    return total
