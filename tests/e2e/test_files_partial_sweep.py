"""`tcpkit file-server --allow-upload`: upload partials that nobody resumed
within --partial-ttl are removed by the sweep that runs at start (and then
hourly); fresh ones, and ones an upload holds, stay (docs/files.md)."""

import os
import time

PARTIAL = ".tcpkit-part-"


def write_partial(path, age_s):
    with open(path, "wb") as f:
        f.write(b"x" * 100)
    t = time.time() - age_s
    os.utime(path, (t, t))


def test_stale_partials_removed_at_start_fresh_ones_kept(server_factory, tmp_path):
    (tmp_path / "d").mkdir()
    stale = tmp_path / "d" / (PARTIAL + "0123456789abcdef")
    fresh = tmp_path / (PARTIAL + "fedcba9876543210")
    other = tmp_path / "d" / "old-but-not-a-partial"
    write_partial(stale, 3 * 86400)
    write_partial(fresh, 60)
    write_partial(other, 3 * 86400)
    srv = server_factory(["--listen", "127.0.0.1:0", "--root", str(tmp_path), "--allow-upload",
                          "--partial-ttl", "86400"], command="file-server")
    srv.wait_stderr(r"removed 1 upload partial\(s\) untouched for 86400 s")
    assert not stale.exists()
    assert fresh.exists()
    assert other.exists()


def test_no_sweep_when_uploads_are_off_or_ttl_is_zero(server_factory, tmp_path):
    stale = tmp_path / (PARTIAL + "0123456789abcdef")
    write_partial(stale, 3 * 86400)
    for extra in ([], ["--allow-upload", "--partial-ttl", "0"]):
        srv = server_factory(["--listen", "127.0.0.1:0", "--root", str(tmp_path)] + extra,
                             command="file-server")
        # A request answered proves the server is up and past its start.
        c = srv.connect()
        c.sock.sendall(b"\x01\x01\x00\x00\x00\x04nope")
        head = c.recv_exact(6)
        assert head[:2] == b"\x01\x05", head
        assert srv.stop() == 0
        assert "removed" not in srv.stderr()
        assert stale.exists()
