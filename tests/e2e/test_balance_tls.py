"""`tcpkit balance` terminating TLS in front of plain backends: bytes exact
both ways (64 MiB each way checked by SHA-256), a plain-text client and a
stalled handshake closed while others are served (before any backend is
dialled), mutual TLS, certificate rotation by SIGHUP (new clients see the
new certificate, an established one keeps working, broken files keep the
old one), the settings in a configuration file, and the stats counters.

The certificates come from scripts/certs.sh (the tls_certs fixture); the
TLS clients are Python's ssl module."""

import hashlib
import os
import re
import socket
import ssl
import struct

import pytest

from balance_helpers import (  # noqa: F401  (fixtures)
    balancer,
    close_lines,
    echo_backends,
    expect_log,
    py_backend,
    sighup_reload,
    stats_json,
    wait_close_lines,
    wait_stats,
    write_config,
)
from conftest import DEFAULT_TIMEOUT, run_tcpkit
from tls_helpers import client_context, tls_certs, tls_connect  # noqa: F401  (fixture)

MiB = 1024 * 1024


def raw_tls(addr, ctx, timeout=30):
    """A TLS socket that reports an end without close_notify as an error."""
    raw = socket.create_connection(addr, timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def fingerprint_of_file(path):
    with open(path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def peer_fingerprint(sock):
    return hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()


def tls_reason_lines(srv):
    return [d for d in close_lines(srv) if d["reason"] == "tls-handshake"]


def test_tls_client_through_balancer_to_plain_echo_backends(echo_backends, balancer, tls_certs):
    backs = echo_backends(2)
    bal = balancer(backs, *tls_certs.server_args())
    ctx = client_context(ca=tls_certs.ca)
    names = set()
    for i in range(4):
        c = tls_connect(bal, ctx)
        names.add(c.recv_line().decode().strip())
        payload = f"hello {i} " + "x" * 3000
        c.send(payload.encode() + b"\n")
        assert c.recv_line() == b"ECHO: " + payload.encode() + b"\n"
        c.close()
    assert names == {"b0", "b1"}
    st = wait_stats(bal.stats_addr, lambda s: s["tls"]["handshakes"] >= 4, what="4 handshakes")
    assert st["tls"]["failed"] == 0
    assert st["clients"]["total"] == 4


def transfer_backend(download):
    """A backend for one client: reads an 8-byte length and that many bytes,
    answers their SHA-256, then sends `download` and closes."""

    def handler(sock, peer, backend):
        sock.settimeout(60)
        n = struct.unpack("!Q", recv_exact(sock, 8))[0]
        h = hashlib.sha256()
        left = n
        while left:
            chunk = sock.recv(min(left, 1 << 20))
            if not chunk:
                return
            h.update(chunk)
            left -= len(chunk)
        sock.sendall(h.digest())
        sock.sendall(download)
        sock.close()

    return handler


def test_64_mib_each_way_arrive_exact_and_end_with_close_notify(py_backend, balancer, tls_certs):
    up = os.urandom(64 * MiB + 12345)
    down = os.urandom(64 * MiB + 54321)
    back = py_backend(transfer_backend(down))
    bal = balancer([back], *tls_certs.server_args())
    s = raw_tls(bal.addr, client_context(ca=tls_certs.ca), timeout=60)
    try:
        s.sendall(struct.pack("!Q", len(up)))
        view = memoryview(up)
        for off in range(0, len(up), 1 << 20):
            s.sendall(view[off:off + (1 << 20)])
        assert recv_exact(s, 32) == hashlib.sha256(up).digest()
        h = hashlib.sha256()
        got = 0
        while True:
            chunk = s.recv(1 << 20)  # SSLEOFError if the end came without close_notify
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        assert got == len(down)
        assert h.hexdigest() == hashlib.sha256(down).hexdigest()
    finally:
        s.close()
    line = wait_close_lines(bal, 1, timeout=30)[0]
    assert line["reason"] == "backend"
    assert line["up"] == len(up) + 8
    assert line["down"] == len(down) + 32


def test_plain_text_client_is_closed_cleanly_and_never_reaches_a_backend(echo_backends, balancer,
                                                                         tls_certs):
    backs = echo_backends(1)
    bal = balancer(backs, *tls_certs.server_args())
    raw = socket.create_connection(bal.addr, timeout=DEFAULT_TIMEOUT)
    try:
        raw.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        assert raw.recv(4096) == b""  # an orderly FIN, not a reset
    finally:
        raw.close()
    expect_log(bal, r"reason=tls-handshake .*plain text")
    st = stats_json(bal.stats_addr)
    assert st["tls"]["failed"] == 1
    assert st["backends"][0]["total"] == 0
    c = tls_connect(bal, client_context(ca=tls_certs.ca))
    assert c.recv_line() == b"b0\n"
    c.send(b"still here\n")
    assert c.recv_line() == b"ECHO: still here\n"
    c.close()


def test_stalled_handshake_times_out_while_other_clients_are_served(echo_backends, balancer,
                                                                    tls_certs):
    backs = echo_backends(1)
    bal = balancer(backs, *tls_certs.server_args(), "--tls-handshake-timeout", "1")
    stalled = socket.create_connection(bal.addr, timeout=DEFAULT_TIMEOUT)
    try:
        ctx = client_context(ca=tls_certs.ca)
        for i in range(3):
            c = tls_connect(bal, ctx)
            assert c.recv_line() == b"b0\n"
            c.send(f"line {i}\n".encode())
            assert c.recv_line() == f"ECHO: line {i}\n".encode()
            c.close()
        assert stalled.recv(4096) == b""  # closed by the handshake timeout
    finally:
        stalled.close()
    expect_log(bal, r'reason=tls-handshake .*tls="handshake timed out"')
    st = stats_json(bal.stats_addr)
    assert st["tls"]["failed"] == 1
    assert st["tls"]["handshakes"] == 3
    assert st["backends"][0]["total"] == 3


def handshake_then_echo(addr, ctx):
    """Connects, reads the banner and one echo; returns None or the error."""
    try:
        s = raw_tls(addr, ctx, timeout=DEFAULT_TIMEOUT)
    except (ssl.SSLError, OSError) as e:
        return e
    try:
        s.sendall(b"hi\n")
        data = b""
        while not data.endswith(b"ECHO: hi\n"):
            chunk = s.recv(4096)
            if not chunk:
                return EOFError(data)
            data += chunk
        return None
    except (ssl.SSLError, OSError) as e:
        return e
    finally:
        s.close()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(echo_backends, balancer, tls_certs):
    backs = echo_backends(1)
    bal = balancer(backs, *tls_certs.server_args(client_ca=tls_certs.client_ca))
    good = client_context(ca=tls_certs.ca, cert=tls_certs.client, key=tls_certs.client_key)
    assert handshake_then_echo(bal.addr, good) is None
    for ctx in (client_context(ca=tls_certs.ca),
                client_context(ca=tls_certs.ca, cert=tls_certs.other_client,
                               key=tls_certs.other_client_key)):
        err = handshake_then_echo(bal.addr, ctx)
        assert err is not None
    wait_stats(bal.stats_addr, lambda s: s["tls"]["failed"] == 2, what="2 failed handshakes")
    wait_close_lines(bal, 3)
    assert len(tls_reason_lines(bal)) == 2
    assert stats_json(bal.stats_addr)["backends"][0]["total"] == 1


def copy_pair(certs, name, cert_path, key_path):
    with open(certs.key(name)) as f:
        key = f.read()
    with open(certs.pem(name)) as f:
        pem = f.read()
    with open(key_path, "w") as f:
        f.write(key)
    with open(cert_path, "w") as f:
        f.write(pem)


def test_sighup_rotates_the_certificate_for_new_clients_only(echo_backends, balancer, tls_certs,
                                                             tmp_path):
    cert, key = str(tmp_path / "live.pem"), str(tmp_path / "live.key")
    copy_pair(tls_certs, "server", cert, key)
    backs = echo_backends(1)
    bal = balancer(backs, "--tls-cert", cert, "--tls-key", key)
    # Both certificates have the right names; the client trusts both CAs.
    ctx = client_context(ca=tls_certs.ca)
    ctx.load_verify_locations(cafile=tls_certs.other_ca)
    old = raw_tls(bal.addr, ctx)
    try:
        assert peer_fingerprint(old) == fingerprint_of_file(tls_certs.server)
        assert recv_exact(old, 3) == b"b0\n"

        copy_pair(tls_certs, "untrusted", cert, key)
        sighup_reload(bal, expect=r"reload: .*TLS certificate and key read again")
        fresh = raw_tls(bal.addr, ctx)
        assert peer_fingerprint(fresh) == fingerprint_of_file(tls_certs.untrusted)
        fresh.close()

        # The established client is untouched.
        old.sendall(b"after reload\n")
        assert recv_exact(old, len(b"ECHO: after reload\n")) == b"ECHO: after reload\n"

        # Files that do not load: the reload fails and the current certificate stays.
        with open(key, "w") as f:
            f.write("not a key\n")
        sighup_reload(bal, expect=r"reload failed: .*tls: .*keeping the current settings")
        again = raw_tls(bal.addr, ctx)
        assert peer_fingerprint(again) == fingerprint_of_file(tls_certs.untrusted)
        again.close()
    finally:
        old.close()


def test_tls_settings_from_the_config_file(echo_backends, balancer, tls_certs, tmp_path):
    backs = echo_backends(1)
    conf = write_config(tmp_path / "balance.conf",
                        f'tls-cert "{tls_certs.server}"\n'
                        f"tls-key {tls_certs.server_key}\n"
                        "tls-min-version 1.3\n"
                        "tls-handshake-timeout 5s\n")
    bal = balancer(backs, "--config", conf)
    ctx = client_context(ca=tls_certs.ca)
    c = tls_connect(bal, ctx)
    assert c.version == "TLSv1.3"
    assert c.recv_line() == b"b0\n"
    c.close()
    old = client_context(ca=tls_certs.ca, maximum=ssl.TLSVersion.TLSv1_2)
    assert handshake_then_echo(bal.addr, old) is not None
    # TLS cannot be switched off by a reload: that changes what the port speaks.
    write_config(tmp_path / "balance.conf", "algo leastconn\n")
    sighup_reload(bal, expect=r"reload failed: turning TLS off needs a restart")
    c = tls_connect(bal, ctx)
    assert c.recv_line() == b"b0\n"
    c.close()


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "/nonexistent.pem"], r"tls-cert and tls-key go together"),
    (["--tls-client-ca", "/x.pem"], r"tls-client-ca needs tls-cert"),
    (["--tls-min-version", "1.1"], r"tls-min-version: '1\.1' is not 1\.2 or 1\.3"),
    (["--tls-handshake-timeout", "0"], r"tls-handshake-timeout: must be more than 0"),
])
def test_tls_usage_errors_exit_2(args, message):
    cp = run_tcpkit(["balance", "-l", "127.0.0.1:0", "-b", "127.0.0.1:9"] + args, timeout=15)
    err = cp.stderr.decode()
    assert cp.returncode == 2, (cp.returncode, err)
    assert re.search(message, err), err


def test_unreadable_certificate_exits_1_naming_the_file(tmp_path):
    missing = str(tmp_path / "missing.pem")
    cp = run_tcpkit(["balance", "-l", "127.0.0.1:0", "-b", "127.0.0.1:9", "--tls-cert", missing,
                     "--tls-key", missing], timeout=15)
    err = cp.stderr.decode()
    assert cp.returncode == 1, (cp.returncode, err)
    assert "missing.pem" in err, err
