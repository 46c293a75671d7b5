"""Why a repair after a foreign deletion cannot be fast (README, "Known shortfalls").

Run by benches/kernel-commit-wait.sh inside a scratch network namespace. A
long-lived libnftables context stands in for the daemon (its netlink socket
stays open) and listens to nf_tables change events; a foreign change deletes
a table like ours; 2 ms after the DELTABLE event (as the daemon would) the
stand-in sends its batch, timed. Variants:
  delete-then-recreate   foreign `nft delete table` (a process that exits), our whole table re-created
  delete-then-tiny       the same foreign delete, our batch only `add table inet other` (any batch waits)
  delete-socket-kept     the deletion sent from a long-lived socket (not closed), our table re-created
  no-deletion            a foreign `nft add table` (nothing deleted), our table re-created
Prints a markdown table: ms from our batch's start to its acknowledgment.
"""
import ctypes, os, socket, struct, subprocess, sys, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 60
DELAY = 0.002
lib = ctypes.CDLL("libnftables.so.1")
lib.nft_ctx_new.restype = ctypes.c_void_p
lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]

TABLE = """table inet t {
  set api_port_v4 { type ipv4_addr . inet_service; elements = { 192.168.0.10 . 5443 } }
  set exempt_v4 { type ipv4_addr; flags interval; elements = { 10.0.5.0/24 } }
  set sources_v4 { type ipv4_addr; flags interval; elements = { 10.0.0.0/16 } }
  set attempts_v4 { type ipv4_addr; size 65535; flags dynamic,timeout; timeout 1m; }
  chain block { update @attempts_v4 { ip saddr limit rate 10/second burst 20 packets } log group 1443; reject with tcp reset; }
  chain guard {
    ip saddr @exempt_v4 return
    ip saddr @sources_v4 ip daddr . tcp dport @api_port_v4 counter jump block
  }
  chain forward { type filter hook forward priority 0; policy accept; jump guard; }
  chain output { type filter hook output priority 0; policy accept; jump guard; }
}
"""


def ctx():
    c = lib.nft_ctx_new(0)
    lib.nft_ctx_buffer_output(c)
    lib.nft_ctx_buffer_error(c)
    return c


ours, kept = ctx(), ctx()


def run(c, text):
    if lib.nft_run_cmd_from_buffer(c, text.encode()) != 0:
        raise SystemExit("nft failed: " + text[:60])


events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
events.bind((0, 1 << (7 - 1)))  # NFNLGRP_NFTABLES = 7
events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)


def drain():
    while True:
        try:
            events.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return


def wait_event(msg_type):
    while True:
        data, off = events.recv(1 << 16), 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == (10 << 8) | msg_type:  # NFNL_SUBSYS_NFTABLES
                return
            off += (length + 3) & ~3


NEWTABLE, DELTABLE = 0, 2


def variant(name):
    times = []
    for _ in range(N):
        run(ours, "flush ruleset\n" + TABLE)
        time.sleep(0.12)  # let earlier work settle
        drain()
        if name == "delete-socket-kept":
            run(kept, "delete table inet t")
            foreign = None
        elif name == "no-deletion":
            run(ours, "delete table inet t")
            time.sleep(0.12)
            drain()
            foreign = subprocess.Popen(["nft", "add table inet x"])
            wait_event(NEWTABLE)
        else:
            foreign = subprocess.Popen(["nft", "delete table inet t"])
        if name != "no-deletion":
            wait_event(DELTABLE)
        time.sleep(DELAY)
        batch = "add table inet other" if name == "delete-then-tiny" else TABLE
        t0 = time.perf_counter()
        run(ours, batch)
        times.append((time.perf_counter() - t0) * 1e3)
        if foreign:
            foreign.wait()
        run(ours, "flush ruleset")
    return times


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


print("| variant | iterations | our batch p50 (ms) | p99 | max | over 3 ms |")
print("|---|---:|---:|---:|---:|---:|")
for name in ["delete-then-recreate", "delete-then-tiny", "delete-socket-kept", "no-deletion"]:
    t = variant(name)
    over = sum(1 for x in t if x > 3)
    print(f"| {name} | {N} | {pct(t, 50):.2f} | {pct(t, 99):.2f} | {max(t):.2f} | {over} |", flush=True)
