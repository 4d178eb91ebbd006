"""Uploads: off by default, --allow-upload, existing names (exists, --force
with and without --allow-overwrite), --max-upload, digest and count checks,
nothing ever visible under the final name before the upload is complete."""

import hashlib
import os
import struct

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    DONE,
    E,
    ERROR,
    PUT_OVERWRITE,
    READY,
    file_server,
    make_files,
    sha256_file,
    tk,
    v2,
    visible_names,
)

OLD = b"the old content\n"


@pytest.fixture
def root(tmp_path):
    return make_files(tmp_path / "root", {"existing.txt": OLD, "sub/keep": b"k"})


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "src"
    p.mkdir()
    (p / "new.bin").write_bytes(os.urandom(200_000))
    (p / "existing.txt").write_bytes(b"the new content\n")
    return p


def test_uploads_are_off_by_default(file_server, root, src):
    srv = file_server(root)
    cp = tk(["put", srv.target, src / "new.bin"])
    assert cp.returncode == 1, cp.stderr
    assert b"read_only" in cp.stderr, cp.stderr
    c = v2(srv)
    ready, _ = c.upload(1, "raw.bin", b"data")
    assert ready.type == ERROR and ready.code == E["read_only"], ready
    assert sorted(os.listdir(root)) == ["existing.txt", "sub"]  # not even a partial


def test_allow_upload_stores_the_file(file_server, root, src):
    srv = file_server(root, "--allow-upload")
    cp = tk(["put", srv.target, src / "new.bin"])
    assert cp.returncode == 0, cp.stderr
    assert sha256_file(os.path.join(root, "new.bin")) == sha256_file(src / "new.bin")
    cp = tk(["put", srv.target, src / "new.bin", "--to", "sub", "--as", "renamed.bin"])
    assert cp.returncode == 0, cp.stderr
    assert sha256_file(os.path.join(root, "sub", "renamed.bin")) == sha256_file(src / "new.bin")
    assert sorted(os.listdir(root)) == ["existing.txt", "new.bin", "sub"]  # no partials left


def test_raw_upload_done_carries_size_and_digest(file_server, root):
    srv = file_server(root, "--allow-upload")
    content = os.urandom(3 * 1024 * 1024 + 7)
    c = v2(srv)
    ready, done = c.upload(1, "raw.bin", content, chunk=100_000)
    assert ready.type == READY and ready.offset == 0, ready
    assert done.type == DONE, done
    assert (done.size, done.digest) == (len(content), hashlib.sha256(content).digest())
    with open(os.path.join(root, "raw.bin"), "rb") as f:
        assert f.read() == content


def test_upload_into_a_missing_directory_is_not_found(file_server, root):
    srv = file_server(root, "--allow-upload")
    ready, _ = v2(srv).upload(1, "no/such/dir/x.bin", b"x")
    assert ready.type == ERROR and ready.code == E["not_found"], ready


def test_existing_name_is_refused_without_force(file_server, root, src):
    srv = file_server(root, "--allow-upload", "--allow-overwrite")
    cp = tk(["put", srv.target, src / "existing.txt"])
    assert cp.returncode == 1, cp.stderr
    assert b"exists" in cp.stderr, cp.stderr
    ready, _ = v2(srv).upload(1, "existing.txt", b"raw")
    assert ready.type == ERROR and ready.code == E["exists"], ready
    with open(os.path.join(root, "existing.txt"), "rb") as f:
        assert f.read() == OLD


def test_force_without_allow_overwrite_is_refused(file_server, root, src):
    srv = file_server(root, "--allow-upload")
    cp = tk(["put", srv.target, src / "existing.txt", "--force"])
    assert cp.returncode == 1, cp.stderr
    ready, _ = v2(srv).upload(1, "existing.txt", b"raw", flags=PUT_OVERWRITE)
    assert ready.type == ERROR and ready.code in (E["forbidden"], E["exists"]), ready
    with open(os.path.join(root, "existing.txt"), "rb") as f:
        assert f.read() == OLD


def test_force_with_allow_overwrite_replaces(file_server, root, src):
    srv = file_server(root, "--allow-upload", "--allow-overwrite")
    cp = tk(["put", srv.target, src / "existing.txt", "--force"])
    assert cp.returncode == 0, cp.stderr
    with open(os.path.join(root, "existing.txt"), "rb") as f:
        assert f.read() == b"the new content\n"
    ready, done = v2(srv).upload(1, "existing.txt", b"raw\n", flags=PUT_OVERWRITE)
    assert done is not None and done.type == DONE, (ready, done)
    with open(os.path.join(root, "existing.txt"), "rb") as f:
        assert f.read() == b"raw\n"


def test_overwrite_cannot_replace_a_directory(file_server, root):
    srv = file_server(root, "--allow-upload", "--allow-overwrite")
    ready, _ = v2(srv).upload(1, "sub", b"x", flags=PUT_OVERWRITE)
    assert ready.type == ERROR, ready
    assert os.path.isdir(os.path.join(root, "sub"))


def test_upload_over_max_upload_is_refused(file_server, root, tmp_path):
    srv = file_server(root, "--allow-upload", "--max-upload", "1000")
    big = tmp_path / "big.bin"
    big.write_bytes(b"b" * 1001)
    cp = tk(["put", srv.target, big])
    assert cp.returncode == 1, cp.stderr
    assert b"too_large" in cp.stderr, cp.stderr
    c = v2(srv)
    ready, _ = c.upload(1, "raw.bin", b"r" * 1001)
    assert ready.type == ERROR and ready.code == E["too_large"], ready
    ready, done = c.upload(2, "fits.bin", b"f" * 1000)  # exactly the limit
    assert done is not None and done.type == DONE, (ready, done)
    assert sorted(visible_names(root)) == ["existing.txt", "fits.bin", "sub"]


def test_digest_mismatch_stores_nothing(file_server, root):
    srv = file_server(root, "--allow-upload")
    content = os.urandom(500_000)
    c = v2(srv)
    wrong = hashlib.sha256(content + b"!").digest()
    ready, fr = c.upload(1, "bad.bin", content, digest=wrong)
    assert ready.type == READY
    assert fr.type == ERROR and fr.code == E["digest_mismatch"], fr
    assert not os.path.exists(os.path.join(root, "bad.bin"))
    assert sorted(os.listdir(root)) == ["existing.txt", "sub"]  # the partial is deleted too
    entries, _ = c.listing(2, "")
    assert sorted(e["name"] for e in entries) == ["existing.txt", "sub"]
    # the same name uploads fine afterwards
    ready, done = c.upload(3, "bad.bin", content)
    assert done.type == DONE, done
    with open(os.path.join(root, "bad.bin"), "rb") as f:
        assert f.read() == content


def test_end_with_a_wrong_count_is_refused(file_server, root):
    srv = file_server(root, "--allow-upload")
    c = v2(srv)
    c.put(1, "short.bin", 1000)
    assert c.next(1).type == READY
    c.data(1, b"s" * 600)
    c.end(1, 600, hashlib.sha256(b"s" * 600).digest())  # 600 of the 1000 announced
    fr = c.next(1)
    assert fr.type == ERROR and fr.code == E["bad_request"], fr
    assert not os.path.exists(os.path.join(root, "short.bin"))


def test_more_data_than_announced_is_refused(file_server, root):
    srv = file_server(root, "--allow-upload")
    c = v2(srv)
    c.put(1, "long.bin", 100)
    assert c.next(1).type == READY
    c.data(1, b"l" * 150)
    fr = c.next(1)
    assert fr.type == ERROR and fr.code == E["too_large"], fr
    assert not os.path.exists(os.path.join(root, "long.bin"))
    assert c.download(2, "existing.txt")[1] == OLD  # the connection carries on


def test_end_without_a_digest_is_refused(file_server, root):
    srv = file_server(root, "--allow-upload")
    c = v2(srv)
    c.put(1, "nodigest.bin", 3)
    assert c.next(1).type == READY
    c.data(1, b"abc")
    c.send_frame(4, struct.pack(">IQ", 1, 3))  # END with the count only
    fr = c.next(1)
    assert fr.type == ERROR and fr.code == E["bad_request"], fr
    assert not os.path.exists(os.path.join(root, "nodigest.bin"))


def test_nothing_is_visible_under_the_final_name_during_an_upload(file_server, root):
    srv = file_server(root, "--allow-upload")
    c = v2(srv)
    content = os.urandom(1 << 20)
    c.put(1, "slow.bin", len(content))
    assert c.next(1).type == READY
    c.data(1, content[:600_000])
    # a second client's view while the upload waits for the rest
    other = v2(srv)
    entries, _ = other.listing(1, "")
    assert "slow.bin" not in [e["name"] for e in entries]
    assert other.download(2, "slow.bin").code == E["not_found"]
    assert not os.path.exists(os.path.join(root, "slow.bin"))
    c.data(1, content[600_000:])
    c.end(1, len(content), hashlib.sha256(content).digest())
    assert c.next(1).type == DONE
    assert other.download(3, "slow.bin")[1] == content


def test_same_upload_twice_at_once_is_busy(file_server, root):
    srv = file_server(root, "--allow-upload")
    a, b = v2(srv), v2(srv)
    a.put(1, "twice.bin", 10)
    assert a.next(1).type == READY
    b.put(1, "twice.bin", 10)
    fr = b.next(1)
    assert fr.type == ERROR and fr.code == E["busy"], fr
    a.data(1, b"0123456789")
    a.end(1, 10, hashlib.sha256(b"0123456789").digest())
    assert a.next(1).type == DONE


def test_hidden_names_cannot_be_uploaded(file_server, root, src):
    srv = file_server(root, "--allow-upload")
    cp = tk(["put", srv.target, src / "new.bin", "--as", ".sneaky"])
    assert cp.returncode == 1, cp.stderr
    assert b"forbidden" in cp.stderr, cp.stderr
    ready, _ = v2(srv).upload(1, "sub/.sneaky", b"x")
    assert ready.type == ERROR and ready.code == E["forbidden"], ready
    assert sorted(os.listdir(root)) == ["existing.txt", "sub"]
    assert os.listdir(os.path.join(root, "sub")) == ["keep"]


def test_upload_partials_are_never_served_listed_or_written_even_with_show_hidden(file_server, root):
    srv = file_server(root, "--allow-upload", "--show-hidden")
    c = v2(srv)
    c.put(1, "pending.bin", 1000)
    assert c.next(1).type == READY
    c.data(1, b"p" * 10)
    c.ping(1)
    assert c.next(0).token == 1
    parts = [n for n in os.listdir(root) if n.startswith(".tcpkit-part-")]
    assert len(parts) == 1, os.listdir(root)
    other = v2(srv)
    fr = other.download(1, parts[0])
    assert not isinstance(fr, tuple) and fr.code == E["forbidden"], fr
    entries, _ = other.listing(2, "")
    assert sorted(e["name"] for e in entries) == ["existing.txt", "sub"], entries
    for s, name in ((3, parts[0]), (4, ".tcpkit-part-0000000000000000")):
        ready, _ = other.upload(s, name, b"x")
        assert ready.type == ERROR and ready.code == E["forbidden"], (name, ready)
    other.stat(5, parts[0])
    assert other.next(5).code == E["forbidden"]


def test_upload_that_would_leave_less_than_min_free_is_refused(file_server, root, src):
    vfs = os.statvfs(root)
    avail = vfs.f_bavail * vfs.f_frsize
    srv = file_server(root, "--allow-upload", "--min-free", str(avail + (1 << 30)))
    cp = tk(["put", srv.target, src / "new.bin"])
    assert cp.returncode == 1, cp.stderr
    assert b"no_space" in cp.stderr, cp.stderr
    ready, _ = v2(srv).upload(1, "raw.bin", b"r" * 10)
    assert ready.type == ERROR and ready.code == E["no_space"], ready
    assert sorted(os.listdir(root)) == ["existing.txt", "sub"]


def test_put_continue_without_anything_to_resume_uploads_from_the_start(file_server, root, src):
    srv = file_server(root, "--allow-upload")
    cp = tk(["put", srv.target, src / "new.bin", "--continue"])
    assert cp.returncode == 0, cp.stderr
    assert sha256_file(os.path.join(root, "new.bin")) == sha256_file(src / "new.bin")
