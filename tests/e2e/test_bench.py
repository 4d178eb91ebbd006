"""tcpkit bench against a real echo server over loopback: exact request counts
checked against the server's STATS in every mode (line, length, json,
connect), the open-loop schedule, --json fields, the SVG plot, --find-max-rate,
and a wrong framing ending with errors rather than hanging. No timing assertions beyond the schedule's
deterministic request count."""

import json
import re
import socket
import struct
import threading
import xml.etree.ElementTree as ET

import pytest

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


# ---- --mode length, json, connect ------------------------------------------------


@pytest.fixture
def length_server(server_factory):
    return server_factory(["--listen", "127.0.0.1:0", "--framing", "length"])


@pytest.fixture
def json_server(server_factory):
    return server_factory(["--listen", "127.0.0.1:0", "--framing", "json"])


STATS_REQ = {"type": "STATS", "id": 1}


def json_stats(server):
    c = server.connect()
    try:
        r = c.jrequest(STATS_REQ)
    finally:
        c.close()
    assert r.get("type") == "STATS", r
    return r["payload"]


class FrameCounter:
    """A length-framing echo peer that counts the frames it gets: the length
    framing of the echo server has no STATS to ask."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.addr = self.lsock.getsockname()
        self.frames = 0
        self.conns = 0
        self.lock = threading.Lock()
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def _accept(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, s):
        buf = b""
        with s:
            while True:
                try:
                    data = s.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                out = []
                while len(buf) >= 4:
                    (n,) = struct.unpack(">I", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    out.append(struct.pack(">I", n + 5) + b"Got: " + buf[4:4 + n])
                    buf = buf[4 + n:]
                with self.lock:
                    self.frames += len(out)
                if out:
                    s.sendall(b"".join(out))

    def close(self):
        self.lsock.close()


def test_length_mode_requests_counts_are_exact(length_server):
    r = bench_json(length_server, "--mode", "length", "-c", "4", "-t", "2", "-p", "3",
                   "--requests", "3000")
    assert r["request_mode"] == "length"
    assert r["sent"] == r["received"] == 3000
    assert r["errors"] == 0


def test_length_mode_sends_exactly_n_frames():
    peer = FrameCounter()
    try:
        cp = run_tcpkit(["bench", fmt_addr(peer.addr), "--mode", "length", "-c", "3", "-t", "2",
                         "-p", "4", "-s", "100", "--requests", "2000", "--json"], timeout=60)
        assert cp.returncode == 0, cp.stderr.decode()
        r = json.loads(cp.stdout.decode())
        assert r["sent"] == r["received"] == 2000
        # Every reply was sent after its frame was counted.
        with peer.lock:
            assert peer.frames == 2000
    finally:
        peer.close()


def test_length_mode_open_loop_counts(length_server):
    r = bench_json(length_server, "--mode", "length", "-c", "3", "-t", "2", "--rate", "3000",
                   "--requests", "900", "-s", "1000")
    assert r["mode"] == "open"
    assert r["sent"] == r["received"] == 900
    assert r["bytes_out"] <= 900 * 1004


def test_json_mode_requests_counts_match_the_servers_stats(json_server):
    r = bench_json(json_server, "--mode", "json", "-c", "4", "-t", "2", "-p", "3",
                   "--requests", "3000")
    assert r["request_mode"] == "json"
    assert r["sent"] == r["received"] == 3000
    assert r["errors"] == 0
    assert json_stats(json_server)["messages"] == 3000


def test_json_mode_open_loop_counts_match_the_servers_stats(json_server):
    r = bench_json(json_server, "--mode", "json", "-c", "3", "-t", "2", "--rate", "3000",
                   "--requests", "1200", "-s", "200")
    assert r["mode"] == "open"
    assert r["sent"] == r["received"] == 1200
    p = json_stats(json_server)
    assert p["messages"] == 1200
    # The STATS request line itself is read before it is answered.
    assert p["bytes_in"] == 1200 * 200 + len(json.dumps(STATS_REQ)) + 1


def test_json_mode_ids_cycle_past_the_pattern(json_server):
    # -s 2000: 33 requests in the shared pattern, so ids wrap many times.
    r = bench_json(json_server, "--mode", "json", "-c", "2", "-t", "1", "-p", "5", "-s", "2000",
                   "--requests", "500")
    assert r["sent"] == r["received"] == 500
    assert r["errors"] == 0


def test_connect_mode_makes_one_connection_per_request(echo_server):
    r = bench_json(echo_server, "--mode", "connect", "-c", "4", "-t", "2", "--requests", "300")
    assert r["request_mode"] == "connect"
    assert r["sent"] == r["received"] == r["connected"] == 300
    assert r["errors"] == 0
    s = stats(echo_server)
    # The STATS connection is the one more.
    assert int(s["conns_total"]) == 300 + 1
    assert int(s["messages"]) == 300


def test_connect_mode_open_loop_counts(echo_server):
    r = bench_json(echo_server, "--mode", "connect", "-c", "3", "-t", "2", "--rate", "1000",
                   "--requests", "200")
    assert r["mode"] == "open"
    assert r["sent"] == r["received"] == r["connected"] == 200
    s = stats(echo_server)
    assert int(s["conns_total"]) == 200 + 1
    assert int(s["messages"]) == 200


def test_connect_mode_duration_reports_connections(echo_server):
    out = bench(echo_server, "--mode", "connect", "-c", "2", "-d", "0.5").stdout.decode()
    assert re.search(r"^connections \d+ \(whole run\)  \d+ connections/s", out, re.M), out
    assert "mode connect" in out


@pytest.mark.parametrize("mode", ["length", "json", "connect"])
def test_every_mode_plots_and_finds_a_rate(mode, server_factory, tmp_path):
    framing = {"length": "length", "json": "json", "connect": "line"}[mode]
    srv = server_factory(["--listen", "127.0.0.1:0", "--framing", framing])
    path = tmp_path / "bench.svg"
    bench(srv, "--mode", mode, "-c", "2", "-d", "1", "--plot", str(path))
    root = ET.parse(path).getroot()
    assert len(root.findall(f".//{SVG}rect[@class='second']")) == 1
    cp = bench(srv, "--mode", mode, "-c", "2", "--find-max-rate", "--p99", "200ms", "-d", "0.3",
               "--warmup", "0.1", timeout=120)
    assert re.search(r"max rate: \d+ req/s", cp.stdout.decode()), cp.stdout.decode()


def run_bench_json_rc(server, *args):
    cp = run_tcpkit(["bench", fmt_addr(server.addr)] + list(args) + ["--json"], timeout=60)
    return cp.returncode, json.loads(cp.stdout.decode()), cp.stderr.decode()


def test_length_mode_against_a_line_server_ends_with_errors(echo_server):
    # The line server waits for a newline that never comes: bounded by -d.
    rc, r, err = run_bench_json_rc(echo_server, "--mode", "length", "-c", "2", "-d", "1",
                                   "--requests", "10")
    assert rc == 1
    assert r["received"] == 0
    assert r["errors"] >= 2 and r["timeouts"] >= 2, r
    assert "no request completed" in err


def test_json_mode_against_a_line_server_ends_with_errors(echo_server):
    # "ECHO: {...}" is not a JSON reply: the connections are dropped at once.
    rc, r, err = run_bench_json_rc(echo_server, "--mode", "json", "-c", "2", "-d", "20")
    assert rc == 1
    assert r["received"] == 0 and r["errors"] >= 2, r
    assert r["elapsed_s"] < 20


def test_line_mode_against_a_length_server_ends_with_errors(length_server):
    # The length server reads "xxxx" as a huge frame header, says so and closes.
    rc, r, _ = run_bench_json_rc(length_server, "-c", "2", "-d", "20", "--requests", "10")
    assert rc == 1
    assert r["received"] == 0 and r["errors"] >= 2, r


def test_mode_usage_errors(echo_server):
    addr = fmt_addr(echo_server.addr)
    for args in (["--mode", "udp"], ["--mode", "json", "-s", "47"], ["-s", "1"]):
        cp = run_tcpkit(["bench", addr] + args)
        assert cp.returncode == 2, args
    # A length frame may be empty.
    cp = run_tcpkit(["bench", addr, "--mode", "length", "-s", "0", "--help"])
    assert cp.returncode == 0



@pytest.mark.parametrize("mode", ["line", "length", "json"])
def test_find_max_rate_probes_reuse_the_pooled_connections(mode, server_factory):
    if mode == "length":
        srv = FrameCounter()
    else:
        srv = server_factory(["--listen", "127.0.0.1:0", "--framing", mode])
    try:
        cp = bench(srv, "--mode", mode, "-c", "3", "-t", "2", "--find-max-rate", "--p99",
                   "200ms", "-d", "0.2", "--warmup", "0", timeout=120)
        probes = re.findall(r"^probe \d+:", cp.stdout.decode(), re.M)
        assert len(probes) >= 2, cp.stdout.decode()
        # Every probe ran on the same three connections.
        if mode == "length":
            assert srv.conns == 3
        elif mode == "json":
            assert json_stats(srv)["conns_total"] == 3 + 1  # + the STATS connection
        else:
            assert int(stats(srv)["conns_total"]) == 3 + 1
    finally:
        if mode == "length":
            srv.close()


def test_single_runs_return_their_connections_in_step(echo_server):
    # Duration runs end with replies in flight: they are read before the
    # connections go back, so the server's count still matches the replies.
    r = bench_json(echo_server, "-c", "3", "-t", "2", "-p", "4", "-d", "0.3")
    assert r["errors"] == 0
    assert r["sent"] == r["received"], r
    assert int(stats(echo_server)["messages"]) == r["received"]


# ---- --mode chat -------------------------------------------------------------


@pytest.fixture
def chat_server(server_factory):
    # --flood-rate 0: the default 10 messages per second per client would
    # refuse most of a benchmark's messages.
    return server_factory(["--listen", "127.0.0.1:0", "--ephemeral", "--mode", "json",
                           "--flood-rate", "0"], command="chat-server")


def chat_stats(server):
    c = server.connect()
    try:
        r = c.jrequest(STATS_REQ)
    finally:
        c.close()
    assert r.get("type") == "STATS", r
    return r["payload"]


@pytest.mark.parametrize("rate", [None, "400"])
def test_chat_mode_every_receiver_gets_every_message(chat_server, rate):
    extra = ["--rate", rate] if rate else []
    r = bench_json(chat_server, "--mode", "chat", "--receivers", "4", "--senders", "2",
                   "--requests", "150", *extra)
    assert r["request_mode"] == "chat"
    assert r["mode"] == ("open" if rate else "closed")
    assert r["connected"] == 6
    assert r["errors"] == 0 and r["timeouts"] == 0
    assert r["sent"] == 150
    assert r["per_receiver_min"] == r["per_receiver_max"] == 150
    assert r["deliveries"] == r["received"] == r["requests"] == 4 * 150
    assert r["min_us"] <= r["p50_us"] <= r["p99_us"] <= r["max_us"]
    s = chat_stats(chat_server)
    assert s["messages"] == 150
    # Senders are in the room too, and join events count as deliveries.
    assert s["deliveries"] >= 6 * 150


def test_chat_mode_text_output(chat_server):
    out = bench(chat_server, "--mode", "chat", "--receivers", "2", "--senders", "1",
                "--requests", "20").stdout.decode()
    assert "mode chat" in out, out
    assert re.search(r"^chat: 2 receivers, 1 senders  messages sent 20  deliveries 40 "
                     r"\(per receiver 20 to 20\)$", out, re.M), out


def test_chat_mode_against_an_echo_server_fails(echo_server):
    rc, r, err = run_bench_json_rc(echo_server, "--mode", "chat", "--receivers", "1",
                                   "--senders", "1", "--requests", "5", "--connect-timeout", "1")
    assert rc == 1, (r, err)
    assert r["requests"] == 0


# ---- --mode file -------------------------------------------------------------


@pytest.fixture
def file_server(server_factory, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello, tcpkit\n")
    (root / "big.bin").write_bytes(bytes(range(256)) * 10000)  # 2,560,000 B: 3 data frames
    return server_factory(["--listen", "127.0.0.1:0", "--root", str(root)],
                          command="file-server")


@pytest.mark.parametrize("name,size", [("hello.txt", 14), ("big.bin", 2560000)])
def test_file_mode_downloads_exact_bytes(file_server, name, size):
    n = 40
    r = bench_json(file_server, "--mode", "file", "--file", name, "-c", "3", "-t", "2", "-p", "2",
                   "--requests", str(n))
    assert r["request_mode"] == "file" and r["file"] == name
    assert r["sent"] == r["received"] == n
    # With no warm-up (the --requests default) every request is measured,
    # even when the run is over before the threads have all connected.
    assert r["requests"] == r["sent_measured"] == n
    assert r["errors"] == 0 and r["timeouts"] == 0
    # file_bytes covers the whole run: every download, every byte.
    assert r["file_bytes"] == n * size
    # bytes_in covers only the measured window, which may open mid-run:
    # at most the whole run's frames (response, data frames, end each).
    data_frames = -(-size // (1024 * 1024))
    reply = 6 + len(f"{name}:{size}") + data_frames * 6 + size + 6
    assert 0 < r["bytes_in"] <= n * reply


def test_file_mode_text_output(file_server):
    out = bench(file_server, "--mode", "file", "--file", "hello.txt", "-c", "2",
                "--requests", "10").stdout.decode()
    assert re.search(r"^throughput \d+ downloads/s  \(\d+\.\d MB/s in; file bytes 140, whole run\)$",
                     out, re.M), out


def test_file_mode_missing_file_is_an_error(file_server):
    rc, r, err = run_bench_json_rc(file_server, "--mode", "file", "--file", "nope", "-c", "1",
                                   "--requests", "3")
    assert rc == 1
    assert r["errors"] >= 1 and r["received"] == 0


def test_file_mode_needs_a_file_name(file_server):
    for args in (["--mode", "file"], ["--file", "hello.txt"]):
        cp = run_tcpkit(["bench", fmt_addr(file_server.addr)] + args, timeout=30)
        assert cp.returncode == 2, cp.stderr.decode()
