"""The TLS test tools checked on their own, without tcpkit: scripts/certs.sh
makes what the TLS tests expect (chains, SANs, key usages, an expired
certificate), and the independent peers (Python's ssl, openssl s_client and
s_server) accept and refuse what they should. When a TLS test of tcpkit
fails, these say whether the tools or tcpkit are at fault."""

import os
import ssl
import stat
import subprocess

import pytest

from tls_helpers import (  # noqa: F401  (fixture)
    CERT_NAMES,
    SServer,
    client_context,
    client_hello_bytes,
    handshake_error,
    legacy_context,
    make_certs,
    py_tls_server,
    s_client,
    tls_connect,
)


def openssl(*args):
    return subprocess.run(["openssl"] + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30)


def verify(ca, cert, purpose=None):
    args = ["verify", "-CAfile", ca] + (["-purpose", purpose] if purpose else []) + [cert]
    cp = openssl(*args)
    return cp.returncode, (cp.stdout + cp.stderr).decode()


def ext(cert, name):
    cp = openssl("x509", "-in", cert, "-noout", "-ext", name)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.decode()


# ---- scripts/certs.sh -------------------------------------------------------------


def test_certs_script_is_silent_complete_and_makes_fresh_keys(tmp_path):
    d = tmp_path / "pki"
    cp = make_certs(d)
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, b"", b"")
    files = sorted(os.listdir(d))
    assert files == sorted([n + ".pem" for n in CERT_NAMES] + [n + ".key" for n in CERT_NAMES])
    for n in CERT_NAMES:
        assert stat.S_IMODE(os.stat(d / (n + ".key")).st_mode) == 0o600, n
    first = (d / "server.key").read_bytes()
    # Idempotent: a second run into the same directory replaces the set.
    cp = make_certs(d)
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, b"", b"")
    assert sorted(os.listdir(d)) == files
    assert (d / "server.key").read_bytes() != first
    rc, out = verify(d / "ca.pem", d / "server.pem")
    assert rc == 0, out


def test_each_certificate_verifies_against_its_own_ca_only(tls_certs):
    c = tls_certs
    good = [(c.ca, c.server, "sslserver"), (c.ca, c.wronghost, "sslserver"),
            (c.other_ca, c.untrusted, "sslserver"), (c.client_ca, c.client, "sslclient"),
            (c.other_ca, c.other_client, "sslclient")]
    for ca, cert, purpose in good:
        rc, out = verify(ca, cert, purpose)
        assert rc == 0, (cert, out)
    for ca, cert in [(c.ca, c.untrusted), (c.ca, c.client), (c.client_ca, c.other_client),
                     (c.other_ca, c.server)]:
        rc, out = verify(ca, cert)
        assert rc != 0 and "unable to get local issuer certificate" in out, (ca, cert, out)


def test_key_usages_separate_servers_from_clients(tls_certs):
    c = tls_certs
    assert "TLS Web Server Authentication" in ext(c.server, "extendedKeyUsage")
    assert "TLS Web Client Authentication" in ext(c.client, "extendedKeyUsage")
    rc, out = verify(c.client_ca, c.client, "sslserver")
    assert rc != 0 and "unsuitable certificate purpose" in out, out
    rc, out = verify(c.ca, c.server, "sslclient")
    assert rc != 0 and "unsuitable certificate purpose" in out, out


def test_subject_alternative_names(tls_certs):
    c = tls_certs
    for cert in (c.server, c.expired, c.untrusted):
        san = ext(cert, "subjectAltName")
        for want in ("DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1"):
            assert want in san, (cert, san)
    san = ext(c.wronghost, "subjectAltName")
    assert "DNS:wrong.example" in san and "localhost" not in san and "IP Address" not in san, san


def test_expired_certificate_is_expired_and_otherwise_valid(tls_certs):
    c = tls_certs
    cp = openssl("x509", "-in", c.expired, "-noout", "-checkend", "0")
    assert cp.returncode == 1 and b"will expire" in cp.stdout, cp.stdout
    cp = openssl("x509", "-in", c.server, "-noout", "-checkend", "86400")
    assert cp.returncode == 0, cp.stdout
    rc, out = verify(c.ca, c.expired)
    assert rc != 0 and "certificate has expired" in out, out
    # Only the dates are wrong: with time checks off the chain verifies.
    cp = openssl("verify", "-no_check_time", "-CAfile", c.ca, c.expired)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_keys_match_their_certificates(tls_certs):
    c = tls_certs
    for n in CERT_NAMES:
        pub_cert = openssl("x509", "-in", c.pem(n), "-noout", "-pubkey").stdout
        pub_key = openssl("pkey", "-in", c.key(n), "-pubout").stdout
        assert pub_cert and pub_cert == pub_key, n
    assert openssl("x509", "-in", c.server, "-noout", "-pubkey").stdout != \
        openssl("pkey", "-in", c.wronghost_key, "-pubout").stdout


# ---- the Python client against openssl s_server ------------------------------------------


@pytest.fixture
def s_servers():
    started = []

    def start(*args):
        s = SServer(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_python_client_verifies_names_and_addresses(tls_certs, s_servers):
    c = tls_certs
    srv = s_servers("-cert", c.server, "-key", c.server_key, "-rev")
    ctx = client_context(ca=c.ca)
    for name in ("localhost", "127.0.0.1"):
        conn = tls_connect(srv.addr, ctx, server_hostname=name)
        try:
            assert conn.version == "TLSv1.3"
            assert conn.request("hello") == b"olleh"
        finally:
            conn.close()


@pytest.mark.parametrize("cert,hostname,reason", [
    ("untrusted", "localhost", "unable to get local issuer certificate"),
    ("expired", "localhost", "certificate has expired"),
    ("wronghost", "localhost", "Hostname mismatch"),
    ("wronghost", "127.0.0.1", "IP address mismatch"),
    ("server", "wrong.example", "Hostname mismatch"),
])
def test_python_client_refuses_bad_servers(tls_certs, s_servers, cert, hostname, reason):
    c = tls_certs
    srv = s_servers("-cert", c.pem(cert), "-key", c.key(cert), "-rev")
    err = handshake_error(srv.addr, client_context(ca=c.ca), server_hostname=hostname)
    assert isinstance(err, ssl.SSLCertVerificationError), repr(err)
    assert reason in str(err), str(err)


def test_python_client_limited_to_tls12_negotiates_it(tls_certs, s_servers):
    c = tls_certs
    srv = s_servers("-cert", c.server, "-key", c.server_key, "-rev")
    conn = tls_connect(srv.addr, client_context(ca=c.ca, maximum=ssl.TLSVersion.TLSv1_2))
    try:
        assert conn.version == "TLSv1.2"
        assert conn.request("abc") == b"cba"
    finally:
        conn.close()


def test_legacy_client_really_speaks_tls11(tls_certs, s_servers):
    """The refusal tests rely on legacy_context() sending a TLS 1.1 hello
    rather than failing on its own: a server that allows 1.1 accepts it."""
    c = tls_certs
    srv = s_servers("-cert", c.server, "-key", c.server_key, "-rev", "-tls1_1",
                    "-cipher", "DEFAULT:@SECLEVEL=0")
    conn = tls_connect(srv.addr, legacy_context())
    try:
        assert conn.version == "TLSv1.1"
    finally:
        conn.close()
    # ...and a server at TLS 1.2 or better refuses it with an alert.
    srv2 = s_servers("-cert", c.server, "-key", c.server_key, "-rev")
    err = handshake_error(srv2.addr, legacy_context())
    assert isinstance(err, ssl.SSLError) and "ALERT" in str(err).upper(), repr(err)


def test_python_client_certificate_is_checked_by_s_server(tls_certs, s_servers):
    c = tls_certs
    srv = s_servers("-cert", c.server, "-key", c.server_key, "-rev", "-Verify", "1", "-CAfile", c.client_ca,
                    "-verify_return_error")
    conn = tls_connect(srv.addr, client_context(ca=c.ca, cert=c.client, key=c.client_key))
    try:
        assert conn.request("mtls") == b"sltm"
    finally:
        conn.close()


def test_client_hello_bytes_are_a_handshake_record():
    hello = client_hello_bytes()
    assert hello[0] == 0x16 and hello[1] == 0x03, hello[:5]  # handshake record, TLS
    assert hello[5] == 0x01, hello[:6]  # ClientHello
    assert len(hello) == 5 + int.from_bytes(hello[3:5], "big")


# ---- openssl s_client against the Python server -----------------------------------------------


def test_s_client_talks_to_the_python_server(tls_certs, py_tls_server):
    c = tls_certs
    srv = py_tls_server(c.server, c.server_key)
    cp = s_client(srv.addr, "-CAfile", c.ca, "-verify_return_error", "-verify_ip", "127.0.0.1", "-quiet",
                  input=b"hello\nQUIT\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: hello\nGoodbye!\n"
    rec = srv.wait_done(0)
    assert rec["error"] is None and rec["version"] == "TLSv1.3" and rec["sni"] is None, rec
    assert rec["data"] == b"hello\nQUIT\n"


def test_s_client_brief_reports_the_version(tls_certs, py_tls_server):
    c = tls_certs
    srv = py_tls_server(c.server, c.server_key)
    cp = s_client(srv.addr, "-CAfile", c.ca, "-verify_return_error", "-servername", "localhost", "-brief",
                  "-ign_eof", input=b"QUIT\n")
    assert cp.returncode == 0, cp.stderr
    assert b"Protocol version: TLSv1.3" in cp.stderr, cp.stderr
    assert b"Verification: OK" in cp.stderr, cp.stderr
    assert srv.wait_done(0)["sni"] == "localhost"


def test_s_client_refuses_an_untrusted_python_server(tls_certs, py_tls_server):
    c = tls_certs
    srv = py_tls_server(c.untrusted, c.untrusted_key)
    cp = s_client(srv.addr, "-CAfile", c.ca, "-verify_return_error", "-quiet", input=b"hello\nQUIT\n")
    assert cp.returncode != 0
    assert b"certificate verify failed" in cp.stderr, cp.stderr
    rec = srv.wait_done(0)
    assert rec["error"] is not None and rec["data"] == b"", rec


def test_python_server_requires_a_client_certificate_from_its_ca(tls_certs, py_tls_server):
    c = tls_certs
    srv = py_tls_server(c.server, c.server_key, client_ca=c.client_ca)
    conn = tls_connect(srv.addr, client_context(ca=c.ca, cert=c.client, key=c.client_key))
    try:
        assert conn.request("hi") == b"ECHO: hi"
    finally:
        conn.close()
    assert srv.wait_done(0)["peer_cert"] == {"commonName": "tcpkit-test-client"}
    for i, cert in ((1, None), (2, "other-client")):
        ctx = client_context(ca=c.ca, cert=c.pem(cert) if cert else None, key=c.key(cert) if cert else None)
        try:
            conn = tls_connect(srv.addr, ctx)
        except (ssl.SSLError, OSError):
            pass  # TLS 1.3: usually the alert comes only after the client finished
        else:
            with pytest.raises((ssl.SSLError, OSError, EOFError)):
                conn.send(b"leak\n")
                conn.recv_line()
            conn.close()
        rec = srv.wait_done(i)
        assert rec["error"] is not None and rec["data"] == b"", rec
