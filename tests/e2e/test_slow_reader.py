"""Backpressure: a client that sends a lot and never reads."""

import select
import socket
import time

from conftest import proc_rss_kib

RSS_GROWTH_LIMIT_KIB = 64 * 1024
PUSH_LIMIT = 200 * 1024 * 1024
# ASan keeps freed memory in a quarantine (256 MiB by default), which would show
# up in RSS without being the product's doing; shrink it for memory tests.
ASAN_ENV = {"ASAN_OPTIONS": "quarantine_size_mb=8"}


def _push_until_blocked(c, pid, base_rss, line_len=100):
    """Send lines without reading until a send blocks for 2 s, the connection
    fails, or PUSH_LIMIT bytes went out. Returns (sent, max_rss_growth_kib, how)."""
    line = b"z" * (line_len - 1) + b"\n"
    chunk = line * (65536 // line_len)
    sent = 0
    max_growth = 0
    how = "limit"
    c.sock.settimeout(2.0)
    i = 0
    while sent < PUSH_LIMIT:
        try:
            n = c.sock.send(chunk)
        except socket.timeout:
            how = "blocked"
            break
        except OSError as e:
            how = f"error {e!r}"
            break
        sent += n
        i += 1
        if i % 16 == 0:
            growth = proc_rss_kib(pid) - base_rss
            max_growth = max(max_growth, growth)
            if growth > RSS_GROWTH_LIMIT_KIB:
                how = "rss"
                break
    max_growth = max(max_growth, proc_rss_kib(pid) - base_rss)
    return sent, max_growth, how


def test_slow_reader_memory_bounded_and_others_served(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--stall-timeout", "60"], env=ASAN_ENV)
    warm = srv.connect()
    assert warm.request("warm") == b"ECHO: warm"
    base = proc_rss_kib(srv.pid)
    slow = srv.connect()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sent, growth, how = _push_until_blocked(slow, srv.pid, base)
    print("slow reader push:", sent, "bytes, rss growth KiB", growth, "ended by", how)
    assert growth <= RSS_GROWTH_LIMIT_KIB, (
        f"server RSS grew by {growth} KiB while a non-reading client pushed {sent} bytes"
    )
    # the push ends by blocking (backpressure), by the server dropping the
    # client (out-max), or at PUSH_LIMIT; all are fine as long as memory is bounded
    assert how != "rss"
    # other clients are served while the slow one is stalled
    other = srv.connect()
    for i in range(20):
        assert other.request(f"other {i}") == f"ECHO: other {i}".encode()
    warm2 = srv.connect()
    assert warm2.request("UPPER x") == b"X"
    growth = proc_rss_kib(srv.pid) - base
    assert growth <= RSS_GROWTH_LIMIT_KIB, f"server RSS grew by {growth} KiB"
    assert srv.alive()


def _conns_active(c):
    line = c.request("STATS").decode()
    fields = dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)
    return int(fields["conns_active"])


def test_slow_reader_dropped_after_stall_timeout(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--stall-timeout", "1", "--threads", "1"], env=ASAN_ENV)
    base = proc_rss_kib(srv.pid)
    slow = srv.connect()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sent, growth, how = _push_until_blocked(slow, srv.pid, base)
    print("slow reader push:", sent, "bytes, rss growth KiB", growth, "ended by", how)
    assert growth <= RSS_GROWTH_LIMIT_KIB, f"server RSS grew by {growth} KiB"
    monitor = srv.connect()
    # wait (bounded) until the server drops the stalled client: either the
    # stalled socket sees a reset/hang-up, or the server's own count says so
    deadline = time.monotonic() + 15
    dropped = False
    poller = select.poll()
    poller.register(slow.sock, select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0x2000))
    while time.monotonic() < deadline and not dropped:
        if poller.poll(250):
            dropped = True
            break
        if _conns_active(monitor) <= 1:
            dropped = True
    assert dropped, "stalled client not dropped within 15 s with --stall-timeout 1"
    # reading the stalled socket now ends (EOF or reset) instead of streaming forever
    slow.recv_until_eof(timeout=10, allow_reset=True)
    assert monitor.request("still") == b"ECHO: still"


def test_out_high_out_max_options_accepted(server_factory):
    srv = server_factory(
        ["--listen", "127.0.0.1:0", "--out-high", "64K", "--out-max", "256K", "--stall-timeout", "60"],
        env=ASAN_ENV,
    )
    base = proc_rss_kib(srv.pid)
    slow = srv.connect()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sent, growth, how = _push_until_blocked(slow, srv.pid, base)
    print("slow reader push:", sent, "bytes, rss growth KiB", growth, "ended by", how)
    assert growth <= RSS_GROWTH_LIMIT_KIB, f"server RSS grew by {growth} KiB"
    other = srv.connect()
    assert other.request("fine") == b"ECHO: fine"


def test_slow_reader_length_framing_big_frames_memory_bounded(server_factory):
    import struct

    srv = server_factory(["--listen", "127.0.0.1:0", "--framing", "length", "--stall-timeout", "60"], env=ASAN_ENV)
    base = proc_rss_kib(srv.pid)
    slow = srv.connect()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    slow.sock.settimeout(2.0)
    frame = struct.pack(">I", 1 << 20) + b"q" * (1 << 20)
    sent = 0
    growth = 0
    while sent < PUSH_LIMIT:
        try:
            sent += slow.sock.send(frame)
        except (socket.timeout, OSError):
            break
        growth = max(growth, proc_rss_kib(srv.pid) - base)
        if growth > RSS_GROWTH_LIMIT_KIB:
            break
    growth = max(growth, proc_rss_kib(srv.pid) - base)
    assert growth <= RSS_GROWTH_LIMIT_KIB, f"server RSS grew by {growth} KiB after {sent} bytes of 1 MiB frames"
    other = srv.connect()
    other.send_frame(b"hi")
    assert other.recv_frame() == b"Got: hi"
