"""Per-connection limits over time and the server-wide transfer limit:
--idle-timeout closes a connection silent both ways, --stall-timeout drops a
client that stopped reading (others are served meanwhile), --max-transfers
refuses transfers over the limit with busy / `Server busy`."""

import os

import pytest

from files_helpers import (  # noqa: F401  (fixtures)
    E,
    OPEN,
    PeerClosed,
    file_server,
    make_files,
    v1,
    v2,
)


@pytest.fixture
def root(tmp_path):
    return make_files(tmp_path / "root", {"a.txt": b"alpha\n", "big.bin": os.urandom(64 << 20)})


def closes(c, timeout):
    """Reads (and drops) frames until the server closes; False if it stays
    open for `timeout` seconds."""
    try:
        while True:
            c.read_raw_frame(timeout=timeout)
    except PeerClosed:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("version", [1, 2])
def test_idle_timeout_closes_a_silent_connection(file_server, root, version):
    srv = file_server(root, "--idle-timeout", "1", "--heartbeat", "0")
    c = v1(srv) if version == 1 else v2(srv)
    if version == 1:
        assert c.fetch("a.txt")[0] == "file"
    else:
        assert c.download(1, "a.txt")[1] == b"alpha\n"
    assert closes(c, 20), "a silent connection outlived --idle-timeout 1 by far"
    assert v2(srv).download(1, "a.txt")[1] == b"alpha\n"


def test_stall_timeout_drops_a_client_that_stopped_reading(file_server, root):
    srv = file_server(root, "--stall-timeout", "1", "--chunk-size", "65536", "--heartbeat", "0")
    stuck = v2(srv)
    stuck.get(1, "big.bin")
    assert stuck.next(1).type == OPEN
    # it reads nothing more; meanwhile another client is served
    assert v2(srv).download(1, "a.txt")[1] == b"alpha\n"
    assert srv.wait_stderr(r"closed .*stall", timeout=20), srv.stderr()[-2000:]
    assert closes(stuck, 20)
    assert v1(srv).fetch("a.txt")[0] == "file"


def test_max_transfers_refuses_the_transfer_over_the_limit(file_server, root):
    srv = file_server(root, "--max-transfers", "1", "--chunk-size", "65536")
    first = v2(srv)
    first.get(1, "big.bin")
    assert first.next(1).type == OPEN  # one transfer open in the whole server
    second = v2(srv)
    fr = second.download(1, "a.txt")
    assert not isinstance(fr, tuple) and fr.code == E["busy"], fr
    assert v1(srv).fetch("a.txt") == ("error", "Server busy")
    first.cancel(1)
    first.ping(9)
    while first.pump().type != 15:  # PONG: the cancel is done
        pass
    first.discard(1)
    assert second.download(2, "a.txt")[1] == b"alpha\n"
