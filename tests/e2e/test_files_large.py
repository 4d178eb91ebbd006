"""1 GiB each way: `tcpkit get` and `tcpkit put` of a 1 GiB file of random
bytes, digests compared, the server's peak memory staying far below the
file's size (no buffering of whole files)."""

import os

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    file_server,
    sha256_file,
    tk,
    write_random_file,
)

GIB = 1 << 30
# ASan keeps freed memory in a quarantine that would show up in RSS.
ASAN_ENV = {"ASAN_OPTIONS": "quarantine_size_mb=16"}
PEAK_LIMIT_KIB = 160 * 1024  # ASan overhead included (about 40 MiB seen); the file is 1 GiB


@pytest.fixture(scope="module")
def gib_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("gib")
    path = d / "one_gib.bin"
    digest = write_random_file(path, GIB)
    yield path, digest
    path.unlink()


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def test_download_of_1_gib_matches_its_digest(file_server, gib_file, tmp_path):
    path, digest = gib_file
    srv = file_server(path.parent, env=ASAN_ENV)
    out = tmp_path / "out"
    out.mkdir()
    try:
        cp = tk(["get", srv.target, path.name, "-o", out, "--no-sync", "-q"], timeout=600)
        assert cp.returncode == 0, cp.stderr
        assert os.path.getsize(out / path.name) == GIB
        assert sha256_file(out / path.name) == digest
        assert os.listdir(out) == [path.name]
        assert peak_rss_kib(srv.pid) < PEAK_LIMIT_KIB, f"server peak RSS {peak_rss_kib(srv.pid)} KiB"
    finally:
        for name in os.listdir(out):
            os.unlink(out / name)


def test_upload_of_1_gib_matches_its_digest(file_server, gib_file, tmp_path):
    path, digest = gib_file
    root = tmp_path / "root"
    root.mkdir()
    srv = file_server(root, "--allow-upload", env=ASAN_ENV)
    try:
        cp = tk(["put", srv.target, path, "--as", "up.bin", "-q"], timeout=600)
        assert cp.returncode == 0, cp.stderr
        assert os.path.getsize(root / "up.bin") == GIB
        assert sha256_file(root / "up.bin") == digest
        assert os.listdir(root) == ["up.bin"]  # no partial left
        assert peak_rss_kib(srv.pid) < PEAK_LIMIT_KIB, f"server peak RSS {peak_rss_kib(srv.pid)} KiB"
    finally:
        for name in os.listdir(root):
            os.unlink(root / name)
