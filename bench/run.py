#!/usr/bin/env python3
"""The benchmark harness: every arm of ../shared PERF.md, interleaved, one report.

Run through `scripts/bench` (which installs the tools and builds release binaries first):

    scripts/bench            # the default profile (about 12 minutes on 2 cores)
    scripts/bench --quick    # a smoke run
    scripts/bench --baseline /path/to/old/airlock    # adds A2b, the same arm from another binary

Arms, all against the same upstream (`bench-upstream`):
  A0 direct    the client talks to the upstream itself
  A1 bare      `bench-passthrough`, the smallest hyper proxy
  A2 airlock   `airlock serve` on embedded SQLite, a real token minted through the REST API
  A2m metered  the same Airlock process, a second gateway config with `api: anthropic-messages`
               (usage read from every POST's answer), its own devbox and token; measured with
               Anthropic Messages calls (`POST /v1/messages`, JSON and SSE) next to A2 and A0
               making the same calls (skipped with a note if the control plane refuses `api`)
  A2p postgres A2 on a throwaway PostgreSQL (audit events written there, as in production),
               the cluster pinned with the upstream (skipped with a note without PostgreSQL)
  A2b baseline A2 from another airlock binary (`--baseline PATH`): a change's cost as a ratio
  A1i bare_ip  A1 with `--in-place`: per-thread HTTP/1 connections driven by the request's own
               task instead of hyper-util's pooled client (what that hand-off costs)
  A3 nginx     Debian's nginx, map token -> key, proxy_set_header, keep-alive pool
  A4 haproxy   Debian's HAProxy, the same swap with a map file

Every proxy gets the same worker count and the same cores (taskset); the load generator and the
upstream run on the other cores. Logging is off in every proxy (Airlock: AIRLOCK_LOG=error; its
request audit trail stays on, because it is part of what Airlock does for every request).
Writes bench/results/<timestamp>.md and .json. Standard library only.
"""

import argparse
import base64
import datetime
import glob
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
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every arm, in report order; a run has the ones it could start.
ARMS = ["direct", "bare", "bare_ip", "airlock", "metered", "limited", "router", "translated", "airlock_pg",
        "airlock_base", "nginx", "haproxy", "portkey", "litellm"]
# The arms every run starts (and `bench/profile.py` can profile).
PROXIES = ["bare", "airlock", "nginx", "haproxy"]
LABEL = {
    "direct": "A0 direct",
    "bare": "A1 bare hyper",
    "bare_ip": "A1i bare hyper, in-place pool",
    "airlock": "A2 Airlock",
    "metered": "A2m Airlock, metered",
    "limited": "A2l Airlock, limits",
    "router": "A2r Airlock, router",
    "translated": "A2t Airlock, router + translation",
    "airlock_pg": "A2p Airlock on Postgres",
    "airlock_base": "A2b Airlock baseline",
    "nginx": "A3 nginx",
    "haproxy": "A4 HAProxy",
    "portkey": "A5 Portkey gateway",
    "litellm": "A6 LiteLLM proxy",
}
# The LLM-shaped workload: an Anthropic Messages call, as JSON and as a stream. A2m runs it, and so
# do A2 (the same process, a passthrough gateway) and A0 in the same rounds, so that A2m's cost is
# a ratio over the same request and its added latency a difference over the same answer.
MESSAGES_PATH = "/v1/messages"
MESSAGES_BODY = json.dumps({
    "model": "claude-sonnet-4-5", "max_tokens": 256,
    "messages": [{"role": "user", "content": "Say hello."}],
}, separators=(",", ":"))
MESSAGES_STREAM_BODY = json.dumps({
    "model": "claude-sonnet-4-5", "max_tokens": 256, "stream": True,
    "messages": [{"role": "user", "content": "Say hello."}],
}, separators=(",", ":"))
# The OpenAI Chat Completions form of the same call: what A2t, A5 and A6 are sent. Each turns it into
# the Anthropic call above (the upstream's /v1/messages) and the answer back into OpenAI's dialect.
CHAT_PATH = "/v1/chat/completions"
CHAT_BODY = json.dumps({
    "model": "claude-sonnet-4-5", "max_tokens": 256,
    "messages": [{"role": "user", "content": "Say hello."}],
}, separators=(",", ":"))
CHAT_STREAM_BODY = json.dumps({
    "model": "claude-sonnet-4-5", "max_tokens": 256, "stream": True,
    "messages": [{"role": "user", "content": "Say hello."}],
}, separators=(",", ":"))
CHAT = {"path": CHAT_PATH, "body": CHAT_BODY, "stream_body": CHAT_STREAM_BODY}
MESSAGES = {"path": MESSAGES_PATH, "body": MESSAGES_BODY, "stream_body": MESSAGES_STREAM_BODY}
MESSAGES_ARMS = ["direct", "nginx", "airlock", "metered", "limited", "router", "translated", "portkey",
                 "litellm"]
# The arms that translate: their streams are OpenAI chunks made from Anthropic events, so their event
# count is not the upstream's (the one-to-one check does not apply to them).
TRANSLATING = {"translated", "portkey", "litellm"}
# The arms only the LLM workload runs (the others also run the plain one).
LLM_ONLY = {"metered", "limited", "router", "translated", "portkey", "litellm"}
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


def wrk_post_lua(body):
    """A wrk script that POSTs `body` as JSON on every request, with the same reporter."""
    assert "]==]" not in body
    return ('wrk.method = "POST"\n'
            f"wrk.body = [==[{body}]==]\n"
            'wrk.headers["Content-Type"] = "application/json"\n' + WRK_LUA)


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


def pg_bindir():
    """The directory of the local PostgreSQL's server programs (`initdb`, `postgres`), or None:
    on PATH (Debian links them into /usr/local/bin), else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    candidates = [os.path.dirname(os.path.realpath(found))] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda d: [int(x) for x in re.findall(r"\d+", d)], reverse=True)
    for d in candidates:
        if all(os.access(os.path.join(d, p), os.X_OK) for p in ("initdb", "postgres")):
            return d
    return None


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


def rotate(arms, rnd):
    """The arms in round `rnd`'s order: rotated each round so no arm always runs first or last."""
    k = (rnd - 1) % len(arms) if arms else 0
    return arms[k:] + arms[:k]


def arm_headers(a):
    """The headers an arm's client sends: its credential, then any the arm needs besides (Portkey's
    provider and host)."""
    return [a["header"], *a.get("extra", [])]


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
        # Traversable (not listable) by the `postgres` user, whose cluster lives in here when we are root.
        os.chmod(self.tmp, 0o711)
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

    def spawn(self, name, argv, env=None, cores=None, stdout=None, cwd=None, stop_signal=signal.SIGTERM):
        logf = open(os.path.join(self.tmp, f"{name}.log"), "w")
        full = (taskset(cores) if cores else []) + argv
        proc = subprocess.Popen(
            full, env={**os.environ, **(env or {})}, stdout=stdout or logf, stderr=logf,
            cwd=cwd or self.tmp, start_new_session=True,
        )
        proc.log_path = logf.name
        proc.stop_signal = stop_signal
        self.procs[name] = proc
        return proc

    def stop_all(self):
        """Stops every process, the last started first: an Airlock flushes its audit trail to its
        database before that database goes."""
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, proc.stop_signal)
                except OSError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait(timeout=10)

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

    def start_bare(self, arm="bare"):
        port = free_port()
        proc = self.spawn(
            arm,
            [self.bin("bench-passthrough"), "--addr", f"127.0.0.1:{port}", "--upstream",
             f"127.0.0.1:{self.up_port}", "--threads", str(self.workers),
             *(["--in-place"] if arm == "bare_ip" else [])],
            cores=self.proxy_cores,
        )
        wait_port(port, proc)
        self.arms[arm] = {"port": port, "header": f"x-api-key: {REAL_KEY}", "pid": proc.pid}

    def start_bare_ip(self):
        self.start_bare("bare_ip")

    def start_airlock(self, arm="airlock", binary=None, database_url=None, env=None):
        """`airlock serve` as arm `arm`: `binary` (default: this tree's release build) on
        `database_url` (default: a fresh embedded SQLite), with the bench key as a secret, a
        passthrough gateway config that swaps `x-api-key`, and a devbox whose token the arm sends.
        Every instance has its own ports, data directory and spill file, so several run at once."""
        api, port, metrics = free_port(), free_port(), free_port()
        data = os.path.join(self.tmp, f"{arm}-data")
        os.makedirs(data, exist_ok=True)
        admin = "bench-admin-" + secrets.token_hex(16)
        settings = {
            "AIRLOCK_DATABASE_URL": database_url or f"sqlite://{data}/airlock.db",
            "AIRLOCK_API_ADDR": f"127.0.0.1:{api}",
            "AIRLOCK_PROXY_ADDR": f"127.0.0.1:{port}",
            "AIRLOCK_METRICS_ADDR": f"127.0.0.1:{metrics}",
            "AIRLOCK_AUDIT_SPILL_FILE": os.path.join(data, "audit-spill.jsonl"),
            "AIRLOCK_ALLOW_PRIVATE_UPSTREAMS": "127.0.0.0/8",
            "AIRLOCK_ADMIN_TOKEN": admin,
            "AIRLOCK_LOG": "error",
            "AIRLOCK_LOG_FORMAT": "text",
            "TOKIO_WORKER_THREADS": str(self.workers),
            # Every client here is 127.0.0.1, and the idle figure holds up to 10 000 connections
            # from it: without this the per-source cap (1 000) refuses the rest. nginx and HAProxy
            # have no such cap in this rig either.
            "AIRLOCK_MAX_CONNECTIONS_PER_SOURCE": "0",
        }
        # A value of None removes a setting (an older binary refuses settings it does not know).
        for key, value in (env or {}).items():
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = value
        proc = self.spawn(arm, [binary or self.bin("airlock"), "serve"], cores=self.proxy_cores,
                          env=settings)
        wait_port(port, proc)
        wait_port(api, proc)
        a = {"port": port, "pid": proc.pid, "api": api, "admin": admin, "metrics": metrics}
        self.rest_ok(a, "POST", "/v1/secrets", {"name": "BENCH_KEY", "value": REAL_KEY})
        self.rest_ok(a, "POST", "/v1/gateway-configs", {
            "name": "bench", "endpoint": f"http://127.0.0.1:{self.up_port}",
            "auth_mechanism": {"type": "header", "key": "x-api-key"}})
        a["header"] = f"x-api-key: {self.devbox_token(a, 'bench')}"
        self.arms[arm] = a
        if arm == "airlock":
            self.token = a["header"].split(": ", 1)[1]  # nginx and HAProxy map this token
        # The token must work before any measurement.
        self.check(arm)
        return a

    def rest(self, a, method, path, body=None):
        """A call to an Airlock's REST API as its admin: (status, parsed JSON body)."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{a['api']}{path}", method=method,
            data=None if body is None else json.dumps(body).encode())
        req.add_header("authorization", f"Bearer {a['admin']}")
        req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        try:
            return status, json.loads(text or b"null")
        except json.JSONDecodeError:
            return status, {"raw": text.decode(errors="replace")[:300]}

    def rest_ok(self, a, method, path, body=None):
        status, out = self.rest(a, method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {json.dumps(out)[:300]}")
        return out

    def devbox_token(self, a, gateway):
        """Registers a running devbox at 127.0.0.1 with a token for gateway config `gateway`."""
        d = self.rest_ok(a, "POST", "/v1/devboxes", {
            "name": gateway, "source_addresses": ["127.0.0.1"],
            "gateways": {"BENCH": {"gateway": gateway, "secret": "BENCH_KEY"}}})
        return d["environment"]["BENCH"]

    def start_metered(self):
        """A2m: a metered gateway config (`api: anthropic-messages`, provider `anthropic`) on A2's
        process, with its own devbox and token. Skipped with a note when the control plane does
        not take `api` and `provider` yet."""
        a = self.arms["airlock"]
        status, out = self.rest(a, "POST", "/v1/gateway-configs", {
            "name": "bench-metered", "api": "anthropic-messages", "provider": "anthropic",
            "endpoint": f"http://127.0.0.1:{self.up_port}",
            "auth_mechanism": {"type": "header", "key": "x-api-key"}})
        if status >= 300:
            msg = (out or {}).get("error", {}).get("message") if isinstance(out, dict) else None
            self.notes.append(
                f"A2m skipped: this control plane refuses a metered gateway config "
                f"(POST /v1/gateway-configs with api and provider answered {status}: {msg or out})")
            return
        m = {**a, "header": f"x-api-key: {self.devbox_token(a, 'bench-metered')}"}
        self.arms["metered"] = m
        self.check("metered", MESSAGES_PATH, MESSAGES_BODY)
        # The arm is only worth its name if the data plane metered that request.
        deadline = time.monotonic() + 5
        while self.llm_requests(m) < 1:
            if time.monotonic() > deadline:
                self.notes.append("A2m: airlock_proxy_llm_requests_total did not count the check "
                                  "request: the gateway config may not be metered")
                break
            time.sleep(0.1)

    def start_limited(self):
        """A2l: A2m's gateway config on A2's process through a devbox with limits on every count
        (high enough never to refuse): each request takes a reservation from its body and trues it
        up with the metered usage."""
        a = self.arms["airlock"]
        d = self.rest_ok(a, "POST", "/v1/devboxes", {
            "name": "bench-limited", "source_addresses": ["127.0.0.1"],
            "gateways": {"BENCH": {"gateway": "bench-metered", "secret": "BENCH_KEY"}},
            "limits": {"requests_per_minute": 1_000_000_000, "tokens_per_minute": 1_000_000_000_000,
                       "cost_usd_per_day": "1000000000"}})
        self.arms["limited"] = {**a, "header": f"x-api-key: {d['environment']['BENCH']}"}
        self.check("limited", MESSAGES_PATH, MESSAGES_BODY)

    def start_router(self):
        """A2r and A2t: a router gateway config on A2's process whose one backend is A2m's metered
        Anthropic gateway. A2r sends it Anthropic Messages (no translation); A2t sends the same call
        in OpenAI's Chat Completions dialect, translated to Messages and back."""
        a = self.arms["airlock"]
        status, out = self.rest(a, "POST", "/v1/gateway-configs", {
            "name": "bench-router", "type": "router",
            "backends": [{"gateway": "bench-metered", "secret": "BENCH_KEY"}]})
        if status >= 300:
            self.notes.append(f"A2r and A2t skipped: POST /v1/gateway-configs with type router answered "
                              f"{status}: {json.dumps(out)[:200]}")
            return
        d = self.rest_ok(a, "POST", "/v1/devboxes", {
            "name": "bench-router", "source_addresses": ["127.0.0.1"],
            "gateways": {"BENCH": {"gateway": "bench-router"}}})
        token = d["environment"]["BENCH"]
        self.arms["router"] = {**a, "header": f"x-api-key: {token}"}
        self.arms["translated"] = {**a, "header": f"authorization: Bearer {token}", "msg": CHAT}
        self.check("router", MESSAGES_PATH, MESSAGES_BODY)
        self.check("translated", CHAT_PATH, CHAT_BODY)

    def peer_tool(self, *parts):
        p = os.path.join(ROOT, ".bench-tools", *parts)
        return p if os.path.exists(p) else None

    def start_portkey(self):
        """A5: Portkey's open-source gateway (npm `@portkey-ai/gateway`, Node) on the proxy core,
        sent the Chat Completions call with `x-portkey-provider: anthropic` and the upstream as its
        custom host. The client sends the real key: Portkey's open-source gateway has no key store
        (its virtual keys are a feature of the hosted service), so this arm does less than Airlock."""
        start = self.peer_tool("portkey", "node_modules", "@portkey-ai", "gateway", "build", "start-server.js")
        if not start or not shutil.which("node"):
            self.notes.append("A5 skipped: Portkey's gateway is not installed (scripts/bench installs it "
                              "with npm into .bench-tools/portkey)")
            return
        port = free_port()
        proc = self.spawn("portkey", ["node", start, f"--port={port}", "--headless"], cores=self.proxy_cores,
                          env={"NODE_ENV": "production"}, cwd=os.path.dirname(start))
        wait_port(port, proc, timeout=60)
        self.arms["portkey"] = {
            "port": port, "pid": proc.pid, "msg": CHAT, "header": f"authorization: Bearer {REAL_KEY}",
            "extra": ["x-portkey-provider: anthropic",
                      f"x-portkey-custom-host: http://127.0.0.1:{self.up_port}/v1"]}
        self.check("portkey", CHAT_PATH, CHAT_BODY)

    def start_litellm(self):
        """A6: LiteLLM's proxy (PyPI `litellm[proxy]`, one worker, no database, logging off) on the
        proxy core, with the upstream as an `anthropic/` model and the real key in its config; the
        client sends LiteLLM's master key and the Chat Completions call."""
        exe = self.peer_tool("litellm", "bin", "litellm")
        if not exe:
            self.notes.append("A6 skipped: LiteLLM's proxy is not installed (scripts/bench installs it "
                              "with pip into .bench-tools/litellm)")
            return
        d = os.path.join(self.tmp, "litellm")
        os.makedirs(d, exist_ok=True)
        master = "sk-bench-master-" + secrets.token_hex(8)
        cfg = os.path.join(d, "config.yaml")
        with open(cfg, "w") as f:
            f.write(f"""model_list:
  - model_name: claude-sonnet-4-5
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: http://127.0.0.1:{self.up_port}
      api_key: {REAL_KEY}
litellm_settings:
  turn_off_message_logging: true
  drop_params: true
general_settings:
  master_key: {master}
  disable_spend_logs: true
  disable_error_logs: true
""")
        port = free_port()
        proc = self.spawn("litellm", [exe, "--config", cfg, "--host", "127.0.0.1", "--port", str(port),
                                      "--num_workers", "1"], cores=self.proxy_cores, cwd=d,
                          env={"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
                               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DISABLE_SCHEMA_UPDATE": "True"})
        wait_port(port, proc, timeout=180)
        self.arms["litellm"] = {"port": port, "pid": proc.pid, "msg": CHAT,
                                "header": f"authorization: Bearer {master}"}
        self.check("litellm", CHAT_PATH, CHAT_BODY)

    def samples(self, a, prefix):
        """The arm's Prometheus samples whose line starts with `prefix`, as (line's series,
        value) pairs; None if it has no operations listener or it does not answer."""
        if "metrics" not in a:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{a['metrics']}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        return [(line.rsplit(" ", 1)[0], float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines() if line.startswith(prefix)]

    def audit_settled(self, arm, timeout=60.0):
        """For an Airlock arm, waits until every audit event of the load is in the database (the
        queue empty, the spill file replayed) and returns how long that took after the load, so
        that CPU per request also counts audit work done after the load ended (Airlock writes
        the audit at idle priority, and from the spill file when saturated). None otherwise."""
        a = self.arms[arm]
        start = time.time()
        while True:
            m = self.samples(a, "airlock_audit_")
            if m is None:
                return None
            m = dict(m)
            if not m.get("airlock_audit_queue_depth") and not m.get("airlock_audit_spill_pending"):
                return time.time() - start
            if time.time() - start > timeout:
                self.notes.append(f"{LABEL[arm]}: the audit had not settled "
                                  f"{timeout:.0f} s after a load")
                return time.time() - start
            time.sleep(0.05)

    def llm_requests(self, a):
        """airlock_proxy_llm_requests_total, summed over its labels, from the arm's operations listener."""
        return sum(v for _, v in self.samples(a, "airlock_proxy_llm_requests_total") or [])

    def start_postgres(self):
        """A throwaway PostgreSQL cluster from the local installation, pinned with the upstream
        (it is the database's host, not the proxy's); returns a superuser URL, or None with a
        note. No flushes to disk: the figure is the data plane's cost, not this machine's disk."""
        bindir = pg_bindir()
        if not bindir:
            self.notes.append("A2p skipped: no PostgreSQL installation (initdb and postgres on PATH "
                              "or under /usr/lib/postgresql/*/bin)")
            return None
        d = os.path.join(self.tmp, "pg")
        os.makedirs(d)
        runas = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            runas = ["runuser", "-u", "postgres", "--"]
            shutil.chown(d, "postgres")
        data = os.path.join(d, "data")
        r = subprocess.run(runas + [os.path.join(bindir, "initdb"), "-D", data, "--username=postgres",
                                    "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
                           cwd=d, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            self.notes.append(f"A2p skipped: initdb failed: {(r.stdout + r.stderr).strip()[-300:]}")
            return None
        port = free_port()
        proc = self.spawn("postgres", runas + [
            os.path.join(bindir, "postgres"), "-D", data, "-p", str(port), "-k", d,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
        ], cores=self.client_cores, cwd=d, stop_signal=signal.SIGINT)  # SIGINT: fast shutdown
        wait_port(port, proc, timeout=60)
        isready = os.path.join(bindir, "pg_isready")
        deadline = time.monotonic() + 30
        while os.access(isready, os.X_OK) and subprocess.run(
                [isready, "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL accepts connections but is not ready after 30 s")
            time.sleep(0.2)
        self.pg_pid = proc.pid
        return f"postgres://postgres@127.0.0.1:{port}/postgres"

    def start_airlock_pg(self):
        """A2p: Airlock on PostgreSQL, as production runs it."""
        url = self.start_postgres()
        if url:
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            a = self.start_airlock("airlock_pg", database_url=url, env={"AIRLOCK_MASTER_KEY": key})
            a["side_pid"] = self.pg_pid  # the database's CPU is reported beside the proxy's

    def start_baseline(self, binary):
        """A2b: A2 from another airlock binary (an older build), for a before/after ratio."""
        binary = os.path.abspath(binary)
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"--baseline {binary}: not an executable file")
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        self.baseline = {"path": binary, "version": (r.stdout or r.stderr).strip()}
        # Binaries from before the per-source cap refuse its setting, and have no such cap; the
        # others get it like A2, so that their idle figure holds as many connections.
        with open(binary, "rb") as f:
            knows_cap = b"AIRLOCK_MAX_CONNECTIONS_PER_SOURCE" in f.read()
        self.start_airlock("airlock_base", binary=binary,
                           env=None if knows_cap else {"AIRLOCK_MAX_CONNECTIONS_PER_SOURCE": None})

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

    def check(self, arm, path="/instant", body=None):
        """Waits until `path` answers 200 through the arm (a POST of JSON `body` if given)."""
        a = self.arms[arm]
        req = urllib.request.Request(f"http://127.0.0.1:{a['port']}{path}",
                                     data=body.encode() if body else None)
        for h in arm_headers(a):
            name, value = h.split(": ", 1)
            req.add_header(name, value)
        if body:
            req.add_header("content-type", "application/json")
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    r.read()
                    if r.status == 200:
                        return
                    e = f"status {r.status}"
            except Exception as err:  # noqa: BLE001 - retried, then reported
                e = err
            if time.monotonic() > deadline:
                raise RuntimeError(f"{arm}: {path} does not answer 200 ({e})")
            time.sleep(0.1)

    def pids(self, arm):
        pid = self.arms[arm]["pid"]
        return proc_tree(pid) if pid else []

    # ---------------------------------------------------------------- load tools

    def wrk(self, arm, path, conns, seconds, body=None):
        """Closed loop: GET `path`, or POST JSON `body` to it, on `conns` connections. CPU per
        request counts the arm's processes (and, as `side_cpu_us_per_req`, its database's)."""
        a = self.arms[arm]
        lua = os.path.join(self.tmp, "report-post.lua" if body else "report.lua")
        with open(lua, "w") as f:
            f.write(wrk_post_lua(body) if body else WRK_LUA)
        cmd = taskset(self.client_cores) + [
            "wrk", "-t", str(min(len(self.client_cores), conns)), "-c", str(conns), "-d", f"{seconds}s",
            "--timeout", "10s", *[x for h in arm_headers(a) for x in ("-H", h)], "-s", lua,
            f"http://127.0.0.1:{a['port']}{path}",
        ]
        pids = self.pids(arm)
        side = proc_tree(a["side_pid"]) if a.get("side_pid") else []
        cpu0, side0 = cpu_seconds(pids), cpu_seconds(side)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        settle = self.audit_settled(arm)
        cpu1, side1 = cpu_seconds(pids), cpu_seconds(side)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if not line:
            raise RuntimeError(f"wrk failed for {arm}: {r.stdout}{r.stderr}")
        out = json.loads(line[-1])
        out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
        out["cpu_s"] = cpu1 - cpu0
        if settle is not None:
            out["audit_settle_s"] = settle
        out["cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / max(out["requests"], 1) if pids else None
        if side:
            out["side_cpu_us_per_req"] = (side1 - side0) * 1e6 / max(out["requests"], 1)
        if out["errors"] or out["status_errors"]:
            self.notes.append(f"{LABEL[arm]} {'POST ' if body else ''}{path} c={conns}: {out['errors']} "
                              f"socket errors, {out['status_errors']} non-2xx answers")
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

    def sse(self, arm, streams, path="/sse", body=None):
        """`streams` SSE streams at once: GET `path`, or POST JSON `body` to it."""
        a = self.arms[arm]
        cmd = taskset(self.client_cores) + [
            self.bin("bench-probe"), "sse", "--addr", f"127.0.0.1:{a['port']}",
            *[x for h in arm_headers(a) for x in ("--header", h)], "--streams", str(streams), "--concurrency", str(streams), "--path", path,
        ] + (["--post", body] if body else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"sse probe failed for {arm}: {r.stderr}")
        s = json.loads(r.stdout)["streams"]
        # A stream that failed (no head, or no event) has no time to count; `ok` says it failed.
        heads = sorted(x["head_us"] for x in s if x.get("head_us") is not None)
        firsts = sorted(x["first_event_us"] for x in s if x.get("first_event_us") is not None)
        gaps = sorted(g for x in s for g in x["gaps_us"])
        return {
            "ok": all(x["ok"] for x in s),
            "failed": sum(1 for x in s if not x["ok"]),
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
                 if k in ("rps", "p50", "p99", "p999", "cpu_us_per_req", "first_p99", "head_p99", "rss_mb",
                           "audit_settle_s")}
        log(f"round {round_} {LABEL[arm]:24} {figure:18} {brief}")

    def plain_arms(self):
        """The arms of the plain workload (`/instant`, `/delay`, `/sse`): every arm but A2m."""
        return [a for a in ARMS if a in self.arms and a not in LLM_ONLY]

    def messages_arms(self):
        """The arms of the LLM workload (when A2m runs): A0, nginx and A2 as the plain hops, A2m,
        A2l, A2r on Anthropic Messages; A2t, Portkey and LiteLLM on the same call in OpenAI's dialect."""
        return [a for a in MESSAGES_ARMS if a in self.arms] if "metered" in self.arms else []

    def processes(self):
        """The proxy arms that are processes of their own (A2m is A2's process)."""
        return [a for a in self.plain_arms() if self.arms[a]["pid"]]

    def plain_round(self, rnd):
        p = self.p
        order = rotate(self.plain_arms(), rnd)
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

    def messages_round(self, rnd):
        """A2m next to A2 and A0, all sending the same Anthropic Messages calls."""
        p = self.p
        order = rotate(self.messages_arms(), rnd)
        for arm in order:
            m = self.arms[arm].get("msg", MESSAGES)
            self.record(rnd, arm, "msg_throughput", self.wrk(arm, m["path"], 64, p["throughput_s"], m["body"]))
        for arm in order:
            m = self.arms[arm].get("msg", MESSAGES)
            self.record(rnd, arm, "msg_latency_1conn", self.wrk(arm, m["path"], 1, p["latency_s"], m["body"]))
        for arm in order:
            m = self.arms[arm].get("msg", MESSAGES)
            self.record(rnd, arm, "msg_sse", self.sse(arm, p["sse_streams"], m["path"], m["stream_body"]))

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
        self.start_bare_ip()
        self.start_airlock()
        self.start_nginx()
        self.start_haproxy()
        if not self.args.skip_metered:
            self.start_metered()
            if "metered" in self.arms:
                self.start_limited()
                self.start_router()
        if not self.args.skip_peers and "metered" in self.arms:
            self.start_portkey()
            self.start_litellm()
        if not self.args.skip_postgres:
            self.start_airlock_pg()
        if self.args.baseline:
            self.start_baseline(self.args.baseline)
        log("arms: " + ", ".join(LABEL[a] for a in ARMS if a in self.arms))
        for arm in self.plain_arms():
            self.check(arm)
        for arm in self.plain_arms():
            self.wrk(arm, "/instant", 64, p["warmup_s"])
        for arm in self.messages_arms():
            m = self.arms[arm].get("msg", MESSAGES)
            self.wrk(arm, m["path"], 64, p["warmup_s"], m["body"])
        if not self.oha:
            self.notes.append("oha is not installed (cargo install oha failed or was skipped): "
                              "the open-loop figures are missing")
        for rnd in range(1, p["rounds"] + 1):
            self.plain_round(rnd)
            if self.messages_arms():
                self.messages_round(rnd)
        # Peak RSS over all load so far, then the idle keep-alive figure.
        self.peak = {arm: status_kb(self.pids(arm), "VmHWM") / 1024 for arm in self.processes()}
        for arm in self.processes():
            self.record(0, arm, "idle", self.idle(arm, p["idle_conns"]))
        if "metered" in self.arms:
            self.results["metered_llm_requests"] = self.llm_requests(self.arms["metered"])
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
                if fig in ("sse", "msg_sse"):
                    out[fig][arm]["one_to_one"] = all(
                        r["ok"] and r["events_min"] == 64 and r["coalesced"] == 0 and r["stalls"] == 0
                        for r in rows)
        # Added latency: arm minus direct, per round, then the median over rounds.
        added = {}
        sse_keys = ["head_p50", "head_p99", "first_p50", "first_p99", "gap_mean", "gap_p99"]
        for fig, keys in [("latency_1conn", ["p50", "p99", "p999"])] + [
                (f"open_{r}", ["p50", "p99", "p999"]) for r in self.p["rates"]] + [
                ("sse", sse_keys), ("msg_latency_1conn", ["p50", "p99", "p999"]), ("msg_sse", sse_keys)]:
            for arm in ARMS[1:]:
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
        for fig, key in [("throughput", "rps"), ("throughput", "cpu_us_per_req"), ("delay", "rps"),
                         ("msg_throughput", "rps"), ("msg_throughput", "cpu_us_per_req")]:
            for a in ARMS:
                for b in ARMS:
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
            "arms": [a for a in ARMS if a in self.arms],
            "baseline": getattr(self, "baseline", None),
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
    L.append("- Arms: " + ", ".join(LABEL[a] for a in doc.get("arms", [])))
    if doc.get("baseline"):
        L.append(f"- A2b baseline binary: `{doc['baseline']['path']}` ({doc['baseline']['version']})")
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
    L.append("Airlock's CPU per request counts all the audit work a load caused: the harness reads the "
             "CPU clock only when the audit queue is empty and the spill file replayed, so work the "
             "idle-priority writer did after the load ended is in it.\n")
    r = s["ratios"]
    L.append("Ratios (per round, median (min–max)):\n")
    L.append("| ratio | req/s | CPU per request |")
    L.append("|---|---|---|")
    for a, b in [("airlock", "nginx"), ("airlock", "haproxy"), ("airlock", "bare"), ("airlock", "direct"),
                 ("airlock_pg", "airlock"), ("airlock", "airlock_base"), ("bare", "nginx"), ("bare_ip", "bare"), ("haproxy", "nginx")]:
        if f"{a}/{b}" not in r.get("throughput.rps", {}):
            continue
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
        for arm in [a for a in ARMS if a in ad[fig]]:
            row = ad[fig][arm]
            L.append(f"| {LABEL[arm]} | " + " | ".join(spread(row.get(k[1])) for k in keys) + " |")
        L.append("")

    def one_to_one(fig):
        if fig in s:
            L.append("Events one to one (64 per stream, no read carrying two events, no gap over 35 ms): " +
                     ", ".join(f"{LABEL[a]} {'yes' if s[fig][a].get('one_to_one') else 'NO'}"
                               for a in ARMS if a in s[fig] and a not in TRANSLATING) + "\n")

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
    for arm in [a for a in ARMS if a in s["peak_rss_mb"]]:
        t = s.get("throughput", {}).get(arm, {})
        i = s.get("idle", {}).get(arm, {})
        L.append(f"| {LABEL[arm]} | {spread(t.get('cpu_us_per_req'), 1)} | {fmt(s['peak_rss_mb'].get(arm), 1)} | "
                 f"{spread(i.get('rss_mb'), 1)} | {spread(i.get('connected'))} |")
    L.append("")
    side = s.get("throughput", {}).get("airlock_pg", {}).get("side_cpu_us_per_req")
    if side:
        L.append(f"A2p's PostgreSQL, on the upstream's core and not counted above: {spread(side, 1)} µs CPU "
                 "per request at 64 connections.\n")
    table(f"Many in flight: `/delay` (50 ms upstream), {doc['parameters']['delay_conns']} connections",
          "delay", [("req/s", "rps"), ("CPU µs/request", "cpu_us_per_req", 1), ("p50 µs", "p50"),
                    ("p99 µs", "p99")])
    table("4. SSE (64 events, 20 ms apart), µs from sending the request", "sse",
          [("head p50", "head_p50"), ("head p99", "head_p99"), ("first event p50", "first_p50"),
           ("first event p99", "first_p99"), ("mean gap", "gap_mean"), ("gap p99", "gap_p99")])
    added_table("SSE added time", "sse",
                [("head p50", "head_p50"), ("head p99", "head_p99"), ("first event p50", "first_p50"),
                 ("first event p99", "first_p99"), ("mean gap", "gap_mean"), ("gap p99", "gap_p99")])
    one_to_one("sse")
    render_messages(doc, L, table, added_table, one_to_one)
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


def render_messages(doc, L, table, added_table, one_to_one):
    """The LLM-gateway section: A2m next to A2 and A0 on Anthropic Messages calls, and the
    milestone's targets against this run (PERF.md, "LLM gateways")."""
    s = doc["summary"]
    r = s["ratios"]
    if "msg_throughput" in s:
        table(f"4m. Metering: Anthropic Messages (`POST {MESSAGES_PATH}`), closed loop, 64 connections",
              "msg_throughput", [("req/s", "rps"), ("CPU µs/request (proxy)", "cpu_us_per_req", 1),
                                 ("p50 µs", "p50"), ("p99 µs", "p99")])
        L.append("A2 is the same process and the same request through a passthrough gateway config; "
                 "A2m's gateway config has `api: anthropic-messages` and reads the usage of every answer; "
                 "A2l is A2m through a devbox with limits on requests, tokens and cost; A2r is a router "
                 "over A2m's gateway, sent the same Messages call. A2t (the same router), A5 Portkey and "
                 f"A6 LiteLLM are sent the call in OpenAI's dialect (`POST {CHAT_PATH}`) and translate it "
                 "to the upstream's Messages and the answer back. A5's client sends the real key itself "
                 "(Portkey's open-source gateway keeps no keys); A6 holds it in its config.\n")
        for a, b in [("metered", "airlock"), ("limited", "metered"), ("router", "metered"),
                     ("translated", "router"), ("router", "nginx"), ("translated", "nginx"),
                     ("translated", "portkey"), ("translated", "litellm"), ("metered", "direct"),
                     ("airlock", "direct"), ("airlock", "nginx")]:
            if f"{a}/{b}" not in r.get("msg_throughput.rps", {}):
                continue
            L.append(f"- {LABEL[a]} / {LABEL[b]}: req/s {spread(r.get('msg_throughput.rps', {}).get(f'{a}/{b}'), 2)}, "
                     f"CPU per request {spread(r.get('msg_throughput.cpu_us_per_req', {}).get(f'{a}/{b}'), 2)}")
        L.append("")
        table(f"Metering: latency at one connection (`POST {MESSAGES_PATH}`), µs", "msg_latency_1conn",
              [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")])
        added_table("Added latency at one connection, Messages", "msg_latency_1conn",
                    [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")])
        keys = [("head p50", "head_p50"), ("head p99", "head_p99"), ("first event p50", "first_p50"),
                ("first event p99", "first_p99"), ("mean gap", "gap_mean"), ("gap p99", "gap_p99")]
        table("Metering: Anthropic SSE (`\"stream\": true`, 64 events, 20 ms apart), µs", "msg_sse", keys)
        added_table("Anthropic SSE added time", "msg_sse", keys)
        one_to_one("msg_sse")
        if doc.get("metered_llm_requests") is not None:
            L.append(f"A2m's process counted {doc['metered_llm_requests']:,.0f} metered requests "
                     "(`airlock_proxy_llm_requests_total`).\n")
    checks = []

    def check(name, value, target, ok):
        if value is not None:
            checks.append(f"| {name} | {value} | {target} | {'met' if ok else 'miss'} |")

    cpu_m = r.get("msg_throughput.cpu_us_per_req", {}).get("metered/airlock")
    check("Metering: CPU per request A2m / A2", spread(cpu_m, 3) if cpu_m else None, "≤ 1.10",
          cpu_m and cpu_m["median"] <= 1.10)
    first = s.get("added", {}).get("msg_sse", {}).get("metered", {}).get("first_p99")
    check("Metering: SSE added first-event p99", spread(first) + " µs" if first else None, "≤ 300 µs",
          first and first["median"] <= 300)
    o2o = s.get("msg_sse", {}).get("metered", {}).get("one_to_one")
    check("Metering: SSE events one to one", None if o2o is None else ("yes" if o2o else "no"), "yes", o2o)
    cpu_l = r.get("msg_throughput.cpu_us_per_req", {}).get("limited/metered")
    check("Limits: CPU per request A2l / A2m", spread(cpu_l, 3) if cpu_l else None, "≤ 1.05",
          cpu_l and cpu_l["median"] <= 1.05)
    added1 = s.get("added", {}).get("msg_latency_1conn", {})
    ng = added1.get("nginx", {}).get("p99")
    for arm, bar in [("router", 1.5), ("translated", 2.0)]:
        x = added1.get(arm, {}).get("p99")
        if x and ng and ng["median"] > 0:
            ratio = x["median"] / ng["median"]
            check(f"Router: added p99 at one connection, {LABEL[arm]} / nginx",
                  f"{ratio:.2f}× ({x['median']:.0f} vs {ng['median']:.0f} µs)", f"≤ {bar}×", ratio <= bar)
    for a, b, bar in [("router", "nginx", 0.5), ("translated", "nginx", 0.5), ("translated", "portkey", 3.0),
                      ("translated", "litellm", 10.0)]:
        x = r.get("msg_throughput.rps", {}).get(f"{a}/{b}")
        check(f"Router: req/s {LABEL[a]} / {LABEL[b]}", spread(x, 2) if x else None, f"≥ {bar}×",
              x and x["median"] >= bar)
    cpu_b = r.get("throughput.cpu_us_per_req", {}).get("airlock/airlock_base")
    check("Passthrough: CPU per request A2 / A2b", spread(cpu_b, 3) if cpu_b else None, "≤ 1.03",
          cpu_b and cpu_b["median"] <= 1.03)
    if checks:
        L.append("**LLM-gateway milestone targets in this run** (PERF.md; medians, one run):\n")
        L.append("| target | measured | bar | |")
        L.append("|---|---|---|---|")
        L.extend(checks)
        L.append("")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--rounds", type=int, help="override the profile's rounds")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-propagation", action="store_true")
    ap.add_argument("--skip-metered", action="store_true", help="leave out A2m (Airlock, metered)")
    ap.add_argument("--skip-peers", action="store_true",
                    help="leave out A5 (Portkey) and A6 (LiteLLM)")
    ap.add_argument("--skip-postgres", action="store_true", help="leave out A2p (Airlock on Postgres)")
    ap.add_argument("--baseline", metavar="AIRLOCK_BINARY",
                    help="add A2b: A2 from this airlock binary (an older build), for a before/after ratio")
    args = ap.parse_args()
    b = Bench(args)
    try:
        b.run()
    finally:
        b.stop_all()
        shutil.rmtree(b.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
