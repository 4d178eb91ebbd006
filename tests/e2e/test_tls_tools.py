"""tcpkit bench and tcpkit scan --banner over TLS, against a TLS
echo-server on loopback: exact request counts checked against the server's
STATS (read over TLS by Python's ssl module), the banner read after the
handshake, and a failed verification reported as a TLS error. No timing
assertions."""

import json

from conftest import fmt_addr, run_tcpkit
from tls_helpers import client_context, stats_over_tls, tls_args


def tls_echo(server_factory, certs, *args, cert="server"):
    return server_factory(["--listen", "127.0.0.1:0"] + certs.server_args(cert) + list(args))


def bench_json(server, certs, *args, timeout=120):
    cp = run_tcpkit(["bench", fmt_addr(server.addr)] + tls_args(certs) + list(args) + ["--json"],
                    timeout=timeout)
    assert cp.returncode == 0, cp.stderr.decode()
    return json.loads(cp.stdout.decode())


def test_bench_over_tls_counts_match_the_servers_stats(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    r = bench_json(srv, tls_certs, "-c", "4", "-t", "2", "-p", "3", "--requests", "200")
    assert (r["sent"], r["received"], r["errors"]) == (200, 200, 0), r
    s = stats_over_tls(srv.addr, client_context(ca=tls_certs.ca))
    assert int(s["messages"]) == 200, s
    # bytes_in counts what the service read: the plaintext, not the records
    assert int(s["bytes_in"]) == 200 * 64 + len(b"STATS\n"), s


def test_bench_open_loop_over_tls(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    r = bench_json(srv, tls_certs, "-c", "3", "-t", "1", "--rate", "2000", "--requests", "300")
    assert r["mode"] == "open"
    assert (r["sent"], r["received"], r["errors"]) == (300, 300, 0), r
    assert int(stats_over_tls(srv.addr, client_context(ca=tls_certs.ca))["messages"]) == 300


def test_bench_connect_mode_does_a_handshake_per_request(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs)
    r = bench_json(srv, tls_certs, "-m", "connect", "-c", "4", "-t", "1", "--requests", "60")
    assert (r["sent"], r["received"], r["errors"]) == (60, 60, 0), r
    s = stats_over_tls(srv.addr, client_context(ca=tls_certs.ca))
    assert int(s["messages"]) == 60, s
    assert int(s["conns_total"]) == 60 + 1, s  # one connection per request, and ours


def test_bench_refuses_an_untrusted_server(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs, cert="untrusted")
    cp = run_tcpkit(["bench", fmt_addr(srv.addr)] + tls_args(tls_certs) + ["-c", "2", "--requests", "10"])
    assert cp.returncode == 1, cp.stderr
    err = cp.stderr.decode()
    assert any("tls:" in line and "certificate verify failed" in line for line in err.splitlines()), err
    s = stats_over_tls(srv.addr, client_context(verify=False))
    assert int(s["messages"]) == 0, s


def scan_ports(*args):
    cp = run_tcpkit(["scan"] + [str(a) for a in args] + ["--json"], timeout=60)
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout.decode())
    assert len(doc["hosts"]) == 1, doc
    return {p["port"]: p for p in doc["hosts"][0]["ports"]}


def test_scan_reads_the_banner_after_the_handshake(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs, "--banner", "Welcome over TLS")
    port = srv.addr[1]
    ports = scan_ports("127.0.0.1", "-p", port, "--banner", "--banner-timeout", "5", *tls_args(tls_certs))
    assert ports[port]["state"] == "open", ports
    assert ports[port].get("banner") == "Welcome over TLS\\n", ports[port]
    # in plaintext the port is open but silent: the server waits for a ClientHello
    ports = scan_ports("127.0.0.1", "-p", port, "--banner", "--banner-timeout", "0.5")
    assert ports[port]["state"] == "open" and "banner" not in ports[port], ports[port]


def test_scan_banner_with_tls_insecure_from_an_untrusted_server(server_factory, tls_certs):
    srv = tls_echo(server_factory, tls_certs, "--banner", "untrusted hello", cert="untrusted")
    port = srv.addr[1]
    ports = scan_ports("127.0.0.1", "-p", port, "--banner", "--banner-timeout", "5", "--tls-insecure")
    assert ports[port].get("banner") == "untrusted hello\\n", ports[port]
