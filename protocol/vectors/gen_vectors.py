#!/usr/bin/env python3
"""Write the golden vectors of the atpd binary protocol (protocol/vectors/*.txt).

This is a second encoder, written from PROTOCOL.md alone and sharing no code
with the C codec, so tests/test_vectors.c (which checks the C codec against
these files) compares two independent readings of the spec.

Each vector is a meaning line and a hex line:

    request: op=GET id=1 sku="SKU-1" channel="web" loc="DC-1"
    hex: 41 54 01 10 ...

Run from anywhere: python3 protocol/vectors/gen_vectors.py
"""
import os
import struct

MAGIC = b"AT"
VERSION = 1
RESPONSE = 0x80

OPS = {
    "NONE": 0x00, "HELLO": 0x01, "PING": 0x02, "GET": 0x10, "MGET": 0x11, "CHANGES": 0x12,
    "RESERVE": 0x20, "COMMIT": 0x21, "RELEASE": 0x22, "EXTEND": 0x23,
    "GET_RESERVATION": 0x24, "ADJUST": 0x30, "SET": 0x31, "STATS": 0x40,
}

# Wire statuses, from the table in PROTOCOL.md.
STATUS = {
    "OK": 0, "EINVAL_SKU": 100, "EINVAL_LOC": 101, "ENOCHANNEL": 102, "EQTY": 103,
    "ERANGE": 104, "ETTL": 105, "EKEY": 106, "ETOOMANY": 107, "EINVAL": 108,
    "ENOTFOUND": 200, "EINSUFFICIENT": 300, "ESTATE": 301, "EEXPIRED": 302,
    "ECONFLICT": 303, "ESTALE": 304, "EDUPLICATE": 305, "ECURSOR": 307, "EFULL": 400,
    "EUNAVAILABLE": 401, "EREADONLY": 402, "EBADMAGIC": 500, "EVERSION": 501,
    "EUNKNOWNOP": 502, "EMALFORMED": 503, "ETOOLARGE": 504, "ETIMEDOUT": 505,
    "ETOOMANYCONN": 506, "EINTERNAL": 900,
}


def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)
def i64(v): return struct.pack("<q", v)


def str8(s):
    b = s.encode()
    assert len(b) <= 255
    return u8(len(b)) + b


def str16(s):
    b = s.encode()
    return u16(len(b)) + b


def frame(opcode, flags, status, rid, body):
    return MAGIC + u8(VERSION) + u8(opcode) + u16(flags) + u16(status) + u64(rid) + u32(len(body)) + body


class Meaning:
    """Builds the meaning text and the body together, field by field."""

    def __init__(self, direction, op, rid, status=None, flags=0, opcode=None):
        optext = op if opcode is None else f"0x{opcode:02x}"
        self.parts = [f"{direction}:", f"op={optext}", f"id={rid}"]
        if status is not None:
            self.parts.append(f"status={status}")
        if flags:
            self.parts.append(f"flags=0x{flags:04x}")
        self.direction = direction
        self.opcode = OPS[op] if opcode is None else opcode
        self.flags = flags
        self.status = 0 if status is None else STATUS[status]
        self.rid = rid
        self.body = b""

    def num(self, name, value, enc):
        self.parts.append(f"{name}={value}")
        self.body += enc(value)
        return self

    def s8(self, name, value):
        self.parts.append(f'{name}="{value}"')
        self.body += str8(value)
        return self

    def s16(self, name, value):
        self.parts.append(f'{name}="{value}"')
        self.body += str16(value)
        return self

    def raw(self, name, value):
        self.parts.append(f'{name}="{value}"')
        self.body += value.encode()
        return self

    def render(self):
        op = self.opcode | (RESPONSE if self.direction == "response" else 0)
        data = frame(op, self.flags, self.status, self.rid, self.body)
        return " ".join(self.parts) + "\nhex: " + " ".join(f"{b:02x}" for b in data) + "\n"


def req(op, rid, flags=0, opcode=None):
    return Meaning("request", op, rid, flags=flags, opcode=opcode)


def resp(op, rid, status="OK", flags=0, opcode=None):
    return Meaning("response", op, rid, status=status, flags=flags, opcode=opcode)


def err(op, rid, status, message, opcode=None):
    return resp(op, rid, status, opcode=opcode).s16("message", message)


def breakdown(m, atp, on_hand=None, allocated=None, reserved=None, safety=None):
    m.num("atp", atp, i64)
    if on_hand is not None:
        m.num("on_hand", on_hand, i64).num("allocated", allocated, i64)
        m.num("reserved", reserved, i64).num("safety", safety, i64)
    return m


def resv(m, res_id, state, channel, key, created, expires, ttl, lines):
    m.num("res_id", res_id, u64).num("state", state, u8).s8("channel", channel).s8("key", key)
    m.num("created_us", created, u64).num("expires_us", expires, u64).num("ttl_ms", ttl, u64)
    m.num("count", len(lines), u16)
    for sku, loc, qty, done in lines:
        m.s8("sku", sku).s8("loc", loc).num("qty", qty, i64).num("fulfilled", done, u8)
    return m


T0 = 1_750_000_000_000_000  # created_us used by the reservation vectors
FILES = {}

FILES["hello"] = [
    ("HELLO from a client that speaks version 1 only.",
     req("HELLO", 1).num("min_version", 1, u8).num("max_version", 1, u8).s16("client", "atpctl 0.1.0")),
    ("The server agrees on version 1 and announces its limits and build.",
     resp("HELLO", 1).num("version", 1, u8).num("max_frame", 1048576, u32)
     .num("max_keys", 1000, u16).num("max_lines", 32, u16).s16("build", "atpd 0.1.0")),
    ("A client that speaks versions 2..3 only.",
     req("HELLO", 2).num("min_version", 2, u8).num("max_version", 3, u8).s16("client", "")),
    ("No common version: EVERSION, the connection stays open.",
     err("HELLO", 2, "EVERSION", "unsupported protocol version")),
]

FILES["ping"] = [
    ("PING with an empty payload.", req("PING", 7)),
    ("Its answer.", resp("PING", 7)),
    ("PING with a payload, echoed unchanged.", req("PING", 8).raw("payload", "t=12345")),
    ("Its answer.", resp("PING", 8).raw("payload", "t=12345")),
]

FILES["get"] = [
    ("ATP of SKU-1 at DC-1 for channel web.",
     req("GET", 1).s8("sku", "SKU-1").s8("channel", "web").s8("loc", "DC-1")),
    ("42 available.", breakdown(resp("GET", 1), 42)),
    ("Network ATP (empty location) with the breakdown.",
     req("GET", 2, flags=0x0001).s8("sku", "SKU-1").s8("channel", "web").s8("loc", "")),
    ("The breakdown is present, so the flag is echoed.",
     breakdown(resp("GET", 2, flags=0x0001), 85, 100, 5, 3, 7)),
    ("An item the server has never seen.",
     req("GET", 3).s8("sku", "NOPE").s8("channel", "web").s8("loc", "DC-1")),
    ("ENOTFOUND.", err("GET", 3, "ENOTFOUND", "not found")),
    ("An unknown channel.",
     req("GET", 4).s8("sku", "SKU-1").s8("channel", "tv").s8("loc", "")),
    ("ENOCHANNEL.", err("GET", 4, "ENOCHANNEL", "unknown channel")),
    ("A sku with a space in it.",
     req("GET", 5).s8("sku", "SKU 1").s8("channel", "web").s8("loc", "")),
    ("EINVAL_SKU.", err("GET", 5, "EINVAL_SKU", "invalid sku: 1..64 bytes of [A-Za-z0-9._:/-]")),
]


def mget_req(rid, flags, keys):
    m = req("MGET", rid, flags=flags).num("count", len(keys), u16)
    for sku, ch, loc in keys:
        m.s8("sku", sku).s8("channel", ch).s8("loc", loc)
    return m


def mget_resp(rid, flags, entries):
    m = resp("MGET", rid, flags=flags).num("count", len(entries), u16)
    for e in entries:
        m.num("status", e[0], lambda name: u16(STATUS[name]))
        breakdown(m, *e[1:])
    return m


FILES["mget"] = [
    ("Three keys: an item, a network read, an unknown sku; each has its own status.",
     mget_req(10, 0, [("SKU-1", "web", "DC-1"), ("SKU-2", "app", ""), ("NOPE", "web", "")])),
    ("The frame status is OK; the third entry is ENOTFOUND with zeros.",
     mget_resp(10, 0, [("OK", 42), ("OK", 7), ("ENOTFOUND", 0)])),
    ("Two keys with the breakdown, one with an unknown channel.",
     mget_req(11, 0x0001, [("SKU-1", "web", "DC-1"), ("SKU-1", "tv", "DC-1")])),
    ("Entries are 42 bytes each with the breakdown.",
     mget_resp(11, 0x0001, [("OK", 42, 50, 2, 1, 5), ("ENOCHANNEL", 0, 0, 0, 0, 0)])),
    ("An empty MGET is valid.", mget_req(12, 0, [])),
    ("Its answer.", mget_resp(12, 0, [])),
    ("The answer to an MGET with more keys than max_keys: ETOOMANY for the whole request.",
     err("MGET", 13, "ETOOMANY", "too many lines or keys in one request")),
]


def changes_req(rid, flags, channel, cursor, mx, wait_ms=None):
    m = req("CHANGES", rid, flags=flags).s8("channel", channel).num("cursor", cursor, u64) \
        .num("max", mx, u16)
    # WAIT (0x0002): a u32 wait_ms ends the body; without the flag there is none.
    assert (wait_ms is not None) == bool(flags & 0x0002)
    if wait_ms is not None:
        m.num("wait_ms", wait_ms, u32)
    return m


def changes_resp(rid, flags, next_cursor, more, entries):
    m = resp("CHANGES", rid, flags=flags).num("next_cursor", next_cursor, u64)
    m.num("more", more, u8).num("count", len(entries), u16)
    for sku, loc, atp in entries:
        m.s8("sku", sku).s8("loc", loc).num("atp", atp, i64)
    return m


# Cursors are opaque to clients; these look like the server's (a random
# base in [2^62, 2^63) plus a record number), which is not part of the
# contract.
CUR0 = 0x5A3C_0000_0000_1000
CUR1 = 0x5A3C_0000_0000_1007

FILES["changes"] = [
    ("Cursor 0: ask for the cursor to follow, before reading everything with MGET.",
     changes_req(14, 0, "web", 0, 1000)),
    ("The cursor; no entries.", changes_resp(14, 0, CUR0, 0, [])),
    ("What changed since then, for channel web, at most 100 entries.",
     changes_req(15, 0, "web", CUR0, 100)),
    ("Two items, each with its ATP now; nothing more waits.",
     changes_resp(15, 0, CUR1, 0, [("SKU-1", "DC-1", 42), ("SKU-2", "DC-2", 0)])),
    ("NETWORK: one entry per sku with its network ATP, at most 1 entry.",
     changes_req(16, 0x0001, "web", CUR1, 1)),
    ("The flag is echoed, the location is empty, and more records wait: ask again at once.",
     changes_resp(16, 0x0001, CUR1 + 1, 1, [("SKU-1", "", 97)])),
    ("A cursor from before a restart, or older than the feed window.",
     changes_req(17, 0, "web", 0x1111_0000_0000_0001, 100)),
    ("ECURSOR: take a new cursor (cursor 0), read everything again, follow it.",
     err("CHANGES", 17, "ECURSOR", "change feed cursor expired or not from this instance: "
         "read again and follow a new cursor")),
    ("WAIT: if nothing is new after the cursor, the server may hold the answer for up to "
     "wait_ms (30 s here, cut to its feed-wait-max) and answers as soon as a change arrives.",
     changes_req(18, 0x0002, "web", CUR1, 100, wait_ms=30000)),
    ("The wait is over with nothing new: no entries, next_cursor is the request's cursor (ask "
     "again from it). WAIT is a request flag only.",
     changes_resp(18, 0, CUR1, 0, [])),
    ("NETWORK and WAIT together, for half a second.",
     changes_req(19, 0x0003, "web", CUR1, 10, wait_ms=500)),
    ("A change arrived during the wait: answered at once, NETWORK echoed.",
     changes_resp(19, 0x0001, CUR1 + 1, 0, [("SKU-3", "", 5)])),
]


def reserve_req(rid, key, channel, ttl, lines):
    m = req("RESERVE", rid).s8("key", key).s8("channel", channel).num("ttl_ms", ttl, u64)
    m.num("count", len(lines), u16)
    for sku, loc, qty in lines:
        m.s8("sku", sku).s8("loc", loc).num("qty", qty, i64)
    return m


ORDER1 = [("SKU-1", "DC-1", 2), ("SKU-2", "", 1)]
ORDER1_HELD = [("SKU-1", "DC-1", 2, 0), ("SKU-2", "DC-2", 1, 0)]

FILES["reserve"] = [
    ("Hold 2 x SKU-1 at DC-1 and 1 x SKU-2 anywhere, for order-1, 15 minutes.",
     reserve_req(20, "order-1", "web", 900000, ORDER1)),
    ("Held: the server chose DC-2 for the second line.",
     resv(resp("RESERVE", 20), 1001, 1, "web", "order-1", T0, T0 + 900_000_000, 900000, ORDER1_HELD)),
    ("The same request retried.", reserve_req(21, "order-1", "web", 900000, ORDER1)),
    ("The same reservation, REPLAYED.",
     resv(resp("RESERVE", 21, flags=0x0001), 1001, 1, "web", "order-1", T0, T0 + 900_000_000,
          900000, ORDER1_HELD)),
    ("The same key with other content.",
     reserve_req(22, "order-1", "web", 900000, [("SKU-1", "DC-1", 3)])),
    ("ECONFLICT.", err("RESERVE", 22, "ECONFLICT", "idempotency key reused with different content")),
    ("More than is available.",
     reserve_req(23, "order-2", "web", 60000, [("SKU-1", "DC-1", 5), ("SKU-3", "", 500)])),
    ("EINSUFFICIENT with one shortfall per line: the second line is short.",
     err("RESERVE", 23, "EINSUFFICIENT", "insufficient stock").num("count", 2, u16)
     .num("requested", 5, i64).num("available", 40, i64)
     .num("requested", 500, i64).num("available", 12, i64)),
    ("A zero quantity.", reserve_req(24, "order-3", "web", 60000, [("SKU-1", "DC-1", 0)])),
    ("EQTY.", err("RESERVE", 24, "EQTY", "quantity must be greater than zero")),
    ("A zero ttl.", reserve_req(25, "order-4", "web", 0, [("SKU-1", "DC-1", 1)])),
    ("ETTL.", err("RESERVE", 25, "ETTL", "ttl must be between 1 ms and the configured maximum")),
    ("A server whose durable storage failed refuses writes.",
     reserve_req(26, "order-5", "web", 60000, [("SKU-1", "DC-1", 1)])),
    ("EREADONLY.", err("RESERVE", 26, "EREADONLY", "reservations are refused: durable storage failed")),
]

COMMITTED = [("SKU-1", "DC-1", 2, 0), ("SKU-2", "DC-2", 1, 0)]

FILES["commit"] = [
    ("Commit reservation 1001.", req("COMMIT", 30).num("res_id", 1001, u64)),
    ("Committed (state 2).",
     resv(resp("COMMIT", 30), 1001, 2, "web", "order-1", T0, T0 + 900_000_000, 900000, COMMITTED)),
    ("Commit an unknown id.", req("COMMIT", 31).num("res_id", 999999, u64)),
    ("ENOTFOUND.", err("COMMIT", 31, "ENOTFOUND", "not found")),
    ("Commit one whose ttl passed.", req("COMMIT", 32).num("res_id", 1002, u64)),
    ("EEXPIRED.", err("COMMIT", 32, "EEXPIRED", "reservation expired")),
]

FILES["release"] = [
    ("Release reservation 1003.", req("RELEASE", 40).num("res_id", 1003, u64)),
    ("Released (state 4).",
     resv(resp("RELEASE", 40), 1003, 4, "app", "cart-77", T0, T0 + 60_000_000, 60000,
          [("SKU-9", "DC-1", 1, 0)])),
    ("Release it again.", req("RELEASE", 41).num("res_id", 1003, u64)),
    ("ESTATE.", err("RELEASE", 41, "ESTATE", "reservation is not in a state that allows this")),
]

FILES["extend"] = [
    ("Extend reservation 1004 by 10 minutes.",
     req("EXTEND", 50).num("res_id", 1004, u64).num("ttl_ms", 600000, u64)),
    ("Still held, with the new expiry.",
     resv(resp("EXTEND", 50), 1004, 1, "web", "order-9", T0, T0 + 5_000_000 + 600_000_000, 600000,
          [("SKU-1", "DC-1", 1, 0)])),
    ("Extend with a zero ttl.", req("EXTEND", 51).num("res_id", 1004, u64).num("ttl_ms", 0, u64)),
    ("ETTL.", err("EXTEND", 51, "ETTL", "ttl must be between 1 ms and the configured maximum")),
]

FILES["get_reservation"] = [
    ("Read reservation 1001 by id.", req("GET_RESERVATION", 60).num("res_id", 1001, u64)),
    ("Committed, one line fulfilled (shipped).",
     resv(resp("GET_RESERVATION", 60), 1001, 2, "web", "order-1", T0, T0 + 900_000_000, 900000,
          [("SKU-1", "DC-1", 2, 1), ("SKU-2", "DC-2", 1, 0)])),
    ("Read by idempotency key.", req("GET_RESERVATION", 61, flags=0x0001).s8("key", "order-404")),
    ("ENOTFOUND.", err("GET_RESERVATION", 61, "ENOTFOUND", "not found")),
]

FILES["adjust"] = [
    ("Receive 100 units of SKU-1 at DC-1.",
     req("ADJUST", 70).s8("sku", "SKU-1").s8("loc", "DC-1").num("delta", 100, i64)),
    ("The new on_hand.", resp("ADJUST", 70).num("on_hand", 142, i64)),
    ("Pick 3 (a negative delta).",
     req("ADJUST", 71).s8("sku", "SKU-1").s8("loc", "DC-1").num("delta", -3, i64)),
    ("The new on_hand.", resp("ADJUST", 71).num("on_hand", 139, i64)),
    ("A location with a forbidden character.",
     req("ADJUST", 72).s8("sku", "SKU-1").s8("loc", "DC#1").num("delta", 1, i64)),
    ("EINVAL_LOC.",
     err("ADJUST", 72, "EINVAL_LOC", "invalid location: 1..32 bytes of [A-Za-z0-9._:/-]")),
]

FILES["set"] = [
    ("Cycle count: SKU-1 at DC-1 is 80, sequence 17.",
     req("SET", 80).s8("sku", "SKU-1").s8("loc", "DC-1").num("on_hand", 80, i64).num("seq", 17, u64)),
    ("Applied; the body is empty.", resp("SET", 80)),
    ("An older snapshot (sequence 16).",
     req("SET", 81).s8("sku", "SKU-1").s8("loc", "DC-1").num("on_hand", 95, i64).num("seq", 16, u64)),
    ("ESTALE.", err("SET", 81, "ESTALE", "set is older than the last applied one for this item")),
]

FILES["stats"] = [
    ("STATS has an empty body.", req("STATS", 90)),
    ("Name/value pairs.",
     resp("STATS", 90).num("count", 3, u16)
     .s8("name", "items").num("value", 300000, i64)
     .s8("name", "reservations_held").num("value", 12, i64)
     .s8("name", "reserves_rejected").num("value", 3, i64)),
]

FILES["errors"] = [
    ("Frames that do not start with \"AT\" get this unattributed answer (opcode 0x80, id 0);"
     " then the server closes.",
     err("NONE", 0, "EBADMAGIC", "bad frame magic")),
    ("An unknown opcode 0x55: the answer echoes it with the response bit; the connection carries on.",
     req("NONE", 100, opcode=0x55)),
    ("EUNKNOWNOP.", err("NONE", 100, "EUNKNOWNOP", "unknown operation", opcode=0x55)),
    ("A body length over the limit (echoes the id, then the server closes).",
     err("PING", 101, "ETOOLARGE", "frame or body larger than the limit")),
    ("A malformed body (for example a string running past the end).",
     err("GET", 102, "EMALFORMED", "malformed request body")),
    ("The server is at its connection limit (unattributed, then it closes).",
     err("NONE", 0, "ETOOMANYCONN", "connection limit reached")),
]


def main():
    out = os.path.dirname(os.path.abspath(__file__))
    for name, cases in FILES.items():
        text = [f"# Golden vectors: {name}. Written by gen_vectors.py from PROTOCOL.md; do not edit.\n"]
        for comment, m in cases:
            text.append(f"\n# {comment}\n")
            text.append(m.render())
        with open(os.path.join(out, name + ".txt"), "w") as f:
            f.write("".join(text))


if __name__ == "__main__":
    main()
