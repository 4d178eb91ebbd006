"""SIGTERM: transfers in flight (download v1 and v2, upload) finish, new
requests get shutting_down, the server exits 0; with a short
--shutdown-timeout a client that stopped reading does not keep it alive.

The server runs one event loop (--threads 1) so that an idle observer
connection being told `shutting_down` proves the loop has taken in the
shutdown before the test sends its next request."""

import hashlib
import os
import signal
import socket

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    DATA,
    DONE,
    E,
    END,
    ERROR,
    OPEN,
    READY,
    V1_DATA,
    V1_RESPONSE,
    PeerClosed,
    file_server,
    make_files,
    v1,
    v2,
)

BIG = 48 << 20


@pytest.fixture
def tree(tmp_path):
    return make_files(tmp_path / "root", {"big.bin": os.urandom(BIG), "small.txt": b"small\n"})


def wait_shutdown_seen(srv):
    """An idle v2 connection is told shutting_down (stream 0) and closed once
    the server's loop has begun its shutdown."""
    obs = srv.observer
    fr = obs.read_frame(timeout=20)
    assert fr.type == ERROR and fr.stream == 0 and fr.code == E["shutting_down"], fr
    assert obs.at_eof()
    obs.close()  # our FIN: the server need not wait for it


def wait_exit(srv, timeout):
    srv.stopped_by_test = True
    rc = srv.wait(timeout)
    if rc is None:
        srv.proc.kill()
        srv.proc.wait(10)
        pytest.fail(f"server still running {timeout}s after SIGTERM\n{srv.stderr()[-3000:]}")
    srv._join_pumps()
    return rc


def test_sigterm_lets_an_upload_in_flight_finish_and_refuses_new_requests(file_server, tree):
    srv = file_server(tree, "--threads", "1", "--shutdown-timeout", "120", "--allow-upload")
    up_content = os.urandom(3 << 20)
    up = v2(srv)
    up.put(1, "up.bin", len(up_content))
    assert up.next(1).type == READY
    up.data_all(1, up_content[: 1 << 20])
    up.ping(1)
    assert up.next(0).token == 1  # the first MiB is in
    srv.observer = v2(srv)

    srv.send_signal(signal.SIGTERM)
    wait_shutdown_seen(srv)

    # a new request on the open connection is refused
    up.get(2, "small.txt")
    fr = up.next(2, timeout=20)
    assert fr.type == ERROR and fr.code == E["shutting_down"], fr
    # so is one on a new connection, if it gets one at all
    late = None
    try:
        late = v2(srv, hello=False)
        late.hello(expect_reply=False)
        late.get(1, "small.txt")
        while True:
            fr = late.read_frame(timeout=20)
            assert fr.type == ERROR and fr.code == E["shutting_down"], fr
    except (ConnectionRefusedError, ConnectionResetError, PeerClosed):
        pass
    finally:
        if late is not None:
            late.close()
    # the upload in flight finishes and is stored
    up.data_all(1, up_content[1 << 20:])
    up.end(1, len(up_content), hashlib.sha256(up_content).digest())
    fr = up.next(1, timeout=60)
    assert fr.type == DONE, fr
    # then the connection ends
    while True:
        try:
            fr = up.read_frame(timeout=20)
        except PeerClosed:
            break
        assert fr.type == ERROR and fr.stream == 0 and fr.code == E["shutting_down"], fr
    up.close()
    assert wait_exit(srv, 60) == 0
    with open(os.path.join(tree, "up.bin"), "rb") as f:
        assert f.read() == up_content


def _finish_v2_download(c, stream):
    """Reads the rest of a download: (bytes of DATA, the last frame or the
    exception that ended it)."""
    n = 0
    try:
        while True:
            fr = c.next(stream, timeout=60)
            if fr.type != DATA:
                return n, fr
            n += len(fr.data)
    except (PeerClosed, TimeoutError) as e:
        return n, e



@pytest.mark.parametrize("size", [BIG, BIG - 12345])
def test_sigterm_lets_a_v2_download_in_flight_finish(file_server, tmp_path, size):
    content = os.urandom(size)
    root = make_files(tmp_path / "root", {"big.bin": content, "small.txt": b"small\n"})
    srv = file_server(root, "--threads", "1", "--chunk-size", "65536", "--shutdown-timeout", "120")
    down = v2(srv)
    down.get(1, "big.bin")
    assert down.next(1).type == OPEN
    first = down.next(1)
    assert first.type == DATA
    first_len = len(first.data)
    srv.observer = v2(srv)
    srv.send_signal(signal.SIGTERM)
    wait_shutdown_seen(srv)
    down.get(2, "small.txt")  # a new request is refused meanwhile
    n, last = _finish_v2_download(down, 1)
    refused = down.queues.get(2)
    tail = []
    try:  # then the last word, on stream 0, and the close
        while True:
            tail.append(down.read_frame(timeout=20))
    except (PeerClosed, TimeoutError) as e:
        tail.append(e)
    down.close()
    rc = wait_exit(srv, 60)
    assert refused and refused[0].type == ERROR and refused[0].code == E["shutting_down"], refused
    assert first_len + n == size, f"{first_len + n} of {size} bytes arrived"
    assert getattr(last, "type", None) == END, last
    assert last.digest == hashlib.sha256(content).digest()
    assert [(f.type, f.stream, f.code) for f in tail[:-1]] == [(ERROR, 0, E["shutting_down"])], tail
    assert isinstance(tail[-1], PeerClosed), tail
    assert rc == 0


def test_sigterm_lets_a_v1_download_in_flight_finish(file_server, tmp_path):
    content = os.urandom(BIG - 12345)
    root = make_files(tmp_path / "root", {"big.bin": content})
    srv = file_server(root, "--threads", "1", "--chunk-size", "65536", "--shutdown-timeout", "120")
    old = v1(srv)
    old.request("big.bin")
    assert old.read_frame()[0] == V1_RESPONSE
    typ, first = old.read_frame()
    assert typ == V1_DATA
    srv.observer = v2(srv)
    srv.send_signal(signal.SIGTERM)
    wait_shutdown_seen(srv)
    h = hashlib.sha256(first)
    n = len(first)
    end = None
    try:
        while True:
            typ, payload = old.read_frame(timeout=60)
            if typ != V1_DATA:
                end = (typ, payload)
                break
            n += len(payload)
            h.update(payload)
    except (PeerClosed, TimeoutError) as e:
        end = e
    old.close()
    rc = wait_exit(srv, 60)
    assert n == len(content), f"{n} of {len(content)} bytes arrived"
    assert end == (4, b""), end
    assert h.digest() == hashlib.sha256(content).digest()
    assert rc == 0


def test_sigterm_new_v1_request_after_shutdown_is_refused(file_server, tree):
    srv = file_server(tree, "--threads", "1", "--shutdown-timeout", "60")
    old = v1(srv)
    assert old.fetch("small.txt")[0] == "file"
    srv.observer = v2(srv)
    srv.send_signal(signal.SIGTERM)
    wait_shutdown_seen(srv)
    try:
        old.request("small.txt")
        got = old.read_answer(timeout=20)
        assert got == ("error", "Server shutting down"), got[:3]
    except (PeerClosed, BrokenPipeError, ConnectionResetError):
        pass  # closed as idle before the request arrived: not served either
    old.close()
    assert wait_exit(srv, 60) == 0


def test_sigterm_idle_server_exits_zero(file_server, tree):
    srv = file_server(tree, "--threads", "1")
    srv.observer = v2(srv)
    srv.send_signal(signal.SIGTERM)
    wait_shutdown_seen(srv)
    assert wait_exit(srv, 30) == 0
    with pytest.raises(OSError):
        socket.create_connection(srv.files_addr, timeout=5).close()


@pytest.mark.parametrize("version", [1, 2])
def test_sigterm_with_a_stalled_client_and_short_timeout_still_exits(file_server, tree, version):
    srv = file_server(tree, "--chunk-size", "65536", "--shutdown-timeout", "1")
    if version == 2:
        c = v2(srv)
        c.get(1, "big.bin")
        assert c.next(1).type == OPEN
    else:
        c = v1(srv)
        c.request("big.bin")
        assert c.read_frame()[0] == V1_RESPONSE
    # the client reads no more: the server's output backs up
    srv.send_signal(signal.SIGTERM)
    assert wait_exit(srv, 30) == 0
    assert srv.wait_stderr(r"shutdown timeout", timeout=1), srv.stderr()[-2000:]
