#!/usr/bin/env python3
"""bench/cluster_table.py: the tables of a bench/cluster.sh run.

  cluster_table.py META RESULTS
      prints the markdown tables: every figure is the median over the rounds
      of one mode (min-max where noted); ratios are a cluster mode's median
      over a single-node mode's.
  cluster_table.py --merge LINE LOAD MODE ROUND HOOK_DIR ALIVE RCS NAMES LOGPREFIX
      (used by cluster.sh) prints one results line: the bench's JSON LINE with
      the load, the mode, the round, the counters the window hook saved in HOOK_DIR
      (Redis INFO commandstats, PostgreSQL's next xid and WAL position, each
      node's /metrics) turned into deltas over the window, the messages
      accepted but not in the store just after it, whether each node
      was alive after the bench and its exit status, and the warning/error
      lines of each node's log (LOGPREFIX-NAME.log).
"""
import json
import os
import re
import statistics
import sys
from collections import defaultdict

ORDER = ["cluster", "cluster-half", "cluster-async", "pg", "pg-async", "sqlite"]
LABEL = {
    "cluster": "2 nodes, all cross",
    "cluster-half": "2 nodes, half cross",
    "cluster-async": "2 nodes, all cross, async",
    "pg": "1 node, PostgreSQL",
    "pg-async": "1 node, PostgreSQL, async",
    "sqlite": "1 node, SQLite",
}
CLUSTERS = ["cluster", "cluster-half", "cluster-async"]
# the ratios printed (numerator ÷ denominator), when both modes ran
RATIOS = [("cluster", "pg"), ("cluster", "sqlite"), ("cluster-half", "pg"), ("cluster-half", "sqlite"),
          ("cluster-async", "cluster"), ("cluster-async", "pg-async"), ("pg-async", "pg")]
# calls Redis counts in INFO commandstats although no client sent them: the
# async seq script (chat_relay.c) runs EXISTS, INCR and PUBLISH inside each
# EVAL that assigns a seq, and INCR is issued nowhere else
SCRIPT_CALLS_PER_INCR = 3


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def redis_snapshot(text):
    """redis-cli's answers to TIME and INFO commandstats -> (time, {command: calls})."""
    if not text:
        return None, None
    lines = text.splitlines()
    try:
        t = int(lines[0]) + int(lines[1]) / 1e6
    except (IndexError, ValueError):
        return None, None
    calls = {}
    for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", text, re.M):
        calls[m.group(1)] = int(m.group(2))
    return t, calls


def node_snapshot(text):
    """port name value / port time t0 t1 lines -> {port: {name: value, "t": middle}}."""
    out = {}
    for ln in (text or "").splitlines():
        f = ln.split()
        if len(f) == 4 and f[1] == "time":
            out.setdefault(f[0], {})["t"] = (float(f[2]) + float(f[3])) / 2
        elif len(f) == 3:
            out.setdefault(f[0], {})[f[1].replace("sori_", "").replace("_total", "")] = float(f[2])
    return out


def merge(argv):
    line, load, mode, rnd, hook, alive, rcs, names, logprefix = argv
    r = json.loads(line)
    r.update(load=load, mode=mode, round=int(rnd))
    names = names.split()
    # each node's own counters over the window, and the message rate they give
    na, nb = node_snapshot(read(os.path.join(hook, "metrics-start.txt"))), \
        node_snapshot(read(os.path.join(hook, "metrics-end.txt")))
    rate = None
    if na and nb and all("t" in v for v in list(na.values()) + list(nb.values())):
        r["node_counters"] = []
        rate = 0.0
        for port in nb:  # in the order of HOOK_PORTS: the nodes' order
            a, b = na.get(port, {}), nb[port]
            dt = b["t"] - a.get("t", b["t"])
            c = {k: int(b[k] - a.get(k, 0)) for k in b if k != "t"}
            c["s"] = round(dt, 4)
            r["node_counters"].append(c)
            rate = rate + c.get("messages_in", 0) / dt if dt > 0 and rate is not None else None
        r["messages_in_per_s"] = rate
    # Redis: calls per command over the window (the hook's own TIME, INFO and redis-cli's COMMAND DOCS left out)
    ta, a = redis_snapshot(read(os.path.join(hook, "redis-start.txt")))
    tb, b = redis_snapshot(read(os.path.join(hook, "redis-end.txt")))
    if a is not None and b is not None and tb > ta:
        d = {k: b.get(k, 0) - a.get(k, 0) for k in b if k not in ("info", "time") and not k.startswith("command")}
        r["redis_calls"] = {k: v for k, v in sorted(d.items()) if v}
        r["redis_s"] = round(tb - ta, 4)
        if rate:
            r["redis_per_msg"] = {k: v / (tb - ta) / rate for k, v in r["redis_calls"].items()}
    # PostgreSQL: write transactions (xids assigned) and WAL bytes over the window
    try:
        xa, wa, ta = read(os.path.join(hook, "pg-start.txt")).strip().split("|")
        xb, wb, tb = read(os.path.join(hook, "pg-end.txt")).strip().split("|")
        dt = float(tb) - float(ta)
        r["pg_xacts"] = int(xb) - int(xa)
        r["pg_wal_bytes"] = int(float(wb) - float(wa))
        r["pg_s"] = round(dt, 4)
        if rate and dt > 0:
            r["pg_xacts_per_msg"] = r["pg_xacts"] / dt / rate
            r["pg_wal_per_msg"] = r["pg_wal_bytes"] / dt / rate
    except (AttributeError, ValueError):
        pass
    # messages accepted (all nodes, since they started) but not in the store
    # just after the window: the async write backlog (about 0 with sync)
    try:
        rows = int(read(os.path.join(hook, "rows-end.txt")).strip())
        if nb and mode != "sqlite":
            r["unwritten_after"] = int(sum(v.get("messages_in", 0) for v in nb.values())) - rows
    except (AttributeError, ValueError):
        pass
    r["nodes_alive_after"] = [c == "1" for c in alive]
    r["node_exit"] = [int(x) for x in rcs.split()]
    logs = {}
    for n in names:
        t = read(f"{logprefix}-{n}.log") or ""
        bad = [ln for ln in t.splitlines() if re.search(r"\b(warn|error|WARN|ERROR|fatal|abort)", ln)]
        logs[n] = {"lines": len(bad), "first": bad[0][:200] if bad else ""}
    r["node_logs"] = logs
    print(json.dumps(r))


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def rng(vals):
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else (None, None)


def fmt(v, kind="int"):
    if v is None:
        return "–"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "k":
        return f"{v / 1000:,.0f}k"
    if kind == "ms":
        return f"{v / 1000:.1f}"
    if kind == "pct":
        return f"{v:.0f}%"
    if kind == "ratio":
        return f"{v:.2f}×"
    if kind == "3":
        return f"{v:.3f}"
    if kind == "2":
        return f"{v:.2f}"
    if kind == "e":
        return f"{v:.1e}" if v else "0"
    return str(v)


def cpu(r, label):
    for c in r.get("cpu", []):
        if c["label"] == label:
            return c["cpu_s"]
    return None


def figures(r):
    w = r["duration_s"]
    sori = [cpu(r, c["label"]) for c in r.get("cpu", []) if c["label"].startswith("sori")]
    sori_s = sum(sori) if sori and None not in sori else None
    redis = cpu(r, "redis") if r["mode"].startswith("cluster") else 0.0
    pg = cpu(r, "pg") if r["mode"] != "sqlite" else 0.0
    all_s = sori_s + redis + pg if None not in (sori_s, redis, pg) else None
    d, a = r["window_deliveries"], r["window_acked"]
    cross = r.get("window_cross_deliveries") or 0
    f = {
        "acks": a / w,
        "deliv": d / w,
        "cross": cross / w,
        "cross_share": cross / d if d else None,
        "sori_pct": 100 * sori_s / w if sori_s is not None else None,
        "redis_pct": 100 * redis / w if redis is not None else None,
        "pg_pct": 100 * pg / w if pg is not None else None,
        "d_sori": d / sori_s if sori_s else None,
        "d_all": d / all_s if all_s else None,
        "x_sori": cross / sori_s if sori_s and cross else None,
        "x_all": cross / all_s if all_s and cross else None,
        "a_all": a / all_s if all_s else None,
        "p50": r["latency_us"]["p50"],
        "p99": r["latency_us"]["p99"],
        "ack_p50": r["ack_latency_us"]["p50"],
        "lost": r["lost"],
        "bad": r["duplicates"] + r["out_of_order"] + r["gaps"] + r["send_errors"] + r["server_closes"],
        "bench_pct": r["bench_cpu_pct"],
        # seconds per second that the server processes were runnable but waiting for a CPU
        "wait": sum(c["runq_wait_s"] or 0 for c in r.get("cpu", [])
                    if c["label"].startswith("sori") or (c["label"] == "redis" and r["mode"].startswith("cluster"))
                    or (c["label"] == "pg" and r["mode"] != "sqlite")) / w,
        "late": (r["late_slots"] + r["skipped_slots"]) / max(r["window_sent"], 1) if r.get("rate") else None,
    }
    nc = r.get("node_counters") or []
    for i, c in enumerate(nc[:2]):  # per node: its own deliveries (/metrics) per its CPU-second
        cs = cpu(r, f"sori{i + 1}") if len(nc) > 1 else None
        if cs and c.get("s"):
            f[f"n{i + 1}_pct"] = 100 * cs / w
            f[f"n{i + 1}_d"] = c["deliveries"] / c["s"] * w / cs
            f[f"n{i + 1}_m"] = c["messages_in"] / c["s"]
    if "redis_per_msg" in r:
        f["redis_total"] = sum(r["redis_per_msg"].values())
        # what the nodes sent: the calls made inside the seq script left out
        f["redis_sent"] = f["redis_total"] - SCRIPT_CALLS_PER_INCR * r["redis_per_msg"].get("incr", 0)
    if r["mode"] != "sqlite":
        f["pg_xacts"] = r.get("pg_xacts_per_msg")
        f["pg_wal"] = r.get("pg_wal_per_msg")
    return f


def load_label(load, meta):
    if load == "closed":
        return f"closed loop, {meta['window']} sends in flight per publisher"
    rate = int(load.split("-", 1)[1])
    n = int(meta["rooms"])
    return f"open loop, {rate} msg/s per publisher ({rate * n} msg/s in all)"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--merge":
        merge(sys.argv[2:])
        return
    meta = json.load(open(sys.argv[1]))
    loads = meta.get("loads", "closed").split()
    modes = [m for m in ORDER if m in meta["modes"].split()]
    runs = defaultdict(list)
    failed = defaultdict(list)
    for line in open(sys.argv[2]):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        key = (r.get("load", "closed"), r["mode"])
        if "failed" in r:
            failed[key].append(r["failed"])
            continue
        if r["setup_errors"] or r["handshake_failures"]:  # not the load it claims: rooms short of members
            failed[key].append(f"invalid (round {r['round']}: {r['setup_errors']} setup errors, "
                               f"{r['handshake_failures']} handshake failures, {r['first_error']!r})")
            continue
        runs[key].append(r)
    out = [f"{meta['rooms']} rooms × (1 publisher + {meta['subs']} subscribers); {meta['duration']} s windows after "
           f"{meta['warmup']} s warm-up; medians of {meta['rounds']} rounds; servers "
           f"{'pinned to CPU 0, the bench to CPU 1' if meta['pinned'] == '1' else 'not pinned'}.", ""]
    for load in loads:
        out.extend(load_tables(load, meta, modes, runs, failed))
    problems = []
    for (load, m), rs in sorted(runs.items()):
        for r in rs:
            ex = [e for e in r.get("node_exit", []) if e != 0]
            dead = [i + 1 for i, a in enumerate(r.get("nodes_alive_after", [])) if not a]
            logs = {n: v for n, v in r.get("node_logs", {}).items() if v["lines"]}
            if ex or dead or logs or r["lost"] or r["first_error"]:
                problems.append(f"- {load}, round {r['round']}, {m}: exit {r.get('node_exit')}, dead after bench "
                                f"{dead}, lost {r['lost']}, bench error {r['first_error']!r}, log lines "
                                + ", ".join(f"{n}: {v['lines']} ({v['first']!r})" for n, v in logs.items()))
    for (load, m), why in sorted(failed.items()):
        if why:
            problems.append(f"- {load}, {m}: {len(why)} run(s) left out: {'; '.join(why)}")
    if problems:
        out.append("Problems seen:")
        out.extend(problems)
        out.append("")
    out.append(f"Machine: {meta['cpu']}, {meta['nproc']} CPUs, Linux {meta['kernel']}; {meta['sori']}; "
               f"PostgreSQL {meta['postgresql']}, Redis {meta['redis']}.")
    print("\n".join(out))


def load_tables(load, meta, all_modes, runs, failed):
    modes = [m for m in all_modes if runs.get((load, m)) or failed.get((load, m))]
    R = {m: runs.get((load, m), []) for m in modes}
    F = {m: [figures(r) for r in R[m]] for m in modes}

    def M(m, k):
        return med([f.get(k) for f in F[m]])

    out = [f"#### {load_label(load, meta)}", ""]
    out.append("| setup | acked msg/s | deliveries/s | cross-node deliveries/s | sori CPU | Redis CPU | PostgreSQL CPU "
               "| deliveries per sori CPU-s (min–max) | deliveries per CPU-s, sori + Redis + PG (min–max) "
               "| cross-node deliveries per sori CPU-s | p50 / p99 ms | lost, dup/gaps/errors | rounds |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in modes:
        nf = len([w for w in failed.get((load, m), []) if w])
        if not F[m]:
            out.append(f"| {LABEL[m]} | no valid run ({nf} left out) |" + " |" * 11)
            continue
        lo, hi = rng([f["d_sori"] for f in F[m]])
        lo2, hi2 = rng([f["d_all"] for f in F[m]])
        cross = M(m, "cross")
        cross_cell = f"{fmt(cross)} ({M(m, 'cross_share'):.0%})" if cross else "–"
        out.append(
            f"| {LABEL[m]} | {fmt(M(m, 'acks'))} | {fmt(M(m, 'deliv'))} | {cross_cell} | "
            f"{fmt(M(m, 'sori_pct'), 'pct')} | {fmt(M(m, 'redis_pct'), 'pct') if m.startswith('cluster') else '–'} | "
            f"{fmt(M(m, 'pg_pct'), 'pct') if m != 'sqlite' else '–'} | "
            f"{fmt(M(m, 'd_sori'))} ({fmt(lo, 'k')}–{fmt(hi, 'k')}) | {fmt(M(m, 'd_all'))} ({fmt(lo2, 'k')}–{fmt(hi2, 'k')}) | "
            f"{fmt(M(m, 'x_sori')) if cross else '–'} | {fmt(M(m, 'p50'), 'ms')} / {fmt(M(m, 'p99'), 'ms')} | "
            f"{fmt(max(f['lost'] for f in F[m]))}, {fmt(max(f['bad'] for f in F[m]))} | "
            f"{len(F[m])}{f' (+{nf} left out)' if nf else ''} |")
    out.append("")
    out.append("CPU columns: share of one core over the window (sori: both nodes together). \"lost\" and "
               "\"dup/gaps/errors\" are the worst round. Contention (medians): server processes runnable but "
               "waiting for a CPU " + ", ".join(f"{LABEL[m]} {M(m, 'wait'):.2f} s/s" for m in modes if F[m])
               + ("; bench sends over 1 ms late " + ", ".join(f"{LABEL[m]} {M(m, 'late'):.0%}" for m in modes if F[m])
                  if any(M(m, "late") is not None for m in modes if F[m]) else "") + ".")
    out.append("")
    unw = {m: [r["unwritten_after"] for r in R[m] if "unwritten_after" in r] for m in modes if m.endswith("-async")}
    if any(unw.values()):
        out.append("Accepted but not yet in the store just after the window (async write backlog; --flush-ms "
                   "should bound it to about 1 s of messages), per round: " + "; ".join(
                       f"{LABEL[m]} {', '.join(f'{v:,}' for v in vs)} (at {fmt(M(m, 'acks'))} msg/s)"
                       for m, vs in unw.items() if vs) + ".")
        out.append("")
    nodes = [m for m in CLUSTERS if F.get(m) and M(m, "n1_d") is not None]
    if nodes:
        out.append("| per node | node 1 CPU | node 1 msg/s accepted | node 1 deliveries per its CPU-s "
                   "| node 2 CPU | node 2 msg/s accepted | node 2 deliveries per its CPU-s |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for m in nodes:
            out.append(f"| {LABEL[m]} | {fmt(M(m, 'n1_pct'), 'pct')} | {fmt(M(m, 'n1_m'))} | {fmt(M(m, 'n1_d'))} | "
                       f"{fmt(M(m, 'n2_pct'), 'pct')} | {fmt(M(m, 'n2_m'))} | {fmt(M(m, 'n2_d'))} |")
        out.append("")

    clusters = [m for m in CLUSTERS if F.get(m)]
    pairs = [(a, b) for a, b in RATIOS if F.get(a) and F.get(b)]
    if pairs:
        out.append("| figure | " + " | ".join(f"{LABEL[c]} ÷ {LABEL[s]}" for c, s in pairs) + " |")
        out.append("|---|" + "---:|" * len(pairs))
        for k, name in [("acks", "acked msg/s"), ("deliv", "deliveries/s"),
                        ("d_sori", "deliveries per sori CPU-s"),
                        ("d_all", "deliveries per CPU-s, sori + Redis + PG"),
                        ("a_all", "acked messages per CPU-s, sori + Redis + PG")]:
            cells = []
            for c, s in pairs:
                a, b = M(c, k), M(s, k)
                cells.append(fmt(a / b, "ratio") if a and b else "–")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")

    # Redis commands and PostgreSQL work per acked message
    def per_msg(m, k):
        return med([r["redis_per_msg"].get(k, 0) for r in R[m] if "redis_per_msg" in r])

    def per_s(m, k):
        return med([r["redis_calls"].get(k, 0) / r["redis_s"] for r in R[m] if "redis_s" in r])
    cmds = sorted({k for m in clusters for r in R[m] for k in r.get("redis_per_msg", {})},
                  key=lambda k: (-round(max(per_msg(m, k) or 0 for m in clusters), 2), k != "eval", k))
    pg_modes = [m for m in modes if m != "sqlite" and F[m]]
    if cmds or pg_modes:
        out.append("Redis commands per acked message (and per second), PostgreSQL work per acked message:")
        out.append("")
        out.append("| per acked message | " + " | ".join(LABEL[m] for m in pg_modes) + " |")
        out.append("|---|" + "---:|" * len(pg_modes))
        for k in cmds:
            cells = []
            for m in pg_modes:
                v = per_msg(m, k) if m.startswith("cluster") else None
                cells.append("–" if v is None else (f"{v:.3f}" if v >= 0.001 else (f"{v:.1e}" if v else "0"))
                             + (f" ({per_s(m, k):,.0f}/s)" if per_s(m, k) >= 10 else f" ({per_s(m, k):.1f}/s)"))
            out.append(f"| Redis {k.upper()} | " + " | ".join(cells) + " |")
        if cmds:
            scripted = any(per_msg(m, "incr") for m in clusters)
            out.append(("| **Redis commands, all** (INFO commandstats: calls inside scripts included) | " if scripted
                        else "| **Redis commands, all** | ") + " | ".join(
                f"**{M(m, 'redis_total'):.3f}**" if m.startswith("cluster") and M(m, "redis_total") is not None
                else "–" for m in pg_modes) + " |")
            if scripted:
                out.append("| **Redis commands sent by the nodes** (the seq script's EXISTS + INCR + PUBLISH "
                           "left out: 3 per INCR) | " + " | ".join(
                               f"**{M(m, 'redis_sent'):.3f}**" if m.startswith("cluster")
                               and M(m, "redis_sent") is not None else "–" for m in pg_modes) + " |")
        out.append("| PostgreSQL write transactions (commits) | "
                   + " | ".join(fmt(M(m, "pg_xacts"), "3" if (M(m, "pg_xacts") or 0) >= 0.001 else "e")
                                for m in pg_modes) + " |")
        out.append("| PostgreSQL WAL bytes | " + " | ".join(fmt(M(m, "pg_wal")) for m in pg_modes) + " |")
        out.append("")
    return out


if __name__ == "__main__":
    main()
