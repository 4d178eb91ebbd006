"""Version-2 framing rules: HELLO first and once, unknown frame types
(answered, connection kept), unknown versions (error and close), stream id
rules, PING/PONG, and heartbeats (PINGs to a silent client; a client that
never answers is dropped)."""

import os
import struct
import time

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    DATA,
    E,
    ERROR,
    HELLO,
    OPEN,
    PING,
    PONG,
    file_server,
    hdr,
    make_files,
    v2,
)

CONTENT = b"v2 content\n"


@pytest.fixture
def srv(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT})
    return file_server(root)


def test_hello_is_answered_with_the_servers_hello(srv):
    c = v2(srv, hello=False)
    sh = c.hello(features=0, max_frame=65536)
    assert sh.type == HELLO
    assert sh.reserved == 0 and sh.flags == 0 and sh.features == 0
    assert 65536 <= sh.max_frame <= 16 << 20
    assert len(sh.nonce) == 16
    other = v2(srv, hello=False).hello()
    assert other.nonce != sh.nonce  # 16 random bytes each time


def test_unknown_frame_type_is_unsupported_and_the_connection_stays(srv):
    c = v2(srv)
    for typ, stream in ((99, 5), (17, 6), (255, 7)):
        c.send_frame(typ, struct.pack(">I", stream) + b"whatever payload")
        fr = c.next(stream)
        assert fr.type == ERROR and fr.code == E["unsupported"], fr
    assert c.download(1, "a.txt")[1] == CONTENT
    c.ping(3)
    assert c.next(0).token == 3


def test_unknown_version_as_the_first_byte_is_an_error_and_a_close(srv):
    c = v2(srv, hello=False)
    c.send(hdr(9, HELLO, 24) + bytes(24))
    version, typ, _, payload = c.read_raw_frame()
    assert typ in (5, ERROR), (version, typ, payload)
    assert b"version 9" in payload, payload
    assert c.at_eof()


def test_unknown_version_after_hello_is_an_error_and_a_close(srv):
    c = v2(srv)
    assert c.download(1, "a.txt")[1] == CONTENT
    c.send(hdr(3, 1, 18) + struct.pack(">IQB", 2, 0, 0) + b"a.txt")
    fr = c.read_frame()
    assert fr.type == ERROR and fr.stream == 0, fr
    assert fr.code == E["unsupported"], fr
    assert c.at_eof()


def test_version_1_frame_on_a_version_2_connection_closes(srv):
    c = v2(srv)
    c.send(hdr(1, 1, 5) + b"a.txt")
    fr = c.read_frame()
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["protocol"], fr
    assert c.at_eof()


def test_first_frame_must_be_hello(srv):
    c = v2(srv, hello=False)
    c.get(1, "a.txt")
    fr = c.read_frame()
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["protocol"], fr
    assert c.at_eof()


def test_second_hello_is_an_error_and_a_close(srv):
    c = v2(srv)
    c.hello(expect_reply=False)
    fr = c.read_frame()
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["protocol"], fr
    assert c.at_eof()


@pytest.mark.parametrize("max_frame", [0, 1000, 65535, (16 << 20) + 1, 0xFFFFFFFF])
def test_hello_with_max_frame_out_of_range_is_refused(srv, max_frame):
    c = v2(srv, hello=False)
    fr = c.hello(max_frame=max_frame)
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["bad_request"], fr
    assert c.at_eof()


def test_hello_with_reserved_byte_set_is_refused(srv):
    c = v2(srv, hello=False)
    c.send(hdr(2, HELLO, 24) + struct.pack(">BBHI", 0, 1, 0, 1 << 20) + bytes(16))
    fr = c.read_frame()
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["bad_request"], fr
    assert c.at_eof()


def test_hello_with_unknown_features_gets_only_the_common_ones(srv):
    c = v2(srv, hello=False)
    sh = c.hello(features=0xFFFE)  # everything but zstd
    assert sh.type == HELLO and sh.features == 0, sh
    assert v2(srv, hello=False).hello(features=0xFFFF).features == 1


@pytest.mark.parametrize("case", ["stream 0", "in use"])
def test_stream_id_0_or_in_use_is_bad_request(file_server, tmp_path, case):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT, "big.bin": os.urandom(8 << 20)})
    s = file_server(root, "--chunk-size", "65536")
    c = v2(s)
    if case == "stream 0":
        c.get(0, "a.txt")
    else:
        c.get(1, "big.bin")
        assert c.next(1).type == OPEN
        c.get(1, "a.txt")  # while stream 1 is still sending
    while True:
        fr = c.read_frame()
        if fr.type != DATA:
            break
    assert fr.type == ERROR and fr.code == E["bad_request"], fr
    if fr.stream == 0:  # about the connection: it is closed
        assert c.at_eof()


def test_frames_only_servers_send_are_refused_from_a_client(srv):
    c = v2(srv)
    c.send_frame(OPEN, struct.pack(">IQQqB", 1, 0, 0, 0, 0))
    fr = c.read_frame()
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["protocol"], fr
    assert c.at_eof()


def test_malformed_body_on_a_stream_is_bad_request(srv):
    c = v2(srv)
    c.send_frame(1, struct.pack(">I", 4) + b"\x00\x00")  # GET cut short
    fr = c.next(4)
    assert fr.type == ERROR and fr.code == E["bad_request"], fr
    assert c.download(5, "a.txt")[1] == CONTENT


def test_ping_is_answered_with_a_pong_of_the_same_token(srv):
    c = v2(srv)
    for token in (0, 1, 0x0123456789ABCDEF, 2 ** 64 - 1):
        c.ping(token)
        fr = c.next(0)
        assert fr.type == PONG and fr.token == token, fr
    # pipelined, interleaved with a download
    c.ping(11)
    c.get(1, "a.txt")
    c.ping(12)
    assert [c.next(0).token, c.next(0).token] == [11, 12]
    assert c.read_download(1)[1] == CONTENT


def test_ping_on_a_stream_other_than_0_is_refused(srv):
    c = v2(srv)
    c.send_frame(PING, struct.pack(">IQ", 7, 1))
    fr = c.read_frame()
    assert fr.type == ERROR, fr
    assert fr.code == E["bad_request"], fr


# ---- heartbeats -------------------------------------------------------------------------


def test_heartbeat_pings_a_silent_client_and_one_that_answers_stays(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT})
    srv = file_server(root, "--heartbeat", "1")
    c = v2(srv)
    tokens = []
    while len(tokens) < 3:  # three heartbeats (more than three intervals apart), each answered
        fr = c.read_frame(timeout=20)
        assert fr.type == PING and fr.stream == 0, fr
        tokens.append(fr.token)
        c.pong(fr.token)
    assert len(set(tokens)) == 3, tokens
    assert c.download(1, "a.txt")[1] == CONTENT  # still connected


def test_heartbeat_is_off_for_version_1(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT})
    srv = file_server(root, "--heartbeat", "1")
    from files_helpers import v1

    c = v1(srv)
    assert c.fetch("a.txt")[0] == "file"
    # a version-1 client gets no PING (it could not answer one) within several intervals
    assert c.nothing_within(2.5)
    assert c.fetch("a.txt")[0] == "file"


def test_heartbeat_drops_a_client_that_never_answers(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT})
    srv = file_server(root, "--heartbeat", "1")
    c = v2(srv)
    pings = 0
    start = time.monotonic()
    while True:
        try:
            fr = c.read_frame(timeout=15)  # generous: three intervals are 3 s
        except TimeoutError:
            pytest.fail("neither a PING nor a close within 15 s")
        except Exception:  # EOF (or reset) after the last PING
            assert c.eof, "read failed without the server closing"
            break
        if fr.type == ERROR:  # an error (timeout) before the close is fine
            assert fr.stream == 0, fr
            assert c.at_eof()
            break
        assert fr.type == PING, fr
        pings += 1
        assert time.monotonic() - start < 15, f"still connected after {pings} unanswered PINGs"
    assert pings >= 1, "dropped without ever being PINGed"
