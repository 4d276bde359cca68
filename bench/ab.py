#!/usr/bin/env python3
"""A/B of two `airlock` binaries, alternated round by round: what one change costs, settled by
rounds rather than by one run on a noisy machine.

    python3 bench/ab.py NEW_BINARY OLD_BINARY [--rounds 6] [--seconds 5]
                        [--workload plain|metered|limited] [--postgres] [--postgres-core N]

Each binary runs as in `bench/run.py` (`start_airlock`: one worker on the proxy's core, its own
ports and database) with the same upstream. A round loads each binary in turn (the order swapped
every round) with `wrk` at 64 connections (CPU per request of the proxy's processes, counted until
its audit queue is empty; with `--postgres`, also of PostgreSQL's) and at one connection (p50,
p99). `--workload` picks the request: `plain` GET `/instant` through a passthrough gateway config
(A2), `metered` the Anthropic Messages call through a metered one (A2m), `limited` the same through
a devbox with limits (A2l). `--postgres` puts both on one throwaway PostgreSQL cluster, a database
each (A2p); `--postgres-core` pins that cluster to another core than the load generator's. Prints
every round, the medians and the per-round ratios NEW / OLD. Needs the release build of
`bench-upstream` (`cargo build --release -p airlock-bench`) and `wrk`.
"""

import argparse
import base64
import os
import secrets
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: arms, ports, taskset, wrk)


def start(b, name, binary, workload, url):
    """One binary as arm `name`, loaded with `workload`; returns (arm, path, body)."""
    env = {"AIRLOCK_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode()} if url else None
    run.LABEL[f"{name}_process"] = name
    a = b.start_airlock(f"{name}_process", binary=binary, database_url=url, env=env)
    b.arms["airlock"] = a  # what start_metered and start_limited build on
    if url:
        a["side_pid"] = b.pg_pid
    path, body = "/instant", None
    if workload != "plain":
        b.start_metered()
        if "metered" not in b.arms:
            sys.exit("ab: this build does not take a metered gateway config")
        if workload == "limited":
            b.start_limited()
        path, body = run.MESSAGES_PATH, run.MESSAGES_BODY
    arm = {"plain": "airlock", "metered": "metered", "limited": "limited"}[workload]
    b.arms[name] = b.arms[arm]
    for other in ("airlock", "metered", "limited"):
        b.arms.pop(other, None)
    run.LABEL[name] = name
    return name, path, body


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("new")
    ap.add_argument("old")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--workload", choices=["plain", "metered", "limited"], default="plain")
    ap.add_argument("--postgres", action="store_true")
    ap.add_argument("--postgres-core")
    args = ap.parse_args()
    b = run.Bench(argparse.Namespace(quick=True, rounds=None))
    rows = {"new": [], "old": []}
    try:
        b.nofile = run.raise_nofile()
        b.start_upstream()
        urls = {"new": None, "old": None}
        if args.postgres:
            url = b.start_postgres()
            if not url:
                sys.exit(f"ab: {b.notes[-1]}")
            if args.postgres_core:
                for pid in run.proc_tree(b.pg_pid):
                    subprocess.run(["taskset", "-a", "-p", "-c", args.postgres_core, str(pid)],
                                   capture_output=True, check=True)
            port = url.rsplit(":", 1)[1].split("/")[0]
            for name in urls:
                subprocess.run([os.path.join(run.pg_bindir(), "createdb"), "-h", "127.0.0.1", "-p", port,
                                "-U", "postgres", f"ab_{name}"], check=True)
                urls[name] = url.rsplit("/", 1)[0] + f"/ab_{name}"
        load = {name: start(b, name, os.path.abspath(binary), args.workload, urls[name])
                for name, binary in (("new", args.new), ("old", args.old))}
        for arm, path, body in load.values():
            b.wrk(arm, path, 64, 2, body)  # warm-up
        for r in range(args.rounds):
            for name in (["new", "old"] if r % 2 == 0 else ["old", "new"]):
                arm, path, body = load[name]
                t = b.wrk(arm, path, 64, args.seconds, body)
                one = b.wrk(arm, path, 1, args.seconds, body)
                rows[name].append({"cpu": t["cpu_us_per_req"], "db": t.get("side_cpu_us_per_req"),
                                   "rps": t["rps"], "p50": one["p50"], "p99": one["p99"]})
                line = rows[name][-1]
                db = f" db {line['db']:.1f} µs" if line["db"] is not None else ""
                print(f"round {r + 1} {name}: cpu {line['cpu']:.1f} µs{db} req/s {line['rps']:.0f} "
                      f"p50 {line['p50']} µs p99 {line['p99']} µs", flush=True)
        keys = ["cpu", "db", "rps", "p50", "p99"] if args.postgres else ["cpu", "rps", "p50", "p99"]
        for name in rows:
            print(f"{name} medians: " + ", ".join(
                f"{k} {statistics.median(x[k] for x in rows[name]):.1f}" for k in keys))
        for k in keys:
            ratios = [n[k] / o[k] for n, o in zip(rows["new"], rows["old"])]
            ahead = sum(1 for x in ratios if x < 1)
            print(f"{k} new/old: median {statistics.median(ratios):.3f} per round "
                  f"{' '.join(f'{x:.3f}' for x in ratios)} (new lower in {ahead} of {len(ratios)})")
        for note in b.notes:
            print("note:", note)
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
