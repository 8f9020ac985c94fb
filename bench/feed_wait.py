#!/usr/bin/env python3
"""feed_wait.py - what a change-feed subscription costs atpd, and how soon it hears.

A marketplace connector follows the change feed with CHANGES + WAIT
(protocol/PROTOCOL.md): the server holds a request that has nothing new and
answers it once a change is recorded. This measures, against a real atpd on
127.0.0.1 (binary protocol, no Kafka):

  * idle cost: atpd's CPU time (utime + stime from /proc/PID/stat) over a
    quiet window while N connections each hold a request, for each N of
    --held (STATS server_feed_waiting must equal N);
  * churn cost: the same while a writer changes an item every --churn-ms
    at a location the held requests' channel does not sell from, so the
    feed moves at every look and every held request is examined again (and
    must stay held);
  * delivery: a follower holds a request, a writer applies ADJUST, and the
    time from the writer's acknowledgement to the follower's answer is
    recorded, --changes times, with --held-background other requests held
    meanwhile (on a channel that does not sell from the item's location, so
    every change is looked at for them and none answers them); every answer
    must carry the adjusted item, and the others must still be held at the
    end.

Standard library only; every server is started here, bounded and stopped by
pid. Run from the repository root after building:

    python3 bench/feed_wait.py --atpd build/src/atpd
"""

import argparse
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

OP_CHANGES, OP_ADJUST, OP_SET, OP_STATS = 0x12, 0x30, 0x31, 0x40
FLAG_WAIT = 0x0002
HDR = struct.Struct("<2sBBHHQI")


def frame(op, rid, body, flags=0):
    return HDR.pack(b"AT", 1, op, flags, 0, rid, len(body)) + body


def s8(s):
    b = s.encode()
    return bytes([len(b)]) + b


def read_frame(sock, buf):
    """One response frame: (opcode, flags, status, id, body); buf is a bytearray of leftovers."""
    while True:
        if len(buf) >= HDR.size:
            magic, _ver, op, flags, status, rid, blen = HDR.unpack_from(buf)
            if magic != b"AT":
                raise RuntimeError("bad magic in a response")
            if len(buf) >= HDR.size + blen:
                body = bytes(buf[HDR.size:HDR.size + blen])
                del buf[:HDR.size + blen]
                return op, flags, status, rid, body
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("atpd closed the connection")
        buf += chunk


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.rid = 0

    def send(self, op, body, flags=0):
        self.rid += 1
        self.sock.sendall(frame(op, self.rid, body, flags))
        return self.rid

    def recv(self):
        op, flags, status, rid, body = read_frame(self.sock, self.buf)
        if status:
            msg = body[2:2 + struct.unpack_from("<H", body)[0]].decode(errors="replace")
            raise RuntimeError("status %d: %s" % (status, msg))
        return body

    def call(self, op, body, flags=0):
        self.send(op, body, flags)
        return self.recv()

    def close(self):
        self.sock.close()


def changes_body(channel, cursor, mx, wait_ms=0):
    b = s8(channel) + struct.pack("<QH", cursor, mx)
    return b + (struct.pack("<I", wait_ms) if wait_ms else b"")


def parse_changes(body):
    nxt, more, n = struct.unpack_from("<QBH", body)
    off, out = 11, []
    for _ in range(n):
        sku = body[off + 1:off + 1 + body[off]].decode()
        off += 1 + body[off]
        loc = body[off + 1:off + 1 + body[off]].decode()
        off += 1 + body[off]
        (atp,) = struct.unpack_from("<q", body, off)
        off += 8
        out.append((sku, loc, atp))
    return nxt, more, out


def stats(conn):
    body = conn.call(OP_STATS, b"")
    (n,) = struct.unpack_from("<H", body)
    off, out = 2, {}
    for _ in range(n):
        name = body[off + 1:off + 1 + body[off]].decode()
        off += 1 + body[off]
        (v,) = struct.unpack_from("<q", body, off)
        off += 8
        out[name] = v
    return out


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def wait_held(conn, want, deadline_s=10):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if stats(conn)["server_feed_waiting"] == want:
            return
        time.sleep(0.02)
    s = stats(conn)
    raise RuntimeError("server_feed_waiting never reached %d (waiting %d, waits %d, open %d)"
                       % (want, s["server_feed_waiting"], s["server_feed_waits"],
                          s["server_connections_open"]))


def hold(port, n, cursor, wait_ms, channel="web"):
    conns = []
    for _ in range(n):
        c = Conn(port)
        c.send(OP_CHANGES, changes_body(channel, cursor, 100, wait_ms), FLAG_WAIT)
        conns.append(c)
    return conns


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--atpd", default="build/src/atpd")
    ap.add_argument("--held", default="0,100,1000", help="held requests per idle window")
    ap.add_argument("--seconds", type=float, default=10.0, help="each idle window")
    ap.add_argument("--churn-ms", type=float, default=4.0,
                    help="pause between the churn phase's changes")
    ap.add_argument("--changes", type=int, default=200, help="changes timed for delivery")
    ap.add_argument("--held-background", type=int, default=1000,
                    help="other requests held while delivery is timed")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    held = [int(x) for x in args.held.split(",")]
    need = max(held + [args.held_background]) + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    tmp = tempfile.mkdtemp(prefix="feed_wait.")
    pf = os.path.join(tmp, "port")
    cmd = [args.atpd, "--port", "0", "--port-file", pf, "--http=no", "--kafka-embedded=no",
           "--workers", str(args.workers), "--dir", os.path.join(tmp, "data"),
           "-o", "feed-wait-max 300s"]
    log = open(os.path.join(tmp, "atpd.log"), "w")
    srv = subprocess.Popen(["timeout", "600"] + cmd, stdout=log, stderr=log)
    try:
        for _ in range(200):
            if os.path.exists(pf) and open(pf).read().strip():
                break
            time.sleep(0.05)
        port = int(open(pf).read())
        # timeout(1) runs atpd as its child: measure atpd itself.
        pid = int(subprocess.check_output(["pgrep", "-P", str(srv.pid)]).split()[0])
        admin = Conn(port)
        admin.call(OP_SET, s8("SKU-W") + s8("DC3") + struct.pack("<qQ", 1000, 1))
        cursor, _, _ = parse_changes(admin.call(OP_CHANGES, changes_body("web", 0, 1)))
        print("atpd pid %d port %d, workers %d, cursor %d" % (pid, port, args.workers, cursor))
        print(" ".join(cmd))

        print("\nidle: atpd CPU while N connections each hold a CHANGES + WAIT (nothing changes)")
        print("%8s %10s %12s" % ("held", "seconds", "atpd cpu %"))
        for n in held:
            conns = hold(port, n, cursor, 300000)
            wait_held(admin, n)
            c0, t0 = cpu_s(pid), time.monotonic()
            time.sleep(args.seconds)
            c1, t1 = cpu_s(pid), time.monotonic()
            if stats(admin)["server_feed_waiting"] != n:
                raise RuntimeError("a held request was answered with nothing changing")
            print("%8d %10.1f %12.2f" % (n, t1 - t0, 100.0 * (c1 - c0) / (t1 - t0)))
            for c in conns:
                c.close()
            wait_held(admin, 0)

        print("\nchurn: the same while a writer adjusts SKU-W@DC3 every %.1f ms; the held"
              " requests follow marketplace, which does not sell from DC3, so every change"
              " is examined for each of them and none is answered" % args.churn_ms)
        print("%8s %10s %12s %12s" % ("held", "seconds", "changes/s", "atpd cpu %"))
        for n in held:
            conns = hold(port, n, cursor, 300000, "marketplace")
            wait_held(admin, n)
            writer = Conn(port)
            c0, t0 = cpu_s(pid), time.monotonic()
            made, delta = 0, 1
            while time.monotonic() - t0 < args.seconds:
                writer.call(OP_ADJUST, s8("SKU-W") + s8("DC3") + struct.pack("<q", delta))
                delta, made = -delta, made + 1
                time.sleep(args.churn_ms / 1000.0)
            c1, t1 = cpu_s(pid), time.monotonic()
            if stats(admin)["server_feed_waiting"] != n:
                raise RuntimeError("a request of another channel was answered")
            print("%8d %10.1f %12.0f %12.2f"
                  % (n, t1 - t0, made / (t1 - t0), 100.0 * (c1 - c0) / (t1 - t0)))
            writer.close()
            for c in conns:
                c.close()
            wait_held(admin, 0)

        print("\ndelivery: writer's ADJUST acknowledged -> the follower's held CHANGES answered")
        # The on_hand the churn left, and a cursor after its changes.
        on_hand = struct.unpack("<q", admin.call(
            OP_ADJUST, s8("SKU-W") + s8("DC3") + struct.pack("<q", 1)))[0]
        cursor, _, _ = parse_changes(admin.call(OP_CHANGES, changes_body("web", 0, 1)))
        # The others follow marketplace, which does not sell from DC3: the
        # changes below are recorded but never theirs, so they stay held
        # (each is looked at again whenever the feed moves).
        bg = hold(port, args.held_background, cursor, 300000, "marketplace")
        wait_held(admin, args.held_background)
        follower = Conn(port)
        lat = []
        cur = cursor
        for i in range(args.changes):
            follower.send(OP_CHANGES, changes_body("web", cur, 100, 300000), FLAG_WAIT)
            wait_held(admin, args.held_background + 1)
            time.sleep(random.uniform(0.002, 0.012))
            delta = 1 if i % 2 == 0 else -1
            body = admin.call(OP_ADJUST, s8("SKU-W") + s8("DC3") + struct.pack("<q", delta))
            t_ack = time.monotonic_ns()
            on_hand += delta
            if struct.unpack("<q", body)[0] != on_hand:
                raise RuntimeError("ADJUST answered an unexpected on_hand")
            nxt, _more, entries = parse_changes(follower.recv())
            t_ans = time.monotonic_ns()
            # The item, at its ATP for web (safety stock 2 units, no cap)
            # after the adjust just made.
            if entries != [("SKU-W", "DC3", on_hand - 2)] or nxt == cur:
                raise RuntimeError("unexpected answer %r" % (entries,))
            cur = nxt
            lat.append((t_ans - t_ack) / 1e6)
        st = stats(admin)
        if st["server_feed_waiting"] != args.held_background:
            raise RuntimeError("a request of another channel was answered")
        print("changes %d, with %d other requests held; ms from ack to answer:"
              % (len(lat), args.held_background))
        print("  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  (server_feed_waits %d)"
              % (pct(lat, 50), pct(lat, 90), pct(lat, 99), max(lat), st["server_feed_waits"]))
        for c in bg:
            c.close()
        follower.close()
        admin.close()
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=15)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
