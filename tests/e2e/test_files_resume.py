"""Interrupted transfers: a `tcpkit put` or `tcpkit get` killed with SIGKILL
midway leaves nothing under the final name, and `--continue` resumes (a
READY / OPEN offset above 0, seen on the wire through a relay) and ends
with the right digest. The raw client checks the server side of a resume.

A relay between the client and the server forwards only the first part of
the transfer and then holds the rest, so the kill always lands midway; the
test waits for the partial file to grow before it kills."""

import glob
import hashlib
import os
import struct

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    DONE,
    E,
    ERROR,
    GET,
    OPEN,
    PUT,
    PUT_RESUME,
    READY,
    client_procs,
    file_server,
    file_size,
    sha256_file,
    taps,
    tk,
    v2,
    visible_names,
    wait_until,
    write_random_file,
)

SIZE = 96 << 20
STALL_AT = 40 << 20   # the relay forwards this much, then holds
PROGRESS = 16 << 20   # the partial must have grown this far before the kill


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    digest = write_random_file(d / "big.bin", SIZE)
    return d / "big.bin", digest


def server_partials(root):
    return glob.glob(os.path.join(str(root), ".tcpkit-part-*"))


def partial_size(root):
    parts = server_partials(root)
    return max((file_size(p) for p in parts), default=-1)


def test_put_killed_midway_leaves_nothing_and_continue_resumes(file_server, src, taps, client_procs, tmp_path):
    path, digest = src
    root = tmp_path / "root"
    root.mkdir()
    srv = file_server(root, "--allow-upload")
    stall = taps(srv.files_addr, stall_c2s_after=STALL_AT)
    p = client_procs(["put", stall.target, path, "-q"])
    wait_until(lambda: partial_size(root) >= PROGRESS or not p.alive(), 60, "the upload's partial file to grow")
    assert p.alive(), f"put ended before it was killed: rc={p.proc.returncode}"
    assert p.kill() == -9
    # nothing under the final name, and nothing visible to clients
    assert visible_names(root) == []
    entries, _ = v2(srv).listing(1, "")
    assert entries == []
    assert 0 < partial_size(root) < SIZE
    # the relay lets the rest through so the server sees the client go
    stall.release()
    stall.wait_idle()
    assert not os.path.exists(root / "big.bin")
    held = partial_size(root)
    assert held > 0

    tap = taps(srv.files_addr)
    cp = tk(["put", tap.target, path, "--continue"], timeout=300)
    assert cp.returncode == 0, cp.stderr
    (_, _, _, _, put_head), = tap.of("c2s", PUT)
    assert put_head[4 + 8] & PUT_RESUME, put_head.hex()
    (_, _, _, _, ready_head), = tap.of("s2c", READY)
    offset = struct.unpack(">Q", ready_head[4:12])[0]
    assert offset > 0, "the upload started over"
    assert offset <= held
    assert tap.bytes["c2s"] < SIZE - offset + (4 << 20), tap.bytes  # only the rest was sent
    assert sha256_file(root / "big.bin") == digest
    assert os.listdir(root) == ["big.bin"]  # the partial is gone


def test_get_killed_midway_leaves_nothing_and_continue_resumes(file_server, src, taps, client_procs, tmp_path):
    path, digest = src
    srv = file_server(path.parent)
    out = tmp_path / "out"
    out.mkdir()
    partial = out / ".big.bin.tcpkit-part"
    stall = taps(srv.files_addr, stall_s2c_after=STALL_AT)
    p = client_procs(["get", stall.target, "big.bin", "-o", out, "-q", "--no-sync"])
    wait_until(lambda: file_size(partial) >= PROGRESS or not p.alive(), 60,
               f"the download's partial file to grow (have {os.listdir(out)})")
    assert p.alive(), f"get ended before it was killed: rc={p.proc.returncode}"
    assert p.kill() == -9
    assert not os.path.exists(out / "big.bin")
    assert os.listdir(out) == [partial.name]
    held = file_size(partial)
    assert 0 < held < SIZE
    stall.close()

    tap = taps(srv.files_addr)
    cp = tk(["get", tap.target, "big.bin", "-o", out, "--continue", "--no-sync"], timeout=300)
    assert cp.returncode == 0, cp.stderr
    (_, _, _, _, get_head), = tap.of("c2s", GET)
    get_offset = struct.unpack(">Q", get_head[4:12])[0]
    assert 0 < get_offset <= held, (get_offset, held)
    (_, _, _, _, open_head), = tap.of("s2c", OPEN)
    size, offset = struct.unpack(">QQ", open_head[4:20])
    assert (size, offset) == (SIZE, get_offset)
    assert tap.bytes["s2c"] < SIZE - offset + (4 << 20), tap.bytes
    assert sha256_file(out / "big.bin") == digest
    assert os.listdir(out) == ["big.bin"]


def test_get_continue_with_a_corrupted_partial_fails_the_digest(file_server, src, tmp_path):
    """The END digest covers the whole file, so bytes kept from an earlier
    run are checked too."""
    path, digest = src
    srv = file_server(path.parent)
    out = tmp_path / "out"
    out.mkdir()
    with open(path, "rb") as f:
        head = bytearray(f.read(1 << 20))
    head[1000] ^= 0xFF  # one bad byte in what "arrived" earlier
    (out / ".big.bin.tcpkit-part").write_bytes(bytes(head))
    cp = tk(["get", srv.target, "big.bin", "-o", out, "--continue", "--no-sync"], timeout=300)
    assert cp.returncode != 0, "a corrupted resume was accepted"
    assert b"digest" in cp.stderr.lower() or b"sha" in cp.stderr.lower(), cp.stderr
    assert not os.path.exists(out / "big.bin")


def test_raw_put_resume_gets_ready_at_the_bytes_held(file_server, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    srv = file_server(root, "--allow-upload")
    content = os.urandom(2 << 20)
    c = v2(srv)
    c.put(1, "r.bin", len(content))
    assert c.next(1).type == READY
    c.data_all(1, content[:700_000])
    c.ping(1)
    assert c.next(0).token == 1
    c.close()  # gone midway
    # the server lets go of the partial once it has seen the close; a new
    # client asking to resume gets READY at the bytes held (or busy while the
    # old connection is still being cleaned up, in which case it asks again)
    d = v2(srv)
    wait_until(lambda: partial_size(root) == 700_000, 30, "the partial to hold 700000 bytes")

    def ask():
        sid = ask.n = getattr(ask, "n", 0) + 1
        d.put(sid, "r.bin", len(content), flags=PUT_RESUME)
        fr = d.next(sid)
        if fr.type == ERROR and fr.code == E["busy"]:
            return None
        return sid, fr

    sid, fr = wait_until(ask, 30, "the old upload to be let go")
    assert fr.type == READY and fr.offset == 700_000, fr
    d.data_all(sid, content[700_000:])
    d.end(sid, len(content) - 700_000, hashlib.sha256(content).digest())
    fr = d.next(sid)
    assert fr.type == DONE and fr.size == len(content), fr
    assert fr.digest == hashlib.sha256(content).digest()
    assert open(root / "r.bin", "rb").read() == content
    assert server_partials(root) == []


def test_raw_put_without_resume_starts_over(file_server, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    srv = file_server(root, "--allow-upload")
    content = os.urandom(1 << 20)
    c = v2(srv)
    c.put(1, "s.bin", len(content))
    assert c.next(1).type == READY
    c.data_all(1, content[:300_000])
    c.cancel(1)
    c.ping(1)
    assert c.next(0).token == 1
    c.discard(1)
    ready, done = c.upload(2, "s.bin", content)
    assert ready.type == READY and ready.offset == 0, ready
    assert done.type == DONE, done
    assert open(root / "s.bin", "rb").read() == content


def test_raw_put_resume_of_a_different_size_starts_over(file_server, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    srv = file_server(root, "--allow-upload")
    c = v2(srv)
    c.put(1, "t.bin", 1000)
    assert c.next(1).type == READY
    c.data(1, b"a" * 500)
    c.cancel(1)
    c.ping(1)
    assert c.next(0).token == 1
    c.discard(1)
    other = b"b" * 2000  # same name, another size: no resume from the first
    ready, done = c.upload(2, "t.bin", other, flags=PUT_RESUME)
    assert ready.type == READY and ready.offset == 0, ready
    assert done.type == DONE, done
    assert open(root / "t.bin", "rb").read() == other
