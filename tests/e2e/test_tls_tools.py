"""tcpkit bench and tcpkit scan over TLS, black-box.

bench --tls runs against TLS echo servers on loopback: its request counts
must equal what the server (or a Python TLS peer) saw, in line, length,
json and connect mode, and chat and file mode must complete; an untrusted
server makes it fail with the TLS reason. scan --tls runs only inside a
network namespace made for the test (`unshare -rn`, as in test_scan.py),
against servers started there: the host's loopback is never port-scanned.

The certificates are the shared throwaway test PKI (scripts/certs.sh, the
tls_certs fixture): the CA, a server certificate it signs (SAN
DNS:localhost, IP:127.0.0.1) and one with the same names from a CA nobody
trusts. No sleeps, no timing assertions."""

import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading

import pytest

from conftest import assert_no_sanitizer_reports, fmt_addr, require_binary, run_tcpkit, server_env

class Certs:
    """The shared test PKI (scripts/certs.sh, the tls_certs fixture) as these
    tests use it: the CA, the server pair, and a "rogue" pair with the right
    names from a CA nobody trusts."""

    def __init__(self, pki):
        self.dir = pki.dir
        self.ca = pki.ca
        self.server = pki.server
        self.server_key = pki.server_key
        self.rogue = pki.untrusted
        self.rogue_key = pki.untrusted_key

    def server_args(self, rogue=False):
        if rogue:
            return ["--tls-cert", self.rogue, "--tls-key", self.rogue_key]
        return ["--tls-cert", self.server, "--tls-key", self.server_key]

    def client_args(self):
        return ["--tls", "--tls-ca", self.ca]


@pytest.fixture(scope="session")
def tool_certs(tls_certs):
    return Certs(tls_certs)


def client_ctx(certs):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=certs.ca)
    return ctx


def tls_request(addr, certs, line):
    """One request line over TLS -> the reply line."""
    raw = socket.create_connection(addr, timeout=10)
    with client_ctx(certs).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(line + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, f"EOF before the reply to {line!r}: {buf!r}"
            buf += chunk
    return buf


def tls_stats(server, certs):
    line = tls_request(server.addr, certs, b"STATS").decode()
    return dict(re.findall(r"(\w+)=(\S+)", line))


def tls_json_stats(server, certs):
    r = json.loads(tls_request(server.addr, certs, b'{"type":"STATS","id":1}'))
    assert r.get("type") == "STATS", r
    return r["payload"]


def bench_json(server, certs, *args, ok=True):
    cp = run_tcpkit(["bench", fmt_addr(server.addr)] + certs.client_args() + list(args) +
                    ["--json"], timeout=120)
    if ok:
        assert cp.returncode == 0, cp.stderr.decode()
    return cp.returncode, json.loads(cp.stdout.decode()), cp.stderr.decode()


@pytest.fixture
def tls_server(server_factory, tool_certs):
    def start(*args, command="echo-server", rogue=False):
        return server_factory(["--listen", "127.0.0.1:0"] + tool_certs.server_args(rogue) +
                              list(args), command=command)
    return start


# ---- bench --------------------------------------------------------------------------


def test_bench_line_mode_counts_match_the_servers_stats(tls_server, tool_certs):
    srv = tls_server()
    _, r, _ = bench_json(srv, tool_certs, "-c", "4", "-t", "2", "-p", "3", "--requests", "2000")
    assert (r["sent"], r["received"], r["errors"]) == (2000, 2000, 0), r
    assert r["tls_version"].startswith("TLSv1."), r
    assert r["tls_failures"] == 0 and r["tls_error"] is None, r
    s = tls_stats(srv, tool_certs)
    assert int(s["messages"]) == 2000, s
    # The plaintext the service read: every request line, and the STATS line.
    assert int(s["bytes_in"]) == 2000 * 64 + len(b"STATS\n"), s


def test_bench_open_loop_counts_match_the_servers_stats(tls_server, tool_certs):
    srv = tls_server()
    _, r, _ = bench_json(srv, tool_certs, "-c", "3", "-t", "2", "--rate", "2000",
                         "--requests", "600")
    assert r["mode"] == "open"
    assert (r["sent"], r["received"], r["errors"]) == (600, 600, 0), r
    assert int(tls_stats(srv, tool_certs)["messages"]) == 600


def test_bench_duration_run_ends_in_step(tls_server, tool_certs):
    # Replies still in flight at the end are read through TLS before close.
    srv = tls_server()
    _, r, _ = bench_json(srv, tool_certs, "-c", "3", "-t", "2", "-p", "4", "-d", "0.3")
    assert r["errors"] == 0 and r["sent"] == r["received"], r
    assert int(tls_stats(srv, tool_certs)["messages"]) == r["received"]


def test_bench_json_mode_counts_match_the_servers_stats(tls_server, tool_certs):
    srv = tls_server("--framing", "json")
    _, r, _ = bench_json(srv, tool_certs, "--mode", "json", "-c", "4", "-t", "2", "-p", "3",
                         "--requests", "1500")
    assert r["request_mode"] == "json"
    assert (r["sent"], r["received"], r["errors"]) == (1500, 1500, 0), r
    assert tls_json_stats(srv, tool_certs)["messages"] == 1500


def test_bench_connect_mode_does_one_handshake_per_request(tls_server, tool_certs):
    srv = tls_server()
    _, r, _ = bench_json(srv, tool_certs, "--mode", "connect", "-c", "4", "-t", "2",
                         "--requests", "120")
    assert (r["sent"], r["received"], r["connected"], r["errors"]) == (120, 120, 120, 0), r
    s = tls_stats(srv, tool_certs)
    assert int(s["conns_total"]) == 120 + 1, s  # and the STATS connection
    assert int(s["messages"]) == 120, s


def test_bench_length_mode_against_the_echo_server(tls_server, tool_certs):
    # Frames larger than a TLS record (16 KiB) and a deep pipeline: writes
    # return -EAGAIN and are offered again, replies span many records.
    srv = tls_server("--framing", "length")
    _, r, _ = bench_json(srv, tool_certs, "--mode", "length", "-s", "40000", "-c", "3", "-t", "2",
                         "-p", "16", "--requests", "600")
    assert r["request_mode"] == "length"
    assert (r["sent"], r["received"], r["errors"]) == (600, 600, 0), r
    assert r["bytes_out"] == 600 * 40004, r


class TlsFrameCounter:
    """A TLS length-framing echo peer that counts the frames it answers (the
    echo server's length framing has no STATS)."""

    def __init__(self, certs):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certs.server, certs.server_key)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.addr = self.lsock.getsockname()
        self.frames = 0
        self.lock = threading.Lock()
        self.socks = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while True:
            try:
                raw, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.socks.append(raw)
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, raw):
        raw.settimeout(30)
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        buf = b""
        with s:
            while True:
                try:
                    data = s.recv(65536)
                except (ssl.SSLError, OSError):
                    return
                if not data:
                    return
                buf += data
                out = []
                while len(buf) >= 4:
                    (n,) = struct.unpack(">I", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    out.append(struct.pack(">I", n) + buf[4:4 + n])
                    buf = buf[4 + n:]
                with self.lock:
                    self.frames += len(out)
                if out:
                    s.sendall(b"".join(out))

    def close(self):
        self.lsock.close()
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(10)
        for s in socks:
            s.close()


def test_bench_length_mode_sends_exactly_n_frames(tool_certs):
    peer = TlsFrameCounter(tool_certs)
    try:
        cp = run_tcpkit(["bench", fmt_addr(peer.addr)] + tool_certs.client_args() +
                        ["--mode", "length", "-c", "3", "-t", "2", "-p", "4", "-s", "100",
                         "--requests", "900", "--json"], timeout=120)
        assert cp.returncode == 0, cp.stderr.decode()
        r = json.loads(cp.stdout.decode())
        assert (r["sent"], r["received"], r["errors"]) == (900, 900, 0), r
        with peer.lock:
            assert peer.frames == 900
    finally:
        peer.close()


def test_bench_chat_mode_delivers_every_message(tls_server, tool_certs):
    srv = tls_server("--ephemeral", "--mode", "json", "--flood-rate", "0", command="chat-server")
    _, r, _ = bench_json(srv, tool_certs, "--mode", "chat", "--receivers", "3", "--senders", "2",
                         "--requests", "100")
    assert r["connected"] == 5 and r["errors"] == 0, r
    assert r["sent"] == 100
    assert r["per_receiver_min"] == r["per_receiver_max"] == 100, r
    assert r["tls_version"].startswith("TLSv1."), r


def test_bench_file_mode_downloads_exact_bytes(tls_server, tool_certs, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.bin").write_bytes(os.urandom(100000))
    srv = tls_server("--root", str(root), command="file-server")
    _, r, _ = bench_json(srv, tool_certs, "--mode", "file", "--file", "f.bin", "-c", "2", "-t", "2",
                         "--requests", "20")
    assert (r["sent"], r["received"], r["errors"]) == (20, 20, 0), r
    assert r["file_bytes"] == 20 * 100000, r


@pytest.mark.parametrize("mode", ["line", "connect"])
def test_bench_refuses_an_untrusted_server(tls_server, tool_certs, mode):
    srv = tls_server(rogue=True)
    rc, r, err = bench_json(srv, tool_certs, "--mode", mode, "-c", "2", "--requests", "10", ok=False)
    assert rc == 1, err
    assert r["received"] == 0 and r["connected"] == 0, r
    assert r["tls_failures"] >= 2 and r["errors"] >= 2, r
    assert "certificate verify failed" in r["tls_error"], r
    lines = [ln for ln in err.splitlines() if "tls: certificate verify failed" in ln]
    assert len(lines) == 1, err  # the reason once, not once per connection
    # Nothing reached the service: a trusting client sees no message.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(srv.addr, timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"STATS\n")
        line = s.recv(4096).decode()
    assert "messages=0" in line, line


def test_bench_text_output_names_the_tls_version(tls_server, tool_certs):
    srv = tls_server()
    cp = run_tcpkit(["bench", fmt_addr(srv.addr)] + tool_certs.client_args() +
                    ["-c", "2", "--requests", "50"], timeout=60)
    assert cp.returncode == 0, cp.stderr.decode()
    assert re.search(r"^tls TLSv1\.[23]$", cp.stdout.decode(), re.M), cp.stdout.decode()


# ---- scan, inside a network namespace -----------------------------------------------

# Runs inside the namespace: brings lo up, starts the servers of the spec
# (tcpkit commands, whose port it reads from their "listening on" line, and
# plain Python listeners that never accept), runs each command, stops the
# servers it started and prints one JSON document with the results.
NS_HELPER = r"""
import json, re, signal, socket, subprocess, sys
spec = json.loads(sys.argv[1])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
procs, ports, silent = [], {}, []
try:
    for name, argv in spec["servers"].items():
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        procs.append(p)
        line = p.stdout.readline().decode()
        m = re.search(r"listening on \S*:(\d+)", line)
        if not m:
            raise SystemExit(f"{argv}: no listening line: {line!r} {p.stderr.read()!r}")
        ports[name] = int(m.group(1))
    for name in spec.get("silent", []):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        silent.append(s)
        ports[name] = s.getsockname()[1]
    out = []
    for cmd in spec["cmds"]:
        argv = [re.sub(r"@(\w+)", lambda m: str(ports[m.group(1)]), a) for a in cmd]
        cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        out.append({"rc": cp.returncode, "stdout": cp.stdout.decode("utf-8", "replace"),
                    "stderr": cp.stderr.decode("utf-8", "replace")})
finally:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    errs = []
    for p in procs:
        try:
            errs.append(p.communicate(timeout=15)[1].decode("utf-8", "replace"))
        except subprocess.TimeoutExpired:
            p.kill()
            errs.append(p.communicate(timeout=10)[1].decode("utf-8", "replace"))
print(json.dumps({"ports": ports, "results": out, "server_stderr": errs}))
"""


def in_namespace(servers, cmds, silent=()):
    """Runs the servers ({name: tcpkit args}) and the commands (argv lists
    where "@name" stands for a server's port) in a fresh network namespace."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    binary = require_binary()
    spec = {
        "servers": {k: [binary] + v for k, v in servers.items()},
        "silent": list(silent),
        "cmds": [[binary] + [str(a) for a in c] for c in cmds],
    }
    cp = subprocess.run(["unshare", "-rn", sys.executable, "-c", NS_HELPER, json.dumps(spec)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
                        env=server_env())
    if cp.returncode != 0 and b"unshare" in cp.stderr:
        pytest.skip(f"cannot create a network namespace: {cp.stderr!r}")
    assert cp.returncode == 0, cp.stderr.decode()
    doc = json.loads(cp.stdout)
    for cmd, r in zip(cmds, doc["results"]):
        assert_no_sanitizer_reports(r["stderr"], " ".join(str(a) for a in cmd))
    for err in doc["server_stderr"]:
        assert_no_sanitizer_reports(err, "a server in the namespace")
    return doc["ports"], doc["results"]


def scan_ports(result):
    assert result["rc"] == 0, result["stderr"]
    doc = json.loads(result["stdout"])
    assert len(doc["hosts"]) == 1, doc
    return {p["port"]: p for p in doc["hosts"][0]["ports"]}


def servers(certs):
    return {
        "tls": ["echo-server", "--listen", "127.0.0.1:0", "-t", "1", "--banner",
                "Welcome over TLS"] + certs.server_args(),
        "rogue": ["echo-server", "--listen", "127.0.0.1:0", "-t", "1", "--banner",
                  "rogue hello"] + certs.server_args(rogue=True),
        "plain": ["echo-server", "--listen", "127.0.0.1:0", "-t", "1", "--banner", "plain hello"],
    }


PORTS = "@tls,@rogue,@plain,@silent"


def test_scan_banner_through_tls(tool_certs):
    ca = ["--tls", "--tls-ca", tool_certs.ca]
    ports, res = in_namespace(servers(tool_certs), [
        ["scan", "127.0.0.1", "-p", PORTS, "--banner", "--timeout", "5", "--banner-timeout", "5",
         "--json"] + ca,
        ["scan", "127.0.0.1", "-p", "@tls", "--banner", "--banner-timeout", "5", "--json"],
    ], silent=["silent"])
    got = scan_ports(res[0])
    assert {p: got[p]["state"] for p in got} == {ports[k]: "open" for k in ("tls", "rogue", "plain",
                                                                            "silent")}
    t = got[ports["tls"]]
    assert t.get("banner") == "Welcome over TLS\\n", t
    assert t["tls"]["version"].startswith("TLSv1.") and t["tls"]["verified"] is True, t
    assert "error" not in t["tls"] and "verify_error" not in t["tls"], t
    # A certificate that does not verify is reported; the banner is still read.
    r = got[ports["rogue"]]
    assert r.get("banner") == "rogue hello\\n", r
    assert r["tls"]["version"].startswith("TLSv1.") and r["tls"]["verified"] is False, r
    assert "local issuer" in r["tls"]["verify_error"], r  # from a CA nobody trusts
    # A plain-text port: open, no TLS, and the reason.
    p = got[ports["plain"]]
    assert p["tls"]["version"] is None and p["tls"]["error"].startswith("handshake: "), p
    assert "banner" not in p, p
    # A port that never answers the ClientHello: bounded by --timeout.
    s = got[ports["silent"]]
    assert s["tls"] == {"version": None, "cipher": None, "verified": False,
                        "error": "handshake timed out"}, s
    # Without --tls the TLS port is open and silent: it waits for a ClientHello.
    plain = scan_ports(res[1])[ports["tls"]]
    assert plain["state"] == "open" and "banner" not in plain and "tls" not in plain, plain


def test_scan_tls_without_banner_is_a_handshake_probe(tool_certs):
    ports, res = in_namespace(servers(tool_certs), [
        ["scan", "127.0.0.1", "-p", PORTS, "--tls-insecure", "--timeout", "5", "--json"],
    ], silent=["silent"])
    got = scan_ports(res[0])
    for k in ("tls", "rogue"):
        # --tls-insecure: nothing checked, so nothing reported as unverified.
        assert got[ports[k]]["tls"]["version"].startswith("TLSv1."), got[ports[k]]
        assert got[ports[k]]["tls"]["verified"] is False, got[ports[k]]
        assert "verify_error" not in got[ports[k]]["tls"], got[ports[k]]
        assert "banner" not in got[ports[k]], got[ports[k]]
    assert got[ports["plain"]]["tls"]["error"].startswith("handshake: "), got[ports["plain"]]


def test_scan_tls_table_and_grepable_carry_the_tls_field(tool_certs):
    ca = ["--tls-ca", tool_certs.ca]
    ports, res = in_namespace(servers(tool_certs), [
        ["scan", "127.0.0.1", "-p", "@tls,@rogue,@plain", "--banner", "--banner-timeout", "5",
         "--timeout", "5"] + ca,
        ["scan", "127.0.0.1", "-p", "@tls,@rogue,@plain", "--timeout", "5", "--grepable"] + ca,
    ])
    for r in res:
        assert r["rc"] == 0, r["stderr"]
    table = res[0]["stdout"]
    assert re.search(r"^PORT +STATE +SERVICE +TLS +BANNER$", table, re.M), table
    assert re.search(rf"^{ports['tls']}/tcp +open +\S+ +TLSv1\.[23] +Welcome over TLS\\n$", table,
                     re.M), table
    assert re.search(rf"^{ports['plain']}/tcp +open +\S+ +- *$\n +tls: handshake: ", table,
                     re.M), table
    assert re.search(rf"^{ports['rogue']}/tcp .*\n +tls: not verified: .*local issuer", table, re.M), table
    grep = res[1]["stdout"]
    assert re.search(rf"\b{ports['tls']}/open/[^/,]*/TLSv1\.[23](,|$)", grep, re.M), grep
    assert re.search(rf"\b{ports['rogue']}/open/[^/,]*/TLSv1\.[23]-unverified\b", grep), grep
    assert re.search(rf"\b{ports['plain']}/open/[^/,]*/none\b", grep), grep
