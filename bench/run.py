#!/usr/bin/env python3
"""The benchmark harness: every arm of ../shared PERF.md, interleaved, one report.

Run through `scripts/bench` (which installs the tools and builds release binaries first):

    scripts/bench            # the default profile (under 10 minutes on 2 cores)
    scripts/bench --quick    # a smoke run

Arms, all against the same upstream (`bench-upstream`):
  A0 direct    the client talks to the upstream itself
  A1 bare      `bench-passthrough`, the smallest hyper proxy
  A2 airlock   `airlock serve` on embedded SQLite, a real token minted through the CLI
  A3 nginx     Debian's nginx, map token -> key, proxy_set_header, keep-alive pool
  A4 haproxy   Debian's HAProxy, the same swap with a map file

Every proxy gets the same worker count and the same cores (taskset); the load generator and the
upstream run on the other cores. Logging is off in every proxy (Airlock: AIRLOCK_LOG=error; its
request audit trail stays on, because it is part of what Airlock does for every request).
Writes bench/results/<timestamp>.md and .json. Standard library only.
"""

import argparse
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = ["direct", "bare", "airlock", "nginx", "haproxy"]
PROXIES = ["bare", "airlock", "nginx", "haproxy"]
LABEL = {
    "direct": "A0 direct",
    "bare": "A1 bare hyper",
    "airlock": "A2 Airlock",
    "nginx": "A3 nginx",
    "haproxy": "A4 HAProxy",
}
REAL_KEY = "sk-bench-real-key-" + secrets.token_hex(8)
TICK = os.sysconf("SC_CLK_TCK")

PROFILES = {
    "default": dict(
        rounds=3, throughput_s=6, latency_s=4, open_s=4, rates=[1000, 5000], delay_s=4,
        delay_conns=256, sse_streams=16, idle_conns=10000, scale=[1000, 1000000],
        propagation_trials=100, warmup_s=2,
    ),
    "quick": dict(
        rounds=1, throughput_s=2, latency_s=2, open_s=2, rates=[1000, 5000], delay_s=2,
        delay_conns=128, sse_streams=4, idle_conns=2000, scale=[1000, 20000],
        propagation_trials=10, warmup_s=1,
    ),
}

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = ""
            if getattr(proc, "log_path", None):
                with open(proc.log_path) as f:
                    tail = f.read()[-2000:]
            raise RuntimeError(f"{' '.join(proc.args)} exited with {proc.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def cpu_split():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return cores, cores, "one core: client, upstream and proxy share it"
    half = len(cores) // 2
    client, proxy = cores[:half], cores[half:]
    return client, proxy, (
        f"load generator and upstream on core(s) {','.join(map(str, client))}; "
        f"the proxy under test on core(s) {','.join(map(str, proxy))}"
    )


def taskset(cores):
    return ["taskset", "-c", ",".join(map(str, cores))]


def raise_nofile():
    """Enough descriptors for 10 000 idle connections through every proxy (HAProxy asks for
    about twice its maxconn). Root may raise the hard limit; otherwise take what is allowed."""
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_tree(pid):
    """pid and its descendants (nginx workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError):
            pass
    return total / TICK


def status_kb(pids, field):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def reset_peak(pids):
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def stats(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


class Bench:
    def __init__(self, args):
        self.args = args
        self.p = dict(PROFILES["quick" if args.quick else "default"])
        if args.rounds:
            self.p["rounds"] = args.rounds
        self.release = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
        self.tmp = tempfile.mkdtemp(prefix="airlock-bench-")
        self.client_cores, self.proxy_cores, self.split = cpu_split()
        self.workers = len(self.proxy_cores)
        self.procs = {}
        self.arms = {}
        self.results = {"runs": []}
        self.oha = shutil.which("oha") or self._local_oha()
        self.notes = []

    def _local_oha(self):
        p = os.path.join(ROOT, ".bench-tools", "bin", "oha")
        return p if os.path.exists(p) else None

    def bin(self, name):
        return os.path.join(self.release, name)

    def spawn(self, name, argv, env=None, cores=None, stdout=None):
        logf = open(os.path.join(self.tmp, f"{name}.log"), "w")
        full = (taskset(cores) if cores else []) + argv
        proc = subprocess.Popen(
            full, env={**os.environ, **(env or {})}, stdout=stdout or logf, stderr=logf,
            cwd=self.tmp, start_new_session=True,
        )
        proc.log_path = logf.name
        self.procs[name] = proc
        return proc

    def stop_all(self):
        for name, proc in self.procs.items():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except OSError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass

    # ---------------------------------------------------------------- arms

    def start_upstream(self):
        self.up_port = free_port()
        proc = self.spawn(
            "upstream",
            [self.bin("bench-upstream"), "--addr", f"127.0.0.1:{self.up_port}", "--key", REAL_KEY,
             "--threads", str(len(self.client_cores))],
            cores=self.client_cores,
        )
        wait_port(self.up_port, proc)
        self.arms["direct"] = {"port": self.up_port, "header": f"x-api-key: {REAL_KEY}", "pid": None}

    def start_bare(self):
        port = free_port()
        proc = self.spawn(
            "bare",
            [self.bin("bench-passthrough"), "--addr", f"127.0.0.1:{port}", "--upstream",
             f"127.0.0.1:{self.up_port}", "--threads", str(self.workers)],
            cores=self.proxy_cores,
        )
        wait_port(port, proc)
        self.arms["bare"] = {"port": port, "header": f"x-api-key: {REAL_KEY}", "pid": proc.pid}

    def start_airlock(self):
        api, port = free_port(), free_port()
        data = os.path.join(self.tmp, "airlock-data")
        admin = "bench-admin-" + secrets.token_hex(16)
        env = {
            "AIRLOCK_DATABASE_URL": f"sqlite://{data}/airlock.db",
            "AIRLOCK_API_ADDR": f"127.0.0.1:{api}",
            "AIRLOCK_PROXY_ADDR": f"127.0.0.1:{port}",
            "AIRLOCK_ALLOW_PRIVATE_UPSTREAMS": "127.0.0.0/8",
            "AIRLOCK_ADMIN_TOKEN": admin,
            "AIRLOCK_LOG": "error",
            "AIRLOCK_LOG_FORMAT": "text",
            "TOKIO_WORKER_THREADS": str(self.workers),
        }
        proc = self.spawn("airlock", [self.bin("airlock"), "serve"], env=env, cores=self.proxy_cores)
        wait_port(port, proc)
        wait_port(api, proc)
        cli_env = {**os.environ, "AIRLOCK_URL": f"http://127.0.0.1:{api}", "AIRLOCK_TOKEN": admin}

        def cli(*argv, stdin=None):
            r = subprocess.run([self.bin("airlock"), *argv], env=cli_env, input=stdin,
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError(f"airlock {' '.join(argv)}: {r.stderr.strip()}")
            return r.stdout

        cli("secret", "set", "BENCH_KEY", stdin=REAL_KEY)
        cli("gateway", "create", "--name", "bench", "--endpoint", f"http://127.0.0.1:{self.up_port}",
            "--auth", "header:x-api-key")
        out = cli("devbox", "register", "--name", "bench", "--source", "127.0.0.1",
                  "--gateway", "BENCH=bench:BENCH_KEY")
        token = re.search(r"export BENCH=(gws_\S+)", out).group(1)
        self.token = token
        self.arms["airlock"] = {"port": port, "header": f"x-api-key: {token}", "pid": proc.pid,
                                "api": api, "admin": admin}
        # The token must work before any measurement.
        self.check("airlock")

    def start_nginx(self):
        port = free_port()
        prefix = os.path.join(self.tmp, "nginx")
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
daemon off;
master_process on;
worker_processes {self.workers};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log crit;
worker_rlimit_nofile 65536;
events {{ worker_connections 32768; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 90s;
    tcp_nodelay on;
    map $http_x_api_key $real_key {{
        default "";
        "{self.token}" "{REAL_KEY}";
    }}
    upstream bench {{
        server 127.0.0.1:{self.up_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            if ($real_key = "") {{ return 401; }}
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header x-api-key $real_key;
            proxy_buffering off;
        }}
    }}
}}
""")
        proc = self.spawn("nginx", ["nginx", "-p", prefix, "-c", conf], cores=self.proxy_cores)
        wait_port(port, proc)
        self.arms["nginx"] = {"port": port, "header": f"x-api-key: {self.token}", "pid": proc.pid}

    def start_haproxy(self):
        port = free_port()
        d = os.path.join(self.tmp, "haproxy")
        os.makedirs(d, exist_ok=True)
        keys = os.path.join(d, "keys.map")
        with open(keys, "w") as f:
            f.write(f"{self.token} {REAL_KEY}\n")
        # HAProxy reserves about two descriptors per connection and refuses to start beyond its limit.
        self.haproxy_maxconn = min(20000, (self.nofile - 200) // 2)
        if self.haproxy_maxconn < self.p["idle_conns"]:
            self.notes.append(f"HAProxy's maxconn is {self.haproxy_maxconn} (file descriptor limit {self.nofile}): "
                              "it holds fewer idle connections than the others were offered")
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""
global
    nbthread {self.workers}
    maxconn {self.haproxy_maxconn}
defaults
    mode http
    timeout connect 5s
    timeout client 90s
    timeout server 300s
    timeout http-keep-alive 90s
    option http-keep-alive
    http-reuse always
    option http-no-delay
frontend fe
    bind 127.0.0.1:{port}
    http-request deny deny_status 401 unless {{ req.hdr(x-api-key),map({keys}) -m found }}
    http-request set-header x-api-key %[req.hdr(x-api-key),map({keys})]
    default_backend be
backend be
    server up 127.0.0.1:{self.up_port} maxconn 1000
""")
        proc = self.spawn("haproxy", ["haproxy", "-db", "-f", cfg], cores=self.proxy_cores)
        wait_port(port, proc)
        self.arms["haproxy"] = {"port": port, "header": f"x-api-key: {self.token}", "pid": proc.pid}

    def check(self, arm):
        a = self.arms[arm]
        req = urllib.request.Request(f"http://127.0.0.1:{a['port']}/instant")
        name, value = a["header"].split(": ", 1)
        req.add_header(name, value)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception as e:  # noqa: BLE001 - retried, then reported
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{arm}: /instant does not answer 200 ({e})")
            time.sleep(0.1)

    def pids(self, arm):
        pid = self.arms[arm]["pid"]
        return proc_tree(pid) if pid else []

    # ---------------------------------------------------------------- load tools

    def wrk(self, arm, path, conns, seconds):
        a = self.arms[arm]
        lua = os.path.join(self.tmp, "report.lua")
        if not os.path.exists(lua):
            with open(lua, "w") as f:
                f.write(WRK_LUA)
        cmd = taskset(self.client_cores) + [
            "wrk", "-t", str(min(len(self.client_cores), conns)), "-c", str(conns), "-d", f"{seconds}s",
            "--timeout", "10s", "-H", a["header"], "-s", lua, f"http://127.0.0.1:{a['port']}{path}",
        ]
        pids = self.pids(arm)
        cpu0 = cpu_seconds(pids)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        cpu1 = cpu_seconds(pids)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if not line:
            raise RuntimeError(f"wrk failed for {arm}: {r.stdout}{r.stderr}")
        out = json.loads(line[-1])
        out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
        out["cpu_s"] = cpu1 - cpu0
        out["cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / max(out["requests"], 1) if pids else None
        if out["errors"] or out["status_errors"]:
            self.notes.append(f"{arm} {path} c={conns}: {out['errors']} socket errors, "
                              f"{out['status_errors']} non-2xx answers")
        return out

    def oha_run(self, arm, rate, seconds):
        a = self.arms[arm]
        cmd = taskset(self.client_cores) + [
            self.oha, "-z", f"{seconds}s", "-q", str(rate), "--latency-correction", "-c", "64",
            "--no-tui",
            "-H", a["header"], "--output-format", "json", f"http://127.0.0.1:{a['port']}/instant",
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        if r.returncode != 0 and "--output-format" in r.stderr:
            cmd[cmd.index("--output-format"):cmd.index("--output-format") + 2] = ["-j"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        try:
            d = json.loads(r.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"oha failed for {arm}: {r.stdout[-500:]}{r.stderr[-500:]}")
        lp = d.get("latencyPercentiles", {})
        summary = d.get("summary", {})
        us = lambda k: lp[k] * 1e6 if lp.get(k) is not None else None  # noqa: E731
        return {
            "rps": summary.get("requestsPerSec"),
            "success": summary.get("successRate"),
            "p50": us("p50"), "p99": us("p99"), "p999": us("p99.9"),
        }

    def sse(self, arm, streams):
        a = self.arms[arm]
        cmd = taskset(self.client_cores) + [
            self.bin("bench-probe"), "sse", "--addr", f"127.0.0.1:{a['port']}", "--header", a["header"],
            "--streams", str(streams), "--concurrency", str(streams),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"sse probe failed for {arm}: {r.stderr}")
        s = json.loads(r.stdout)["streams"]
        heads = sorted(x["head_us"] for x in s)
        firsts = sorted(x["first_event_us"] for x in s)
        gaps = sorted(g for x in s for g in x["gaps_us"])
        return {
            "ok": all(x["ok"] for x in s),
            "head_p50": pct(heads, 0.5), "head_p99": pct(heads, 0.99),
            "first_p50": pct(firsts, 0.5), "first_p99": pct(firsts, 0.99),
            "gap_p50": pct(gaps, 0.5), "gap_p99": pct(gaps, 0.99),
            "gap_mean": statistics.fmean(gaps) if gaps else None,
            "events_min": min(x["events"] for x in s),
            "coalesced": sum(x["coalesced_reads"] for x in s),
            "stalls": sum(x["stalls"] for x in s),
            "streams": len(s),
        }

    def idle(self, arm, conns):
        a = self.arms[arm]
        pids = self.pids(arm)
        before = status_kb(pids, "VmRSS")
        cmd = taskset(self.client_cores) + [
            self.bin("bench-probe"), "idle", "--addr", f"127.0.0.1:{a['port']}", "--header", a["header"],
            "--connections", str(conns), "--hold", "3",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        time.sleep(1.0)
        rss = status_kb(self.pids(arm), "VmRSS")
        proc.wait(timeout=60)
        try:
            ready = json.loads(line)
        except json.JSONDecodeError:
            ready = {"ready": 0, "failed": conns}
        return {"rss_before_mb": before / 1024, "rss_mb": rss / 1024, "connected": ready.get("ready"),
                "failed": ready.get("failed")}

    # ---------------------------------------------------------------- the run

    def record(self, round_, arm, figure, value):
        self.results["runs"].append({"round": round_, "arm": arm, "figure": figure, **value})
        brief = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in value.items()
                 if k in ("rps", "p50", "p99", "p999", "cpu_us_per_req", "first_p99", "head_p99", "rss_mb")}
        log(f"round {round_} {LABEL[arm]:14} {figure:14} {brief}")

    def run(self):
        nofile = self.nofile = raise_nofile()
        p = self.p
        if nofile < 2 * p["idle_conns"] + 1000:
            p["idle_conns"] = max(100, (nofile - 1000) // 2)
            self.notes.append(f"only {nofile} file descriptors: idle connections cut to {p['idle_conns']}")
        log(f"profile {'quick' if self.args.quick else 'default'}: {p}")
        log(f"cores: {self.split}; {self.workers} worker(s) per proxy")
        self.load_before = open("/proc/loadavg").read().split()[:3]
        started = time.monotonic()
        self.start_upstream()
        self.start_bare()
        self.start_airlock()
        self.start_nginx()
        self.start_haproxy()
        for arm in ARMS:
            self.check(arm)
        for arm in ARMS:
            self.wrk(arm, "/instant", 64, p["warmup_s"])
        if not self.oha:
            self.notes.append("oha is not installed (cargo install oha failed or was skipped): "
                              "the open-loop figures are missing")
        for rnd in range(1, p["rounds"] + 1):
            # Rotate the order each round so no arm always runs first or last.
            order = ARMS[rnd - 1:] + ARMS[:rnd - 1]
            for arm in order:
                self.record(rnd, arm, "throughput", self.wrk(arm, "/instant", 64, p["throughput_s"]))
            for arm in order:
                self.record(rnd, arm, "latency_1conn", self.wrk(arm, "/instant", 1, p["latency_s"]))
            if self.oha:
                for rate in p["rates"]:
                    for arm in order:
                        self.record(rnd, arm, f"open_{rate}", self.oha_run(arm, rate, p["open_s"]))
            for arm in order:
                self.record(rnd, arm, "delay", self.wrk(arm, "/delay", p["delay_conns"], p["delay_s"]))
            for arm in order:
                self.record(rnd, arm, "sse", self.sse(arm, p["sse_streams"]))
        # Peak RSS over all load so far, then the idle keep-alive figure.
        self.peak = {arm: status_kb(self.pids(arm), "VmHWM") / 1024 for arm in PROXIES}
        for arm in PROXIES:
            self.record(0, arm, "idle", self.idle(arm, p["idle_conns"]))
        self.stop_all()
        self.results["load_elapsed_s"] = time.monotonic() - started
        if not self.args.skip_scale:
            self.results["scale"] = self.tool("bench-scale", ["--sizes", ",".join(map(str, p["scale"]))])
        if not self.args.skip_propagation:
            self.results["propagation"] = self.tool(
                "bench-propagation", ["--trials", str(p["propagation_trials"])])
        self.load_after = open("/proc/loadavg").read().split()[:3]
        self.results["elapsed_s"] = time.monotonic() - started
        self.write_report()

    def tool(self, name, argv):
        log(f"running {name} {' '.join(argv)}")
        r = subprocess.run([self.bin(name), *argv], capture_output=True, text=True, timeout=1800,
                           cwd=self.tmp)
        sys.stderr.write(r.stderr[-3000:])
        if r.returncode != 0:
            self.notes.append(f"{name} failed: {r.stderr.strip()[-300:]}")
            return None
        return json.loads(r.stdout)

    # ---------------------------------------------------------------- the report

    def summary(self):
        runs = self.results["runs"]
        figures = sorted({r["figure"] for r in runs})
        out = {}
        for fig in figures:
            out[fig] = {}
            for arm in ARMS:
                rows = [r for r in runs if r["figure"] == fig and r["arm"] == arm]
                if not rows:
                    continue
                keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                        and k not in ("round",)]
                out[fig][arm] = {k: stats([r.get(k) for r in rows]) for k in keys}
                if fig == "sse":
                    out[fig][arm]["one_to_one"] = all(
                        r["ok"] and r["events_min"] == 64 and r["coalesced"] == 0 and r["stalls"] == 0
                        for r in rows)
        # Added latency: arm minus direct, per round, then the median over rounds.
        added = {}
        for fig, keys in [("latency_1conn", ["p50", "p99", "p999"])] + [
                (f"open_{r}", ["p50", "p99", "p999"]) for r in self.p["rates"]] + [
                ("sse", ["head_p50", "head_p99", "first_p50", "first_p99", "gap_mean", "gap_p99"])]:
            for arm in PROXIES:
                for k in keys:
                    vals = []
                    for rnd in range(1, self.p["rounds"] + 1):
                        a = [r for r in runs if r["figure"] == fig and r["arm"] == arm and r["round"] == rnd]
                        d = [r for r in runs if r["figure"] == fig and r["arm"] == "direct" and r["round"] == rnd]
                        if a and d and a[0].get(k) is not None and d[0].get(k) is not None:
                            vals.append(a[0][k] - d[0][k])
                    s = stats(vals)
                    if s:
                        added.setdefault(fig, {}).setdefault(arm, {})[k] = s
        out["added"] = added
        # Throughput ratios, per round then median.
        ratios = {}
        for fig, key in [("throughput", "rps"), ("throughput", "cpu_us_per_req"), ("delay", "rps")]:
            for a in PROXIES + ["direct"]:
                for b in PROXIES + ["direct"]:
                    if a == b:
                        continue
                    vals = []
                    for rnd in range(1, self.p["rounds"] + 1):
                        x = [r for r in runs if r["figure"] == fig and r["arm"] == a and r["round"] == rnd]
                        y = [r for r in runs if r["figure"] == fig and r["arm"] == b and r["round"] == rnd]
                        if x and y and x[0].get(key) and y[0].get(key):
                            vals.append(x[0][key] / y[0][key])
                    s = stats(vals)
                    if s:
                        ratios.setdefault(f"{fig}.{key}", {})[f"{a}/{b}"] = s
        out["ratios"] = ratios
        out["peak_rss_mb"] = self.peak
        return out

    def write_report(self):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        outdir = os.path.join(ROOT, "bench", "results")
        os.makedirs(outdir, exist_ok=True)
        summary = self.summary()
        machine = self.machine()
        doc = {
            "timestamp": stamp,
            "profile": "quick" if self.args.quick else "default",
            "parameters": self.p,
            "machine": machine,
            "cores": self.split,
            "workers_per_proxy": self.workers,
            "loadavg_before": self.load_before,
            "loadavg_after": self.load_after,
            "notes": self.notes,
            "summary": summary,
            **self.results,
        }
        jpath = os.path.join(outdir, f"{stamp}.json")
        with open(jpath, "w") as f:
            json.dump(doc, f, indent=1)
        mpath = os.path.join(outdir, f"{stamp}.md")
        with open(mpath, "w") as f:
            f.write(render(doc))
        log(f"wrote {os.path.relpath(mpath, ROOT)} and {os.path.relpath(jpath, ROOT)}")
        print(render(doc))

    def machine(self):
        cpu = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        mem = 0
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
        def version(cmd):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
                return (r.stdout + r.stderr).strip().splitlines()[0]
            except (OSError, IndexError):
                return None
        return {
            "cpu": cpu, "cores": os.cpu_count(), "memory_mb": mem, "kernel": os.uname().release,
            "nginx": version(["nginx", "-v"]), "haproxy": version(["haproxy", "-v"]),
            "wrk": version(["wrk", "-v"]), "oha": version([self.oha, "--version"]) if self.oha else None,
        }


# -------------------------------------------------------------------- rendering

def fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0 and abs(v) < 10:
        return f"{v:.1f}"
    return f"{v:,.{digits}f}"


def spread(s, digits=0, unit=""):
    if not s:
        return "–"
    if s["n"] == 1:
        return f"{fmt(s['median'], digits)}{unit}"
    return f"{fmt(s['median'], digits)}{unit} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


def render(doc):
    s = doc["summary"]
    m = doc["machine"]
    L = []
    L.append(f"# Airlock benchmark {doc['timestamp']} ({doc['profile']} profile)\n")
    L.append(f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb']} MB, Linux {m['kernel']}")
    L.append(f"- Tools: {m['nginx']}; {m['haproxy']}; {m['wrk']}; oha: {m['oha'] or 'not installed'}")
    L.append(f"- Cores: {doc['cores']}. {doc['workers_per_proxy']} worker thread(s)/process(es) per proxy.")
    L.append(f"- Load average before: {' '.join(doc['loadavg_before'])}; after: {' '.join(doc['loadavg_after'])}")
    L.append(f"- Rounds: {doc['parameters']['rounds']}, arms interleaved (order rotated each round). "
             "Cells: median over rounds (min–max).")
    L.append(f"- Elapsed: {doc['elapsed_s']:.0f} s")
    for n in doc["notes"]:
        L.append(f"- Note: {n}")
    L.append("")

    def table(title, fig, cols):
        if fig not in s:
            return
        L.append(f"## {title}\n")
        L.append("| arm | " + " | ".join(c[0] for c in cols) + " |")
        L.append("|---|" + "---|" * len(cols))
        for arm in ARMS:
            row = s[fig].get(arm)
            if not row:
                continue
            L.append(f"| {LABEL[arm]} | " + " | ".join(spread(row.get(c[1]), c[2] if len(c) > 2 else 0)
                                                        for c in cols) + " |")
        L.append("")

    table("1. Throughput, closed loop, 64 connections (`/instant`)", "throughput",
          [("req/s", "rps"), ("CPU µs/request (proxy)", "cpu_us_per_req", 1), ("p50 µs", "p50"),
           ("p99 µs", "p99")])
    r = s["ratios"]
    L.append("Ratios (per round, median (min–max)):\n")
    L.append("| ratio | req/s | CPU per request |")
    L.append("|---|---|---|")
    for a, b in [("airlock", "nginx"), ("airlock", "haproxy"), ("airlock", "bare"), ("airlock", "direct"),
                 ("bare", "nginx"), ("haproxy", "nginx")]:
        L.append(f"| {LABEL[a]} / {LABEL[b]} | {spread(r.get('throughput.rps', {}).get(f'{a}/{b}'), 2)} | "
                 f"{spread(r.get('throughput.cpu_us_per_req', {}).get(f'{a}/{b}'), 2)} |")
    L.append("")
    table("2a. Latency at one connection (`/instant`), µs", "latency_1conn",
          [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")])
    ad = s["added"]

    def added_table(title, fig, keys):
        if fig not in ad:
            return
        L.append(f"**{title}** (arm − direct, µs, per round then median):\n")
        L.append("| arm | " + " | ".join(k[0] for k in keys) + " |")
        L.append("|---|" + "---|" * len(keys))
        for arm in PROXIES:
            row = ad[fig].get(arm, {})
            L.append(f"| {LABEL[arm]} | " + " | ".join(spread(row.get(k[1])) for k in keys) + " |")
        L.append("")

    added_table("Added latency at one connection", "latency_1conn",
                [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")])
    for rate in doc["parameters"]["rates"]:
        table(f"2b. Open loop at {rate} req/s (oha, latency-corrected), µs", f"open_{rate}",
              [("achieved req/s", "rps"), ("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")])
        added_table(f"Added latency at {rate} req/s", f"open_{rate}",
                    [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")])
    L.append("## 3. CPU and memory\n")
    L.append("| arm | CPU µs/request at 64 conns | peak RSS MB (whole run) | RSS MB, 10k idle keep-alive | connected |")
    L.append("|---|---|---|---|---|")
    for arm in PROXIES:
        t = s.get("throughput", {}).get(arm, {})
        i = s.get("idle", {}).get(arm, {})
        L.append(f"| {LABEL[arm]} | {spread(t.get('cpu_us_per_req'), 1)} | {fmt(s['peak_rss_mb'].get(arm), 1)} | "
                 f"{spread(i.get('rss_mb'), 1)} | {spread(i.get('connected'))} |")
    L.append("")
    table(f"Many in flight: `/delay` (50 ms upstream), {doc['parameters']['delay_conns']} connections",
          "delay", [("req/s", "rps"), ("CPU µs/request", "cpu_us_per_req", 1), ("p50 µs", "p50"),
                    ("p99 µs", "p99")])
    table("4. SSE (64 events, 20 ms apart), µs from sending the request", "sse",
          [("head p50", "head_p50"), ("head p99", "head_p99"), ("first event p50", "first_p50"),
           ("first event p99", "first_p99"), ("mean gap", "gap_mean"), ("gap p99", "gap_p99")])
    added_table("SSE added time", "sse",
                [("head p50", "head_p50"), ("head p99", "head_p99"), ("first event p50", "first_p50"),
                 ("first event p99", "first_p99"), ("mean gap", "gap_mean"), ("gap p99", "gap_p99")])
    if "sse" in s:
        L.append("Events one to one (64 per stream, no read carrying two events, no gap over 35 ms): " +
                 ", ".join(f"{LABEL[a]} {'yes' if s['sse'][a].get('one_to_one') else 'NO'}"
                           for a in ARMS if a in s["sse"]) + "\n")
    sc = doc.get("scale")
    if sc:
        L.append("## 5. Scale: active tokens in the data plane\n")
        L.append(f"Shape: {sc.get('shape', '')}\n")
        L.append("| tokens | load (s) | RSS after load (MB) | peak RSS during a full reload (MB) | "
                 "lookup hot (ns) | lookup cold (ns) |")
        L.append("|---|---|---|---|---|---|")
        for row in sc["sizes"]:
            L.append(f"| {row['tokens']:,} | {row['load_s']:.2f} | {row['rss_after_load_mb']:.0f} | "
                     f"{row['peak_rss_reload_mb']:.0f} | {row['lookup_hot_ns']:.0f} | {row['lookup_cold_ns']:.0f} |")
        L.append("")
        if len(sc["sizes"]) >= 2:
            a, b = sc["sizes"][0], sc["sizes"][-1]
            L.append(f"Lookup at {b['tokens']:,} / at {a['tokens']:,}: hot {b['lookup_hot_ns'] / a['lookup_hot_ns']:.2f}×, "
                     f"cold {b['lookup_cold_ns'] / a['lookup_cold_ns']:.2f}×\n")
        for n in sc.get("notes", []):
            L.append(f"- {n}")
        L.append("")
    pr = doc.get("propagation")
    if pr:
        L.append("## 6. Propagation to a second replica (Postgres LISTEN/NOTIFY)\n")
        L.append(f"{pr.get('setup', '')}\n")
        L.append("| change | trials | p50 ms | p99 ms | max ms |")
        L.append("|---|---|---|---|---|")
        for k, v in pr["results"].items():
            L.append(f"| {k} | {v['trials']} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['max_ms']:.1f} |")
        L.append("")
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--rounds", type=int, help="override the profile's rounds")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-propagation", action="store_true")
    args = ap.parse_args()
    b = Bench(args)
    try:
        b.run()
    finally:
        b.stop_all()
        shutil.rmtree(b.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
