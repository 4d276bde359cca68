#!/usr/bin/env python3
"""Instructions per request, counted by valgrind (callgrind): a repeatable figure for changes too
small for this machine's CPU-time spread (a limits stage at 1–2% of a request, say).

    python3 bench/instructions.py BINARY [BINARY ...] [--requests 4000]
        [--workloads plain,messages,metered,limited[,router,translated,router-stream,
                     translated-stream]] [--stream-requests 100]

Each binary runs under `valgrind --tool=callgrind` with A2's settings (`bench/run.py`,
`start_airlock`) against the same `bench-upstream`, loaded in turn with each workload: `plain`,
GET `/instant` through the passthrough gateway config (A2); `messages`, the Anthropic Messages
call through it; `metered`, the same call through the metered gateway config (A2m); `limited`,
through a devbox with limits (A2l); `router`, through a router over the metered config (A2r);
`translated`, the call in OpenAI's dialect through the router (A2t); `router-stream` and
`translated-stream`, the same two calls streamed (64 events, 20 ms apart: `--stream-requests`
streams, not `--requests`, and the figure is per stream). Per workload: a warm-up, then
`--requests` requests one after another on one keep-alive connection, each phase ended by waiting
until the audit queue is empty (so the audit writer's work for those requests is in the phase)
and a callgrind dump; the figure is the phase's instructions (user space, every thread of the
process) divided by its requests. The kernel is not counted: system calls cost the same whatever
Airlock's own code does.

Prints instructions per request for each binary and workload, and the differences that are a
stage's cost (metered - messages: metering; limited - metered: limits; router - metered: the
router; translated - router: translation; translated-stream - router-stream: a stream's
translation). Each phase's dump stays in the run's temporary
directory (printed) for `callgrind_annotate`. Binaries may be given more than once: alternate
them to see the spread. Needs valgrind, the release build of `bench-upstream`, and time (valgrind
runs the proxy about 50 times slower).
"""

import argparse
import glob
import http.client
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: arms, ports, REST calls)


def send(a, path, body, n):
    """`n` requests on one keep-alive connection; every answer must be 200."""
    conn = http.client.HTTPConnection("127.0.0.1", a["port"], timeout=30)
    headers = dict(h.split(": ", 1) for h in run.arm_headers(a))
    if body:
        headers["content-type"] = "application/json"
    for _ in range(n):
        conn.request("POST" if body else "GET", path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: status {r.status}")
    conn.close()


def dump(pid, outdir, label):
    """Makes callgrind dump (and zero) its counters; returns the instructions since the last dump.
    The dump stays in `outdir` as `<label>.callgrind` (for `callgrind_annotate`)."""
    before = set(glob.glob(os.path.join(outdir, "callgrind.out.*")))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = set(glob.glob(os.path.join(outdir, "callgrind.out.*"))) - before
        for path in new:
            with open(path) as f:
                text = f.read()
            m = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
            if m:
                os.rename(path, os.path.join(outdir, f"{label}.callgrind"))
                return int(m.group(1))
        time.sleep(0.2)
    raise RuntimeError("callgrind did not dump")


def measure(b, binary, workloads, n, n_stream):
    outdir = os.path.join(b.tmp, f"callgrind-{len(os.listdir(b.tmp))}")
    os.makedirs(outdir)
    wrapper = os.path.join(outdir, "airlock-under-callgrind")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --dump-instr=no --compress-strings=no "
                f"--callgrind-out-file={outdir}/callgrind.out.%p {os.path.abspath(binary)} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    name = os.path.basename(outdir)
    run.LABEL[name] = name
    a = b.start_airlock(name, binary=wrapper)
    b.arms["airlock"] = a  # what start_metered and start_limited build on
    b.start_metered()
    b.start_limited()
    if {"router", "translated", "router-stream", "translated-stream"} & set(workloads):
        b.start_router()
    loads = {
        "plain": ("airlock", "/instant", None),
        "messages": ("airlock", run.MESSAGES_PATH, run.MESSAGES_BODY),
        "metered": ("metered", run.MESSAGES_PATH, run.MESSAGES_BODY),
        "limited": ("limited", run.MESSAGES_PATH, run.MESSAGES_BODY),
        "router": ("router", run.MESSAGES_PATH, run.MESSAGES_BODY),
        "translated": ("translated", run.CHAT_PATH, run.CHAT_BODY),
        "router-stream": ("router", run.MESSAGES_PATH, run.MESSAGES_STREAM_BODY),
        "translated-stream": ("translated", run.CHAT_PATH, run.CHAT_STREAM_BODY),
    }
    out = {}
    for w in workloads:
        arm, path, body = loads[w]
        count = n_stream if w.endswith("-stream") else n
        send(b.arms[arm], path, body, max(count // 10, 10))
        b.audit_settled(name, timeout=120)
        dump(a["pid"], outdir, f"{w}-warm-up")
        send(b.arms[arm], path, body, count)
        b.audit_settled(name, timeout=120)
        out[w] = dump(a["pid"], outdir, w) / count
        print(f"{os.path.basename(binary)} {w}: {out[w]:,.0f} instructions per request "
              f"({outdir}/{w}.callgrind)", flush=True)
    proc = b.procs.pop(name)
    proc.terminate()
    proc.wait(timeout=60)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--stream-requests", type=int, default=100)
    ap.add_argument("--workloads", default="plain,messages,metered,limited")
    args = ap.parse_args()
    workloads = args.workloads.split(",")
    b = run.Bench(argparse.Namespace(quick=True, rounds=None))
    results = []
    try:
        b.start_upstream()
        for binary in args.binaries:
            results.append((binary, measure(b, binary, workloads, args.requests, args.stream_requests)))
    finally:
        b.stop_all()
    print()
    cols = workloads + [c for c in ("metered - messages", "limited - metered", "router - metered",
                                    "translated - router",
                                    "translated-stream - router-stream")
                        if all(w in workloads for w in c.split(" - "))]
    print("| binary | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for binary, r in results:
        cells = [f"{r[w]:,.0f}" for w in workloads]
        for c in cols[len(workloads):]:
            x, y = c.split(" - ")
            cells.append(f"{r[x] - r[y]:,.0f}")
        print(f"| {os.path.basename(binary)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
