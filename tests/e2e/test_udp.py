"""UDP echo: one datagram per request line, one datagram per reply."""

import socket

import pytest


@pytest.fixture
def udp_server(server_factory):
    return server_factory(["--listen", "127.0.0.1:0", "--udp"])


def _udp(addr, payload, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(payload, addr)
        data, src = s.recvfrom(65536)
        assert src == addr, f"reply from {src}, expected {addr}"
        return data
    finally:
        s.close()


def _strip(reply):
    return reply[:-1] if reply.endswith(b"\n") else reply


def test_udp_plain_datagram(udp_server):
    assert _strip(_udp(udp_server.addr, b"hello")) == b"ECHO: hello"


def test_udp_datagram_with_newline(udp_server):
    assert _strip(_udp(udp_server.addr, b"hello\n")) == b"ECHO: hello"
    assert _strip(_udp(udp_server.addr, b"crlf\r\n")) == b"ECHO: crlf"


def test_udp_commands(udp_server):
    assert _strip(_udp(udp_server.addr, "UPPER héllo".encode())) == "HÉLLO".encode()
    assert _strip(_udp(udp_server.addr, b"LOWER ABC")) == b"abc"
    assert _strip(_udp(udp_server.addr, b"REVERSE abc")) == b"cba"
    assert _strip(_udp(udp_server.addr, b"TIME")).endswith(b"Z")


def test_udp_many_datagrams_one_socket(udp_server):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        for i in range(50):
            s.sendto(b"d%d" % i, udp_server.addr)
            data, _ = s.recvfrom(65536)
            assert _strip(data) == b"ECHO: d%d" % i
    finally:
        s.close()


def test_udp_two_clients_get_their_own_replies(udp_server):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.settimeout(5)
    b.settimeout(5)
    try:
        a.sendto(b"from a", udp_server.addr)
        b.sendto(b"from b", udp_server.addr)
        assert _strip(a.recvfrom(65536)[0]) == b"ECHO: from a"
        assert _strip(b.recvfrom(65536)[0]) == b"ECHO: from b"
    finally:
        a.close()
        b.close()


def test_udp_large_datagram_survives(udp_server):
    # a large datagram must not crash the server; it is answered or dropped
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.sendto(b"x" * 60000, udp_server.addr)
        try:
            s.recvfrom(65536)
        except socket.timeout:
            pass
    finally:
        s.close()
    assert _strip(_udp(udp_server.addr, b"after big")) == b"ECHO: after big"
    assert udp_server.alive()


def test_udp_ipv6(server_factory):
    from conftest import ipv6_loopback_available

    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")
    srv = server_factory(["--listen", "[::1]:0", "--udp"])
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.sendto(b"hello6", srv.addr)
        data, _ = s.recvfrom(65536)
        assert _strip(data) == b"ECHO: hello6"
    finally:
        s.close()
