"""`tcpkit serve`: the echo service with default settings (chat beside it
is covered in test_chat_*.py)."""

import signal

from conftest import run_many_clients

# Every listener on a free loopback port; chat history in memory; the file
# service serves a directory of the test's own.
def serve_args(root):
    return ["--echo-listen", "127.0.0.1:0", "--chat-listen", "127.0.0.1:0", "--chat-ephemeral",
            "--files-listen", "127.0.0.1:0", "--files-root", str(root)]


def test_serve_echo_service(server_factory, tmp_path):
    srv = server_factory(serve_args(tmp_path), command="serve")
    c = srv.connect()
    assert c.request("hello") == b"ECHO: hello"
    assert c.request("UPPER serve") == b"SERVE"
    assert c.request("QUIT") == b"Goodbye!"
    c.expect_eof()


def test_serve_concurrent_clients_and_graceful_stop(server_factory, tmp_path):
    srv = server_factory(serve_args(tmp_path), command="serve")
    failures = run_many_clients(srv.addr, n_clients=30, rounds=3, deadline_s=60)
    assert not failures, "\n".join(failures[:20])
    idle = srv.connect()
    assert idle.request("x") == b"ECHO: x"
    assert srv.stop(signal.SIGTERM, timeout=15) == 0
    assert idle.recv_line() == b"Server shutting down\n"
    idle.expect_eof()
