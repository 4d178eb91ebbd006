"""Access rules and per-address limits on every server (docs/access.md).

Clients pick their source address by binding to it before connecting: all
of 127.0.0.0/8 is loopback, so 127.0.0.1 and 127.0.0.2 are two different
clients of a server listening on 127.0.0.1. A refused client is reset by
the server as soon as it is accepted, so the test reads until the reset (or
EOF) arrives; nothing here sleeps to synchronise. Servers that must count a
close before the next connect run one loop (--threads 1) and are polled with
STATS over another connection until the close shows.
"""

import os
import pwd
import re
import signal
import socket
import struct
import subprocess

import pytest

from conftest import Conn, fmt_addr, ipv6_loopback_available, require_binary, run_tcpkit, server_env
from balance_helpers import balancer, connect, echo_backends, stats_json, wait_stderr_until  # noqa: F401
from chat_helpers import chat_factory  # noqa: F401  (fixture)

A = "127.0.0.1"
B = "127.0.0.2"

SUMMARY_RE = re.compile(
    r"WARN refused (\d+) connections? in the last [0-9.]+ s "
    r"\(deny (\d+), per-ip (\d+), rate (\d+), full (\d+)\); last: (\S+) \(([a-z-]+)\)"
)


def dial(addr, source=None, timeout=10.0):
    """A socket connected to addr from source (an IP), with a timeout."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def expect_refused(addr, source=None):
    """The server resets (or closes) the connection without sending a byte.
    The reset may already be there when connect() looks at the socket."""
    try:
        s = dial(addr, source)
    except ConnectionResetError:
        return
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = None
    except socket.timeout:
        pytest.fail(f"a client from {source or 'default'} to {addr} was neither served nor refused")
    finally:
        s.close()
    assert data in (None, b""), f"a refused client from {source} got bytes: {data!r}"


def echo_client(addr, source=None):
    """An admitted echo client, checked with one round trip."""
    c = Conn.__new__(Conn)
    c.sock, c.timeout, c.buf, c.eof = dial(addr, source), 10.0, bytearray(), False
    assert c.request("hello") == b"ECHO: hello"
    return c


def conns_active(c):
    m = re.search(rb"conns_active=(\d+)", c.request("STATS"))
    assert m, "STATS has no conns_active"
    return int(m.group(1))


def wait_active(c, n, tries=2000):
    """Asks STATS (one round trip each) until the server counts n clients."""
    for _ in range(tries):
        if conns_active(c) == n:
            return
    pytest.fail(f"the server never counted {n} active clients")


def summaries(srv):
    return [tuple(m.groups()) for m in SUMMARY_RE.finditer(srv.stderr())]


def refused_total(srv):
    return sum(int(s[0]) for s in summaries(srv))


# ---- allow and deny on each server -------------------------------------------------


def test_echo_deny_refuses_that_source_only(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--deny", B])
    expect_refused(srv.addr, B)
    echo_client(srv.addr, A).close()
    srv.stop()
    assert summaries(srv) == [("1", "1", "0", "0", "0", B, "deny")], srv.stderr()


def test_echo_allow_list_refuses_everyone_else(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--allow", "10.0.0.0/8, 127.0.0.1", "--allow", "::1"])
    echo_client(srv.addr, A).close()
    expect_refused(srv.addr, B)
    expect_refused(srv.addr, "127.0.0.3")


def test_deny_wins_over_a_wider_allow(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--allow", "127.0.0.0/8", "--deny", "127.0.0.2/32"])
    echo_client(srv.addr, A).close()
    echo_client(srv.addr, "127.0.0.3").close()
    expect_refused(srv.addr, B)


def v1_response_type(addr, source, name):
    s = dial(addr, source)
    try:
        s.sendall(bytes([1, 1]) + len(name).to_bytes(4, "big") + name)
        hdr = b""
        while len(hdr) < 6:
            chunk = s.recv(6 - len(hdr))
            assert chunk, "EOF before a response header"
            hdr += chunk
        return hdr[1]
    finally:
        s.close()


def test_file_server_allow(server_factory, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"abc")
    srv = server_factory(["--listen", "127.0.0.1:0", "--root", str(tmp_path), "--allow", A],
                         command="file-server")
    assert v1_response_type(srv.addr, A, b"a.txt") == 2  # response: name:size
    expect_refused(srv.addr, B)


def test_chat_server_deny(chat_factory):
    srv = chat_factory("--deny", B)
    expect_refused(srv.addr, B)
    c = Conn.__new__(Conn)
    c.sock, c.timeout, c.buf, c.eof = dial(srv.addr, A), 10.0, bytearray(), False
    c.send(b'{"type":"TIME","id":1}\n')
    assert c.recv_line().startswith(b"{"), "no JSON reply from an admitted chat client"
    c.close()


def test_balance_deny_and_per_ip_limit(echo_backends, balancer):
    backends = echo_backends(1)
    bal = balancer(backends, "--deny", B, "--max-conns-per-ip", "1")
    expect_refused(bal.addr, B)
    a = connect(bal, source=A)
    assert a.recv_line() == b"b0\n"
    expect_refused(bal.addr, A)  # one at a time from 127.0.0.1
    expect_refused(bal.stats_addr, B)  # the stats listener has the same rules
    assert "backends" in stats_json(bal.stats_addr)


def test_serve_applies_the_rules_to_every_service(server_factory, tmp_path):
    srv = server_factory(
        ["--echo-listen", "127.0.0.1:0", "--chat-listen", "127.0.0.1:0", "--files-listen", "127.0.0.1:0",
         "--chat-ephemeral", "--files-root", str(tmp_path), "-t", "1", "--deny", B],
        command="serve", listeners=3)
    assert len(srv.addrs) == 3
    for addr in srv.addrs:
        expect_refused(addr, B)
    echo_client(srv.addrs[0], A).close()


# ---- IPv6 --------------------------------------------------------------------------


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ipv6_rules(server_factory):
    denied = server_factory(["--listen", "[::1]:0", "--deny", "::1"])
    expect_refused(denied.addr)
    allowed = server_factory(["--listen", "[::1]:0", "--allow", "::1/128"])
    echo_client(allowed.addr).close()
    # An IPv4 rule never matches an IPv6 peer: with only IPv4 allowed, ::1 is refused.
    v4only = server_factory(["--listen", "[::1]:0", "--allow", "127.0.0.0/8"])
    expect_refused(v4only.addr)


# ---- per-address limits ----------------------------------------------------------------


def test_max_conns_per_ip(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--threads", "1", "--max-conns-per-ip", "2"])
    a1 = echo_client(srv.addr, A)
    a2 = echo_client(srv.addr, A)
    expect_refused(srv.addr, A)
    b = echo_client(srv.addr, B)  # another address still gets in
    a1.close()
    wait_active(b, 2)  # a1's close was counted
    a3 = echo_client(srv.addr, A)
    expect_refused(srv.addr, A)
    for c in (a2, a3, b):
        c.close()
    srv.stop()
    counts = summaries(srv)
    assert [(s[0], s[2], s[6]) for s in counts] == [("2", "2", "per-ip")], srv.stderr()


def test_clients_that_reset_at_once_are_counted_out(server_factory):
    # A client that resets before the server has made its connection object
    # must still be counted out under its address, or that address would be
    # locked out for good.
    srv = server_factory(["--listen", "127.0.0.1:0", "--threads", "1", "--max-conns-per-ip", "1"])
    for _ in range(200):
        try:
            s = dial(srv.addr, A)
        except ConnectionResetError:
            continue
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    b = echo_client(srv.addr, B)
    wait_active(b, 1)
    echo_client(srv.addr, A).close()


def test_rate_per_ip(server_factory):
    # One new connection a minute after a burst of 3: the fourth is refused
    # however slowly this machine runs the test.
    srv = server_factory(["--listen", "127.0.0.1:0", "--rate-per-ip", "1/m", "--rate-burst", "3"])
    for _ in range(3):
        echo_client(srv.addr, A).close()
    expect_refused(srv.addr, A)
    expect_refused(srv.addr, A)
    echo_client(srv.addr, B).close()
    srv.stop()
    assert [(s[0], s[3], s[6]) for s in summaries(srv)] == [("2", "2", "rate")], srv.stderr()


# ---- the refusal log -------------------------------------------------------------------


def test_refusal_log_is_one_summary_not_a_line_per_attempt(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--threads", "2", "--deny", B,
                          "--max-conns-per-ip", "1", "--refusal-log-interval", "3600"])
    for _ in range(25):
        expect_refused(srv.addr, B)
    held = echo_client(srv.addr, A)
    for _ in range(3):
        expect_refused(srv.addr, A)
    assert summaries(srv) == []  # the hour is not over: nothing yet
    held.close()
    assert srv.stop() == 0
    # At shutdown the pending window is written, once.
    assert summaries(srv) == [("28", "25", "3", "0", "0", A, "per-ip")], srv.stderr()
    assert "refused connection:" not in srv.stderr()


def test_refusal_log_interval_flushes_on_its_own(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--deny", B, "--refusal-log-interval", "1"])
    attempts = 20
    for _ in range(attempts):
        expect_refused(srv.addr, B)
    # The summaries come from the server's timer, with no further event.
    text = wait_stderr_until(srv, lambda t: sum(int(m.group(1)) for m in SUMMARY_RE.finditer(t)) >= attempts,
                             timeout=15)
    assert text is not None, srv.stderr()
    lines = summaries(srv)
    assert refused_total(srv) == attempts, srv.stderr()
    assert len(lines) < attempts  # summarised, not one line per attempt
    for total, deny, per_ip, rate, full, last, why in lines:
        assert total == deny and (per_ip, rate, full) == ("0", "0", "0")
        assert (last, why) == (B, "deny")


def test_refusal_log_interval_zero_logs_each(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--deny", B, "--refusal-log-interval", "0"])
    for _ in range(3):
        expect_refused(srv.addr, B)
    srv.stop()
    assert srv.stderr().count(f"refused connection: {B} (deny)") == 3, srv.stderr()


# ---- --user ------------------------------------------------------------------------------


def ids_of(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
@pytest.mark.parametrize("command", ["echo-server", "file-server"])
def test_user_drops_privileges_in_every_thread(server_factory, tmp_path, command):
    nobody = pwd.getpwnam("nobody")
    args = ["--listen", "127.0.0.1:0", "--threads", "2", "--user", "nobody"]
    if command == "file-server":
        # Its digest threads exist before the switch: they must switch too.
        os.chmod(tmp_path, 0o755)
        (tmp_path / "a.txt").write_bytes(b"abc")
        args += ["--root", str(tmp_path), "--hash-threads", "2"]
    srv = server_factory(args, command=command)
    assert srv.wait_stderr(r"running as nobody \(uid %d, gid %d\)" % (nobody.pw_uid, nobody.pw_gid))
    # Served, so the worker loops run: then look at every thread.
    if command == "file-server":
        assert v1_response_type(srv.addr, A, b"a.txt") == 2
    else:
        echo_client(srv.addr, A).close()
    tasks = os.listdir(f"/proc/{srv.pid}/task")
    assert len(tasks) >= 3
    for task in tasks:
        where = f"{srv.pid}/task/{task}"
        assert ids_of(where, "Uid") == [nobody.pw_uid] * 4
        assert ids_of(where, "Gid") == [nobody.pw_gid] * 4
        assert 0 not in ids_of(where, "Groups")


def test_unknown_user_is_a_clean_error():
    cp = run_tcpkit(["echo-server", "--listen", "127.0.0.1:0", "--user", "no-such-user-tcpkit"])
    assert cp.returncode == 1
    assert b"--user 'no-such-user-tcpkit': no such user" in cp.stderr
    assert b"listening on" not in cp.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_user_root_and_non_root_switches_are_refused():
    cp = run_tcpkit(["file-server", "--listen", "127.0.0.1:0", "--user", "root"])
    assert cp.returncode == 1 and b"is root" in cp.stderr
    # Started as nobody, the server cannot become another user.
    binary = require_binary()
    nobody = pwd.getpwnam("nobody")

    def become_nobody():
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    cp = subprocess.run([binary, "chat-server", "--listen", "127.0.0.1:0", "--ephemeral", "--user", "daemon"],
                        stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env=server_env(),
                        preexec_fn=become_nobody, cwd="/")
    assert cp.returncode == 1, cp.stderr
    assert b"--user 'daemon' needs root" in cp.stderr


# ---- usage errors ----------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["echo-server", "--allow", "10.0.0.1/8"], b"host bits set beyond the prefix (the network is 10.0.0.0/8)"),
    (["echo-server", "--deny", "nonsense"], b"bad --deny"),
    (["echo-server", "--deny", "1.2.3.4,,5.6.7.8"], b"empty entry"),
    (["echo-server", "--rate-burst", "5"], b"--rate-burst needs --rate-per-ip"),
    (["echo-server", "--rate-per-ip", "0"], b"bad --rate-per-ip"),
    (["echo-server", "--rate-per-ip", "5/h"], b"bad --rate-per-ip"),
    (["echo-server", "--udp", "--deny", "127.0.0.2"], b"for TCP"),
    (["echo-server", "--per-ip-v6-prefix", "16"], b"bad --per-ip-v6-prefix"),
    (["chat-server", "--max-conns-per-ip", "x"], b"bad --max-conns-per-ip"),
    (["file-server", "--refusal-log-interval", "soon"], b"bad --refusal-log-interval"),
    (["serve", "--allow", "::1/129"], b"bad prefix length"),
    (["balance", "-b", "127.0.0.1:1", "--deny", "300.1.1.1"], b"not an IPv4 address"),
])
def test_bad_access_options_are_usage_errors(args, message):
    cp = run_tcpkit(args + ["--listen", "127.0.0.1:0"] if args[0] != "serve" else args)
    assert cp.returncode == 2, cp.stderr
    assert message in cp.stderr, cp.stderr


@pytest.mark.parametrize("command", ["echo-server", "chat-server", "file-server", "serve", "balance"])
def test_help_lists_the_access_options(command):
    out = run_tcpkit([command, "--help"]).stdout
    for opt in (b"--allow", b"--deny", b"--max-conns-per-ip", b"--rate-per-ip", b"--rate-burst",
                b"--refusal-log-interval", b"--user"):
        assert opt in out, (command, opt)


def test_sigterm_with_refusals_pending_exits_0(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--deny", "127.0.0.0/8"])
    expect_refused(srv.addr, A)
    assert srv.stop(signal.SIGTERM) == 0
    assert fmt_addr(srv.addr) in srv.stdout()
    assert summaries(srv) == [("1", "1", "0", "0", "0", A, "deny")], srv.stderr()
