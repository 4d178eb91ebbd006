"""Real clients against the chat server: nc and socat as text clients, a JSON
client built from nothing but a socket and the json module; mode detection;
graceful shutdown; `tcpkit serve` running chat beside echo."""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time

import pytest

from chat_helpers import (
    BANNER,
    NAME_PROMPT,
    T_SHUTDOWN_RE,
    TIMESTAMP_RE,
    JsonClient,
    TextClient,
    chat_factory,  # noqa: F401  (fixture)
    check_error,
)


def _run(argv, data, timeout=20):
    try:
        return subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{argv[0]} hung: stdout={e.stdout!r} stderr={e.stderr!r}")


# -- nc and socat ------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc not installed")
def test_nc_piped_session(chat_factory):
    srv = chat_factory()
    watcher = JsonClient(srv, "watcher")
    host, port = srv.addr
    cp = _run(["nc", "-N", host, str(port)], b"alice\nhello from nc\n/users\n/quit\n")
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout
    assert out.startswith(BANNER + NAME_PROMPT), out
    lines = out[len(BANNER + NAME_PROMPT):].decode().split("\n")
    assert lines[-1] == "", lines  # ends with a complete line
    assert any(re.match(r"^\*\*\* welcome alice, you are in lobby with 2 users: alice, watcher$", l)
               for l in lines), lines
    assert "*** users in lobby (2): alice, watcher" in lines, lines
    assert lines[-2] == "*** goodbye", lines
    assert not [l for l in lines if l.startswith("ERROR")], lines
    ev, _ = watcher.wait_type("join", **{"from": "alice"})
    ev, _ = watcher.wait_chat("hello from nc")
    assert ev["from"] == "alice", ev
    watcher.wait_type("leave", **{"from": "alice"})


def _read_until(proc_fd, buf, pattern, timeout=10):
    """Reads a child's stdout (non-blocking fd) until pattern matches buf."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while not rx.search(buf[0]):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no {pattern!r} from the child within {timeout}s; got {buf[0][-500:]!r}")
        r, _, _ = select.select([proc_fd], [], [], remaining)
        if r:
            chunk = os.read(proc_fd, 65536)
            if not chunk:
                pytest.fail(f"child closed stdout before {pattern!r}; got {buf[0][-500:]!r}")
            buf[0] += chunk
    return rx.search(buf[0])


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc not installed")
def test_nc_interactive_receives_messages(chat_factory):
    srv = chat_factory()
    host, port = srv.addr
    proc = subprocess.Popen(["nc", host, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        fd = proc.stdout.fileno()
        buf = [b""]
        proc.stdin.write(b"ncuser\n")
        proc.stdin.flush()
        _read_until(fd, buf, rb"\*\*\* welcome ncuser, ")
        j = JsonClient(srv, "pyuser")
        _read_until(fd, buf, rb"\* pyuser joined lobby\n")
        j.say("hello nc")
        _read_until(fd, buf, rb"\n\[\d\d:\d\d:\d\d\] pyuser: hello nc\n")
        j.ok("PRIVATE", {"to": "ncuser", "content": "just for you"})
        _read_until(fd, buf, rb"\n\[\d\d:\d\d:\d\d\] pyuser -> you: just for you\n")
        proc.stdin.write(b"hi python\n/quit\n")
        proc.stdin.flush()
        ev, _ = j.wait_chat("hi python")
        assert ev["from"] == "ncuser", ev
        _read_until(fd, buf, rb"\*\*\* goodbye\n")
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")
def test_socat_crlf_session(chat_factory):
    srv = chat_factory()
    watcher = JsonClient(srv, "watcher")
    host, port = srv.addr
    cp = _run(["socat", "-t", "10", "-", f"TCP:{host}:{port},crlf"], b"bob\nhi from socat\n/time\n/quit\n")
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout
    assert out.startswith(BANNER + NAME_PROMPT), out
    lines = out[len(BANNER + NAME_PROMPT):].decode().split("\n")
    assert any(l.startswith("*** welcome bob, ") for l in lines), lines
    assert any(re.match(r"^\*\*\* \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", l) for l in lines), lines
    assert lines[-2:] == ["*** goodbye", ""], lines
    assert not [l for l in lines if "\r" in l or l.startswith("ERROR")], lines
    ev, _ = watcher.wait_chat("hi from socat")  # no \r in the message
    assert ev["from"] == "bob", ev


# -- a JSON client from nothing but a socket -------------------------------------------


class RawJson:
    """The whole client: a socket, a byte buffer, json.dumps/json.loads."""

    def __init__(self, addr):
        self.s = socket.create_connection(addr, timeout=10)
        self.buf = b""
        self.events = []

    def send(self, obj):
        self.s.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, typ, payload=None, rid=None):
        msg = {"type": typ, "id": rid if rid is not None else typ.lower()}
        if payload is not None:
            msg["payload"] = payload
        self.send(msg)
        while True:
            obj = self.recv()
            if obj["type"] in ("chat", "join", "leave", "private", "system", "ping"):
                self.events.append(obj)
                continue
            assert obj["id"] == msg["id"], (msg, obj)
            return obj


def test_raw_socket_json_client_full_session(chat_factory):
    srv = chat_factory()
    peer = JsonClient(srv, "peer")
    c = RawJson(srv.addr)

    r = c.call("REGISTER", {"name": "rawbot"})
    assert r["type"] == "REGISTER" and r["payload"]["status"] == "ok", r
    assert r["payload"]["name"] == "rawbot" and r["payload"]["room"] == "lobby", r
    assert r["payload"]["registered"] is False and isinstance(r["payload"]["message"], str), r
    peer.wait_type("join", **{"from": "rawbot"})

    r = c.call("JOIN", {"room": "bots"})
    assert r["payload"] == {"status": "ok", "room": "bots", "users": ["rawbot"]}, r
    peer.ok("JOIN", {"room": "bots"})

    r = c.call("MESSAGE", {"content": "beep boop"})
    assert r["payload"] == {"status": "ok", "message": "Message broadcasted"}, r
    ev, _ = peer.wait_chat("beep boop")
    assert ev["from"] == "rawbot" and ev["room"] == "bots", ev

    r = c.call("LIST_USERS")
    assert r["payload"]["room"] == "bots" and r["payload"]["users"] == ["peer", "rawbot"], r

    r = c.call("LIST_MESSAGES", {"limit": 5})
    assert r["payload"]["room"] == "bots", r
    assert [(m["from"], m["content"]) for m in r["payload"]["messages"]] == [("rawbot", "beep boop")], r

    r = c.call("PRIVATE", {"to": "peer", "content": "psst"})
    assert r["payload"] == {"status": "ok", "to": "peer"}, r
    ev, _ = peer.wait_type("private", content="psst")
    assert ev["from"] == "rawbot" and ev["to"] == "peer", ev

    r = c.call("ECHO", {"data": "round trip \u00e9"})
    assert r["payload"] == {"status": "ok", "data": "round trip \u00e9"}, r

    r = c.call("TIME")
    assert TIMESTAMP_RE.match(r["payload"]["time"]), r

    r = c.call("LIST_ROOMS")
    rooms = {x["name"]: x["users"] for x in r["payload"]["rooms"]}
    assert rooms["bots"] == 2 and set(rooms) <= {"bots", "lobby"}, r  # lobby may stay, empty

    r = c.call("STATS")
    st = r["payload"]
    assert st["users"] == 2 and st["rooms"] == len(rooms), (st, rooms)
    assert st["messages"] == 1 and st["private"] == 1, st
    assert st["conns_active"] == 2 and st["drops"] == 0, st

    r = c.call("PING", rid=42)
    assert r["type"] == "PING" and r["id"] == 42 and r["payload"]["status"] == "ok", r

    r = c.call("QUIT")
    assert r["payload"] == {"status": "ok", "message": "Goodbye!"}, r
    # then the server closes (events still in flight may come first)
    while True:
        try:
            obj = c.recv()
        except EOFError as e:
            assert e.args[0] == b"", e
            break
        except ConnectionResetError:
            break
        assert obj["type"] in ("chat", "join", "leave", "private", "system"), obj
    c.s.close()
    peer.wait_type("leave", **{"from": "rawbot"})
    # the client saw its own message as a chat event
    mine = [e for e in c.events if e["type"] == "chat"]
    assert [(e["from"], e["content"]) for e in mine] == [("rawbot", "beep boop")], c.events


# -- mode detection ----------------------------------------------------------------------


def test_detect_json_on_first_brace(chat_factory):
    srv = chat_factory("--detect-timeout", "30")
    c = srv.connect()
    c.send(b'{"type":"REGISTER","payload":{"name":"j"},"id":1}\n')
    r = json.loads(c.recv_line())  # no banner, no prompt: a JSON response first
    assert r["type"] == "REGISTER" and r["id"] == 1 and r["payload"]["status"] == "ok", r


def test_detect_text_after_silence(chat_factory):
    srv = chat_factory()
    t = TextClient(srv)
    # nothing sent: the banner and the prompt arrive after --detect-timeout
    t.expect_prompt(NAME_PROMPT)
    t.send_line("quiet")
    t.wait_line(r"^\*\*\* welcome quiet, ")


def test_detect_text_on_first_byte_without_waiting(chat_factory):
    # --detect-timeout 30: a text client that speaks first is not kept waiting
    srv = chat_factory("--detect-timeout", "30")
    t = TextClient(srv, "early")
    assert t.welcome


def test_brace_line_at_name_prompt_switches_to_json(chat_factory):
    srv = chat_factory()
    t = TextClient(srv)
    t.expect_prompt(NAME_PROMPT)
    j = JsonClient(srv, conn=t.c)
    assert j.register("switched")["name"] == "switched"
    assert j.ok("ECHO", {"data": "x"})["data"] == "x"


def test_mode_json_fixed(chat_factory):
    srv = chat_factory("--mode", "json")
    c = JsonClient(srv)
    assert c.c.nothing_within(1.0), c.c.buf  # no banner, no prompt, ever
    c.send_raw(b"alice\n")
    check_error(c.response(), "bad_json", "a text line in --mode json")
    assert c.register("alice")["name"] == "alice"


def test_mode_text_greets_at_once(chat_factory):
    srv = chat_factory("--mode", "text", "--detect-timeout", "30")
    t = TextClient(srv)
    t.expect_prompt(NAME_PROMPT)  # at once, no detection wait (30 s here)
    t.send_line("texty")
    t.wait_line(r"^\*\*\* welcome texty, ")


# -- shutdown ------------------------------------------------------------------------------


def test_graceful_shutdown_notices(chat_factory):
    srv = chat_factory()
    j = JsonClient(srv, "jay")
    t = TextClient(srv, "tom")
    unnamed = srv.connect()
    j.wait_type("join", **{"from": "tom"})
    srv.stopped_by_test = True
    srv.send_signal(signal.SIGTERM)
    ev, _ = j.wait_type("system")
    assert ev == {"type": "system", "from": "server", "content": "server shutting down", "room": "",
                  "timestamp": ev["timestamp"]}, ev
    assert list(ev.keys()) == ["type", "from", "content", "room", "timestamp"], ev
    assert TIMESTAMP_RE.match(ev["timestamp"]), ev
    rest = j.expect_closed(timeout=15)
    # the notice is the last word: everyone is leaving, nobody hears of it N times
    assert rest == [], rest
    t.wait_line(T_SHUTDOWN_RE, timeout=15)
    rest = t.c.recv_until_eof(timeout=15, allow_reset=True).decode()
    assert rest == "", rest
    # a client still in mode detection gets only the FIN
    assert unnamed.recv_until_eof(timeout=15, allow_reset=True) == b""
    for c in (j.c, t.c, unnamed):
        c.close()
    assert srv.wait(20) == 0, srv.stderr()[-3000:]


def test_shutdown_while_clients_disconnect(chat_factory):
    # Clients hang up at the moment SIGTERM arrives: the server must still
    # close every connection, exit 0 and free everything (LeakSanitizer).
    # A race, so several rounds, each with a fresh server.
    for rnd in range(20):
        srv = chat_factory("--shutdown-timeout", "2")
        clients = [JsonClient(srv, f"u{i}") for i in range(6)]
        clients[1].ok("PING")
        for c in clients:
            c.c.close()
        srv.stopped_by_test = True
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait(20)
        srv._join_pumps()
        err = srv.stderr()
        assert rc == 0 and "did not finish" not in err and "shutdown timeout" not in err, (
            f"round {rnd}: exit status {rc}\n{err[:1500]}\n...\n{err[-1500:]}")


def test_quit_client_left_open_does_not_block_shutdown(chat_factory):
    srv = chat_factory("--shutdown-timeout", "5")
    a = JsonClient(srv, "a")
    a.ok("QUIT")
    a.expect_closed()  # the server closed its side; the client keeps its socket
    b = JsonClient(srv, "b")
    srv.stopped_by_test = True
    srv.send_signal(signal.SIGTERM)
    b.wait_type("system")
    b.expect_closed(timeout=15)
    b.c.close()
    rc = srv.wait(20)
    srv._join_pumps()
    assert rc == 0, srv.stderr()[-3000:]
    assert "did not finish" not in srv.stderr(), srv.stderr()[-3000:]


# -- tcpkit serve -----------------------------------------------------------------------------


def test_serve_runs_chat_beside_echo(chat_factory, tmp_path):
    srv = chat_factory("--echo-listen", "127.0.0.1:0", "--chat-listen", "127.0.0.1:0", "--chat-ephemeral",
                       "--files-listen", "127.0.0.1:0", "--files-root", str(tmp_path),
                       command="serve", listeners=3)
    out = srv.stdout()
    addrs = {}
    for line in out.splitlines():
        m = re.search(r"listening on (\S+):(\d+) \((\w+)\)", line)
        if m:
            addrs[m.group(3)] = (m.group(1), int(m.group(2)))
    assert set(addrs) >= {"echo", "chat", "files"}, out
    echo_i = srv.addrs.index(addrs["echo"])
    chat_i = srv.addrs.index(addrs["chat"])
    e = srv.connect(echo_i)
    assert e.request("hello") == b"ECHO: hello"
    j = JsonClient(srv, conn=srv.connect(chat_i))
    j.register("served")
    t = TextClient(srv, conn=srv.connect(chat_i))
    t.login("person")
    j.wait_type("join", **{"from": "person"})
    t.send_line("hi from serve")
    ev, _ = j.wait_chat("hi from serve")
    assert ev["from"] == "person", ev
    assert e.request("UPPER chat") == b"CHAT"
    srv.stopped_by_test = True
    srv.send_signal(signal.SIGTERM)
    j.wait_type("system")
    t.wait_line(T_SHUTDOWN_RE)
    assert e.recv_line(timeout=15) == b"Server shutting down\n"
    for c in (e, j.c, t.c):
        c.recv_until_eof(timeout=15, allow_reset=True)
        c.close()
    assert srv.wait(20) == 0, srv.stderr()[-3000:]
