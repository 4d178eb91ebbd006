"""Real-world clients (netcat-openbsd, socat) piping lines to the server."""

import shutil
import subprocess

import pytest


def _run(argv, data, timeout=20):
    try:
        return subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{argv[0]} hung: stdout={e.stdout!r} stderr={e.stderr!r}")


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc not installed")
def test_nc_pipes_lines(echo_server):
    host, port = echo_server.addr
    cp = _run(["nc", "-N", host, str(port)], b"a\nb\nUPPER c\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: a\nECHO: b\nC\n"


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc not installed")
def test_nc_many_lines(echo_server):
    host, port = echo_server.addr
    n = 20000
    cp = _run(["nc", "-N", host, str(port)], b"".join(b"n%d\n" % i for i in range(n)))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"".join(b"ECHO: n%d\n" % i for i in range(n))


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc not installed")
def test_nc_quit(echo_server):
    host, port = echo_server.addr
    cp = _run(["nc", "-N", host, str(port)], b"hi\nQUIT\n")
    assert cp.stdout == b"ECHO: hi\nGoodbye!\n"


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")
def test_socat_pipes_lines(echo_server):
    host, port = echo_server.addr
    # -t 10: how long socat waits for the server after stdin EOF (it exits as
    # soon as the server closes; the default 0.5 s would race under ASan)
    cp = _run(["socat", "-t", "10", "-", f"TCP:{host}:{port}"], b"a\nREVERSE abc\n\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b"ECHO: a\ncba\nECHO: \n"


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")
def test_socat_crlf_client(echo_server):
    host, port = echo_server.addr
    cp = _run(["socat", "-t", "10", "-", f"TCP:{host}:{port},crlf"], b"hello\nLOWER ABC\n")
    assert cp.returncode == 0, cp.stderr
    # socat sends CRLF line ends; the server drops the \r before echoing
    assert cp.stdout == b"ECHO: hello\nabc\n"
