#!/usr/bin/env python3
"""Record the kernel's nf_tables dump of one table as hex, one netlink message a line.

Usage (inside a network namespace you made): nft-dump-hex.py FAMILY TABLE > fixture.hex
FAMILY is the nfproto number (inet = 1). Sends GETTABLE, then GETCHAIN, GETSET,
GETRULE dumps filtered on the table and a GETSETELEM dump per set; every reply
message (NLMSG_DONE and errors excluded) is printed as it came from the kernel,
prefixed with the request kind ("table", "chain", "set", "elements", "rule").
Used to make the golden fixtures under tests/fixtures/nft/; needs no library.
"""
import socket, struct, sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
GETTABLE, GETCHAIN, GETRULE, GETSET, GETSETELEM = 1, 4, 7, 10, 13
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 1, 4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3


def nla(kind, payload):
    ln = 4 + len(payload)
    return struct.pack("=HH", ln, kind) + payload + b"\0" * ((4 - ln % 4) % 4)


def cstr(s):
    return s.encode() + b"\0"


def request(sock, seq, msg_type, flags, family, attrs):
    body = struct.pack("=BBH", family, 0, 0) + attrs
    hdr = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg_type, flags, seq, 0)
    sock.send(hdr + body)
    out = []
    while True:
        data = sock.recv(1 << 20)
        off = 0
        while off < len(data):
            ln, typ, _fl, rseq, _pid = struct.unpack_from("=IHHII", data, off)
            msg = data[off:off + ln]
            off += (ln + 3) & ~3
            if rseq != seq:
                continue
            if typ == NLMSG_DONE:
                return out
            if typ == NLMSG_ERROR:
                err = struct.unpack_from("=i", msg, 16)[0]
                if err != 0:
                    sys.exit(f"request {msg_type}: errno {-err}")
                return out
            out.append(msg)
            if not flags & NLM_F_DUMP:
                pass


def main():
    family, table = int(sys.argv[1]), sys.argv[2]
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.bind((0, 0))
    seq = 1
    lines = []
    for kind, t, fl, attrs in [
        ("table", GETTABLE, NLM_F_REQUEST | NLM_F_ACK, nla(1, cstr(table))),
        ("chain", GETCHAIN, NLM_F_REQUEST | NLM_F_DUMP, nla(1, cstr(table))),
        ("set", GETSET, NLM_F_REQUEST | NLM_F_DUMP, nla(1, cstr(table))),
        ("rule", GETRULE, NLM_F_REQUEST | NLM_F_DUMP, nla(1, cstr(table))),
    ]:
        msgs = request(s, seq, t, fl, family, attrs)
        seq += 1
        for m in msgs:
            lines.append((kind, m))
        if kind == "set":
            sets = []
            for m in msgs:
                off = 20
                while off < len(m):
                    ln, k = struct.unpack_from("=HH", m, off)
                    if k & 0x3FFF == 2:
                        sets.append(m[off + 4:off + ln].rstrip(b"\0").decode())
                    off += (ln + 3) & ~3
            for name in sets:
                attrs = nla(1, cstr(table)) + nla(2, cstr(name))
                for m in request(s, seq, GETSETELEM, NLM_F_REQUEST | NLM_F_DUMP, family, attrs):
                    lines.append(("elements", m))
                seq += 1
    for kind, m in lines:
        print(kind, m.hex())


main()
