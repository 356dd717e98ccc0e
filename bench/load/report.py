#!/usr/bin/env python3
"""Turns bench/load/run's results.jsonl into the markdown tables of BENCHMARKS.md.

Every figure is the median over the measured runs of a scenario; the spread
(min-max throughput) is printed beside it so the noise is visible. Ratios are
taken against the floor scenario (a bare endpoint behind the same layers), against
bare axum (the framework's hello-world, no layers), and against the Redis PING
floor measured in the same run.
"""

import json
import statistics
import sys


def load(path):
    runs, extras = [], {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if "metric" in row:
                extras[row["metric"]] = (row["value"], row["unit"])
            else:
                row["rps"] = row["requests"] * 1e6 / row["duration_us"]
                runs.append(row)
    return runs, extras


def group(runs, scenario, mode):
    return [r for r in runs if r["scenario"] == scenario and r["mode"] == mode]


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def ms(us):
    return f"{us / 1000:.2f}"


# A run in which the hypervisor took more than this share of the VM's CPU time
# measured a busy host, not the gateway: the report says so.
STEAL_LIMIT = 5.0


def steal(rows):
    """The worst CPU steal among `rows` ('-' for runs recorded before it was)."""
    values = [r["steal_pct"] for r in rows if "steal_pct" in r]
    return f"{max(values):.1f}" if values else "-"


def main():
    runs, extras = load(sys.argv[1])
    floor = group(runs, "floor", "max")
    floor_rps = med(floor, "rps") if floor else None
    bare = group(runs, "bare_axum", "max")
    bare_rps = med(bare, "rps") if bare else None

    print("| scenario | req/s (median) | spread | p50 ms | p99 ms | vs floor | vs bare axum | runs | steal % (max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    seen = []
    for r in runs:
        if r["mode"] == "max" and r["scenario"] not in seen:
            seen.append(r["scenario"])
    for name in seen:
        rows = group(runs, name, "max")
        rps = med(rows, "rps")
        lo, hi = min(r["rps"] for r in rows), max(r["rps"] for r in rows)
        ratio = f"{rps / floor_rps:.0%}" if floor_rps else "-"
        vs_bare = f"{rps / bare_rps:.0%}" if bare_rps else "-"
        print(
            f"| {name} ({rows[0]['connections']} conns) | {rps:,.0f} | {lo:,.0f}–{hi:,.0f} "
            f"| {ms(med(rows, 'p50_us'))} | {ms(med(rows, 'p99_us'))} | {ratio} | {vs_bare} | {len(rows)} "
            f"| {steal(rows)} |"
        )

    paced = [m for m in ("half_load", "quiet", "flood")
             if any(r["mode"] == m and "target_rps" in r for r in runs)]
    if paced:
        print()
        print("| paced run | target req/s | achieved (median) | p50 ms | p99 ms | p99 spread ms | steal % (max) |")
        print("|---|---|---|---|---|---|---|")
        for mode in paced:
            names = []
            for r in runs:
                if r["mode"] == mode and "target_rps" in r and r["scenario"] not in names:
                    names.append(r["scenario"])
            for name in names:
                rows = group(runs, name, mode)
                p99s = [r["p99_us"] for r in rows]
                print(
                    f"| {name} {mode} | {rows[0]['target_rps']:,} | {med(rows, 'rps'):,.0f} "
                    f"| {ms(med(rows, 'p50_us'))} | {ms(med(rows, 'p99_us'))} "
                    f"| {ms(min(p99s))}–{ms(max(p99s))} | {steal(rows)} |"
                )
    direct, nginx = group(runs, "upstream_direct", "max"), group(runs, "nginx_proxy", "max")
    for name, label in (("proxy", "Lua pick"), ("proxy_memory", "in-memory pick")):
        proxied = group(runs, name, "max")
        if not proxied or not (direct or nginx):
            continue
        b = med(proxied, "rps")
        parts = []
        if nginx:
            parts.append(f"(b)/(c) vs nginx proxy_pass: {b / med(nginx, 'rps'):.0%} (goal ≥ 70%)")
        if direct:
            parts.append(f"(b)/(a) vs the upstream alone: {b / med(direct, 'rps'):.0%}")
        print()
        print(f"{name} ({label}): " + "; ".join(parts) + ".")
    quiet, flood = group(runs, "verify_jwt", "quiet"), group(runs, "verify_jwt", "flood")
    if quiet and flood:
        q, f = med(quiet, "p99_us"), med(flood, "p99_us")
        logins = group(runs, "login_flood", "background")
        print()
        print(
            f"verify_jwt p99 beside a login flood: {ms(f)} ms vs {ms(q)} ms quiet "
            f"= {f / q:.2f}× (target ≤ 2×)"
            + (f"; the flood itself: {logins[0]['rps']:,.0f} logins/s, "
               f"p99 {ms(logins[0]['p99_us'])} ms" if logins else "")
        )

    stolen = [f"{r['scenario']} {r['mode']} run {r['run']} ({r['steal_pct']:.1f}%)"
              for r in runs if r.get("steal_pct", 0.0) > STEAL_LIMIT]
    if stolen:
        print()
        print(f"**CPU steal above {STEAL_LIMIT:.0f}% in: {', '.join(stolen)}.** "
              "Those runs measured a busy host; rerun them before quoting their figures.")

    if extras:
        print()
        print("| figure | value |")
        print("|---|---|")
        for key, (value, unit) in extras.items():
            shown = f"{value:,}" if isinstance(value, int) else f"{value}"
            print(f"| {key} | {shown} {unit} |".replace("  |", " |"))
        ping = extras.get("redis_ping_c1_p50_ms")
        if ping:
            print()
            print(f"Redis round-trip floor (1 client, p50): {ping[0]} ms.")


if __name__ == "__main__":
    main()
