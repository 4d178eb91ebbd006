"""Connection churn and abrupt clients: the server survives, frees everything
(LeakSanitizer runs at exit) and still exits 0 on SIGTERM."""

import signal
import socket
import struct

import pytest

from conftest import Conn


def _rst(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("framing", ["line", "length", "json"])
def test_churn_of_abrupt_clients_then_clean_exit(server_factory, framing):
    srv = server_factory(["--listen", "127.0.0.1:0", "--framing", framing])
    partial = {
        "line": b"half a line",
        "length": struct.pack(">I", 100) + b"short",
        "json": b'{"type":"ECHO","payl',
    }[framing]
    full = {
        "line": b"x\n" * 50,
        "length": (struct.pack(">I", 1) + b"x") * 50,
        "json": b'{"type":"ECHO","payload":{"data":"x"}}\n' * 50,
    }[framing]
    for i in range(150):
        s = socket.socket()
        s.settimeout(10)
        s.connect(srv.addr)
        kind = i % 5
        if kind == 0:
            s.close()  # connect and leave at once
        elif kind == 1:
            s.sendall(partial)
            _rst(s)  # reset with a partial request buffered
        elif kind == 2:
            s.sendall(full)
            _rst(s)  # reset with replies owed
        elif kind == 3:
            s.sendall(full)
            s.close()  # FIN with replies owed, never read
        else:
            s.sendall(partial)
            s.shutdown(socket.SHUT_WR)  # half-close mid-request
            s.settimeout(10)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            s.close()
    c = Conn(srv.addr)
    srv.clients.append(c)
    if framing == "line":
        assert c.request("survived") == b"ECHO: survived"
    elif framing == "length":
        c.send_frame(b"survived")
        assert c.recv_frame() == b"Got: survived"
    else:
        assert c.jrequest({"type": "ECHO", "payload": {"data": "survived"}})["payload"]["data"] == "survived"
    c.close()
    assert srv.stop(signal.SIGTERM, timeout=15) == 0


@pytest.mark.parametrize("threads", ["1", "4"])
def test_abrupt_clients_release_their_max_clients_slots(server_factory, threads):
    import time

    srv = server_factory(["--listen", "127.0.0.1:0", "--max-clients", "4", "--threads", threads])
    for i in range(60):
        s = socket.socket()
        s.settimeout(10)
        s.connect(srv.addr)
        if i % 3 == 0:
            s.sendall(b"owed\n" * 20)
            _rst(s)
        elif i % 3 == 1:
            s.sendall(b"partial")
            s.close()
        else:
            s.sendall(b"x\n")
            try:
                s.recv(100)
            except OSError:
                pass
            _rst(s)
    # every slot must come back: 4 clients are admitted again (bounded retry
    # while the server processes the closes), and STATS agrees
    deadline = time.monotonic() + 15
    admitted = []
    last = None
    while len(admitted) < 4 and time.monotonic() < deadline:
        c = Conn(srv.addr)
        srv.clients.append(c)
        c.send(b"in\n")
        try:
            last = c.recv_line(5)
        except (EOFError, OSError, TimeoutError) as e:
            last = repr(e)
            continue
        if last == b"ECHO: in\n":
            admitted.append(c)
        else:
            c.close()
    assert len(admitted) == 4, f"only {len(admitted)} of 4 slots free after churn; last={last!r}"
    line = admitted[0].request("STATS").decode()
    fields = dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)
    assert int(fields["conns_active"]) == 4, line
