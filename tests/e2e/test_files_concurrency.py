"""Concurrency: 20 transfers over one connection (tcpkit get with 20 names;
the raw client with 20 streams at once, downloads and uploads whose frames
interleave both ways) and 20 connections at once."""

import hashlib
import os
import threading

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    DATA,
    DONE,
    END,
    GET,
    OPEN,
    READY,
    client_procs,
    file_server,
    make_files,
    sha256_file,
    taps,
    tk,
    v1,
    v2,
)

N = 20


@pytest.fixture
def tree(tmp_path):
    files = {f"f{i:02d}.bin": os.urandom(256 * 1024 + i * 37_001) for i in range(N)}
    files["small.txt"] = b"small\n"
    return make_files(tmp_path / "root", files), files


def max_open_streams(frames):
    """Most streams open at once in a list of (conn, version, type, length,
    head) s2c frames: OPEN opens a stream, END or ERROR closes it."""
    open_now, most = set(), 0
    for _, _, typ, _, head in frames:
        sid = int.from_bytes(head[:4], "big")
        if typ == OPEN:
            open_now.add(sid)
        elif typ in (END, 5):
            open_now.discard(sid)
        most = max(most, len(open_now))
    return most


def test_get_cli_20_files_over_one_connection(file_server, tree, taps, tmp_path):
    root, files = tree
    srv = file_server(root, "--chunk-size", "65536")
    tap = taps(srv.files_addr)
    out = tmp_path / "out"
    out.mkdir()
    names = sorted(n for n in files if n.startswith("f"))
    cp = tk(["get", tap.target] + names + ["-o", out, "--parallel", "20", "--no-sync"], timeout=120)
    assert cp.returncode == 0, cp.stderr
    for n in names:
        assert hashlib.sha256((out / n).read_bytes()).digest() == hashlib.sha256(files[n]).digest(), n
    assert sorted(os.listdir(out)) == names
    assert tap.conns == 1, f"{tap.conns} connections for one tcpkit get"
    assert len(tap.of("c2s", GET)) == N
    assert max_open_streams(tap.frames["s2c"]) >= 2, "the downloads never overlapped"


def test_raw_20_streams_at_once_downloads_and_uploads_interleaved(file_server, tree):
    root, files = tree
    srv = file_server(root, "--allow-upload", "--chunk-size", "65536")
    c = v2(srv)
    gets = {s: f"f{s - 1:02d}.bin" for s in range(1, 11)}            # streams 1..10 download
    ups = {s: os.urandom(300_000 + s * 1013) for s in range(11, 21)}  # streams 11..20 upload
    # all 20 requests in one write
    blob = b"".join(c.frame_bytes(1, (s).to_bytes(4, "big") + bytes(8) + b"\x00" + n.encode()) for s, n in gets.items())
    blob += b"".join(c.frame_bytes(10, s.to_bytes(4, "big") + len(d).to_bytes(8, "big") + b"\x00" + b"up%d.bin" % s)
                     for s, d in ups.items())
    c.send(blob)
    for s in ups:
        assert c.next(s).type == READY
    # the uploads' DATA frames interleave (one chunk of each in turn) while the
    # downloads arrive; a sender thread writes, this thread reads
    errors = []

    def send_uploads():
        try:
            for p in range(0, max(len(d) for d in ups.values()), 32 * 1024):
                for s, d in ups.items():
                    if p < len(d):
                        c.data(s, d[p:p + 32 * 1024])
            for s, d in ups.items():
                c.end(s, len(d), hashlib.sha256(d).digest())
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=send_uploads, daemon=True)
    t.start()
    results = {}
    for s, name in gets.items():
        res = c.read_download(s, timeout=60)
        assert isinstance(res, tuple), (name, res)
        results[s] = res
    for s in ups:
        fr = c.next(s, timeout=60)
        assert fr.type == DONE, fr
        assert fr.digest == hashlib.sha256(ups[s]).digest()
    t.join(30)
    assert not t.is_alive() and not errors, errors
    for s, name in gets.items():
        op, data, end = results[s]
        assert data == files[name], name
        assert end.digest == hashlib.sha256(files[name]).digest()
    for s, d in ups.items():
        with open(os.path.join(root, "up%d.bin" % s), "rb") as f:
            assert f.read() == d
    # the server sent the downloads in turn, not one after the other
    first_end = next(i for i, (typ, s) in enumerate(c.order) if typ == END)
    streams_before = {s for typ, s in c.order[:first_end] if typ == DATA}
    assert len(streams_before) >= 2, f"only stream(s) {streams_before} had data before the first END"


def test_raw_20_downloads_of_one_file_on_one_connection(file_server, tree):
    root, files = tree
    srv = file_server(root, "--chunk-size", "65536")
    c = v2(srv)
    for s in range(1, N + 1):
        c.get(s, "f19.bin", offset=s * 1000)
    want = files["f19.bin"]
    for s in range(1, N + 1):
        op, data, end = c.read_download(s, timeout=60)
        assert op.offset == s * 1000 and data == want[s * 1000:], s
        assert end.digest == hashlib.sha256(want).digest()


def test_20_connections_at_once(file_server, tree):
    root, files = tree
    srv = file_server(root, "--chunk-size", "65536")
    conns = [v2(srv) for _ in range(N // 2)] + [v1(srv) for _ in range(N // 2)]
    names = sorted(n for n in files if n.startswith("f"))
    # every connection asks before any reads: 20 transfers are in flight together
    for i, c in enumerate(conns):
        if i < N // 2:
            c.get(1, names[i])
            c.get(2, "small.txt")
        else:
            c.request(names[i])
            c.request("small.txt")
    for i, c in enumerate(conns):
        if i < N // 2:
            assert c.read_download(1, timeout=60)[1] == files[names[i]], names[i]
            assert c.read_download(2)[1] == b"small\n"
        else:
            assert c.read_answer(timeout=60) == ("file", names[i].encode(), len(files[names[i]]), files[names[i]])
            assert c.read_answer()[3] == b"small\n"


def test_20_clients_processes_at_once(file_server, tree, tmp_path, client_procs):
    root, files = tree
    srv = file_server(root, "--allow-upload")
    names = sorted(n for n in files if n.startswith("f"))
    procs = []
    for i, n in enumerate(names):
        out = tmp_path / f"out{i}"
        out.mkdir()
        if i % 2:
            src = tmp_path / f"src{i}.bin"
            src.write_bytes(files[n][::-1])
            procs.append(("put", src, client_procs(["put", srv.target, src, "-q"])))
        else:
            procs.append(("get", out / n, client_procs(["get", srv.target, n, "-o", out, "--no-sync", "-q"])))
    for kind, path, p in procs:
        assert p.wait(120) == 0, (kind, path, p.stderr)
    for i, (kind, path, _) in enumerate(procs):
        if kind == "get":
            assert path.read_bytes() == files[names[i]]
        else:
            assert sha256_file(os.path.join(root, path.name)) == sha256_file(path)


def test_max_streams_refuses_the_stream_over_the_limit_with_busy(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"big.bin": os.urandom(16 << 20), "a.txt": b"alpha\n"})
    srv = file_server(root, "--max-streams", "2", "--chunk-size", "65536")
    c = v2(srv)
    c.get(1, "big.bin")
    c.get(2, "big.bin")
    assert c.next(1).type == OPEN and c.next(2).type == OPEN
    c.get(3, "a.txt")  # a third while two are open
    fr = c.next(3)
    assert fr.type == 5 and fr.code == 7, fr  # ERROR busy
    for s in (1, 2):
        n = 0
        while True:
            fr = c.next(s, timeout=60)
            if fr.type != DATA:
                break
            n += len(fr.data)
        assert fr.type == END and n == 16 << 20, (fr, n)
    assert c.download(3, "a.txt")[1] == b"alpha\n"  # room again


def test_max_clients_refuses_the_extra_client_with_server_busy(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"a.txt": b"alpha\n"})
    srv = file_server(root, "--max-clients", "1")
    first = v2(srv)
    for extra in (v1(srv), v2(srv, hello=False)):  # whatever it would speak, the v1 refusal
        assert extra.recv_exact(17, timeout=20) == b"\x01\x05\x00\x00\x00\x0bServer busy"
        assert extra.at_eof(timeout=20)
        extra.close()
    assert first.download(1, "a.txt")[1] == b"alpha\n"
