"""Helpers for the TLS black-box tests (docs/security.md, "TLS").

The peers that check tcpkit here are independent of it: Python's `ssl`
module (OpenSSL underneath, but none of tcpkit's code) and the `openssl`
command line tools. Every read has a deadline; nothing sleeps to
synchronise; every process and socket started here is ended here.

Fixture (registered in conftest.py, so every test module has it):

- ``tls_certs`` (session scope): runs ``scripts/certs.sh`` once into a
  temporary directory and returns a ``TlsCerts``: one attribute per file,
  each a str path: ``ca``, ``ca_key``, ``server``, ``server_key``,
  ``expired``, ``expired_key``, ``wronghost``, ``wronghost_key``,
  ``other_ca``, ``other_ca_key``, ``untrusted``, ``untrusted_key``,
  ``client_ca``, ``client_ca_key``, ``client``, ``client_key``,
  ``other_client``, ``other_client_key``; and ``dir``.
  ``server_args(name="server", client_ca=None)`` -> ``["--tls-cert", CERT,
  "--tls-key", KEY]`` (+ ``["--tls-client-ca", client_ca]``) for a server
  command line; ``name`` picks the pair (``"expired"``, ``"untrusted"``...).

Fixtures to import into a test module (``from tls_helpers import
py_tls_server``):

- ``py_tls_server(cert, key, client_ca=None, **kw)`` -> ``PyTlsServer``, a
  Python TLS server on 127.0.0.1:0 that answers like ``echo-server``
  (``ECHO: line``, ``QUIT`` -> ``Goodbye!`` and close) and records per
  connection: the SNI name, the protocol version, the handshake error, the
  application bytes received and the client certificate's subject.

Plain helpers:

- ``client_context(ca=None, cert=None, key=None, minimum=None,
  maximum=None, verify=True)`` -> ``ssl.SSLContext`` for a client.
- ``legacy_context()`` a client context that offers only TLS 1.0 and 1.1
  (security level 0, verification off): what an outdated peer sends.
- ``tls_connect(addr, ctx, server_hostname="localhost", timeout=10)`` ->
  ``TlsConn`` (a conftest.Conn whose socket is an SSLSocket, handshake
  done). With a Server as ``addr``, its first listener, and the connection
  joins the Server's .clients. ``handshake_error(addr, ctx, ...)`` -> the
  exception a handshake raised, or None when it completed.
- ``client_hello_bytes(server_hostname="localhost")`` a real ClientHello
  (as the TLS records a client sends first), made in memory.
- ``tls_args(certs, ca=True, name=None, insecure=False, cert=None)`` the
  client options for a tcpkit client command.
- ``s_client(addr, *args, input=b"", timeout=30)`` runs ``openssl s_client
  -connect HOST:PORT ARGS`` -> CompletedProcess (bytes).
- ``SServer(*args)`` ``openssl s_server`` on a free loopback port (only for
  the peers' self-checks: s_server cannot report a port it was given as 0).
- ``stats_over_tls(addr, ctx)`` the echo server's STATS fields over TLS.
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest

from conftest import DEFAULT_TIMEOUT, REPO_ROOT, Conn, Server, free_port

CERT_NAMES = ("ca", "server", "expired", "wronghost", "other-ca", "untrusted", "client-ca", "client",
              "other-client")


class TlsCerts:
    """The files scripts/certs.sh made, as str paths (see the module doc)."""

    def __init__(self, directory):
        self.dir = str(directory)
        for name in CERT_NAMES:
            attr = name.replace("-", "_")
            setattr(self, attr, os.path.join(self.dir, name + ".pem"))
            setattr(self, attr + "_key", os.path.join(self.dir, name + ".key"))

    def pem(self, name):
        return getattr(self, name.replace("-", "_"))

    def key(self, name):
        return getattr(self, name.replace("-", "_") + "_key")

    def server_args(self, name="server", client_ca=None):
        args = ["--tls-cert", self.pem(name), "--tls-key", self.key(name)]
        if client_ca is not None:
            args += ["--tls-client-ca", client_ca]
        return args


def make_certs(directory, timeout=30):
    """Runs scripts/certs.sh DIR; returns the CompletedProcess."""
    script = os.path.join(REPO_ROOT, "scripts", "certs.sh")
    return subprocess.run([script, str(directory)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed (Debian package openssl; scripts/deps.sh test)")
    directory = tmp_path_factory.mktemp("certs")
    cp = make_certs(directory)
    assert cp.returncode == 0, f"scripts/certs.sh failed ({cp.returncode}): {cp.stderr.decode()}"
    return TlsCerts(directory)


# ---- Python TLS clients ------------------------------------------------------------


def client_context(ca=None, cert=None, key=None, minimum=None, maximum=None, verify=True):
    """A client context: trusts `ca` (nothing else), presents cert/key when
    given, limits the versions to [minimum, maximum] (ssl.TLSVersion)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile=ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def legacy_context():
    """Offers TLS 1.0 and 1.1 only. OpenSSL 3 refuses those versions at its
    default security level, even in a client, so the level is lowered to 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point is to be outdated
        ctx = client_context(verify=False, minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


class TlsConn(Conn):
    """conftest.Conn over an SSLSocket: the same deadline-bounded reads."""

    def __init__(self, addr, ctx, server_hostname="localhost", timeout=DEFAULT_TIMEOUT):
        host, port = addr
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    @property
    def version(self):
        return self.sock.version()

    def nothing_within(self, seconds):
        if self.buf or self.sock.pending():
            return False
        return super().nothing_within(seconds)


def tls_connect(addr, ctx, server_hostname="localhost", timeout=DEFAULT_TIMEOUT):
    if isinstance(addr, Server):
        c = TlsConn(addr.addr, ctx, server_hostname, timeout)
        addr.clients.append(c)
        return c
    return TlsConn(addr, ctx, server_hostname, timeout)


def handshake_error(addr, ctx, server_hostname="localhost", timeout=DEFAULT_TIMEOUT):
    """The exception the handshake raised (ssl.SSLError, or a reset / EOF as
    OSError), or None when it completed."""
    try:
        c = TlsConn(addr, ctx, server_hostname, timeout)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        if isinstance(e, socket.timeout):
            raise
        return e
    c.close()
    return None


def client_hello_bytes(server_hostname="localhost"):
    """The first flight of a TLS client (a ClientHello record), made in
    memory without a socket."""
    ctx = client_context(verify=False)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def stats_over_tls(addr, ctx, server_hostname="localhost"):
    """echo-server's STATS line over TLS -> {field: str value}."""
    c = TlsConn(addr, ctx, server_hostname)
    try:
        line = c.request(b"STATS").decode()
    finally:
        c.close()
    return dict(re.findall(r"(\w+)=(\S+)", line))


# ---- a Python TLS server -------------------------------------------------------------


class PyTlsServer:
    """A TLS server on 127.0.0.1:0 that behaves like `echo-server` for the
    lines it gets (`ECHO: line`; `QUIT` -> `Goodbye!`, then close).

    conns: one dict per accepted connection: "sni" (the server name the
    client sent, or None), "version", "error" (the handshake's failure text,
    or None), "data" (application bytes received), "peer_cert" (the client
    certificate's subject as a dict, or None), "done" (True once the
    connection ended)."""

    def __init__(self, cert, key, client_ca=None, minimum=None, maximum=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca is not None:
            ctx.load_verify_locations(cafile=client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
        ctx.sni_callback = self._on_sni
        self.ctx = ctx
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.addr = self.lsock.getsockname()[:2]
        self.target = f"{self.addr[0]}:{self.addr[1]}"
        self.conns = []
        self.cond = threading.Condition()
        self.socks = []
        self.threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self.threads[0].start()

    def _on_sni(self, sslsock, name, ctx):
        rec = getattr(sslsock, "tk_rec", None)
        if rec is not None:
            with self.cond:
                rec["sni"] = name

    def _accept_loop(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            rec = {"sni": None, "version": None, "error": None, "data": b"", "peer_cert": None, "done": False}
            with self.cond:
                self.conns.append(rec)
                self.socks.append(s)
                self.cond.notify_all()
            t = threading.Thread(target=self._serve, args=(s, rec), daemon=True)
            self.threads.append(t)
            t.start()

    def _finish(self, rec, **fields):
        with self.cond:
            rec.update(fields)
            rec["done"] = True
            self.cond.notify_all()

    def _serve(self, raw, rec):
        raw.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            tls.tk_rec = rec
            tls.do_handshake()
        except (ssl.SSLError, OSError) as e:
            self._finish(rec, error=str(e) or type(e).__name__)
            raw.close()
            return
        with self.cond:
            rec["version"] = tls.version()
            cert = tls.getpeercert()
            if cert:
                rec["peer_cert"] = {k: v for rdn in cert.get("subject", ()) for k, v in rdn}
            self.cond.notify_all()
        buf = b""
        try:
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                with self.cond:
                    rec["data"] += chunk
                    self.cond.notify_all()
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.rstrip(b"\r") == b"QUIT":
                        tls.sendall(b"Goodbye!\n")
                        raise EOFError
                    tls.sendall(b"ECHO: " + line + b"\n")
        except EOFError:
            try:  # close_notify, as a TLS server ending the session should
                tls = tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
        except (ssl.SSLError, OSError) as e:
            with self.cond:
                rec["error"] = rec["error"] or f"after the handshake: {e}"
        self._finish(rec)
        tls.close()

    def wait_done(self, i=0, timeout=DEFAULT_TIMEOUT):
        """Waits until connection i has ended; returns its record."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.conns) <= i or not self.conns[i]["done"]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"python TLS server: connection {i} did not end; conns={self.conns}")
                self.cond.wait(remaining)
            return dict(self.conns[i])

    def stop(self):
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self.cond:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)
        for s in socks:
            s.close()


@pytest.fixture
def py_tls_server():
    started = []

    def start(cert, key, **kw):
        srv = PyTlsServer(cert, key, **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


# ---- tcpkit client options and the openssl tools ---------------------------------------


def tls_args(certs, ca=True, name=None, insecure=False, cert=None):
    """tcpkit client options: --tls, --tls-ca (unless ca=False, or another
    CA file given as ca), --tls-server-name, --tls-insecure, and a client
    certificate by name ("client", "other-client")."""
    args = ["--tls"]
    if ca is True:
        args += ["--tls-ca", certs.ca]
    elif ca:
        args += ["--tls-ca", ca]
    if name is not None:
        args += ["--tls-server-name", name]
    if insecure:
        args += ["--tls-insecure"]
    if cert is not None:
        args += ["--tls-cert", certs.pem(cert), "--tls-key", certs.key(cert)]
    return args


def s_client(addr, *args, input=b"", timeout=30):
    """openssl s_client -connect HOST:PORT ARGS with `input` on stdin."""
    host, port = addr[0], addr[1]
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    argv = ["openssl", "s_client", "-connect", target] + [str(a) for a in args]
    try:
        return subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{argv} did not exit within {timeout}s; stdout={e.stdout!r} stderr={e.stderr!r}")


class SServer:
    """`openssl s_server -accept 127.0.0.1:PORT ARGS` on a port picked by
    binding a socket first. Only for the self-checks of the Python peers:
    the port could be taken in between, so tests of tcpkit never use it."""

    def __init__(self, *args, startup_timeout=DEFAULT_TIMEOUT):
        self.addr = ("127.0.0.1", free_port())
        accept = f"{self.addr[0]}:{self.addr[1]}"
        self.argv = ["openssl", "s_server", "-accept", accept] + [str(a) for a in args]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.out = []
        self.cond = threading.Condition()
        self.ended = False
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + startup_timeout
        with self.cond:
            while not any(line.startswith(b"ACCEPT") for line in self.out):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ended:
                    self.stop()
                    pytest.fail(f"{self.argv} did not print ACCEPT: {b''.join(self.out)!r}")
                self.cond.wait(remaining)

    def _pump(self):
        for line in iter(self.proc.stdout.readline, b""):
            with self.cond:
                self.out.append(line)
                self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def output(self):
        with self.cond:
            return b"".join(self.out).decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.thread.join(5)
