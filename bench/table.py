#!/usr/bin/env python3
"""bench/table.py META RESULTS: the markdown tables of a bench/compare.sh run.

RESULTS is the JSON lines file (one `sori bench` report per run, tagged with
server, case and round); every figure is the median over the rounds of that
(case, server). Ratios are sori's figure over the peer's, for each sori mode.
"""
import json
import statistics
import sys
from collections import defaultdict

ORDER = ["sori", "sori-async", "sori-tls", "node-ws", "uws", "nchan"]
LABEL = {
    "sori": "sori (sync)",
    "sori-async": "sori (async)",
    "sori-tls": "sori over TLS",
    "node-ws": "Node.js ws",
    "uws": "uWebSockets",
    "nchan": "Nchan",
}


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, kind):
    if v is None:
        return "–"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v / 1000:.1f}" if v >= 1000 else f"{v / 1000:.2f}"
    if kind == "pct":
        return f"{v:.0f}%"
    if kind == "loss":
        return "0" if v == 0 else (f"{v:.2%}" if v >= 0.0001 else f"{v:.4%}")
    if kind == "ratio":
        return f"{v:.2f}×" if v >= 0.1 else f"{v:.2g}×"
    return str(v)


def main():
    meta = json.load(open(sys.argv[1]))
    runs = defaultdict(list)
    failed = defaultdict(int)
    for line in open(sys.argv[2]):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if "failed" in r:
            failed[(r["case"], r["server"])] += 1
            continue
        runs[(r["case"], r["server"])].append(r)

    cases = meta["cases"].split()
    servers = [s for s in ORDER if s in meta["servers"].split()]
    out = []
    p = out.append
    p(f"Machine: {meta['nproc']} CPUs, {meta['cpu']}, Linux {meta['kernel']}. "
      f"{meta['rounds']} round(s), {meta['duration']} s measured after {meta['warmup']} s warm-up; "
      f"server on CPU 0, load generator on CPU 1.")
    p("")
    p(f"Versions: {meta['sori']}; Node.js {meta['node']} with ws {meta['ws']}; {meta['uws']}; "
      f"nginx {meta['nginx']} with libnginx-mod-nchan {meta['nchan']}.")
    if meta.get("skipped", "").strip():
        p("")
        p(f"Skipped: {meta['skipped'].strip()}.")
    p("")

    fan = [c for c in cases if c.startswith("fanout")]
    figures = {}
    if fan:
        p(f"### Fan-out: 1 room, {meta['subs']} subscribers + 1 publisher (who also receives)")
        p("")
        p("| case | server | deliveries/s | deliveries per server CPU-s (min–max) | server CPU | p50 ms | p99 ms | lost | bench CPU | rounds |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in fan:
            for s in servers:
                rs = runs.get((c, s), [])
                f = {
                    "dps": med([r.get("deliveries_per_s") for r in rs]),
                    "dpc": med([r.get("deliveries_per_server_cpu_s") for r in rs]),
                    "dpc_lo": min([r["deliveries_per_server_cpu_s"] for r in rs if r.get("deliveries_per_server_cpu_s")],
                                  default=None),
                    "dpc_hi": max([r["deliveries_per_server_cpu_s"] for r in rs if r.get("deliveries_per_server_cpu_s")],
                                  default=None),
                    "cpu": med([r.get("server_cpu_pct") for r in rs]),
                    "p50": med([r["latency_us"]["p50"] for r in rs if r["latency_us"]["count"]]),
                    "p99": med([r["latency_us"]["p99"] for r in rs if r["latency_us"]["count"]]),
                    "loss": med([r["lost"] / r["expected_deliveries"] if r["expected_deliveries"] else None
                                 for r in rs]),
                    "bcpu": med([r.get("bench_cpu_pct") for r in rs]),
                }
                figures[(c, s)] = f
                name = c.replace("fanout-closed", f"closed loop, window {meta['window']}").replace(
                    "fanout-rate-", "open loop, msg/s: ")
                n = f"{len(rs)}" + (f" (+{failed[(c, s)]} failed)" if failed[(c, s)] else "")
                spread = "" if len(rs) < 2 else f" ({f['dpc_lo'] / 1000:,.0f}k–{f['dpc_hi'] / 1000:,.0f}k)"
                p(f"| {name} | {LABEL[s]} | {fmt(f['dps'], 'int')} | {fmt(f['dpc'], 'int')}{spread} | "
                  f"{fmt(f['cpu'], 'pct')} | {fmt(f['p50'], 'ms')} | {fmt(f['p99'], 'ms')} | "
                  f"{fmt(f['loss'], 'loss')} | {fmt(f['bcpu'], 'pct')} | {n} |")
        p("")

    if "connections" in cases:
        p(f"### Idle connections: {meta['conns']} over 100 rooms, from 2 source addresses")
        p("")
        p("| server | connected | connects/s | server RSS before | RSS after join | bytes per idle connection | rounds |")
        p("|---|---:|---:|---:|---:|---:|---:|")
        for s in servers:
            rs = runs.get(("connections", s), [])
            f = {
                "conn": med([r.get("connected") for r in rs]),
                "cps": med([r.get("connects_per_s") for r in rs]),
                "rb": med([r.get("server_rss_before") for r in rs]),
                "rj": med([r.get("server_rss_joined") for r in rs]),
                "bpc": med([r.get("server_rss_per_conn") for r in rs]),
            }
            figures[("connections", s)] = f
            mib = lambda v: "–" if v is None else f"{v / 1048576:.1f} MiB"
            n = f"{len(rs)}" + (f" (+{failed[('connections', s)]} failed)" if failed[("connections", s)] else "")
            p(f"| {LABEL[s]} | {fmt(f['conn'], 'int')} | {fmt(f['cps'], 'int')} | {mib(f['rb'])} | "
              f"{mib(f['rj'])} | {fmt(f['bpc'], 'int')} | {n} |")
        p("")

    soris = [s for s in ("sori", "sori-async") if s in servers]
    peers = [s for s in servers if s not in ("sori", "sori-async")]
    if soris and peers:
        p("### sori's ratio to each peer")
        p("")
        p("Deliveries per server CPU-second: sori ÷ peer (above 1×: sori does more per CPU-second). "
          "p99 and bytes per idle connection: sori ÷ peer (below 1×: sori is lower).")
        p("")
        p("| figure | " + " | ".join(f"{LABEL[s]} ÷ {LABEL[q]}" for s in soris for q in peers) + " |")
        p("|---|" + "---:|" * (len(soris) * len(peers)))

        def ratio(a, b):
            return None if a is None or b is None or b == 0 else a / b

        for c in fan:
            name = c.replace("fanout-closed", "closed loop").replace("fanout-rate-", "open loop ")
            for key, what in (("dpc", "deliveries per CPU-s"), ("p99", "p99")):
                p(f"| {name}: {what} | " + " | ".join(
                    fmt(ratio(figures[(c, s)][key], figures[(c, q)][key]), "ratio") for s in soris for q in peers)
                  + " |")
        if "connections" in cases:
            p("| bytes per idle connection | " + " | ".join(
                fmt(ratio(figures[("connections", s)]["bpc"], figures[("connections", q)]["bpc"]), "ratio")
                for s in soris for q in peers) + " |")
        p("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
