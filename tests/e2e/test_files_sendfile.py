"""`tcpkit file-server --sendfile on|off|auto`: plain downloads go out with
sendfile() or by read and write (auto: write for loopback clients), and the
bytes are the same either way, in both protocol versions, with chunk sizes
that do and do not divide the file (docs/files.md)."""

import hashlib
import os

import pytest

from conftest import run_tcpkit


def make_file(path, size):
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("mode", ["on", "off", "auto"])
@pytest.mark.parametrize("protocol", ["1", "2"])
def test_plain_download_same_bytes_whatever_the_path(server_factory, tmp_path, mode, protocol):
    root = tmp_path / "root"
    root.mkdir()
    want = {
        "odd.bin": make_file(root / "odd.bin", 3 * 65536 + 12345),
        "small.txt": make_file(root / "small.txt", 10),
        "empty": make_file(root / "empty", 0),
    }
    srv = server_factory(["--listen", "127.0.0.1:0", "--root", str(root), "--sendfile", mode,
                          "--chunk-size", "64K"], command="file-server")
    out = tmp_path / "out"
    out.mkdir()
    host = f"127.0.0.1:{srv.addr[1]}"
    cp = run_tcpkit(["get", host, *want, "-o", str(out), "--protocol", protocol, "--no-sync"],
                    timeout=60)
    assert cp.returncode == 0, cp.stderr
    for name, digest in want.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    # To stdout, in order.
    cp = run_tcpkit(["get", host, "odd.bin", "-o", "-", "--protocol", protocol], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert hashlib.sha256(cp.stdout).hexdigest() == want["odd.bin"]


def test_bad_sendfile_mode_is_a_usage_error(tmp_path):
    cp = run_tcpkit(["file-server", "--listen", "127.0.0.1:0", "--root", str(tmp_path),
                     "--sendfile", "sometimes"], timeout=15)
    assert cp.returncode == 2
    assert b"--sendfile" in cp.stderr
