#!/usr/bin/env python3
"""Benchmark harness: this project's tunnel against direct loopback, rathole, bore, nginx, Caddy.

The https cases put its HTTPS entrypoint (tunnel-server -> agent -> origin) against nginx and
Caddy terminating TLS in front of the same origin.

Run through `bench/run` (which installs the tools and builds the binaries); see
docs/BENCHMARKS.md. Everything listens on and connects to 127.0.0.1 only. Every process is
started here, recorded in a PID file (which `bench/run` sweeps on exit), and stopped here;
children also get SIGKILL if this process dies (PR_SET_PDEATHSIG; nginx-tls's master gets SIGTERM,
so that it stops its workers).
"""

import argparse
import ctypes
import datetime
import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
LOOP = "127.0.0.1"
NCPU = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

SYSTEMS = ["direct", "tunnel-tcp", "tunnel-tls", "tunnel-quic", "tunnel-tcp-1t", "tunnel-tcp-metrics", "tunnel-tcp-fwd",
           "tunnel-tcp-base", "tunnel-tcp-a2", "rathole", "rathole-noise", "rathole-bw", "bore",
           "nginx-tls", "caddy-tls", "tunnel-https"]
# The systems of the https cases, and only of those: each terminates TLS for HTTPS_HOST and
# proxies to the same origin as the wrk cases.
HTTPS_SYSTEMS = ["nginx-tls", "caddy-tls", "tunnel-https"]
# Run only when named in --only (or with --base): not part of the default comparison.
OPT_IN = {"tunnel-tcp-base", "rathole-bw", "tunnel-tcp-a2"}
LABELS = {
    "direct": "direct",
    "tunnel-tcp": "relay://",
    "tunnel-tls": "relay+tls://",
    "tunnel-quic": "relay+quic://",
    # The same as relay:// with the server on one thread (--threads 1), as on a small machine
    # shared with busy neighbours; not a default, so no target row uses it.
    "tunnel-tcp-1t": "relay://, server --threads 1",
    # The same as relay:// with the agent on two threads (--threads 2): a session on each.
    "tunnel-tcp-a2": "relay://, agent --threads 2",
    # The same as relay:// with the admin listener on, so every stream is counted in the
    # metrics: what the counters cost on the hot path.
    "tunnel-tcp-metrics": "relay://, metrics on",
    # Two replicas of the server in a cluster ([cluster], a redis-server on a Unix socket): the
    # agent holds sessions on replica A only and every visitor enters at replica B, so each one
    # is forwarded B -> A -> agent. What a visitor on the "wrong" replica pays.
    "tunnel-tcp-fwd": "relay://, forwarded B→A",
    # relay:// built from an earlier commit (bench/run --base REV): a change measured against
    # what it changed, in the same run. Only with --base-bin-dir.
    "tunnel-tcp-base": "relay://, before",
    "rathole": "rathole (tcp)",
    "rathole-noise": "rathole (noise)",
    # rathole's README: "If the bandwidth is more important, TCP_NODELAY can be opted out with
    # nodelay = false" (its default has been true since 0.4.7). Opt-in: the comparison runs
    # rathole as installed, with its defaults.
    "rathole-bw": "rathole (tcp, nodelay = false)",
    "bore": "bore",
    # TLS terminated in front of the origin: nginx and Caddy proxy straight to it, the tunnel
    # server hands each request to the agent, which takes it to the origin.
    "nginx-tls": "nginx (TLS → origin)",
    "caddy-tls": "Caddy (TLS → origin)",
    "tunnel-https": "tunnel https (TLS → agent → origin)",
}
ALL_CASES = ["mem", "mem-raw", "iperf1", "iperf8", "wrk-ka", "wrk-close", "wrk-c1", "redis", "presence",
             "https-mem", "https-ka", "https-close", "https-full"]
# Run on HTTPS_SYSTEMS only, which run nothing else.
HTTPS_CASES = ["https-mem", "https-ka", "https-close", "https-full"]
# The certificate's only name (SAN DNS:bench.test), the SNI and the Host of every https request.
HTTPS_HOST = "bench.test"
# Threads (tunnel-server --threads), workers (nginx worker_processes) and GOMAXPROCS (Caddy) of
# the three https systems: the same for all, one per core.
HTTPS_WORKERS = NCPU
# The TLS every https client offers, so that all three servers negotiate the same: TLS 1.3 only,
# TLS_AES_128_GCM_SHA256 (what Go, i.e. Caddy, picks for TLS 1.3 on a machine with AES
# instructions, whatever the client prefers; rustls follows the client's order, so with
# OpenSSL's default order it would take TLS_AES_256_GCM_SHA384), and X25519 key exchange. Given
# to wrk, the holder and `openssl s_client` as OPENSSL_CONF; nginx and Caddy are also set to it.
HTTPS_TLS = {"version": "TLSv1.3", "suite": "TLS_AES_128_GCM_SHA256", "group": "X25519"}
WEB_HOST = "web.local"
# A raw (non-sniffing) entrypoint to the same nginx, for the idle visitors of `mem-raw`.
RAW_HOST = "raw.local"
# Agent sessions in the mem-raw case (the default is 2).
RAW_HOLD_SESSIONS = 3
# A raw entrypoint to the redis-server origin of the `redis` case.
REDIS_HOST = "redis.local"
# The server's default presence lease ([cluster] lease, not set here) and its renewal period.
CLUSTER_LEASE = 6.0
RENEW_PERIOD = CLUSTER_LEASE / 3
# redis-benchmark's commands, as its CSV names them, and the metric suffix of each.
REDIS_TESTS = [("SET", "set"), ("GET", "get"), ("PING_INLINE", "ping")]
# bore logs every visitor connection at its default level (info: "incoming connection", "new
# connection", "connection exited"); rathole 0.5.0 logs per visitor only at debug, so warn
# changes nothing for it. Both run at warn so that logging costs them nothing in the
# comparison. Our binaries log no line per visitor.
PEER_ENV = {"RUST_LOG": "warn"}
IPERF_HOST = "iperf.local"


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup(sig=signal.SIGKILL):
    # PR_SET_PDEATHSIG = 1: the child is killed if the harness dies without cleaning up.
    _libc.prctl(1, sig, 0, 0, 0)


def _child_setup_term():
    # For a master process (nginx-tls): SIGTERM, on which it stops its workers before exiting.
    _child_setup(signal.SIGTERM)


def proc_starttime(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


class Procs:
    """Every long-running process of the run, recorded in a PID file."""

    def __init__(self, pidfile, logdir):
        self.pidfile = pidfile
        self.logdir = logdir
        self.live = []
        self.started = 0

    def start(self, name, argv, env=None, stdin=None, death_signal=None):
        self.started += 1  # one log file per start: a system restarted next round logs anew
        log = os.path.join(self.logdir, f"{self.started:03d}-{name}.log")
        out = open(log, "ab")
        full_env = dict(os.environ)
        full_env.pop("RUST_LOG", None)
        full_env.pop("TUNNEL_TOKEN", None)
        full_env.update(env or {})
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=stdin or subprocess.DEVNULL,
                             env=full_env, preexec_fn=_child_setup_term if death_signal == signal.SIGTERM
                             else _child_setup, cwd=self.logdir)
        out.close()
        p.name, p.log = name, log
        try:
            with open(self.pidfile, "a") as f:
                f.write(f"{p.pid} {proc_starttime(p.pid)} {name}\n")
        except OSError:
            pass
        self.live.append(p)
        return p

    def adopt(self, name, pid):
        """Records a process started by one of ours (nginx's workers), so that bench/run's sweep
        finds it too; returns (pid, start time) for `kill_leftover`."""
        start = proc_starttime(pid)
        try:
            with open(self.pidfile, "a") as f:
                f.write(f"{pid} {start} {name}\n")
        except OSError:
            pass
        return pid, start

    def stop(self, p, grace=3.0):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in reversed(list(self.live)):
            self.stop(p)


def kill_leftover(pid, start):
    """SIGKILL to an adopted process still running after its parent stopped (same start time:
    never a recycled PID)."""
    try:
        if proc_starttime(pid) == start:
            os.kill(pid, signal.SIGKILL)
    except (OSError, IndexError):
        pass


def children(pid):
    """The PIDs whose parent is `pid`."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def log_text(p):
    try:
        with open(p.log, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_log(p, pattern, timeout=20.0, count=1):
    """Waits until `pattern` (regex) matched `count` lines of p's log; returns the last match."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in (rx.search(line) for line in log_text(p).splitlines()) if m]
        if len(found) >= count:
            return found[count - 1]
        if p.poll() is not None:
            raise BenchError(f"{p.name} exited ({p.returncode}) before logging /{pattern}/:\n{tail(p)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{p.name} did not log /{pattern}/ within {timeout}s:\n{tail(p)}")
        time.sleep(0.05)


def tail(p, n=15):
    return "\n".join(log_text(p).splitlines()[-n:])


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def listening(port):
    """Whether some socket listens on TCP `port` (from /proc/net/tcp)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(want) and fields[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def wait_listen(procs, port, timeout=20.0):
    """Waits until `port` is listening; fails early if one of `procs` exits."""
    deadline = time.monotonic() + timeout
    while not listening(port):
        for p in procs:
            if p.poll() is not None:
                raise BenchError(f"{p.name} exited ({p.returncode}):\n{tail(p)}")
        if time.monotonic() > deadline:
            raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout}s:\n" +
                             "\n".join(tail(p) for p in procs))
        time.sleep(0.05)


def http_get(port, host=WEB_HOST, timeout=2.0, ctx=None):
    """One GET / with Connection: close to 127.0.0.1:port for `host` (over TLS with `host` as
    SNI when `ctx` is given); returns the status code (or raises)."""
    with socket.create_connection((LOOP, port), timeout=timeout) as raw:
        s = ctx.wrap_socket(raw, server_hostname=host) if ctx else raw
        with s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    parts = data.split(b"\r\n", 1)[0].split()
    if len(parts) < 2:
        scheme = "HTTPS" if ctx else "HTTP"
        raise BenchError(f"no {scheme} answer from 127.0.0.1:{port}: {data[:80]!r}")
    return int(parts[1])


def wait_http(port, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status = http_get(port)
            if status == 200:
                return
            last = f"status {status}"
        except (OSError, BenchError) as e:
            last = str(e)
        time.sleep(0.1)
    raise BenchError(f"127.0.0.1:{port} did not answer 200 within {timeout}s ({last})")


def holder_alive(holder):
    """How many of its connections hold_conns.py finds still open."""
    holder.stdin.write(b"check\n")
    holder.stdin.flush()
    return json.loads(wait_log(holder, r"^(\{\"alive\".*\})$", timeout=30).group(1))["alive"]


def https_context(cert):
    """A client context that trusts only the run's certificate and checks the name in it."""
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = True
    return ctx


def wait_https(port, ctx, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status = http_get(port, HTTPS_HOST, ctx=ctx)
            if status == 200:
                return
            last = f"status {status}"
        except (OSError, BenchError) as e:  # ssl.SSLError is an OSError
            last = str(e)
        time.sleep(0.1)
    raise BenchError(f"https://{HTTPS_HOST}:{port} (127.0.0.1) did not answer 200 within {timeout}s ({last})")


def redis_cli(sock, *args):
    """`redis-cli -s SOCK ARGS...`: its trimmed output, or "" if it failed."""
    try:
        r = subprocess.run(["redis-cli", "-s", sock, *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""


def redis_calls(sock):
    """Calls per command so far, from `INFO commandstats` (`cmdstat_set:calls=3,usec=...`)."""
    out = redis_cli(sock, "INFO", "commandstats")
    if not out:
        raise BenchError(f"INFO commandstats failed on {sock}")
    calls = {}
    for m in re.finditer(r"^cmdstat_(\S+?):calls=(\d+)", out, re.M):
        calls[m.group(1)] = int(m.group(2))
    return calls


def calls_between(before, after):
    """Commands counted between two `redis_calls`, without the INFO calls that read them."""
    diff = {k: v - before.get(k, 0) for k, v in after.items() if k != "info"}
    return {k: v for k, v in diff.items() if v}


# --------------------------------------------------------------------------- /proc

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def cpu_seconds(pids):
    return sum(cpu_ticks(p) for p in pids) / CLK_TCK


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError(f"no VmRSS for {pid}")


def _stat_cpu():
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    return vals[3] + vals[4], sum(vals)  # idle + iowait, total


def _all_proc_ticks():
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    raw = f.read()
                comm = raw[raw.index("(") + 1:raw.rindex(")")]
                fields = raw.rsplit(")", 1)[1].split()
                out[int(d)] = (comm, int(fields[11]) + int(fields[12]))
            except (OSError, ValueError, IndexError):
                pass
    return out


def cpu_sample(interval, ours=()):
    """Busy cores over `interval` seconds, the load average, and the busiest processes (those
    of this benchmark marked "(bench)")."""
    p0, (i0, t0) = _all_proc_ticks(), _stat_cpu()
    time.sleep(interval)
    p1, (i1, t1) = _all_proc_ticks(), _stat_cpu()
    busy = (1.0 - (i1 - i0) / max(1, t1 - t0)) * NCPU
    per = {}
    for pid, (comm, ticks) in p1.items():
        if pid in p0:
            d = ticks - p0[pid][1]
            if d > 0:
                name = f"{comm} (bench)" if pid in ours or pid == os.getpid() else comm
                per[name] = per.get(name, 0) + d
    top = sorted(per.items(), key=lambda kv: -kv[1])[:3]
    top = [f"{c} {100.0 * t / CLK_TCK / interval:.0f}%" for c, t in top]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    return busy, load, top


# --------------------------------------------------------------------------- the harness

class Bench:
    def __init__(self, args):
        self.a = args
        os.makedirs(args.out, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="tunnel-bench-")
        self.procs = Procs(args.pidfile or os.path.join(args.out, ".pids"), self.tmp)
        self.results = {s: {} for s in args.systems}
        self.busy_log = []
        self.case_count = 0
        self.origin_port = None
        self.iperf_port = None
        self.iperf_proc = None
        self.redis_port = None
        self.tools = args.tools_dir
        self.uuid = str(uuid.uuid4())
        self.tls = None  # the https cases' certificate and client files (make_tls)
        self.negotiated = {}  # system -> what `openssl s_client` negotiated with it

    # ----- helpers

    def say(self, msg):
        print(msg, file=sys.stderr, flush=True)

    def record(self, system, metric, value, busy, note=None, extra=None):
        sample = {"value": value, "busy": busy}
        if note:
            sample["note"] = note
        if extra:
            sample.update(extra)
        self.results[system].setdefault(metric, []).append(sample)

    def idle_check(self, what):
        """Waits (up to --idle-wait s) for the machine to be idle; returns busy info or None."""
        self.case_count += 1
        interval = 0.3 if self.a.idle_wait <= 0 else 1.0
        deadline = time.monotonic() + max(0.0, self.a.idle_wait)
        while True:
            busy, load, top = cpu_sample(interval, {p.pid for p in self.procs.live})
            if busy < self.a.idle_threshold:
                return None
            if time.monotonic() >= deadline:
                info = {"case": what, "busy_cores": round(busy, 2), "load1": load, "top": top}
                self.busy_log.append(info)
                self.say(f"    machine busy before {what}: {busy:.2f} cores busy, load {load}, top: {', '.join(top)}")
                return info

    # ----- origins shared by all systems

    def start_origins(self):
        if self.a.origin == "nginx":
            self.origin_port = free_port()
            www = os.path.join(self.tmp, "www")
            os.makedirs(www, exist_ok=True)
            with open(os.path.join(www, "index.html"), "w") as f:
                f.write("<!DOCTYPE html>\n<html><head><title>bench</title></head><body>" + "x" * 540 +
                        "</body></html>\n")
            conf = os.path.join(self.tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(tmp=self.tmp, port=self.origin_port, www=www))
            p = self.procs.start("nginx", [self.a.nginx, "-p", self.tmp, "-c", conf, "-e", os.path.join(self.tmp, "nginx-error.log")])
        else:
            p = self.procs.start("origin", [sys.executable, os.path.join(HERE, "origin.py"), "0"])
            self.origin_port = int(wait_log(p, r"listening (\d+)").group(1))
        wait_http(self.origin_port)
        self.start_iperf_server()
        if any(self.cases_for(s) for s in HTTPS_SYSTEMS if s in self.a.systems):
            self.make_tls()
        if "redis" in self.a.cases:
            # The origin of the redis case: Debian's redis-server, persistence off, on loopback.
            self.redis_port = free_port()
            p = self.procs.start("redis-origin", ["redis-server", "--port", str(self.redis_port), "--bind", LOOP,
                                                  "--save", "", "--appendonly", "no", "--daemonize", "no"])
            wait_listen([p], self.redis_port)

    def cases_for(self, system):
        """The selected cases that run on `system`: the https ones on the https systems only."""
        if system in HTTPS_SYSTEMS:
            return [c for c in self.a.cases if c in HTTPS_CASES]
        return [c for c in self.a.cases if c not in HTTPS_CASES]

    def make_tls(self):
        """Once per run: one ECDSA P-256 certificate for HTTPS_HOST that all three https systems
        serve, and the files of the https clients (OpenSSL settings, wrk script, resumption
        shim)."""
        d = os.path.join(self.tmp, "tls")
        os.makedirs(d, exist_ok=True)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={HTTPS_HOST}",
                            "-addext", f"subjectAltName=DNS:{HTTPS_HOST}"], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"openssl req failed: {r.stderr.strip()[-300:]}")
        os.chmod(key, 0o600)  # the tunnel server refuses a key file others can read
        cnf = os.path.join(d, "client-openssl.cnf")
        with open(cnf, "w") as f:
            f.write(CLIENT_OPENSSL_CNF.format(**HTTPS_TLS))
        lua = os.path.join(d, "resolve.lua")
        with open(lua, "w") as f:
            f.write(WRK_RESOLVE_LUA.format(loop=LOOP))
        self.tls = {"cert": cert, "key": key, "lua": lua, "env": {"OPENSSL_CONF": cnf}, "noresume": None,
                    "noresume_error": None}
        self.tls["ctx"] = https_context(cert)
        if "https-full" in self.a.cases:
            src, so = os.path.join(d, "noresume.c"), os.path.join(d, "noresume.so")
            with open(src, "w") as f:
                f.write(NORESUME_C)
            try:
                r = subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", so, src, "-ldl"], capture_output=True,
                                   text=True, timeout=60)
                if r.returncode == 0:
                    self.tls["noresume"] = so
                else:
                    self.tls["noresume_error"] = f"cc failed: {r.stderr.strip()[-200:]}"
            except (OSError, subprocess.TimeoutExpired) as e:
                self.tls["noresume_error"] = f"no C compiler for the resumption shim ({e})"

    def https_env(self, full=False):
        """The environment of an https client: OPENSSL_CONF, and for full handshakes the shim."""
        env = dict(os.environ)
        env.update(self.tls["env"])
        if full:
            env["LD_PRELOAD"] = self.tls["noresume"]
        return env

    def check_negotiated(self, system, port):
        """What an https client of this run negotiates with `system` (openssl s_client -brief,
        with the clients' OPENSSL_CONF): kept for the table, and the run fails the system if it
        is not HTTPS_TLS with the ECDSA certificate."""
        try:
            r = subprocess.run(["openssl", "s_client", "-connect", f"{LOOP}:{port}", "-servername", HTTPS_HOST,
                                "-brief"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL,
                               env=self.https_env())
            out = r.stdout + r.stderr
        except subprocess.TimeoutExpired:
            raise BenchError(f"openssl s_client to {system} timed out")

        def field(name):
            m = re.search(rf"^{name}:\s*(.+)$", out, re.M)
            return m.group(1).strip() if m else "?"

        got = {"version": field("Protocol version"), "suite": field("Ciphersuite"),
               "group": field("(?:Server|Peer) Temp Key").split(",")[0], "signature": field("Signature type"),
               "hash": field("Hash used")}
        self.negotiated[system] = got
        want = dict(HTTPS_TLS, signature="ECDSA")
        if any(got[k] != v for k, v in want.items()):
            raise BenchError(f"{system} negotiated {got}, not {want}:\n{out.strip()[-400:]}")

    def start_iperf_server(self):
        # A restart keeps the port: the running system's agent points at it.
        if self.iperf_proc is not None:
            self.procs.stop(self.iperf_proc)
        self.iperf_port = self.iperf_port or free_port()
        self.iperf_proc = self.procs.start(
            "iperf3-server", ["iperf3", "-s", "-B", LOOP, "-p", str(self.iperf_port), "--forceflush"])
        wait_listen([self.iperf_proc], self.iperf_port)

    # ----- systems

    def start_system(self, system, env, agent_sessions=None):
        """Starts `system`, filling `env`: ports (web, iperf), procs, mem_pids, cpu_pids, roles."""
        env.update(web=self.origin_port, iperf=self.iperf_port, redis=self.redis_port, procs=[], mem_pids=[],
                   cpu_pids=[], roles={})
        if system == "direct":
            return env
        if system == "nginx-tls":
            return self.start_nginx_tls(env)
        if system == "caddy-tls":
            return self.start_caddy_tls(env)
        if system == "tunnel-https":
            return self.start_tunnel_https(system, env)
        if system.startswith("tunnel-"):
            return self.start_tunnel(system, env, agent_sessions)
        if system.startswith("rathole"):
            return self.start_rathole(system, env)
        if system == "bore":
            return self.start_bore(env)
        raise BenchError(f"unknown system {system}")

    def raw_routes(self):
        """The raw entrypoints besides the sniffing one for web.local: (env key, hostname, origin
        port). `raw.local` (to nginx) and `redis.local` only when their case runs, so that the
        other cases run the same setup as before."""
        routes = [("iperf", IPERF_HOST, self.iperf_port)]
        if "mem-raw" in self.a.cases:
            routes.append(("raw", RAW_HOST, self.origin_port))
        if self.redis_port:
            routes.append(("redis", REDIS_HOST, self.redis_port))
        return routes

    def server_entrypoints(self, server, env):
        """Reads the entrypoint ports from a server's log into env (web, iperf, ...)."""
        env["web"] = int(wait_log(server, r'"message":"entrypoint listening","addr":"[^"]*:(\d+)","hostname":"\(sniffed\)"').group(1))
        for key, host, _ in self.raw_routes():
            env[key] = int(wait_log(server, r'"message":"entrypoint listening","addr":"[^"]*:(\d+)","hostname":"' +
                                    re.escape(host) + '"').group(1))

    def start_agent(self, system, env, relay_addr, transport, pin=None, bins=None, sessions=None, routes=None):
        conf = os.path.join(self.tmp, f"{system}-agent.toml")
        with open(conf, "w") as f:
            f.write(f'[relay]\naddr = "{relay_addr}"\ndialer = "{transport}"\ntunnelID = "{self.uuid}"\n')
            if pin:
                f.write(f'pin = "{pin}"\n')
            if sessions:
                f.write(f'sessions = {sessions}\n')
            f.write('\n[[services]]\nname = "bench"\ntype = "rtcp"\n')
            for name, host, port in routes or [("web", WEB_HOST, self.origin_port)] + self.raw_routes():
                f.write(f'\n[[services.forwarder.nodes]]\nname = "{name}"\naddr = "{LOOP}:{port}"\nhost = "{host}"\n')
        agent = self.procs.start(f"{system}-agent", [os.path.join(bins or self.a.bin_dir, "tunnel-agent"),
                                                     "--log-format", "json",
                                                     *(["--threads", "2"] if system.endswith("-a2") else []),
                                                     "-C", conf])
        env["procs"].append(agent)
        wait_log(agent, r"session established", count=sessions or 1)
        return agent

    def start_tunnel(self, system, env, agent_sessions=None):
        if system == "tunnel-tcp-fwd":
            return self.start_cluster(system, env, agent_sessions)
        transport = system.split("-")[1]
        server_flags = ["--threads", "1"] if system.endswith("-1t") else []
        if system.endswith("-metrics"):
            server_flags = ["--admin", f"{LOOP}:0"]
        scheme = {"tcp": "relay", "tls": "relay+tls", "quic": "relay+quic"}[transport]
        routes = self.raw_routes()
        entry = ",".join([f"{LOOP}:0"] + [f"{LOOP}:0/{host}" for _, host, _ in routes])
        rules = ",".join(f"{host}:{self.uuid}" for host in [WEB_HOST] + [h for _, h, _ in routes])
        url = f"{scheme}://{LOOP}:0?entryPoint={entry}&tunnel={rules}"
        if transport != "tcp":
            state = os.path.join(self.tmp, f"state-{transport}")
            os.makedirs(state, exist_ok=True)
            url += f"&stateDir={state}"
        bins = self.a.base_bin_dir if system.endswith("-base") else self.a.bin_dir
        server = self.procs.start(f"{system}-server",
                                  [os.path.join(bins, "tunnel-server"), "--log-format", "json", *server_flags, "-L", url])
        env["procs"].append(server)
        m = wait_log(server, r'"message":"relay listening".*?"addr":"([^"]+)"')
        relay_addr = m.group(1)
        pin = None
        if transport != "tcp":
            pin = wait_log(server, r'"message":"relay listening".*?"fingerprint":"(sha256:[0-9a-f]+)"').group(1)
        self.server_entrypoints(server, env)
        agent = self.start_agent(system, env, relay_addr, transport, pin, bins, agent_sessions)
        wait_http(env["web"])
        env["mem_pids"] = env["cpu_pids"] = [server.pid, agent.pid]
        env["roles"] = {"server": [server.pid], "agent": [agent.pid]}
        return env

    def start_cluster(self, system, env, agent_sessions=None):
        """Two replicas sharing a redis-server: the agent on A, every visitor entering at B."""
        sock = os.path.join(self.tmp, f"{system}-redis", "redis.sock")
        os.makedirs(os.path.dirname(sock), exist_ok=True)
        redis = self.procs.start(f"{system}-redis", ["redis-server", "--port", "0", "--unixsocket", sock,
                                                     "--save", "", "--appendonly", "no", "--daemonize", "no"])
        env["procs"].append(redis)
        deadline = time.monotonic() + 20
        while redis_cli(sock, "PING") != "PONG":
            if redis.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"redis-server did not answer on {sock}:\n{tail(redis)}")
            time.sleep(0.05)
        env["redis_sock"] = sock
        routes = self.raw_routes()
        secret = uuid.uuid4().hex
        replicas = {}
        for name in ("a", "b"):
            conf = os.path.join(self.tmp, f"{system}-{name}.toml")
            with open(conf, "w") as f:
                f.write(f'addr = "{LOOP}:0"\n')
                f.write("entryPoint = [" + ", ".join([f'"{LOOP}:0"'] + [f'"{LOOP}:0/{h}"' for _, h, _ in routes]) + "]\n")
                for host in [WEB_HOST] + [h for _, h, _ in routes]:
                    f.write(f'\n[[ingress.rules]]\nhostname = "{host}"\nendpoint = "{self.uuid}"\n')
                f.write(f'\n[cluster]\nname = "bench-{name}"\npeer = "{LOOP}:0"\nredis = "unix://{sock}"\n'
                        f'secret = "{secret}"\n')
            server = self.procs.start(f"{system}-{name}", [os.path.join(self.a.bin_dir, "tunnel-server"),
                                                          "--log-format", "json", "-C", conf])
            env["procs"].append(server)
            wait_log(server, r"cluster: presence published")
            replicas[name] = server
        a, b = replicas["a"], replicas["b"]
        relay_a = wait_log(a, r'"message":"relay listening".*?"addr":"([^"]+)"').group(1)
        self.server_entrypoints(b, env)  # visitors enter at B
        agent = self.start_agent(system, env, relay_a, "tcp", sessions=agent_sessions)
        # B learns from Redis that A now holds the tunnel; until then its visitors get 502.
        wait_http(env["web"])
        if "link to replica up" not in log_text(b):
            raise BenchError(f"replica B answered without a link to A:\n{tail(b)}")
        env["mem_pids"] = env["cpu_pids"] = [a.pid, b.pid, agent.pid]
        env["roles"] = {"server": [a.pid, b.pid], "agent": [agent.pid]}
        return env

    def start_rathole(self, system, env):
        noise = system == "rathole-noise"
        nodelay = "" if system != "rathole-bw" else "nodelay = false\n"
        rathole = os.path.join(self.tools, "rathole")
        ctrl = free_port()
        # rathole has no sniffing entrypoint: web is a raw service already, so mem-raw's
        # raw.local is not added (the mem case is its raw figure).
        services = [("web", free_port(), self.origin_port), ("iperf", free_port(), self.iperf_port)]
        if self.redis_port:
            services.append(("redis", free_port(), self.redis_port))
        token = uuid.uuid4().hex
        transport_s = '[server.transport]\ntype = "tcp"\n'
        transport_c = '[client.transport]\ntype = "tcp"\n'
        if nodelay:
            transport_s += f"[server.transport.tcp]\n{nodelay}"
            transport_c += f"[client.transport.tcp]\n{nodelay}"
        if noise:
            out = subprocess.run([rathole, "--genkey"], capture_output=True, text=True, check=True).stdout
            keys = re.findall(r"Key:\s*\n\s*(\S+)", out)
            if len(keys) != 2:
                raise BenchError(f"cannot parse rathole --genkey output: {out!r}")
            priv, pub = keys
            transport_s = f'[server.transport]\ntype = "noise"\n[server.transport.noise]\nlocal_private_key = "{priv}"\n'
            transport_c = f'[client.transport]\ntype = "noise"\n[client.transport.noise]\nremote_public_key = "{pub}"\n'
        sconf = os.path.join(self.tmp, f"{system}-server.toml")
        cconf = os.path.join(self.tmp, f"{system}-client.toml")
        with open(sconf, "w") as f:
            f.write(f'[server]\nbind_addr = "{LOOP}:{ctrl}"\ndefault_token = "{token}"\n\n{transport_s}\n')
            for name, ep, _ in services:
                f.write(f'[server.services.{name}]\nbind_addr = "{LOOP}:{ep}"\n\n')
        with open(cconf, "w") as f:
            f.write(f'[client]\nremote_addr = "{LOOP}:{ctrl}"\ndefault_token = "{token}"\n\n{transport_c}\n')
            for name, _, port in services:
                f.write(f'[client.services.{name}]\nlocal_addr = "{LOOP}:{port}"\n\n')
        server = self.procs.start(f"{system}-server", [rathole, "-s", sconf], env=PEER_ENV)
        env["procs"].append(server)
        wait_listen([server], ctrl)
        client = self.procs.start(f"{system}-client", [rathole, "-c", cconf], env=PEER_ENV)
        env["procs"].append(client)
        # The server opens a service's port once that service's control channel is up.
        for name, ep, _ in services:
            wait_listen([server, client], ep)
            env[name] = ep
        wait_http(env["web"])
        env["mem_pids"] = env["cpu_pids"] = [server.pid, client.pid]
        env["roles"] = {"server": [server.pid], "agent": [client.pid]}
        return env

    def start_bore(self, env):
        bore = os.path.join(self.tools, "bore")
        if not port_free(7835):
            raise BenchError("bore's control port 7835 is in use")
        ep_web, ep_iperf = free_port(), free_port()
        ep_redis = free_port() if self.redis_port else None
        ports = [p for p in (ep_web, ep_iperf, ep_redis) if p]
        lo, hi = min(ports), max(ports)
        server = self.procs.start("bore-server", [bore, "server", "--bind-addr", LOOP, "--min-port", str(lo),
                                                  "--max-port", str(hi)], env=PEER_ENV)
        env["procs"].append(server)
        wait_listen([server], 7835)
        web = self.procs.start("bore-local-web", [bore, "local", str(self.origin_port), "--local-host", LOOP,
                                                  "--to", LOOP, "--port", str(ep_web)], env=PEER_ENV)
        env["procs"].append(web)
        wait_listen([server, web], ep_web)
        ip = self.procs.start("bore-local-iperf", [bore, "local", str(self.iperf_port), "--local-host", LOOP,
                                                   "--to", LOOP, "--port", str(ep_iperf)], env=PEER_ENV)
        env["procs"].append(ip)
        wait_listen([server, ip], ep_iperf)
        if ep_redis:
            rd = self.procs.start("bore-local-redis", [bore, "local", str(self.redis_port), "--local-host", LOOP,
                                                       "--to", LOOP, "--port", str(ep_redis)], env=PEER_ENV)
            env["procs"].append(rd)
            wait_listen([server, rd], ep_redis)
        wait_http(ep_web)
        env.update(web=ep_web, iperf=ep_iperf, redis=ep_redis)
        # bore runs one client per published port: memory counts the server and the web
        # client, CPU the server and the iperf3 client (the processes on each path).
        env["mem_pids"] = [server.pid, web.pid]
        env["cpu_pids"] = [server.pid, ip.pid]
        env["roles"] = {"server": [server.pid], "agent": [web.pid]}
        return env

    def start_nginx_tls(self, env):
        """nginx terminating TLS and proxying to the origin over kept-alive connections, with as
        many workers as the tunnel server has threads."""
        d = os.path.join(self.tmp, "nginx-tls")
        os.makedirs(d, exist_ok=True)
        port = free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_TLS_CONF.format(dir=d, workers=HTTPS_WORKERS, loop=LOOP, port=port, origin=self.origin_port,
                                          host=HTTPS_HOST, cert=self.tls["cert"], key=self.tls["key"], **HTTPS_TLS))
        # The workers are not our children: the master gets SIGTERM, not SIGKILL, if the harness
        # dies (it then stops them), and each is in the PID file as soon as it is seen.
        master = self.procs.start("nginx-tls", [self.a.nginx, "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")],
                                  death_signal=signal.SIGTERM)
        env["procs"].append(master)
        env["adopted"] = []
        workers = []
        deadline = time.monotonic() + 20
        while len(workers) < HTTPS_WORKERS:
            for w in children(master.pid):
                if w not in workers:
                    workers.append(w)
                    env["adopted"].append(self.procs.adopt("nginx-tls-worker", w))
            if len(workers) >= HTTPS_WORKERS:
                break
            if master.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"nginx-tls did not start {HTTPS_WORKERS} workers:\n{tail(master)}")
            time.sleep(0.01)
        wait_listen([master], port)
        wait_https(port, self.tls["ctx"])
        self.check_negotiated("nginx-tls", port)
        env["https"] = port
        env["mem_pids"] = env["cpu_pids"] = [master.pid] + workers
        env["roles"] = {"server": [master.pid] + workers}
        return env

    def start_caddy_tls(self, env):
        """Caddy (as packaged) terminating TLS and proxying to the origin; admin API, automatic
        HTTPS and HTTP/3 off; its state under the run's temporary directory."""
        d = os.path.join(self.tmp, "caddy-tls")
        os.makedirs(d, exist_ok=True)
        port = free_port()
        conf = os.path.join(d, "Caddyfile")
        with open(conf, "w") as f:
            f.write(CADDYFILE.format(loop=LOOP, port=port, origin=self.origin_port, host=HTTPS_HOST,
                                     cert=self.tls["cert"], key=self.tls["key"], group=HTTPS_TLS["group"].lower()))
        caddy_env = {"HOME": d, "XDG_CONFIG_HOME": os.path.join(d, "config"), "XDG_DATA_HOME": os.path.join(d, "data"),
                     "GOMAXPROCS": str(HTTPS_WORKERS)}
        p = self.procs.start("caddy-tls", [self.a.caddy, "run", "--config", conf, "--adapter", "caddyfile"],
                             env=caddy_env)
        env["procs"].append(p)
        wait_listen([p], port)
        wait_https(port, self.tls["ctx"])
        self.check_negotiated("caddy-tls", port)
        env["https"] = port
        env["mem_pids"] = env["cpu_pids"] = [p.pid]
        env["roles"] = {"server": [p.pid]}
        return env

    def start_tunnel_https(self, system, env):
        """tunnel-server with a `tls = true` entrypoint holding the run's certificate for
        HTTPS_HOST, and an agent whose one target is the origin."""
        conf = os.path.join(self.tmp, f"{system}-server.toml")
        with open(conf, "w") as f:
            f.write(f'addr = "{LOOP}:0"\n\n[[entrypoints]]\naddr = "{LOOP}:0"\ntls = true\naccessLog = false\n\n'
                    f'[[tls.certificates]]\ncertFile = "{self.tls["cert"]}"\nkeyFile = "{self.tls["key"]}"\n\n'
                    f'[[ingress.rules]]\nhostname = "{HTTPS_HOST}"\nendpoint = "{self.uuid}"\n')
        server = self.procs.start(f"{system}-server", [os.path.join(self.a.bin_dir, "tunnel-server"), "--log-format",
                                                       "json", "--threads", str(HTTPS_WORKERS), "-C", conf])
        env["procs"].append(server)
        relay_addr = wait_log(server, r'"message":"relay listening".*?"addr":"([^"]+)"').group(1)
        port = int(wait_log(server, r'"message":"entrypoint listening","addr":"[^"]*:(\d+)"').group(1))
        agent = self.start_agent(system, env, relay_addr, "tcp", routes=[("web", HTTPS_HOST, self.origin_port)])
        wait_https(port, self.tls["ctx"])
        self.check_negotiated(system, port)
        env["https"] = port
        env["mem_pids"] = env["cpu_pids"] = [server.pid, agent.pid]
        env["roles"] = {"server": [server.pid], "agent": [agent.pid]}
        return env

    def stop_system(self, env):
        for p in reversed(env["procs"]):
            self.procs.stop(p)
        for pid, start in env.get("adopted", []):
            kill_leftover(pid, start)  # nginx's master stops its workers; this is for a master that died

    # ----- cases

    def case_mem(self, system, env, raw=False):
        """RSS idle (not with raw), then with --hold idle visitors: through the sniffing
        entrypoint (web.local), or with raw through the raw one (raw.local, same nginx)."""
        if system == "direct" or (raw and "raw" not in env):
            return
        if raw:
            # Fresh processes, so that the memory of earlier cases is not counted (nor reused),
            # and a third agent session: each raw visitor takes a tunnel stream of its own for
            # as long as it is open, and two sessions carry at most 2 x 500 streams (the
            # server's default limit per session), one of them already the pooled origin
            # connection of the readiness check.
            self.stop_system(env)
            env.clear()
            self.start_system(system, env, agent_sessions=RAW_HOLD_SESSIONS)
            time.sleep(0.5)
        roles = env["roles"]
        idle = {r: sum(rss_mib(p) for p in pids) for r, pids in roles.items()}
        if not raw:
            busy = self.idle_check(f"{system} rss idle")
            self.record(system, "rss_idle", sum(rss_mib(p) for p in env["mem_pids"]), busy,
                        extra={"by_role": idle})
        n = self.a.hold
        metric, port, host = ("rss_hold_raw", env["raw"], RAW_HOST) if raw else ("rss_hold", env["web"], WEB_HOST)
        busy = self.idle_check(f"{system} {metric} {n} idle visitors")
        holder = self.procs.start(f"{system}-hold", [sys.executable, os.path.join(HERE, "hold_conns.py"), LOOP,
                                                     str(port), str(n), host, "100", "60"],
                                  stdin=subprocess.PIPE)
        try:
            line = wait_log(holder, r"^(\{.*\"established\".*\})$", timeout=90).group(1)
            report = json.loads(line)
            time.sleep(2.0)  # let the tunnel settle with everything idle
            for p in env["procs"]:
                if p.poll() is not None:
                    raise BenchError(f"{p.name} died holding {n} connections:\n{tail(p)}")
            by_role = {r: sum(rss_mib(p) for p in pids) for r, pids in roles.items()}
            total = sum(rss_mib(p) for p in env["mem_pids"])
            alive = holder_alive(holder)
        finally:
            self.stop_holder(holder)
        note = None
        if report["established"] < n or alive < report["established"]:
            note = f"{report['established']}/{n} established, {alive} alive ({report['statuses']})"
            self.say(f"    {system}: {note}")
        self.say(f"    {system} rss: idle {sum(idle.values()):.1f} MiB, with {report['established']} idle visitors "
                 f"{'(raw entrypoint) ' if raw else ''}{total:.1f} MiB "
                 f"({', '.join(f'{r} {v:.1f}' for r, v in by_role.items())}; opened in {report['seconds']:.2f} s)")
        self.record(system, metric, total, busy, note=note,
                    extra={"by_role": by_role, "established": report["established"], "alive": alive,
                           "open_seconds": report["seconds"]})
        time.sleep(1.0)  # connections close

    def stop_holder(self, holder):
        """Closes hold_conns.py's input (it then lets its connections go) and stops it."""
        try:
            holder.stdin.close()
        except OSError:
            pass
        self.procs.stop(holder)

    def case_https_mem(self, system, env):
        """RSS before and with --hold idle HTTPS visitors (each completed a TLS handshake and
        one keep-alive request, then sits idle): the difference per 1000 visitors, by role (the
        server: nginx's master and workers, Caddy, tunnel-server; the agent)."""
        roles = env["roles"]
        before = {r: sum(rss_mib(p) for p in pids) for r, pids in roles.items()}
        n = self.a.hold
        busy = self.idle_check(f"{system} https-mem {n} idle TLS visitors")
        holder = self.procs.start(f"{system}-hold", [sys.executable, os.path.join(HERE, "hold_conns.py"), "--tls",
                                                     LOOP, str(env["https"]), str(n), HTTPS_HOST, "100", "60"],
                                  env=self.tls["env"], stdin=subprocess.PIPE)
        try:
            report = json.loads(wait_log(holder, r"^(\{.*\"established\".*\})$", timeout=90).group(1))
            time.sleep(2.0)  # let the server settle with everything idle
            for p in env["procs"]:
                if p.poll() is not None:
                    raise BenchError(f"{p.name} died holding {n} TLS connections:\n{tail(p)}")
            after = {r: sum(rss_mib(p) for p in pids) for r, pids in roles.items()}
            alive = holder_alive(holder)
        finally:
            self.stop_holder(holder)
        est = report["established"]
        note = None
        if est < n or alive < est:
            note = f"{est}/{n} established, {alive} alive ({report['statuses']})"
            self.say(f"    {system}: {note}")
        per = {r: (after[r] - before[r]) * 1000.0 / est if est else None for r in roles}
        extra = {"by_role": per, "before": before, "after": after, "established": est, "alive": alive,
                 "open_seconds": report["seconds"]}
        self.record(system, "tls_rss_1000", per["server"], busy, note=note, extra=extra)
        total = None if not est else sum(per.values())
        self.record(system, "tls_rss_1000_all", total, busy, note=note, extra=extra)
        self.say(f"    {system} https-mem: {', '.join(f'{r} {before[r]:.1f} -> {after[r]:.1f} MiB' for r in roles)} "
                 f"with {est} idle TLS visitors (opened in {report['seconds']:.2f} s, {alive} alive): "
                 + ", ".join(f"{r} {v:.2f} MiB" for r, v in per.items() if v is not None) + " per 1000")
        time.sleep(1.0)  # connections close

    def case_iperf(self, system, env, streams, reverse):
        metric = f"iperf{streams}_{'down' if reverse else 'up'}"
        busy = self.idle_check(f"{system} {metric}")
        t = self.a.iperf_time
        argv = ["iperf3", "-c", LOOP, "-p", str(env["iperf"]), "-t", str(t), "-J", "--connect-timeout", "5000"]
        if streams > 1:
            argv += ["-P", str(streams)]
        if reverse:
            argv.append("-R")
        pids = env["cpu_pids"]
        c0 = cpu_seconds(pids) if pids else 0.0
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=t + 30, preexec_fn=_child_setup)
        except subprocess.TimeoutExpired:
            self.record(system, metric, None, busy, note="iperf3 timed out")
            self.start_iperf_server()
            return
        c1 = cpu_seconds(pids) if pids else 0.0
        try:
            j = json.loads(r.stdout)
        except ValueError:
            j = {"error": (r.stdout + r.stderr).strip()[-300:]}
        if "error" in j or r.returncode != 0:
            self.say(f"    {system} {metric}: iperf3 failed: {j.get('error')}")
            self.record(system, metric, None, busy, note=f"iperf3: {j.get('error')}")
            self.start_iperf_server()  # a failed test can leave the server stuck
            return
        recv = j["end"]["sum_received"]
        gbps = recv["bits_per_second"] / 1e9
        nbytes = recv["bytes"]
        cpu = c1 - c0
        extra = {"bytes": nbytes}
        if pids:
            extra.update(cpu_s=cpu, cpu_per_gb=cpu / (nbytes / 1e9) if nbytes else None)
        self.record(system, metric, gbps, busy, extra=extra)
        self.say(f"    {system} {metric}: {gbps:.2f} Gbit/s" +
                 (f", {cpu:.2f} CPU-s, {extra['cpu_per_gb']:.2f} CPU-s/GB" if pids and nbytes else ""))

    def case_wrk(self, system, env, kind):
        """wrk against the origin through the system: kind ka, close or c1 over HTTP; tls_ka,
        tls_close (Connection: close: a new TLS connection per request, which wrk resumes with
        the session of the previous one, as a returning visitor does) or tls_full (the same with
        every session dropped: a full handshake, certificate and signature, per request)."""
        case = f"https-{kind[4:]}" if kind.startswith("tls_") else f"wrk-{kind}"
        busy = self.idle_check(f"{system} {case}")
        d = self.a.wrk_duration
        if kind == "c1":
            threads, conns = 1, 1
        else:
            threads, conns = self.a.wrk_threads, self.a.wrk_connections
        run_env = None
        if kind.startswith("tls_"):
            if kind == "tls_full" and not self.tls["noresume"]:
                for metric in ("rps", "p50", "p99"):
                    self.record(system, f"{kind}_{metric}", None, busy, note=self.tls["noresume_error"])
                return
            # wrk sends the URL's host as SNI and resolves it first: the script resolves it to
            # 127.0.0.1 instead (see WRK_RESOLVE_LUA), so SNI and Host are bench.test and no
            # hosts entry is needed.
            argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{d}s", "--latency", "-s", self.tls["lua"],
                    "-H", f"Host: {HTTPS_HOST}"]
            if kind in ("tls_close", "tls_full"):
                argv += ["-H", "Connection: close"]
            argv.append(f"https://{HTTPS_HOST}:{env['https']}/")
            run_env = self.https_env(full=kind == "tls_full")
        else:
            argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{d}s", "--latency", "-H", f"Host: {WEB_HOST}"]
            if kind in ("close", "c1"):
                argv += ["-H", "Connection: close"]
            argv.append(f"http://{LOOP}:{env['web']}/")
        roles = env.get("roles") or {}
        c0 = {role: cpu_seconds(pids) for role, pids in roles.items()}
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=d + 30, preexec_fn=_child_setup,
                               env=run_env)
        except subprocess.TimeoutExpired:
            for metric in ("rps", "p50", "p99"):
                self.record(system, f"{kind}_{metric}", None, busy, note="wrk timed out")
            return
        out = r.stdout
        m = re.search(r"Requests/sec:\s*([\d.]+)", out)
        if r.returncode != 0 or not m:
            note = f"wrk failed: {(out + r.stderr).strip()[-200:]}"
            self.say(f"    {system} {case}: {note}")
            for metric in ("rps", "p50", "p99"):
                self.record(system, f"{kind}_{metric}", None, busy, note=note)
            return
        rps = float(m.group(1))
        lat = {}
        for pct, val, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
            lat[pct] = float(val) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
        errors = {}
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if m:
            errors = {k: int(v) for k, v in zip(["connect", "read", "write", "timeout"], m.groups()) if int(v)}
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if m:
            errors["non2xx"] = int(m.group(1))
        total = re.search(r"(\d+) requests in", out)
        note = f"wrk errors {errors}" if errors else None
        extra = {"requests": int(total.group(1)) if total else None, "errors": errors}
        # CPU time of each role per request (microseconds), to see which process a change costs.
        cpu_us = {}
        if extra["requests"]:
            for role, pids in roles.items():
                cpu_us[role] = (cpu_seconds(pids) - c0[role]) / extra["requests"] * 1e6
            extra["cpu_us_per_req"] = cpu_us
        self.record(system, f"{kind}_rps", rps, busy, note=note, extra=extra)
        for pct in ("50", "99"):
            if pct in lat:
                self.record(system, f"{kind}_p{pct}", lat[pct], busy, note=note)
        self.say(f"    {system} {case}: {rps:.0f} req/s, p50 {lat.get('50', 0):.3f} ms, p99 {lat.get('99', 0):.3f} ms"
                 + "".join(f", {role} {us:.1f} CPU-us/req" for role, us in cpu_us.items())
                 + (f", errors {errors}" if errors else ""))

    def case_redis(self, system, env, conns):
        """redis-benchmark SET, GET and PING_INLINE at -c CONNS through the system's path to the
        redis-server origin: requests/s per command (and p50 from its CSV)."""
        busy = self.idle_check(f"{system} redis -c{conns}")
        n = self.a.redis_requests if conns > 1 else self.a.redis_requests_c1
        argv = ["redis-benchmark", "-h", LOOP, "-p", str(env["redis"]), "-c", str(conns), "-n", str(n),
                "-t", ",".join(t.lower() for t, _ in REDIS_TESTS), "--csv"]
        metrics = [f"redis{conns}_{m}" for _, m in REDIS_TESTS]
        # redis-benchmark spins on a refused connection instead of failing: check the path first.
        try:
            ping = subprocess.run(["redis-cli", "-h", LOOP, "-p", str(env["redis"]), "PING"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except subprocess.TimeoutExpired:
            ping = "no answer in 10 s"
        if ping != "PONG":
            for metric in metrics:
                self.record(system, metric, None, busy, note=f"redis-cli PING through the path: {ping!r}")
            self.say(f"    {system} redis -c{conns}: PING answered {ping!r}")
            return
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=90, preexec_fn=_child_setup)
        except subprocess.TimeoutExpired:
            for metric in metrics:
                self.record(system, metric, None, busy, note="redis-benchmark timed out")
            return
        rows = {}
        for line in r.stdout.splitlines():
            cells = [c.strip('"') for c in line.split(",")]
            if len(cells) >= 5 and cells[0] in dict(REDIS_TESTS):
                try:
                    rows[cells[0]] = (float(cells[1]), float(cells[4]))  # rps, p50_latency_ms
                except ValueError:
                    pass
        shown = []
        for (test, m), metric in zip(REDIS_TESTS, metrics):
            if r.returncode != 0 or test not in rows:
                note = f"redis-benchmark failed: {(r.stdout + r.stderr).strip()[-200:]}"
                self.record(system, metric, None, busy, note=note)
                continue
            rps, p50 = rows[test]
            self.record(system, metric, rps, busy, extra={"p50_ms": p50, "requests": n})
            shown.append(f"{test} {rps:.0f}/s (p50 {p50:.3f} ms)")
        self.say(f"    {system} redis -c{conns}: " + (", ".join(shown) or f"failed ({r.stderr.strip()[-200:]})"))

    def case_presence(self, system, env):
        """Redis commands during a window in which --presence-visitors new visitor connections
        go through replica B, and during an idle window right after it, of the same length.
        Both hold the lease renewals (SET, SCAN and MGET every lease/3 on each replica), so the
        difference is what the visitors cost Redis (the goal: nothing)."""
        sock = env.get("redis_sock")
        if not sock:
            return
        busy = self.idle_check(f"{system} presence")
        n = self.a.presence_visitors
        t0 = time.monotonic()
        s0 = redis_calls(sock)
        statuses = {}
        for _ in range(n):
            try:
                code = str(http_get(env["web"]))
            except (OSError, BenchError) as e:
                code = type(e).__name__
            statuses[code] = statuses.get(code, 0) + 1
        took = time.monotonic() - t0
        # Whole renewal periods, at least one lease: both windows then hold as many renewals.
        window = max(CLUSTER_LEASE, RENEW_PERIOD * math.ceil(took / RENEW_PERIOD))
        time.sleep(max(0.0, t0 + window - time.monotonic()))
        s1 = redis_calls(sock)
        time.sleep(window)
        s2 = redis_calls(sock)
        during, idle = calls_between(s0, s1), calls_between(s1, s2)
        caused = sum(during.values()) - sum(idle.values())
        note = None
        if statuses.get("200", 0) != n:
            note = f"{statuses.get('200', 0)}/{n} visitors answered 200 ({statuses})"
        extra = {"window_s": window, "visitors": n, "visitors_s": took, "during": during, "idle": idle}
        self.record(system, "redis_during", sum(during.values()), busy, note=note, extra=extra)
        self.record(system, "redis_idle", sum(idle.values()), busy, extra=extra)
        self.record(system, "redis_caused", caused, busy, note=note, extra=extra)
        self.say(f"    {system} presence: {n} visitors in {took:.2f} s; Redis commands in {window:.0f} s: "
                 f"{sum(during.values())} {during} with the visitors, {sum(idle.values())} {idle} idle; "
                 f"caused by visitors {caused}" + (f"; {note}" if note else ""))

    # ----- the run

    def run(self):
        self.start_origins()
        for rnd in range(self.a.rounds):
            order = list(self.a.systems) if rnd % 2 == 0 else list(reversed(self.a.systems))
            for system in order:
                if not self.cases_for(system):
                    if rnd == 0:
                        self.say(f"{LABELS[system]}: none of the selected cases runs on it (the https cases run on "
                                 f"{', '.join(HTTPS_SYSTEMS)} only, and those systems run nothing else)")
                    continue
                self.say(f"round {rnd + 1}/{self.a.rounds}: {LABELS[system]}")
                env = {"procs": []}
                try:
                    self.start_system(system, env)
                    time.sleep(0.5)
                    self.run_cases(system, env)
                except (BenchError, OSError, ValueError, KeyError) as e:
                    self.say(f"    {system} FAILED: {e}")
                    self.results[system].setdefault("_failures", []).append(f"round {rnd + 1}: {e}")
                finally:
                    self.stop_system(env)  # also what a failed start had started

    def run_cases(self, system, env):
        cases = self.cases_for(system)
        todo = []
        if "https-mem" in cases:  # first, as mem: the processes have served nothing else yet
            todo.append(("https-mem", lambda: self.case_https_mem(system, env)))
        for kind in ("ka", "close", "full"):
            if f"https-{kind}" in cases:
                todo.append((f"https-{kind}", lambda k=kind: self.case_wrk(system, env, f"tls_{k}")))
        if "mem" in cases:
            todo.append(("mem", lambda: self.case_mem(system, env)))
        for streams in (1, 8):
            if f"iperf{streams}" in cases:
                todo.append((f"iperf{streams}", lambda n=streams: self.case_iperf(system, env, n, False)))
                if not self.a.smoke:
                    todo.append((f"iperf{streams} -R", lambda n=streams: self.case_iperf(system, env, n, True)))
        for kind in ("ka", "close", "c1"):
            if f"wrk-{kind}" in cases:
                todo.append((f"wrk-{kind}", lambda k=kind: self.case_wrk(system, env, k)))
        if "redis" in cases:
            for conns in (20, 1):
                todo.append((f"redis -c{conns}", lambda c=conns: self.case_redis(system, env, c)))
        if "presence" in cases:
            todo.append(("presence", lambda: self.case_presence(system, env)))
        if "mem-raw" in cases:  # last: it restarts the system with a third agent session
            todo.append(("mem-raw", lambda: self.case_mem(system, env, raw=True)))
        for name, case in todo:
            try:
                case()
            except (BenchError, OSError, ValueError, KeyError) as e:
                self.say(f"    {system} {name} FAILED: {e}")
                self.results[system].setdefault("_failures", []).append(f"{name}: {e}")
            dead = [p for p in env["procs"] if p.poll() is not None]
            if dead:
                raise BenchError(f"{dead[0].name} exited ({dead[0].returncode}) during {name}:\n{tail(dead[0])}")

    def cleanup(self):
        self.procs.stop_all()


NGINX_CONF = """\
# Generated by bench/lib/bench.py: a small static origin on loopback, one process.
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    # Debian's defaults for a static site
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    default_type text/html;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    server {{
        listen {port};
        server_name _;
        root {www};
        index index.html;
    }}
}}
"""


# nginx for nginx-tls: TLS terminated as the other two https systems do it, requests proxied to
# the origin over kept-alive HTTP/1.1 connections, one worker per thread of the tunnel server.
# Runs as started (root): the workers run as nobody, which is nginx's default.
NGINX_TLS_CONF = """\
# Generated by bench/lib/bench.py: TLS termination in front of the bench origin.
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 16384;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    upstream origin {{
        server {loop}:{origin};
        keepalive 32;  # idle origin connections kept per worker
    }}
    server {{
        listen {loop}:{port} ssl http2;
        server_name {host};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {version};
        ssl_conf_command Ciphersuites {suite};
        ssl_ecdh_curve {group};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""

# Caddy for caddy-tls. Go picks TLS 1.3 suites itself (TLS_AES_128_GCM_SHA256 here); the version
# and the group are set. HTTP/1.1 and h2, as nginx and the tunnel server offer (no HTTP/3).
CADDYFILE = """\
# Generated by bench/lib/bench.py: TLS termination in front of the bench origin.
{{
	admin off
	auto_https off
	grace_period 1s
	servers {{
		protocols h1 h2
	}}
}}

https://{host}:{port} {{
	bind {loop}
	tls {cert} {key} {{
		protocols tls1.3 tls1.3
		curves {group}
	}}
	reverse_proxy {loop}:{origin} {{
		transport http {{
			keepalive 300s
			keepalive_idle_conns_per_host 64
		}}
	}}
}}
"""

# OPENSSL_CONF of the https clients (wrk, hold_conns.py, openssl s_client): what they offer.
CLIENT_OPENSSL_CNF = """\
# Generated by bench/lib/bench.py: the TLS the benchmark's clients offer.
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_module
[ssl_module]
system_default = bench_client
[bench_client]
MinProtocol = {version}
MaxProtocol = {version}
Ciphersuites = {suite}
Groups = {group}
"""

# wrk's script for the https cases. wrk sends the URL's host as SNI (an IP URL would send no
# usable name, and the tunnel server routes TLS by SNI) and resolves that host before anything
# else, through wrk.resolve: replacing it to resolve 127.0.0.1 keeps SNI and Host bench.test
# without an /etc/hosts entry or a DNS name, and leaves the machine as it was.
WRK_RESOLVE_LUA = """\
-- Generated by bench/lib/bench.py: connect to {loop}, whatever the URL's host (the SNI) is.
local resolve = wrk.resolve
wrk.resolve = function(host, service)
   return resolve("{loop}", service)
end
"""

# LD_PRELOAD for wrk in https-full. wrk keeps one SSL object per connection slot and, after a
# connection closes, SSL_shutdown + SSL_clear it, which keeps the session: its next connection
# resumes it (TLS 1.3 PSK with X25519, no certificate, no signature). Dropping the session
# before SSL_clear makes every connection a full handshake, as a first visit is.
NORESUME_C = """\
/* Generated by bench/lib/bench.py: wrk without TLS session resumption. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_clear(SSL *s) {
    static int (*real_clear)(SSL *);
    static int (*set_session)(SSL *, SSL_SESSION *);
    if (!real_clear) {
        real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
        set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
    }
    set_session(s, NULL);
    return real_clear(s);
}
"""


# --------------------------------------------------------------------------- report

def med_range(samples):
    vals = [s["value"] for s in samples if s.get("value") is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def fmt(x):
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a >= 0.01:
        return f"{x:.3f}"
    return f"{x:.4f}"


def combine_cpu(results, system, metrics):
    """CPU-s per GB over the given iperf3 cases, per round (sum of CPU / sum of bytes)."""
    rows = [results[system].get(m, []) for m in metrics]
    out = []
    for i in range(min((len(r) for r in rows), default=0)):
        samples = [r[i] for r in rows]
        if any(s.get("value") is None or s.get("cpu_s") is None for s in samples):
            continue
        nbytes = sum(s["bytes"] for s in samples)
        out.append({"value": sum(s["cpu_s"] for s in samples) / (nbytes / 1e9),
                    "busy": any(s["busy"] for s in samples)})
    return out


def derived(results):
    """Adds computed metrics: CPU per GB and added one-at-a-time latency."""
    direct = results.get("direct", {})
    for system, res in results.items():
        res["cpu1"] = combine_cpu(results, system, ["iperf1_up", "iperf1_down"])
        res["cpu8"] = combine_cpu(results, system, ["iperf8_up", "iperf8_down"])
        for pct in ("50", "99"):
            base, _, _ = med_range(direct.get(f"c1_p{pct}", []))
            if base is not None and system != "direct":
                res[f"c1_add{pct}"] = [dict(s, value=(s["value"] - base if s.get("value") is not None else None))
                                       for s in res.get(f"c1_p{pct}", [])]


TABLES = [
    ("Throughput: iperf3 through the public path (Gbit/s, higher is better)", "direct", [
        ("iperf1_up", "1 stream"), ("iperf1_down", "1 stream -R"),
        ("iperf8_up", "8 streams"), ("iperf8_down", "8 streams -R")]),
    ("HTTP: wrk against the static origin through the entrypoint", "direct", [
        ("ka_rps", "keep-alive req/s"), ("ka_p50", "keep-alive p50 ms"), ("ka_p99", "keep-alive p99 ms"),
        ("close_rps", "close req/s"), ("close_p50", "close p50 ms"), ("close_p99", "close p99 ms")]),
    ("One connection at a time: wrk -c1 -t1, Connection: close (ms, lower is better)", "direct", [
        ("c1_p50", "p50"), ("c1_p99", "p99"), ("c1_add50", "added p50"), ("c1_add99", "added p99")]),
    ("Redis: redis-benchmark -t set,get,ping_inline against a redis-server origin (requests/s, higher is better)",
     "direct", [(f"redis{c}_{m}", f"{t} -c{c}") for c in (20, 1) for t, m in REDIS_TESTS]),
    ("Resources: server + agent (ratios to relay://, since direct runs no tunnel)", "tunnel-tcp", [
        ("rss_idle", "RSS idle MiB"), ("rss_hold", "RSS {hold} idle visitors MiB"),
        ("rss_hold_raw", "RSS {hold} idle visitors, raw entrypoint MiB"),
        ("cpu1", "CPU-s/GB 1 stream"), ("cpu8", "CPU-s/GB 8 streams")]),
    # The https cases: their own systems only, ratios to nginx.
    ("HTTPS: wrk over TLS 1.3 to the static origin (ratios to nginx)", "nginx-tls", [
        ("tls_ka_rps", "keep-alive req/s"), ("tls_ka_p50", "keep-alive p50 ms"), ("tls_ka_p99", "keep-alive p99 ms"),
        ("tls_close_rps", "new TLS conns/s, resumed"), ("tls_close_p50", "resumed p50 ms"),
        ("tls_close_p99", "resumed p99 ms"),
        ("tls_full_rps", "new TLS conns/s, full handshake"), ("tls_full_p50", "full p50 ms"),
        ("tls_full_p99", "full p99 ms")], HTTPS_SYSTEMS),
    ("HTTPS: memory per 1000 idle TLS visitors (RSS after {hold} visitors completed a handshake and a request, "
     "minus before, per 1000; ratios to nginx)", "nginx-tls", [
        ("tls_rss_1000", "server MiB per 1000"), ("tls_rss_1000_all", "server + agent MiB per 1000")],
     HTTPS_SYSTEMS),
]

NO_RATIO = {"c1_add50", "c1_add99"}


def render(results, systems, meta, busy_log, hold, negotiated=None):
    derived(results)
    lines = []
    w = lines.append
    https_meta = None
    if negotiated:
        seen = "; ".join(f"{LABELS[s]}: {g['version']} {g['suite']}, {g['group']}, {g['signature']} {g['hash']}"
                         for s, g in negotiated.items())
        https_meta = (f"HTTPS: one ECDSA P-256 certificate (SAN DNS:{HTTPS_HOST}) for all three; each proxies to the "
                      f"origin over kept-alive connections with {HTTPS_WORKERS} workers (nginx worker_processes, "
                      f"Caddy GOMAXPROCS, tunnel-server --threads; the agent has 1 thread). The clients offer only "
                      f"{HTTPS_TLS['version']} {HTTPS_TLS['suite']} {HTTPS_TLS['group']} (OPENSSL_CONF); wrk "
                      f"connects to 127.0.0.1 with SNI and Host {HTTPS_HOST}. \"Resumed\": wrk's Connection: "
                      f"close, each new connection resuming the previous session (PSK + X25519); \"full\": every "
                      f"session dropped, a full handshake per request. Negotiated (openssl s_client): {seen}.")
    took = f"{meta['minutes']:.0f} minutes" if meta["minutes"] >= 2 else f"{meta['minutes'] * 60:.0f} seconds"
    w(f"### Run of {meta['date']} ({took})")
    w("")
    w(f"- machine: {meta['nproc']} cores ({meta['cpu']}), {meta['mem']}, kernel {meta['kernel']}")
    w(f"- versions: {meta['versions']}")
    w(f"- settings: {meta['settings']}")
    if busy_log:
        tops = {}
        for b in busy_log:
            for t in b["top"]:
                name = t.rsplit(" ", 1)[0]
                tops[name] = tops.get(name, 0) + 1
        names = ", ".join(f"{k} ({v})" for k, v in sorted(tops.items(), key=lambda kv: -kv[1])[:5])
        w(f"- machine busy: {len(busy_log)} of {meta['cases']} cases started while other work used "
          f"more than {meta['threshold']} cores (busiest processes: {names}); their cells are marked †")
    else:
        w(f"- machine idle before every case (< {meta['threshold']} cores busy)")
    w("")
    w("Cells: median (min–max over rounds) and ×ratio to the reference row; † a sample ran while the "
      "machine was busy; ! a sample had errors (see notes).")
    notes = []
    for title, ref, cols, *only in TABLES:
        # A table's own systems, or every system but the https ones (which run only their cases).
        rows = [s for s in systems if s in only[0]] if only else [s for s in systems if s not in HTTPS_SYSTEMS]
        cols = [(k, h.format(hold=hold)) for k, h in cols]
        present = [(k, h) for k, h in cols if any(results[s].get(k) for s in rows)]
        if not present:
            continue
        w("")
        w(f"#### {title.format(hold=hold)}")
        w("")
        w("| system | " + " | ".join(h for _, h in present) + " |")
        w("|---|" + "---:|" * len(present))
        for s in rows:
            cells = []
            for k, _ in present:
                samples = results[s].get(k, [])
                med, lo, hi = med_range(samples)
                if med is None:
                    failed = any(x.get("note") for x in samples) or results[s].get("_failures")
                    cells.append("failed" if failed else "–")
                    continue
                txt = fmt(med) if lo == hi else f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"
                bmed, _, _ = med_range(results.get(ref, {}).get(k, []))
                if bmed and k not in NO_RATIO and s != ref:
                    txt += f" ×{med / bmed:.2f}"
                if any(x.get("busy") for x in samples):
                    txt += " †"
                bad = [x["note"] for x in samples if x.get("note")]
                if bad:
                    txt += " !"
                    for b in bad:
                        n = f"{LABELS[s]}, {k}: {b}"
                        if n not in notes:
                            notes.append(n)
                cells.append(txt)
            w(f"| {LABELS[s]} | " + " | ".join(cells) + " |")
    mem_rows = []
    for s in systems:
        idle, held = results[s].get("rss_idle", []), results[s].get("rss_hold", [])
        if not idle and not held and not results[s].get("rss_hold_raw"):
            continue

        def part(samples, role):
            vals = [x["by_role"][role] for x in samples if x.get("value") is not None and "by_role" in x]
            return fmt(statistics.median(vals)) if vals else "–"

        opened = [x["open_seconds"] for x in held if x.get("value") is not None and "open_seconds" in x]
        est = [f"{x['established']}/{x['alive']}" for x in held if "established" in x]
        raw = results[s].get("rss_hold_raw", [])
        est += [f"raw {x['established']}/{x['alive']}" for x in raw if "established" in x]
        mem_rows.append(f"| {LABELS[s]} | {part(idle, 'server')} | {part(idle, 'agent')} | {part(held, 'server')} | "
                        f"{part(held, 'agent')} | {part(raw, 'server')} | {part(raw, 'agent')} | "
                        f"{', '.join(est) or '–'} | {fmt(statistics.median(opened)) if opened else '–'} |")
    if mem_rows:
        w("")
        w(f"#### Memory by process (RSS MiB, median) and the {hold} idle visitors")
        w("")
        w("Sniffing: the visitors are keep-alive HTTP connections to the sniffing entrypoint (web.local); raw: "
          "the same requests to a raw entrypoint (raw.local, the same nginx), spliced byte for byte. rathole "
          "and bore have only raw ports: their sniffing columns are their raw figure.")
        w("")
        w(f"| system | server idle | agent idle | server, {hold} sniffing | agent, {hold} sniffing | "
          f"server, {hold} raw | agent, {hold} raw | established/alive per round | seconds to open them |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        lines.extend(mem_rows)
    https_rows = [s for s in systems if s in HTTPS_SYSTEMS and results[s].get("tls_rss_1000")]
    if https_rows:
        w("")
        w(f"#### HTTPS: the {hold} idle TLS visitors by process (RSS MiB, median)")
        w("")
        w("| system | server before | server with them | agent before | agent with them | "
          "established/alive per round | seconds to open them |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for s in https_rows:
            held = [x for x in results[s]["tls_rss_1000"] if "before" in x]

            def part(key, role):
                vals = [x[key][role] for x in held if role in x[key]]
                return fmt(statistics.median(vals)) if vals else "–"

            est = ", ".join(f"{x['established']}/{x['alive']}" for x in held) or "–"
            opened = [x["open_seconds"] for x in held]
            w(f"| {LABELS[s]} | {part('before', 'server')} | {part('after', 'server')} | {part('before', 'agent')} | "
              f"{part('after', 'agent')} | {est} | {fmt(statistics.median(opened)) if opened else '–'} |")
    if https_meta:
        w("")
        w(https_meta)
    pres = [s for s in systems if results[s].get("redis_during")]
    if pres:
        w("")
        w("#### Cluster: Redis commands while visitors are forwarded (INFO commandstats, both replicas)")
        w("")
        w("A window in which new visitor connections (Connection: close) enter at replica B, then an idle "
          "window of the same length; both hold the lease renewals of the two replicas.")
        w("")
        w("| system | visitors | window s | commands with visitors | commands idle | caused by visitors | "
          "commands by name (with visitors; idle) |")
        w("|---|---:|---:|---:|---:|---:|---|")
        for s in pres:
            res = results[s]
            last = res["redis_during"][-1]

            def names(d):
                return " ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

            per = "; ".join(f"{names(x['during'])}; {names(x['idle'])}" for x in res["redis_during"] if "during" in x)
            cells = []
            for k in ("redis_during", "redis_idle", "redis_caused"):
                med, lo, hi = med_range(res.get(k, []))
                cells.append("–" if med is None else (f"{med:g}" if lo == hi else f"{med:g} ({lo:g}–{hi:g})"))
            w(f"| {LABELS[s]} | {last.get('visitors', '–')} | {fmt(last['window_s']) if 'window_s' in last else '–'} | "
              + " | ".join(cells) + f" | {per} |")
    for s in systems:
        for f in results[s].get("_failures", []):
            notes.append(f"{LABELS[s]} failed to run: {f.splitlines()[0]}")
    rows = targets(results)
    if rows:
        w("")
        w("#### Targets (ratios within this run)")
        w("")
        w("| target | measured | goal | met |")
        w("|---|---:|---:|:---:|")
        for name, measured, goal, ok in rows:
            w(f"| {name} | {measured} | {goal} | {'–' if ok is None else 'yes' if ok else '**no**'} |")
    if notes:
        w("")
        w("Notes:")
        w("")
        for n in notes:
            w(f"- {n}")
    return "\n".join(lines) + "\n"


def targets(results):
    def m(system, key):
        return med_range(results.get(system, {}).get(key, []))[0]

    rows = []

    def ratio_row(name, a_sys, b_sys, key, goal, higher=True, b_key=None):
        """A ratio within the run (of `key`, against `b_key` of b_sys if given); `goal` None:
        shown, not judged."""
        a, b = m(a_sys, key), m(b_sys, b_key or key)
        if a is None or b is None or b == 0:
            return
        r = a / b
        if goal is None:
            rows.append((name, f"{fmt(a)} / {fmt(b)} = ×{r:.2f}", "–", None))
            return
        ok = r >= goal if higher else r <= goal
        rows.append((name, f"{fmt(a)} / {fmt(b)} = ×{r:.2f}", f"{'≥' if higher else '≤'} ×{goal}", ok))

    for key, label in (("iperf1_up", "1 stream"), ("iperf1_down", "1 stream -R")):
        ratio_row(f"relay:// vs bore, {label}", "tunnel-tcp", "bore", key, 1.2)
        ratio_row(f"relay:// vs rathole (tcp), {label}", "tunnel-tcp", "rathole", key, 1.45)
        ratio_row(f"relay+tls:// vs rathole (noise), {label}", "tunnel-tls", "rathole-noise", key, 2.0)
        ratio_row(f"relay+quic:// vs rathole (noise), {label}", "tunnel-quic", "rathole-noise", key, 1.0)
        ratio_row(f"relay:// vs rathole (tcp, nodelay = false), {label}", "tunnel-tcp", "rathole-bw", key, None)
    ratio_row("relay:// keep-alive req/s vs direct", "tunnel-tcp", "direct", "ka_rps", 0.7)
    ratio_row("relay://, metrics on vs off: keep-alive req/s", "tunnel-tcp-metrics", "tunnel-tcp", "ka_rps", 0.95)
    ratio_row("relay://, metrics on vs off: Connection: close req/s", "tunnel-tcp-metrics", "tunnel-tcp", "close_rps", 0.95)
    ratio_row("relay:// keep-alive p99 vs direct", "tunnel-tcp", "direct", "ka_p99", 2.0, higher=False)
    ratio_row("relay:// keep-alive req/s vs before", "tunnel-tcp", "tunnel-tcp-base", "ka_rps", 0.95)
    ratio_row("relay:// keep-alive p99 vs before", "tunnel-tcp", "tunnel-tcp-base", "ka_p99", 1.1, higher=False)
    ratio_row("relay:// Connection: close req/s vs before", "tunnel-tcp", "tunnel-tcp-base", "close_rps", 0.95)
    ratio_row("relay:// Connection: close req/s vs direct", "tunnel-tcp", "direct", "close_rps", 0.6)
    ratio_row("relay:// one-at-a-time added p50 vs rathole (tcp)", "tunnel-tcp", "rathole", "c1_add50", 0.5,
              higher=False)
    ratio_row("relay:// RSS with idle visitors vs rathole (tcp)", "tunnel-tcp", "rathole", "rss_hold", 0.5,
              higher=False)
    # rathole has only raw ports: raw against raw is the like-for-like memory comparison.
    ratio_row("relay:// RSS with idle visitors, raw entrypoint, vs rathole (tcp)", "tunnel-tcp", "rathole",
              "rss_hold_raw", 0.5, higher=False, b_key="rss_hold")
    # The cluster's forwarded path against the same tunnel with visitors on the agent's replica.
    ratio_row("relay://, forwarded vs local: keep-alive req/s", "tunnel-tcp-fwd", "tunnel-tcp", "ka_rps", None)
    ratio_row("relay://, forwarded vs local: one-at-a-time added p50", "tunnel-tcp-fwd", "tunnel-tcp", "c1_add50",
              None, higher=False)
    caused = m("tunnel-tcp-fwd", "redis_caused")
    if caused is not None:
        n = results["tunnel-tcp-fwd"]["redis_caused"][-1].get("visitors", "?")
        rows.append((f"relay://, forwarded: Redis commands caused by {n} visitor connections", f"{caused:g}", "0",
                     caused <= 0))
    # The https goals: the tunnel server terminating TLS against nginx and Caddy doing the same.
    ratio_row("tunnel https keep-alive req/s vs nginx", "tunnel-https", "nginx-tls", "tls_ka_rps", 0.7)
    ratio_row("tunnel https keep-alive req/s vs Caddy", "tunnel-https", "caddy-tls", "tls_ka_rps", 1.2)
    ratio_row("tunnel https new TLS connections/s vs nginx (resumed sessions, wrk's Connection: close)",
              "tunnel-https", "nginx-tls", "tls_close_rps", 0.8)
    ratio_row("tunnel https new TLS connections/s vs nginx (full handshakes)", "tunnel-https", "nginx-tls",
              "tls_full_rps", 0.8)
    ratio_row("tunnel https new TLS connections/s vs Caddy (resumed)", "tunnel-https", "caddy-tls", "tls_close_rps",
              None)
    ratio_row("tunnel https new TLS connections/s vs Caddy (full handshakes)", "tunnel-https", "caddy-tls",
              "tls_full_rps", None)
    ratio_row("tunnel https server RSS per 1000 idle TLS visitors vs nginx", "tunnel-https", "nginx-tls",
              "tls_rss_1000", None, higher=False)
    ratio_row("tunnel https server + agent RSS per 1000 idle TLS visitors vs nginx", "tunnel-https", "nginx-tls",
              "tls_rss_1000_all", None, higher=False)
    ratio_row("tunnel https server RSS per 1000 idle TLS visitors vs Caddy", "tunnel-https", "caddy-tls",
              "tls_rss_1000", None, higher=False)
    ratio_row("relay:// CPU-s/GB 1 stream vs bore", "tunnel-tcp", "bore", "cpu1", 1.0, higher=False)
    ratio_row("relay:// CPU-s/GB 8 streams vs bore", "tunnel-tcp", "bore", "cpu8", 1.0, higher=False)
    return rows


# --------------------------------------------------------------------------- metadata

def cmd_out(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def metadata(a):
    """The machine, the versions and the settings, taken when the run starts (right after the
    build, so the git revision is the one built)."""
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    rev = cmd_out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]) or "?"
    if cmd_out(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]):
        rev += " (with uncommitted changes)"
    vers = [f"tunnel {rev}"]
    if any(s.startswith("rathole") for s in a.systems):
        m = re.search(r"Build Version:\s*(\S+)", cmd_out([os.path.join(a.tools_dir, "rathole"), "--version"]))
        vers.append(f"rathole {m.group(1) if m else '?'}")
    if "bore" in a.systems:
        vers.append(cmd_out([os.path.join(a.tools_dir, "bore"), "--version"]).replace("bore-cli", "bore"))
    m = re.search(r"iperf (\S+)", cmd_out(["iperf3", "--version"]))
    vers.append(f"iperf3 {m.group(1) if m else '?'}")
    m = re.search(r"wrk (\S+)", cmd_out(["wrk", "-v"]))
    vers.append(f"wrk {m.group(1) if m else '?'}")
    if "redis" in a.cases or "tunnel-tcp-fwd" in a.systems:
        m = re.search(r"v=(\S+)", cmd_out(["redis-server", "--version"]))
        vers.append(f"redis {m.group(1) if m else '?'}")
    if a.origin == "nginx" or "nginx-tls" in a.https_systems:
        m = re.search(r"nginx/(\S+)", cmd_out([a.nginx, "-v"]))
        vers.append(f"nginx {m.group(1) if m else '?'}")
    if a.origin != "nginx":
        vers.append(f"origin: python {sys.version.split()[0]} http.server")
    if "caddy-tls" in a.https_systems:
        m = re.search(r"v?(\d+\.\d+\.\d+)", cmd_out([a.caddy, "version"]))
        vers.append(f"Caddy {m.group(1) if m else '?'}")
    if a.https_systems:
        m = re.search(r"OpenSSL (\S+)", cmd_out(["openssl", "version"]))
        vers.append(f"OpenSSL {m.group(1) if m else '?'} (wrk's TLS)")
    build = "release" if os.path.basename(os.path.normpath(a.bin_dir)) == "release" else f"binaries from {a.bin_dir}"
    settings = (f"{a.rounds} round(s) interleaved (order reversed on even rounds), {build}; iperf3 -t {a.iperf_time}; "
                f"wrk -d {a.wrk_duration}s -t{a.wrk_threads} -c{a.wrk_connections} (one-at-a-time: -t1 -c1); "
                f"{a.hold} idle visitors; origin {a.origin}")
    if "redis" in a.cases:
        settings += f"; redis-benchmark -n {a.redis_requests} at -c 20, -n {a.redis_requests_c1} at -c 1"
    if "presence" in a.cases:
        settings += f"; {a.presence_visitors} visitors for the Redis command count"
    if a.https_systems:
        settings += (f"; https: {HTTPS_TLS['version']} {HTTPS_TLS['suite']} {HTTPS_TLS['group']}, ECDSA P-256, "
                     f"{HTTPS_WORKERS} workers/threads per server")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": NCPU, "cpu": cpu, "mem": f"{mem_kib / 1048576:.0f} GiB RAM", "kernel": os.uname().release,
        "versions": ", ".join(vers), "settings": settings, "threshold": a.idle_threshold,
    }


# --------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="one short round (iperf3 -t 2, wrk -d 2s, a quarter of the redis-benchmark requests)")
    p.add_argument("--smoke", action="store_true",
                   help="direct + relay:// only, one 1-second iperf3 and wrk case, 20 held connections, "
                        "python origin, debug binaries, no installs or build")
    p.add_argument("--only", help="comma-separated systems: " + ",".join(SYSTEMS) +
                   f" (default: all but {', '.join(sorted(OPT_IN))}, which run only when named)")
    p.add_argument("--cases", help="comma-separated cases: " + ",".join(ALL_CASES) +
                   " (presence runs on tunnel-tcp-fwd only, mem-raw on the tunnel systems only; the https-* cases "
                   "run on " + ", ".join(HTTPS_SYSTEMS) + " only, and those systems run nothing else: https-mem "
                   "memory per 1000 idle TLS visitors, https-ka wrk keep-alive, https-close wrk Connection: close "
                   "(wrk resumes each session: new TLS connections/s), https-full the same with full handshakes)")
    p.add_argument("--iperf-time", type=int, default=5)
    p.add_argument("--wrk-duration", type=int, default=5)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--wrk-connections", type=int, default=50)
    p.add_argument("--hold", type=int, default=1000, help="idle visitor connections for the mem, mem-raw and https-mem cases")
    p.add_argument("--redis-requests", type=int, default=50000,
                   help="redis-benchmark -n per command at -c 20 (the redis case)")
    p.add_argument("--redis-requests-c1", type=int, default=10000, help="redis-benchmark -n per command at -c 1")
    p.add_argument("--presence-visitors", type=int, default=1000,
                   help="new visitor connections through replica B in the presence case")
    p.add_argument("--idle-wait", type=float, default=10.0,
                   help="seconds to wait for an idle machine before each case (then run it and mark it)")
    p.add_argument("--idle-threshold", type=float, default=0.25, help="busy cores that count as not idle")
    p.add_argument("--origin", choices=["nginx", "python"], default=None)
    p.add_argument("--nginx", default=None)
    p.add_argument("--caddy", default="caddy", help="Caddy binary of the caddy-tls system")
    p.add_argument("--name", default=None,
                   help="results file name in --out: NAME.md and NAME.json (default latest; https when every "
                        "selected case is an https case, so that such a run leaves latest.md alone)")
    p.add_argument("--bin-dir", default=None)
    p.add_argument("--base-bin-dir", default=None,
                   help="binaries of an earlier build, run as the system tunnel-tcp-base (bench/run --base REV)")
    p.add_argument("--base", default=None, help="handled by bench/run: build REV into .base and compare")
    p.add_argument("--tools-dir", default=os.path.join(BENCH, ".tools", "bin"))
    p.add_argument("--out", default=os.path.join(BENCH, "results"))
    p.add_argument("--pidfile", default=os.environ.get("BENCH_PIDFILE"))
    # handled by bench/run; accepted here so that every option can be passed through
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--no-install", action="store_true")
    a = p.parse_args(argv)
    if a.smoke:
        a.rounds, a.iperf_time, a.wrk_duration, a.hold, a.idle_wait = 1, 1, 1, 20, 0
        a.only = a.only or "direct,tunnel-tcp"
        a.cases = a.cases or "mem,iperf1,wrk-ka"
        a.origin = a.origin or "python"
    elif a.quick:
        a.rounds, a.iperf_time, a.wrk_duration = 1, 2, 2
        a.redis_requests, a.redis_requests_c1 = a.redis_requests // 4, a.redis_requests_c1 // 4
    default = [s for s in SYSTEMS if s not in OPT_IN or (s == "tunnel-tcp-base" and a.base_bin_dir)]
    a.systems = default if not a.only else [s.strip() for s in a.only.split(",") if s.strip()]
    for s in a.systems:
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}; expected some of {','.join(SYSTEMS)}")
    if "tunnel-tcp-base" in a.systems and not a.base_bin_dir:
        p.error("tunnel-tcp-base needs --base-bin-dir DIR (or bench/run --base REV)")
    a.cases = ALL_CASES if not a.cases else [c.strip() for c in a.cases.split(",") if c.strip()]
    for c in a.cases:
        if c not in ALL_CASES:
            p.error(f"unknown case {c!r}; expected some of {','.join(ALL_CASES)}")
    a.origin = a.origin or "nginx"
    # The https systems that will run (they run only when an https case is selected).
    a.https_systems = [s for s in a.systems if s in HTTPS_SYSTEMS] if any(c in HTTPS_CASES for c in a.cases) else []
    a.name = a.name or ("https" if all(c in HTTPS_CASES for c in a.cases) else "latest")
    if a.origin == "nginx" or "nginx-tls" in a.https_systems:
        a.nginx = a.nginx or next((x for x in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(x)),
                                  "nginx")
    if not a.bin_dir:
        a.bin_dir = os.environ.get("TUNNEL_BIN_DIR") or os.path.join(
            os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "debug" if a.smoke else "release")
    a.bin_dir = os.path.abspath(a.bin_dir)  # processes start in the run's temporary directory
    if a.base_bin_dir:
        a.base_bin_dir = os.path.abspath(a.base_bin_dir)
    return a


def main(argv):
    a = parse_args(argv)
    tools = {"iperf3": "iperf3", "wrk": "wrk"}
    if "redis" in a.cases or "tunnel-tcp-fwd" in a.systems:
        tools.update({"redis-server": "redis-server", "redis-cli": "redis-tools"})
    if "redis" in a.cases:
        tools["redis-benchmark"] = "redis-tools"
    if a.https_systems:
        tools["openssl"] = "openssl"
    if "caddy-tls" in a.https_systems:
        tools[a.caddy] = "caddy"
    if "nginx-tls" in a.https_systems and a.origin != "nginx":
        tools[a.nginx] = "nginx"
    for tool, package in tools.items():
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            sys.exit(f"bench: {tool} not found (apt-get install {package})")
    for b in ("tunnel-server", "tunnel-agent"):
        if any(s.startswith("tunnel-") for s in a.systems) and not os.path.exists(os.path.join(a.bin_dir, b)):
            sys.exit(f"bench: {os.path.join(a.bin_dir, b)} not found (cargo build --release --bins)")
    bench = Bench(a)
    meta = metadata(a)
    started = time.monotonic()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.cleanup()
        shutil.rmtree(bench.tmp, ignore_errors=True)
        print("bench: interrupted", file=sys.stderr)
        return 130
    except BaseException:
        print(f"bench: logs kept in {bench.tmp}", file=sys.stderr)
        raise
    finally:
        bench.cleanup()
    meta["cases"] = bench.case_count
    meta["minutes"] = (time.monotonic() - started) / 60
    table = render(bench.results, a.systems, meta, bench.busy_log, a.hold, bench.negotiated)
    with open(os.path.join(a.out, f"{a.name}.md"), "w") as f:
        f.write(table)
    with open(os.path.join(a.out, f"{a.name}.json"), "w") as f:
        json.dump({"results": bench.results, "busy": bench.busy_log, "negotiated": bench.negotiated,
                   "args": {k: v for k, v in vars(a).items()}},
                  f, indent=1, default=str)
    print(table, end="")
    failed = [s for s in a.systems if bench.results[s].get("_failures")]
    if failed:
        print(f"bench: some systems failed: {', '.join(failed)} (logs in {bench.tmp})", file=sys.stderr)
        return 1
    if os.environ.get("BENCH_KEEP_TMP"):
        print(f"bench: logs kept in {bench.tmp}", file=sys.stderr)
    else:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
