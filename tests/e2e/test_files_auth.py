"""HMAC-SHA256 authentication: the raw client derives the keys and tags
every frame as the spec says and the server's tags verify; wrong keys, bad
tags, replays and skipped sequence numbers end the connection with `auth`;
a server with a key refuses version 1 and unauthenticated HELLOs; tcpkit's
clients work with the right key and fail clearly with a wrong one."""

import hashlib
import os

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    DONE,
    E,
    ERROR,
    HELLO,
    HELLO_AUTH,
    TAG_LEN,
    V1_ERROR,
    V2Client,
    decode_v2,
    file_server,
    make_files,
    sha256_file,
    tk,
    v1,
    v2,
    write_key,
)

KEY = b"0123456789abcdef-the-shared-key"
CONTENT = b"authenticated content\n"


@pytest.fixture
def setup(tmp_path, file_server):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT, "big.bin": os.urandom(2_500_000)})
    good = write_key(tmp_path / "good.key", KEY + b"\n")  # a trailing newline is not part of the key
    bad = write_key(tmp_path / "bad.key", b"another-key-of-enough-length\n")
    srv = file_server(root, "--auth-key", good, "--allow-upload")
    return {"srv": srv, "root": root, "good": good, "bad": bad, "tmp": tmp_path}


def test_raw_client_with_the_key_downloads_uploads_and_lists(setup):
    srv = setup["srv"]
    c = v2(srv, auth_key=KEY)  # the server's HELLO tag (seq 0) verified with our k_s2c
    assert c.server_hello.flags & HELLO_AUTH
    op, data, end = c.download(1, "a.txt")  # every frame's tag checked
    assert data == CONTENT and end.digest == hashlib.sha256(CONTENT).digest()
    big = open(os.path.join(setup["root"], "big.bin"), "rb").read()
    assert c.download(2, "big.bin")[1] == big
    ready, done = c.upload(3, "up.bin", b"signed upload\n")
    assert done.type == DONE, done
    entries, _ = c.listing(4, "")
    assert sorted(e["name"] for e in entries) == ["a.txt", "big.bin", "up.bin"]
    c.ping(7)
    assert c.next(0).token == 7


def test_a_frame_with_a_bad_tag_gets_auth_error_and_a_close(setup):
    srv = setup["srv"]
    c = v2(srv, auth_key=KEY)
    assert c.download(1, "a.txt")[1] == CONTENT
    c.corrupt_next_tag = True
    c.get(2, "a.txt")
    fr = c.read_frame()  # the error itself is tagged correctly
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["auth"], fr
    assert c.at_eof()


def test_wrong_key_gets_auth_error_and_a_close(setup):
    srv = setup["srv"]
    c = V2Client(srv.files_addr)
    srv.clients.append(c)
    sh = c.hello(auth_key=b"not-the-right-key-at-all", verify=False)
    assert sh.type == HELLO and sh.flags & HELLO_AUTH
    assert not sh.tag_ok, "the server HELLO verified with a wrong key"
    c.get(1, "a.txt")
    version, typ, _, payload = c.read_raw_frame()
    assert (version, typ) == (2, ERROR), payload
    fr = decode_v2(ERROR, payload[:-TAG_LEN])
    assert fr.stream == 0 and fr.code == E["auth"], fr
    assert c.at_eof()


def test_replayed_frame_is_refused(setup):
    srv = setup["srv"]
    c = v2(srv, auth_key=KEY)
    frame = c.frame_bytes(8, b"\x00\x00\x00\x01\x00a.txt")  # STAT, tag for seq 0
    c.send(frame)
    assert c.next(1).type == 9  # INFO
    c.send(frame.replace(b"\x00\x00\x00\x01", b"\x00\x00\x00\x02", 1))  # new stream id, old tag
    fr = c.read_frame()
    assert fr.type == ERROR and fr.code == E["auth"], fr
    assert c.at_eof()
    c = v2(srv, auth_key=KEY)
    frame = c.frame_bytes(8, b"\x00\x00\x00\x01\x00a.txt")
    c.send(frame)
    assert c.next(1).type == 9
    c.send(frame)  # the very same bytes again
    fr = c.read_frame()
    assert fr.type == ERROR and fr.code == E["auth"], fr
    assert c.at_eof()


def test_skipped_sequence_number_is_refused(setup):
    srv = setup["srv"]
    c = v2(srv, auth_key=KEY)
    c.seq_out += 1  # as if a frame had been dropped on the way
    c.stat(1, "a.txt")
    fr = c.read_frame()
    assert fr.type == ERROR and fr.code == E["auth"], fr
    assert c.at_eof()


def test_untagged_frame_after_an_authenticated_hello_is_refused(setup):
    srv = setup["srv"]
    c = v2(srv, auth_key=KEY)
    body = b"\x00\x00\x00\x01\x00a.txt"
    c.send(bytes([2, 8, 0, 0, 0, len(body)]) + body)  # no tag at all
    fr = c.read_frame()
    assert fr.type == ERROR and fr.code == E["auth"], fr
    assert c.at_eof()


def test_server_with_a_key_refuses_version_1(setup):
    srv = setup["srv"]
    c = v1(srv)
    c.request("a.txt")
    typ, payload = c.read_frame()
    assert typ == V1_ERROR and b"uthenticat" in payload, payload
    assert c.at_eof()


def test_server_with_a_key_refuses_a_hello_without_auth(setup):
    srv = setup["srv"]
    c = V2Client(srv.files_addr)
    srv.clients.append(c)
    fr = c.hello()
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["auth"], fr
    assert c.at_eof()


def test_cli_with_the_right_key_gets_puts_and_lists(setup):
    srv, tmp = setup["srv"], setup["tmp"]
    out = tmp / "out"
    out.mkdir()
    cp = tk(["get", srv.target, "a.txt", "big.bin", "-o", out, "--auth-key", setup["good"]])
    assert cp.returncode == 0, cp.stderr
    assert (out / "a.txt").read_bytes() == CONTENT
    assert sha256_file(out / "big.bin") == sha256_file(os.path.join(setup["root"], "big.bin"))
    src = tmp / "cli_up.bin"
    src.write_bytes(os.urandom(300_000))
    cp = tk(["put", srv.target, src, "--auth-key", setup["good"]])
    assert cp.returncode == 0, cp.stderr
    assert sha256_file(os.path.join(setup["root"], "cli_up.bin")) == sha256_file(src)
    cp = tk(["ls", srv.target, "--auth-key", setup["good"]])
    assert cp.returncode == 0, cp.stderr
    assert [ln.split()[-1] for ln in cp.stdout.decode().splitlines()] == ["a.txt", "big.bin", "cli_up.bin"]


def test_cli_with_a_wrong_key_fails_with_an_auth_error(setup):
    srv, tmp = setup["srv"], setup["tmp"]
    out = tmp / "out"
    out.mkdir()
    cp = tk(["get", srv.target, "a.txt", "-o", out, "--auth-key", setup["bad"]])
    assert cp.returncode != 0
    assert b"authentic" in cp.stderr.lower(), cp.stderr
    assert os.listdir(out) == []
    src = tmp / "x.bin"
    src.write_bytes(b"x")
    cp = tk(["put", srv.target, src, "--auth-key", setup["bad"]])
    assert cp.returncode != 0
    assert b"authentic" in cp.stderr.lower(), cp.stderr
    assert not os.path.exists(os.path.join(setup["root"], "x.bin"))


def test_cli_without_a_key_is_refused(setup):
    srv, tmp = setup["srv"], setup["tmp"]
    out = tmp / "out"
    out.mkdir()
    for proto in ("2", "1"):
        cp = tk(["get", srv.target, "a.txt", "-o", out, "--protocol", proto])
        assert cp.returncode != 0, proto
        assert b"authentic" in cp.stderr.lower(), (proto, cp.stderr)
    assert os.listdir(out) == []


def test_client_with_a_key_refuses_a_server_without_auth(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT})
    srv = file_server(root)
    key = write_key(tmp_path / "k", KEY)
    out = tmp_path / "out"
    out.mkdir()
    cp = tk(["get", srv.target, "a.txt", "-o", out, "--auth-key", key])
    assert cp.returncode != 0
    assert b"authenticate" in cp.stderr, cp.stderr
    assert os.listdir(out) == []


def test_key_file_readable_by_others_is_refused(tmp_path):
    key = tmp_path / "open.key"
    key.write_bytes(KEY)
    os.chmod(key, 0o644)
    root = make_files(tmp_path / "root", {})
    cp = tk(["file-server", "--listen", "127.0.0.1:0", "--root", root, "--auth-key", key], timeout=20)
    assert cp.returncode != 0 and b"600" in cp.stderr, cp.stderr
    cp = tk(["get", "127.0.0.1:9", "a.txt", "--auth-key", key])
    assert cp.returncode != 0 and b"600" in cp.stderr, cp.stderr


def test_cli_with_the_key_and_compression(setup):
    srv, tmp = setup["srv"], setup["tmp"]
    text = b"".join(b"compressible line %06d\n" % i for i in range(100_000))
    src = tmp / "text.txt"
    src.write_bytes(text)
    cp = tk(["put", srv.target, src, "-z", "--auth-key", setup["good"]])
    assert cp.returncode == 0, cp.stderr
    out = tmp / "out"
    out.mkdir()
    cp = tk(["get", srv.target, "text.txt", "big.bin", "-z", "-o", out, "--auth-key", setup["good"]])
    assert cp.returncode == 0, cp.stderr
    assert (out / "text.txt").read_bytes() == text
    assert sha256_file(out / "big.bin") == sha256_file(os.path.join(setup["root"], "big.bin"))
