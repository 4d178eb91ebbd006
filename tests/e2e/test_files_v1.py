"""Version 1 of the file protocol (the seed's): hand-built byte sequences
against `tcpkit file-server`, pipelining, errors that keep the connection,
unknown types and versions, and `tcpkit get --protocol 1`."""

import hashlib
import os
import socket
import struct

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    V1_DATA,
    V1_END,
    V1_ERROR,
    V1_RESPONSE,
    file_server,
    hdr,
    make_files,
    tk,
    v1,
    v1_request_bytes,
)

HELLO = b"hello, v1\n"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    make_files(root, {
        "a.txt": HELLO,
        "empty": b"",
        "big.bin": os.urandom(3 * 1024 * 1024 + 12345),
        "sub/b.txt": b"in a subdirectory\n",
    })
    return root


def test_v1_handbuilt_bytes_download_a_file(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    # request, type 1, the name as payload
    c.send(b"\x01\x01\x00\x00\x00\x05a.txt")
    n = len(HELLO)
    # response "a.txt:10", one data frame with the bytes, an empty end frame
    want = (b"\x01\x02\x00\x00\x00\x08a.txt:10"
            + b"\x01\x03" + struct.pack(">I", n) + HELLO
            + b"\x01\x04\x00\x00\x00\x00")
    assert c.recv_exact(len(want)) == want
    # and the connection waits for the next request
    c.send(b"\x01\x01\x00\x00\x00\x09sub/b.txt")
    assert c.read_answer() == ("file", b"sub/b.txt", 18, b"in a subdirectory\n")


def test_v1_empty_file_is_response_and_end_without_data(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    c.send(v1_request_bytes("empty"))
    assert c.recv_exact(6 + 7 + 6) == b"\x01\x02\x00\x00\x00\x07empty:0" + b"\x01\x04\x00\x00\x00\x00"


def test_v1_large_file_comes_in_data_frames_no_larger_than_the_chunk_size(file_server, tree):
    srv = file_server(tree, "--chunk-size", "65536")
    c = v1(srv)
    c.request("big.bin")
    typ, payload = c.read_frame()
    size = os.path.getsize(tree / "big.bin")
    assert (typ, payload) == (V1_RESPONSE, b"big.bin:%d" % size)
    h = hashlib.sha256()
    frames = 0
    while True:
        typ, payload = c.read_frame()
        if typ == V1_END:
            assert payload == b""
            break
        assert typ == V1_DATA
        assert 0 < len(payload) <= 65536, len(payload)
        h.update(payload)
        frames += 1
    assert frames >= size // 65536
    assert h.hexdigest() == hashlib.sha256((tree / "big.bin").read_bytes()).hexdigest()


def test_v1_pipelined_requests_are_answered_in_order(file_server, tree):
    srv = file_server(tree, "--chunk-size", "65536")
    c = v1(srv)
    names = ["a.txt", "missing", "big.bin", "empty", "sub", "sub/b.txt", "big.bin", "a.txt"]
    c.send(b"".join(v1_request_bytes(n) for n in names))  # all at once, in one write
    big = (tree / "big.bin").read_bytes()
    want = [
        ("file", b"a.txt", len(HELLO), HELLO),
        ("error", "File not found"),
        ("file", b"big.bin", len(big), big),
        ("file", b"empty", 0, b""),
        ("error", "Is a directory"),
        ("file", b"sub/b.txt", 18, b"in a subdirectory\n"),
        ("file", b"big.bin", len(big), big),
        ("file", b"a.txt", len(HELLO), HELLO),
    ]
    for i, w in enumerate(want):
        got = c.read_answer(timeout=30)
        assert got[:3] == w[:3], f"answer {i} to {names[i]!r}"
        assert got == w, f"answer {i} to {names[i]!r}: content differs"
    assert c.nothing_within(0.2), "more frames than answers"


def test_v1_missing_file_is_an_error_frame_and_the_connection_stays_open(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    c.send(v1_request_bytes("nope.txt"))
    msg = b"File not found"
    assert c.recv_exact(6 + len(msg)) == hdr(1, V1_ERROR, len(msg)) + msg
    for _ in range(3):  # still served, several times over
        assert c.fetch("a.txt") == ("file", b"a.txt", len(HELLO), HELLO)
        assert c.fetch("nope.txt") == ("error", "File not found")


def test_v1_errors_for_directory_and_empty_name_keep_the_connection(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    assert c.fetch("sub") == ("error", "Is a directory")
    assert c.fetch("") == ("error", "Bad file name")
    assert c.fetch("a.txt")[0] == "file"


def test_v1_unknown_type_is_answered_and_its_payload_skipped(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    # type 9 with a payload that looks like a request frame: it must be skipped whole
    inner = v1_request_bytes("a.txt")
    c.send(hdr(1, 9, len(inner)) + inner + v1_request_bytes("sub/b.txt"))
    assert c.read_answer() == ("error", "Unknown message type 9")
    assert c.read_answer() == ("file", b"sub/b.txt", 18, b"in a subdirectory\n")
    assert c.nothing_within(0.2)


def test_v1_unknown_version_is_an_error_and_a_close(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    c.send(hdr(7, 1, 5) + b"a.txt")
    typ, payload = c.read_frame()
    assert (typ, payload) == (V1_ERROR, b"Unsupported protocol version 7")
    assert c.at_eof()
    assert v1(srv).fetch("a.txt")[0] == "file"  # the server carries on


def test_v1_version_change_mid_connection_is_an_error_and_a_close(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    assert c.fetch("a.txt")[0] == "file"
    c.send(hdr(3, 1, 5) + b"a.txt")
    typ, payload = c.read_frame()
    assert typ == V1_ERROR and b"version 3" in payload, payload
    assert c.at_eof()


def test_v1_hello_after_a_v1_request_is_an_error_and_a_close(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    assert c.fetch("a.txt")[0] == "file"
    c.send(hdr(2, 16, 24) + bytes(4) + b"\x00\x01\x00\x00" + bytes(16))
    assert c.read_frame() == (V1_ERROR, b"Unsupported protocol version 2")
    assert c.at_eof()


def test_v1_component_over_255_bytes_is_name_too_long(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    assert c.fetch("d/" + "c" * 256) == ("error", "Name too long")
    assert c.fetch("c" * 255) == ("error", "File not found")
    assert c.fetch("a.txt")[0] == "file"


def test_v1_request_split_into_single_bytes_is_reassembled(file_server, tree):
    srv = file_server(tree)
    c = v1(srv)
    for b in v1_request_bytes("a.txt"):
        c.send(bytes([b]))
    assert c.read_answer() == ("file", b"a.txt", len(HELLO), HELLO)


def test_get_protocol_1_downloads_with_our_client(file_server, tree, tmp_path):
    srv = file_server(tree)
    out = tmp_path / "out"
    out.mkdir()
    cp = tk(["get", srv.target, "a.txt", "big.bin", "empty", "sub/b.txt", "--protocol", "1", "-o", out, "--no-sync"])
    assert cp.returncode == 0, cp.stderr
    for name in ["a.txt", "big.bin", "empty", "sub/b.txt"]:
        base = os.path.basename(name)
        assert (out / base).read_bytes() == (tree / name).read_bytes(), name
    assert sorted(os.listdir(out)) == ["a.txt", "b.txt", "big.bin", "empty"]  # no partials left


def test_get_protocol_1_to_stdout(file_server, tree):
    srv = file_server(tree)
    cp = tk(["get", srv.target, "big.bin", "--protocol", "1", "-o", "-"])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == (tree / "big.bin").read_bytes()


def test_get_protocol_1_missing_file_fails_and_writes_nothing(file_server, tree, tmp_path):
    srv = file_server(tree)
    out = tmp_path / "out"
    out.mkdir()
    cp = tk(["get", srv.target, "nope", "--protocol", "1", "-o", out])
    assert cp.returncode == 1, cp.stderr
    assert b"not found" in cp.stderr.lower(), cp.stderr
    assert os.listdir(out) == []


def test_v1_requests_then_half_close_are_all_answered_before_eof(file_server, tree):
    """A client that sends its requests and then shuts down its sending side
    still gets every answer, whole, before the server closes."""
    srv = file_server(tree, "--chunk-size", "65536")
    c = v1(srv)
    c.send(v1_request_bytes("big.bin") + v1_request_bytes("missing") + v1_request_bytes("a.txt"))
    c.sock.shutdown(socket.SHUT_WR)
    big = (tree / "big.bin").read_bytes()
    assert c.read_answer(timeout=30) == ("file", b"big.bin", len(big), big)
    assert c.read_answer() == ("error", "File not found")
    assert c.read_answer() == ("file", b"a.txt", len(HELLO), HELLO)
    assert c.at_eof()
