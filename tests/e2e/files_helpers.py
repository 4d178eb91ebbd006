"""Shared helpers for the file-transfer black-box tests (docs/PROTOCOL.md,
"File transfer").

A client written from the wire spec alone, with nothing but socket, struct,
hmac and hashlib:

- V1Client: the seed's protocol (request / response `name:size` / data /
  end / error).
- V2Client: HELLO (optionally with HMAC-SHA256 authentication: the keys
  derived as the spec says, every frame after the HELLOs tagged and checked
  with its sequence number), GET, LIST, STAT, PUT, DATA, END, CANCEL,
  PING/PONG and ERROR, with the frames of concurrent streams sorted into one
  queue per stream.

FrameTap is a TCP relay that sits between one of tcpkit's own clients and
the server, reads the frame headers going each way (to prove what the client
asked for and what the server answered, e.g. a READY offset) and can stop
forwarding after some bytes (to stall a transfer at a known point).

Every read has a deadline; nothing here sleeps to synchronise.
"""

import hashlib
import hmac
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections import deque

import pytest

from conftest import DEFAULT_TIMEOUT, assert_no_sanitizer_reports, run_tcpkit, server_env, tcpkit_bin

HEADER = 6
TAG_LEN = 32

# Version 1 types.
V1_REQUEST, V1_RESPONSE, V1_DATA, V1_END, V1_ERROR = 1, 2, 3, 4, 5

# Version 2 types.
GET, OPEN, DATA, END, ERROR, LIST, ENTRIES, STAT, INFO, PUT, READY, DONE, CANCEL, PING, PONG, HELLO = range(1, 17)
TYPE_NAMES = {
    GET: "GET", OPEN: "OPEN", DATA: "DATA", END: "END", ERROR: "ERROR", LIST: "LIST",
    ENTRIES: "ENTRIES", STAT: "STAT", INFO: "INFO", PUT: "PUT", READY: "READY", DONE: "DONE",
    CANCEL: "CANCEL", PING: "PING", PONG: "PONG", HELLO: "HELLO",
}

HELLO_AUTH = 0x01
FEATURE_ZSTD = 0x0001
XFER_ZSTD = 0x01
PUT_RESUME = 0x02
PUT_OVERWRITE = 0x04
STAT_DIGEST = 0x01

KIND_FILE, KIND_DIR, KIND_LINK, KIND_OTHER = 1, 2, 3, 4

# ERROR codes, by the names the spec gives them.
E = {
    "not_found": 1, "not_regular": 2, "forbidden": 3, "bad_request": 4, "too_large": 5,
    "exists": 6, "busy": 7, "no_space": 8, "read_only": 9, "digest_mismatch": 10,
    "io_error": 11, "unsupported": 12, "auth": 13, "shutting_down": 14, "changed": 15,
    "cancelled": 16, "not_a_directory": 17, "bad_offset": 18, "protocol": 19, "timeout": 20,
}
E_NAME = {v: k for k, v in E.items()}

ZERO_DIGEST = b"\0" * 32


def sha256_file(path, chunk=8 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def write_random_file(path, size, chunk=4 << 20):
    """Writes `size` random bytes (no holes) and returns their SHA-256 hex."""
    h = hashlib.sha256()
    left = size
    with open(path, "wb") as f:
        while left:
            b = os.urandom(min(chunk, left))
            h.update(b)
            f.write(b)
            left -= len(b)
    return h.hexdigest()


def hdr(version, typ, length):
    return struct.pack(">BBI", version, typ, length)


class PeerClosed(Exception):
    """The server closed the connection (EOF or reset) before a whole frame."""


class RawConn:
    """A TCP connection with a byte buffer and deadline-bounded reads."""

    def __init__(self, addr, timeout=DEFAULT_TIMEOUT):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    def send(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read timed out")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("read timed out") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
        else:
            self.buf += chunk

    def recv_exact(self, n, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.buf) < n:
            if self.eof:
                raise PeerClosed(f"EOF after {len(self.buf)} of {n} bytes: {bytes(self.buf[:100])!r}")
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_raw_frame(self, timeout=None, max_len=64 << 20):
        """(version, type, header bytes, payload)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        h = self.recv_exact(HEADER, max(0.001, deadline - time.monotonic()))
        version, typ, length = struct.unpack(">BBI", h)
        assert length <= max_len, f"absurd frame length {length} (version {version}, type {typ})"
        payload = self.recv_exact(length, max(0.001, deadline - time.monotonic()))
        return version, typ, h, payload

    def at_eof(self, timeout=None):
        """True once the server has closed (EOF or reset) with no further
        bytes; fails the test if bytes arrive or nothing happens in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.eof:
            self._fill(deadline)
        return len(self.buf) == 0

    def nothing_within(self, seconds):
        if self.buf:
            return False
        r, _, _ = select.select([self.sock], [], [], seconds)
        return not r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- version 1 ----------------------------------------------------------------


def v1_request_bytes(name):
    if isinstance(name, str):
        name = name.encode()
    return hdr(1, V1_REQUEST, len(name)) + name


class V1Client(RawConn):
    def request(self, name):
        self.send(v1_request_bytes(name))

    def read_frame(self, timeout=None):
        version, typ, _, payload = self.read_raw_frame(timeout)
        assert version == 1, f"version {version} frame on a version-1 connection: type {typ} {payload[:100]!r}"
        return typ, payload

    def read_answer(self, timeout=None):
        """One whole answer: ("error", message) or ("file", name, size, data)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        typ, payload = self.read_frame(max(0.001, deadline - time.monotonic()))
        if typ == V1_ERROR:
            return ("error", payload.decode("ascii", "replace"))
        assert typ == V1_RESPONSE, f"expected response or error, got type {typ}: {payload[:100]!r}"
        name, sep, size = payload.rpartition(b":")
        assert sep and size.isdigit(), f"response is not name:size: {payload!r}"
        size = int(size)
        data = bytearray()
        while True:
            typ, payload = self.read_frame(max(0.001, deadline - time.monotonic()))
            if typ == V1_END:
                assert payload == b"", f"end frame with a payload {payload[:50]!r}"
                break
            assert typ == V1_DATA, f"expected data or end, got type {typ}: {payload[:100]!r}"
            data += payload
        assert len(data) == size, f"response said {size} bytes, got {len(data)}"
        return ("file", name, size, bytes(data))

    def fetch(self, name, timeout=None):
        self.request(name)
        return self.read_answer(timeout)


# ---- version 2 ----------------------------------------------------------------


class Frame:
    """A decoded version-2 frame; the fields set depend on the type."""

    def __init__(self, typ, body):
        self.type = typ
        self.body = body
        self.stream = None
        self.fields = {}

    def __getattr__(self, k):
        try:
            return self.fields[k]
        except KeyError:
            raise AttributeError(k) from None

    def __repr__(self):
        f = dict(self.fields)
        if "data" in f:
            f["data"] = f"<{len(f['data'])} bytes>"
        if "digest" in f and f["digest"] is not None:
            f["digest"] = f["digest"].hex()[:16] + "…"
        return f"<{TYPE_NAMES.get(self.type, self.type)} stream={self.stream} {f}>"


def decode_entries(records):
    out = []
    p = 0
    while p < len(records):
        assert len(records) - p >= 19, f"truncated entry record at {p}: {records[p:]!r}"
        kind, size, mtime, nlen = struct.unpack_from(">BQqH", records, p)
        p += 19
        assert len(records) - p >= nlen, "entry name runs past the frame"
        out.append({"kind": kind, "size": size, "mtime": mtime, "name": records[p:p + nlen].decode("utf-8", "replace")})
        p += nlen
    return out


def decode_v2(typ, body):
    fr = Frame(typ, body)
    F = fr.fields
    if typ == HELLO:
        assert len(body) == 24, f"HELLO body of {len(body)} bytes"
        F["flags"], F["reserved"], F["features"], F["max_frame"] = struct.unpack_from(">BBHI", body)
        F["nonce"] = body[8:24]
        return fr
    assert len(body) >= 4, f"{TYPE_NAMES.get(typ, typ)} frame without a stream id: {body!r}"
    fr.stream = struct.unpack_from(">I", body)[0]
    rest = body[4:]
    if typ == OPEN:
        assert len(rest) == 25, f"OPEN body {rest!r}"
        F["size"], F["offset"], F["mtime"], F["flags"] = struct.unpack(">QQqB", rest)
    elif typ == DATA:
        F["data"] = rest
    elif typ == END:
        assert len(rest) in (8, 40), f"END body of {len(rest)} bytes"
        F["count"] = struct.unpack_from(">Q", rest)[0]
        F["digest"] = rest[8:] if len(rest) == 40 else None
    elif typ == ERROR:
        assert len(rest) >= 2, f"ERROR body {rest!r}"
        F["code"] = struct.unpack_from(">H", rest)[0]
        F["msg"] = rest[2:].decode("utf-8", "replace")
        F["name"] = E_NAME.get(F["code"], str(F["code"]))
    elif typ == ENTRIES:
        F["entries"] = decode_entries(rest)
    elif typ == INFO:
        assert len(rest) in (17, 49), f"INFO body of {len(rest)} bytes"
        F["kind"], F["size"], F["mtime"] = struct.unpack_from(">BQq", rest)
        F["digest"] = rest[17:] if len(rest) == 49 else None
    elif typ == READY:
        assert len(rest) == 8
        F["offset"] = struct.unpack(">Q", rest)[0]
    elif typ == DONE:
        assert len(rest) == 40, f"DONE body of {len(rest)} bytes"
        F["size"] = struct.unpack_from(">Q", rest)[0]
        F["digest"] = rest[8:]
    elif typ in (PING, PONG):
        assert len(rest) == 8, f"PING/PONG body {rest!r}"
        F["token"] = struct.unpack(">Q", rest)[0]
    elif typ == CANCEL:
        assert rest == b""
    elif typ == GET:
        F["offset"], F["flags"] = struct.unpack_from(">QB", rest)
        F["name"] = rest[9:]
    elif typ == PUT:
        F["size"], F["flags"] = struct.unpack_from(">QB", rest)
        F["name"] = rest[9:]
    return fr


class AuthError(Exception):
    pass


def derive_keys(key, client_hello_body, server_nonce):
    c2s = hmac.new(key, b"tcpkit files v2 c2s" + client_hello_body + server_nonce, hashlib.sha256).digest()
    s2c = hmac.new(key, b"tcpkit files v2 s2c" + client_hello_body + server_nonce, hashlib.sha256).digest()
    return c2s, s2c


def frame_tag(k, seq, header, body):
    return hmac.new(k, struct.pack(">Q", seq) + header + body, hashlib.sha256).digest()


class V2Client(RawConn):
    """A version-2 client. hello() first; then send_* and the readers.

    Frames the server sends are sorted into per-stream queues, so the
    frames of one stream can be awaited while other streams' frames arrive
    in between; `order` keeps (type, stream) of every frame in arrival
    order."""

    def __init__(self, addr, timeout=DEFAULT_TIMEOUT):
        super().__init__(addr, timeout)
        self.queues = {}
        self.order = []
        self.k_c2s = self.k_s2c = None
        self.seq_out = self.seq_in = 0
        self.server_hello = None
        self.corrupt_next_tag = False

    # -- HELLO ------------------------------------------------------------------
    def hello(self, features=0, max_frame=1 << 20, auth_key=None, flags=None, nonce=None, expect_reply=True,
              verify=True):
        """Sends HELLO and reads the server's answer: its HELLO (returned,
        tag checked with the derived key unless verify=False) or an ERROR."""
        if flags is None:
            flags = HELLO_AUTH if auth_key is not None else 0
        nonce = os.urandom(16) if nonce is None else nonce
        body = struct.pack(">BBHI", flags, 0, features, max_frame) + nonce
        self.send(hdr(2, HELLO, len(body)) + body)
        if not expect_reply:
            return None
        version, typ, h, payload = self.read_raw_frame()
        assert version == 2, f"reply to HELLO has version {version}: type {typ} {payload[:200]!r}"
        if typ == ERROR:  # a refusal comes before any key exists: untagged
            return decode_v2(typ, payload)
        assert typ == HELLO, f"reply to HELLO is type {typ}: {payload[:200]!r}"
        if auth_key is not None:
            assert len(payload) == 24 + TAG_LEN, f"authenticated server HELLO has {len(payload)} bytes (want 56)"
            sbody, tag = payload[:24], payload[24:]
            sh = decode_v2(HELLO, sbody)
            assert sh.flags & HELLO_AUTH, f"server did not confirm authentication: {sh!r}"
            self.k_c2s, self.k_s2c = derive_keys(auth_key, body, sh.nonce)
            want = frame_tag(self.k_s2c, 0, h, sbody)
            if verify and not hmac.compare_digest(want, tag):
                raise AuthError("the server HELLO's tag does not verify")
            sh.tag_ok = hmac.compare_digest(want, tag)
            self.seq_in = 1
        else:
            sh = decode_v2(HELLO, payload)
        self.server_hello = sh
        return sh

    @property
    def authed(self):
        return self.k_c2s is not None

    # -- sending ---------------------------------------------------------------
    def frame_bytes(self, typ, body, version=2):
        if not self.authed:
            return hdr(version, typ, len(body)) + body
        h = hdr(version, typ, len(body) + TAG_LEN)
        tag = frame_tag(self.k_c2s, self.seq_out, h, body)
        self.seq_out += 1
        if self.corrupt_next_tag:
            self.corrupt_next_tag = False
            tag = bytes([tag[0] ^ 0x01]) + tag[1:]
        return h + body + tag

    def send_frame(self, typ, body, version=2):
        self.send(self.frame_bytes(typ, body, version))

    @staticmethod
    def _name(name):
        return name.encode() if isinstance(name, str) else name

    def get(self, stream, name, offset=0, flags=0):
        self.send_frame(GET, struct.pack(">IQB", stream, offset, flags) + self._name(name))

    def list(self, stream, name=""):
        self.send_frame(LIST, struct.pack(">I", stream) + self._name(name))

    def stat(self, stream, name, flags=0):
        self.send_frame(STAT, struct.pack(">IB", stream, flags) + self._name(name))

    def put(self, stream, name, size, flags=0):
        self.send_frame(PUT, struct.pack(">IQB", stream, size, flags) + self._name(name))

    def data(self, stream, data):
        self.send_frame(DATA, struct.pack(">I", stream) + data)

    def max_data(self):
        """The most file bytes one DATA frame may carry to this server."""
        return self.server_hello.max_frame - 4 - (TAG_LEN if self.authed else 0)

    def data_all(self, stream, content, chunk=256 << 10):
        """Sends content as DATA frames no longer than the server accepts."""
        chunk = min(chunk, self.max_data())
        for p in range(0, len(content), chunk):
            self.data(stream, content[p:p + chunk])

    def end(self, stream, count, digest=None):
        self.send_frame(END, struct.pack(">IQ", stream, count) + (digest if digest is not None else b""))

    def cancel(self, stream):
        self.send_frame(CANCEL, struct.pack(">I", stream))

    def ping(self, token):
        self.send_frame(PING, struct.pack(">IQ", 0, token))

    def pong(self, token):
        self.send_frame(PONG, struct.pack(">IQ", 0, token))

    # -- receiving -------------------------------------------------------------
    def read_frame(self, timeout=None):
        """The next frame off the wire (not via the queues), tag checked."""
        version, typ, h, payload = self.read_raw_frame(timeout)
        assert version == 2, f"version {version} frame on a version-2 connection: type {typ} {payload[:100]!r}"
        if self.authed:
            assert len(payload) >= TAG_LEN, f"authenticated frame shorter than its tag: {payload!r}"
            body, tag = payload[:-TAG_LEN], payload[-TAG_LEN:]
            want = frame_tag(self.k_s2c, self.seq_in, h, body)
            self.seq_in += 1
            if not hmac.compare_digest(want, tag):
                raise AuthError(f"frame type {typ} (seq {self.seq_in - 1}) failed its tag check")
        else:
            body = payload
        fr = decode_v2(typ, body)
        self.order.append((typ, fr.stream))
        return fr

    def pump(self, timeout=None):
        """Reads one frame into its stream's queue; returns it."""
        fr = self.read_frame(timeout)
        self.queues.setdefault(fr.stream, deque()).append(fr)
        return fr

    def next(self, stream, timeout=None):
        """The next frame of `stream` (reading and queueing others' meanwhile)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            q = self.queues.get(stream)
            if q:
                return q.popleft()
            self.pump(max(0.001, deadline - time.monotonic()))

    def discard(self, stream):
        """Forgets the frames of `stream` read so far (a cancelled stream)."""
        self.queues.pop(stream, None)

    def download(self, stream, name, offset=0, flags=0, timeout=None):
        """GET and read the whole answer. Returns (OPEN, data, END) or the
        ERROR frame. DATA bodies are joined as sent (zstd frames stay
        compressed)."""
        self.get(stream, name, offset, flags)
        return self.read_download(stream, timeout)

    def read_download(self, stream, timeout=None):
        """The rest of a GET's answer (see download)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        fr = self.next(stream, max(0.001, deadline - time.monotonic()))
        if fr.type == ERROR:
            return fr
        assert fr.type == OPEN, f"stream {stream}: expected OPEN or ERROR, got {fr!r}"
        op = fr
        data = bytearray()
        while True:
            fr = self.next(stream, max(0.001, deadline - time.monotonic()))
            if fr.type == DATA:
                data += fr.data
                continue
            if fr.type == ERROR:
                return fr
            assert fr.type == END, f"stream {stream}: expected DATA or END, got {fr!r}"
            return op, bytes(data), fr

    def upload(self, stream, name, content, flags=0, digest=None, chunk=256 << 10, timeout=None):
        """PUT, wait for READY, send DATA from READY's offset, END (with the
        whole content's SHA-256 unless `digest` is given), and read the
        outcome. Returns (ready, final frame) or (error, None) when the PUT
        itself was refused."""
        self.put(stream, name, len(content), flags)
        fr = self.next(stream, timeout)
        if fr.type == ERROR:
            return fr, None
        assert fr.type == READY, f"stream {stream}: expected READY or ERROR, got {fr!r}"
        off = fr.offset
        self.data_all(stream, content[off:], chunk)
        self.end(stream, len(content) - off, hashlib.sha256(content).digest() if digest is None else digest)
        return fr, self.next(stream, timeout)

    def listing(self, stream, name="", timeout=None):
        """LIST and read the whole answer: (entries, END) or the ERROR frame."""
        self.list(stream, name)
        entries = []
        while True:
            fr = self.next(stream, timeout)
            if fr.type == ERROR:
                return fr
            if fr.type == ENTRIES:
                entries += fr.entries
                continue
            assert fr.type == END, f"stream {stream}: expected ENTRIES or END, got {fr!r}"
            return entries, fr


# ---- the file server ------------------------------------------------------------


def files_listen_addr(srv):
    """The address of the `listening on ADDR (files)` line."""
    import re

    m = re.search(r"listening on\s+(\d{1,3}(?:\.\d{1,3}){3}):(\d+) \(files\)", srv.stdout())
    assert m, f"no 'listening on ADDR (files)' line in {srv.stdout()!r}"
    return (m.group(1), int(m.group(2)))


def start_file_server(server_factory, root, *args, env=None):
    srv = server_factory(["--listen", "127.0.0.1:0", "--root", str(root)] + [str(a) for a in args],
                         command="file-server", env=env)
    srv.files_addr = files_listen_addr(srv)
    srv.target = f"{srv.files_addr[0]}:{srv.files_addr[1]}"
    return srv


def tk(args, timeout=60, **kw):
    """run_tcpkit with str() arguments."""
    return run_tcpkit([str(a) for a in args], timeout=timeout, **kw)


def write_key(path, key):
    with open(path, "wb") as f:
        f.write(key)
    os.chmod(path, 0o600)
    return str(path)


def wait_until(cond, timeout, what, interval=0.01):
    """Polls cond() until it returns a true value, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def file_size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


def visible_names(directory):
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


class ClientProc:
    """A tcpkit client started in the background, ended by its handle."""

    def __init__(self, args, env=None):
        self.argv = [tcpkit_bin()] + [str(a) for a in args]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=server_env(env))
        self.stdout = self.stderr = b""

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        """SIGKILL; returns the exit status (-9)."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.wait(10)

    def wait(self, timeout):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            pytest.fail(f"{self.argv} did not exit within {timeout}s; stderr={err[-2000:]!r}")
        assert_no_sanitizer_reports(err.decode("utf-8", "replace"), " ".join(self.argv))
        self.stdout, self.stderr = out, err
        return self.proc.returncode


@pytest.fixture
def client_procs():
    procs = []

    def start(args, env=None):
        p = ClientProc(args, env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


# ---- a frame-reading relay --------------------------------------------------------


class FrameTap:
    """Relays connections from tcpkit's clients to `upstream`, recording the
    frame headers (and the first bytes of each body) of both directions.

    `stall_s2c_after` / `stall_c2s_after`: forward only that many bytes in
    that direction, then hold the rest (the transfer stalls at a known
    point); release() lets everything through again."""

    def __init__(self, upstream, stall_s2c_after=None, stall_c2s_after=None, keep=64):
        self.upstream = upstream
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addr = self.lsock.getsockname()
        self.target = f"{self.addr[0]}:{self.addr[1]}"
        self.limits = {"s2c": stall_s2c_after, "c2s": stall_c2s_after}
        self.keep = keep
        self.lock = threading.Lock()
        self.frames = {"c2s": [], "s2c": []}  # (conn index, version, type, length, body head)
        self.bytes = {"c2s": 0, "s2c": 0}
        self.conns = 0
        self.active = 0
        self.closed = False
        self.stop_r, self.stop_w = os.pipe()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def release(self):
        with self.lock:
            self.limits = {"c2s": None, "s2c": None}
        os.write(self.stop_w, b"r")

    def wait_idle(self, timeout=30):
        """Waits until every relayed connection has ended both ways."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.active == 0:
                    return
            if time.monotonic() >= deadline:
                pytest.fail(f"relayed connections still open after {timeout}s")
            time.sleep(0.01)

    def close(self):
        if self.closed:
            return
        self.closed = True
        os.write(self.stop_w, b"q")
        self.thread.join(10)
        self.lsock.close()
        os.close(self.stop_r)
        os.close(self.stop_w)

    def of(self, direction, typ):
        with self.lock:
            return [f for f in self.frames[direction] if f[2] == typ]

    def _run(self):
        pairs = []
        quit = False
        while not quit:
            rlist = [self.lsock, self.stop_r]
            wlist = []
            for p in pairs:
                for d, src, dst in (("c2s", p["c"], p["s"]), ("s2c", p["s"], p["c"])):
                    if p["pending"][d]:
                        wlist.append(dst)
                    elif p["open"][d] and self._allowance(p, d) > 0:
                        rlist.append(src)
            r, w, _ = select.select(rlist, wlist, [], 0.5)
            if self.stop_r in r:
                quit = os.read(self.stop_r, 1) == b"q"
            if self.lsock in r:
                c, _ = self.lsock.accept()
                try:
                    s = socket.create_connection(self.upstream, timeout=10)
                except OSError:
                    c.close()
                    continue
                c.setblocking(False)
                s.setblocking(False)
                with self.lock:
                    idx = self.conns
                    self.conns += 1
                    self.active += 1
                pairs.append({"c": c, "s": s, "i": idx, "pending": {"c2s": b"", "s2c": b""},
                              "open": {"c2s": True, "s2c": True}, "shut": {"c2s": False, "s2c": False},
                              "parse": {"c2s": [b"", 0], "s2c": [b"", 0]}, "sent": {"c2s": 0, "s2c": 0}})
            for p in list(pairs):
                for d, src, dst in (("c2s", p["c"], p["s"]), ("s2c", p["s"], p["c"])):
                    if src in r and p["open"][d]:
                        try:
                            chunk = src.recv(min(1 << 20, max(1, self._allowance(p, d))))
                        except BlockingIOError:
                            chunk = None
                        except OSError:
                            chunk = b""
                        if chunk == b"":
                            p["open"][d] = False
                        elif chunk:
                            self._parse(p, d, chunk)
                            p["pending"][d] += chunk
                            p["sent"][d] += len(chunk)
                            with self.lock:
                                self.bytes[d] += len(chunk)
                    if dst in w and p["pending"][d]:
                        try:
                            n = dst.send(p["pending"][d])
                            p["pending"][d] = p["pending"][d][n:]
                        except BlockingIOError:
                            pass
                        except OSError:
                            p["pending"][d] = b""
                            p["open"][d] = False
                    if not p["open"][d] and not p["pending"][d] and not p["shut"][d]:
                        p["shut"][d] = True
                        try:
                            dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                if p["shut"]["c2s"] and p["shut"]["s2c"]:
                    p["c"].close()
                    p["s"].close()
                    pairs.remove(p)
                    with self.lock:
                        self.active -= 1
        for p in pairs:
            p["c"].close()
            p["s"].close()

    def _allowance(self, p, d):
        with self.lock:
            lim = self.limits[d]
        if lim is None:
            return 1 << 20
        return max(0, lim - p["sent"][d])

    def _parse(self, p, d, chunk):
        """Header-only frame parsing: bodies are skipped, their first
        `keep` bytes kept."""
        st = p["parse"][d]
        data = st[0] + chunk
        skip = st[1]
        pos = 0
        while True:
            if skip:
                n = min(skip, len(data) - pos)
                pos += n
                skip -= n
                if skip:
                    break
                continue
            if len(data) - pos < HEADER:
                break
            version, typ, length = struct.unpack_from(">BBI", data, pos)
            head_len = min(length, self.keep)
            if len(data) - pos < HEADER + head_len:
                break
            head = bytes(data[pos + HEADER:pos + HEADER + head_len])
            with self.lock:
                self.frames[d].append((p["i"], version, typ, length, head))
            pos += HEADER + head_len
            skip = length - head_len
        p["parse"][d] = [data[pos:], skip]


# ---- fixtures ---------------------------------------------------------------------


@pytest.fixture
def file_server(server_factory):
    """start(root, *options, env=None): `tcpkit file-server --listen
    127.0.0.1:0 --root ROOT OPTIONS...`, ready; .files_addr and .target
    ("HOST:PORT") added. Ended (SIGTERM, exit 0 expected) by server_factory."""

    def start(root, *args, env=None):
        return start_file_server(server_factory, root, *args, env=env)

    return start


@pytest.fixture
def taps():
    """start(upstream, **kw) -> FrameTap; every tap is closed afterwards."""
    made = []

    def start(upstream, **kw):
        t = FrameTap(upstream, **kw)
        made.append(t)
        return t

    yield start
    for t in made:
        t.close()


def v1(srv):
    """A version-1 client of srv, closed with the server's other clients."""
    c = V1Client(srv.files_addr)
    srv.clients.append(c)
    return c


def v2(srv, hello=True, **hello_kw):
    """A version-2 client of srv (HELLO done unless hello=False), closed
    with the server's other clients."""
    c = V2Client(srv.files_addr)
    srv.clients.append(c)
    if hello:
        sh = c.hello(**hello_kw)
        assert sh.type == HELLO, f"server refused the HELLO: {sh!r}"
    return c


def make_files(root, files):
    """files: {relative name: bytes}; directories are created as needed."""
    os.makedirs(root, exist_ok=True)
    for name, content in files.items():
        path = os.path.join(str(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
    return str(root)
