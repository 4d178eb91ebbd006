"""Everyday version-2 behaviour: empty files both ways, missing files,
directories, LIST (of a file, hidden names), STAT, offsets, CANCEL, and the
receiver's max_frame; with the raw client and with tcpkit get/put/ls."""

import hashlib
import json
import os
import re

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    DATA,
    DONE,
    E,
    END,
    ERROR,
    INFO,
    KIND_DIR,
    KIND_FILE,
    OPEN,
    PONG,
    READY,
    file_server,
    make_files,
    sha256_file,
    tk,
    v1,
    v2,
    visible_names,
)

EMPTY_SHA = hashlib.sha256(b"").digest()


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    make_files(root, {
        "a.txt": b"alpha\n",
        "empty": b"",
        "mid.bin": os.urandom(300_000),
        "sub/b.txt": b"beta\n",
        ".hidden": b"dot file\n",
        "sub/.also_hidden": b"x",
        ".hdir/inner.txt": b"in a hidden dir\n",
    })
    (root / "emptydir").mkdir()
    return root


def out_dir(tmp_path, name="out"):
    d = tmp_path / name
    d.mkdir()
    return d


# ---- empty files ------------------------------------------------------------------


def test_v2_get_of_an_empty_file_is_open_end_without_data(file_server, tree):
    srv = file_server(tree)
    c = v2(srv)
    op, data, end = c.download(1, "empty")
    assert (op.size, op.offset, op.flags) == (0, 0, 0)
    assert data == b""
    assert (end.count, end.digest) == (0, EMPTY_SHA)
    assert [t for t, s in c.order if s == 1] == [OPEN, END]


def test_get_cli_of_an_empty_file(file_server, tree, tmp_path):
    srv = file_server(tree)
    out = out_dir(tmp_path)
    cp = tk(["get", srv.target, "empty", "-o", out])
    assert cp.returncode == 0, cp.stderr
    assert (out / "empty").read_bytes() == b""
    assert os.listdir(out) == ["empty"]


def test_v2_put_of_an_empty_file(file_server, tree):
    srv = file_server(tree, "--allow-upload")
    c = v2(srv)
    ready, done = c.upload(1, "new_empty", b"")
    assert ready.type == READY and ready.offset == 0, ready
    assert done.type == DONE and (done.size, done.digest) == (0, EMPTY_SHA), done
    assert (tree / "new_empty").read_bytes() == b""


def test_put_cli_of_an_empty_file(file_server, tree, tmp_path):
    srv = file_server(tree, "--allow-upload")
    src = tmp_path / "nothing.dat"
    src.write_bytes(b"")
    cp = tk(["put", srv.target, src])
    assert cp.returncode == 0, cp.stderr
    assert (tree / "nothing.dat").read_bytes() == b""


# ---- missing files and directories ------------------------------------------------------


def test_v2_missing_file_is_not_found_and_the_connection_stays(file_server, tree):
    srv = file_server(tree)
    c = v2(srv)
    for s, name in enumerate(["nope", "sub/nope", "nope/deeper", "a.txt/child"], start=1):
        fr = c.download(s, name)
        assert not isinstance(fr, tuple) and fr.code == E["not_found"], (name, fr)
    assert c.download(10, "a.txt")[1] == b"alpha\n"


def test_get_cli_missing_file_fails_and_leaves_nothing(file_server, tree, tmp_path):
    srv = file_server(tree)
    out = out_dir(tmp_path)
    cp = tk(["get", srv.target, "nope", "a.txt", "-o", out])
    assert cp.returncode == 1, cp.stderr
    assert re.search(rb"nope: not_found", cp.stderr), cp.stderr
    assert os.listdir(out) == ["a.txt"]  # the good one still arrived; no partial for the bad one
    assert (out / "a.txt").read_bytes() == b"alpha\n"


def test_v2_get_of_a_directory_is_an_error(file_server, tree):
    srv = file_server(tree)
    c = v2(srv)
    for s, name in enumerate(["sub", "emptydir", "sub/", ".", ""], start=1):
        fr = c.download(s, name)
        assert not isinstance(fr, tuple), f"GET {name!r} answered {fr[0]!r}"
        assert fr.code in (E["not_regular"], E["bad_request"]), (name, fr)
    assert c.download(10, "a.txt")[1] == b"alpha\n"


def test_get_cli_of_a_directory_fails(file_server, tree, tmp_path):
    srv = file_server(tree)
    out = out_dir(tmp_path)
    cp = tk(["get", srv.target, "sub", "-o", out])
    assert cp.returncode == 1
    assert b"sub: not_regular" in cp.stderr, cp.stderr
    assert os.listdir(out) == []


# ---- LIST -------------------------------------------------------------------------------


def test_list_of_a_file_is_not_a_directory(file_server, tree):
    srv = file_server(tree)
    c = v2(srv)
    for s, name in enumerate(["a.txt", "sub/b.txt", "empty"], start=1):
        fr = c.listing(s, name)
        assert not isinstance(fr, tuple) and fr.code == E["not_a_directory"], (name, fr)
    fr = c.listing(9, "nope")
    assert not isinstance(fr, tuple) and fr.code == E["not_found"], fr


def test_list_hides_dotfiles_by_default(file_server, tree):
    srv = file_server(tree)
    c = v2(srv)
    entries, end = c.listing(1, "")
    names = sorted(e["name"] for e in entries)
    assert names == ["a.txt", "empty", "emptydir", "mid.bin", "sub"], names
    assert end.count == len(entries) and end.digest is None
    kinds = {e["name"]: (e["kind"], e["size"]) for e in entries}
    assert kinds["a.txt"] == (KIND_FILE, 6) and kinds["mid.bin"] == (KIND_FILE, 300_000)
    assert kinds["sub"][0] == KIND_DIR
    st = os.stat(tree / "a.txt")
    assert [e["mtime"] for e in entries if e["name"] == "a.txt"] == [st.st_mtime_ns]
    entries, _ = c.listing(2, "sub")
    assert [e["name"] for e in entries] == ["b.txt"]
    # hidden names are not served either
    for s, name in enumerate([".hidden", "sub/.also_hidden", ".hdir/inner.txt"], start=3):
        fr = c.download(s, name)
        assert not isinstance(fr, tuple) and fr.code == E["forbidden"], (name, fr)
    fr = c.listing(9, ".hdir")
    assert not isinstance(fr, tuple) and fr.code == E["forbidden"], fr
    assert v1(srv).fetch(".hidden") == ("error", "Access denied")


def test_list_shows_dotfiles_with_show_hidden(file_server, tree):
    srv = file_server(tree, "--show-hidden")
    c = v2(srv)
    entries, end = c.listing(1, "")
    names = sorted(e["name"] for e in entries)
    assert names == [".hdir", ".hidden", "a.txt", "empty", "emptydir", "mid.bin", "sub"], names
    entries, _ = c.listing(2, "sub")
    assert sorted(e["name"] for e in entries) == [".also_hidden", "b.txt"]
    assert c.download(3, ".hidden")[1] == b"dot file\n"
    assert c.download(4, ".hdir/inner.txt")[1] == b"in a hidden dir\n"
    assert v1(srv).fetch(".hidden")[0] == "file"


def test_list_of_an_empty_directory(file_server, tree):
    srv = file_server(tree)
    entries, end = v2(srv).listing(1, "emptydir")
    assert entries == [] and end.count == 0


def test_list_of_a_large_directory_comes_in_several_entries_frames(file_server, tmp_path):
    root = tmp_path / "root"
    names = {f"file-{i:04d}-" + "n" * 100: b"" for i in range(1500)}  # ~180 KB of records
    make_files(root, names)
    srv = file_server(root, "--chunk-size", "65536")
    c = v2(srv, max_frame=65536)
    entries, end = c.listing(1, "")
    assert sorted(e["name"] for e in entries) == sorted(names)
    assert end.count == 1500
    frames = [t for t, s in c.order if s == 1]
    assert frames.count(7) >= 3 and frames[-1] == END, frames[:5]


def test_ls_cli_lists_sorted_and_hides_dotfiles(file_server, tree):
    srv = file_server(tree)
    cp = tk(["ls", srv.target])
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.decode().splitlines()
    assert [ln.split()[-1] for ln in lines] == ["a.txt", "empty", "emptydir/", "mid.bin", "sub/"], lines
    assert re.match(r"^f +6  \d{4}-\d\d-\d\d \d\d:\d\d  a\.txt$", lines[0]), lines[0]
    assert re.match(r"^d +-  .*  sub/$", lines[-1]), lines[-1]
    cp = tk(["ls", srv.target, "--json", "--sha256", "sub", "a.txt"])
    assert cp.returncode == 0, cp.stderr
    rows = [json.loads(ln) for ln in cp.stdout.decode().splitlines()]
    by_name = {r["name"]: r for r in rows}
    assert by_name["b.txt"]["kind"] == "file" and by_name["b.txt"]["size"] == 5
    assert by_name["b.txt"]["sha256"] == hashlib.sha256(b"beta\n").hexdigest()
    assert by_name["a.txt"]["sha256"] == hashlib.sha256(b"alpha\n").hexdigest()


def test_ls_cli_shows_dotfiles_with_show_hidden(file_server, tree):
    srv = file_server(tree, "--show-hidden")
    cp = tk(["ls", srv.target])
    assert cp.returncode == 0, cp.stderr
    names = [ln.split()[-1] for ln in cp.stdout.decode().splitlines()]
    assert names == [".hdir/", ".hidden", "a.txt", "empty", "emptydir/", "mid.bin", "sub/"], names


def test_ls_cli_of_an_empty_directory_prints_nothing_and_succeeds(file_server, tree):
    srv = file_server(tree)
    cp = tk(["ls", srv.target, "emptydir"])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == b""


def test_ls_cli_of_a_missing_path_fails_with_not_found(file_server, tree):
    srv = file_server(tree)
    cp = tk(["ls", srv.target, "nope"])
    assert cp.returncode == 1
    assert b"nope: not_found" in cp.stderr, cp.stderr


# ---- STAT, offsets, CANCEL, max_frame ------------------------------------------------------


def test_stat_gives_kind_size_mtime_and_digest_on_request(file_server, tree):
    srv = file_server(tree)
    c = v2(srv)
    c.stat(1, "mid.bin", flags=1)
    fr = c.next(1)
    assert fr.type == INFO, fr
    st = os.stat(tree / "mid.bin")
    assert (fr.kind, fr.size, fr.mtime) == (KIND_FILE, 300_000, st.st_mtime_ns)
    assert fr.digest == hashlib.sha256((tree / "mid.bin").read_bytes()).digest()
    c.stat(2, "mid.bin")
    fr = c.next(2)
    assert fr.type == INFO and fr.digest is None, fr
    c.stat(3, "sub")
    fr = c.next(3)
    assert fr.type == INFO and fr.kind == KIND_DIR, fr
    c.stat(4, "nope")
    assert c.next(4).code == E["not_found"]


def test_get_from_an_offset_sends_the_rest_and_the_whole_files_digest(file_server, tree):
    srv = file_server(tree)
    content = (tree / "mid.bin").read_bytes()
    c = v2(srv)
    for s, off in enumerate([1, 100_000, 299_999, 300_000], start=1):
        op, data, end = c.download(s, "mid.bin", offset=off)
        assert (op.size, op.offset) == (300_000, off)
        assert data == content[off:]
        assert end.count == 300_000 - off
        assert end.digest == hashlib.sha256(content).digest()
    fr = c.download(9, "mid.bin", offset=300_001)
    assert not isinstance(fr, tuple) and fr.code == E["bad_offset"], fr


def test_server_never_sends_a_frame_longer_than_our_max_frame(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"big.bin": os.urandom(3 << 20)})
    srv = file_server(root)  # 1 MiB chunks by default
    c = v2(srv, max_frame=65536)
    sizes = []
    orig = c.read_raw_frame

    def spy(*a, **kw):
        r = orig(*a, **kw)
        sizes.append(len(r[3]))
        return r

    c.read_raw_frame = spy
    op, data, end = c.download(1, "big.bin")
    assert data == (root_file := open(os.path.join(root, "big.bin"), "rb").read())
    assert max(sizes) <= 65536, max(sizes)
    assert end.digest == hashlib.sha256(root_file).digest()


def test_cancel_stops_a_download_and_the_stream_id_can_be_reused(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"big.bin": os.urandom(64 << 20), "a.txt": b"alpha\n"})
    srv = file_server(root, "--chunk-size", "65536")
    c = v2(srv)
    c.get(1, "big.bin")
    assert c.next(1).type == OPEN
    assert c.next(1).type == DATA
    c.cancel(1)
    c.ping(42)
    while True:  # the PONG is queued after whatever was already on the way
        fr = c.pump()
        if fr.type == PONG:
            break
    got = [f.type for f in c.queues.get(1, [])]
    assert END not in got and ERROR not in got, got
    assert len(got) < 64 << 4, "the whole file was sent despite the CANCEL"
    c.discard(1)
    assert c.nothing_within(0.3), "frames after the PONG for a cancelled stream"
    # the id is free again
    assert c.download(1, "a.txt")[1] == b"alpha\n"


def test_mid_sized_download_digest_matches(file_server, tree, tmp_path):
    srv = file_server(tree)
    out = out_dir(tmp_path)
    cp = tk(["get", srv.target, "mid.bin", "sub/b.txt", "-o", out])
    assert cp.returncode == 0, cp.stderr
    assert sha256_file(out / "mid.bin") == sha256_file(tree / "mid.bin")
    assert visible_names(out) == ["b.txt", "mid.bin"] and sorted(os.listdir(out)) == ["b.txt", "mid.bin"]


def test_data_bodies_hold_at_most_chunk_size_bytes(file_server, tmp_path):
    content = os.urandom(200_000)
    root = make_files(tmp_path / "root", {"f.bin": content})
    srv = file_server(root, "--chunk-size", "16384")
    c = v2(srv)
    c.get(1, "f.bin")
    assert c.next(1).type == OPEN
    sizes = []
    while True:
        fr = c.next(1)
        if fr.type != DATA:
            break
        sizes.append(len(fr.data))
    assert fr.type == END and sum(sizes) == len(content)
    assert max(sizes) <= 16384, max(sizes)


def test_file_changed_while_sent_ends_with_changed_instead_of_end(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"f.bin": os.urandom(48 << 20)})
    srv = file_server(root, "--chunk-size", "65536")
    c = v2(srv)
    c.get(1, "f.bin")
    assert c.next(1).type == OPEN
    assert c.next(1).type == DATA
    # the client reads no more for now, so most of the file is still unsent;
    # the file grows meanwhile
    with open(os.path.join(root, "f.bin"), "ab") as f:
        f.write(b"appended while the download was running")
    while True:
        fr = c.next(1, timeout=60)
        if fr.type != DATA:
            break
    assert fr.type == ERROR and fr.code == E["changed"], fr
    assert c.download(2, "f.bin")[0].size == (48 << 20) + 39  # a new GET sees the new file


def test_stat_follows_links_inside_and_empty_name_is_the_root(file_server, tree):
    os.symlink("mid.bin", tree / "mid_link")
    srv = file_server(tree)
    c = v2(srv)
    c.stat(1, "mid_link", flags=1)
    fr = c.next(1)
    assert fr.type == INFO and (fr.kind, fr.size) == (KIND_FILE, 300_000), fr
    assert fr.digest == hashlib.sha256((tree / "mid.bin").read_bytes()).digest()
    c.stat(2, "")
    fr = c.next(2)
    assert fr.type == INFO and fr.kind == KIND_DIR, fr
    entries, _ = c.listing(3, "")
    link = [e for e in entries if e["name"] == "mid_link"]
    assert link and link[0]["kind"] == 3 and link[0]["size"] == 0, link  # LIST does not follow


def test_requests_then_half_close_are_all_answered_before_eof(file_server, tmp_path):
    """A v2 client that sends its requests and then shuts down its sending
    side still gets every answer, whole, before the server closes."""
    import socket

    big = os.urandom((8 << 20) + 4321)
    root = make_files(tmp_path / "root", {"big.bin": big, "a.txt": b"alpha\n"})
    srv = file_server(root, "--chunk-size", "65536")
    c = v2(srv)
    c.get(1, "big.bin")
    c.get(2, "a.txt")
    c.list(3, "")
    c.stat(4, "big.bin", flags=1)
    c.get(5, "nope")
    c.sock.shutdown(socket.SHUT_WR)
    op, data, end = c.read_download(1, timeout=60)
    assert data == big and end.digest == hashlib.sha256(big).digest()
    assert c.read_download(2)[1] == b"alpha\n"
    assert c.next(3).type == 7 and c.next(3).type == END
    info = c.next(4)
    assert info.type == INFO and info.digest == hashlib.sha256(big).digest(), info
    assert c.next(5).code == E["not_found"]
    assert c.at_eof(timeout=20)


def test_digest_follows_the_file_when_it_changes(file_server, tmp_path):
    root = make_files(tmp_path / "root", {"f.bin": b"A" * 100_000})
    srv = file_server(root)
    c = v2(srv)
    path = os.path.join(root, "f.bin")
    assert c.download(1, "f.bin")[2].digest == hashlib.sha256(b"A" * 100_000).digest()
    # rewritten in place, same size, and even with the old mtime put back
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"B" * 100_000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    op, data, end = c.download(2, "f.bin")
    assert data == b"B" * 100_000
    assert end.digest == hashlib.sha256(data).digest(), "a stale digest for new content"
    c.stat(3, "f.bin", flags=1)
    assert c.next(3).digest == hashlib.sha256(data).digest()
    # replaced by a rename
    with open(path + ".new", "wb") as f:
        f.write(b"C" * 100_000)
    os.replace(path + ".new", path)
    op, data, end = c.download(4, "f.bin")
    assert data == b"C" * 100_000 and end.digest == hashlib.sha256(data).digest()


def test_get_cli_to_stdout(file_server, tree):
    srv = file_server(tree)
    cp = tk(["get", srv.target, "mid.bin", "-o", "-"])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == (tree / "mid.bin").read_bytes()
