"""Names and the served root: every way out of the root is refused with a
clear error in both versions and nothing outside it is ever served (nor
written); symbolic links that stay inside work; FIFOs and devices are
refused promptly without blocking the server, and LIST still works."""

import os

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    DATA,
    E,
    ERROR,
    INFO,
    KIND_FILE,
    KIND_LINK,
    KIND_OTHER,
    OPEN,
    V1_ERROR,
    file_server,
    make_files,
    tk,
    v1,
    v2,
)

INSIDE = b"inside the root\n"


@pytest.fixture
def tree(tmp_path):
    """root/ with inside files and every kind of escape; outside/ beside it
    holds a secret that must never be served."""
    secret = b"SECRET-" + os.urandom(8).hex().encode() + b"\n"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(secret)
    root = tmp_path / "root"
    make_files(root, {"inside.txt": INSIDE, "d/nested.txt": b"nested\n"})
    os.symlink(str(outside / "secret.txt"), root / "abs_out")          # absolute, leaves
    os.symlink("../outside/secret.txt", root / "rel_out")               # relative, leaves
    os.symlink("../../outside/secret.txt", root / "d" / "deep_out")     # relative from a subdirectory
    os.symlink("../outside", root / "dir_out")                          # a directory outside
    os.symlink("/etc", root / "etc_link")
    os.symlink("loop_b", root / "loop_a")                               # a loop
    os.symlink("loop_a", root / "loop_b")
    os.symlink("self", root / "self")                                   # a loop of one
    os.symlink("inside.txt", root / "link_in")                          # stays inside
    os.symlink("../inside.txt", root / "d" / "up_in")                   # up, but still inside
    os.symlink("d", root / "dir_in")                                    # a directory inside
    return {"root": root, "outside": outside, "secret": secret, "secret_path": str(outside / "secret.txt")}


def escapes(t):
    """(name, code) pairs: every one must be refused."""
    return [
        ("../outside/secret.txt", "forbidden"),
        ("..", "forbidden"),
        ("a/../../outside/secret.txt", "forbidden"),
        ("d/../../outside/secret.txt", "forbidden"),
        ("d/../inside.txt", "forbidden"),  # '..' is refused even when it would stay inside
        (t["secret_path"], "forbidden"),   # absolute
        ("/etc/passwd", "forbidden"),
        ("//etc/passwd", "forbidden"),
        ("abs_out", "forbidden"),
        ("rel_out", "forbidden"),
        ("d/deep_out", "forbidden"),
        ("dir_out/secret.txt", "forbidden"),
        ("etc_link/passwd", "forbidden"),
        ("loop_a", "forbidden"),
        ("self", "forbidden"),
        ("inside.txt\0../../outside/secret.txt", "bad_request"),  # a NUL byte
        ("\0", "bad_request"),
        ("x" * 5000, "too_large"),  # over 4096 bytes
        ("a/" * 2500 + "x", "too_large"),
    ]


def _bytes(name):
    return name.encode() if isinstance(name, str) else name


def test_v2_every_escape_is_refused_with_a_clear_error(file_server, tree):
    srv = file_server(tree["root"])
    c = v2(srv)
    cases = escapes(tree)
    for i, (name, code) in enumerate(cases, start=1):
        c.get(i, name)
    for i, (name, code) in enumerate(cases, start=1):
        fr = c.next(i)
        assert fr.type == ERROR, f"GET {name[:60]!r} was not refused: {fr!r}"
        assert fr.code == E[code], f"GET {name[:60]!r}: want {code}, got {fr!r}"
        assert fr.msg.strip(), f"GET {name[:60]!r}: an empty error message"
    for q in c.queues.values():
        assert not q, f"frames beyond the errors: {list(q)}"
    # the connection is still good
    op, data, end = c.download(1000, "inside.txt")
    assert data == INSIDE


def test_v2_escapes_are_refused_for_list_and_stat_too(file_server, tree):
    srv = file_server(tree["root"])
    c = v2(srv)
    for i, name in enumerate(["..", "../outside", "dir_out", "etc_link", "/", "/etc", "d/../.."], start=1):
        res = c.listing(i, name)
        assert not isinstance(res, tuple), f"LIST {name!r} was answered with entries {res[0]}"
        assert res.code == E["forbidden"], f"LIST {name!r}: {res!r}"
    for i, name in enumerate(["../outside/secret.txt", "dir_out/secret.txt", "abs_out", "rel_out",
                              tree["secret_path"]], start=100):
        c.stat(i, name, flags=1)
        fr = c.next(i)
        assert fr.type == ERROR and fr.code == E["forbidden"], f"STAT {name!r}: {fr!r}"


def test_v1_every_escape_is_refused_and_the_connection_stays(file_server, tree):
    srv = file_server(tree["root"])
    c = v1(srv)
    want = {"forbidden": "Access denied", "bad_request": "Bad file name"}
    for name, code in escapes(tree):
        if code == "too_large":
            continue  # over the v1 frame limit: see the next test
        got = c.fetch(name)
        assert got == ("error", want[code]), f"v1 request {name[:60]!r}: {got[:3]!r}"
    assert c.fetch("inside.txt") == ("file", b"inside.txt", len(INSIDE), INSIDE)


def test_v1_5000_byte_name_is_refused_and_the_connection_closed(file_server, tree):
    srv = file_server(tree["root"])
    for name in ("x" * 5000, "a/" * 2500 + "x"):
        c = v1(srv)
        c.request(name)
        typ, payload = c.read_frame()
        assert typ == V1_ERROR, payload
        assert payload == b"Frame too large (%d bytes)" % len(name), payload
        assert c.at_eof()
    assert v1(srv).fetch("inside.txt")[0] == "file"


def test_nothing_outside_the_root_is_ever_sent(file_server, tree):
    """Everything the server says to every escape, in both versions, is
    searched for the secret's bytes."""
    srv = file_server(tree["root"])
    c2 = v2(srv)
    for i, (name, _) in enumerate(escapes(tree), start=1):
        c2.get(i, name)
        c2.stat(10000 + i, name, flags=1)
        c2.list(20000 + i, name)
    c2.ping(1)
    while True:  # PONG comes after every answer
        fr = c2.read_frame()
        assert fr.type not in (OPEN, DATA, INFO), f"served something for an escape: {fr!r}"
        assert tree["secret"].strip() not in fr.body
        if fr.type == 15:
            break
    c1 = v1(srv)
    for name, code in escapes(tree):
        if code != "too_large":
            got = c1.fetch(name)
            assert got[0] == "error", got[:3]


def test_symlinks_that_stay_inside_are_served(file_server, tree, tmp_path):
    srv = file_server(tree["root"])
    c = v2(srv)
    for i, name in enumerate(["link_in", "d/up_in", "dir_in/nested.txt", "./inside.txt", "d//nested.txt"], start=1):
        res = c.download(i, name)
        assert isinstance(res, tuple), f"GET {name!r} refused: {res!r}"
        want = b"nested\n" if "nested" in name else INSIDE
        assert res[1] == want, name
    assert v1(srv).fetch("d/up_in") == ("file", b"d/up_in", len(INSIDE), INSIDE)
    res = c.listing(100, "dir_in")
    assert isinstance(res, tuple), res
    assert sorted(e["name"] for e in res[0]) == ["deep_out", "nested.txt", "up_in"], res
    out = tmp_path / "dl"
    out.mkdir()
    cp = tk(["get", srv.target, "link_in", "-o", out, "--no-sync"])
    assert cp.returncode == 0, cp.stderr
    assert (out / "link_in").read_bytes() == INSIDE


def test_get_cli_refuses_escapes_and_writes_nothing(file_server, tree, tmp_path):
    srv = file_server(tree["root"])
    out = tmp_path / "dl"
    out.mkdir()
    for name in ["../outside/secret.txt", "abs_out", "rel_out", "dir_out/secret.txt", tree["secret_path"], "loop_a"]:
        cp = tk(["get", srv.target, name, "-o", out])
        assert cp.returncode == 1, (name, cp.stderr)
        assert b"forbidden" in cp.stderr, (name, cp.stderr)
        assert os.listdir(out) == [], (name, os.listdir(out))


def test_uploads_cannot_escape_the_root(file_server, tree):
    srv = file_server(tree["root"], "--allow-upload")
    before = sorted(os.listdir(tree["outside"]))
    c = v2(srv)
    names = ["../outside/evil", "dir_out/evil", "d/../../outside/evil", tree["secret_path"],
             str(tree["outside"] / "evil"), "abs_out", "etc_link/evil"]
    for i, name in enumerate(names, start=1):
        ready, _ = c.upload(i, name, b"evil\n")
        assert ready.type == ERROR, f"PUT {name!r} was accepted: {ready!r}"
        assert ready.code in (E["forbidden"], E["exists"]), f"PUT {name!r}: {ready!r}"
    assert sorted(os.listdir(tree["outside"])) == before
    assert (tree["outside"] / "secret.txt").read_bytes() == tree["secret"]


# ---- FIFOs and devices --------------------------------------------------------------


@pytest.fixture
def special_tree(tmp_path):
    root = tmp_path / "root"
    make_files(root, {"a.txt": b"regular\n"})
    os.mkfifo(root / "fifo")
    os.symlink("/dev/zero", root / "zero")
    os.symlink("fifo", root / "fifo_link")
    return root


def test_fifo_and_dev_zero_are_refused_promptly_in_v2(file_server, special_tree):
    srv = file_server(special_tree)
    c = v2(srv)
    c.get(1, "fifo")
    c.get(2, "zero")
    c.get(3, "fifo_link")
    # while those are pending (or refused), another client is served
    other = v2(srv)
    assert other.download(1, "a.txt")[1] == b"regular\n"
    for s in (1, 2, 3):
        fr = c.next(s, timeout=10)
        assert fr.type == ERROR, fr
        assert fr.code in (E["not_regular"], E["forbidden"]), fr
    assert c.download(4, "a.txt")[1] == b"regular\n"


def test_fifo_and_dev_zero_are_refused_promptly_in_v1(file_server, special_tree):
    srv = file_server(special_tree)
    c = v1(srv)
    c.request("fifo")
    other = v1(srv)
    assert other.fetch("a.txt") == ("file", b"a.txt", 8, b"regular\n")
    assert c.read_answer(timeout=10) == ("error", "Not a regular file")
    got = c.fetch("zero", timeout=10)
    assert got[0] == "error" and got[1] in ("Not a regular file", "Access denied"), got[:3]
    assert c.fetch("fifo_link", timeout=10) == ("error", "Not a regular file")
    assert c.fetch("a.txt")[0] == "file"


def test_fifo_with_a_writer_waiting_is_still_refused(file_server, special_tree):
    """Even a FIFO that has data ready is not read from."""
    srv = file_server(special_tree)
    rfd = os.open(special_tree / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(special_tree / "fifo", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(wfd, b"fifo bytes")
        c = v2(srv)
        fr = c.download(1, "fifo")
        assert not isinstance(fr, tuple) and fr.code == E["not_regular"], fr
        assert os.read(rfd, 100) == b"fifo bytes"  # nobody else read them
    finally:
        os.close(wfd)
        os.close(rfd)


def test_list_still_works_with_fifo_and_device_link(file_server, special_tree):
    srv = file_server(special_tree)
    c = v2(srv)
    c.get(1, "fifo")
    assert c.next(1).type == ERROR
    entries, end = c.listing(2, "")
    kinds = {e["name"]: e["kind"] for e in entries}
    assert kinds == {"a.txt": KIND_FILE, "fifo": KIND_OTHER, "zero": KIND_LINK, "fifo_link": KIND_LINK}, kinds
    assert end.count == 4
    cp = tk(["ls", srv.target])
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.decode().splitlines()
    assert [ln.split()[0] + " " + ln.split()[-1] for ln in lines] == ["f a.txt", "? fifo", "l fifo_link", "l zero"], lines


def test_get_cli_of_a_fifo_fails_quickly(file_server, special_tree, tmp_path):
    srv = file_server(special_tree)
    out = tmp_path / "dl"
    out.mkdir()
    cp = tk(["get", srv.target, "fifo", "-o", out], timeout=20)
    assert cp.returncode == 1, cp.stderr
    assert b"not_regular" in cp.stderr, cp.stderr
    assert os.listdir(out) == []
