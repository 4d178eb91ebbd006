"""Chat behaviours fixed after review, each with the input that showed the
bug (every test here but the last failed before its fix): the mode fixed by
--mode text, pings for a client that turns to JSON at the name prompt, blank
lines outside flood control, history reads capped at --history-keep, a
private database file. The last one checks the durability promise: a message
whose MESSAGE response arrived survives a kill -9 of the server."""

import os
import signal
import stat

from chat_helpers import JsonClient, TextClient, chat_factory  # noqa: F401

NAME_PROMPT = b"Your name: "


def test_mode_text_keeps_a_brace_line_as_a_name(chat_factory):
    srv = chat_factory("--mode", "text")
    t = TextClient(srv)
    t.expect_prompt()
    t.send_line('{"type":"REGISTER","payload":{"name":"x"},"id":1}')
    out = t.read_until(NAME_PROMPT)
    assert out.startswith(b"ERROR: name must not start with"), out
    assert b'"type"' not in out


def test_late_json_switch_at_the_prompt_is_pinged(chat_factory):
    # The client is greeted as text first (it spoke after the detection
    # timeout), then speaks JSON: it must be pinged like any JSON client.
    srv = chat_factory("--detect-timeout", "0.05", "--idle-timeout", "1")
    t = TextClient(srv)
    t.expect_prompt()
    j = JsonClient(srv, conn=t.c)
    j.send("REGISTER", {"name": "late"})
    assert j.response()["payload"]["status"] == "ok"
    ev, _ = j.wait_type("ping", timeout=5)
    assert "timestamp" in ev


def test_blank_text_lines_cost_no_flood_tokens(chat_factory):
    srv = chat_factory("--flood-rate", "0.01", "--flood-burst", "4")
    t = TextClient(srv)
    t.expect_prompt()
    t.send_line("ann")  # one token
    t.wait_line(r"^\*\*\* welcome ann")
    t.c.send(b"\n" * 10 + b"   \n\t\n" + b"/time\n" * 3)
    for _ in range(3):
        m, _ = t.wait_line(r"^(\*\*\* \d{4}-|ERROR)")
        assert m.string.startswith("*** 20"), m.string


def test_history_reads_never_exceed_history_keep(chat_factory):
    srv = chat_factory("--flood-rate", "0", "--history-keep", "8")
    a = JsonClient(srv, "keeper")
    for i in range(9):
        a.say(f"k{i}")
    a.wait_chat("k8")
    p = a.ok("LIST_MESSAGES", {"limit": 50})
    assert [m["content"] for m in p["messages"]] == [f"k{i}" for i in range(1, 9)], p


def test_new_database_file_is_private(chat_factory, tmp_path):
    db = tmp_path / "private.db"
    srv = chat_factory(db=db)
    JsonClient(srv, "owner").ok("REGISTER", {"name": "owner", "password": "correct horse"})
    for path in [db, tmp_path / "private.db-wal"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_confirmed_messages_survive_kill_9(chat_factory, tmp_path):
    db = tmp_path / "chat.db"
    srv = chat_factory("--flood-rate", "0", db=db)
    a = JsonClient(srv, "durable")
    for i in range(20):
        a.ok("MESSAGE", {"content": f"d{i}"})
    srv.stopped_by_test = True
    srv.send_signal(signal.SIGKILL)
    assert srv.wait(10) == -signal.SIGKILL
    srv2 = chat_factory("--flood-rate", "0", db=db)
    p = JsonClient(srv2, "reader").ok("LIST_MESSAGES", {"limit": 50})
    assert [m["content"] for m in p["messages"]] == [f"d{i}" for i in range(20)], p
