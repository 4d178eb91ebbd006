"""zstd compression: `tcpkit get -z` and `put -z` round trips (content
verified, flags and the bytes on the wire seen through a relay), and the
raw client checking that each DATA body is one zstd frame with its content
size, no larger than max_frame (Python's zstandard module, Debian's
python3-zstandard, when it is installed)."""

import hashlib
import os

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    DATA,
    DONE,
    E,
    ERROR,
    FEATURE_ZSTD,
    GET,
    OPEN,
    PUT,
    READY,
    XFER_ZSTD,
    file_server,
    make_files,
    sha256_file,
    taps,
    tk,
    v2,
)

# ~6 MiB of text that compresses well, and 3 MiB that does not compress.
TEXT = b"".join(b"line %07d of a very compressible file, with the same words again\n" % i for i in range(90_000))


@pytest.fixture
def tree(tmp_path):
    return make_files(tmp_path / "root", {"text.txt": TEXT, "noise.bin": os.urandom(3 << 20), "empty": b""})


def test_get_z_round_trip_and_open_flags_show_zstd(file_server, tree, taps, tmp_path):
    srv = file_server(tree)
    tap = taps(srv.files_addr)
    out = tmp_path / "out"
    out.mkdir()
    cp = tk(["get", tap.target, "text.txt", "noise.bin", "empty", "-z", "-o", out, "--no-sync"])
    assert cp.returncode == 0, cp.stderr
    for name in ("text.txt", "noise.bin", "empty"):
        assert sha256_file(out / name) == sha256_file(os.path.join(tree, name)), name
    gets = tap.of("c2s", GET)
    assert len(gets) == 3 and all(h[4 + 8] & XFER_ZSTD for (_, _, _, _, h) in gets), gets
    opens = tap.of("s2c", OPEN)
    assert len(opens) == 3
    assert all(h[4 + 24] & XFER_ZSTD for (_, _, _, _, h) in opens), [h.hex() for (*_, h) in opens]
    # the compressible file really travelled compressed
    assert tap.bytes["s2c"] < len(TEXT) // 4 + (3 << 20) + (1 << 20), tap.bytes


def test_get_without_z_is_not_compressed(file_server, tree, taps, tmp_path):
    srv = file_server(tree)
    tap = taps(srv.files_addr)
    out = tmp_path / "out"
    out.mkdir()
    cp = tk(["get", tap.target, "text.txt", "-o", out, "--no-sync"])
    assert cp.returncode == 0, cp.stderr
    (_, _, _, _, h), = tap.of("s2c", OPEN)
    assert h[4 + 24] & XFER_ZSTD == 0
    assert tap.bytes["s2c"] > len(TEXT)


def test_put_z_round_trip(file_server, tree, taps, tmp_path):
    srv = file_server(tree, "--allow-upload")
    tap = taps(srv.files_addr)
    src = tmp_path / "src"
    src.mkdir()
    (src / "up_text.txt").write_bytes(TEXT)
    (src / "up_noise.bin").write_bytes(os.urandom(2 << 20))
    (src / "up_empty").write_bytes(b"")
    cp = tk(["put", tap.target, src / "up_text.txt", src / "up_noise.bin", src / "up_empty", "-z"])
    assert cp.returncode == 0, cp.stderr
    for name in ("up_text.txt", "up_noise.bin", "up_empty"):
        assert sha256_file(os.path.join(tree, name)) == sha256_file(src / name), name
    puts = tap.of("c2s", PUT)
    assert len(puts) == 3 and all(h[4 + 8] & XFER_ZSTD for (_, _, _, _, h) in puts), puts
    assert tap.bytes["c2s"] < len(TEXT) // 4 + (2 << 20) + (1 << 20), tap.bytes


def test_zstd_flag_without_the_agreed_feature_is_unsupported(file_server, tree):
    srv = file_server(tree, "--allow-upload")
    c = v2(srv, features=0)
    assert c.server_hello.features == 0
    fr = c.download(1, "text.txt", flags=XFER_ZSTD)
    assert not isinstance(fr, tuple) and fr.code == E["unsupported"], fr
    ready, _ = c.upload(2, "z.bin", b"abc", flags=XFER_ZSTD)
    assert ready.type == ERROR and ready.code == E["unsupported"], ready
    assert c.download(3, "empty")[1] == b""  # the connection carries on


def test_unknown_get_flag_is_unsupported(file_server, tree):
    srv = file_server(tree)
    c = v2(srv, features=FEATURE_ZSTD)
    fr = c.download(1, "text.txt", flags=0x80)
    assert not isinstance(fr, tuple) and fr.code == E["unsupported"], fr


# ---- the raw client decodes the frames itself -------------------------------------------------


@pytest.fixture
def zstd():
    return pytest.importorskip("zstandard", reason="python3-zstandard is not installed")


def test_raw_get_with_zstd_sends_one_zstd_frame_per_data(file_server, tree, zstd):
    srv = file_server(tree)
    c = v2(srv, features=FEATURE_ZSTD, max_frame=65536)
    assert c.server_hello.features == FEATURE_ZSTD
    dctx = zstd.ZstdDecompressor()
    for s, name in enumerate(["text.txt", "noise.bin"], start=1):
        c.get(s, name, flags=XFER_ZSTD)
        op = c.next(s)
        assert op.type == OPEN and op.flags & XFER_ZSTD, op
        content = bytearray()
        frames = 0
        while True:
            fr = c.next(s)
            if fr.type != DATA:
                break
            assert len(fr.data) <= 65536
            params = zstd.get_frame_parameters(fr.data)
            assert params.content_size != zstd.CONTENTSIZE_UNKNOWN, "no content size in the frame header"
            assert 0 < params.content_size <= 65536, params.content_size
            part = dctx.decompress(fr.data)  # one complete frame: it decompresses on its own
            assert len(part) == params.content_size
            content += part
            frames += 1
        want = open(os.path.join(tree, name), "rb").read()
        assert fr.type == 4, fr  # END
        assert bytes(content) == want
        assert fr.count == len(want) and fr.digest == hashlib.sha256(want).digest()
        assert frames >= len(want) // 65536


def test_raw_put_with_zstd_frames(file_server, tree, zstd):
    srv = file_server(tree, "--allow-upload")
    c = v2(srv, features=FEATURE_ZSTD)
    cctx = zstd.ZstdCompressor(write_content_size=True)
    content = TEXT[: 1 << 20]
    c.put(1, "raw_z.txt", len(content), flags=XFER_ZSTD)
    assert c.next(1).type == READY
    for p in range(0, len(content), 200_000):
        c.data(1, cctx.compress(content[p:p + 200_000]))
    c.end(1, len(content), hashlib.sha256(content).digest())
    fr = c.next(1)
    assert fr.type == DONE, fr
    assert open(os.path.join(tree, "raw_z.txt"), "rb").read() == content


def test_raw_put_with_garbage_instead_of_zstd_is_refused(file_server, tree, zstd):
    srv = file_server(tree, "--allow-upload")
    c = v2(srv, features=FEATURE_ZSTD)
    c.put(1, "bad_z.txt", 1000, flags=XFER_ZSTD)
    assert c.next(1).type == READY
    c.data(1, b"this is not a zstd frame" * 10)
    fr = c.next(1)
    assert fr.type == ERROR and fr.code == E["bad_request"], fr
    assert not os.path.exists(os.path.join(tree, "bad_z.txt"))
    # a frame without its content size in the header is refused too
    cobj = zstd.ZstdCompressor(write_content_size=False).compressobj()
    unsized = cobj.compress(b"a" * 1000) + cobj.flush()
    c.put(2, "bad_z2.txt", 1000, flags=XFER_ZSTD)
    assert c.next(2).type == READY
    c.data(2, unsized)
    fr = c.next(2)
    assert fr.type == ERROR and fr.code == E["bad_request"], fr
    assert c.download(3, "empty", flags=XFER_ZSTD)[1] == b""
