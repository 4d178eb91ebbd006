"""Shared helpers for the chat-server black-box tests (docs/PROTOCOL.md, "Chat").

Two client wrappers over conftest.Conn:

- JsonClient: JSON-lines mode. Server lines are split into *responses* (the
  answer to a request, including {"type":"error"}) and *events* (chat, join,
  leave, private, system, ping). A JSON client may see the response to its
  MESSAGE before or after the chat event of that message, so both kinds are
  kept in their own queues and waited for separately.
- TextClient: text mode, as a person at nc sees it: the banner, the
  `Your name: ` / `Password: ` prompts (no newline), then lines.

Every read has a deadline; nothing here sleeps to synchronise.
"""

import json
import re
import signal
import time
from collections import deque

import pytest

from conftest import DEFAULT_TIMEOUT

EVENT_TYPES = frozenset({"chat", "join", "leave", "private", "system", "ping"})
BANNER = b"Welcome to tcpkit chat. Type /help for commands.\n"
NAME_PROMPT = b"Your name: "
PASSWORD_PROMPT = b"Password: "
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

# Text-mode line shapes (times are [HH:MM:SS], UTC).
T_CHAT_RE = re.compile(r"^\[\d\d:\d\d:\d\d\] (?P<from>[^ ]+): (?P<text>.*)$")
T_JOIN_RE = re.compile(r"^\[\d\d:\d\d:\d\d\] \* (?P<who>[^ ]+) joined (?P<room>[^ ]+)$")
T_LEAVE_RE = re.compile(r"^\[\d\d:\d\d:\d\d\] \* (?P<who>[^ ]+) left (?P<room>[^ ]+)(?: \((?P<why>.*)\))?$")
T_PRIV_IN_RE = re.compile(r"^\[\d\d:\d\d:\d\d\] (?P<from>[^ ]+) -> you: (?P<text>.*)$")
T_PRIV_OUT_RE = re.compile(r"^\[\d\d:\d\d:\d\d\] you -> (?P<to>[^ ]+): (?P<text>.*)$")
T_WELCOME_RE = re.compile(r"^\*\*\* welcome (?P<name>[^ ]+), you are in lobby with (?P<n>\d+) users?: (?P<users>.*)$")
T_SHUTDOWN_RE = re.compile(r"^\[\d\d:\d\d:\d\d\] \*\*\* server shutting down$")

# ASan keeps freed memory in a quarantine (256 MiB by default) that would show
# up in RSS without being the server's doing; memory tests shrink it.
ASAN_ENV = {"ASAN_OPTIONS": "quarantine_size_mb=8"}


def graceful_stop(srv, timeout=20.0):
    """SIGTERM with the test's clients still connected, as a real shutdown
    goes: each client reads to EOF (the server flushes, then closes) and then
    closes its socket. Returns a list of problems (empty when the server exited
    0 and every client saw EOF)."""
    problems = []
    srv.stopped_by_test = True
    srv.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for i, c in enumerate(srv.clients):
        if c.sock.fileno() < 0 or c.eof:
            c.close()
            continue  # closed by the test, or already at EOF
        try:
            c.recv_until_eof(timeout=max(0.01, deadline - time.monotonic()), allow_reset=True)
        except (TimeoutError, OSError) as e:
            problems.append(f"client {i}: no EOF after SIGTERM ({e!r})")
        c.close()
    rc = srv.wait(max(1.0, deadline - time.monotonic()))
    if rc is None:
        srv.proc.kill()
        srv.proc.wait(10)
        problems.append(f"chat server did not exit within {timeout}s of SIGTERM")
    elif rc != 0:
        err = srv.stderr()
        problems.append(f"chat server exited with status {rc} on SIGTERM (expected 0); stderr:\n"
                        f"{err[:2000]}\n...\n{err[-1500:]}")
    srv._join_pumps()
    return problems


@pytest.fixture
def chat_factory(server_factory):
    """start(*options, db=None, env=None) runs `tcpkit chat-server --listen
    127.0.0.1:0` with --ephemeral, or --db db when given (command="serve" runs
    `tcpkit serve` with just the options). At the end of the test each server
    still running is stopped with graceful_stop; server_factory's teardown then
    checks for sanitizer reports."""
    servers = []

    def start(*args, db=None, env=None, command="chat-server", listeners=1):
        argv = [str(a) for a in args]
        if command == "chat-server":
            argv = ["--listen", "127.0.0.1:0"] + (["--db", str(db)] if db is not None else ["--ephemeral"]) + argv
        srv = server_factory(argv, command=command, env=env, listeners=listeners)
        servers.append(srv)
        return srv

    yield start
    problems = []
    for srv in servers:
        if srv.proc.poll() is None and not srv.stopped_by_test:
            problems += graceful_stop(srv)
    if problems:
        pytest.fail("\n".join(problems))


def stats_from_text(line):
    """'*** stats users=1 rooms=2 …' -> {'users': 1, 'rooms': 2, …}"""
    assert line.startswith("*** stats "), line
    out = {}
    for tok in line[len("*** stats ") :].split():
        k, _, v = tok.partition("=")
        assert _, f"stats token without '=': {tok!r} in {line!r}"
        out[k] = int(v)
    return out


class JsonClient:
    """A JSON-mode client; the first byte it sends is '{' so auto detection
    picks JSON."""

    def __init__(self, srv, name=None, password=None, conn=None, timeout=DEFAULT_TIMEOUT, **kw):
        self.c = conn if conn is not None else srv.connect(timeout=timeout, **kw)
        self.events = deque()
        self.responses = deque()
        self.next_id = 1
        self.name = None
        self.join_payload = None
        if name is not None:
            self.join_payload = self.register(name, password)

    # -- low level ---------------------------------------------------------
    def send_obj(self, obj):
        self.c.send(json.dumps(obj).encode() + b"\n")

    def send_raw(self, data):
        self.c.send(data)

    def send(self, typ, payload=None, id=None):
        """Sends one request; returns its id (allocated when not given)."""
        if id is None:
            id = self.next_id
            self.next_id += 1
        obj = {"type": typ, "id": id}
        if payload is not None:
            obj["payload"] = payload
        self.send_obj(obj)
        return id

    def read_obj(self, timeout=None):
        line = self.c.recv_line(timeout)
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"server line is not JSON: {line!r}")
        assert isinstance(obj, dict), f"server line is not an object: {line!r}"
        return obj

    def _pump_one(self, deadline):
        obj = self.read_obj(max(0.001, deadline - time.monotonic()))
        if obj.get("type") in EVENT_TYPES:
            self.events.append(obj)
        else:
            self.responses.append(obj)

    # -- responses ---------------------------------------------------------
    def response(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.c.timeout)
        while not self.responses:
            self._pump_one(deadline)
        return self.responses.popleft()

    def request(self, typ, payload=None, timeout=None):
        rid = self.send(typ, payload)
        r = self.response(timeout)
        assert r.get("id") == rid, f"response id {r.get('id')!r} != request id {rid} for {typ}: {r}"
        return r

    def ok(self, typ, payload=None, timeout=None):
        r = self.request(typ, payload, timeout)
        assert r.get("type") == typ and isinstance(r.get("payload"), dict), f"{typ} {payload} -> {r}"
        assert r["payload"].get("status") == "ok", f"{typ} {payload} -> {r}"
        return r["payload"]

    def error(self, typ, payload=None, code=None, timeout=None):
        r = self.request(typ, payload, timeout)
        return check_error(r, code, f"{typ} {payload}")

    # -- events --------------------------------------------------------------
    def next_event(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.c.timeout)
        while not self.events:
            self._pump_one(deadline)
        return self.events.popleft()

    def wait_event(self, pred, timeout=None, what="event"):
        """Consumes events up to and including the first for which pred(ev) is
        true; returns (event, [events skipped before it])."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.c.timeout)
        skipped = []
        while True:
            try:
                ev = self.next_event(max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                pytest.fail(f"no {what} within the deadline; events seen meanwhile: {skipped[-20:]}")
            if pred(ev):
                return ev, skipped
            skipped.append(ev)

    def wait_chat(self, content, timeout=None):
        return self.wait_event(
            lambda e: e.get("type") == "chat" and e.get("content") == content, timeout, f"chat {content!r}"
        )

    def wait_type(self, typ, timeout=None, **fields):
        return self.wait_event(
            lambda e: e.get("type") == typ and all(e.get(k) == v for k, v in fields.items()),
            timeout,
            f"{typ} event {fields}",
        )

    # -- conveniences ------------------------------------------------------------
    def register(self, name, password=None):
        p = {"name": name}
        if password is not None:
            p["password"] = password
        out = self.ok("REGISTER", p, timeout=30)
        self.name = name
        return out

    def auth(self, name, password):
        out = self.ok("AUTH", {"name": name, "password": password}, timeout=30)
        self.name = name
        return out

    def say(self, content):
        return self.ok("MESSAGE", {"content": content})

    def expect_closed(self, timeout=None):
        """Reads (and returns) what is left until EOF or reset."""
        data = self.c.recv_until_eof(timeout=timeout, allow_reset=True)
        objs = []
        for line in data.split(b"\n"):
            if line.strip():
                objs.append(json.loads(line))
        return objs


def check_error(r, code=None, what="request"):
    assert r.get("type") == "error", f"{what}: expected an error, got {r}"
    p = r.get("payload")
    assert isinstance(p, dict) and p.get("status") == "error", f"{what}: {r}"
    assert isinstance(p.get("message"), str) and p["message"], f"{what}: error without message: {r}"
    if code is not None:
        if isinstance(code, (tuple, set, frozenset, list)):
            assert p.get("code") in code, f"{what}: want code in {code}, got {r}"
        else:
            assert p.get("code") == code, f"{what}: want code {code!r}, got {r}"
    return p


class TextClient:
    """A text-mode client as a person at nc would be."""

    def __init__(self, srv, name=None, password=None, conn=None, timeout=DEFAULT_TIMEOUT, **kw):
        self.c = conn if conn is not None else srv.connect(timeout=timeout, **kw)
        self.greeted = False
        self.name = None
        self.welcome = None
        if name is not None:
            self.login(name, password)

    def send_line(self, text):
        if isinstance(text, str):
            text = text.encode()
        self.c.send(text + b"\n")

    def read_until(self, marker, timeout=None):
        """Bytes up to and including marker (which need not end a line)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.c.timeout)
        while True:
            i = self.c.buf.find(marker)
            if i >= 0:
                out = bytes(self.c.buf[: i + len(marker)])
                del self.c.buf[: i + len(marker)]
                return out
            if self.c.eof:
                raise EOFError(f"EOF while waiting for {marker!r}; got {bytes(self.c.buf)!r}")
            try:
                self.c._fill(deadline)
            except TimeoutError:
                pytest.fail(f"no {marker!r} within the deadline; got {bytes(self.c.buf)[-500:]!r}")

    def expect_prompt(self, prompt=NAME_PROMPT, timeout=None):
        """Reads up to the prompt; returns the lines before it (str, no newline).
        The first name prompt must come right after the banner."""
        data = self.read_until(prompt, timeout)
        before = data[: -len(prompt)]
        if prompt == NAME_PROMPT and not self.greeted:
            assert before == BANNER, f"expected exactly the banner before the first prompt, got {before!r}"
            self.greeted = True
        return [l.decode("utf-8") for l in before.split(b"\n")[:-1]] if before else []

    def line(self, timeout=None):
        raw = self.c.recv_line(timeout)
        assert raw.endswith(b"\n")
        return raw[:-1].decode("utf-8")

    def wait_line(self, pattern, timeout=None):
        """Consumes lines up to the first matching the regex; returns
        (match, [lines skipped before it])."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + (timeout if timeout is not None else self.c.timeout)
        skipped = []
        while True:
            try:
                ln = self.line(max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                pytest.fail(f"no line matching {rx.pattern!r} within the deadline; lines seen: {skipped[-20:]}")
            m = rx.search(ln)
            if m:
                return m, skipped
            skipped.append(ln)

    def login(self, name, password=None):
        """Answers the name prompt (and the password prompt); returns the
        welcome match."""
        self.send_line(name)
        self.expect_prompt(NAME_PROMPT)
        if password is not None:
            self.expect_prompt(PASSWORD_PROMPT)
            self.send_line(password)
        m, skipped = self.wait_line(T_WELCOME_RE)
        assert not [s for s in skipped if s.startswith("ERROR")], skipped
        assert m.group("name") == name, m.group(0)
        self.name = name
        self.welcome = m
        return m

    def cmd(self, text, pattern, timeout=None):
        """Sends a line and waits for a line matching pattern."""
        self.send_line(text)
        return self.wait_line(pattern, timeout)

    def stats(self):
        m, _ = self.cmd("/stats", r"^\*\*\* stats .*$")
        return stats_from_text(m.group(0))
