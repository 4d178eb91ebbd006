"""A chat client that never reads is dropped, server memory stays bounded, and
500 other clients still receive every message in order (PROTOCOL.md, "Chat",
"Slow receivers").

Set-up: --max-queue 256K, --flood-rate 0. One registered JSON client with a
4 KiB receive buffer never reads. 500 JSON receivers read everything. A sender
sends 2000 room messages of ~1 KiB, paced so the slowest receiver is never more
than WINDOW messages behind (so no healthy receiver comes near --max-queue).
Until the drop, each room message is followed by a 4000-byte private message to
the slow client: the kernel alone absorbs a few MiB for a non-reading loopback
peer, and filling that with room traffic would mean gigabytes for 500
receivers. The drop has to come before PRIVATE_CAP bytes of private messages,
and the server's RSS may grow by at most RSS_GROWTH_LIMIT_KIB meanwhile."""

import json
import resource
import selectors
import socket
import time

import pytest

from chat_helpers import ASAN_ENV, JsonClient, chat_factory  # noqa: F401
from conftest import proc_rss_kib

RECEIVERS = 500
ROOM_MESSAGES = 2000          # ~1 KiB each, to everyone in lobby
PRIVATE_SIZE = 4000           # fills the slow client's queue faster than the room's
PRIVATE_CAP = 32 * 1024 * 1024  # give up (and fail) if it is not dropped by then
WINDOW = 64                   # the sender stays at most this many messages ahead of the slowest reader
# Bound on the server's RSS growth while the messages flow. What the server
# legitimately holds: the slow client's queue (--max-queue 256K), the
# receivers' queues while they lag by at most WINDOW messages (shared events:
# ~WINDOW KiB, plus per-receiver queue entries), SQLite's page cache and ASan's
# quarantine (8 MiB in ASAN_ENV) and allocator slack. A server that kept
# queueing for the slow client would grow by tens of MiB (PRIVATE_CAP).
RSS_GROWTH_LIMIT_KIB = 32 * 1024
DEADLINE_S = 90


def _raise_nofile(need):
    """Raises our descriptor limit (the server inherits it) to need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.fail(f"the hard descriptor limit {hard} is below the {need} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


class Receiver:
    __slots__ = ("i", "sock", "buf", "next_seq", "errors", "slow_leaves", "registered")

    def __init__(self, i, sock):
        self.i = i
        self.sock = sock
        self.buf = bytearray()
        self.next_seq = 0
        self.errors = []
        self.slow_leaves = []
        self.registered = False


def test_slow_client_dropped_memory_bounded_500_receivers_in_order(chat_factory):
    _raise_nofile(2 * RECEIVERS + 256)  # per process: ours, and the server's (inherited)
    srv = chat_factory("--max-queue", "256K", "--flood-rate", "0", "--stall-timeout", "20",
                       "--max-message", "4096", env=ASAN_ENV)
    sender = JsonClient(srv, "sender", timeout=30)

    # the slow client: a small receive buffer, registers, never reads again
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(10)
    slow.connect(srv.addr)
    slow.sendall(json.dumps({"type": "REGISTER", "payload": {"name": "slowpoke"}, "id": 1}).encode() + b"\n")
    sender.wait_type("join", **{"from": "slowpoke"})

    # 500 receivers
    sel = selectors.DefaultSelector()
    receivers = []
    try:
        for i in range(RECEIVERS):
            s = socket.create_connection(srv.addr, timeout=10)
            s.sendall(json.dumps({"type": "REGISTER", "payload": {"name": f"r{i}"}, "id": i}).encode() + b"\n")
            s.setblocking(False)
            r = Receiver(i, s)
            receivers.append(r)
            sel.register(s, selectors.EVENT_READ, r)

        prefix = b'{"type":"chat","from":"sender","content":"s'
        plen = len(prefix)
        deadline = time.monotonic() + DEADLINE_S

        def pump(timeout):
            for key, _ in sel.select(timeout):
                r = key.data
                try:
                    chunk = r.sock.recv(1 << 18)
                except BlockingIOError:
                    continue
                except OSError as e:
                    r.errors.append(f"recv: {e!r}")
                    sel.unregister(r.sock)
                    continue
                if not chunk:
                    r.errors.append("EOF")
                    sel.unregister(r.sock)
                    continue
                r.buf += chunk
                end = r.buf.rfind(b"\n")
                if end < 0:
                    continue
                lines = bytes(r.buf[:end]).split(b"\n")
                del r.buf[: end + 1]
                for line in lines:
                    if line.startswith(prefix):
                        seq = int(line[plen : plen + 6])
                        if seq != r.next_seq:
                            if len(r.errors) < 5:
                                r.errors.append(f"got message {seq}, expected {r.next_seq}")
                        r.next_seq = seq + 1
                        continue
                    obj = json.loads(line)
                    t = obj.get("type")
                    if t == "REGISTER":
                        r.registered = True
                    elif t == "leave" and obj.get("from") == "slowpoke":
                        r.slow_leaves.append(obj)
                    elif t in ("join", "leave"):
                        pass
                    else:
                        r.errors.append(f"unexpected line {line[:200]!r}")

        def drain_sender():
            """Reads what the sender has been sent so far, without waiting."""
            while True:
                if sender.c.buf.find(b"\n") < 0:
                    if sender.c.nothing_within(0):
                        return
                    sender.c._fill(time.monotonic() + 5)
                    continue
                sender._pump_one(time.monotonic() + 5)

        while not all(r.registered for r in receivers):
            assert time.monotonic() < deadline, "receivers did not all register"
            pump(1.0)
            sender.events.clear()  # join events

        base_rss = proc_rss_kib(srv.pid)
        max_growth = 0
        pad = "x" * 1000
        big = "p" * PRIVATE_SIZE
        sent = 0
        private_bytes = 0
        dropped = False
        requests = answered = 0
        while sent < ROOM_MESSAGES or not dropped:
            assert time.monotonic() < deadline, (
                f"stuck: sent {sent}, slowest receiver at {min(r.next_seq for r in receivers)}, "
                f"dropped={dropped}, private bytes {private_bytes}")
            # pace: the slowest receiver may lag by WINDOW messages at most
            if sent < ROOM_MESSAGES and sent - min(r.next_seq for r in receivers) < WINDOW:
                batch = min(16, ROOM_MESSAGES - sent)
                for _ in range(batch):
                    sender.send("MESSAGE", {"content": f"s{sent:06d}:{pad}"})
                    sent += 1
                    requests += 1
                    if not dropped:
                        sender.send("PRIVATE", {"to": "slowpoke", "content": big})
                        requests += 1
                        private_bytes += PRIVATE_SIZE
            elif sent >= ROOM_MESSAGES and not dropped:
                assert private_bytes < PRIVATE_CAP, (
                    f"slow client not dropped after {private_bytes} bytes of private messages "
                    f"with --max-queue 256K")
                for _ in range(16):
                    sender.send("PRIVATE", {"to": "slowpoke", "content": big})
                    requests += 1
                    private_bytes += PRIVATE_SIZE
            pump(0.01)
            drain_sender()
            while sender.responses:
                resp = sender.responses.popleft()
                answered += 1
                if resp.get("type") == "error":
                    assert resp["payload"]["code"] == "no_such_user", resp
                    dropped = True
                else:
                    assert resp["type"] in ("MESSAGE", "PRIVATE"), resp
            while sender.events:
                ev = sender.events.popleft()
                if ev["type"] == "leave" and ev["from"] == "slowpoke":
                    dropped = True
            max_growth = max(max_growth, proc_rss_kib(srv.pid) - base_rss)

        # everyone gets every message, in order
        while min(r.next_seq for r in receivers) < ROOM_MESSAGES or not all(r.slow_leaves for r in receivers):
            if time.monotonic() > deadline:
                break
            pump(0.5)
            max_growth = max(max_growth, proc_rss_kib(srv.pid) - base_rss)
        problems = [(r.i, r.errors[:3]) for r in receivers if r.errors]
        assert not problems, f"{len(problems)} receivers had problems: {problems[:10]}"
        behind = [(r.i, r.next_seq) for r in receivers if r.next_seq != ROOM_MESSAGES]
        assert not behind, f"{len(behind)} receivers did not get all {ROOM_MESSAGES} messages: {behind[:10]}"
        # the room saw the slow client leave, saying why
        missing = [r.i for r in receivers if len(r.slow_leaves) != 1]
        assert not missing, f"{len(missing)} receivers did not see exactly one leave of slowpoke"
        lv = receivers[0].slow_leaves[0]
        assert lv["room"] == "lobby" and lv["content"] == "slowpoke left lobby (dropped: not reading)", lv
        print(f"private bytes to the slow client before the drop: {private_bytes}; "
              f"RSS base {base_rss} KiB, max growth {max_growth} KiB")
        assert max_growth <= RSS_GROWTH_LIMIT_KIB, (
            f"server RSS grew by {max_growth} KiB (limit {RSS_GROWTH_LIMIT_KIB} KiB)")

        # the slow socket ends (EOF or reset) once we read what the kernel holds;
        # a bigger receive buffer first, or loopback TCP (64 KiB segments) may
        # never reopen a 4 KiB window for the server's orphaned socket
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        slow.settimeout(1.0)
        end = time.monotonic() + 30
        got = 0
        tail = b""
        while True:
            assert time.monotonic() < end, (
                f"slow client's connection still open 30 s after the drop; it read {got} bytes\n"
                f"{srv.stderr()[-3000:]}")
            try:
                chunk = slow.recv(1 << 20)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
            tail = (tail + chunk)[-4096:]
        # the last notice got out: the test read well within --stall-timeout
        last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        print(f"slow client read {got} bytes; last line {last[:200]!r}")
        ev = json.loads(last)
        assert (ev["type"], ev["from"], ev["content"], ev["room"]) == (
            "system", "server", "too slow: disconnected (output queue full)", ""), ev

        slow.close()

        # every request of the sender was answered
        while answered < requests:
            resp = sender.response(timeout=30)
            answered += 1
            if resp.get("type") == "error":
                assert resp["payload"]["code"] == "no_such_user", resp
        # the server may linger on the closed slow connection for a moment
        end = time.monotonic() + 10
        while True:
            st = sender.ok("STATS")
            if st["conns_active"] == RECEIVERS + 1 or time.monotonic() > end:
                break
            time.sleep(0.05)  # polling the server's count, bounded
        assert st["drops"] == 1, st
        assert st["users"] == RECEIVERS + 1 and st["conns_active"] == RECEIVERS + 1, st
        assert srv.alive()

        # the receivers hang up; wait until the server has seen them go
        for r in receivers:
            r.sock.close()
        end = time.monotonic() + 30
        while True:
            st = sender.ok("STATS")
            if st["conns_active"] == 1 or time.monotonic() > end:
                break
            time.sleep(0.05)  # polling the server's count, bounded
        assert st["conns_active"] == 1 and st["users"] == 1, (
            f"30 s after the receivers hung up the server still counts {st} "
            f"(users left: {sender.ok('LIST_USERS')['users'][:20]})\n{srv.stderr()[-3000:]}")
    finally:
        for r in receivers:
            r.sock.close()
        slow.close()
        sel.close()
