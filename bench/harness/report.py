"""Turns a run's figures into the Markdown tables of BENCHMARKS.md and README.md, evaluates
the issue's targets (met or not), writes bench/results/, and with --update-docs replaces the
marked blocks of both documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .peers import ROOT


def _f(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def verdict(ok: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[ok]


def main_table(r: dict) -> str:
    rate = r["fixed_rate"]
    lines = [
        f"| target | req/s, 64 conns (rounds' range) | x nginx | p50 at {rate:,.0f} req/s | p99 at {rate:,.0f} req/s | RSS after load "
        "| token to upstream |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in r["targets"]:
        fixed = t["fixed"]
        note = "" if fixed["held"] else f" (over capacity: {fixed['achieved']:,.0f} req/s served)"
        if fixed.get("errors"):
            note += f" ({fixed['errors']} errors)"
        rounds = [x["rps"] for x in t["rounds"]["wrk"]]
        spread = f" ({_f(min(rounds))}-{_f(max(rounds))})" if len(rounds) > 1 else ""
        lines.append(
            f"| {t['name']} | {_f(t['rps'])}{spread} | {t['ratio_to_nginx']:.2f} | {_f(fixed['p50_ms'], 2)} ms{note} "
            f"| {_f(fixed['p99_ms'], 2)} ms | {r['peers_rss_mib'].get(t['name'], float('nan')):.0f} MiB | {t['bearer']} |")
    return "\n".join(lines)


def targets_table(r: dict) -> str:
    s = r["spa_bff"]
    rows = []
    ratio = s["ratio_to_nginx"]
    rows.append(("Authenticated `GET /api` (1 KB), 64 connections: >= 0.9 x nginx plain proxy",
                 f"{ratio:.2f} x nginx ({_f(s['rps'])} vs {_f(r['nginx_rps'])} req/s)", ratio >= 0.9))
    added = s["p99_added_ms"]
    rows.append((f"p99 at half of spa-bff's peak ({r['fixed_rate']:,.0f} req/s) no more than 1 ms above the upstream",
                 f"{added:+.2f} ms ({s['p99_ms']:.2f} vs {r['upstream_p99_ms']:.2f} ms)", added <= 1.0))
    rows.append(("RSS idle <= 30 MB", f"{s['rss_idle_mib']:.1f} MiB", s["rss_idle_mib"] <= 30))
    rows.append(("RSS with 1,000 open keep-alive connections <= 80 MB",
                 f"{s['rss_1000_mib']:.1f} MiB", s["rss_1000_mib"] <= 80))
    rb = s["redis"]
    rows.append(("Redis <= 4 KB per session beyond the tokens",
                 f"{_f(rb['beyond_tokens'])} B beyond the tokens ({_f(rb['per_session'])} B in all, tokens "
                 f"{sum(rb['tokens'].values()):,} B)", rb["beyond_tokens"] <= 4096))
    storms = s["storms"]
    ok = all(st["token_calls"] == 1 and st["statuses"].get("200", 0) == st["requests"] for st in storms)
    rows.append(("Refresh storm: 500 concurrent requests of one session at expiry over 2 instances: "
                 "exactly 1 token call, 500 x 2xx",
                 "; ".join(f"{st['token_calls']} call, {_statuses(st['statuses'])} in {st['seconds'] * 1000:.0f} ms"
                           for st in storms), ok))
    lines = ["| target (issue 9) | measured | |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {verdict(c)} |" for a, b, c in rows]
    return "\n".join(lines)


def _statuses(statuses: dict) -> str:
    return ", ".join(f"{n} x {k}" for k, n in sorted(statuses.items()))


def details(r: dict) -> str:
    s = r["spa_bff"]
    rb = s["redis"]
    login = s["login"]
    kinds = ", ".join(f"`{k}` {_f(v)} B" for k, v in rb["by_kind"].items())
    tok = rb["tokens"]
    return "\n".join([
        f"- **spa-bff memory**: {s['rss_idle_mib']:.1f} MiB RSS idle (started, logged in, no load); "
        f"{s['rss_1000_mib']:.1f} MiB with 1,000 open keep-alive connections (each after one "
        f"authenticated `GET /api`); {s['rss_after_mib']:.1f} MiB after all the load rounds.",
        f"- **Redis per session** ({rb['sessions']} logins of distinct users): {_f(rb['per_session'])} B "
        f"(`MEMORY USAGE` of every key the logins added: {kinds}); the tokens' own share: access "
        f"{tok['access_token']} + refresh {tok['refresh_token']} + ID {tok['id_token']} = "
        f"{sum(tok.values()):,} B; the encrypted record (`data`) is {_f(rb['record_bytes'])} B; so "
        f"{_f(rb['beyond_tokens'])} B beyond the tokens.",
        f"- **Login cost inside spa-bff** (median of {login['n']} logins): `/callback` took "
        f"{login['callback_ms']:.2f} ms at the browser, of which the provider spent {login['provider_ms']:.2f} ms "
        f"answering spa-bff (token endpoint, userinfo; its own clock): **{login['inside_ms']:.2f} ms inside "
        f"spa-bff** (median of the per-login differences). `GET /login` (authorize URL, login state in Redis): "
        f"{login['start_ms']:.2f} ms.",
        "- **Refresh storm** (" + str(len(s["storms"])) + " rounds; each a fresh session whose access token is "
        "due, 500 requests released at once, 250 to each of 2 instances sharing Redis): " +
        "; ".join(f"round {i + 1}: {st['token_calls']} token-endpoint call, {_statuses(st['statuses'])}, "
                  f"last answer after {st['seconds'] * 1000:.0f} ms" for i, st in enumerate(s["storms"])) + ".",
    ])


def machine_lines(r: dict) -> str:
    m = r["machine"]
    return "\n".join([
        f"- {m['cpu']} x {m['cores']} cores, {m['memory_gib']:.0f} GiB, Linux {m['kernel']}; "
        f"load average {m['load_before']} before the run, {m['load_after']} after.",
        f"- Placement: {r['placement']}",
        f"- {r['rounds']} rounds x {r['seconds']} s per target and measurement, rounds interleaved across "
        f"targets, medians reported; fixed rate {r['fixed_rate']:,.0f} req/s = half of spa-bff's median peak.",
        f"- Versions: {r['versions']}",
        f"- Run at {r['started']} (spa-bff {r['commit']}). RSS after load: the target's processes together "
        "(nginx's master and worker, Apache's parent and children, node, spa-bff), after every load round.",
    ])


def workload_table(w: dict) -> str:
    base, ref = w["baseline"], w["refreshing"]
    lines = ["| run | requests | p50 | p99 | p99.9 | token refreshes | refresh errors | answers |",
             "|---|---|---|---|---|---|---|---|"]
    for name, x in (("access tokens never due (baseline)", base), ("access tokens due every "
                                                                   f"{w['due_every_s']} s", ref)):
        lines.append(f"| {name} | {x['requests']:,} | {x['p50_ms']:.2f} ms | {x['p99_ms']:.2f} ms | "
                     f"{x['p999_ms']:.2f} ms | {x['refreshes']} | {x['refresh_errors']} | {_statuses(x['statuses'])} |")
    if ref.get("provider_token_requests"):
        lines += ["", f"The provider answered {ref['provider_token_requests']} token requests during the refreshing "
                      f"run, spending {ref['provider_ms_per_token_request']:.2f} ms on each on average (its own "
                      "clock). spa-bff refreshed them ahead (`proxy.min_token_lifetime`, "
                      f"{w.get('min_token_lifetime_s', 10)} s): a token inside the skew "
                      "is forwarded while one background refresh replaces it, so no request waited for the provider's answer."]
    added = ref["p99_ms"] - base["p99_ms"]
    lost = ref["refresh_errors"] + sum(n for k, n in ref["statuses"].items() if k != "200")
    lines += ["", "| target (issue 9) | measured | |", "|---|---|---|",
              f"| p99 of `/api` with refreshes within 5 ms of the p99 without | {added:+.2f} ms | {verdict(added <= 5)} |",
              f"| refreshes lost (refresh errors + non-2xx answers) = 0 | {lost} | {verdict(lost == 0)} |"]
    return "\n".join(lines)


def workload_setup(w: dict) -> str:
    return (f"{w['sessions']} sessions, {w['seconds']} s per run, two spa-bff instances sharing Redis; every "
            f"session sends {w['ticks_per_second']} times a second one request to each instance at the same "
            f"moment (open loop, latency from the moment a request was due); access tokens live "
            f"{w['token_ttl_s']} s and spa-bff refreshes {w['refresh_skew_s']} s before expiry, in the background while "
            f"the token has more than {w.get('min_token_lifetime_s', 10)} s left (the defaults). The two runs alternate "
            f"in {w.get('segments', 1)} segments each. "
            f"{w['started']}, spa-bff {w['commit']}, load average {w['load_before']} before, {w['load_after']} after.")


def markdown(r: dict) -> str:
    return "\n\n".join([main_table(r), targets_table(r), details(r), machine_lines(r)]) + "\n"


def write(results_dir: Path, name: str, data: dict, md: str) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (results_dir / f"{name}.md").write_text(md)


def replace_block(path: Path, block: str, text: str) -> None:
    """Replaces what lies between `<!-- bench:<block>:start -->` and `<!-- bench:<block>:end -->`."""
    doc = path.read_text()
    pattern = re.compile(rf"(<!-- bench:{block}:start -->\n).*?(<!-- bench:{block}:end -->)", re.S)
    if not pattern.search(doc):
        raise SystemExit(f"bench: {path.name} has no bench:{block} block")
    path.write_text(pattern.sub(lambda m: m.group(1) + text.rstrip("\n") + "\n" + m.group(2), doc))


def update_docs_main(r: dict) -> None:
    replace_block(ROOT / "BENCHMARKS.md", "results", markdown(r))
    replace_block(ROOT / "README.md", "headline", main_table(r) + "\n\n" + targets_table(r))


def update_docs_workload(w: dict) -> None:
    replace_block(ROOT / "BENCHMARKS.md", "workload", workload_setup(w) + "\n\n" + workload_table(w))
