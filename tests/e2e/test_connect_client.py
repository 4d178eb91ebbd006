"""`tcpkit connect` in piped mode, and its exit codes."""

import select
import socket
import struct
import subprocess
import time

import pytest

from conftest import (
    assert_no_sanitizer_reports,
    free_port,
    ipv6_loopback_available,
    require_binary,
    run_tcpkit,
    server_env,
)


def _target(addr):
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def test_connect_piped_lines(echo_server):
    cp = run_tcpkit(["connect", _target(echo_server.addr)], input=b"a\nb\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: a\nECHO: b\n"


def test_connect_piped_final_line_without_newline(echo_server):
    cp = run_tcpkit(["connect", _target(echo_server.addr)], input=b"a\nlast")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: a\nECHO: last\n"


def test_connect_piped_many_lines(echo_server):
    n = 30000
    cp = run_tcpkit(["connect", _target(echo_server.addr)], input=b"".join(b"L%d\n" % i for i in range(n)))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"".join(b"ECHO: L%d\n" % i for i in range(n))


def test_connect_piped_empty_stdin(echo_server):
    cp = run_tcpkit(["connect", _target(echo_server.addr)], input=b"")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b""


def test_connect_server_quits(echo_server):
    cp = run_tcpkit(["connect", _target(echo_server.addr)], input=b"hello\nQUIT\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: hello\nGoodbye!\n"


def test_connect_raw_binary_both_ways(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--framing", "length"])
    payloads = [bytes(range(256)), b"\x00\n\r\xff", b""]
    data = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    cp = run_tcpkit(["connect", _target(srv.addr)], input=data)
    assert cp.returncode == 0, cp.stderr
    want = b"".join(struct.pack(">I", len(p) + 5) + b"Got: " + p for p in payloads)
    assert cp.stdout == want


def test_connect_options_nodelay_keepalive_ipv4(echo_server):
    cp = run_tcpkit(["connect", "-4", "--nodelay", "--keepalive", "--connect-timeout", "5",
                     _target(echo_server.addr)], input=b"UPPER x\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"X\n"


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_connect_ipv6(server_factory):
    srv = server_factory(["--listen", "[::1]:0"])
    cp = run_tcpkit(["connect", "-6", _target(srv.addr)], input=b"v6\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: v6\n"


def test_connect_refused_exit_3():
    port = free_port()
    cp = run_tcpkit(["connect", f"127.0.0.1:{port}"], input=b"x\n")
    assert cp.returncode == 3, (cp.returncode, cp.stderr)
    assert cp.stderr, "no diagnostic on stderr"


def test_connect_timeout_exit_4():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    addr = lst.getsockname()
    fillers = []
    try:
        full = False
        for _ in range(16):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(addr)
            fillers.append(s)
            _, w, _ = select.select([], [s], [], 0.5)
            if not w:
                full = True  # this SYN was dropped: the accept queue is full
                break
        if not full:
            pytest.skip("could not fill a loopback accept queue")
        t0 = time.monotonic()
        cp = run_tcpkit(["connect", "--connect-timeout", "0.5", f"127.0.0.1:{addr[1]}"], input=b"x\n", timeout=20)
        assert cp.returncode == 4, (cp.returncode, cp.stderr)
        assert time.monotonic() - t0 < 10
    finally:
        for s in fillers:
            s.close()
        lst.close()


def _popen_connect(args):
    return subprocess.Popen(
        [require_binary(), "connect"] + args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(),
    )


def _finish(proc, timeout=10):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"tcpkit connect hung; stderr={err!r}")
    assert_no_sanitizer_reports(err.decode("utf-8", "replace"), "tcpkit connect")
    return proc.returncode, out, err


def test_connect_idle_timeout_exit_4():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    lst.settimeout(10)
    proc = _popen_connect(["--idle-timeout", "0.5", f"127.0.0.1:{lst.getsockname()[1]}"])
    conn = None
    try:
        conn, _ = lst.accept()  # never answer; stdin stays open and silent
        rc = None
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        assert rc is not None, "connect --idle-timeout 0.5 still running after 10 s of silence"
        rc, out, err = _finish(proc)
        assert rc == 4, (rc, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if conn:
            conn.close()
        lst.close()


def test_connect_reset_exit_5():
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    lst.settimeout(10)
    proc = _popen_connect([f"127.0.0.1:{lst.getsockname()[1]}"])
    try:
        conn, _ = lst.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST
        rc = None
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        assert rc is not None, "connect did not notice the reset within 10 s"
        rc, out, err = _finish(proc)
        assert rc == 5, (rc, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        lst.close()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--bogus", "127.0.0.1:1"],
        ["127.0.0.1"],
        ["127.0.0.1:99999"],
        ["127.0.0.1:notaport"],
        ["--connect-timeout", "abc", "127.0.0.1:1"],
        ["--idle-timeout", "-1", "127.0.0.1:1"],
        ["127.0.0.1:1", "extra-arg"],
    ],
)
def test_connect_usage_errors_exit_2(args):
    cp = run_tcpkit(["connect"] + args, input=b"")
    assert cp.returncode == 2, (args, cp.returncode, cp.stderr)
    assert cp.stderr, "no diagnostic on stderr"
