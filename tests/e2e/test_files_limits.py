"""Frame length limits: a header announcing 0xFFFFFFFF bytes (or just one
byte over the limit) gets an error frame and a close at once, before any
payload arrives, without a large allocation; the server goes on serving
everyone else."""

import struct

import pytest

from conftest import proc_rss_kib
from files_helpers import (  # noqa: F401  (fixtures)
    E,
    ERROR,
    GET,
    HELLO,
    PUT,
    DATA,
    V1_ERROR,
    V1_REQUEST,
    file_server,
    hdr,
    make_files,
    v1,
    v2,
    write_key,
)

# ASan keeps freed memory in a quarantine that would show up in RSS.
ASAN_ENV = {"ASAN_OPTIONS": "quarantine_size_mb=8"}
RSS_SLACK_KIB = 48 * 1024  # a 4 GiB (or even 64 MiB) buffer would not fit in this

CONTENT = b"still serving\n"


@pytest.fixture
def srv(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT})
    return file_server(root, "--allow-upload", env=ASAN_ENV)


def warm_up(srv):
    """One of each kind of connection, so later RSS changes are not the
    first connection's buffers."""
    assert v1(srv).fetch("a.txt")[0] == "file"
    assert v2(srv).download(1, "a.txt")[1] == CONTENT


def test_v1_length_ffffffff_is_an_error_and_a_close(srv):
    warm_up(srv)
    bystander = v1(srv)  # connected before, used after
    rss0 = proc_rss_kib(srv.pid)
    for _ in range(20):
        c = v1(srv)
        c.send(hdr(1, V1_REQUEST, 0xFFFFFFFF))  # the header only: no payload follows
        typ, payload = c.read_frame()
        assert (typ, payload) == (V1_ERROR, b"Frame too large (4294967295 bytes)")
        assert c.at_eof()
        c.close()
    assert proc_rss_kib(srv.pid) < rss0 + RSS_SLACK_KIB, (rss0, proc_rss_kib(srv.pid))
    assert bystander.fetch("a.txt") == ("file", b"a.txt", len(CONTENT), CONTENT)
    assert v1(srv).fetch("a.txt")[0] == "file"


def test_v1_length_over_4096_after_a_good_request_closes(srv):
    c = v1(srv)
    assert c.fetch("a.txt")[0] == "file"
    c.send(hdr(1, V1_REQUEST, 4097))
    typ, payload = c.read_frame()
    assert (typ, payload) == (V1_ERROR, b"Frame too large (4097 bytes)")
    assert c.at_eof()


def test_v1_name_of_exactly_4096_bytes_is_not_a_frame_error(srv):
    c = v1(srv)
    got = c.fetch("n" * 4096)
    assert got[0] == "error" and got[1] in ("File not found", "Name too long"), got[:3]
    assert c.fetch("a.txt")[0] == "file"  # still open


def test_v2_length_ffffffff_after_hello_is_an_error_and_a_close(srv):
    warm_up(srv)
    bystander = v2(srv)
    rss0 = proc_rss_kib(srv.pid)
    for typ in (GET, PUT, DATA, 99):
        for _ in range(5):
            c = v2(srv)
            c.send(hdr(2, typ, 0xFFFFFFFF))
            fr = c.read_frame()
            assert fr.type == ERROR and fr.stream == 0, fr
            assert fr.code == E["too_large"], fr
            assert c.at_eof()
            c.close()
    assert proc_rss_kib(srv.pid) < rss0 + RSS_SLACK_KIB, (rss0, proc_rss_kib(srv.pid))
    assert bystander.download(1, "a.txt")[1] == CONTENT


def test_v2_length_ffffffff_as_the_first_frame_is_an_error_and_a_close(srv):
    rss0 = proc_rss_kib(srv.pid)
    c = v2(srv, hello=False)
    c.send(hdr(2, HELLO, 0xFFFFFFFF))
    version, typ, _, payload = c.read_raw_frame()
    assert typ == ERROR, (version, typ, payload)
    assert struct.unpack(">IH", payload[:6]) == (0, E["too_large"]), payload
    assert c.at_eof()
    assert proc_rss_kib(srv.pid) < rss0 + RSS_SLACK_KIB
    assert v2(srv).download(1, "a.txt")[1] == CONTENT


def test_v2_length_ffffffff_during_an_upload_is_an_error_and_a_close(srv, tmp_path):
    c = v2(srv)
    c.put(1, "up.bin", 1 << 20)
    assert c.next(1).type == 11  # READY
    c.data(1, b"x" * 1000)
    c.send(hdr(2, DATA, 0xFFFFFFFF) + struct.pack(">I", 1))
    fr = c.next(0)
    assert fr.type == ERROR and fr.code == E["too_large"], fr
    assert c.at_eof()
    assert not (tmp_path / "root" / "up.bin").exists()
    assert v2(srv).download(1, "a.txt")[1] == CONTENT


def test_v2_one_byte_over_max_frame_is_refused(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT})
    srv = file_server(root, "--chunk-size", "65536", "--max-frame", "70000")
    assert srv.alive()
    c = v2(srv)
    c.send(hdr(2, GET, 70001))
    fr = c.read_frame()
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["too_large"], fr
    assert c.at_eof()
    # exactly max_frame is accepted (a GET whose long name is then refused on its own)
    c = v2(srv)
    body = struct.pack(">IQB", 1, 0, 0) + b"n" * (70000 - 13)
    c.send(hdr(2, GET, len(body)) + body)
    fr = c.next(1)
    assert fr.type == ERROR and fr.code == E["too_large"], fr  # a name over 4096 bytes
    assert c.download(2, "a.txt")[1] == CONTENT


def test_authenticated_server_refuses_ffffffff_too(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"a.txt": CONTENT})
    key = b"k" * 32
    srv = file_server(root, "--auth-key", write_key(tmp_path / "key", key), env=ASAN_ENV)
    rss0 = proc_rss_kib(srv.pid)
    c = v2(srv, auth_key=key)
    c.send(hdr(2, GET, 0xFFFFFFFF))
    fr = c.read_frame()  # tagged: read_frame checks the tag
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["too_large"], fr
    assert c.at_eof()
    assert proc_rss_kib(srv.pid) < rss0 + RSS_SLACK_KIB


def test_v2_component_over_255_bytes_is_too_large(srv):
    c = v2(srv)
    fr = c.download(1, "d/" + "c" * 256)
    assert not isinstance(fr, tuple) and fr.code == E["too_large"], fr
    fr = c.download(2, "c" * 255)
    assert not isinstance(fr, tuple) and fr.code == E["not_found"], fr
    assert c.download(3, "a.txt")[1] == CONTENT
