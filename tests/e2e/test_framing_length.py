"""Length-prefixed framing: [u32 BE len][bytes] -> [u32 BE len]'Got: '+bytes."""

import struct

import pytest


@pytest.fixture
def length_server(server_factory):
    return server_factory(["--listen", "127.0.0.1:0", "--framing", "length"])


def test_length_frame_round_trip(length_server):
    c = length_server.connect()
    c.send_frame(b"hello")
    assert c.recv_frame() == b"Got: hello"


def test_length_empty_frame(length_server):
    c = length_server.connect()
    c.send_frame(b"")
    assert c.recv_frame() == b"Got: "


def test_length_binary_payload_verbatim(length_server):
    c = length_server.connect()
    payload = bytes(range(256)) + b"\n\r\x00" + "héllo".encode()
    c.send_frame(payload)
    assert c.recv_frame() == b"Got: " + payload


def test_length_frames_pipelined_in_order(length_server):
    c = length_server.connect()
    msgs = [b"m%d" % i + b"x" * (i % 37) for i in range(500)]
    c.send(b"".join(struct.pack(">I", len(m)) + m for m in msgs))
    for m in msgs:
        assert c.recv_frame() == b"Got: " + m


def test_length_frame_one_byte_at_a_time(length_server):
    c = length_server.connect(nodelay=True)
    data = struct.pack(">I", 11) + b"split frame"
    for b in data:
        c.send(bytes([b]))
    assert c.recv_frame() == b"Got: split frame"
    c.send_frame(b"next")
    assert c.recv_frame() == b"Got: next"


def test_length_large_frame_under_default_limit(length_server):
    c = length_server.connect()
    payload = bytes((i * 7) & 0xFF for i in range(512 * 1024))
    c.send_frame(payload)
    assert c.recv_frame(timeout=20) == b"Got: " + payload


def test_length_frame_too_large_error_then_close(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--framing", "length", "--max-frame", "1K"])
    c = srv.connect()
    c.send_frame(b"a" * 1024)  # exactly the limit is allowed
    assert c.recv_frame() == b"Got: " + b"a" * 1024
    c.send(struct.pack(">I", 1025))
    reply = c.recv_frame()
    assert reply.startswith(b"ERROR: frame too large"), reply
    c.expect_eof(allow_reset=True)


def test_length_huge_declared_length_default_limit(length_server):
    c = length_server.connect()
    c.send(struct.pack(">I", 0xFFFFFFFF) + b"abc")
    reply = c.recv_frame()
    assert reply.startswith(b"ERROR: frame too large"), reply
    c.expect_eof(allow_reset=True)
    d = length_server.connect()
    d.send_frame(b"fine")
    assert d.recv_frame() == b"Got: fine"


def test_length_half_close_flushes_replies(length_server):
    c = length_server.connect()
    c.send(struct.pack(">I", 1) + b"a" + struct.pack(">I", 2) + b"bc")
    c.shutdown_write()
    data = c.recv_until_eof(timeout=10)
    assert data == struct.pack(">I", 6) + b"Got: a" + struct.pack(">I", 7) + b"Got: bc"
