"""Black-box fixtures for the tcpkit binary.

The server under test prints `listening on ADDR` on stdout, one line per
listener, once it is ready; the fixtures wait for those lines (with a
deadline) instead of sleeping. Every socket read has a timeout. Every process
started here is ended here, by its Popen handle.

The binary comes from $TCPKIT_BIN (default: build-san/tcpkit relative to the
repository root). It is normally built with ASan+UBSan (the ThreadSanitizer
suite runs a few files against build-tsan/tcpkit), so every process's
stderr is checked for sanitizer reports; a report fails the test.
"""

import errno
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "ERROR: UndefinedBehaviorSanitizer",
    "WARNING: ThreadSanitizer",
)

LISTEN_RE = re.compile(
    r"listening on\s+(?:[a-z]+://)?(\[[0-9A-Za-z:.%]+\]|\d{1,3}(?:\.\d{1,3}){3}|[A-Za-z0-9.-]+):(\d+)"
)

DEFAULT_TIMEOUT = 10.0


def tcpkit_bin():
    path = os.environ.get("TCPKIT_BIN", "build-san/tcpkit")
    if not os.path.isabs(path):
        path = os.path.join(REPO_ROOT, path)
    return path


def require_binary():
    path = tcpkit_bin()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"tcpkit binary not found at {path} (set TCPKIT_BIN or run `make SAN=1 all`)")
    return path


def sanitizer_reports(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def assert_no_sanitizer_reports(text, what="tcpkit"):
    found = sanitizer_reports(text)
    assert not found, f"{what} printed sanitizer report(s) {found}:\n{text[-6000:]}"


def server_env(extra=None):
    env = dict(os.environ)
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if extra:
        for k, v in extra.items():
            if k == "ASAN_OPTIONS" and env.get("ASAN_OPTIONS"):
                env[k] = env["ASAN_OPTIONS"] + ":" + v
            else:
                env[k] = v
    return env


def parse_host(host):
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def fmt_addr(addr):
    host, port = addr[0], addr[1]
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def run_tcpkit(args, input=None, timeout=30, env=None):
    """Run a short-lived tcpkit command; returns CompletedProcess with bytes.
    Fails the test on sanitizer output or on a hang past `timeout`."""
    binary = require_binary()
    try:
        cp = subprocess.run(
            [binary] + list(args),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
            env=server_env(env),
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"tcpkit {' '.join(args)} did not exit within {timeout}s; stderr={e.stderr!r}")
    assert_no_sanitizer_reports(cp.stderr.decode("utf-8", "replace"), f"tcpkit {' '.join(args)}")
    return cp


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # comm may contain spaces; fields after the closing paren
    rest = data[data.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Conn:
    """A client connection with buffered, deadline-bounded reads."""

    def __init__(self, addr, timeout=DEFAULT_TIMEOUT, family=None, nodelay=False):
        host, port = addr
        if family is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    # -- writing -----------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    # -- reading -----------------------------------------------------------
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read timed out")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("read timed out") from None
        if not chunk:
            self.eof = True
        else:
            self.buf += chunk
        return chunk

    def recv_line(self, timeout=None):
        """One line including its trailing newline; raises on EOF or timeout."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if self.eof:
                raise EOFError(f"EOF before end of line; partial={bytes(self.buf)!r}")
            self._fill(deadline)

    def recv_exact(self, n, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while len(self.buf) < n:
            if self.eof:
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes: {bytes(self.buf)[:200]!r}")
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv_until_eof(self, timeout=None, allow_reset=False):
        """Everything until EOF. With allow_reset, ECONNRESET also ends it."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self.eof:
            try:
                self._fill(deadline)
            except ConnectionResetError:
                if not allow_reset:
                    raise
                break
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def expect_eof(self, timeout=None, allow_reset=False):
        rest = self.recv_until_eof(timeout, allow_reset=allow_reset)
        assert rest == b"", f"expected EOF, got more data: {rest[:300]!r}"

    def nothing_within(self, seconds):
        """True if no byte arrives within `seconds` (used only for short negative checks)."""
        if self.buf:
            return False
        r, _, _ = select.select([self.sock], [], [], seconds)
        return not r

    # -- protocol helpers ---------------------------------------------------
    def request(self, line, timeout=None):
        """Send one line (newline added) and return the reply line without newline."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\n")
        return self.recv_line(timeout).rstrip(b"\n")

    def send_frame(self, payload):
        self.send(struct.pack(">I", len(payload)) + payload)

    def recv_frame(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        hdr = self.recv_exact(4, max(0.001, deadline - time.monotonic()))
        (n,) = struct.unpack(">I", hdr)
        assert n <= 64 * 1024 * 1024, f"absurd reply frame length {n}"
        return self.recv_exact(n, max(0.001, deadline - time.monotonic()))

    def jrequest(self, obj, timeout=None):
        data = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        if isinstance(data, str):
            data = data.encode()
        self.send(data + b"\n")
        line = self.recv_line(timeout)
        try:
            return json.loads(line)
        except ValueError:
            pytest.fail(f"reply is not JSON: {line!r}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Server:
    def __init__(self, args, listeners=1, command="echo-server", prefix=(), env=None,
                 startup_timeout=20.0):
        binary = require_binary()
        self.argv = list(prefix) + [binary, command] + list(args)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=server_env(env),
        )
        self.pid = self.proc.pid
        self._cond = threading.Condition()
        self._out = []
        self._err = []
        self._out_done = False
        self._err_done = False
        self.stopped_by_test = False
        self.clients = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._out, "_out_done"), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._err, "_err_done"), daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.addrs = self._wait_listening(listeners, startup_timeout)
        self.addr = self.addrs[0]

    def _pump(self, stream, sink, flag):
        try:
            for line in iter(stream.readline, b""):
                with self._cond:
                    sink.append(line.decode("utf-8", "replace"))
                    self._cond.notify_all()
        finally:
            with self._cond:
                setattr(self, flag, True)
                self._cond.notify_all()

    def _wait_listening(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                addrs = []
                for line in self._out:
                    m = LISTEN_RE.search(line)
                    if m:
                        addrs.append((parse_host(m.group(1)), int(m.group(2))))
                if len(addrs) >= n:
                    return addrs
                remaining = deadline - time.monotonic()
                if self._out_done or remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
        rc = self.proc.poll()
        if rc is None:
            self.proc.kill()
            self.proc.wait(10)
        self._join_pumps()
        pytest.fail(
            f"server {self.argv} did not print {n} 'listening on' line(s) within {timeout}s "
            f"(rc={self.proc.returncode})\nstdout:\n{self.stdout()}\nstderr:\n{self.stderr()[-4000:]}"
        )

    def _join_pumps(self):
        for t in self._threads:
            t.join(5)

    # -- output ------------------------------------------------------------
    def stdout(self):
        with self._cond:
            return "".join(self._out)

    def stderr(self):
        with self._cond:
            return "".join(self._err)

    def wait_stderr(self, pattern, timeout=DEFAULT_TIMEOUT):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if rx.search("".join(self._err)):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._err_done:
                    return bool(rx.search("".join(self._err)))
                self._cond.wait(min(remaining, 0.5))

    # -- clients -----------------------------------------------------------
    def connect(self, index=0, **kw):
        c = Conn(self.addrs[index], **kw)
        self.clients.append(c)
        return c

    def alive(self):
        return self.proc.poll() is None

    # -- lifecycle -----------------------------------------------------------
    def send_signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout):
        """Wait for exit; returns rc or None if still running after timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Signal and wait; returns the exit status. Kills (and fails) on hang."""
        self.stopped_by_test = True
        self.send_signal(sig)
        rc = self.wait(timeout)
        if rc is None:
            self.proc.kill()
            self.proc.wait(10)
            self._join_pumps()
            pytest.fail(f"server did not exit within {timeout}s of {sig!r}\nstderr:\n{self.stderr()[-4000:]}")
        self._join_pumps()
        return rc

    def teardown(self):
        problems = []
        for c in self.clients:
            c.close()
        rc = self.proc.poll()
        if rc is not None and not self.stopped_by_test:
            problems.append(f"server exited unexpectedly during the test with status {rc}")
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(15)
                if rc != 0:
                    problems.append(f"server exited with status {rc} on SIGTERM at teardown (expected 0)")
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                problems.append("server did not exit within 15s of SIGTERM at teardown (killed)")
        self._join_pumps()
        err = self.stderr()
        found = sanitizer_reports(err)
        if found:
            problems.append(f"sanitizer report(s) {found} on stderr:\n{err[-6000:]}")
        return problems


@pytest.fixture
def server_factory():
    servers = []

    def start(args=(), **kw):
        s = Server(list(args), **kw)
        servers.append(s)
        return s

    yield start
    problems = []
    for s in servers:
        problems += s.teardown()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def echo_server(server_factory):
    """A default line-framing echo server on 127.0.0.1:0."""
    return server_factory(["--listen", "127.0.0.1:0"])


def ipv6_loopback_available():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
        finally:
            s.close()
        return True
    except OSError:
        return False


def free_port():
    """A loopback port nobody listens on (bound then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def is_reset(exc):
    return isinstance(exc, ConnectionResetError) or getattr(exc, "errno", None) in (
        errno.ECONNRESET,
        errno.EPIPE,
    )


def run_many_clients(addr, n_clients, rounds, deadline_s=60.0):
    """n_clients concurrent connections over one selector, each doing `rounds`
    sequential round trips (two pipelined lines per round) with unique data.
    Returns a list of failure descriptions (empty when all replies were correct)."""
    import selectors

    sel = selectors.DefaultSelector()
    failures = []
    states = {}
    deadline = time.monotonic() + deadline_s
    socks = []
    try:
        for i in range(n_clients):
            s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(addr)
            s.setblocking(False)
            socks.append(s)
            st = {"i": i, "round": 0, "buf": bytearray(), "expect": []}
            states[s.fileno()] = (s, st)
            sel.register(s, selectors.EVENT_READ, st)

        def send_round(s, st):
            i, r = st["i"], st["round"]
            req = b"c%d r%d\nUPPER c%d-r%d\n" % (i, r, i, r)
            st["expect"] = [b"ECHO: c%d r%d\n" % (i, r), b"C%d-R%d\n" % (i, r)]
            s.setblocking(True)
            s.settimeout(10)
            s.sendall(req)
            s.setblocking(False)

        for s, st in list(states.values()):
            send_round(s, st)
        open_count = len(states)
        while open_count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pend = [st["i"] for _, st in states.values() if st["round"] < rounds]
                failures.append(f"timed out; {len(pend)} clients unfinished: {pend[:20]}")
                break
            for key, _ in sel.select(min(remaining, 1.0)):
                s, st = key.fileobj, key.data
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    failures.append(f"client {st['i']}: {e!r}")
                    sel.unregister(s)
                    open_count -= 1
                    continue
                if not chunk:
                    failures.append(f"client {st['i']}: EOF in round {st['round']}, buf={bytes(st['buf'])!r}")
                    sel.unregister(s)
                    open_count -= 1
                    continue
                st["buf"] += chunk
                while st["expect"] and b"\n" in st["buf"]:
                    j = st["buf"].index(b"\n")
                    line = bytes(st["buf"][: j + 1])
                    del st["buf"][: j + 1]
                    want = st["expect"].pop(0)
                    if line != want:
                        failures.append(f"client {st['i']}: got {line!r}, want {want!r}")
                if not st["expect"]:
                    if st["buf"]:
                        failures.append(f"client {st['i']}: unexpected extra bytes {bytes(st['buf'])!r}")
                    st["round"] += 1
                    if st["round"] >= rounds:
                        sel.unregister(s)
                        open_count -= 1
                    else:
                        send_round(s, st)
    finally:
        for s in socks:
            s.close()
        sel.close()
    return failures


# The TLS certificates fixture lives with the other TLS helpers; importing it
# here makes it available to every test module. (At the end of this file:
# tls_helpers imports from conftest.)
from tls_helpers import tls_certs  # noqa: E402,F401  (fixture)
