"""Graceful shutdown on SIGTERM / SIGINT."""

import select
import signal
import socket
import threading
import time

import pytest

from conftest import Conn

SHUTDOWN_LINE = b"Server shutting down\n"


def test_sigterm_idle_clients_get_shutdown_line_then_eof(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0"])
    clients = [srv.connect() for _ in range(3)]
    for i, c in enumerate(clients):
        assert c.request(f"hi{i}") == f"ECHO: hi{i}".encode()
    rc = srv.stop(signal.SIGTERM, timeout=15)
    assert rc == 0
    for c in clients:
        assert c.recv_line() == SHUTDOWN_LINE
        c.expect_eof()


def test_sigterm_many_idle_clients_across_threads(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--threads", "4"])
    clients = [srv.connect() for _ in range(100)]
    for i, c in enumerate(clients):
        c.send(b"c%d\n" % i)
    for i, c in enumerate(clients):
        assert c.recv_line() == b"ECHO: c%d\n" % i
    assert srv.stop(signal.SIGTERM, timeout=15) == 0
    for i, c in enumerate(clients):
        assert c.recv_line() == SHUTDOWN_LINE, f"client {i}"
        c.expect_eof()


def test_sigterm_with_unanswered_pipelined_input(server_factory):
    # requests already sent (and so possibly read) when SIGTERM arrives: the
    # replies form an in-order prefix, then the shutdown line, nothing torn
    srv = server_factory(["--listen", "127.0.0.1:0"])
    c = srv.connect()
    assert c.request("first") == b"ECHO: first"
    n = 20000
    c.send(b"".join(b"p%d\n" % i for i in range(n)))
    assert srv.stop(signal.SIGTERM, timeout=15) == 0
    data = c.recv_until_eof(timeout=15, allow_reset=True)
    assert data.endswith(SHUTDOWN_LINE), data[-200:]
    lines = data[: -len(SHUTDOWN_LINE)].split(b"\n")
    assert lines[-1] == b"", f"torn line before shutdown line: {lines[-1][:100]!r}"
    for k, line in enumerate(lines[:-1]):
        assert line == b"ECHO: p%d" % k, (k, line)


def test_sigint_is_graceful_too(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0"])
    c = srv.connect()
    assert c.request("x") == b"ECHO: x"
    rc = srv.stop(signal.SIGINT, timeout=15)
    assert rc == 0
    assert c.recv_line() == SHUTDOWN_LINE
    c.expect_eof()


def test_sigterm_with_no_clients_exits_zero(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0"])
    assert srv.stop(signal.SIGTERM, timeout=15) == 0


def test_listener_closed_after_sigterm(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--shutdown-timeout", "30", "--stall-timeout", "60"])
    # keep the server in its drain phase with a client that never reads
    stuck = _stuck_client(srv)
    other = srv.connect()
    assert other.request("ok") == b"ECHO: ok"
    srv.send_signal(signal.SIGTERM)
    assert other.recv_line() == SHUTDOWN_LINE
    other.expect_eof()
    # listeners are closed before clients are told; allow a bounded retry in
    # case another loop thread's listener closes a moment later
    deadline = time.monotonic() + 10
    refused = False
    attempts = 0
    while time.monotonic() < deadline and not refused:
        attempts += 1
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(srv.addr)
        except ConnectionRefusedError:
            refused = True
        except OSError:
            pass
        else:
            try:
                s.sendall(b"late\n")
                r, _, _ = select.select([s], [], [], 0.1)
                if r:
                    assert s.recv(100) != b"ECHO: late\n", "new client served after SIGTERM"
            except OSError:
                pass
        finally:
            s.close()
    assert refused, f"listening socket still accepting 10 s after SIGTERM ({attempts} attempts)"
    assert srv.alive(), "server exited although a client still has undelivered replies"
    stuck.close()
    srv.stopped_by_test = True
    rc = srv.wait(15)
    assert rc == 0


def _stuck_client(srv, push_bytes=64 * 1024 * 1024):
    """A client that sends a lot and never reads, so the server holds replies
    it cannot deliver. Returns the Conn once its send blocks."""
    c = srv.connect()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    line = b"y" * 1023 + b"\n"
    chunk = line * 64
    sent = 0
    c.sock.settimeout(1.0)
    while sent < push_bytes:
        try:
            n = c.sock.send(chunk)
        except socket.timeout:
            break
        sent += n
    assert sent > 0
    return c


def test_shutdown_timeout_bounds_exit_with_stuck_client(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--shutdown-timeout", "1", "--stall-timeout", "60"])
    stuck = _stuck_client(srv)
    other = srv.connect()
    assert other.request("ok") == b"ECHO: ok"
    rc = srv.stop(signal.SIGTERM, timeout=12)
    assert rc == 0
    assert other.recv_line() == SHUTDOWN_LINE
    other.expect_eof()
    stuck.close()


def test_second_signal_exits_at_once(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--shutdown-timeout", "60", "--stall-timeout", "60"])
    stuck = _stuck_client(srv)
    other = srv.connect()
    assert other.request("ok") == b"ECHO: ok"
    srv.send_signal(signal.SIGTERM)
    # the graceful phase has started once the idle client is told
    assert other.recv_line() == SHUTDOWN_LINE
    assert srv.alive(), "server exited although a client still has undelivered replies and shutdown-timeout is 60"
    srv.stopped_by_test = True
    srv.send_signal(signal.SIGTERM)
    rc = srv.wait(10)
    assert rc is not None, "second SIGTERM did not make the server exit"
    stuck.close()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_graceful_shutdown_with_busy_pipelining_clients(server_factory, threads):
    srv = server_factory(["--listen", "127.0.0.1:0", "--shutdown-timeout", "10", "--threads", threads])
    n_clients = 6
    results = [None] * n_clients
    progress = [0] * n_clients
    cond = threading.Condition()

    def client(idx):
        c = Conn(srv.addr)
        srv.clients.append(c)
        sock = c.sock
        sock.settimeout(0.5)
        stop = threading.Event()
        received = bytearray()
        end_reason = []

        def reader():
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    end_reason.append("reset")
                    break
                if not chunk:
                    end_reason.append("eof")
                    break
                received.extend(chunk)
                with cond:
                    progress[idx] = len(received)
                    cond.notify_all()
                if SHUTDOWN_LINE in received[-(len(SHUTDOWN_LINE) + len(chunk)):]:
                    stop.set()
            else:
                end_reason.append("timeout")
            stop.set()

        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        seq = 0
        pending = b""
        send_error = None
        while not stop.is_set():
            if not pending:
                pending = b"".join(b"c%d-%d\n" % (idx, seq + k) for k in range(20))
                seq += 20
            try:
                n = sock.send(pending)
                pending = pending[n:]
            except socket.timeout:
                continue
            except OSError as e:
                send_error = e
                break
        if send_error is None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        rt.join(45)
        results[idx] = (bytes(received), end_reason[:1], send_error)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    # wait until every client is getting replies
    deadline = time.monotonic() + 20
    with cond:
        while min(progress) < 2000 and time.monotonic() < deadline:
            cond.wait(0.5)
    assert min(progress) >= 2000, f"clients not making progress: {progress}"
    rc = srv.stop(signal.SIGTERM, timeout=20)
    for t in threads:
        t.join(50)
        assert not t.is_alive(), "client thread hung after shutdown"
    assert rc == 0
    for idx, (data, reason, send_err) in enumerate(results):
        print("client", idx, "bytes", len(data), "end", reason, "send error", send_err)
        assert reason in (["eof"], ["reset"]), f"client {idx}: connection ended by {reason}"
        assert data.endswith(SHUTDOWN_LINE), (
            f"client {idx}: stream does not end with the shutdown line; tail={data[-200:]!r}"
        )
        body = data[: -len(SHUTDOWN_LINE)]
        assert body.endswith(b"\n") or body == b"", f"client {idx}: torn last line {body[-100:]!r}"
        lines = body.split(b"\n")[:-1]
        for k, line in enumerate(lines):
            want = b"ECHO: c%d-%d" % (idx, k)
            assert line == want, f"client {idx}: reply #{k} is {line!r}, want {want!r}"
        assert len(lines) > 0
