"""tcpkit scan, black-box. Every scan runs inside a network namespace made for
the test (`unshare -rn`), against listeners the test opens there; the host's
own loopback is never scanned. Results are compared with `nmap -sT` run in
the same namespace."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import assert_no_sanitizer_reports, require_binary, server_env

# Runs inside the namespace: brings lo up, opens the listeners, then runs each
# command in turn and prints one JSON document with their results.
NS_HELPER = r"""
import json, os, resource, select, socket, subprocess, sys, threading, time
spec = json.loads(sys.argv[1])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
listeners = {}
for host, port, banner in spec["listen"]:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1024)
    listeners[s.fileno()] = (s, banner.encode() if banner else None)
# Open ports that never accept nor speak: the kernel completes the handshake
# and the connection waits in the accept queue.
silent = []
for host, port in spec.get("silent", []):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, port))
    s.listen(1024)
    silent.append(s)
accepted = [0]
def serve():
    while True:
        r, _, _ = select.select([v[0] for v in listeners.values()], [], [], 0.2)
        for ls in r:
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            accepted[0] += 1
            banner = listeners[ls.fileno()][1]
            try:
                if banner:
                    c.sendall(banner)
            except OSError:
                pass
            c.close()
threading.Thread(target=serve, daemon=True).start()
out = []
for cmd in spec["cmds"]:
    nofile = cmd.get("nofile")
    def limit(n=nofile):
        if n:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    before = accepted[0]
    t0 = time.monotonic()
    cp = subprocess.run(cmd["argv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        preexec_fn=limit, timeout=cmd.get("timeout", 120))
    out.append({"rc": cp.returncode, "stdout": cp.stdout.decode("utf-8", "replace"),
                "stderr": cp.stderr.decode("utf-8", "replace"),
                "elapsed": time.monotonic() - t0, "accepted": accepted[0] - before})
print(json.dumps(out))
"""

OPEN4 = [22, 80, 443, 3306, 8080, 31337, 40001]
OPEN6 = [22, 8443, 40002]


def in_namespace(cmds, listen=None, silent=()):
    """Runs cmds (each a dict with argv and optional nofile) in a fresh
    namespace holding the listeners (and silent ones, which never accept);
    returns their results."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    if listen is None:
        listen = [("127.0.0.1", p, None) for p in OPEN4] + [("::1", p, None) for p in OPEN6]
    spec = json.dumps({"listen": listen, "silent": list(silent), "cmds": cmds})
    cp = subprocess.run(
        ["unshare", "-rn", sys.executable, "-c", NS_HELPER, spec],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=300,
        env=server_env(),
    )
    if cp.returncode != 0 and b"unshare" in cp.stderr:
        pytest.skip(f"cannot create a network namespace: {cp.stderr!r}")
    assert cp.returncode == 0, cp.stderr.decode()
    results = json.loads(cp.stdout)
    for cmd, r in zip(cmds, results):
        if cmd["argv"][0] == require_binary():
            assert_no_sanitizer_reports(r["stderr"], " ".join(cmd["argv"]))
    return results


def scan(*args, **kw):
    d = {"argv": [require_binary(), "scan"] + [str(a) for a in args]}
    d.update(kw)
    return d


def ports_by_state(doc, address):
    host = next(h for h in doc["hosts"] if h["address"] == address)
    states = {}
    for p in host["ports"]:
        states.setdefault(p["state"], set()).add(p["port"])
    return states


def port_list(spec):
    out = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def parse_nmap_grepable(text, requested):
    """open, closed and filtered sets from `nmap -oG -`; ports nmap leaves
    out ("Ignored State: closed (N)") take the ignored state."""
    line = next(ln for ln in text.splitlines() if "Ports:" in ln)
    ports_part = line.split("Ports:", 1)[1].split("\t")[0]
    sets = {"open": set(), "closed": set(), "filtered": set()}
    for entry in ports_part.split(","):
        fields = entry.strip().split("/")
        sets[fields[1]].add(int(fields[0]))
    listed = set().union(*sets.values())
    if "Ignored State:" in line:
        ignored = line.split("Ignored State:", 1)[1].strip().split()[0]
        sets[ignored] |= set(requested) - listed
    return sets


def require_nmap():
    if shutil.which("nmap") is None:
        pytest.skip("nmap not installed (apt-get install nmap)")


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_scan_matches_nmap(address):
    require_nmap()
    ports = "1-3000,8000-8100,8443,31000-32000,40000-40100"
    nmap = ["nmap", "-sT", "-Pn", "-n", "-T4", "-oG", "-", "-p", ports]
    if ":" in address:
        nmap.append("-6")
    r_scan, r_nmap = in_namespace(
        [scan(address, "-p", ports, "--json"), {"argv": nmap + [address]}]
    )
    assert r_scan["rc"] == 0, r_scan["stderr"]
    assert r_nmap["rc"] == 0, r_nmap["stderr"]
    ours = ports_by_state(json.loads(r_scan["stdout"]), address)
    theirs = parse_nmap_grepable(r_nmap["stdout"], port_list(ports))
    want_open = set(OPEN4 if address == "127.0.0.1" else OPEN6) & set(port_list(ports))
    assert ours.get("open", set()) == want_open
    assert ours.get("open", set()) == theirs["open"]
    assert ours.get("closed", set()) == theirs["closed"]
    assert ours.get("filtered", set()) == theirs["filtered"] == set()


def test_scan_ipv6_literal_and_default_ports():
    (r,) = in_namespace([scan("::1", "--json")])
    assert r["rc"] == 0, r["stderr"]
    doc = json.loads(r["stdout"])
    states = ports_by_state(doc, "::1")
    # 22 and 8443 are in the default list, 40002 is not.
    assert states["open"] == {22, 8443}
    assert len(doc["hosts"][0]["ports"]) == 100


def test_scan_json_shape():
    (r,) = in_namespace([scan("127.0.0.1", "localhost", "-p", "22,23,80", "--json")])
    assert r["rc"] == 0, r["stderr"]
    doc = json.loads(r["stdout"])
    assert len(doc["hosts"]) == 2
    assert doc["hosts"][1]["name"] == "localhost"
    for host in doc["hosts"]:
        assert [p["port"] for p in host["ports"]] == [22, 23, 80]
        for p in host["ports"]:
            assert set(p) >= {"port", "state", "service"}
            assert p["state"] in ("open", "closed", "filtered")
        assert [p["state"] for p in host["ports"]] == ["open", "closed", "open"]
    # Names come from the system's services database.
    assert doc["hosts"][0]["ports"][0]["service"] == "ssh"
    assert doc["attempts"] >= 6


def test_scan_grepable_line_per_host():
    r, r_all = in_namespace(
        [
            scan("127.0.0.1", "::1", "-p", "22,23,80", "--grepable"),
            scan("127.0.0.1", "-p", "22,23", "--grepable", "--all"),
        ]
    )
    assert r["rc"] == 0, r["stderr"]
    assert r["stdout"].splitlines() == [
        "Host: 127.0.0.1 Ports: 22/open/ssh, 80/open/http",
        "Host: ::1 Ports: 22/open/ssh",
    ]
    assert r_all["stdout"] == "Host: 127.0.0.1 Ports: 22/open/ssh, 23/closed/telnet\n"


def test_scan_table_shows_open_unless_all():
    r, r_all = in_namespace(
        [scan("127.0.0.1", "-p", "20-25"), scan("127.0.0.1", "-p", "20-25", "--all")]
    )
    assert r["rc"] == 0 and r_all["rc"] == 0
    lines = r["stdout"].splitlines()
    assert lines[0] == "Scan report for 127.0.0.1"
    rows = [ln.split() for ln in lines if "/tcp" in ln]
    assert rows == [["22/tcp", "open", "ssh"]]
    assert "Not shown: 5 closed, 0 filtered" in r["stdout"]
    rows_all = [ln.split()[:2] for ln in r_all["stdout"].splitlines() if "/tcp" in ln]
    assert rows_all == [[f"{p}/tcp", "open" if p == 22 else "closed"] for p in range(20, 26)]
    # Not a terminal: no progress line.
    assert "ETA" not in r["stderr"]


def test_scan_banner_read_and_escaped():
    listen = [
        ("127.0.0.1", 2222, "SSH-2.0-tcpkit_test\r\n"),
        ("127.0.0.1", 2223, None),
        ("127.0.0.1", 2224, "bin\x01\x7f" + "x" * 300),
    ]
    r, r_table = in_namespace(
        [
            scan("127.0.0.1", "-p", "2222-2225", "--banner", "--banner-timeout", "0.5", "--json"),
            scan("127.0.0.1", "-p", "2222", "--banner"),
        ],
        listen=listen,
    )
    assert r["rc"] == 0, r["stderr"]
    ports = {p["port"]: p for p in json.loads(r["stdout"])["hosts"][0]["ports"]}
    assert ports[2222]["banner"] == "SSH-2.0-tcpkit_test\\r\\n"
    assert "banner" not in ports[2223]  # accepted, said nothing
    assert ports[2224]["banner"] == "bin\\x01\\x7f" + "x" * 123  # at most 128 bytes
    assert ports[2225]["state"] == "closed"
    assert "SSH-2.0-tcpkit_test\\r\\n" in r_table["stdout"]


def test_scan_rate_is_a_lower_bound_on_time():
    # 60 connects at 100/s: the bucket lets a tenth of a second's worth go at
    # once, so the rest needs at least about 0.5 s.
    (r,) = in_namespace([scan("127.0.0.1", "-p", "1-60", "--rate", "100", "--json")])
    assert r["rc"] == 0, r["stderr"]
    doc = json.loads(r["stdout"])
    assert doc["attempts"] == 60
    assert doc["elapsed_s"] >= 0.45, doc["elapsed_s"]
    assert ports_by_state(doc, "127.0.0.1")["open"] == {22}


def test_scan_small_concurrency_completes_correctly():
    r1, r2 = in_namespace(
        [
            scan("127.0.0.1", "-p", "1-2000,8080,31337", "-c", "1", "--json"),
            scan("127.0.0.1", "-p", "1-2000,8080,31337", "-c", "3", "--grepable"),
        ]
    )
    assert r1["rc"] == 0, r1["stderr"]
    states = ports_by_state(json.loads(r1["stdout"]), "127.0.0.1")
    assert states["open"] == {22, 80, 443, 8080, 31337}
    assert len(states["closed"]) == 2002 - 5
    assert r2["stdout"] == (
        "Host: 127.0.0.1 Ports: 22/open/ssh, 80/open/http, 443/open/https, "
        "8080/open/http-alt, 31337/open/\n"
    )


def test_scan_descriptor_exhaustion_is_never_closed():
    # 24 descriptors and 200 connects asked for. A closed loopback port
    # answers inside connect() and gives its socket back at once, so what
    # holds descriptors here are 40 open ports that never speak: with
    # --banner each keeps its socket until the banner timeout, and socket()
    # fails with EMFILE long before the cap. Those ports are retried after a
    # back-off and end with their true state, never "closed".
    silent = list(range(5000, 5040))
    ports = "1-1500,5000-5039,8080,31337,40001"
    (r,) = in_namespace(
        [
            scan(
                "127.0.0.1", "-p", ports, "-c", "200", "--banner", "--banner-timeout", "0.3",
                "--json", nofile=24,
            )
        ],
        silent=[("127.0.0.1", p) for p in silent],
    )
    assert r["rc"] == 0, r["stderr"]
    doc = json.loads(r["stdout"])
    states = ports_by_state(doc, "127.0.0.1")
    assert states["open"] == {22, 80, 443, 8080, 31337, 40001} | set(silent)
    assert len(states["closed"]) == 1543 - 46
    assert doc["local_retries"] > 0


def test_scan_mixed_families_each_port_once():
    # Refused sockets are kept, one per family, for the next probe: hosts of
    # both families in turn must neither mix them up nor need extra attempts.
    ports = "1-2000,8443,40001-40002"
    (r,) = in_namespace([scan("127.0.0.1", "::1", "127.0.0.2", "::1", "-p", ports, "--json")])
    assert r["rc"] == 0, r["stderr"]
    doc = json.loads(r["stdout"])
    n = len(port_list(ports))
    assert doc["attempts"] == 4 * n
    assert doc["local_retries"] == 0
    want = {
        "127.0.0.1": {22, 80, 443, 40001},
        "::1": {22, 8443, 40002},
        "127.0.0.2": set(),
    }
    for host in doc["hosts"]:
        states = {}
        for p in host["ports"]:
            states.setdefault(p["state"], set()).add(p["port"])
        assert states.get("open", set()) == want[host["address"]]
        assert len(states["closed"]) == n - len(want[host["address"]])
        assert "filtered" not in states


def test_scan_full_range_matches_nmap():
    # The whole range, as the benchmark runs it (bench/scan.sh): the same
    # open and closed sets as nmap -T5, ports in the ephemeral range included.
    require_nmap()
    nmap = ["nmap", "-sT", "-Pn", "-n", "-T5", "-oG", "-", "-p-", "127.0.0.1"]
    r_scan, r_nmap = in_namespace([scan("127.0.0.1", "-p", "-", "--json"), {"argv": nmap}])
    assert r_scan["rc"] == 0, r_scan["stderr"]
    assert r_nmap["rc"] == 0, r_nmap["stderr"]
    ours = ports_by_state(json.loads(r_scan["stdout"]), "127.0.0.1")
    theirs = parse_nmap_grepable(r_nmap["stdout"], range(1, 65536))
    assert ours["open"] == set(OPEN4) == theirs["open"]
    assert ours["closed"] == theirs["closed"]
    assert len(ours["closed"]) == 65535 - len(OPEN4)
    assert "filtered" not in ours and theirs["filtered"] == set()


def test_scan_default_concurrency_fits_descriptor_limit():
    (r,) = in_namespace([scan("127.0.0.1", "-p", "1-500", "--json", nofile=80)])
    assert r["rc"] == 0, r["stderr"]
    doc = json.loads(r["stdout"])
    assert ports_by_state(doc, "127.0.0.1")["open"] == {22, 80, 443}
    assert doc["local_retries"] == 0


def test_scan_cidr_range():
    (r,) = in_namespace([scan("127.0.0.0/30", "-p", "22,80", "--json")])
    assert r["rc"] == 0, r["stderr"]
    doc = json.loads(r["stdout"])
    assert [h["address"] for h in doc["hosts"]] == [
        "127.0.0.0",
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
    ]
    assert ports_by_state(doc, "127.0.0.1") == {"open": {22, 80}}
    # The listeners are bound to 127.0.0.1 only.
    assert ports_by_state(doc, "127.0.0.2") == {"closed": {22, 80}}


def test_scan_unreachable_network_is_filtered():
    # The namespace has no route beyond lo: ENETUNREACH, reported filtered.
    (r,) = in_namespace([scan("192.0.2.1", "-p", "80,443", "--timeout", "0.3", "--json")])
    assert r["rc"] == 0, r["stderr"]
    assert ports_by_state(json.loads(r["stdout"]), "192.0.2.1") == {"filtered": {80, 443}}


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["127.0.0.1", "-p", "0"],
        ["127.0.0.1", "-p", "80-70"],
        ["127.0.0.1", "-p", "http"],
        ["10.0.0.0/8"],
        ["2001:db8::/64"],
        ["300.1.2.3"],
        ["127.0.0.1", "--json", "--grepable"],
        ["127.0.0.1", "--rate", "fast"],
        ["127.0.0.1", "--timeout", "0"],
        ["127.0.0.1", "-c", "0"],
        ["127.0.0.1", "--bogus"],
        ["127.0.0.1", "-p"],
    ],
)
def test_scan_usage_errors_exit_2(args):
    # Refused before any connect, so no namespace is needed.
    binary = require_binary()
    cp = subprocess.run(
        [binary, "scan"] + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        timeout=30,
        env=server_env(),
    )
    assert_no_sanitizer_reports(cp.stderr.decode(), "tcpkit scan")
    assert cp.returncode == 2, (args, cp.stdout, cp.stderr)
    assert cp.stderr.startswith(b"tcpkit scan: "), cp.stderr
    assert cp.stdout == b""


def test_scan_help_exits_0():
    cp = subprocess.run(
        [require_binary(), "scan", "--help"], stdout=subprocess.PIPE, timeout=30, env=server_env()
    )
    assert cp.returncode == 0
    assert b"usage: tcpkit scan" in cp.stdout
