#!/usr/bin/env python3
"""Where a proxy's CPU goes: one arm of the harness under the throughput load, recorded with
`perf record -g`, summarised with `perf report`.

Run through `scripts/bench --profile [ARM]` (ARM: airlock (default), bare, bare_ip, nginx, haproxy, or one
of the LLM arms metered, limited, router, translated, loaded with their Messages or Chat call), which
builds the release binaries first. Starts the upstream and the arm exactly as `bench/run.py` does
(same cores, same worker count, same token swap), warms it up, then records the proxy's
processes for `--seconds` of `wrk` at 64 connections on `/instant`. Writes
`bench/results/profile-<arm>-<timestamp>.txt` (the report: self time by symbol, then the
call-graph view of the heaviest) and prints the CPU time per request measured alongside.
`--keep` keeps perf.data next to the report, for `perf report -i` or a flamegraph tool.
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: arms, ports, taskset, wrk)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    llm = ["metered", "limited", "router", "translated"]
    ap.add_argument("arm", nargs="?", default="airlock", choices=run.PROXIES + ["bare_ip"] + llm)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep perf.data next to the report")
    ap.add_argument("--dwarf", action="store_true",
                    help="call graphs from DWARF unwinding: leaf functions such as memmove get their "
                         "callers (frame pointers skip them), at a larger perf.data")
    args = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("profile: perf is not installed (Debian: apt-get install linux-perf)")

    b = run.Bench(argparse.Namespace(quick=True, rounds=None))
    try:
        b.nofile = run.raise_nofile()
        b.start_upstream()
        # nginx and HAProxy map a token to the key; without Airlock any token-shaped text will do.
        b.token = "gws_profile" + run.secrets.token_hex(16)
        if args.arm in llm:
            b.start_airlock()
            b.start_metered()
            if args.arm == "limited":
                b.start_limited()
            if args.arm in ("router", "translated"):
                b.start_router()
            m = b.arms[args.arm].get("msg", run.MESSAGES)
            path, body = m["path"], m["body"]
        else:
            getattr(b, f"start_{args.arm}")()
            b.check(args.arm)
            path, body = "/instant", None
        b.wrk(args.arm, path, args.conns, 2, body)
        pids = b.pids(args.arm)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out_dir = os.path.join(run.ROOT, "bench", "results")
        os.makedirs(out_dir, exist_ok=True)
        data = os.path.join(b.tmp, "perf.data")
        perf = subprocess.Popen(
            ["perf", "record", "-q", *(["--call-graph", "dwarf,16384", "-F", "499"] if args.dwarf else ["-g", "-F", "1999"]), "-o", data, "-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        load = b.wrk(args.arm, path, args.conns, args.seconds, body)
        perf.send_signal(2)
        perf.wait(timeout=60)
        report = subprocess.run(
            ["perf", "report", "-i", data, "--no-children", "--percent-limit", "0.4", "--stdio",
             "-g", "none", "--sort", "dso,symbol"],
            capture_output=True, text=True,
        ).stdout
        graph = subprocess.run(
            ["perf", "report", "-i", data, "--children", "--percent-limit", "3", "--stdio",
             "-g", "caller,0.5,callee,function,percent", "--sort", "symbol"],
            capture_output=True, text=True,
        ).stdout
        path = os.path.join(out_dir, f"profile-{args.arm}-{stamp}.txt")
        with open(path, "w") as f:
            f.write(f"# {args.arm}: {load['rps']:.0f} req/s, "
                    f"{load['cpu_us_per_req']:.1f} µs CPU per request, {args.conns} connections, "
                    f"{args.seconds} s\n\n## Self time\n\n{report}\n\n## Call graph\n\n{graph}")
        if args.keep:
            shutil.copy(data, path.replace(".txt", ".perf.data"))
        print(f"{args.arm}: {load['rps']:.0f} req/s, {load['cpu_us_per_req']:.1f} µs CPU/request")
        print(f"report: {os.path.relpath(path, run.ROOT)}")
    finally:
        b.stop_all()
        shutil.rmtree(b.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
