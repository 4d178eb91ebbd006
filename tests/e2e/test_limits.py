"""--max-clients and --idle-timeout."""

import time

import pytest

from conftest import Conn, is_reset


def _served_or_busy(addr):
    """Open a client and send a line: 'served', or 'busy' if refused with the busy line / closed."""
    c = Conn(addr)
    try:
        try:
            c.send(b"probe\n")
            line = c.recv_line(10)
        except EOFError:
            return "closed", c
        except OSError as e:
            if is_reset(e):
                return "closed", c
            raise
        if line == b"ECHO: probe\n":
            return "served", c
        if line == b"ERROR: server busy\n":
            return "busy", c
        raise AssertionError(f"unexpected reply {line!r}")
    except BaseException:
        c.close()
        raise


def test_max_clients_rejects_extra_client_with_busy(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--max-clients", "2"])
    a = srv.connect()
    b = srv.connect()
    assert a.request("a") == b"ECHO: a"
    assert b.request("b") == b"ECHO: b"
    c = srv.connect()
    assert c.recv_line() == b"ERROR: server busy\n"
    c.expect_eof(allow_reset=True)
    # the admitted clients are unaffected
    assert a.request("a2") == b"ECHO: a2"
    assert b.request("b2") == b"ECHO: b2"


@pytest.mark.parametrize("threads", ["1", "4"])
def test_max_clients_is_global_across_loop_threads(server_factory, threads):
    srv = server_factory(["--listen", "127.0.0.1:0", "--max-clients", "3", "--threads", threads])
    admitted = [srv.connect() for _ in range(3)]
    for i, c in enumerate(admitted):
        assert c.request(f"in{i}") == f"ECHO: in{i}".encode()
    # SO_REUSEPORT spreads new connections over the loops; every one of them must be refused
    for i in range(8):
        c = srv.connect()
        assert c.recv_line() == b"ERROR: server busy\n", f"extra client #{i} was not refused"
        c.expect_eof(allow_reset=True)
    for i, c in enumerate(admitted):
        assert c.request(f"still{i}") == f"ECHO: still{i}".encode()


def test_max_clients_slot_freed_serves_new_client(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--max-clients", "2"])
    a = srv.connect()
    b = srv.connect()
    assert a.request("a") == b"ECHO: a"
    assert b.request("b") == b"ECHO: b"
    a.request("QUIT")
    a.expect_eof()
    # the server may not have released the slot yet at the instant we see EOF;
    # retry (bounded) until served. Each attempt must be either busy or served.
    deadline = time.monotonic() + 10
    outcome = None
    while time.monotonic() < deadline:
        outcome, c = _served_or_busy(srv.addr)
        srv.clients.append(c)
        if outcome == "served":
            break
    assert outcome == "served", "a freed slot never admitted a new client"
    assert b.request("b2") == b"ECHO: b2"


def test_idle_timeout_closes_silent_client(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--idle-timeout", "0.5"])
    c = srv.connect()
    t0 = time.monotonic()
    c.expect_eof(timeout=10)
    assert time.monotonic() - t0 < 10


def test_idle_timeout_after_activity(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--idle-timeout", "1"])
    c = srv.connect()
    assert c.request("x") == b"ECHO: x"
    c.expect_eof(timeout=10)
    # other, new clients are still served
    d = srv.connect()
    assert d.request("y") == b"ECHO: y"


def test_idle_timeout_reset_by_traffic(server_factory):
    # 10x margin: a request every 0.1 s against a 1 s idle timeout, for ~2.5 s.
    srv = server_factory(["--listen", "127.0.0.1:0", "--idle-timeout", "1"])
    c = srv.connect()
    end = time.monotonic() + 2.5
    i = 0
    while time.monotonic() < end:
        assert c.request(f"k{i}") == f"ECHO: k{i}".encode()
        c.nothing_within(0.1)
        i += 1
    c.expect_eof(timeout=10)


def test_idle_timeout_zero_disables(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--idle-timeout", "0"])
    c = srv.connect()
    assert c.nothing_within(1.0), "server sent data or closed with idle timeout disabled"
    assert c.request("alive") == b"ECHO: alive"
