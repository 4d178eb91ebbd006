"""Servers with several event loops under load from a multi-threaded client.

Each scenario runs the echo server (or the balancer in front of two echo
servers) with two loops and `tcpkit bench` with two client threads, checks
the exact request counts, reads the counters from another connection (a
cross-thread read of per-loop metric slots), and stops everything cleanly.

Under the ASan build these are ordinary load tests. The ThreadSanitizer
suite of tests/run_all.sh runs this file again against build-tsan/tcpkit with
halt_on_error=1: a data race in the loops, the workers, the metrics or the
balancer's tables ends the process with a report on stderr, which fails the
test (conftest checks every process's stderr).
"""

import json
import re

from conftest import fmt_addr, run_tcpkit
from balance_helpers import balancer, stats_json  # noqa: F401  (fixture)

REQUESTS = 4000


def echo_stats(addr):
    from conftest import Conn

    c = Conn(addr)
    try:
        line = c.request(b"STATS").decode()
    finally:
        c.close()
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", line)}


def bench(addr, *args):
    cp = run_tcpkit(["bench", fmt_addr(addr), "-c", "8", "-t", "2", "-p", "4",
                     "--requests", str(REQUESTS), "--json", *args], timeout=120)
    assert cp.returncode == 0, cp.stderr.decode("utf-8", "replace")
    r = json.loads(cp.stdout.decode())
    assert r["sent"] == r["received"] == REQUESTS, r
    assert r["errors"] == 0, r
    return r


def test_echo_server_two_loops_under_bench(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--threads", "2"])
    bench(srv.addr)
    s = echo_stats(srv.addr)
    assert int(s["messages"]) == REQUESTS, s
    assert srv.stop() == 0
    assert "listening on" in srv.stdout()


def test_balancer_two_loops_under_bench(server_factory, balancer):  # noqa: F811
    backends = [server_factory(["--listen", "127.0.0.1:0", "--threads", "2"]) for _ in range(2)]
    bal = balancer([b.addr for b in backends], threads=2)
    bench(bal.addr)
    st = stats_json(bal.stats_addr)
    assert st["clients"]["total"] >= 8, st
    served = sum(int(echo_stats(b.addr)["messages"]) for b in backends)
    assert served == REQUESTS
    assert bal.stop() == 0


def test_file_server_two_loops_under_bench_and_get(server_factory, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    data = bytes(range(256)) * 4096  # 1 MiB
    (root / "big.bin").write_bytes(data)
    srv = server_factory(["--listen", "127.0.0.1:0", "--root", str(root), "--threads", "2",
                          "--hash-threads", "2"], command="file-server")
    n = 40
    cp = run_tcpkit(["bench", fmt_addr(srv.addr), "--mode", "file", "--file", "big.bin", "-c", "4",
                     "-t", "2", "--requests", str(n), "--json"], timeout=120)
    assert cp.returncode == 0, cp.stderr.decode("utf-8", "replace")
    r = json.loads(cp.stdout.decode())
    assert r["sent"] == r["received"] == n and r["errors"] == 0, r
    assert r["file_bytes"] == n * len(data), r
    # The version-2 client checks the digest the server's hash threads made.
    out = tmp_path / "copy.bin"
    cp = run_tcpkit(["get", fmt_addr(srv.addr), "big.bin", "-o", str(out)], timeout=120)
    assert cp.returncode == 0, cp.stderr.decode("utf-8", "replace")
    assert out.read_bytes() == data
    assert srv.stop() == 0
