"""`tcpkit connect` on a terminal: driven through a real pseudo-terminal.

The peer is a socket server owned by the test, so it can push lines at
chosen moments (while the user is half-way through typing) and see exactly
which bytes the client sent.
"""
import os
import pty
import re
import select
import socket
import subprocess
import time

from conftest import require_binary, server_env

TIMEOUT = 15.0


class Terminal:
    """tcpkit connect running on the slave side of a pty."""

    def __init__(self, port, tmp_path):
        master, slave = pty.openpty()
        env = server_env({"TERM": "xterm", "TCPKIT_HISTFILE": str(tmp_path / "history")})
        self.proc = subprocess.Popen(
            [require_binary(), "connect", "127.0.0.1:%d" % port],
            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.screen = b""

    def type(self, data):
        os.write(self.master, data)

    def wait_for(self, pattern):
        """Reads terminal output until pattern (bytes regex) matches the text
        read since the start; returns the match."""
        deadline = time.monotonic() + TIMEOUT
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(self.screen)
            if m:
                return m
            left = deadline - time.monotonic()
            assert left > 0, "terminal never showed %r; it showed %r" % (pattern, self.screen[-600:])
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child exited and the pty closed
                    chunk = b""
                assert chunk, "terminal closed before %r; it showed %r" % (pattern, self.screen[-600:])
                self.screen += chunk

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


class Peer:
    """A one-connection server the test drives by hand."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.conn = None
        self.buf = b""

    def accept(self):
        self.lsock.settimeout(TIMEOUT)
        self.conn, _ = self.lsock.accept()
        self.conn.settimeout(TIMEOUT)

    def recv_line(self):
        while b"\n" not in self.buf:
            chunk = self.conn.recv(4096)
            assert chunk, "client closed before sending a full line; got %r" % self.buf
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def close(self):
        if self.conn:
            self.conn.close()
        self.lsock.close()


def test_server_line_arrives_while_typing_and_typed_text_survives(tmp_path):
    peer = Peer()
    term = Terminal(peer.port, tmp_path)
    try:
        peer.accept()
        term.wait_for(rb"> ")
        term.type(b"half-typ")
        term.wait_for(rb"half-typ")
        # Pushed while the line is unfinished: shown above the prompt, and the
        # prompt is redrawn with what was typed so far.
        peer.conn.sendall(b"pushed by server\n")
        term.wait_for(rb"< pushed by server\r?\n.*> half-typ")
        term.type(b"ed line\r")
        assert peer.recv_line() == b"half-typed line"
        peer.conn.sendall(b"reply\n")
        term.wait_for(rb"< reply")
        peer.conn.close()
        peer.conn = None
        assert term.proc.wait(TIMEOUT) == 0
    finally:
        term.close()
        peer.close()


def test_history_recalls_previous_line_with_up_arrow(tmp_path):
    peer = Peer()
    term = Terminal(peer.port, tmp_path)
    try:
        peer.accept()
        term.wait_for(rb"> ")
        term.type(b"first command\r")
        assert peer.recv_line() == b"first command"
        term.type(b"\x1b[A")  # Up: recall the previous line
        term.wait_for(rb"first command.*first command")
        term.type(b"\r")
        assert peer.recv_line() == b"first command"
        term.type(b"\x04")  # Ctrl-D on an empty line: end of input
        # End of input half-closes: the peer sees EOF, and the client still
        # shows what the peer sends afterwards before exiting 0.
        assert peer.conn.recv(1) == b""
        peer.conn.sendall(b"after eof\n")
        term.wait_for(rb"< after eof")
        peer.conn.close()
        peer.conn = None
        assert term.proc.wait(TIMEOUT) == 0
        # libedit stores spaces escaped as \\040.
        assert b"first\\040command" in (tmp_path / "history").read_bytes()
    finally:
        term.close()
        peer.close()
