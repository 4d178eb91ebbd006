"""tcpkit bench against a real echo server over loopback: exact request counts
checked against the server's STATS, the open-loop schedule, --json fields,
the SVG plot, and --find-max-rate. No timing assertions beyond the schedule's
deterministic request count."""

import json
import re
import xml.etree.ElementTree as ET

from conftest import fmt_addr, run_tcpkit

SVG = "{http://www.w3.org/2000/svg}"


def stats(server):
    c = server.connect()
    try:
        line = c.request(b"STATS").decode()
    finally:
        c.close()
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", line)}


def bench(server, *args, timeout=60):
    cp = run_tcpkit(["bench", fmt_addr(server.addr)] + list(args), timeout=timeout)
    assert cp.returncode == 0, cp.stderr.decode()
    return cp


def bench_json(server, *args, timeout=60):
    return json.loads(bench(server, *args, "--json", timeout=timeout).stdout.decode())


def test_requests_counts_match_the_servers_stats(echo_server):
    r = bench_json(echo_server, "-c", "4", "-t", "2", "-p", "3", "--requests", "5000")
    assert r["sent"] == 5000
    assert r["received"] == 5000
    assert r["errors"] == 0
    s = stats(echo_server)
    # The STATS request itself is counted only after its reply is written.
    assert int(s["messages"]) == 5000
    assert int(s["bytes_in"]) == 5000 * 64 + len(b"STATS\n")


def test_open_loop_requests_count_matches_stats(echo_server):
    r = bench_json(echo_server, "-c", "3", "-t", "2", "--rate", "3000", "--requests", "1500")
    assert r["mode"] == "open"
    assert r["sent"] == r["received"] == 1500
    assert int(stats(echo_server)["messages"]) == 1500


def test_open_loop_schedule_sends_rate_times_duration(echo_server):
    r = bench_json(echo_server, "-c", "4", "-t", "2", "--rate", "2000", "-d", "2")
    # The schedule is deterministic: requests due inside the 2 s window.
    assert 0.97 * 4000 <= r["sent_measured"] <= 1.03 * 4000, r
    assert r["errors"] == 0
    # Replies lag the schedule at most by what was in flight at the end.
    assert 0.80 * 4000 <= r["requests"] <= 1.05 * 4000, r


def test_json_has_the_fields(echo_server):
    r = bench_json(echo_server, "-c", "2", "-d", "0.5")
    for k in ("requests", "rps", "min_us", "mean_us", "p50_us", "p90_us", "p99_us",
              "p999_us", "max_us", "sent", "received", "errors", "mode"):
        assert k in r, k
    assert r["mode"] == "closed"
    assert r["min_us"] <= r["p50_us"] <= r["p90_us"] <= r["p99_us"] <= r["p999_us"] <= r["max_us"]


def test_text_output_has_the_percentiles(echo_server):
    out = bench(echo_server, "-c", "2", "-d", "0.5").stdout.decode()
    for name in ("p50", "p90", "p99", "p99.9", "max", "min", "mean"):
        assert re.search(rf"\b{re.escape(name)} \d+\.\d{{3}} ms", out), (name, out)
    # Piped stderr gets no progress line.
    assert "\r" not in bench(echo_server, "-c", "1", "-d", "1.2").stderr.decode()


def test_plot_is_an_svg_with_both_charts(echo_server, tmp_path):
    path = tmp_path / "bench.svg"
    bench(echo_server, "-c", "2", "-d", "2", "--plot", str(path))
    root = ET.parse(path).getroot()
    assert root.tag == SVG + "svg"
    assert len(root.findall(f"{SVG}g[@class='chart']")) == 2
    assert root.find(f".//{SVG}polyline[@class='percentiles']") is not None
    # One bar per whole second of the measured window.
    assert len(root.findall(f".//{SVG}rect[@class='second']")) == 2


def test_find_max_rate_terminates_with_a_rate(echo_server):
    cp = bench(echo_server, "-c", "2", "--find-max-rate", "--p99", "200ms", "-d", "0.5",
               "--warmup", "0.1", timeout=120)
    out = cp.stdout.decode()
    assert "probe 1:" in out
    m = re.search(r"max rate: (\d+) req/s", out)
    assert m and int(m.group(1)) > 0, out


def test_usage_errors(echo_server):
    addr = fmt_addr(echo_server.addr)
    for args in (["--find-max-rate"], ["--p99", "5ms"], ["--rate", "0"], ["--rate", "x"],
                 ["--requests", "0"]):
        cp = run_tcpkit(["bench", addr] + args)
        assert cp.returncode == 2, args
