"""`tcpkit chat`, the chat client, against a real `tcpkit chat-server`.

Piped mode is checked end to end through its JSON-lines output; terminal
mode through a pseudo-terminal that is the client's controlling terminal (so
the password prompt can use /dev/tty). Every wait has a deadline; nothing
sleeps to synchronise.
"""
import fcntl
import json
import os
import pty
import queue
import re
import select
import signal
import socket
import subprocess
import termios
import threading
import time

import pytest

from conftest import assert_no_sanitizer_reports, fmt_addr, free_port, require_binary, run_tcpkit, server_env

TIMEOUT = 20.0


def chat_server(server_factory, *args):
    return server_factory(["--listen", "127.0.0.1:0", "--ephemeral"] + list(args), command="chat-server")


def json_lines(data):
    """stdout bytes -> list of objects; every line must be one JSON object."""
    out = []
    for line in data.decode().splitlines():
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def password_file(tmp_path, name, password, mode=0o600):
    path = tmp_path / name
    path.write_text(password + "\n")
    os.chmod(path, mode)
    return str(path)


class PipedClient:
    """`tcpkit chat` with its stdin held open, its stdout read line by line."""

    def __init__(self, srv, *args):
        self.proc = subprocess.Popen(
            [require_binary(), "chat", fmt_addr(srv.addr)] + list(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=server_env(),
        )
        self.lines = queue.Queue()
        self.seen = []
        self._err = b""
        threading.Thread(target=self._pump, daemon=True).start()
        self._err_thread = threading.Thread(target=self._pump_err, daemon=True)
        self._err_thread.start()

    def _pump(self):
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put(line)
        self.lines.put(None)

    def _pump_err(self):
        self._err = self.proc.stderr.read()

    @property
    def err(self):
        """stderr so far (all of it once the process has exited)."""
        if self.proc.poll() is not None:
            self._err_thread.join(TIMEOUT)
        return self._err

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait_for(self, pred, what):
        """Reads JSON lines until pred(obj) holds; returns that object."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {what}; got {self.seen}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"client exited before {what}; got {self.seen}"
            obj = json.loads(line)
            self.seen.append(obj)
            if pred(obj):
                return obj

    def no_line_within(self, seconds):
        """True if no line arrives within `seconds` (a short negative check)."""
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        self.seen.append(json.loads(line) if line else line)
        return False

    def finish(self):
        """Ends stdin; returns (exit status, the rest of stdout as objects)."""
        self.proc.stdin.close()
        rc = self.proc.wait(TIMEOUT)
        rest = []
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            if line is None:
                break
            rest.append(json.loads(line))
        return rc, rest

    def kill(self):
        """Ends the process if still running; checks its stderr for sanitizer reports."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            return
        assert_no_sanitizer_reports(self.err.decode("utf-8", "replace"), "tcpkit chat")


def is_ok(obj, type_):
    return obj.get("type") == type_ and obj.get("payload", {}).get("status") == "ok"


# ---------------------------------------------------------------- piped mode


def test_piped_message_reaches_another_piped_client(server_factory):
    srv = chat_server(server_factory)
    alice = PipedClient(srv, "--name", "alice")
    try:
        alice.wait_for(lambda o: is_ok(o, "REGISTER"), "alice's login")
        cp = run_tcpkit(["chat", fmt_addr(srv.addr), "--name", "bob"], input=b"hello alice\n/users\n")
        assert cp.returncode == 0, cp.stderr
        out = json_lines(cp.stdout)
        assert is_ok(out[0], "REGISTER") and out[0]["payload"]["name"] == "bob"
        assert any(is_ok(o, "MESSAGE") for o in out)
        users = [o for o in out if is_ok(o, "LIST_USERS")]
        assert users and users[0]["payload"]["users"] == ["alice", "bob"]
        assert is_ok(out[-1], "QUIT"), out[-1]
        # The receiver's stdout carries the chat event, unchanged.
        ev = alice.wait_for(lambda o: o.get("type") == "chat", "bob's message")
        assert ev["from"] == "bob" and ev["content"] == "hello alice" and ev["room"] == "lobby"
        rc, rest = alice.finish()
        assert rc == 0, alice.err
        assert rest and is_ok(rest[-1], "QUIT")
    finally:
        alice.kill()


def test_piped_commands_raw_json_and_every_answer_before_quit(server_factory):
    srv = chat_server(server_factory)
    script = (
        "/join dev\n"
        "first in dev\n"
        "//slashed\n"
        "\n"
        "/history 5\n"
        '{"type":"ECHO","payload":{"data":"raw"},"id":7}\n'
        "/msg nobody hi\n"
        "/time\n"
    )
    cp = run_tcpkit(["chat", fmt_addr(srv.addr), "--name", "carl"], input=script.encode())
    assert cp.returncode == 0, cp.stderr
    out = json_lines(cp.stdout)
    answers = [o for o in out if o["type"].isupper() or o["type"] == "error"]
    # One answer per request, in order, QUIT last.
    assert [a["type"] for a in answers] == [
        "REGISTER", "JOIN", "MESSAGE", "MESSAGE", "LIST_MESSAGES", "ECHO", "error", "TIME", "QUIT",
    ], answers
    assert answers[1]["payload"]["room"] == "dev"
    assert answers[5]["id"] == 7 and answers[5]["payload"]["data"] == "raw"
    assert answers[6]["payload"]["code"] == "no_such_user"
    chats = [o["content"] for o in out if o["type"] == "chat"]
    assert sorted(chats) == ["/slashed", "first in dev"]


def test_piped_bad_command_is_not_sent_and_exits_1(server_factory):
    srv = chat_server(server_factory)
    cp = run_tcpkit(["chat", fmt_addr(srv.addr), "--name", "dora"], input=b"/frobnicate\n/msg\nok\n")
    assert cp.returncode == 1
    err = cp.stderr.decode()
    assert "line 1: unknown command /frobnicate" in err and "line 2: usage: /msg NAME TEXT" in err
    out = json_lines(cp.stdout)
    assert [o["type"] for o in out if o["type"].isupper()] == ["REGISTER", "MESSAGE", "QUIT"]


def test_piped_room_option_and_ping_is_answered_not_printed(server_factory):
    # --idle-timeout 1: the server pings after 0.5 s of silence and closes
    # after 1 s unless the client answers.
    srv = chat_server(server_factory, "--idle-timeout", "1")
    c = PipedClient(srv, "--name", "erin", "--room", "dev")
    try:
        c.wait_for(lambda o: is_ok(o, "JOIN") and o["payload"]["room"] == "dev", "the --room join")
        if not any(o.get("type") == "join" and o["room"] == "dev" for o in c.seen):
            c.wait_for(lambda o: o.get("type") == "join" and o["room"] == "dev", "the join event")
        # Several idle periods pass; pings are answered and never printed,
        # and the server keeps the connection.
        assert c.no_line_within(2.5), c.seen[-1]
        assert c.proc.poll() is None, c.err
        c.send("/rooms\n")
        rooms = c.wait_for(lambda o: is_ok(o, "LIST_ROOMS"), "the room list")
        assert {"name": "dev", "users": 1} in rooms["payload"]["rooms"]
        rc, rest = c.finish()
        assert rc == 0, c.err
        assert all(o.get("type") != "ping" for o in c.seen + rest)
    finally:
        c.kill()


def test_password_file_creates_account_then_logs_in(server_factory, tmp_path):
    srv = chat_server(server_factory)
    addr = fmt_addr(srv.addr)
    pw = password_file(tmp_path, "pw", "correct horse")
    cp = run_tcpkit(["chat", addr, "--name", "frank", "--password-file", pw], input=b"created\n", timeout=60)
    assert cp.returncode == 0, cp.stderr
    out = json_lines(cp.stdout)
    assert is_ok(out[0], "REGISTER") and out[0]["payload"]["registered"] is True
    assert b"warning" not in cp.stderr
    # The account exists now: the same file logs in with AUTH.
    cp = run_tcpkit(["chat", addr, "--name", "frank", "--password-file", pw], input=b"back\n", timeout=60)
    assert cp.returncode == 0, cp.stderr
    out = json_lines(cp.stdout)
    assert is_ok(out[0], "AUTH") and out[0]["payload"]["name"] == "frank"
    # Without a password and without a terminal: a clear error, status 1.
    cp = run_tcpkit(["chat", addr, "--name", "frank"], input=b"x\n")
    assert cp.returncode == 1
    assert b"--password-file" in cp.stderr
    assert json_lines(cp.stdout)[0]["payload"]["code"] == "name_registered"
    # A wrong password (in a file everyone may read: a warning).
    bad = password_file(tmp_path, "bad", "wrong horse", mode=0o644)
    cp = run_tcpkit(["chat", addr, "--name", "frank", "--password-file", bad], input=b"x\n", timeout=60)
    assert cp.returncode == 1
    assert b"readable by everyone" in cp.stderr and b"bad_password" in cp.stderr


def test_name_taken_exits_1(server_factory):
    srv = chat_server(server_factory)
    holder = PipedClient(srv, "--name", "gina")
    try:
        holder.wait_for(lambda o: is_ok(o, "REGISTER"), "gina's login")
        # Names are unique without regard to case.
        cp = run_tcpkit(["chat", fmt_addr(srv.addr), "--name", "GINA"], input=b"hi\n")
        assert cp.returncode == 1
        assert b"cannot log in as GINA" in cp.stderr and b"name_taken" in cp.stderr
        assert json_lines(cp.stdout)[0]["payload"]["code"] == "name_taken"
        rc, _ = holder.finish()
        assert rc == 0
    finally:
        holder.kill()


def test_server_closing_first_exits_1(server_factory):
    srv = chat_server(server_factory)
    c = PipedClient(srv, "--name", "hank")
    try:
        c.wait_for(lambda o: is_ok(o, "REGISTER"), "the login")
        assert srv.stop() == 0
        c.wait_for(lambda o: o.get("type") == "system", "the shutdown notice")
        assert c.proc.wait(TIMEOUT) == 1
        assert b"closed the connection" in c.err
    finally:
        c.kill()


def test_usage_errors_and_refused():
    for args in (
        ["127.0.0.1:1"],
        ["--name", "x"],
        ["127.0.0.1:1", "--name", ""],
        ["127.0.0.1:1", "--name", "x", "--connect-timeout", "soon"],
        ["not-an-address", "--name", "x"],
        ["127.0.0.1:1", "--name", "x", "--bogus"],
    ):
        cp = run_tcpkit(["chat"] + args)
        assert cp.returncode == 2, (args, cp.stderr)
        assert cp.stderr
    cp = run_tcpkit(["chat", "--help"])
    assert cp.returncode == 0 and b"--password-file" in cp.stdout
    cp = run_tcpkit(["chat", "127.0.0.1:%d" % free_port(), "--name", "x"])
    assert cp.returncode == 3


def fake_server(reply):
    """A one-shot server that answers the first bytes it gets with reply."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def serve():
        lsock.settimeout(TIMEOUT)
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                conn.recv(4096)
                conn.sendall(reply)
                conn.recv(4096)  # until the client goes away
            except OSError:
                pass
        lsock.close()

    threading.Thread(target=serve, daemon=True).start()
    return lsock.getsockname()[1]


def test_server_line_over_1_mib_exits_1():
    port = fake_server(
        b'{"type":"REGISTER","payload":{"status":"ok","name":"x","room":"lobby"}}\n'
        + b'{"type":"chat","content":"' + b"a" * (1024 * 1024 + 16) + b'"}\n'
    )
    cp = run_tcpkit(["chat", "127.0.0.1:%d" % port, "--name", "x"], input=b"")
    assert cp.returncode == 1
    assert b"longer than 1048576 bytes" in cp.stderr


def test_not_a_json_chat_server_exits_1():
    port = fake_server(b"Welcome to something else\n")
    cp = run_tcpkit(["chat", "127.0.0.1:%d" % port, "--name", "x"], input=b"")
    assert cp.returncode == 1
    assert b"does not speak the chat JSON protocol" in cp.stderr


def test_not_json_line_cannot_send_terminal_escapes():
    # A byte that starts a multi-byte UTF-8 character (0xe0) followed by ESC:
    # the ESC must be shown as '?' like any control character, not copied
    # out as the "rest" of the character (found by fuzz_chat_render).
    port = fake_server(b"hello \xe0\x1b[2J\xf0\x07\x9b\xc2\x1b]0;owned\x07 bye\n")
    cp = run_tcpkit(["chat", "127.0.0.1:%d" % port, "--name", "x"], input=b"")
    assert cp.returncode == 1
    line = [l for l in cp.stderr.split(b"\n") if b"does not speak" in l]
    assert len(line) == 1, cp.stderr
    shown = line[0]
    assert b"hello" in shown and b"bye" in shown
    for c in shown:
        assert c >= 0x20 and c != 0x7F, shown
    assert b"\xc2\x9b" not in shown


# ------------------------------------------------------------- terminal mode


class Terminal:
    """tcpkit chat on a pseudo-terminal that is its controlling terminal."""

    def __init__(self, addr, *args):
        master, slave = pty.openpty()

        def take_terminal():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [require_binary(), "chat", fmt_addr(addr)] + list(args),
            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            env=server_env({"TERM": "xterm", "HOME": "/nonexistent"}),
            preexec_fn=take_terminal,
        )
        self.master = master
        self.slave = slave  # kept open to read the terminal's modes
        self.screen = b""

    def type(self, data):
        os.write(self.master, data)

    def echo_on(self):
        return bool(termios.tcgetattr(self.slave)[3] & termios.ECHO)

    def wait_for(self, pattern):
        deadline = time.monotonic() + TIMEOUT
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(self.screen)
            if m:
                return m
            left = deadline - time.monotonic()
            assert left > 0, "terminal never showed %r; it showed %r" % (pattern, self.screen[-800:])
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                assert chunk, "terminal closed before %r; it showed %r" % (pattern, self.screen[-800:])
                self.screen += chunk

    def close(self):
        """Ends the process if still running; checks what it printed for
        sanitizer reports."""
        killed = self.proc.poll() is None
        if killed:
            self.proc.kill()
        self.proc.wait(10)
        while select.select([self.master], [], [], 0)[0]:  # the rest, already written
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.screen += chunk
        os.close(self.master)
        os.close(self.slave)
        if not killed:
            assert_no_sanitizer_reports(self.screen.decode("utf-8", "replace"), "tcpkit chat")


def json_peer(srv, name):
    """A raw JSON-mode client, logged in."""
    c = srv.connect(timeout=TIMEOUT)
    c.send(json.dumps({"type": "REGISTER", "payload": {"name": name}}) + "\n")
    while True:
        obj = json.loads(c.recv_line())
        if obj["type"] == "REGISTER":
            assert obj["payload"]["status"] == "ok", obj
            return c


def peer_wait(c, pred):
    while True:
        obj = json.loads(c.recv_line())
        if pred(obj):
            return obj


def test_terminal_password_prompt_no_echo_and_messages_while_typing(server_factory, tmp_path):
    srv = chat_server(server_factory)
    pw = "s3cret-passw0rd"
    cp = run_tcpkit(
        ["chat", fmt_addr(srv.addr), "--name", "ivy", "--password-file", password_file(tmp_path, "pw", pw)],
        input=b"", timeout=60,
    )
    assert cp.returncode == 0, cp.stderr
    term = Terminal(srv.addr, "--name", "ivy")
    try:
        # The name is registered: the password is asked for, without echo.
        term.wait_for(rb"Password for ivy: ")
        assert not term.echo_on()
        term.type(pw.encode() + b"\r")
        term.wait_for(rb"\*\*\* you are ivy \(registered\), in lobby")
        assert pw.encode() not in term.screen
        term.wait_for(rb"\[lobby\]> ")
        peer = json_peer(srv, "jack")
        term.wait_for(rb"\* jack joined lobby")
        # An incoming message while a line is half typed: shown above the
        # prompt, which is redrawn with the typed text.
        term.type(b"half-typ")
        term.wait_for(rb"\[lobby\]> half-typ")
        peer.send(json.dumps({"type": "MESSAGE", "payload": {"content": "hi ivy"}}) + "\n")
        term.wait_for(rb"\[\d\d:\d\d:\d\d\] jack: hi ivy\r?\n.*\[lobby\]> half-typ")
        term.type(b"ed line\r")
        ev = peer_wait(peer, lambda o: o.get("type") == "chat" and o["from"] == "ivy")
        assert ev["content"] == "half-typed line"
        # A private message and a command rendered as text; the prompt follows the room.
        peer.send(json.dumps({"type": "PRIVATE", "payload": {"to": "ivy", "content": "psst"}}) + "\n")
        term.wait_for(rb"jack -> you: psst")
        term.type(b"/join dev\r")
        term.wait_for(rb"\*\*\* you are in dev with 1 user: ivy")
        term.wait_for(rb"\[dev\]> ")
        term.type(b"/quit\r")
        term.wait_for(rb"\*\*\* goodbye")
        assert term.proc.wait(TIMEOUT) == 0
    finally:
        term.close()


def test_terminal_ctrl_c_at_password_prompt_restores_echo(server_factory, tmp_path):
    srv = chat_server(server_factory)
    cp = run_tcpkit(
        ["chat", fmt_addr(srv.addr), "--name", "kim", "--password-file",
         password_file(tmp_path, "pw", "another-password")],
        input=b"", timeout=60,
    )
    assert cp.returncode == 0, cp.stderr
    term = Terminal(srv.addr, "--name", "kim")
    try:
        term.wait_for(rb"Password for kim: ")
        assert not term.echo_on()
        term.type(b"half\x03")  # Ctrl-C: SIGINT from the terminal
        assert term.proc.wait(TIMEOUT) == 128 + signal.SIGINT
        assert term.echo_on()
    finally:
        term.close()
