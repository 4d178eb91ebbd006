"""Descriptor exhaustion (EMFILE): no death, no spinning, recovery."""

import selectors
import socket
import time

import pytest

from conftest import Conn, is_reset, proc_cpu_seconds

FD_LIMIT = 64
N_CLIENTS = 130
BUSY = b"ERROR: server busy\n"


def _exhaust(srv, tag):
    """Open N_CLIENTS clients (more than the server's descriptor limit), each
    sending one line, and classify each within a bounded window as served,
    busy (busy line then EOF/reset) or closed (EOF/reset without a reply).
    Returns (outcome by index, sockets, cpu seconds used, wall seconds) where
    the CPU figure covers the first ~3 s of exhaustion."""
    cpu0 = proc_cpu_seconds(srv.pid)
    t0 = time.monotonic()
    socks = []
    for i in range(N_CLIENTS):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(srv.addr)
            s.sendall(b"%s-%d\n" % (tag, i))
        except OSError:
            pass  # reported below as unresolved if it never gets an answer
        socks.append(s)
    sel = selectors.DefaultSelector()
    outcome = {}
    bufs = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        bufs[i] = b""

    def finish(key, i, how):
        buf = bufs[i]
        if buf == BUSY:
            outcome[i] = "busy"
        elif buf == b"":
            outcome[i] = "closed"
        else:
            outcome[i] = f"{how} after {buf!r}"
        sel.unregister(key.fileobj)

    cpu_window = None
    window_end = t0 + 3.0
    classify_deadline = t0 + 10.0
    while True:
        now = time.monotonic()
        if now >= classify_deadline or (now >= window_end and len(outcome) == len(bufs)):
            break
        for key, _ in sel.select(max(0.0, min(0.2, classify_deadline - now))):
            i = key.data
            try:
                chunk = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                assert is_reset(e), e
                finish(key, i, "reset")
                continue
            if not chunk:
                finish(key, i, "eof")
                continue
            bufs[i] += chunk
            if bufs[i] == b"ECHO: %s-%d\n" % (tag, i):
                outcome[i] = "served"
                sel.unregister(key.fileobj)
        if time.monotonic() >= window_end and cpu_window is None:
            cpu_window = (proc_cpu_seconds(srv.pid) - cpu0, time.monotonic() - t0)
    sel.close()
    cpu_used, wall = cpu_window or (proc_cpu_seconds(srv.pid) - cpu0, time.monotonic() - t0)
    return outcome, socks, cpu_used, wall


def _check_round(srv, outcome, socks, what):
    counts = {o: sum(1 for v in outcome.values() if v == o) for o in set(outcome.values())}
    print(f"EMFILE {what}: {counts}")
    assert srv.alive(), f"server died under EMFILE:\n{srv.stderr()[-3000:]}"
    served = [i for i, o in outcome.items() if o == "served"]
    refused = [i for i, o in outcome.items() if o in ("busy", "closed")]
    odd = {i: o for i, o in outcome.items() if o not in ("served", "busy", "closed")}
    unresolved = [i for i in range(len(socks)) if i not in outcome]
    assert not odd, f"{what}: unexpected replies: {odd}"
    assert served, f"{what}: no client was served"
    assert refused, f"{what}: expected some clients refused at fd limit {FD_LIMIT}; {counts}"
    assert not unresolved, (
        f"{what}: {len(unresolved)} of {len(socks)} clients neither served nor refused/closed "
        f"within 10 s (served={len(served)}, refused={len(refused)})"
    )
    for i in served[:5]:
        s = socks[i]
        s.setblocking(True)
        s.settimeout(10)
        s.sendall(b"again\n")
        assert s.recv(100) == b"ECHO: again\n"


def _recover(srv, what):
    # after the clients go away, a new client is served normally (bounded retry
    # while the server notices the closes)
    deadline = time.monotonic() + 15
    last = None
    while time.monotonic() < deadline:
        c = Conn(srv.addr)
        try:
            c.send(b"hello again\n")
            last = c.recv_line(5)
            if last == b"ECHO: hello again\n":
                return
        except (EOFError, OSError, TimeoutError) as e:
            last = repr(e)
        finally:
            c.close()
    pytest.fail(f"{what}: server did not recover after EMFILE; last={last!r}")


@pytest.mark.parametrize("threads", ["1", "4"])
def test_emfile_no_crash_no_spin_and_recovers(server_factory, threads):
    srv = server_factory(
        ["--listen", "127.0.0.1:0", "--threads", threads, "--idle-timeout", "0"],
        prefix=["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--"],
    )
    with open(f"/proc/{srv.pid}/limits") as f:
        lim = [l for l in f if l.startswith("Max open files")][0]
    assert str(FD_LIMIT) in lim, lim

    # round 1: exhaustion, measured for spinning
    outcome, socks, cpu_used, wall = _exhaust(srv, b"r1")
    try:
        assert cpu_used < 0.5 * wall, f"server spins under EMFILE: {cpu_used:.2f}s CPU in {wall:.2f}s wall"
        _check_round(srv, outcome, socks, "round 1")
    finally:
        for s in socks:
            s.close()
    _recover(srv, "round 1")

    # round 2: exhaustion again after recovery is handled the same way
    outcome, socks, _, _ = _exhaust(srv, b"r2")
    try:
        _check_round(srv, outcome, socks, "round 2")
    finally:
        for s in socks:
            s.close()
    _recover(srv, "round 2")
    assert srv.alive()
