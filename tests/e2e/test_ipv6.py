"""IPv6 listeners."""

import pytest

from conftest import ipv6_loopback_available

pytestmark = pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")


def test_ipv6_loopback_listener(server_factory):
    srv = server_factory(["--listen", "[::1]:0"])
    assert srv.addr[0] == "::1", srv.stdout()
    assert "[::1]:" in srv.stdout()
    c = srv.connect()
    assert c.request("hello6") == b"ECHO: hello6"
    assert c.request("REVERSE abc") == b"cba"


def test_ipv4_and_ipv6_listeners_together(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--listen", "[::1]:0"], listeners=2)
    hosts = sorted(a[0] for a in srv.addrs)
    assert hosts == ["127.0.0.1", "::1"], srv.stdout()
    for i in range(2):
        c = srv.connect(i)
        assert c.request(f"via {i}") == f"ECHO: via {i}".encode()


def test_two_ipv4_listeners(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"], listeners=2)
    assert srv.addrs[0][1] != srv.addrs[1][1]
    for i in range(2):
        c = srv.connect(i)
        assert c.request(f"l{i}") == f"ECHO: l{i}".encode()
