#!/usr/bin/env python3
"""side_by_side.py - atpd against Redis (and nginx for HTTP) on one machine.

The method of ../shared/BENCHMARKING.md, automated:

  * the server runs pinned to core 0 (taskset -c 0), atp-loadgen to core 1;
  * every scenario runs on atpd and on its counterpart interleaved, A B A B,
    for --rounds rounds (at least 3), each server started fresh;
  * a run in which neither the server nor the client used at least 90% of
    its core is discarded (the machine was busy elsewhere), and so is a run
    in which the hypervisor stole more than 10% of the machine's CPU time;
    CPU comes from /proc/<pid>/stat through atp-loadgen --server-pid, from
    getrusage and from /proc/stat; a discarded pair is run again, up to
    --attempts times per round, and every attempt is listed;
  * per scenario the median of the per-round ratios atpd/other is reported
    with its spread (min..max), next to the commands that produced it;
  * open-loop tail latency of atpd at 70% of its own measured maximum, as it
    comes and with `--busy-poll 200` (its worker polls before sleeping),
    interleaved; before each round, bench/hiccup spins on both cores at once
    to measure how long the machine itself takes a running thread away (the
    floor under any tail latency measured here);
  * the flash-sale workload on both, which must report oversold=0;
  * a latency-vs-throughput sweep of atpd lookups, plotted with gnuplot when
    it is installed (Debian: gnuplot-nox).

Results are written between markers into docs/BENCHMARKS.md (the "Side by
side" section) and the raw JSON of every run into --work. Every run is
bounded in time and targets 127.0.0.1 only; every server is stopped by pid.

Standard library only. Run from the repository root after building:

    meson setup build && ninja -C build
    python3 bench/side_by_side.py --build build
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- side-by-side:begin (written by bench/side_by_side.py) -->"
END = "<!-- side-by-side:end -->"
CORE_MIN = 0.90
STEAL_MAX = 0.10
OTHERS_MAX = 0.10   # open loop: cores other processes may use during a kept run

# What each scenario asks atp-loadgen for, on top of the common flags.
# Lookups: single GETs of the checkout key space (zipfian 0.99). Against
# Redis that is a plain GET of a string key (the cheapest Redis read).
LOOKUP = ["--workload", "checkout", "-W", "reserve_proportion=0"]
# Reservations: one line of one unit, nothing committed or released, a
# 500 ms TTL and a 250 ms idempotency window so atpd recycles its records
# within 1M of capacity (its expirer works during the run; Redis's expiry
# script is not run, which favours Redis). atpd's capacity stays at 1M
# because its expirer's idle cost grows with it (an idle atpd with 8M
# records of capacity used a third of a core on the development VM).
RESERVE = ["--workload", "checkout", "-W", "get_proportion=0", "-W", "reserve_proportion=1",
           "-W", "lines_max=1", "-W", "qty_max=1", "-W", "commit_fraction=0",
           "-W", "release_fraction=0", "-W", "ttl_ms=500"]

SCENARIOS = [
    # name, what, loadgen args, pipeline, target ratio (benchmark, not asserted)
    ("lookup-p1", "lookups, 50 conns, pipeline 1: atpd GET vs Redis GET", LOOKUP, 1, 1.2),
    ("lookup-p16", "lookups, 50 conns, pipeline 16: atpd GET vs Redis GET", LOOKUP, 16, 2.5),
    ("reserve-p1", "reservations, 50 conns, pipeline 1: atpd RESERVE vs Redis EVALSHA", RESERVE, 1, 2.0),
    ("reserve-p16", "reservations, 50 conns, pipeline 16: atpd RESERVE vs Redis EVALSHA", RESERVE, 16, 5.0),
    # HTTP lookups: atpd's facade against nginx `return 200` from memory (only
    # when atpd has the facade and nginx is installed).
    ("http-p1", "HTTP lookups, 50 conns, keep-alive, pipeline 1: atpd GET /v1/availability vs nginx return 200",
     LOOKUP + ["-W", "setup=none"], 1, 1.0),
]
# The counterpart of atpd in each scenario: (server kind, protocol of each side).
COUNTERPART = {"http-p1": ("nginx", "http", "http")}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """A server process pinned to core 0, stopped by its pid."""

    def __init__(self, kind, args, work, extra=()):
        self.kind = kind
        self.extra = list(extra)
        self.args = args
        self.work = work
        self.proc = None
        self.port = None
        self.http_port = None

    def start(self):
        log = open(os.path.join(self.work, "%s.log" % self.kind), "ab")
        if self.kind == "atpd":
            portfile = os.path.join(self.work, "atpd.port")
            hportfile = os.path.join(self.work, "atpd.http.port")
            for f in (portfile, hportfile):
                if os.path.exists(f):
                    os.unlink(f)
            cmd = ["taskset", "-c", "0", self.args.atpd, "--port", "0", "--port-file", portfile,
                   "--demo", "--workers", "1", "--max-reservations", str(1 << 20),
                   "--idempotency-window", "250ms"]
            if self.args.atpd_http:
                cmd += ["--http-port", "0", "--http-port-file", hportfile]
            cmd += self.extra
            if self.args.atpd_embedded_kafka:
                cmd += ["-o", "kafka-embedded no"]  # no broker sharing core 0
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
            deadline = time.time() + 20
            want = [portfile] + ([hportfile] if self.args.atpd_http else [])
            while time.time() < deadline and not all(os.path.exists(f) and open(f).read().strip() for f in want):
                if self.proc.poll() is not None:
                    raise RuntimeError("atpd exited; see %s/atpd.log" % self.work)
                time.sleep(0.05)
            self.port = int(open(portfile).read().strip())
            if self.args.atpd_http:
                self.http_port = int(open(hportfile).read().strip())
            self.cmd = cmd
        elif self.kind == "redis":
            self.port = free_port()
            cmd = ["taskset", "-c", "0", "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--daemonize", "no"]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
            self.cmd = cmd
            self._wait_tcp()
        elif self.kind == "nginx":
            self.port = free_port()
            d = os.path.join(self.work, "nginx")
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "nginx.conf")
            with open(conf, "w") as f:
                # One process (master_process off) so its pid carries all the CPU.
                f.write("daemon off;\nmaster_process off;\nworker_processes 1;\npid %s/nginx.pid;\n"
                        "error_log %s/error.log;\n"
                        "events { worker_connections 1024; }\n"
                        "http { access_log off; keepalive_requests 1000000;\n"
                        "  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;\n"
                        "  uwsgi_temp_path %s; scgi_temp_path %s;\n"
                        "  server { listen 127.0.0.1:%d; location / { return 200 '{\"available\":1}'; } } }\n"
                        % (d, d, d, d, d, d, d, self.port))
            cmd = ["taskset", "-c", "0", "nginx", "-c", conf, "-p", d]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
            self.cmd = cmd
            self._wait_tcp()
        return self

    def _wait_tcp(self):
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited; see %s/%s.log" % (self.kind, self.work, self.kind))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not listen on %d" % (self.kind, self.port))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def loadgen(args, server, proto, extra, name, test_time, pipeline=1, closed=True, rate=None,
            populate=True):
    out = os.path.join(args.work, name + ".json")
    port = server.http_port if (proto == "http" and server.kind == "atpd") else server.port
    cmd = ["taskset", "-c", "1", args.loadgen, "-P", proto, "-s", "127.0.0.1", "-p", str(port),
           "-c", "50", "--pipeline", str(pipeline), "--test-time", str(test_time),
           "--warmup-time", str(args.warmup), "--server-pid", str(server.proc.pid),
           "--json-out-file", out, "-q"]
    cmd += ["--closed-loop"] if closed else ["-R", str(int(rate))]
    if populate:
        cmd += ["--populate"]
    cmd += extra
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    text = r.stdout.decode(errors="replace")
    with open(os.path.join(args.work, name + ".out"), "w") as f:
        f.write(" ".join(cmd) + "\n" + text)
    if r.returncode not in (0, 1) or not os.path.exists(out):
        raise RuntimeError("loadgen failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), text))
    d = json.load(open(out))
    d["_cmd"] = cmd
    d["_status"] = r.returncode
    d["_secs"] = time.time() - t0
    return d


def good(d):
    """Successful operations per second (refusals such as EFULL do not count)."""
    return d["requests"]["ok"] / d["duration_s"] if d["duration_s"] > 0 else 0.0


def core(d):
    c = d["cpu"]
    return c.get("client_core_fraction", 0.0), c.get("server_core_fraction", 0.0)


def steal(d):
    """Share of the machine's CPU time the hypervisor took during the run (-1: unknown)."""
    return d["cpu"].get("machine_steal_fraction", -1.0)


def valid(d):
    cl, sv = core(d)
    return max(cl, sv) >= CORE_MIN and steal(d) <= STEAL_MAX


def why_discarded(d):
    cl, sv = core(d)
    if max(cl, sv) < CORE_MIN:
        return "<90% of a core on both sides"
    if steal(d) > STEAL_MAX:
        return "%.0f%% stolen by the hypervisor" % (100 * steal(d))
    return ""


def others(d):
    """Cores used by processes other than the server and atp-loadgen during the run (-1: unknown)."""
    c = d["cpu"]
    busy = c.get("machine_busy_fraction")
    if busy is None:
        return -1.0
    cl, sv = core(d)
    return max(0.0, busy * (os.cpu_count() or 2) - cl - sv)


def open_valid(d, rate):
    """An open-loop run counts when it kept its schedule and had the machine to itself: tails
    are what other work on the server's core makes first."""
    return d["ops_per_sec"] >= 0.95 * rate and steal(d) <= STEAL_MAX and others(d) <= OTHERS_MAX


def short_cmd(cmd):
    """The command as a reader would type it (paths relative, pinning kept)."""
    out = []
    for a in cmd:
        if a.startswith(ROOT + "/"):
            a = os.path.relpath(a, ROOT)
        elif a.startswith("/tmp/") or a.startswith(tempfile.gettempdir()):
            a = os.path.basename(a)
        out.append(shlex.quote(a))
    return " ".join(out)


def fmt_ratio(rs):
    if not rs:
        return "n/a (every round discarded)"
    return "%.2fx (spread %.2f-%.2f, %d rounds)" % (statistics.median(rs), min(rs), max(rs), len(rs))


def plot_dir(args):
    """Where the sweep's CSVs and plot go: docs/bench beside the section, or
    the work folder with --no-doc (the section in BENCHMARKS.md, and the
    plot it shows, stay those of the run that wrote it)."""
    return args.work if args.no_doc else os.path.join(ROOT, "docs", "bench")


def render_plot(args, csvs):
    gp = shutil.which("gnuplot")
    png = os.path.join(plot_dir(args), "lookup_latency_vs_throughput.png")
    script = os.path.join(args.work, "sweep_all.gp")
    os.makedirs(os.path.dirname(png), exist_ok=True)
    with open(script, "w") as f:
        f.write("set terminal pngcairo size 900,560 noenhanced\nset output '%s'\n" % png)
        f.write("set datafile separator ','\nset key top left\nset grid\nset logscale y\n")
        f.write("set xlabel 'offered lookups/s (open loop, 50 connections, pipeline 1)'\n")
        f.write("set ylabel 'latency us (from intended send time)'\n")
        f.write("set title 'Lookups: latency against throughput, server on 1 core'\n")
        plots = []
        for label, path in csvs:
            plots.append("'%s' using 1:3 skip 1 with linespoints title '%s p50'" % (path, label))
            plots.append("'%s' using 1:5 skip 1 with linespoints title '%s p99'" % (path, label))
            plots.append("'%s' using 1:6 skip 1 with linespoints title '%s p99.9'" % (path, label))
        f.write("plot " + ", \\\n     ".join(plots) + "\n")
    if not gp:
        return None, script
    r = subprocess.run([gp, script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        print("gnuplot failed:", r.stdout.decode(errors="replace"), file=sys.stderr)
        return None, script
    return png, script


def write_doc(args, text):
    path = args.out
    doc = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = BEGIN + "\n" + text.rstrip() + "\n" + END + "\n"
    if BEGIN in doc and END in doc:
        a = doc.index(BEGIN)
        b = doc.index(END) + len(END)
        doc = doc[:a] + block.rstrip("\n") + doc[b:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(doc)


def atpd_help(args):
    return subprocess.run([args.atpd, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout


def hiccups(args, seconds):
    """bench/hiccup on core 0 and core 1 at once: {core: its JSON}, {} when not built."""
    if not os.access(args.hiccup, os.X_OK):
        return {}
    procs = {cpu: subprocess.Popen(["taskset", "-c", str(cpu), args.hiccup, "-t", "%.1f" % seconds, "--json"],
                                   stdout=subprocess.PIPE) for cpu in (0, 1)}
    out = {}
    for cpu, p in procs.items():
        data, _ = p.communicate(timeout=seconds + 30)
        if p.returncode == 0:
            out[cpu] = json.loads(data)
    return out


def atpd_has_http(args):
    return b"--http-port" in atpd_help(args)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="meson build folder")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time", type=float, default=3.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--attempts", type=int, default=3,
                    help="runs of a pair per round until both sides are valid")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    ap.add_argument("--work", default=None, help="folder for raw results (default: a temp folder)")
    ap.add_argument("--scenarios", default=",".join(s[0] for s in SCENARIOS))
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--no-doc", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args()
    if args.rounds < 3:
        ap.error("at least 3 rounds")
    args.atpd = os.path.join(args.build, "src", "atpd")
    args.loadgen = os.path.join(args.build, "loadgen", "atp-loadgen")
    args.hiccup = os.path.join(args.build, "bench", "hiccup")
    for b in (args.atpd, args.loadgen):
        if not os.access(b, os.X_OK):
            sys.exit("missing %s: build first (meson setup build && ninja -C build)" % b)
    if not shutil.which("redis-server") or not shutil.which("taskset"):
        sys.exit("needs redis-server and taskset (Debian: redis-server, util-linux)")
    if os.cpu_count() < 2:
        sys.exit("needs 2 cores: the server on core 0, the load generator on core 1")
    args.atpd_http = atpd_has_http(args)
    args.atpd_embedded_kafka = b"--kafka-embedded" in atpd_help(args)
    args.nginx_ok = args.atpd_http and shutil.which("nginx") is not None
    args.work = args.work or tempfile.mkdtemp(prefix="atp-side-by-side.")
    os.makedirs(args.work, exist_ok=True)
    wanted = set(args.scenarios.split(","))
    started = time.time()
    load_start = os.getloadavg()
    print("raw results in", args.work)

    results = {}   # scenario -> list of (round, atpd run, redis run), every attempt
    cmds = {}
    for rnd in range(1, args.rounds + 1):
        for name, what, extra, pipe, target in SCENARIOS:
            if name not in wanted:
                continue
            other, aproto, oproto = COUNTERPART.get(name, ("redis", "bin", "resp"))
            if other == "nginx" and not args.nginx_ok:
                continue
            for attempt in range(1, args.attempts + 1):
                pair = {}
                for kind, proto in (("atpd", aproto), (other, oproto)):   # A B, every round
                    srv = Server(kind, args, args.work).start()
                    try:
                        d = loadgen(args, srv, proto, extra, "%s-%s-r%d-a%d" % (name, kind, rnd, attempt),
                                    args.time, pipeline=pipe,
                                    populate=kind != "nginx" and "setup=none" not in extra)
                    finally:
                        srv.stop()
                    d["_server_cmd"] = srv.cmd
                    pair[kind] = d
                    cl, sv = core(d)
                    print("round %d.%d %-12s %-6s %11.0f ok/s  client %3.0f%%  server %3.0f%%  steal %3.0f%%  %s"
                          % (rnd, attempt, name, kind, good(d), cl * 100, sv * 100, 100 * max(steal(d), 0),
                             "" if valid(d) else "DISCARDED (%s)" % why_discarded(d)))
                    cmds.setdefault(name, {})[kind] = (srv.cmd, d["_cmd"])
                results.setdefault(name, []).append((rnd, pair["atpd"], pair[other]))
                if valid(pair["atpd"]) and valid(pair[other]):
                    break

    # Open loop at 70% of atpd's own lookup maximum (median of valid p1 runs).
    open_rows = []
    hiccup_rows = []   # (round, {core: bench/hiccup JSON})
    # atpd as it comes, and with its worker polling 200 us before it sleeps
    # (busy-poll: the core stays busy, an idle vCPU is not halted), interleaved.
    variants = [("default", [])]
    if b"--busy-poll" in atpd_help(args):
        variants.append(("busy-poll 200", ["--busy-poll", "200"]))
    open_cmds = []
    max_p1 = [good(a) for _, a, _ in results.get("lookup-p1", []) if valid(a)]
    if not max_p1:
        max_p1 = [good(a) for _, a, _ in results.get("lookup-p1", [])]
    atpd_max = statistics.median(max_p1) if max_p1 else 0
    if atpd_max > 0:
        rate = 0.7 * atpd_max
        for rnd in range(1, args.rounds + 1):
            h = hiccups(args, args.time)
            if h:
                hiccup_rows.append((rnd, h))
                print("hiccups round %d: %s" % (rnd, "; ".join(
                    "core %d longest %.0f us, over 1 ms %d, late over 1 ms %.3f%%"
                    % (cpu, v["longest_us"], v["gaps_over_us"]["1000"], 100 * v["late_fraction_over_us"]["1000"])
                    for cpu, v in sorted(h.items()))))
            for vname, vargs in variants:
                for attempt in range(1, args.attempts + 1):
                    srv = Server("atpd", args, args.work, vargs).start()
                    try:
                        d = loadgen(args, srv, "bin", LOOKUP + ["--spin-us", "50"],
                                    "open70-%s-r%d-a%d" % (vname.replace(" ", ""), rnd, attempt),
                                    args.time, closed=False, rate=rate)
                    finally:
                        srv.stop()
                    if rnd == 1 and attempt == 1:
                        open_cmds.append((srv.cmd, d["_cmd"]))
                    l = d["latency_us"]["all"]
                    own = d.get("client_delay_us", {})
                    ok = open_valid(d, rate)
                    open_rows.append((rnd, rate, d["ops_per_sec"], l["p50"], l["p99"], l["p999"], l["max"],
                                      core(d), own.get("p999", 0), steal(d), ok, others(d), vname))
                    print("open loop 70%% %s: round %d.%d rate %.0f achieved %.0f p99 %.1f us p99.9 %.1f us "
                          "steal %.0f%% others %.0f%% %s"
                          % (vname, rnd, attempt, rate, d["ops_per_sec"], l["p99"], l["p999"],
                             100 * max(steal(d), 0), 100 * max(others(d), 0), "" if ok else "DISCARDED"))
                    if ok:
                        break

    # Flash sale on both: oversold must be 0 every time.
    flash = []
    for rnd in range(1, args.rounds + 1):
        for kind, proto in (("atpd", "bin"), ("redis", "resp")):
            srv = Server(kind, args, args.work).start()
            try:
                d = loadgen(args, srv, proto, ["--workload", "flash-sale"], "flash-%s-r%d" % (kind, rnd),
                            min(args.time, 2.0), closed=True, populate=False)
            finally:
                srv.stop()
            v = d.get("verify", {})
            flash.append((rnd, kind, v.get("oversold"), v.get("granted"), v.get("server_granted"),
                          d["ops_per_sec"], d["_status"]))
            print("flash-sale round %d %s: oversold=%s granted=%s" % (rnd, kind, v.get("oversold"), v.get("granted")))

    # Sweep: latency against throughput for the plot.
    csvs = []
    sweep_cmds = []
    if not args.no_sweep and atpd_max > 0:
        for kind, proto in (("atpd", "bin"), ("redis", "resp")):
            top = atpd_max if kind == "atpd" else statistics.median(
                [r["ops_per_sec"] for _, _, r in results.get("lookup-p1", [])] or [atpd_max])
            step = max(1000, int(top * 0.15))
            start = max(1000, int(top * 0.1))
            stop = int(top * 0.95)
            prefix = os.path.join(args.work, "sweep-%s" % kind)
            srv = Server(kind, args, args.work).start()
            cmd = ["taskset", "-c", "1", args.loadgen, "-P", proto, "-p", str(srv.port), "-c", "50",
                   "--sweep", "%d:%d:%d" % (start, stop, step), "--test-time", "2",
                   "--warmup-time", str(args.warmup),
                   "--sweep-prefix", prefix, "--populate", "--spin-us", "50", "-q"] + LOOKUP
            try:
                subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
            finally:
                srv.stop()
            sweep_cmds.append(cmd)
            if os.path.exists(prefix + ".csv"):
                dest = os.path.join(plot_dir(args), "sweep-%s.csv" % kind)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                if os.path.abspath(dest) != os.path.abspath(prefix + ".csv"):
                    shutil.copy(prefix + ".csv", dest)
                csvs.append((kind, dest))
    png, gp_script = render_plot(args, csvs) if csvs else (None, None)

    # --- the section ---------------------------------------------------------
    L = []
    L.append("## Side by side\n")
    L.append("Written by `python3 bench/side_by_side.py --build %s --rounds %d --time %g` on %s "
             "(%s, %d cores, Linux %s). Server pinned to core 0, atp-loadgen to core 1, fresh "
             "servers for every run, A B A B interleaving, %d rounds; a run where neither side used "
             "90%% of its core, or where the hypervisor stole more than 10%% of the machine's CPU "
             "time, is discarded and its pair run again (at most %d attempts per round). Ratios are "
             "atpd / other, median of the kept pairs with the spread (min-max). Targets are "
             "benchmarks, not tests.\n"
             % (os.path.relpath(args.build, ROOT), args.rounds, args.time, datetime.date.today().isoformat(),
                platform.node(), os.cpu_count(), platform.release(), args.rounds, args.attempts))
    load_end = os.getloadavg()
    L.append("Load average of the machine (1 min) at the start: %.2f, at the end: %.2f (each run adds "
             "about 2 itself); other work on the machine shows up as discarded runs.\n"
             % (load_start[0], load_end[0]))
    L.append("| scenario | atpd ops/s (median) | other ops/s (median) | ratio | target | pairs kept |")
    L.append("|---|---|---|---|---|---|")
    for name, what, extra, pipe, target in SCENARIOS:
        rows = results.get(name)
        if not rows:
            continue
        kept = [(a, r) for _, a, r in rows if valid(a) and valid(r)]
        ratios = [good(a) / good(r) for a, r in kept if good(r) > 0]
        am = statistics.median([good(a) for a, _ in kept]) if kept else 0
        rm = statistics.median([good(r) for _, r in kept]) if kept else 0
        L.append("| %s | %.0f | %.0f | %s | >= %.1fx | %d of %d |"
                 % (what, am, rm, fmt_ratio(ratios), target, len(kept), len(rows)))
    L.append("")
    L.append("Every run (successful ops/s, the share of its core each side used, and the share of "
             "the machine's CPU time the hypervisor stole during the run):\n")
    L.append("| scenario | round | atpd ops/s | atpd client/server core | other ops/s | other client/server core | steal atpd/other | ratio |")
    L.append("|---|---|---|---|---|---|---|---|")
    for name, what, extra, pipe, target in SCENARIOS:
        for rnd, a, r in results.get(name, []):
            ca, sa = core(a)
            cr, sr = core(r)
            flag = "" if valid(a) and valid(r) else " (discarded: %s)" % (why_discarded(a) or why_discarded(r))
            errs = a["requests"]["errors"] + r["requests"]["errors"]
            L.append("| %s | %d | %.0f | %.0f%% / %.0f%% | %.0f | %.0f%% / %.0f%% | %.0f%% / %.0f%% | %.2f%s%s |"
                     % (name, rnd, good(a), ca * 100, sa * 100, good(r), cr * 100,
                        sr * 100, 100 * max(steal(a), 0), 100 * max(steal(r), 0),
                        good(a) / good(r) if good(r) else 0, flag,
                        " (%d errors)" % errs if errs else ""))
    L.append("")
    L.append("Client CPU per request (getrusage of atp-loadgen) against server CPU per request "
             "(/proc/<pid>/stat), pipeline 1, closed loop, medians over all rounds:\n")
    L.append("| scenario | atp-loadgen us/request | server us/request | client lighter |")
    L.append("|---|---|---|---|")
    for name in ("lookup-p1", "reserve-p1"):
        for kind, idx in (("atpd", 1), ("redis", 2)):
            rows = results.get(name, [])
            if not rows:
                continue
            c = statistics.median([row[idx]["cpu"]["client_us_per_request"] for row in rows])
            s = statistics.median([row[idx]["cpu"].get("server_us_per_request", 0) for row in rows])
            L.append("| %s on %s | %.2f | %.2f | %s |" % (name, kind, c, s, "yes" if c < s else "no"))
    L.append("")
    if open_rows:
        L.append("Open loop at 70%% of atpd's own lookup maximum (%.0f of %.0f ops/s, pipeline 1, "
                 "50 connections, latency from the intended send time); a run is kept when it "
                 "achieved at least 95%% of the offered rate, the hypervisor stole at most 10%% and "
                 "other processes used at most 10%% of a core. Targets: p99 <= 500 us, p99.9 <= "
                 "1000 us.\n" % (0.7 * atpd_max, atpd_max))
        L.append("| atpd | runs kept | median p99 us | median p99.9 us |")
        L.append("|---|---|---|---|")
        for vname, _ in variants:
            rows = [r for r in open_rows if r[12] == vname]
            kept = [r for r in rows if r[10]]
            use = kept or rows
            L.append("| %s | %d of %d | **%.1f** | **%.1f** |"
                     % (vname, len(kept), len(rows), statistics.median([r[4] for r in use]),
                        statistics.median([r[5] for r in use])))
        L.append("")
        L.append("atp-loadgen ran with `--spin-us 50` (it polls instead of sleeping during the 50 us "
                 "before each intended send, so the VM's wake-up latency is not charged to the server); "
                 "the client's own lateness column is how late atp-loadgen itself sent (p99.9), when "
                 "it was not waiting for a free connection: that part of a latency is the client's, "
                 "not the server's.\n")
        L.append("| atpd | round | offered | achieved | p50 us | p99 us | p99.9 us | max us | client/server core | client's own lateness p99.9 us | steal | other processes | kept |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for rnd, rate, ach, p50, p99r, p999r, mx, (cl, sv), own999, st, ok, oth, vname in open_rows:
            L.append("| %s | %d | %.0f | %.0f | %.1f | %.1f | %.1f | %.1f | %.0f%% / %.0f%% | %.1f | %.0f%% | %.0f%% of a core | %s |"
                     % (vname, rnd, rate, ach, p50, p99r, p999r, mx, cl * 100, sv * 100, own999,
                        100 * max(st, 0), 100 * max(oth, 0), "yes" if ok else "no"))
        L.append("")
    if hiccup_rows:
        L.append("The machine's own hiccups, measured before each open-loop round: `bench/hiccup -t %.0f` "
                 "pinned to core 0 and to core 1 at the same time, a thread that only reads the clock "
                 "and records every gap between two readings (timer interrupts, the kernel, the host "
                 "running something else on the physical core, which the steal counter does not "
                 "always show). \"Late over d\" is the share of instants at which work arriving would "
                 "wait more than d for the CPU to come back, whatever the server does: above 0.1%% for "
                 "1 ms, a p99.9 under 1 ms cannot be measured on that core in that window, before any "
                 "queueing behind the gap.\n" % args.time)
        L.append("| round | core | longest gap us | gaps over 500 us | gaps over 1 ms | gaps over 2 ms | late over 500 us | late over 1 ms |")
        L.append("|---|---|---|---|---|---|---|---|")
        for rnd, h in hiccup_rows:
            for cpu, v in sorted(h.items()):
                g = v["gaps_over_us"]
                lf = v["late_fraction_over_us"]
                L.append("| %d | %d | %.0f | %d | %d | %d | %.3f%% | %.3f%% |"
                         % (rnd, cpu, v["longest_us"], g["500"], g["1000"], g["2000"],
                            100 * lf["500"], 100 * lf["1000"]))
        def late(h, cpu):
            return h.get(cpu, {}).get("late_fraction_over_us", {}).get("1000", 0)
        srv_floor = sum(1 for _, h in hiccup_rows if late(h, 0) > 0.001)
        any_floor = sum(1 for _, h in hiccup_rows if max(late(h, 0), late(h, 1)) > 0.001)
        L.append("")
        L.append("In %d of %d rounds the server's core (core 0), and in %d the server's or the client's "
                 "(an open-loop latency counts both: a request due while the client's core is away is "
                 "sent late, an answer arriving then is read late), was away long enough that more than "
                 "0.1%% of arrivals would have waited over 1 ms for it.\n"
                 % (srv_floor, len(hiccup_rows), any_floor))
    if flash:
        over = [f for f in flash if f[2] != 0 or f[6] != 0]
        L.append("Flash sale (5 SKUs x 1000 units, 50 connections racing, closed loop): %s.\n"
                 % ("oversold=0 in every run" if not over else "**OVERSOLD in %d runs**" % len(over)))
        L.append("| round | server | oversold | units granted (client) | units held (server) | reserves/s |")
        L.append("|---|---|---|---|---|---|")
        for rnd, kind, o, g, sg, ops, st in flash:
            L.append("| %d | %s | %s | %s | %s | %.0f |" % (rnd, kind, o, g, sg, ops))
        L.append("")
    if png:
        L.append("![lookups: latency against throughput](bench/%s)\n" % os.path.basename(png))
        L.append("The plot comes from `atp-loadgen --sweep` (CSV in `docs/bench/`), rendered by "
                 "gnuplot.\n")
    elif csvs:
        L.append("Sweep CSVs were written but gnuplot is not installed (Debian: `gnuplot-nox`), so "
                 "no plot was rendered.\n")
    if not args.atpd_http:
        L.append("HTTP (atpd's facade against nginx `return 200`): **not measured**: this atpd has no "
                 "HTTP listener. `atp-loadgen -P http` drives nginx; rerun this script with a "
                 "build that has the facade.\n")
    elif not args.nginx_ok:
        L.append("HTTP (atpd's facade against nginx `return 200`): **not measured**: nginx is not "
                 "installed (Debian: nginx-light).\n")
    else:
        L.append("HTTP: nginx 1 worker (`worker_processes 1`, `return 200` with a 15-byte JSON body "
                 "from memory, access log off) against atpd's HTTP facade answering "
                 "`GET /v1/availability/{sku}?channel=web&location=DCn` from the store; the \"other\" "
                 "columns above are nginx for that row.\n")
    L.append("Commands (one round; servers are started fresh per run):\n")
    L.append("```sh")
    for name, what, extra, pipe, target in SCENARIOS:
        if name in cmds:
            for kind in cmds[name]:
                srv_cmd, lg_cmd = cmds[name][kind]
                L.append("# %s, %s" % (name, kind))
                L.append(short_cmd(srv_cmd) + " &")
                L.append(short_cmd(lg_cmd))
    if hiccup_rows:
        L.append("# the machine's own hiccups, before each open-loop round")
        L.append("taskset -c 0 %s -t %.1f --json & taskset -c 1 %s -t %.1f --json"
                 % (short_cmd([args.hiccup]), args.time, short_cmd([args.hiccup]), args.time))
    for srv_cmd, lg_cmd in open_cmds:
        L.append("# open loop at 70% of the atpd maximum")
        L.append(short_cmd(srv_cmd) + " &")
        L.append(short_cmd(lg_cmd))
    for c in sweep_cmds:
        L.append(short_cmd(c))
    L.append("```")
    L.append("\n(The whole script ran for %.0f s.)" % (time.time() - started))
    text = "\n".join(L)
    if args.no_doc:
        print(text)
    else:
        write_doc(args, text)
        print("wrote the Side by side section of", args.out)


if __name__ == "__main__":
    main()
