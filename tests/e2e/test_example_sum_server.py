"""examples/sum_server.c, the library's worked example, really serves and shuts down."""
import os
import re
import signal
import socket
import subprocess

from conftest import assert_no_sanitizer_reports, require_binary, server_env


def _example_binary():
    return os.path.join(os.path.dirname(require_binary()), "examples", "sum_server")


def test_sum_server_answers_and_says_bye_on_sigterm():
    proc = subprocess.Popen([_example_binary(), "127.0.0.1:0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=server_env())
    try:
        line = proc.stdout.readline().decode()
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert m, line
        c = socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=10)
        c.sendall(b"1 2 3\n40 2\n-5 x 5\n")
        f = c.makefile("rb")
        assert [f.readline() for _ in range(3)] == [b"6\n", b"42\n", b"0\n"]
        proc.send_signal(signal.SIGTERM)
        assert f.readline() == b"bye\n"
        assert f.readline() == b""
        assert proc.wait(15) == 0
        c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert_no_sanitizer_reports(proc.stderr.read().decode("utf-8", "replace"), "sum_server")
