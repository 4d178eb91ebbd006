"""TLS end to end (docs/security.md, "TLS"): the servers with --tls-cert and
--tls-key, the clients with --tls, checked against independent peers
(Python's ssl module, openssl s_client, a Python TLS server) over loopback.

Covers echo, chat and files over TLS; protocol versions; what a client
refuses (wrong CA, expired, wrong name or address) and that it then sends
nothing; mutual TLS; stalled handshakes and the handshake timeout; plaintext
on a TLS port; start-up errors; balance terminating TLS; serve. bench and
scan are in test_tls_tools.py, the test tools' own checks in
test_tls_certs.py."""

import hashlib
import json
import os
import re
import ssl

import pytest

from balance_helpers import balancer, echo_backends, refused_addr  # noqa: F401  (fixtures)
from chat_helpers import T_CHAT_RE, JsonClient, TextClient, chat_factory  # noqa: F401  (fixture)
from conftest import LISTEN_RE, Conn, fmt_addr, ipv6_loopback_available, parse_host, run_tcpkit
from files_helpers import make_files, sha256_file, write_random_file
from tls_helpers import (  # noqa: F401  (fixture)
    client_context,
    client_hello_bytes,
    handshake_error,
    legacy_context,
    py_tls_server,
    s_client,
    stats_over_tls,
    tls_args,
    tls_connect,
)

TIMEOUT = 30


def tls_echo(server_factory, certs, *args, cert="server", client_ca=None):
    """echo-server on 127.0.0.1:0 with TLS."""
    return server_factory(["--listen", "127.0.0.1:0"] + certs.server_args(cert, client_ca) + list(args))


def target(addr, host=None):
    return fmt_addr((host or addr[0], addr[1]))


def assert_tls_failure(cp, *reasons):
    """Exit 1 and a stderr line with `tls:` and each reason (any case)."""
    err = cp.stderr.decode("utf-8", "replace")
    assert cp.returncode == 1, f"exit {cp.returncode}, want 1; stderr:\n{err}"
    lines = [line for line in err.splitlines() if "tls:" in line]
    assert lines, f"no line with 'tls:' on stderr:\n{err}"
    for r in reasons:
        assert any(r.lower() in line.lower() for line in lines), f"no 'tls:' line says {r!r}:\n{err}"


def assert_refused_by_server(err):
    """A handshake the server refused: an alert, a reset or an EOF."""
    assert err is not None, "the handshake completed"
    assert isinstance(err, (ssl.SSLError, ConnectionError, OSError)), repr(err)
    assert not isinstance(err, ssl.SSLCertVerificationError), f"the client refused, not the server: {err!r}"


def assert_only_alerts(data):
    """Bytes a server may send to a peer it refuses: nothing, or TLS alert
    records (type 21) - never application bytes."""
    p = 0
    while p < len(data):
        assert data[p] == 0x15 and len(data) - p >= 5, f"not a TLS alert: {data[p:p + 40]!r}"
        p += 5 + int.from_bytes(data[p + 3:p + 5], "big")


# ---- echo over TLS -------------------------------------------------------------------


def test_python_client_echo_over_tls(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    ctx = client_context(ca=tls_certs.ca)
    c = tls_connect(srv, ctx, server_hostname="localhost")
    assert c.version == "TLSv1.3"
    assert c.request("hello") == b"ECHO: hello"
    assert c.request("UPPER tls") == b"TLS"
    n = 2000
    c.send(b"".join(b"line %d\n" % i for i in range(n)))
    for i in range(n):
        assert c.recv_line() == b"ECHO: line %d\n" % i
    # the address itself is verified against the certificate's IP SANs
    c2 = tls_connect(srv, ctx, server_hostname="127.0.0.1")
    assert c2.request("by address") == b"ECHO: by address"


def test_large_replies_over_tls(server_factory, tls_certs):
    """Replies bigger than a TLS record (16 KiB) and than the socket buffers."""
    srv = tls_echo(server_factory, tls_certs, "--max-line", "1M")
    c = tls_connect(srv, client_context(ca=tls_certs.ca))
    for size in (16383, 16384, 16385, 200_000, 900_000):
        line = (b"%d:" % size) + b"x" * size
        c.send(line + b"\n")
        assert c.recv_line(timeout=TIMEOUT) == b"ECHO: " + line + b"\n"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_connect_pipes_lines_over_tls(server_factory, tls_certs, host):
    srv = tls_echo(server_factory, tls_certs)
    cp = run_tcpkit(["connect", target(srv.addr, host)] + tls_args(tls_certs), input=b"a\nb\nlast")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: a\nECHO: b\nECHO: last\n"


def test_tls_ca_alone_implies_tls(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    cp = run_tcpkit(["connect", target(srv.addr), "--tls-ca", tls_certs.ca], input=b"implied\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: implied\n"


def test_connect_many_lines_over_tls(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    n = 30000
    cp = run_tcpkit(["connect", target(srv.addr)] + tls_args(tls_certs),
                    input=b"".join(b"L%d\n" % i for i in range(n)), timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"".join(b"ECHO: L%d\n" % i for i in range(n))


def test_connect_server_quits_over_tls(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    cp = run_tcpkit(["connect", target(srv.addr)] + tls_args(tls_certs), input=b"hello\nQUIT\nnot sent\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: hello\nGoodbye!\n"


def test_openssl_s_client_echo(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    # s_client ignores the end of its input with -quiet: QUIT makes the
    # server close, and the exit status is 0 only if it sent close_notify.
    cp = s_client(srv.addr, "-CAfile", tls_certs.ca, "-verify_return_error", "-verify_ip", "127.0.0.1",
                  "-quiet", input=b"hello\nREVERSE abc\nQUIT\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: hello\ncba\nGoodbye!\n"


def test_tls13_is_negotiated_by_default(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    cp = s_client(srv.addr, "-CAfile", tls_certs.ca, "-verify_return_error", "-servername", "localhost",
                  "-brief", "-ign_eof", input=b"QUIT\n")
    assert cp.returncode == 0, cp.stderr
    assert b"Protocol version: TLSv1.3" in cp.stderr, cp.stderr
    assert b"Verification: OK" in cp.stderr, cp.stderr


def test_tls12_client_is_accepted_by_default(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    c = tls_connect(srv, client_context(ca=tls_certs.ca, maximum=ssl.TLSVersion.TLSv1_2))
    assert c.version == "TLSv1.2"
    assert c.request("old but fine") == b"ECHO: old but fine"


def test_min_version_13_refuses_a_tls12_client(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs, "--tls-min-version", "1.3")
    err = handshake_error(srv.addr, client_context(ca=tls_certs.ca, maximum=ssl.TLSVersion.TLSv1_2))
    assert_refused_by_server(err)
    c = tls_connect(srv, client_context(ca=tls_certs.ca))
    assert c.version == "TLSv1.3"
    assert c.request("still serving") == b"ECHO: still serving"


@pytest.mark.parametrize("min_version", [None, "1.2", "1.3"])
def test_tls11_and_older_are_always_refused(server_factory, tls_certs, min_version):
    args = ["--tls-min-version", min_version] if min_version else []
    srv = tls_echo(server_factory, tls_certs, *args)
    assert_refused_by_server(handshake_error(srv.addr, legacy_context()))
    c = tls_connect(srv, client_context(ca=tls_certs.ca))
    assert c.request("after") == b"ECHO: after"


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ipv6_address_is_verified_against_the_ip_san(server_factory, tls_certs):
    srv = server_factory(["--listen", "[::1]:0"] + tls_certs.server_args())
    c = tls_connect(srv, client_context(ca=tls_certs.ca), server_hostname="::1")
    assert c.request("six") == b"ECHO: six"
    cp = run_tcpkit(["connect", target(srv.addr)] + tls_args(tls_certs), input=b"v6\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: v6\n"


# ---- what a client refuses -------------------------------------------------------------

REFUSALS = [
    # server certificate, host on the command line, extra client options, reasons
    ("untrusted", "127.0.0.1", [], ["certificate verify failed"]),
    ("expired", "127.0.0.1", [], ["certificate verify failed", "certificate has expired"]),
    ("wronghost", "localhost", [], ["certificate verify failed", "hostname mismatch"]),
    ("wronghost", "127.0.0.1", [], ["certificate verify failed", "IP address mismatch"]),
    ("server", "127.0.0.1", ["--tls-server-name", "wrong.example"],
     ["certificate verify failed", "hostname mismatch"]),
]


@pytest.mark.parametrize("cert,host,extra,reasons", REFUSALS,
                         ids=["wrong-ca", "expired", "wrong-name", "wrong-address", "server-name-override"])
def test_connect_refuses_and_sends_nothing(tls_certs, py_tls_server, cert, host, extra, reasons):
    peer = py_tls_server(tls_certs.pem(cert), tls_certs.key(cert))
    cp = run_tcpkit(["connect", target(peer.addr, host)] + tls_args(tls_certs) + extra, input=b"secret\n")
    assert_tls_failure(cp, *reasons)
    assert cp.stdout == b""
    rec = peer.wait_done(0)
    assert rec["error"] is not None and rec["data"] == b"", rec


@pytest.mark.parametrize("cert,host,extra,reasons", REFUSALS,
                         ids=["wrong-ca", "expired", "wrong-name", "wrong-address", "server-name-override"])
def test_connect_refuses_a_tcpkit_server_too(server_factory, tls_certs, cert, host, extra, reasons):
    srv = tls_echo(server_factory, tls_certs, cert=cert)
    cp = run_tcpkit(["connect", target(srv.addr, host)] + tls_args(tls_certs) + extra, input=b"secret\n")
    assert_tls_failure(cp, *reasons)
    assert cp.stdout == b""
    # nothing reached the service: no request was answered
    ctx = client_context(verify=False)
    assert stats_over_tls(srv.addr, ctx)["messages"] == "0"


def test_without_tls_ca_the_system_store_does_not_know_the_test_ca(tls_certs, py_tls_server):
    peer = py_tls_server(tls_certs.server, tls_certs.server_key)
    cp = run_tcpkit(["connect", target(peer.addr, "localhost"), "--tls"], input=b"secret\n")
    assert_tls_failure(cp, "certificate verify failed")
    assert cp.stdout == b""
    assert peer.wait_done(0)["data"] == b""


@pytest.mark.parametrize("command", ["get", "put", "ls", "chat"])
def test_other_clients_refuse_an_untrusted_server(tls_certs, py_tls_server, tmp_path, command):
    peer = py_tls_server(tls_certs.untrusted, tls_certs.untrusted_key)
    upload = tmp_path / "up.txt"
    upload.write_bytes(b"secret upload\n")
    args = {
        "get": ["get", peer.target, "some/file", "-o", str(tmp_path)],
        "put": ["put", peer.target, str(upload)],
        "ls": ["ls", peer.target],
        "chat": ["chat", peer.target, "--name", "bob"],
    }[command]
    cp = run_tcpkit(args + tls_args(tls_certs), input=b"hello\n" if command == "chat" else None)
    assert_tls_failure(cp, "certificate verify failed")
    rec = peer.wait_done(0)
    assert rec["error"] is not None and rec["data"] == b"", rec
    assert not os.path.exists(tmp_path / "file")


@pytest.mark.parametrize("cert", ["untrusted", "expired", "wronghost"])
def test_tls_insecure_skips_verification(server_factory, tls_certs, cert):
    srv = tls_echo(server_factory, tls_certs, cert=cert)
    cp = run_tcpkit(["connect", target(srv.addr), "--tls-insecure"], input=b"anyway\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: anyway\n"


def test_sni_is_the_host_name_or_the_server_name_option(tls_certs, py_tls_server):
    peer = py_tls_server(tls_certs.server, tls_certs.server_key)
    runs = [
        (target(peer.addr, "localhost"), [], "localhost"),
        (target(peer.addr), [], None),  # no SNI for an address (RFC 6066)
        (target(peer.addr), ["--tls-server-name", "localhost"], "localhost"),
    ]
    for i, (where, extra, want) in enumerate(runs):
        cp = run_tcpkit(["connect", where] + tls_args(tls_certs) + extra, input=b"sni %d\n" % i)
        assert cp.returncode == 0, (extra, cp.stderr)
        assert cp.stdout == b"ECHO: sni %d\n" % i
        rec = peer.wait_done(i)
        assert rec["sni"] == want, (where, extra, rec)
        assert rec["version"] == "TLSv1.3", rec


def test_client_presents_its_certificate(tls_certs, py_tls_server):
    peer = py_tls_server(tls_certs.server, tls_certs.server_key, client_ca=tls_certs.client_ca)
    cp = run_tcpkit(["connect", target(peer.addr)] + tls_args(tls_certs, cert="client"), input=b"me\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: me\n"
    assert peer.wait_done(0)["peer_cert"] == {"commonName": "tcpkit-test-client"}


# ---- mutual TLS --------------------------------------------------------------------------


def mtls_echo(server_factory, certs):
    return tls_echo(server_factory, certs, client_ca=certs.client_ca)


def client_ctx_with(certs, name=None):
    if name is None:
        return client_context(ca=certs.ca)
    return client_context(ca=certs.ca, cert=certs.pem(name), key=certs.key(name))


def test_mtls_client_with_a_certificate_is_served(server_factory, tls_certs):
    srv = mtls_echo(server_factory, tls_certs)
    cp = run_tcpkit(["connect", target(srv.addr)] + tls_args(tls_certs, cert="client"), input=b"mutual\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: mutual\n"
    c = tls_connect(srv, client_ctx_with(tls_certs, "client"))
    assert c.request("py mutual") == b"ECHO: py mutual"


def python_client_is_refused(srv, ctx):
    """A client the server must refuse. With TLS 1.3 the client may finish
    its side of the handshake before the server's verdict arrives, so the
    refusal can also come on the first read; either way no reply."""
    try:
        c = tls_connect(srv.addr, ctx)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        assert_refused_by_server(e)
        return
    try:
        c.send(b"let me in\n")
        line = c.recv_line()
    except (ssl.SSLError, ConnectionError, OSError, EOFError):
        return
    finally:
        c.close()
    pytest.fail(f"the server answered a client it should have refused: {line!r}")


@pytest.mark.parametrize("cert", [None, "other-client"], ids=["no-certificate", "wrong-ca"])
def test_mtls_refuses_clients_without_a_good_certificate(server_factory, tls_certs, cert):
    srv = mtls_echo(server_factory, tls_certs)
    args = ["connect", target(srv.addr)] + tls_args(tls_certs, cert=cert)
    cp = run_tcpkit(args, input=b"let me in\n")
    assert_tls_failure(cp)
    assert cp.stdout == b""
    python_client_is_refused(srv, client_ctx_with(tls_certs, cert))
    # the server is fine, and no request of the refused clients was answered
    c = tls_connect(srv, client_ctx_with(tls_certs, "client"))
    assert c.request("STATS").decode().count("messages=0") == 1


# ---- stalled handshakes and plaintext ------------------------------------------------------


def stalled_connections(srv):
    """A silent TCP connection, one that sent half a ClientHello, and one
    that sent a single byte of it."""
    hello = client_hello_bytes()
    silent = srv.connect(timeout=TIMEOUT)
    half = srv.connect(timeout=TIMEOUT)
    half.send(hello[: len(hello) // 2])
    one = srv.connect(timeout=TIMEOUT)
    one.send(hello[:1])
    return [silent, half, one]


def test_stalled_handshakes_do_not_block_other_clients(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs, "--threads", "1", "--tls-handshake-timeout", "120")
    stalled = stalled_connections(srv)
    c = tls_connect(srv, client_context(ca=tls_certs.ca))
    for i in range(50):
        assert c.request(f"round {i}") == f"ECHO: round {i}".encode()
    cp = run_tcpkit(["connect", target(srv.addr)] + tls_args(tls_certs), input=b"meanwhile\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: meanwhile\n"
    for s in stalled:
        assert s.nothing_within(0), "a stalled handshake got bytes or was closed early"


def test_handshake_timeout_closes_stalled_connections(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs, "--threads", "1", "--tls-handshake-timeout", "1")
    early = tls_connect(srv, client_context(ca=tls_certs.ca))
    assert early.request("before") == b"ECHO: before"
    stalled = stalled_connections(srv)
    for s in stalled:
        assert_only_alerts(s.recv_until_eof(timeout=TIMEOUT))
    # the timeout is for the handshake only: the connection made before the
    # stalled ones (so older than the timeout now) is still served
    assert early.request("after") == b"ECHO: after"
    late = tls_connect(srv, client_context(ca=tls_certs.ca))
    assert late.request("new") == b"ECHO: new"


@pytest.mark.parametrize("plain", [b"hello\n", b"GET / HTTP/1.0\r\n\r\n", b"\x00" * 64])
def test_plaintext_on_a_tls_port_is_closed(server_factory, tls_certs, plain):
    srv = tls_echo(server_factory, tls_certs)
    other = tls_connect(srv, client_context(ca=tls_certs.ca))
    c = srv.connect(timeout=TIMEOUT)
    c.send(plain)
    data = c.recv_until_eof(timeout=TIMEOUT)
    assert b"ECHO" not in data and plain not in data, data
    assert_only_alerts(data)
    assert srv.alive()
    assert other.request("unaffected") == b"ECHO: unaffected"
    again = tls_connect(srv, client_context(ca=tls_certs.ca))
    assert again.request("still up") == b"ECHO: still up"


def test_tls_server_sends_nothing_before_the_client_hello(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs, "--banner", "Welcome")
    c = srv.connect()
    assert c.nothing_within(0.3), "the server spoke before the handshake"
    t = tls_connect(srv, client_context(ca=tls_certs.ca))
    assert t.recv_line() == b"Welcome\n"


# ---- start-up errors -------------------------------------------------------------------------


def server_argv(command, tmp_path):
    """The minimal arguments to start each server command on loopback."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return {
        "echo-server": ["echo-server", "--listen", "127.0.0.1:0"],
        "chat-server": ["chat-server", "--listen", "127.0.0.1:0", "--ephemeral"],
        "file-server": ["file-server", "--listen", "127.0.0.1:0", "--root", str(root)],
        "serve": ["serve", "--echo-listen", "127.0.0.1:0", "--chat-listen", "127.0.0.1:0",
                  "--files-listen", "127.0.0.1:0", "--chat-ephemeral", "--files-root", str(root)],
        "balance": ["balance", "--listen", "127.0.0.1:0", "--backend", fmt_addr(refused_addr()),
                    "--check-interval", "0"],
    }[command]


SERVER_COMMANDS = ["echo-server", "chat-server", "file-server", "serve", "balance"]


def assert_start_refused(cp, *names):
    out, err = cp.stdout.decode(), cp.stderr.decode("utf-8", "replace")
    assert cp.returncode in (1, 2), f"exit {cp.returncode}; stderr:\n{err}"
    assert "listening on" not in out, out
    assert any(n in err for n in names), f"the error names none of {names}:\n{err}"


@pytest.mark.parametrize("command", SERVER_COMMANDS)
def test_missing_key_file_is_a_start_up_error(tls_certs, tmp_path, command):
    missing = str(tmp_path / "no-such.key")
    cp = run_tcpkit(server_argv(command, tmp_path) + ["--tls-cert", tls_certs.server, "--tls-key", missing])
    assert_start_refused(cp, missing)


@pytest.mark.parametrize("command", SERVER_COMMANDS)
def test_key_not_matching_the_certificate_is_a_start_up_error(tls_certs, tmp_path, command):
    cp = run_tcpkit(server_argv(command, tmp_path) + ["--tls-cert", tls_certs.server,
                                                     "--tls-key", tls_certs.wronghost_key])
    assert_start_refused(cp, tls_certs.wronghost_key, tls_certs.server)


def test_unusable_certificate_files_are_start_up_errors(tls_certs, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    argv = server_argv("echo-server", tmp_path)
    cases = [
        (["--tls-cert", str(tmp_path / "no-such.pem"), "--tls-key", tls_certs.server_key],
         tmp_path / "no-such.pem"),
        (["--tls-cert", str(garbage), "--tls-key", tls_certs.server_key], garbage),
        (["--tls-cert", tls_certs.server, "--tls-key", str(garbage)], garbage),
        (["--tls-cert", str(tmp_path), "--tls-key", tls_certs.server_key], tmp_path),  # a directory
        (tls_certs.server_args() + ["--tls-client-ca", str(tmp_path / "no-ca.pem")], tmp_path / "no-ca.pem"),
        (tls_certs.server_args() + ["--tls-client-ca", str(garbage)], garbage),
    ]
    for extra, named in cases:
        cp = run_tcpkit(argv + extra)
        assert_start_refused(cp, str(named))


def test_bad_tls_option_values_are_usage_errors(server_factory, tls_certs, tmp_path):
    # the options themselves are known: good values start a server
    tls_echo(server_factory, tls_certs, "--tls-min-version", "1.3", "--tls-handshake-timeout", "2.5",
             client_ca=tls_certs.client_ca)
    argv = server_argv("echo-server", tmp_path)
    cert_key = tls_certs.server_args()
    for args, option in (
        (cert_key + ["--tls-min-version", "1.1"], "--tls-min-version"),
        (cert_key + ["--tls-min-version", "1.4"], "--tls-min-version"),
        (cert_key + ["--tls-min-version", "x"], "--tls-min-version"),
        (cert_key + ["--tls-handshake-timeout", "x"], "--tls-handshake-timeout"),
        (["--tls-cert", tls_certs.server], "--tls-key"),  # one without the other
        (["--tls-key", tls_certs.server_key], "--tls-cert"),
        (["--tls-client-ca", tls_certs.client_ca], "--tls-cert"),  # mutual TLS without TLS
    ):
        cp = run_tcpkit(argv + args)
        assert cp.returncode == 2, (args, cp.returncode, cp.stderr)
        assert option.encode() in cp.stderr, (args, cp.stderr)
        assert b"listening on" not in cp.stdout
    # a client certificate without its key, and the other way round
    for args, option in ((["--tls-cert", tls_certs.client], "--tls-key"),
                         (["--tls-key", tls_certs.client_key], "--tls-cert")):
        cp = run_tcpkit(["connect", "127.0.0.1:1"] + args)
        assert cp.returncode == 2, (args, cp.stderr)
        assert option.encode() in cp.stderr, (args, cp.stderr)


# ---- chat over TLS --------------------------------------------------------------------------


def tls_chat(chat_factory, certs, *args):
    return chat_factory(*certs.server_args(), *args)


def test_chat_over_tls_between_json_and_text_clients(chat_factory, tls_certs):
    srv = tls_chat(chat_factory, tls_certs, "--flood-rate", "0")
    ctx = client_context(ca=tls_certs.ca)
    alice = JsonClient(srv, "alice", conn=tls_connect(srv, ctx))
    carol = TextClient(srv, "carol", conn=tls_connect(srv, ctx))
    alice.wait_type("join", **{"from": "carol"})
    alice.say("hello over tls")
    m, _ = carol.wait_line(T_CHAT_RE)
    assert (m.group("from"), m.group("text")) == ("alice", "hello over tls"), m.group(0)
    carol.send_line("and back")
    ev, _ = alice.wait_chat("and back")
    assert ev["from"] == "carol", ev


def test_chat_client_over_tls(chat_factory, tls_certs):
    srv = tls_chat(chat_factory, tls_certs, "--flood-rate", "0")
    alice = JsonClient(srv, "alice", conn=tls_connect(srv, client_context(ca=tls_certs.ca)))
    cp = run_tcpkit(["chat", target(srv.addr), "--name", "bob"] + tls_args(tls_certs),
                    input=b"hello from bob\n", timeout=TIMEOUT)
    assert cp.returncode == 0, cp.stderr
    ev, _ = alice.wait_chat("hello from bob")
    assert ev["from"] == "bob", ev
    replies = [json.loads(line) for line in cp.stdout.decode().splitlines()]
    sent = [r for r in replies if r.get("type") == "MESSAGE" and r.get("payload", {}).get("status") == "ok"]
    assert sent, replies


# ---- files over TLS -------------------------------------------------------------------------


@pytest.fixture
def tls_files(server_factory, tls_certs, tmp_path):
    """start(*options): file-server over TLS on a tree with a 6 MiB file."""
    root = tmp_path / "root"
    make_files(root, {"small.txt": b"small file\n", "sub/readme.txt": b"readme\n"})
    digest = write_random_file(root / "big.bin", 6 * 1024 * 1024 + 12345)

    def start(*args):
        srv = server_factory(["--listen", "127.0.0.1:0", "--root", str(root)] + tls_certs.server_args()
                             + [str(a) for a in args], command="file-server")
        srv.root, srv.big_sha = root, digest
        return srv

    return start


@pytest.mark.parametrize("server_opts,client_opts", [
    (["--sendfile", "on"], []),
    (["--sendfile", "off"], []),
    (["--sendfile", "on"], ["-z"]),
    (["--sendfile", "on"], ["--protocol", "1"]),
], ids=["sendfile", "copy", "zstd", "version-1"])
def test_get_over_tls_matches_sha256(tls_files, tls_certs, tmp_path, server_opts, client_opts):
    srv = tls_files(*server_opts)
    out = tmp_path / "out"
    out.mkdir()
    cp = run_tcpkit(["get", target(srv.addr), "big.bin", "small.txt", "-o", str(out)] + client_opts
                    + tls_args(tls_certs), timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert sha256_file(out / "big.bin") == srv.big_sha
    assert (out / "small.txt").read_bytes() == b"small file\n"


def test_put_over_tls(tls_files, tls_certs, tmp_path):
    srv = tls_files("--allow-upload")
    src = tmp_path / "upload.bin"
    digest = write_random_file(src, 3 * 1024 * 1024 + 7)
    cp = run_tcpkit(["put", target(srv.addr), str(src), "--to", "sub"] + tls_args(tls_certs), timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert sha256_file(srv.root / "sub" / "upload.bin") == digest


def test_ls_over_tls(tls_files, tls_certs):
    srv = tls_files()
    cp = run_tcpkit(["ls", target(srv.addr), "--json", "--sha256"] + tls_args(tls_certs))
    assert cp.returncode == 0, cp.stderr
    entries = {e["name"]: e for e in map(json.loads, cp.stdout.decode().splitlines())}
    assert sorted(entries) == ["big.bin", "small.txt", "sub"], entries
    assert entries["big.bin"]["sha256"] == srv.big_sha
    assert entries["small.txt"]["sha256"] == hashlib.sha256(b"small file\n").hexdigest()


# ---- balance terminating TLS --------------------------------------------------------------------


def test_balance_terminates_tls_in_front_of_plain_backends(balancer, echo_backends, tls_certs):
    backends = echo_backends(["b0", "b1"])
    bal = balancer(backends, *tls_certs.server_args(), stats=False)
    ctx = client_context(ca=tls_certs.ca)
    seen = set()
    for i in range(4):
        c = tls_connect(bal, ctx)
        name = c.recv_line().rstrip(b"\n").decode()
        seen.add(name)
        assert c.request(f"through {i}") == f"ECHO: through {i}".encode()
        c.close()
    assert seen == {"b0", "b1"}, seen  # round robin over the plaintext backends
    cp = run_tcpkit(["connect", target(bal.addr)] + tls_args(tls_certs), input=b"via connect\n")
    assert cp.returncode == 0, cp.stderr
    assert re.fullmatch(rb"b[01]\nECHO: via connect\n", cp.stdout), cp.stdout


def test_balance_refuses_plaintext_clients_on_its_tls_port(balancer, echo_backends, tls_certs):
    backends = echo_backends(["b0"])
    bal = balancer(backends, *tls_certs.server_args(), stats=False)
    c = Conn(bal.addr, timeout=TIMEOUT)
    bal.clients.append(c)
    c.send(b"hello\n")
    data = c.recv_until_eof(timeout=TIMEOUT)
    assert b"b0" not in data and b"ECHO" not in data, data
    assert_only_alerts(data)
    t = tls_connect(bal, client_context(ca=tls_certs.ca))
    assert t.recv_line() == b"b0\n"


# ---- serve ---------------------------------------------------------------------------------------


def listeners_by_service(srv):
    """{"echo": (host, port), ...} from the `listening on ADDR (SERVICE...)` lines."""
    out = {}
    for line in srv.stdout().splitlines():
        m = LISTEN_RE.search(line)
        s = re.search(r"\((\w+)", line)
        if m and s:
            out[s.group(1)] = (parse_host(m.group(1)), int(m.group(2)))
    return out


def test_serve_puts_tls_on_every_listener(server_factory, tls_certs, tmp_path):
    root = tmp_path / "root"
    make_files(root, {"served.txt": b"served over tls\n"})
    srv = server_factory(["--echo-listen", "127.0.0.1:0", "--chat-listen", "127.0.0.1:0", "--files-listen",
                          "127.0.0.1:0", "--chat-ephemeral", "--files-root", str(root), "--threads", "2"]
                         + tls_certs.server_args(), command="serve", listeners=3)
    addrs = listeners_by_service(srv)
    assert sorted(addrs) == ["chat", "echo", "files"], srv.stdout()
    ctx = client_context(ca=tls_certs.ca)
    e = tls_connect(addrs["echo"], ctx)
    srv.clients.append(e)
    assert e.request("serve") == b"ECHO: serve"
    chat = TextClient(srv, "dora", conn=tls_connect(addrs["chat"], ctx))
    srv.clients.append(chat.c)
    assert chat.name == "dora"
    cp = run_tcpkit(["get", target(addrs["files"]), "served.txt", "-o", "-"] + tls_args(tls_certs))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"served over tls\n"
    for name, addr in addrs.items():  # plaintext is refused on each
        c = Conn(addr, timeout=TIMEOUT)
        srv.clients.append(c)
        c.send(b"plain\n")
        assert_only_alerts(c.recv_until_eof(timeout=TIMEOUT))
