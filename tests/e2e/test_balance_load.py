"""`tcpkit balance` under load: backends killed or stopped mid-load, 1 GiB
each way, 1,000 concurrent clients, SIGHUP reload under load, and real
clients (redis-benchmark against redis-server, iperf3) through it.

Every load loop is bounded in count and time; synchronisation is on
`listening on` lines, log lines and stats polled against a deadline.
"""

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from balance_helpers import (  # noqa: F401  (fixtures)
    backend_down_re,
    backend_entry,
    backend_up_re,
    balancer,
    echo_backends,
    expect_log,
    py_backend,
    stats_json,
    wait_stats,
    write_config,
)
from conftest import Conn, free_port, proc_rss_kib

GIB = 1 << 30
MIB = 1 << 20
# ASan keeps freed memory in a quarantine that would show up in RSS.
ASAN_ENV = {"ASAN_OPTIONS": "quarantine_size_mb=16"}
RSS_GROWTH_LIMIT_KIB = 64 * 1024

FAST_CHECKS = ("--check-timeout", "200ms", "--fall", "2", "--rise", "2")


# ---- load generators -------------------------------------------------------------------


class ShortLoad:
    """`threads` threads each running short request/response connections
    (connect, [read banner], send `rN`, read `ECHO: rN`, close) until stopped,
    `max_requests` were started or `max_seconds` passed.

    Every request gets a sequence number when it starts; `mark()` returns the
    next one, so `results_from(mark)` are the requests started after it.
    `paused()` holds every thread between two requests (none in flight)."""

    def __init__(self, addr, threads=4, banner=False, max_requests=20000, max_seconds=90.0,
                 timeout=10.0):
        self.addr = addr
        self.banner = banner
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.timeout = timeout
        self.cond = threading.Condition()
        self.seq = 0
        self.results = []  # (seq, ok, backend name or None, error or None)
        self._stop = False
        self._pause = False
        self._paused = 0
        self.running = threads
        self.threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _next(self):
        with self.cond:
            if self._pause:
                self._paused += 1
                self.cond.notify_all()
                while self._pause and not self._stop and time.monotonic() < self.deadline:
                    self.cond.wait(0.5)
                self._paused -= 1
            if self._stop or self.seq >= self.max_requests or time.monotonic() >= self.deadline:
                return None
            s = self.seq
            self.seq += 1
            return s

    def _one(self, s):
        tag = b"r%d" % s
        backend = None
        c = None
        try:
            c = Conn(self.addr, timeout=self.timeout)
            if self.banner:
                backend = c.recv_line().rstrip(b"\n").decode()
            reply = c.request(tag)
            if reply != b"ECHO: " + tag:
                return False, backend, f"wrong reply {reply!r} to {tag!r}"
            return True, backend, None
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            return False, backend, repr(e)
        finally:
            if c is not None:
                c.close()

    def _worker(self):
        try:
            while True:
                s = self._next()
                if s is None:
                    return
                ok, backend, err = self._one(s)
                with self.cond:
                    self.results.append((s, ok, backend, err))
        finally:
            with self.cond:
                self.running -= 1
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return self.seq

    @contextlib.contextmanager
    def paused(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            self._pause = True
            while self._paused < self.running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._pause = False
                    self.cond.notify_all()
                    pytest.fail(f"load threads did not pause within {timeout}s")
                self.cond.wait(min(remaining, 0.5))
        try:
            yield
        finally:
            with self.cond:
                self._pause = False
                self.cond.notify_all()

    def results_from(self, mark=0):
        with self.cond:
            return [r for r in self.results if r[0] >= mark]

    def wait_done(self, n, mark=0, timeout=60.0):
        """Wait until n requests started at or after `mark` have finished."""
        deadline = time.monotonic() + timeout
        while True:
            got = len(self.results_from(mark))
            if got >= n:
                return
            with self.cond:
                alive = self.running
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not alive:
                pytest.fail(f"only {got} of {n} requests finished after mark {mark} "
                            f"(load threads alive: {alive}); failures: {self.failures()[:10]}")
            with self.cond:
                self.cond.wait(min(remaining, 0.05))

    def failures(self, mark=0):
        return [r for r in self.results_from(mark) if not r[1]]

    def stop(self):
        with self.cond:
            self._stop = True
            self._pause = False
            self.cond.notify_all()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "load threads did not stop"


class LongLoad:
    """Long-lived connections through the balancer; one thread sends a request
    on each of them in turn every few ms (bounded by count and time)."""

    def __init__(self, addr, n, banner=True, max_rounds=100000, max_seconds=90.0):
        self.conns = []
        self.backends = []
        for _ in range(n):
            c = Conn(addr, timeout=10)
            self.conns.append(c)
            self.backends.append(c.recv_line().rstrip(b"\n").decode() if banner else None)
        self.max_rounds = max_rounds
        self.deadline = time.monotonic() + max_seconds
        self.cond = threading.Condition()
        self.rounds = 0
        self.errors = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        r = 0
        while r < self.max_rounds and time.monotonic() < self.deadline:
            with self.cond:
                if self._stop:
                    return
            for i, c in enumerate(self.conns):
                tag = b"long%d-%d" % (i, r)
                try:
                    reply = c.request(tag)
                    if reply != b"ECHO: " + tag:
                        raise AssertionError(f"wrong reply {reply!r}")
                except Exception as e:  # noqa: BLE001
                    with self.cond:
                        self.errors.append(f"conn {i} ({self.backends[i]}) round {r}: {e!r}")
                        self.cond.notify_all()
                    return
            r += 1
            with self.cond:
                self.rounds = r
                self.cond.notify_all()
            time.sleep(0.003)  # pacing only: a request every few ms

    def wait_rounds(self, n, timeout=60.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rounds < n and not self.errors:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.thread.is_alive():
                    break
                self.cond.wait(min(remaining, 0.1))
            assert not self.errors, self.errors
            assert self.rounds >= n, f"long-lived load made {self.rounds} of {n} rounds"
            return self.rounds

    def stop(self):
        with self.cond:
            self._stop = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "long-lived load thread did not stop"

    def close(self):
        for c in self.conns:
            c.close()


@pytest.fixture
def loads():
    started = []

    def add(x):
        started.append(x)
        return x

    yield add
    for x in started:
        with contextlib.suppress(Exception):
            x.stop()
        if isinstance(x, LongLoad):
            x.close()


def summarize(failures, n=10):
    return "\n".join(f"#{s} backend={b} {err}" for s, _, b, err in failures[:n])


# ---- external processes (redis-server, iperf3) ---------------------------------------------


class ExtProc:
    """An external program with its stdout+stderr collected line by line."""

    def __init__(self, argv, cwd=None):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=cwd)
        self.pid = self.proc.pid
        self.cond = threading.Condition()
        self.lines = []
        self.done = False
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self):
        try:
            for line in iter(self.proc.stdout.readline, b""):
                with self.cond:
                    self.lines.append(line.decode("utf-8", "replace"))
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def output(self):
        with self.cond:
            return "".join(self.lines)

    def wait_output(self, pattern, timeout=10.0):
        """True once the output matches; False if the program ended first.
        Fails the test when neither happens within `timeout`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while not rx.search("".join(self.lines)):
                if self.done:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{self.argv[0]} printed nothing matching {pattern!r} within {timeout}s "
                                f"(rc={self.proc.poll()}):\n{''.join(self.lines)[-3000:]}")
                self.cond.wait(min(remaining, 0.5))
            return True

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.pump.join(5)


@pytest.fixture
def ext_procs():
    started = []

    def start(argv, **kw):
        p = ExtProc(argv, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def plain_echo_servers(server_factory, n):
    """n `tcpkit echo-server`s without a banner ("x" gets "ECHO: x")."""
    out = []
    for _ in range(n):
        s = server_factory(["-l", "127.0.0.1:0", "--threads", "1"])
        s.spec = f"{s.addr[0]}:{s.addr[1]}"
        out.append(s)
    return out


def start_on_free_port(ext_procs, make_argv, ready, tries=3):
    """Start a program on a free loopback port (picked by binding port 0 and
    closing); tries another port if it exits first (the port was taken in
    between). Returns the ExtProc with .addr set."""
    for _ in range(tries):
        port = free_port()
        p = ext_procs(make_argv(port))
        if p.wait_output(ready % {"port": port}, timeout=20):
            p.addr = ("127.0.0.1", port)
            return p
        p.stop()
    pytest.fail(f"{make_argv(0)[0]} did not start in {tries} tries:\n{p.output()[-3000:]}")


def need_tool(*names):
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed")


# ---- 1. a backend killed under steady load -------------------------------------------------


def test_killed_backend_under_load_loses_no_request(echo_backends, balancer, loads):
    backends = echo_backends(3)
    bal = balancer(backends, *FAST_CHECKS, check_interval="200ms", threads=2)
    load = loads(ShortLoad(bal.addr, threads=4, banner=True))
    load.wait_done(150)
    victim = backends[1]
    # Kill between two requests: a connection already relayed to the victim
    # would be cut (nothing to retry once bytes flowed). Everything after
    # the kill meets a refused connect, which must be retried elsewhere.
    with load.paused():
        victim.stopped_by_test = True
        victim.proc.kill()
        victim.proc.wait(10)
        killed_at = load.mark()
    expect_log(bal, backend_down_re(victim), timeout=10)
    detected_at = load.mark()
    load.wait_done(300, mark=detected_at, timeout=60)
    load.stop()

    failures = load.failures()
    assert not failures, f"{len(failures)} failed requests:\n{summarize(failures)}\n{bal.stderr()[-3000:]}"
    after = load.results_from(detected_at)
    assert len(after) >= 300
    assert not [r for r in load.results_from(killed_at) if r[2] == victim.name]
    # the survivors share the load after detection
    names = {r[2] for r in after}
    assert names == {backends[0].name, backends[2].name}, names
    # the refused connects were seen (and retried on the survivors)
    assert re.search(r"backend " + re.escape(victim.spec) + r" failed: [^\n]*refused", bal.stderr()), \
        bal.stderr()[-3000:]
    assert "reason=connect-failed" not in bal.stderr()
    st = stats_json(bal.stats_addr)
    assert backend_entry(st, victim)["state"] == "down", st
    assert backend_entry(st, backends[0])["state"] == "up", st
    assert st["clients"]["total"] >= len(load.results_from(0)), st


# ---- 2. a SIGSTOPped backend under load ---------------------------------------------------


def test_stopped_backend_under_load_is_caught_and_replayed(server_factory, balancer, loads):
    # The health check must see the echo server answer, not just accept (the
    # kernel accepts for a stopped process). Without a banner (it would come
    # before the check's reply) the echo server answers "ping" with "ECHO: ping".
    backends = plain_echo_servers(server_factory, 3)
    for b in backends:
        probe = Conn(b.addr, timeout=5)
        try:
            assert probe.request("ping") == b"ECHO: ping"
        finally:
            probe.close()
    bal = balancer(
        backends,
        "--first-byte-timeout", "300ms",
        "--check-send", "ping\\n", "--check-expect", "ECHO: ping",
        *FAST_CHECKS,
        check_interval="200ms", threads=2,
    )
    load = loads(ShortLoad(bal.addr, threads=4, banner=False))
    load.wait_done(150)
    victim = backends[2]
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        expect_log(bal, backend_down_re(victim), timeout=10)
        detected_at = load.mark()
        load.wait_done(300, mark=detected_at, timeout=60)
        load.stop()
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    expect_log(bal, backend_down_re(victim) + r"[\s\S]*" + backend_up_re(victim), timeout=10)

    failures = load.failures()
    assert not failures, f"{len(failures)} failed requests:\n{summarize(failures)}\n{bal.stderr()[-3000:]}"
    err = bal.stderr()
    # clients caught by the stopped backend were replayed, none failed
    assert re.search(r"backend " + re.escape(victim.spec) + r" failed: [^\n]*first-byte", err), err[-3000:]
    assert "reason=first-byte-timeout" not in err, err[-3000:]
    # and the backend is back in service
    st = wait_stats(bal.stats_addr, lambda s: backend_entry(s, victim)["state"] == "up",
                    what="the resumed backend up")
    total_before = backend_entry(st, victim)["total"]
    for i in range(6):
        c = Conn(bal.addr, timeout=10)
        try:
            assert c.request(f"after{i}") == f"ECHO: after{i}".encode()
        finally:
            c.close()
    st = stats_json(bal.stats_addr)
    assert backend_entry(st, victim)["total"] > total_before, st


# ---- 3. 1 GiB each way ---------------------------------------------------------------------


def _gen_stream(size, seed):
    """Deterministic chunks: a random 1 MiB block with a counter in front."""
    block = bytearray(hashlib.sha256(seed).digest() * (MIB // 32))
    i = 0
    sent = 0
    while sent < size:
        block[:8] = i.to_bytes(8, "big")
        n = min(MIB, size - sent)
        yield memoryview(block)[:n]
        sent += n
        i += 1


def _gib_handler(sock, peer, backend):
    """`UP\\n` then bytes until EOF: answer the SHA-256 hex of the bytes.
    `DOWN N SEED\\n`: send N generated bytes, then close."""
    sock.settimeout(60)
    line = b""
    while not line.endswith(b"\n"):
        ch = sock.recv(1)
        if not ch:
            return
        line += ch
    words = line.split()
    if words[0] == b"UP":
        h = hashlib.sha256()
        n = 0
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while True:
            got = sock.recv_into(buf)
            if not got:
                break
            h.update(view[:got])
            n += got
        sock.sendall(b"%d %s\n" % (n, h.hexdigest().encode()))
        sock.close()
    elif words[0] == b"DOWN":
        size, seed = int(words[1]), words[2]
        h = hashlib.sha256()
        for chunk in _gen_stream(size, seed):
            h.update(chunk)
            sock.sendall(chunk)
        backend.sent_digest = h.hexdigest()
        sock.close()


class RssWatch:
    """Samples a process's RSS while a transfer runs (measurement only)."""

    def __init__(self, pid):
        self.pid = pid
        self.base = proc_rss_kib(pid)
        self.peak = self.base
        self.ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.ev.wait(0.05):
            try:
                self.peak = max(self.peak, proc_rss_kib(self.pid))
            except (OSError, RuntimeError):
                return

    def stop(self):
        self.ev.set()
        self.t.join(5)
        return self.peak - self.base


def _relay_1gib(bal, be, direction):
    c = Conn(bal.addr, timeout=60)
    try:
        if direction == "up":
            c.send(b"UP\n")
            h = hashlib.sha256()
            for chunk in _gen_stream(GIB, b"up"):
                h.update(chunk)
                c.sock.sendall(chunk)
            c.shutdown_write()  # half-close: the digest must still come back
            reply = c.recv_line(timeout=120).split()
            assert reply == [str(GIB).encode(), h.hexdigest().encode()], reply
            c.expect_eof(timeout=30)
        else:
            c.send(b"DOWN %d down\n" % GIB)
            got = hashlib.sha256()
            n = 0
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            c.sock.settimeout(60)
            while True:
                k = c.sock.recv_into(buf)
                if not k:
                    break
                got.update(view[:k])
                n += k
            assert n == GIB
            # the backend hashed what it sent (same generator, its own thread)
            assert got.hexdigest() == be.sent_digest
    finally:
        c.close()


@pytest.mark.parametrize("direction", ["up", "down"])
def test_1_gib_through_the_balancer_keeps_its_digest(py_backend, balancer, direction):
    be = py_backend(handler=_gib_handler)
    bal = balancer([be], env=ASAN_ENV)
    watch = RssWatch(bal.pid)
    try:
        _relay_1gib(bal, be, direction)
    finally:
        growth = watch.stop()
    assert growth < RSS_GROWTH_LIMIT_KIB, f"balancer RSS grew by {growth} KiB"
    st = wait_stats(bal.stats_addr, lambda s: s["clients"]["active"] == 0, what="no active client")
    e = backend_entry(st, be)
    if direction == "up":
        assert e["bytes_sent"] == len(b"UP\n") + GIB, e
        assert e["bytes_received"] == len(b"%d " % GIB) + 65, e
    else:
        assert e["bytes_sent"] == len(b"DOWN %d down\n" % GIB), e
        assert e["bytes_received"] == GIB, e


# ---- 4. 1,000 concurrent clients -------------------------------------------------------------


N_CONCURRENT = 1000


@pytest.fixture
def raised_nofile():
    """The balancer needs 2 sockets and up to 4 pipe ends per client, and this
    process 1 socket per client: raise the soft descriptor limit (children
    inherit it) for the test, restore it afterwards."""
    need = 8 * N_CONCURRENT + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need} needed for this test")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_1000_concurrent_clients(raised_nofile, server_factory, balancer):
    n = N_CONCURRENT
    backends = plain_echo_servers(server_factory, 2)
    bal = balancer(backends, threads=2)
    import selectors

    socks = []
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + 90
    try:
        for i in range(n):
            s = socket.create_connection(bal.addr, timeout=10)
            socks.append(s)
            s.sendall(b"c%d\n" % i)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, [i, bytearray()])
        pending = n
        failures = []
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                i, buf = key.data
                try:
                    chunk = key.fileobj.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as e:
                    failures.append(f"client {i}: {e!r}")
                    chunk = None
                if chunk == b"":
                    failures.append(f"client {i}: EOF after {bytes(buf)!r}")
                if not chunk:
                    sel.unregister(key.fileobj)
                    pending -= 1
                    continue
                buf += chunk
                if buf.endswith(b"\n"):
                    if bytes(buf) != b"ECHO: c%d\n" % i:
                        failures.append(f"client {i}: got {bytes(buf)!r}")
                    sel.unregister(key.fileobj)
                    pending -= 1
        assert not failures, "\n".join(failures[:20])
        assert pending == 0, f"{pending} clients got no echo in time"
        # all 1000 are open at once
        st = wait_stats(bal.stats_addr, lambda s: s["clients"]["active"] == n, what=f"{n} active")
        assert sum(b["active"] for b in st["backends"]) == n, st
        assert all(b["active"] > 0 for b in st["backends"]), st
        # each is still usable while all are open
        for i in (0, n // 2, n - 1):
            socks[i].setblocking(True)
            socks[i].settimeout(10)
            socks[i].sendall(b"again%d\n" % i)
            c = Conn.__new__(Conn)
            c.sock, c.timeout, c.buf, c.eof = socks[i], 10, bytearray(), False
            assert c.recv_line() == b"ECHO: again%d\n" % i
    finally:
        sel.close()
        for s in socks:
            s.close()
    st = wait_stats(bal.stats_addr, lambda s: s["clients"]["active"] == 0, timeout=30, what="0 active")
    assert st["clients"]["total"] >= n, st
    assert all(b["active"] == 0 for b in st["backends"]), st


# ---- 5. SIGHUP reload under load --------------------------------------------------------------


def test_reload_under_load_keeps_connections_and_counters(echo_backends, balancer, loads, tmp_path):
    b0, b1, b2 = echo_backends(3)
    checks = "check-interval 200ms\ncheck-timeout 200ms\n"
    cfg = write_config(tmp_path / "balance.conf", f"backend {b0.spec}\nbackend {b1.spec}\n{checks}")
    bal = balancer([], "--config", cfg, threads=2, check_interval=None)
    longs = loads(LongLoad(bal.addr, 8))
    assert set(longs.backends) == {b0.name, b1.name}, longs.backends
    short = loads(ShortLoad(bal.addr, threads=3, banner=True))
    short.wait_done(150)
    longs.wait_rounds(20)
    before = stats_json(bal.stats_addr)
    b0_total_before = backend_entry(before, b0)["total"]

    # atomically replace the config: b1 out, b2 in
    tmp = tmp_path / "balance.conf.new"
    write_config(tmp, f"backend {b0.spec}\nbackend {b2.spec}\n{checks}")
    os.rename(tmp, cfg)
    rounds_before = longs.rounds
    bal.send_signal(signal.SIGHUP)
    expect_log(bal, r"reload: 2 backends \(1 added, 1 removed, 1 kept\)", timeout=10)
    reloaded_at = short.mark()
    short.wait_done(300, mark=reloaded_at, timeout=60)
    longs.wait_rounds(rounds_before + 30)
    short.stop()
    longs.stop()

    failures = short.failures()
    assert not failures, f"{len(failures)} failed requests:\n{summarize(failures)}\n{bal.stderr()[-3000:]}"
    assert not longs.errors, longs.errors
    # every long-lived connection still works, those on the removed backend too
    for i, c in enumerate(longs.conns):
        assert c.request(f"final{i}") == f"ECHO: final{i}".encode()
    after = short.results_from(reloaded_at)
    by_backend = {}
    for _, _, name, _ in after:
        by_backend[name] = by_backend.get(name, 0) + 1
    assert b1.name not in by_backend, f"removed backend got clients after the reload: {by_backend}"
    assert by_backend.get(b2.name, 0) > 0, by_backend
    assert by_backend.get(b0.name, 0) > 0, by_backend

    st = stats_json(bal.stats_addr)
    assert sorted(b["addr"] for b in st["backends"]) == sorted([b0.spec, b2.spec]), st
    e0 = backend_entry(st, b0)
    assert e0["total"] >= b0_total_before + by_backend[b0.name], (b0_total_before, by_backend, e0)
    assert backend_entry(st, b2)["total"] >= by_backend[b2.name], st
    st = wait_stats(bal.stats_addr, lambda s: s["clients"]["active"] == len(longs.conns),
                    what="only the long-lived clients active")
    assert backend_entry(st, b0)["active"] + backend_entry(st, b2)["active"] == \
        longs.backends.count(b0.name), st


# ---- 6. redis-benchmark through the balancer ----------------------------------------------


def _resp_command(addr, *words, timeout=5.0):
    """One RESP command; returns the reply's first line or bulk payload (str)."""
    msg = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in
                                           (x.encode() if isinstance(x, str) else x for x in words))
    c = Conn(addr, timeout=timeout)
    try:
        c.send(msg)
        first = c.recv_line().rstrip(b"\r\n")
        if first.startswith(b"$"):
            n = int(first[1:])
            return c.recv_exact(n + 2)[:n].decode()
        return first.decode()
    finally:
        c.close()


def _start_redis(ext_procs, tmp_path, i):
    d = tmp_path / f"redis{i}"
    d.mkdir()
    p = start_on_free_port(
        ext_procs,
        lambda port: ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", str(d), "--daemonize", "no",
                      "--protected-mode", "no", "--logfile", ""],
        r"Ready to accept connections")
    assert _resp_command(p.addr, "PING") == "+PONG"
    return p


def _cmdstat_calls(info, cmd):
    m = re.search(r"^cmdstat_" + cmd + r":calls=(\d+)", info, re.M)
    return int(m.group(1)) if m else 0


def test_redis_benchmark_through_the_balancer(ext_procs, balancer, tmp_path):
    need_tool("redis-server", "redis-benchmark")
    redises = [_start_redis(ext_procs, tmp_path, i) for i in range(2)]
    bal = balancer([r.addr for r in redises], "--check-send", "PING\\r\\n", "--check-expect", "+PONG",
                   "--check-timeout", "500ms", check_interval="500ms", threads=2)
    try:
        cp = subprocess.run(
            ["redis-benchmark", "-h", "127.0.0.1", "-p", str(bal.addr[1]), "-t", "set,get",
             "-n", "20000", "-c", "20", "-q"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"redis-benchmark hung: {e.stdout!r}\n{bal.stderr()[-3000:]}")
    out = cp.stdout.decode("utf-8", "replace")
    assert cp.returncode == 0, out
    assert "error" not in out.lower(), out
    rates = dict(re.findall(r"(SET|GET): ([\d.]+) requests per second", out))
    assert set(rates) == {"SET", "GET"}, out
    assert all(float(v) > 0 for v in rates.values()), rates
    for r in redises:
        info = _resp_command(r.addr, "INFO", "commandstats")
        assert _cmdstat_calls(info, "set") > 0, info
        assert _cmdstat_calls(info, "get") > 0, info
    total = sum(_cmdstat_calls(_resp_command(r.addr, "INFO", "commandstats"), "set") for r in redises)
    assert total >= 20000, total
    st = wait_stats(bal.stats_addr, lambda s: s["clients"]["active"] == 0, what="no active client")
    assert all(b["state"] == "up" and b["total"] > 0 for b in st["backends"]), st
    assert not re.search(r"reason=(?!client\b|backend\b)\S+", bal.stderr()), bal.stderr()[-3000:]


# ---- 7. iperf3 through the balancer ------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_iperf3_through_the_balancer(ext_procs, balancer, reverse):
    need_tool("iperf3")
    srv = start_on_free_port(
        ext_procs,
        lambda port: ["iperf3", "-s", "-1", "-p", str(port), "-B", "127.0.0.1", "--forceflush"],
        r"Server listening on %(port)d")
    # no health checks: a bare connect would be taken for a failed test run
    bal = balancer([srv.addr], check_interval="0", threads=2)
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(bal.addr[1]), "-t", "2", "-J"]
    if reverse:
        argv.append("-R")
    try:
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"iperf3 hung: {e.stdout!r}\n{srv.output()}\n{bal.stderr()[-3000:]}")
    assert cp.returncode == 0, (cp.stdout[-3000:], cp.stderr, srv.output())
    res = json.loads(cp.stdout)
    assert "error" not in res, res.get("error")
    end = res["end"]
    assert end["sum_received"]["bits_per_second"] > 0, end["sum_received"]
    assert end["sum_sent"]["bits_per_second"] > 0, end["sum_sent"]
    moved = end["sum_received"]["bytes"]
    assert moved > 0
    assert srv.proc.wait(20) == 0, srv.output()
    st = wait_stats(bal.stats_addr, lambda s: s["clients"]["active"] == 0, what="no active client")
    e = st["backends"][0]
    # the data stream went one way through the relay (plus the control channel)
    if reverse:
        assert e["bytes_received"] >= moved, (e, moved)
    else:
        assert e["bytes_sent"] >= moved, (e, moved)
