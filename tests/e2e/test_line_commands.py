"""Line protocol: every command, plain lines, CRLF, strict mode, banner."""

import datetime
import re

import pytest


def test_plain_line_is_echoed(echo_server):
    c = echo_server.connect()
    assert c.request("hello") == b"ECHO: hello"


def test_empty_line_is_echoed_as_empty(echo_server):
    c = echo_server.connect()
    assert c.request("") == b"ECHO: "


def test_echo_command(echo_server):
    c = echo_server.connect()
    assert c.request("ECHO t") == b"ECHO: t"
    assert c.request("ECHO two words") == b"ECHO: two words"


def test_upper_command_utf8(echo_server):
    c = echo_server.connect()
    assert c.request("UPPER héllo") == "HÉLLO".encode()
    assert c.request("UPPER abc def") == b"ABC DEF"


def test_lower_command_utf8(echo_server):
    c = echo_server.connect()
    assert c.request("LOWER ÀB") == "àb".encode()
    assert c.request("LOWER HeLLo WoRLD") == b"hello world"


def test_reverse_command_by_characters(echo_server):
    c = echo_server.connect()
    assert c.request("REVERSE héllo") == "olléh".encode()
    assert c.request("REVERSE abc") == b"cba"
    assert c.request("REVERSE 日本語") == "語本日".encode()


def test_time_command_is_rfc3339_utc(echo_server):
    c = echo_server.connect()
    reply = c.request("TIME").decode()
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z", reply)
    assert m, f"TIME reply not an RFC 3339 UTC timestamp: {reply!r}"
    ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((ts - now).total_seconds()) < 3600, f"TIME {reply} far from now {now.isoformat()}"


def _parse_stats(line):
    assert line.startswith(b"STATS "), f"STATS reply: {line!r}"
    fields = {}
    for tok in line.decode().split()[1:]:
        assert "=" in tok, f"STATS field without '=': {tok!r} in {line!r}"
        k, v = tok.split("=", 1)
        fields[k] = v
    return fields


def test_stats_command_fields(echo_server):
    c = echo_server.connect()
    for i in range(3):
        assert c.request(f"msg{i}") == f"ECHO: msg{i}".encode()
    fields = _parse_stats(c.request("STATS"))
    for key in ("conns_total", "conns_active", "bytes_in", "bytes_out", "messages", "resp_avg_us", "resp_p99_us"):
        assert key in fields, f"STATS lacks {key}: {fields}"
        float(fields[key])  # numeric
    assert int(fields["conns_total"]) >= 1
    assert int(fields["conns_active"]) >= 1
    assert int(fields["messages"]) >= 3
    assert int(fields["bytes_in"]) >= len(b"msg0\nmsg1\nmsg2\n")
    assert int(fields["bytes_out"]) >= len(b"ECHO: msg0\n") * 3


def test_stats_counts_connections(echo_server):
    conns = [echo_server.connect() for _ in range(3)]
    for i, c in enumerate(conns):
        assert c.request(f"x{i}") == f"ECHO: x{i}".encode()
    fields = _parse_stats(conns[0].request("STATS"))
    assert int(fields["conns_total"]) >= 3
    assert int(fields["conns_active"]) >= 3


@pytest.mark.parametrize("word", ["QUIT", "quit"])
def test_quit_says_goodbye_and_closes(echo_server, word):
    c = echo_server.connect()
    assert c.request("hi") == b"ECHO: hi"
    assert c.request(word) == b"Goodbye!"
    c.expect_eof(timeout=10)


def test_command_words_are_exact_upper_case(echo_server):
    c = echo_server.connect()
    assert c.request("echo hi") == b"ECHO: echo hi"
    assert c.request("upper abc") == b"ECHO: upper abc"
    assert c.request("Reverse abc") == b"ECHO: Reverse abc"
    assert c.request("time") == b"ECHO: time"


def test_command_must_be_whole_first_word(echo_server):
    c = echo_server.connect()
    assert c.request("TIMEOUT") == b"ECHO: TIMEOUT"
    assert c.request("UPPERCASE x") == b"ECHO: UPPERCASE x"
    assert c.request("QUITTER") == b"ECHO: QUITTER"
    # still connected
    assert c.request("ECHO still here") == b"ECHO: still here"


def test_crlf_line_endings(echo_server):
    c = echo_server.connect()
    c.send(b"hello\r\nUPPER abc\r\nECHO t\r\n\r\n")
    assert c.recv_line() == b"ECHO: hello\n"
    assert c.recv_line() == b"ABC\n"
    assert c.recv_line() == b"ECHO: t\n"
    assert c.recv_line() == b"ECHO: \n"


def test_crlf_quit(echo_server):
    c = echo_server.connect()
    c.send(b"QUIT\r\n")
    assert c.recv_line() == b"Goodbye!\n"
    c.expect_eof()


def test_plain_line_bytes_echoed_verbatim(echo_server):
    c = echo_server.connect()
    c.send(b"a\x00b\xff\xfe\tz\n")
    assert c.recv_line() == b"ECHO: a\x00b\xff\xfe\tz\n"


@pytest.mark.parametrize("cmd", [b"UPPER", b"LOWER", b"REVERSE"])
def test_invalid_utf8_argument_does_not_break_connection(echo_server, cmd):
    c = echo_server.connect()
    c.send(cmd + b" \xff\xc3(\xe2\x82 abc\xf0\x9f\n")
    line = c.recv_line()
    assert line.endswith(b"\n")
    assert c.request("after") == b"ECHO: after"


def test_strict_rejects_plain_lines_and_stays_usable(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--strict"])
    c = srv.connect()
    assert c.request("hello") == b"ERROR: Unknown command"
    assert c.request("echo hi") == b"ERROR: Unknown command"
    assert c.request("ECHO hi") == b"ECHO: hi"
    assert c.request("UPPER ok") == b"OK"
    assert c.request("nope") == b"ERROR: Unknown command"
    assert c.request("QUIT") == b"Goodbye!"
    c.expect_eof()


def test_banner_sent_first(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--banner", "Welcome to tcpkit!"])
    c = srv.connect()
    assert c.recv_line() == b"Welcome to tcpkit!\n"
    assert c.request("hello") == b"ECHO: hello"
    c2 = srv.connect()
    assert c2.recv_line() == b"Welcome to tcpkit!\n"
