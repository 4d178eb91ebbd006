"""`tcpkit balance` behaviour: backups, health checks, no backend, maxconn and
the queue, half-close, passive failures and retries, PROXY protocol, stats,
close log lines, drain on SIGTERM, IPv6.

Backends are echo servers (banner = name) or small python servers. Nothing
sleeps to synchronise: tests wait for log lines, stats values (polled against
a deadline) or data on a socket.
"""

import ipaddress
import json
import re
import signal
import socket
import struct
import time

import pytest

from balance_helpers import (  # noqa: F401  (fixtures)
    backend_down_re,
    backend_entry,
    backend_up_re,
    balancer,
    close_line_for,
    close_lines,
    connect,
    echo_backends,
    expect_log,
    py_backend,
    refused_addr,
    spec,
    stats_http,
    stats_json,
    stats_raw,
    stats_text,
    wait_close_lines,
    wait_stats,
    which_many,
)
from conftest import Conn, ipv6_loopback_available

FAST_CHECKS = ("--check-timeout", "100ms", "--fall", "1", "--rise", "1")


def checked_balancer(balancer, backends, *args, **kw):
    """A balancer with health checks every 100 ms, one result enough to change state."""
    return balancer(backends, *FAST_CHECKS, *args, check_interval="100ms", **kw)


def local(c):
    """(ip, port) of a Conn's local end (kept by balance_helpers.connect)."""
    return c.local if hasattr(c, "local") else c.sock.getsockname()[:2]


# ---- backups and health checks -------------------------------------------------------------


def test_backup_gets_nothing_while_a_primary_is_up(echo_backends, balancer):
    a, b, c = echo_backends(["A", "B", "C"])
    bal = checked_balancer(balancer, [a, b, spec(c, backup=True)])
    names = which_many(bal.addr, 30)
    assert "C" not in names and set(names) == {"A", "B"}, names
    st = stats_json(bal.stats_addr)
    assert backend_entry(st, c)["backup"] is True
    assert backend_entry(st, a)["backup"] is False
    assert backend_entry(st, c)["total"] == 0


def test_backup_takes_over_when_every_primary_is_down_and_primary_comes_back(
        echo_backends, balancer, server_factory):
    a, b, c = echo_backends(["A", "B", "C"])
    bal = checked_balancer(balancer, [a, b, spec(c, backup=True)])
    assert set(which_many(bal.addr, 4)) == {"A", "B"}
    # one primary down: the other primary takes everything, not the backup
    a.stop()
    expect_log(bal, backend_down_re(a))
    assert set(which_many(bal.addr, 6)) == {"B"}
    # both down: the backup
    b.stop()
    expect_log(bal, backend_down_re(b))
    assert set(which_many(bal.addr, 6)) == {"C"}
    # a primary restarts on its port: back up, and new clients go to it again
    a2 = server_factory(["-l", a.spec, "--threads", "1", "--banner", "A2"])
    assert a2.addr == a.addr
    expect_log(bal, backend_up_re(a))
    wait_stats(bal.stats_addr, lambda st: backend_entry(st, a)["state"] == "up", what="A up")
    assert set(which_many(bal.addr, 6)) == {"A2"}
    st = stats_json(bal.stats_addr)
    assert backend_entry(st, b)["state"] == "down"
    assert backend_entry(st, a)["check"]["last"] == "ok"


def test_health_check_send_expect_marks_wrong_reply_down(server_factory, py_backend, balancer):
    # a plain echo backend answers "hi" with "ECHO: hi"; the python one greets
    # with its name first, so its reply does not start with the expected text
    good = server_factory(["-l", "127.0.0.1:0", "--threads", "1"])
    bad = py_backend("banner", name="P")
    bal = checked_balancer(balancer, [good, bad], "--check-send", r"hi\r\n", "--check-expect", "ECHO: hi")
    expect_log(bal, backend_down_re(bad) + r" \(unexpected reply\)")
    st = wait_stats(bal.stats_addr, lambda st: backend_entry(st, good)["check"]["last"] == "ok",
                    what="good backend checked ok")
    assert backend_entry(st, good)["state"] == "up"
    assert backend_entry(st, bad)["state"] == "down"
    assert backend_entry(st, bad)["check"]["last"].startswith("failed")
    assert "unexpected reply" in backend_entry(st, bad)["check"]["last"]
    assert not bal.wait_stderr(backend_down_re(good), timeout=0)
    # every client reaches the good one
    for i in range(6):
        c = connect(bal)
        assert c.request(f"x{i}") == f"ECHO: x{i}".encode()
        c.close()


def test_health_check_silent_backend_goes_down(echo_backends, py_backend, balancer):
    a, = echo_backends(["A"])
    silent = py_backend("hold")
    bal = checked_balancer(balancer, [a, silent], "--check-send", r"PING\n", "--check-expect", "A")
    expect_log(bal, backend_down_re(silent))
    assert set(which_many(bal.addr, 5)) == {"A"}


def test_health_check_connect_only_brings_back_restarted_backend(echo_backends, balancer, server_factory):
    a, b = echo_backends(["A", "B"])
    bal = checked_balancer(balancer, [a, b])
    b.stop()
    expect_log(bal, backend_down_re(b) + r" \(connect refused\)")
    assert set(which_many(bal.addr, 4)) == {"A"}
    server_factory(["-l", b.spec, "--threads", "1", "--banner", "B2"])
    expect_log(bal, backend_up_re(b))
    assert set(which_many(bal.addr, 4)) == {"A", "B2"}


# ---- no backend -------------------------------------------------------------------------


def test_all_backends_down_client_closed_at_once(balancer, echo_backends):
    r1, r2 = refused_addr(), refused_addr()
    bal = checked_balancer(balancer, [r1, spec(r2, backup=True)])
    expect_log(bal, backend_down_re(r1))
    expect_log(bal, backend_down_re(r2))
    c = connect(bal)
    # closed without waiting for anything (the deadline only guards a hang)
    assert c.recv_until_eof(timeout=5, allow_reset=True) == b""
    line = close_line_for(bal, local(c))
    assert line["reason"] == "no-backend"
    assert line["backend"] == "-"
    assert (line["up"], line["down"]) == (0, 0)
    st = stats_json(bal.stats_addr)
    assert st["clients"]["active"] == 0


# ---- maxconn and the queue ------------------------------------------------------------------


def test_maxconn_second_client_waits_then_is_served(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([spec(a, maxconn=1)])
    c1 = connect(bal)
    assert c1.recv_line() == b"A\n"
    c2 = connect(bal)
    c2.send(b"early\n")  # sent while waiting: delivered once connected
    st = wait_stats(bal.stats_addr, lambda st: st["clients"]["queued"] == 1, what="one queued")
    assert backend_entry(st, a)["active"] == 1
    assert backend_entry(st, a)["total"] == 1
    assert c1.request("one") == b"ECHO: one"
    c1.close()
    assert c2.recv_line() == b"A\n"
    assert c2.recv_line() == b"ECHO: early\n"
    assert c2.request("two") == b"ECHO: two"
    c2.close()
    l1, l2 = close_line_for(bal, local(c1)), close_line_for(bal, local(c2))
    assert l1["reason"] == l2["reason"] == "client"
    assert l2["backend"] == a.spec
    st = wait_stats(bal.stats_addr, lambda st: st["clients"]["active"] == 0, what="no client")
    assert st["clients"]["queued"] == 0
    assert backend_entry(st, a)["total"] == 2


def test_queue_timeout_closes_waiting_client(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([spec(a, maxconn=1)], "--queue-timeout", "300ms")
    c1 = connect(bal)
    assert c1.recv_line() == b"A\n"
    c2 = connect(bal)
    assert c2.recv_until_eof(timeout=10, allow_reset=True) == b""
    line = close_line_for(bal, local(c2))
    assert line["reason"] == "queue-timeout"
    assert line["backend"] == "-"
    # the first client is untouched
    assert c1.request("still") == b"ECHO: still"
    st = stats_json(bal.stats_addr)
    assert st["clients"]["queued"] == 0
    assert backend_entry(st, a)["total"] == 1


def test_queue_zero_refuses_at_once(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([spec(a, maxconn=1)], "--queue", "0")
    c1 = connect(bal)
    assert c1.recv_line() == b"A\n"
    c2 = connect(bal)
    assert c2.recv_until_eof(timeout=5, allow_reset=True) == b""
    line = close_line_for(bal, local(c2))
    assert line["reason"] == "queue-full"
    assert line["backend"] == "-"
    assert c1.request("ok") == b"ECHO: ok"


def test_queue_bound_refuses_only_beyond_it(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([spec(a, maxconn=1)], "--queue", "1")
    c1 = connect(bal)
    assert c1.recv_line() == b"A\n"
    c2 = connect(bal)
    wait_stats(bal.stats_addr, lambda st: st["clients"]["queued"] == 1, what="one queued")
    c3 = connect(bal)
    assert c3.recv_until_eof(timeout=5, allow_reset=True) == b""
    assert close_line_for(bal, local(c3))["reason"] == "queue-full"
    c1.close()
    assert c2.recv_line() == b"A\n"
    assert c2.request("q") == b"ECHO: q"


def test_maxconn_over_two_backends_queued_client_takes_the_freed_slot(echo_backends, balancer):
    a, b = echo_backends(["A", "B"])
    bal = balancer([spec(a, maxconn=1), spec(b, maxconn=1)])
    c1, c2 = connect(bal), connect(bal)
    on = {c1.recv_line(): c1, c2.recv_line(): c2}
    assert set(on) == {b"A\n", b"B\n"}
    c3 = connect(bal)
    wait_stats(bal.stats_addr, lambda st: st["clients"]["queued"] == 1, what="one queued")
    # free the slot on B: the waiting client goes there
    on[b"B\n"].close()
    assert c3.recv_line() == b"B\n"
    assert c3.request("q") == b"ECHO: q"
    assert on[b"A\n"].request("a") == b"ECHO: a"


# ---- half-close ---------------------------------------------------------------------------


def test_client_half_close_reaches_backend_and_reply_flows_back(py_backend, balancer):
    p = py_backend("record", reply=lambda d: b"GOT " + d + b"BYE\n")
    bal = balancer([p])
    c = connect(bal)
    c.send(b"hello\n")
    c.shutdown_write()
    assert p.wait_eof(0) == b"hello\n"  # the backend saw the data, then EOF
    assert c.recv_until_eof() == b"GOT hello\nBYE\n"
    line = close_line_for(bal, local(c))
    assert line["reason"] == "client"
    assert (line["up"], line["down"]) == (6, 14)


def test_backend_half_close_client_can_still_send(py_backend, balancer):
    def handler(sock, peer, backend):
        sock.sendall(b"hello from backend\n")
        sock.shutdown(socket.SHUT_WR)
        backend._read_until_eof(backend.conns[-1])
        sock.close()

    p = py_backend(handler)
    bal = balancer([p])
    c = connect(bal)
    assert c.recv_until_eof() == b"hello from backend\n"
    c.send(b"after your FIN\n")
    assert p.wait_data(0, len(b"after your FIN\n")) == b"after your FIN\n"
    c.shutdown_write()
    assert p.wait_eof(0) == b"after your FIN\n"
    c.close()
    line = close_line_for(bal, local(c))
    assert line["reason"] == "backend"
    assert (line["up"], line["down"]) == (15, 19)


# ---- passive failures and retries ---------------------------------------------------------------


def test_refused_backend_is_retried_on_another(echo_backends, balancer):
    live, = echo_backends(["L"])
    dead = refused_addr()
    bal = balancer([dead, live])  # no health checks
    for i in range(10):
        c = connect(bal)
        assert c.recv_line() == b"L\n", i
        assert c.request(f"r{i}") == f"ECHO: r{i}".encode()
        c.close()
    expect_log(bal, r"backend " + dead[0].replace(".", r"\.") + f":{dead[1]}" + r" failed: connect refused")
    lines = wait_close_lines(bal, 10)
    assert {l["backend"] for l in lines} == {live.spec}
    assert {l["reason"] for l in lines} == {"client"}
    st = stats_json(bal.stats_addr)
    assert backend_entry(st, dead)["failures"] >= 1
    assert backend_entry(st, dead)["total"] == 0
    assert backend_entry(st, live)["total"] == 10


def test_first_byte_timeout_replay_counts_client_bytes_once(py_backend, echo_backends, balancer):
    # the first backend accepts and stays silent; the client's bytes are
    # replayed to the second one. The close line's up= is what the client
    # sent (6 bytes), not the sum over both attempts.
    silent = py_backend("hold")
    a, = echo_backends(["A"])
    bal = balancer([silent, a], "--first-byte-timeout", "300ms")
    c = connect(bal)
    c.send(b"hello\n")
    assert c.recv_line() == b"A\n"
    assert c.recv_line() == b"ECHO: hello\n"
    assert silent.wait_data(0, 6) == b"hello\n"
    c.close()
    expect_log(bal, r"backend " + re.escape(silent.spec) + r" failed: .*first-byte")
    line = close_line_for(bal, local(c))
    assert line["backend"] == a.spec and line["reason"] == "client"
    assert line["down"] == 2 + 12
    assert line["up"] == 6, line


def test_every_attempt_refused_is_connect_failed(balancer):
    r1, r2 = refused_addr(), refused_addr()
    bal = balancer([r1, r2], "--connect-budget", "2s", "--connect-timeout", "500ms")
    c = connect(bal)
    assert c.recv_until_eof(timeout=10, allow_reset=True) == b""
    line = close_line_for(bal, local(c))
    assert line["reason"] == "connect-failed"
    assert line["backend"] in ("-", fmt_addr(r1), fmt_addr(r2))


def fmt_addr(a):
    return f"{a[0]}:{a[1]}"


# ---- PROXY protocol -----------------------------------------------------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def parse_v2(data):
    """(command, family, src, dst, rest) of a PROXY v2 header at data's start."""
    assert data[:12] == V2_SIG, data[:16]
    ver_cmd, fam, length = data[12], data[13], struct.unpack(">H", data[14:16])[0]
    assert ver_cmd >> 4 == 2, hex(ver_cmd)
    body, rest = data[16:16 + length], data[16 + length:]
    if fam == 0x11:
        src = (str(ipaddress.IPv4Address(body[0:4])), struct.unpack(">H", body[8:10])[0])
        dst = (str(ipaddress.IPv4Address(body[4:8])), struct.unpack(">H", body[10:12])[0])
        assert length >= 12
    elif fam == 0x21:
        src = (str(ipaddress.IPv6Address(body[0:16])), struct.unpack(">H", body[32:34])[0])
        dst = (str(ipaddress.IPv6Address(body[16:32])), struct.unpack(">H", body[34:36])[0])
        assert length >= 36
    else:
        pytest.fail(f"unexpected PROXY v2 family 0x{fam:02x}")
    return ver_cmd & 0x0F, fam, src, dst, rest


def send_through(bal, payload):
    c = connect(bal)
    c.send(payload)
    c.shutdown_write()
    assert c.recv_until_eof() == b"OK\n"
    return local(c)


def test_send_proxy_v1_header_then_payload(py_backend, balancer):
    p = py_backend("record")
    bal = balancer([p], "--send-proxy", "v1")
    cli = send_through(bal, b"payload-v1")
    want = f"PROXY TCP4 {cli[0]} {bal.addr[0]} {cli[1]} {bal.addr[1]}\r\n".encode()
    assert p.wait_eof(0) == want + b"payload-v1"


def test_proxy_header_is_not_counted_as_client_bytes(py_backend, balancer):
    # up= and bytes_sent are "client->backend" bytes: what the client sent,
    # not the header the balancer adds in front of it
    p = py_backend("record")
    bal = balancer([p], "--send-proxy", "v1")
    cli = send_through(bal, b"payload-v1")
    assert p.wait_eof(0).endswith(b"\r\npayload-v1")
    line = close_line_for(bal, cli)
    assert line["up"] == len(b"payload-v1"), line
    assert line["down"] == len(b"OK\n")
    st = wait_stats(bal.stats_addr, lambda st: st["clients"]["active"] == 0, what="idle")
    assert backend_entry(st, p)["bytes_sent"] == len(b"payload-v1")


def test_send_proxy_v2_header_then_payload(py_backend, balancer):
    p = py_backend("record")
    bal = balancer([p], "--send-proxy", "v2")
    cli = send_through(bal, b"payload-v2")
    cmd, fam, src, dst, rest = parse_v2(p.wait_eof(0))
    assert cmd == 1  # PROXY (not LOCAL)
    assert fam == 0x11  # TCP over IPv4
    assert src == cli
    assert dst == bal.addr
    assert rest == b"payload-v2"


def test_per_backend_proxy_overrides_global(py_backend, balancer):
    p1, p2, p3 = py_backend("record"), py_backend("record"), py_backend("record")
    bal = balancer([p1, spec(p2, proxy="v2"), spec(p3, proxy="none")], "--send-proxy", "v1")
    clis = [send_through(bal, b"data%d" % i) for i in range(3)]  # round robin: p1, p2, p3
    d1, d2, d3 = p1.wait_eof(0), p2.wait_eof(0), p3.wait_eof(0)
    assert d1 == f"PROXY TCP4 {clis[0][0]} {bal.addr[0]} {clis[0][1]} {bal.addr[1]}\r\n".encode() + b"data0"
    _, _, src, dst, rest = parse_v2(d2)
    assert (src, dst, rest) == (clis[1], bal.addr, b"data1")
    assert d3 == b"data2"


def test_proxy_header_names_the_listener_the_client_used(py_backend, balancer):
    p = py_backend("record")
    bal = balancer([p], "--send-proxy", "v1", listen=("127.0.0.1:0", "127.0.0.2:0"))
    c = Conn(bal.addrs[1])
    bal.clients.append(c)
    c.send(b"x")
    c.shutdown_write()
    assert c.recv_until_eof() == b"OK\n"
    cli = local(c)
    want = f"PROXY TCP4 {cli[0]} 127.0.0.2 {cli[1]} {bal.addrs[1][1]}\r\n".encode()
    assert p.wait_eof(0) == want + b"x"


# ---- stats ------------------------------------------------------------------------------------


def exchange(bal, msg=b"hello"):
    """One client: banner, one request, close. up = len(msg)+1, down = 2 + len('ECHO: ')+len(msg)+1."""
    c = connect(bal)
    banner = c.recv_line()
    assert c.request(msg) == b"ECHO: " + msg
    c.close()
    return len(msg) + 1, len(banner) + 6 + len(msg) + 1


def test_stats_counters_match_what_clients_did(echo_backends, balancer):
    a, b = echo_backends(["A", "B"])
    bal = balancer([spec(a, weight=2), b])
    up = down = 0
    for i in range(6):  # A A B A A B
        u, d = exchange(bal, b"m%d" % i)
        up, down = up + u, down + d
    st = wait_stats(bal.stats_addr, lambda st: st["clients"]["active"] == 0 and
                    sum(x["bytes_received"] for x in st["backends"]) == down, what="all closed")
    assert st["algo"] == "roundrobin"
    assert st["clients"]["total"] == 6
    assert st["clients"]["queued"] == 0
    ea, eb = backend_entry(st, a), backend_entry(st, b)
    assert (ea["total"], eb["total"]) == (4, 2)
    assert (ea["active"], eb["active"]) == (0, 0)
    assert ea["bytes_sent"] + eb["bytes_sent"] == up
    assert ea["bytes_sent"] == 4 * 3 and eb["bytes_sent"] == 2 * 3
    assert ea["bytes_received"] == 4 * 11 and eb["bytes_received"] == 2 * 11
    assert (ea["weight"], eb["weight"]) == (2, 1)
    assert ea["state"] == "up" and ea["failures"] == 0
    # one held open: active counts it
    c = connect(bal)
    c.recv_line()
    st = wait_stats(bal.stats_addr, lambda st: st["clients"]["active"] == 1, what="one active")
    assert st["clients"]["total"] == 7
    assert sum(x["active"] for x in st["backends"]) == 1
    # close lines agree with the stats
    c.close()
    lines = wait_close_lines(bal, 7)
    assert sum(l["up"] for l in lines[:6]) == up
    assert sum(l["down"] for l in lines[:6]) == down


def test_stats_json_has_every_field_of_the_spec(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([spec(a, maxconn=5)])
    exchange(bal)
    st = stats_json(bal.stats_addr)
    assert set(st) >= {"algo", "uptime_ms", "clients", "backends"}
    assert set(st["clients"]) >= {"active", "total", "queued", "refused"}
    (e,) = st["backends"]
    # The queue is per loop, not per backend: waiting clients show in clients.queued.
    want = {"addr", "state", "backup", "weight", "maxconn", "active", "total",
            "bytes_sent", "bytes_received", "failures", "check"}
    assert set(e) >= want, f"missing per-backend fields {sorted(want - set(e))} in {e}"
    assert set(e["check"]) >= {"last", "ago_ms"}
    assert e["maxconn"] == 5
    assert isinstance(st["uptime_ms"], int)


def test_stats_text_and_http_forms(echo_backends, balancer):
    a, b = echo_backends(["A", "B"])
    bal = balancer([a, spec(b, backup=True)])
    exchange(bal)
    wait_stats(bal.stats_addr, lambda st: st["clients"]["active"] == 0, what="idle")
    # an empty line: the text table
    text = stats_text(bal.stats_addr)
    lines = text.splitlines()
    assert "roundrobin" in lines[0]
    assert any(l.startswith(a.spec) and " up " in l for l in lines), text
    assert any(l.startswith(b.spec) for l in lines), text
    # any other line is the text table too
    other = stats_raw(bal.stats_addr, b"hello\n").decode().splitlines()
    assert "roundrobin" in other[0] and len(other) == len(lines), other
    # `json`: the raw JSON
    st = stats_json(bal.stats_addr)
    assert [x["addr"] for x in st["backends"]] == [a.spec, b.spec]
    # HTTP GET /: text/plain
    status, headers, body = stats_http(bal.stats_addr, "/")
    assert status.startswith("HTTP/1.0 200"), status
    assert headers["content-type"].startswith("text/plain")
    assert int(headers["content-length"]) == len(body)
    assert a.spec in body.decode() and "roundrobin" in body.decode()
    # HTTP GET /stats.json: the JSON body
    status, headers, body = stats_http(bal.stats_addr, "/stats.json")
    assert status.startswith("HTTP/1.0 200"), status
    assert headers["content-type"].startswith("application/json")
    assert int(headers["content-length"]) == len(body)
    st2 = json.loads(body)
    assert st2["clients"]["total"] == 1
    assert backend_entry(st2, a)["total"] == 1
    assert backend_entry(st2, b)["backup"] is True


def test_stats_connection_still_open_at_sigterm(echo_backends, balancer):
    # A stats client that read its answer (EOF) but has not closed its socket
    # yet when the balancer is told to stop. The balancer must still exit 0
    # cleanly (no leak report from the sanitizer build).
    a, = echo_backends(["A"])
    bal = balancer([a])
    s = Conn(bal.stats_addr)
    bal.clients.append(s)
    s.send(b"json\n")
    json.loads(s.recv_until_eof())
    rc = bal.stop(signal.SIGTERM)
    err = bal.stderr()
    assert "LeakSanitizer" not in err, err[-3000:]
    assert rc == 0, err[-3000:]


def test_stats_connection_idle_at_sigterm(echo_backends, balancer):
    # a stats client that connected and sent nothing yet
    a, = echo_backends(["A"])
    bal = balancer([a])
    s = Conn(bal.stats_addr)
    bal.clients.append(s)
    # the stats server has accepted it once a second stats request is answered
    stats_json(bal.stats_addr)
    rc = bal.stop(signal.SIGTERM)
    err = bal.stderr()
    assert "LeakSanitizer" not in err, err[-3000:]
    assert rc == 0, err[-3000:]


# ---- close log lines -----------------------------------------------------------------------------


def test_exactly_one_close_line_per_client(echo_backends, balancer):
    bs = echo_backends(["A", "B"])
    bal = balancer(bs, threads=2)
    conns = [connect(bal) for _ in range(20)]
    for i, c in enumerate(conns):
        c.recv_line()
        assert c.request(f"c{i}") == f"ECHO: c{i}".encode()
    names = [local(c) for c in conns]
    for c in conns:
        c.close()
    lines = wait_close_lines(bal, 20)
    assert sum(l["up"] for l in lines) == sum(len(f"c{i}\n") for i in range(20))
    clients = [l["client"] for l in lines]
    assert sorted(clients) == sorted(f"{h}:{p}" for h, p in names)
    assert len(set(clients)) == 20
    for l in lines:
        assert l["reason"] == "client"
        assert l["backend"] in (bs[0].spec, bs[1].spec)
        assert l["down"] == 2 + len(b"ECHO: ") + l["up"]
    # nothing more appears later (waiting on the stats, not on time)
    wait_stats(bal.stats_addr, lambda st: st["clients"]["active"] == 0, what="idle")
    assert len(close_lines(bal)) == 20


def test_close_reason_backend_when_backend_closes_first(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([a])
    c = connect(bal)
    c.recv_line()
    assert c.request("QUIT") == b"Goodbye!"
    assert c.recv_until_eof() == b""
    c.close()
    line = close_line_for(bal, local(c))
    assert line["reason"] == "backend"
    assert line["backend"] == a.spec
    assert line["up"] == 5 and line["down"] == 2 + 9


def test_close_reason_client_timeout(py_backend, balancer):
    p = py_backend("hold")
    bal = balancer([p], "--client-timeout", "300ms")
    c = connect(bal)
    assert c.recv_until_eof(timeout=10, allow_reset=True) == b""
    line = close_line_for(bal, local(c))
    assert line["reason"] == "client-timeout"
    assert line["backend"] == p.spec
    p.wait_eof(0)  # the backend side was closed too


def test_close_reason_backend_timeout(py_backend, balancer):
    p = py_backend("hold")
    bal = balancer([p], "--backend-timeout", "300ms")
    c = connect(bal)
    c.send(b"no answer\n")
    assert c.recv_until_eof(timeout=10, allow_reset=True) == b""
    line = close_line_for(bal, local(c))
    assert line["reason"] == "backend-timeout"
    assert line["up"] == len(b"no answer\n")
    p.wait_eof(0)


def test_close_reasons_all_in_one_log(echo_backends, py_backend, balancer):
    # one balancer, several clients ending in different ways: one line each
    a, = echo_backends(["A"])
    bal = balancer([spec(a, maxconn=1)], "--queue", "1", "--queue-timeout", "300ms")
    c1 = connect(bal)
    c1.recv_line()
    c2 = connect(bal)  # queued, then times out
    wait_stats(bal.stats_addr, lambda st: st["clients"]["queued"] == 1, what="one queued")
    c3 = connect(bal)  # queue full
    assert c3.recv_until_eof(timeout=5, allow_reset=True) == b""
    assert c2.recv_until_eof(timeout=10, allow_reset=True) == b""
    assert c1.request("QUIT") == b"Goodbye!"
    c1.recv_until_eof()
    c1.close()
    reasons = {local(c): close_line_for(bal, local(c))["reason"] for c in (c1, c2, c3)}
    assert reasons == {local(c1): "backend", local(c2): "queue-timeout", local(c3): "queue-full"}
    assert len(close_lines(bal)) == 3


def test_json_log_format_close_line(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([a], "--log-format", "json")
    c = connect(bal)
    c.recv_line()
    c.close()
    cli = "%s:%d" % local(c)
    expect_log(bal, cli)
    recs = []
    for line in bal.stderr().splitlines():
        if cli in line:
            recs.append(json.loads(line))
    assert len(recs) == 1, recs
    assert "close" in json.dumps(recs[0]) and "client" in json.dumps(recs[0])


# ---- drain on SIGTERM ----------------------------------------------------------------------------


def wait_refused(addr, deadline_s=10):
    """Connect repeatedly until refused (listener closed); bounded."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(addr)
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.01)
    return False


def test_sigterm_drains_open_client_then_exits_zero(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([a])
    c = connect(bal)
    assert c.recv_line() == b"A\n"
    bal.send_signal(signal.SIGTERM)
    expect_log(bal, "shutting down")
    assert wait_refused(bal.addr), "listener still accepting 10 s after SIGTERM"
    # the open client is still relayed
    assert c.request("during drain") == b"ECHO: during drain"
    assert bal.alive()
    c.close()
    bal.stopped_by_test = True
    assert bal.wait(15) == 0
    line = close_line_for(bal, local(c), timeout=1)
    assert line["reason"] == "client"


def test_drain_timeout_closes_remaining_clients(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([a], "--drain-timeout", "300ms")
    c = connect(bal)
    assert c.recv_line() == b"A\n"
    c.send(b"hi\n")
    assert c.recv_line() == b"ECHO: hi\n"
    bal.send_signal(signal.SIGTERM)
    assert c.recv_until_eof(timeout=10, allow_reset=True) == b""
    bal.stopped_by_test = True
    assert bal.wait(15) == 0
    line = close_line_for(bal, local(c), timeout=1)
    assert line["reason"] == "drain"
    # A connection cut by the drain still reports what it moved.
    assert (line["up"], line["down"]) == (3, 2 + 9), line


def test_second_signal_exits_at_once_with_status_1(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([a], "--drain-timeout", "60s")
    c = connect(bal)
    assert c.recv_line() == b"A\n"
    bal.send_signal(signal.SIGTERM)
    expect_log(bal, "shutting down")
    assert bal.alive()
    bal.stopped_by_test = True
    bal.send_signal(signal.SIGINT)
    assert bal.wait(10) == 1


def test_sigterm_idle_exits_zero(echo_backends, balancer):
    a, = echo_backends(["A"])
    bal = balancer([a])
    exchange(bal)
    assert bal.stop(signal.SIGTERM) == 0


# ---- IPv6 ------------------------------------------------------------------------------------------

needs_v6 = pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")


@needs_v6
def test_ipv6_listener_and_backend(server_factory, balancer):
    e = server_factory(["-l", "[::1]:0", "--threads", "1", "--banner", "V6"])
    bal = balancer([e], listen=("[::1]:0",))
    assert bal.addr[0] == "::1"
    c = connect(bal)
    assert c.recv_line() == b"V6\n"
    assert c.request("six") == b"ECHO: six"
    c.close()
    line = close_line_for(bal, local(c))
    assert line["client"] == "[::1]:%d" % local(c)[1]
    assert line["backend"] == "[::1]:%d" % e.addr[1]
    assert backend_entry(stats_json(bal.stats_addr), f"[::1]:{e.addr[1]}")["total"] == 1


@needs_v6
def test_ipv6_client_to_ipv4_backend_with_proxy_v1_and_v2(py_backend, balancer):
    p1, p2 = py_backend("record"), py_backend("record")
    bal = balancer([spec(p1, proxy="v1"), spec(p2, proxy="v2")], listen=("[::1]:0",))
    clis = [send_through(bal, b"v6data%d" % i) for i in range(2)]
    assert p1.wait_eof(0) == (f"PROXY TCP6 ::1 ::1 {clis[0][1]} {bal.addr[1]}\r\n".encode() + b"v6data0")
    _, fam, src, dst, rest = parse_v2(p2.wait_eof(0))
    assert fam == 0x21
    assert src == ("::1", clis[1][1]) and dst == ("::1", bal.addr[1])
    assert rest == b"v6data1"
