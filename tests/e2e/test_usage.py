"""Command-line handling: usage errors exit 2, runtime errors exit 1."""

import json
import socket

import pytest

from conftest import run_tcpkit

LISTEN = ["--listen", "127.0.0.1:0"]


def test_no_command_exit_2():
    cp = run_tcpkit([])
    assert cp.returncode == 2
    assert cp.stderr


def test_unknown_command_exit_2():
    cp = run_tcpkit(["frobnicate"])
    assert cp.returncode == 2
    assert cp.stderr


def test_help_and_version_exit_0():
    cp = run_tcpkit(["--help"])
    assert cp.returncode == 0 and b"echo-server" in cp.stdout
    cp = run_tcpkit(["--version"])
    assert cp.returncode == 0 and cp.stdout.startswith(b"tcpkit ")


def test_echo_server_help_exit_0():
    cp = run_tcpkit(["echo-server", "--help"])
    assert cp.returncode == 0, cp.stderr
    assert b"--listen" in cp.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["--framing", "xml"],
        ["--framing"],
        ["--max-line", "abc"],
        ["--max-line", "10X"],
        ["--max-line", "-5"],
        ["--max-frame", "lots"],
        ["--idle-timeout", "abc"],
        ["--idle-timeout", "-1"],
        ["--stall-timeout", "soon"],
        ["--shutdown-timeout", "x"],
        ["--max-clients", "-3"],
        ["--max-clients", "many"],
        ["--threads", "abc"],
        ["--threads", "-2"],
        ["--log-level", "loud"],
        ["--log-format", "xml"],
        ["--out-high", "big"],
        ["--out-max", "?"],
        ["--listen", "not-an-address"],
        ["--listen", "127.0.0.1:99999"],
        ["--listen", "127.0.0.1:"],
        ["stray-positional"],
    ],
)
def test_echo_server_usage_errors_exit_2(args):
    cp = run_tcpkit(["echo-server"] + LISTEN + args, timeout=15)
    assert cp.returncode == 2, (args, cp.returncode, cp.stderr)
    assert cp.stderr, f"no diagnostic for {args}"
    assert b"listening on" not in cp.stdout


def test_serve_unknown_option_exit_2():
    cp = run_tcpkit(["serve", "--echo-listen", "127.0.0.1:0", "--bogus"], timeout=15)
    assert cp.returncode == 2
    assert cp.stderr


def test_address_in_use_exit_1():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        cp = run_tcpkit(["echo-server", "--listen", f"127.0.0.1:{port}"], timeout=15)
        assert cp.returncode == 1, (cp.returncode, cp.stderr)
        assert cp.stderr
        assert b"listening on" not in cp.stdout
    finally:
        holder.close()


def test_unassignable_address_exit_1():
    # 192.0.2.1 (TEST-NET-1) is not a local address: bind fails, nothing is contacted
    cp = run_tcpkit(["echo-server", "--listen", "192.0.2.1:0"], timeout=15)
    assert cp.returncode == 1, (cp.returncode, cp.stderr)
    assert cp.stderr


def test_log_format_json_lines(server_factory):
    srv = server_factory(LISTEN + ["--log-format", "json", "--log-level", "debug"])
    c = srv.connect()
    assert c.request("hi") == b"ECHO: hi"
    c.request("QUIT")
    c.expect_eof()
    srv.stop(timeout=15)
    lines = [l for l in srv.stderr().splitlines() if l.strip()]
    assert lines, "debug level produced no log lines"
    for l in lines:
        try:
            obj = json.loads(l)
        except ValueError:
            pytest.fail(f"log line is not JSON: {l!r}")
        assert isinstance(obj, dict), l


def test_log_level_off_is_silent(server_factory):
    srv = server_factory(LISTEN + ["--log-level", "off"])
    c = srv.connect()
    assert c.request("hi") == b"ECHO: hi"
    c.close()
    assert srv.stop(timeout=15) == 0
    assert srv.stderr().strip() == "", srv.stderr()


@pytest.mark.parametrize("level", ["debug", "info", "warn", "error"])
def test_log_levels_accepted(server_factory, level):
    srv = server_factory(LISTEN + ["--log-level", level, "--log-format", "text"])
    c = srv.connect()
    assert c.request("lv") == b"ECHO: lv"


def test_size_and_time_values_with_suffixes_and_fractions(server_factory):
    srv = server_factory(LISTEN + ["--max-line", "2K", "--max-frame", "1M", "--idle-timeout", "2.5",
                                   "--stall-timeout", "0.5", "--shutdown-timeout", "1.5",
                                   "--out-high", "128K", "--out-max", "1M", "--max-clients", "10",
                                   "--threads", "2"])
    c = srv.connect()
    c.send(b"q" * 3000 + b"\n")
    assert c.recv_line() == b"ERROR: line too long (limit 2048 bytes)\n"
    assert c.request("ok") == b"ECHO: ok"
