"""`tcpkit serve`: the file service beside echo and chat, each on its own
port; --files-OPTION passes file-server options through."""

import hashlib
import os
import re
import signal

from files_helpers import E, ERROR, files_listen_addr, make_files, tk, write_key, V1Client, V2Client

CHAT_BANNER = b"Welcome to tcpkit chat. Type /help for commands.\n"


def listen_addr(srv, service):
    m = re.search(r"listening on\s+(\d{1,3}(?:\.\d{1,3}){3}):(\d+) \(%s\)" % service, srv.stdout())
    assert m, f"no listening line for {service} in {srv.stdout()!r}"
    return (m.group(1), int(m.group(2)))


def serve_args(root, *extra):
    return ["--echo-listen", "127.0.0.1:0", "--chat-listen", "127.0.0.1:0", "--chat-ephemeral",
            "--files-listen", "127.0.0.1:0", "--files-root", str(root)] + [str(a) for a in extra]


def test_serve_runs_files_beside_echo_and_chat(server_factory, tmp_path):
    content = os.urandom(2_000_000)
    root = make_files(tmp_path / "root", {"f.bin": content, "a.txt": b"alpha\n"})
    srv = server_factory(serve_args(root), command="serve", listeners=3)
    files = files_listen_addr(srv)
    target = f"{files[0]}:{files[1]}"
    # echo
    from conftest import Conn

    e = Conn(listen_addr(srv, "echo"))
    srv.clients.append(e)
    assert e.request("hello") == b"ECHO: hello"
    # chat
    ch = Conn(listen_addr(srv, "chat"))
    srv.clients.append(ch)
    assert ch.recv_exact(len(CHAT_BANNER)) == CHAT_BANNER
    # files, version 2 (raw and tcpkit get/ls) and version 1
    c = V2Client(files)
    srv.clients.append(c)
    assert c.hello().type == 16
    op, data, end = c.download(1, "f.bin")
    assert data == content and end.digest == hashlib.sha256(content).digest()
    old = V1Client(files)
    srv.clients.append(old)
    assert old.fetch("a.txt") == ("file", b"a.txt", 6, b"alpha\n")
    out = tmp_path / "out"
    out.mkdir()
    cp = tk(["get", target, "f.bin", "a.txt", "-o", out, "--no-sync"])
    assert cp.returncode == 0, cp.stderr
    assert (out / "f.bin").read_bytes() == content
    cp = tk(["ls", target])
    assert cp.returncode == 0, cp.stderr
    assert [ln.split()[-1] for ln in cp.stdout.decode().splitlines()] == ["a.txt", "f.bin"]
    # read-only by default, like file-server
    ready, _ = c.upload(2, "up.bin", b"x")
    assert ready.type == ERROR and ready.code == E["read_only"], ready
    # the echo service is unaffected by all that
    assert e.request("UPPER still here") == b"STILL HERE"
    for conn in srv.clients:
        conn.close()
    assert srv.stop(signal.SIGTERM, timeout=30) == 0


def test_serve_passes_files_options_through(server_factory, tmp_path):
    root = make_files(tmp_path / "root", {".dot": b"hidden\n"})
    key = b"serve-files-key-0123456789"
    keyfile = write_key(tmp_path / "key", key)
    srv = server_factory(serve_args(root, "--files-allow-upload", "--files-show-hidden", "--files-auth-key", keyfile),
                         command="serve", listeners=3)
    files = files_listen_addr(srv)
    c = V2Client(files)
    srv.clients.append(c)
    assert c.hello(auth_key=key).type == 16
    ready, done = c.upload(1, "up.bin", b"uploaded through serve\n")
    assert done is not None and done.type == 12, (ready, done)
    assert (tmp_path / "root" / "up.bin").read_bytes() == b"uploaded through serve\n"
    assert c.download(2, ".dot")[1] == b"hidden\n"
    unauth = V2Client(files)
    srv.clients.append(unauth)
    fr = unauth.hello()
    assert fr.type == ERROR and fr.code == E["auth"], fr
