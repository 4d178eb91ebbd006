"""Shared helpers for the `tcpkit balance` black-box tests.

Everything waits on readiness (``listening on`` lines, log lines, stats
polled against a deadline); nothing sleeps to synchronise. Every process and
socket started here is ended by a fixture.

Fixtures (import them into a test module: ``from balance_helpers import
echo_backends, balancer, py_backend``):

- ``echo_backends(names, threads=1, extra=())`` -> list of conftest.Server.
  Each is ``tcpkit echo-server -l 127.0.0.1:0 --threads 1 --banner NAME``:
  on connect it sends ``NAME\\n``, then answers ``foo\\n`` with
  ``ECHO: foo\\n``. Each Server gets ``.name`` and ``.spec`` ("127.0.0.1:PORT").
  ``names`` may be an int n (names "b0".."b{n-1}") or a list of names.
- ``balancer(backends, *args, algo=None, stats=True, threads=1,
  check_interval="0", listen=("127.0.0.1:0",), env=None)`` -> conftest.Server
  running ``tcpkit balance``. ``backends`` items may be a Server, a PyBackend,
  an (host, port) tuple or a spec string ("HOST:PORT,weight=3,..."); use
  ``spec(x, weight=3, maxconn=1, backup=True, proxy="v2")`` to add options.
  ``args`` are extra command-line arguments (e.g. "--queue", "0").
  The returned Server has ``.addrs`` (the balance listeners, in order),
  ``.addr`` (the first one) and ``.stats_addr`` (None without stats).
  Pass ``check_interval=None`` to leave the option out (balancer default).
  At teardown the fixture closes the Conns in ``srv.clients``, sends SIGTERM
  and fails the test unless the balancer exits 0 (before the backends stop).
  A test that stops the balancer itself sets ``srv.stopped_by_test`` (as
  ``srv.stop()`` does).
- ``py_backend(handler="record", reply=b"OK\\n", name=None, family=AF_INET)``
  -> PyBackend, a pure-python TCP server on 127.0.0.1:0 (``::1`` with
  AF_INET6). handler: "record" (read until EOF, keep the bytes, then send
  ``reply`` - bytes, or a callable(data) -> bytes - and close), "hold" (accept
  and never answer), "banner" (send ``name\\n`` then echo ``ECHO: line``), or
  a callable(sock, peer, backend) run in its own thread. See PyBackend.

Plain helpers:

- ``fmt(addr)`` "host:port" ("[::1]:port" for IPv6); ``spec(...)`` above.
- ``refused_addr()`` a loopback (host, port) nobody listens on.
- ``connect(addr, source=None, timeout=10)`` -> conftest.Conn, the socket
  bound to the source IP ``source`` (e.g. "127.0.0.7") when given. With a
  Server instead of an address, its first listener, and the Conn joins the
  Server's .clients (closed by the fixtures at teardown). The Conn's local
  (ip, port) is kept in ``c.local`` (still there after close()).
- ``which(addr, source=None)`` connect, read the banner line, close; returns
  the backend's name (str). ``which_many(addr, n)`` -> list of n names.
- ``stats_raw(addr, line)`` bytes until EOF; ``stats_json(addr)`` dict (the
  ``json\\n`` request); ``stats_text(addr)`` str; ``stats_http(addr, path)``
  -> (status_line, headers dict with lower-case names, body bytes).
- ``backend_entry(stats, addr_or_spec)`` the stats["backends"] item for it.
- ``wait_stats(addr, pred, timeout=10)`` poll stats_json until pred(stats)
  is true; returns that stats, fails the test with the last one otherwise.
- ``close_lines(srv)`` -> list of dicts {client, backend, reason, ms, up,
  down} (ints for ms/up/down) parsed from the ``close ...`` log lines.
  ``wait_close_lines(srv, n, timeout=10)`` waits until at least n exist.
  ``close_line_for(srv, client_sockname, timeout=10)`` the one line of a
  given client (its local (ip, port)), waiting for it.
- ``wait_stderr_until(srv, pred, timeout=10)`` wait (woken by each new
  stderr line) until pred(stderr text); returns the text or None.
- ``expect_log(srv, regex, timeout=10)`` wait_stderr or fail with stderr.
- ``backend_down_re(addr)`` / ``backend_up_re(addr)`` regexes of the state
  log lines for a backend.
- ``write_config(path, text)`` write a config file, return its str path.
- ``sighup_reload(srv, expect=r"reload: ", stats_pred=None)`` SIGHUP, wait
  for the next reload log line (ok or failed), assert it matches ``expect``,
  return it; with ``stats_pred`` also wait until the stats satisfy it.
"""

import json
import re
import signal
import socket
import threading
import time

import pytest

from conftest import DEFAULT_TIMEOUT, Conn, Server, free_port

__all__ = [
    "echo_backends", "balancer", "py_backend", "PyBackend", "fmt", "spec", "refused_addr",
    "connect", "which", "which_many", "stats_raw", "stats_json", "stats_text", "stats_http",
    "backend_entry", "wait_stats", "close_lines", "wait_close_lines", "close_line_for", "wait_stderr_until",
    "expect_log", "backend_down_re", "backend_up_re", "write_config", "sighup_reload", "CLOSE_RE",
]

CLOSE_RE = re.compile(
    r"close client=(?P<client>\S+) backend=(?P<backend>\S+) reason=(?P<reason>\S+)"
    r" ms=(?P<ms>\d+) up=(?P<up>\d+) down=(?P<down>\d+)"
)


# ---- addresses ---------------------------------------------------------------------


def fmt(addr):
    """(host, port) -> "host:port" ("[v6]:port"); strings pass through."""
    if isinstance(addr, str):
        return addr
    host, port = addr[0], addr[1]
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _addr_of(x):
    if isinstance(x, Server):
        return fmt(x.addr)
    if isinstance(x, PyBackend):
        return fmt(x.addr)
    if isinstance(x, tuple):
        return fmt(x)
    return str(x)


def spec(x, weight=None, maxconn=None, backup=False, proxy=None):
    """A --backend spec for a Server / PyBackend / (host, port) / "host:port"."""
    s = _addr_of(x)
    if weight is not None:
        s += f",weight={weight}"
    if maxconn is not None:
        s += f",maxconn={maxconn}"
    if backup:
        s += ",backup"
    if proxy is not None:
        s += f",proxy={proxy}"
    return s


def refused_addr():
    """A loopback (host, port) nobody listens on (bound, then closed)."""
    return ("127.0.0.1", free_port())


def connect(addr, source=None, timeout=DEFAULT_TIMEOUT):
    """A conftest.Conn to addr, bound to source IP `source` when given.
    addr may be a Server (e.g. the balancer): its first listener is used and
    the Conn is added to its .clients, so the fixtures close it."""
    if isinstance(addr, Server):
        c = connect(addr.addr, source=source, timeout=timeout)
        addr.clients.append(c)
        return c
    if source is None:
        c = Conn(addr, timeout=timeout)
        c.local = c.sock.getsockname()[:2]
        return c
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    c = Conn.__new__(Conn)
    c.sock, c.timeout, c.buf, c.eof = s, timeout, bytearray(), False
    c.local = s.getsockname()[:2]
    return c


def which(addr, source=None, timeout=DEFAULT_TIMEOUT):
    """Connect through the balancer, return the banner name of the backend reached."""
    c = connect(addr, source=source, timeout=timeout)
    try:
        return c.recv_line().rstrip(b"\n").decode()
    finally:
        c.close()


def which_many(addr, n, source=None):
    return [which(addr, source=source) for _ in range(n)]


# ---- stats -------------------------------------------------------------------------


def stats_raw(addr, line, timeout=DEFAULT_TIMEOUT):
    if isinstance(line, str):
        line = line.encode()
    c = Conn(addr, timeout=timeout)
    try:
        c.send(line)
        return c.recv_until_eof()
    finally:
        c.close()


def stats_json(addr):
    raw = stats_raw(addr, b"json\n")
    try:
        return json.loads(raw)
    except ValueError:
        pytest.fail(f"stats 'json' answer is not JSON: {raw[:500]!r}")


def stats_text(addr):
    return stats_raw(addr, b"\n").decode()


def stats_http(addr, path="/"):
    raw = stats_raw(addr, f"GET {path} HTTP/1.0\r\nHost: test\r\n\r\n".encode())
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of HTTP header in {raw[:500]!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for h in lines[1:]:
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, body


def backend_entry(stats, addr):
    want = _addr_of(addr).split(",")[0]
    for b in stats["backends"]:
        if b["addr"] == want:
            return b
    pytest.fail(f"backend {want} not in stats: {[b['addr'] for b in stats['backends']]}")


def wait_stats(addr, pred, timeout=DEFAULT_TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        st = stats_json(addr)
        if pred(st):
            return st
        if time.monotonic() > deadline:
            pytest.fail(f"stats never met {what} within {timeout}s; last: {json.dumps(st)}")
        time.sleep(0.02)


# ---- log lines -----------------------------------------------------------------------


def wait_stderr_until(srv, pred, timeout=DEFAULT_TIMEOUT):
    """Wait until pred(stderr text) is true, waking on every new stderr line;
    returns the text, or None at the deadline (or when stderr closed first)."""
    deadline = time.monotonic() + timeout
    with srv._cond:
        while True:
            text = "".join(srv._err)
            if pred(text):
                return text
            remaining = deadline - time.monotonic()
            if remaining <= 0 or srv._err_done:
                return None
            srv._cond.wait(min(remaining, 0.5))


def close_lines(srv):
    out = []
    for m in CLOSE_RE.finditer(srv.stderr()):
        d = m.groupdict()
        for k in ("ms", "up", "down"):
            d[k] = int(d[k])
        out.append(d)
    return out


def wait_close_lines(srv, n, timeout=DEFAULT_TIMEOUT):
    if wait_stderr_until(srv, lambda text: len(CLOSE_RE.findall(text)) >= n, timeout) is None:
        pytest.fail(f"expected {n} close lines, have {len(close_lines(srv))}:\n{srv.stderr()[-4000:]}")
    return close_lines(srv)


def close_line_for(srv, client_sockname, timeout=DEFAULT_TIMEOUT):
    """The single close line of the client whose local address is client_sockname."""
    want = fmt(client_sockname[:2])
    expect_log(srv, r"close client=" + re.escape(want) + r" ", timeout)
    found = [d for d in close_lines(srv) if d["client"] == want]
    assert len(found) == 1, f"{len(found)} close lines for {want}:\n{srv.stderr()[-4000:]}"
    return found[0]


def expect_log(srv, regex, timeout=DEFAULT_TIMEOUT):
    if not srv.wait_stderr(regex, timeout=timeout):
        pytest.fail(f"no log line matching {regex!r} within {timeout}s; stderr:\n{srv.stderr()[-4000:]}")


def backend_down_re(addr):
    return r"backend " + re.escape(_addr_of(addr).split(",")[0]) + r" down"


def backend_up_re(addr):
    return r"backend " + re.escape(_addr_of(addr).split(",")[0]) + r" up\b"


RELOAD_RE = re.compile(r"reload(?: failed)?: .*")


def sighup_reload(srv, expect=r"reload: ", stats_pred=None, timeout=DEFAULT_TIMEOUT):
    """Send SIGHUP and wait for the next `reload: ...` / `reload failed: ...`
    log line; assert it matches `expect` (a regex, re.search) and return it.
    With stats_pred, then also poll the stats until stats_pred(stats) holds:
    the reload line is printed before the new settings are installed, so a
    test that needs the new set in effect waits for the stats to show it."""
    before = len(RELOAD_RE.findall(srv.stderr()))
    srv.send_signal(signal.SIGHUP)
    text = wait_stderr_until(srv, lambda text: len(RELOAD_RE.findall(text)) > before, timeout)
    if text is None:
        pytest.fail(f"no reload line within {timeout}s of SIGHUP:\n{srv.stderr()[-4000:]}")
    line = RELOAD_RE.findall(text)[before]
    assert re.search(expect, line), f"reload line {line!r} does not match {expect!r}"
    if stats_pred is not None:
        wait_stats(srv.stats_addr, stats_pred, timeout=timeout, what="the reloaded settings")
    return line


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture
def echo_backends(server_factory):
    def start(names, threads=1, extra=()):
        if isinstance(names, int):
            names = [f"b{i}" for i in range(names)]
        out = []
        for name in names:
            s = server_factory(["-l", "127.0.0.1:0", "--threads", str(threads), "--banner", name] + list(extra))
            s.name = name
            s.spec = fmt(s.addr)
            out.append(s)
        return out

    return start


def start_balancer(server_factory, backends, *args, algo=None, stats=True, threads=1,
                   check_interval="0", listen=("127.0.0.1:0",), env=None):
    argv = []
    for l in listen:
        argv += ["-l", l]
    for b in backends:
        argv += ["-b", b if isinstance(b, str) else spec(b)]
    if algo:
        argv += ["--algo", algo]
    if stats:
        argv += ["--stats", "127.0.0.1:0"]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if check_interval is not None:
        argv += ["--check-interval", str(check_interval)]
    argv += [str(a) for a in args]
    srv = server_factory(argv, listeners=len(listen) + (1 if stats else 0), command="balance", env=env)
    srv.stats_addr = None
    bal = []
    from conftest import LISTEN_RE, parse_host
    for line in srv.stdout().splitlines():
        m = LISTEN_RE.search(line)
        if not m:
            continue
        a = (parse_host(m.group(1)), int(m.group(2)))
        if "(stats)" in line:
            srv.stats_addr = a
        else:
            bal.append(a)
    assert len(bal) == len(listen), srv.stdout()
    assert (srv.stats_addr is not None) == bool(stats), srv.stdout()
    srv.addrs = bal
    srv.addr = bal[0]
    return srv


@pytest.fixture
def balancer(server_factory):
    started = []

    def start(backends, *args, **kw):
        srv = start_balancer(server_factory, backends, *args, **kw)
        started.append(srv)
        return srv

    yield start
    # Stop the balancers before server_factory stops the backends: a backend
    # would otherwise linger on connections the balancer still relays.
    # (server_factory's teardown still checks stderr for sanitizer reports.)
    problems = []
    for srv in started:
        for c in srv.clients:
            c.close()
        if srv.stopped_by_test:
            continue
        rc = srv.proc.poll()
        if rc is not None:
            continue  # server_factory reports the unexpected exit
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait(15)
        srv.stopped_by_test = True
        if rc is None:
            srv.proc.kill()
            srv.proc.wait(10)
            problems.append("balancer did not exit within 15s of SIGTERM at teardown (killed)")
        elif rc != 0:
            problems.append(f"balancer exited with status {rc} on SIGTERM at teardown (expected 0)\n"
                            f"{srv.stderr()[-3000:]}")
    if problems:
        pytest.fail("\n".join(problems))


class PyBackend:
    """A pure-python backend on loopback port 0.

    Attributes: addr (host, port), spec "host:port", name, conns (list of
    dicts {"peer", "sock", "data" (bytes received so far), "eof" (True once the
    peer's FIN arrived)}). wait_conns(n) waits for n accepted connections;
    wait_eof(i) for connection i's EOF. stop() closes everything (the fixture
    calls it).
    """

    def __init__(self, handler="record", reply=b"OK\n", name=None, family=socket.AF_INET):
        self.family = family
        self.lsock = socket.socket(family, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.lsock.listen(128)
        self.addr = self.lsock.getsockname()[:2]
        self.spec = fmt(self.addr)
        self.name = name or self.spec
        self.handler = handler
        self.reply = reply
        self.conns = []
        self.cond = threading.Condition()
        self.stopping = False
        self.threads = []
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept_loop(self):
        while True:
            try:
                s, peer = self.lsock.accept()
            except OSError:
                return
            if self.stopping:
                s.close()
                return
            rec = {"peer": peer, "sock": s, "data": b"", "eof": False}
            with self.cond:
                self.conns.append(rec)
                self.cond.notify_all()
            t = threading.Thread(target=self._serve, args=(rec,), daemon=True)
            t.start()
            self.threads.append(t)

    def _read_until_eof(self, rec):
        s = rec["sock"]
        s.settimeout(30)
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            with self.cond:
                if not chunk:
                    rec["eof"] = True
                    self.cond.notify_all()
                    return rec["data"]
                rec["data"] += chunk
                self.cond.notify_all()

    def _serve(self, rec):
        s = rec["sock"]
        try:
            if callable(self.handler):
                self.handler(s, rec["peer"], self)
            elif self.handler == "record":
                data = self._read_until_eof(rec)
                reply = self.reply(data) if callable(self.reply) else self.reply
                if reply:
                    s.sendall(reply)
                s.close()
            elif self.handler == "hold":
                self._read_until_eof(rec)
            elif self.handler == "banner":
                s.sendall(self.name.encode() + b"\n")
                buf = b""
                s.settimeout(30)
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        s.sendall(b"ECHO: " + line + b"\n")
                s.close()
            else:
                raise ValueError(self.handler)
        except OSError:
            pass

    def wait_conns(self, n, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.conns) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"python backend {self.spec}: {len(self.conns)} connections, wanted {n}")
                self.cond.wait(remaining)
            return list(self.conns)

    def wait_eof(self, i=0, timeout=DEFAULT_TIMEOUT):
        self.wait_conns(i + 1, timeout)
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.conns[i]["eof"]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"python backend {self.spec}: connection {i} saw no EOF; "
                                f"data={self.conns[i]['data'][:200]!r}")
                self.cond.wait(remaining)
            return self.conns[i]["data"]

    def wait_data(self, i, n, timeout=DEFAULT_TIMEOUT):
        """Wait until connection i has received at least n bytes; returns them."""
        self.wait_conns(i + 1, timeout)
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.conns[i]["data"]) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.conns[i]["eof"]:
                    pytest.fail(f"python backend {self.spec}: connection {i} has "
                                f"{self.conns[i]['data'][:200]!r}, wanted {n} bytes")
                self.cond.wait(remaining)
            return self.conns[i]["data"]

    def stop(self):
        self.stopping = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self.cond:
            conns = list(self.conns)
        for rec in conns:
            try:
                rec["sock"].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            rec["sock"].close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def py_backend():
    started = []

    def start(*args, **kw):
        b = PyBackend(*args, **kw)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
