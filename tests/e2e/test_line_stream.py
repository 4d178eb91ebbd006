"""Line protocol over a byte stream: fragmentation, pipelining, long lines, half-close."""

import socket
import struct


def test_request_sent_one_byte_at_a_time(echo_server):
    c = echo_server.connect(nodelay=True)
    req = "UPPER héllo wörld\n".encode()
    for b in req[:-1]:
        c.send(bytes([b]))
    assert c.nothing_within(0.3), "server replied before the line was complete"
    c.send(req[-1:])
    assert c.recv_line() == "HÉLLO WÖRLD\n".encode()
    for b in b"plain\r\n":
        c.send(bytes([b]))
    assert c.recv_line() == b"ECHO: plain\n"


def test_pipelined_requests_answered_in_order(echo_server):
    c = echo_server.connect()
    n = 2000
    c.send(b"".join(b"line %d\n" % i for i in range(n)))
    for i in range(n):
        assert c.recv_line() == b"ECHO: line %d\n" % i


def test_pipelined_mixed_commands_in_order(echo_server):
    c = echo_server.connect()
    reqs = [b"a", b"UPPER b", b"LOWER C", b"REVERSE xyz", b"ECHO e", b"", b"f"] * 50
    want = [b"ECHO: a", b"B", b"c", b"zyx", b"ECHO: e", b"ECHO: ", b"ECHO: f"] * 50
    c.send(b"".join(r + b"\n" for r in reqs) + b"QUIT\n")
    for w in want:
        assert c.recv_line() == w + b"\n"
    assert c.recv_line() == b"Goodbye!\n"
    c.expect_eof()


def test_oversize_line_then_normal_line_default_limit(echo_server):
    c = echo_server.connect()
    c.send(b"a" * 70000 + b"\nhello\n")
    assert c.recv_line() == b"ERROR: line too long (limit 65536 bytes)\n"
    assert c.recv_line() == b"ECHO: hello\n"
    assert c.request("UPPER ok") == b"OK"


def test_oversize_line_in_chunks_gets_exactly_one_error(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--max-line", "1K"])
    c = srv.connect()
    chunk = b"x" * 4096
    for _ in range(256):  # 1 MiB line
        c.send(chunk)
    c.send(b"\nafter\n")
    assert c.recv_line() == b"ERROR: line too long (limit 1024 bytes)\n"
    assert c.recv_line() == b"ECHO: after\n"
    # a line well under the limit still works, and a second long line gets its own error
    assert c.request("y" * 500) == b"ECHO: " + b"y" * 500
    c.send(b"z" * 3000 + b"\n")
    assert c.recv_line() == b"ERROR: line too long (limit 1024 bytes)\n"
    assert c.request("ok") == b"ECHO: ok"


def test_line_of_exactly_max_line_bytes_is_accepted(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--max-line", "1K"])
    c = srv.connect()
    c.send(b"e" * 1024 + b"\n")
    assert c.recv_line() == b"ECHO: " + b"e" * 1024 + b"\n"
    c.send(b"f" * 1025 + b"\n")
    assert c.recv_line() == b"ERROR: line too long (limit 1024 bytes)\n"


def test_oversize_final_line_at_half_close(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--max-line", "1K"])
    c = srv.connect()
    c.send(b"ok\n" + b"g" * 5000)
    c.shutdown_write()
    assert c.recv_until_eof(timeout=10) == b"ECHO: ok\nERROR: line too long (limit 1024 bytes)\n"


def test_max_line_suffix_and_plain_number(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--max-line", "100"])
    c = srv.connect()
    assert c.request("a" * 50) == b"ECHO: " + b"a" * 50
    c.send(b"b" * 200 + b"\n")
    assert c.recv_line() == b"ERROR: line too long (limit 100 bytes)\n"
    assert c.request("c") == b"ECHO: c"


def test_half_close_flushes_replies_and_final_unterminated_line(echo_server):
    c = echo_server.connect()
    c.send(b"a\nUPPER b\nlast")
    c.shutdown_write()
    assert c.recv_until_eof(timeout=10) == b"ECHO: a\nB\nECHO: last\n"


def test_half_close_after_many_pipelined_lines(echo_server):
    c = echo_server.connect()
    n = 5000
    c.send(b"".join(b"%d\n" % i for i in range(n)))
    c.shutdown_write()
    data = c.recv_until_eof(timeout=20)
    assert data == b"".join(b"ECHO: %d\n" % i for i in range(n))


def test_half_close_with_no_data(echo_server):
    c = echo_server.connect()
    c.shutdown_write()
    assert c.recv_until_eof(timeout=10) == b""


def test_client_reset_does_not_disturb_others(echo_server):
    a = echo_server.connect()
    b = echo_server.connect()
    a.send(b"partial line without newline")
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.close()  # RST
    assert b.request("still fine") == b"ECHO: still fine"
    c = echo_server.connect()
    assert c.request("new") == b"ECHO: new"
