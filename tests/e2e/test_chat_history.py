"""Chat history in SQLite: survives a restart, LIST_MESSAGES and /history
return it oldest first, --history-keep and --history-page are honoured,
private messages and join/leave notices are not stored."""

import json
import re

from chat_helpers import TIMESTAMP_RE, JsonClient, TextClient, chat_factory, graceful_stop  # noqa: F401

HIST_LINE_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] ([^ ]+): (.*)$")


def _text_history(t, arg=""):
    """Runs /history [arg]; returns (room, [(when, name, text)])."""
    t.send_line(("/history " + arg).rstrip())
    m, _ = t.wait_line(r"^\*\*\* last (\d+) messages? in ([^ ]+):$")
    room = m.group(2)
    out = []
    while True:
        line = t.line()
        if line == "*** end of history":
            break
        hm = HIST_LINE_RE.match(line)
        assert hm, f"unexpected line inside /history: {line!r}"
        out.append((hm.group(1), hm.group(2), hm.group(3)))
    assert int(m.group(1)) == len(out), (m.group(0), out)
    return room, out


def _contents(p):
    return [m["content"] for m in p["messages"]]


def test_history_survives_restart(chat_factory, tmp_path):
    db = tmp_path / "chat.db"
    srv = chat_factory("--flood-rate", "0", db=db)
    alice = JsonClient(srv, "alice")
    bob = TextClient(srv, "bob")
    live = {}
    for i in range(5):
        alice.say(f"m{i}")
    for i in range(5):
        ev, _ = alice.wait_chat(f"m{i}")
        live[ev["content"]] = ev
    bob.send_line("from bob")
    ev, _ = alice.wait_chat("from bob")
    live["from bob"] = ev
    alice.ok("PRIVATE", {"to": "bob", "content": "secret"})
    alice.ok("JOIN", {"room": "dev"})
    alice.say("d0")
    alice.say("d1")
    alice.wait_chat("d1")
    # the room left behind keeps its history even when empty
    alice.ok("LEAVE")
    assert graceful_stop(srv) == []

    srv2 = chat_factory("--flood-rate", "0", db=db)
    carol = JsonClient(srv2, "carol")
    p = carol.ok("LIST_MESSAGES", {"limit": 20})
    assert p["room"] == "lobby" and p.get("truncated") is False, p
    assert _contents(p) == ["m0", "m1", "m2", "m3", "m4", "from bob"], p
    for m in p["messages"]:
        assert list(m.keys()) == ["type", "from", "content", "room", "timestamp"], m
        assert m["type"] == "chat" and m["room"] == "lobby" and TIMESTAMP_RE.match(m["timestamp"]), m
        assert m["from"] == live[m["content"]]["from"], m
        assert m["timestamp"] == live[m["content"]]["timestamp"], (m, live[m["content"]])
    assert _contents(carol.ok("LIST_MESSAGES", {"limit": 2})) == ["m4", "from bob"]
    assert _contents(carol.ok("LIST_MESSAGES")) == ["m0", "m1", "m2", "m3", "m4", "from bob"]
    p = carol.ok("LIST_MESSAGES", {"room": "dev"})
    assert p["room"] == "dev" and _contents(p) == ["d0", "d1"], p

    # new messages after the restart follow the old ones
    carol.say("after restart")
    carol.wait_chat("after restart")
    dave = TextClient(srv2, "dave")
    room, hist = _text_history(dave)
    assert room == "lobby", room
    assert [(n, t) for _, n, t in hist] == [("alice", "m0"), ("alice", "m1"), ("alice", "m2"), ("alice", "m3"),
                                          ("alice", "m4"), ("bob", "from bob"), ("carol", "after restart")], hist
    for when, name, text in hist:
        if text in live:
            ts = live[text]["timestamp"]
            assert when == ts[:10] + " " + ts[11:19], (when, ts)
    room, hist = _text_history(dave, "2")
    assert [t for _, _, t in hist] == ["from bob", "after restart"], hist


def test_history_keep(chat_factory, tmp_path):
    db = tmp_path / "chat.db"
    srv = chat_factory("--flood-rate", "0", "--history-keep", "3", db=db)
    a = JsonClient(srv, "alice")
    for i in range(7):
        a.say(f"k{i}")
    a.wait_chat("k6")
    assert _contents(a.ok("LIST_MESSAGES", {"limit": 20})) == ["k4", "k5", "k6"]
    t = TextClient(srv, "tom")
    _, hist = _text_history(t, "10")
    assert [x for _, _, x in hist] == ["k4", "k5", "k6"], hist
    assert graceful_stop(srv) == []
    srv2 = chat_factory("--flood-rate", "0", "--history-keep", "3", db=db)
    b = JsonClient(srv2, "bob")
    assert _contents(b.ok("LIST_MESSAGES", {"limit": 20})) == ["k4", "k5", "k6"]


def test_history_page(chat_factory):
    srv = chat_factory("--flood-rate", "0", "--history-page", "4")
    a = JsonClient(srv, "alice")
    for i in range(10):
        a.say(f"p{i}")
    a.wait_chat("p9")
    assert _contents(a.ok("LIST_MESSAGES", {"limit": 10})) == ["p6", "p7", "p8", "p9"]
    assert _contents(a.ok("LIST_MESSAGES")) == ["p6", "p7", "p8", "p9"]
    assert _contents(a.ok("LIST_MESSAGES", {"limit": 3})) == ["p7", "p8", "p9"]
    t = TextClient(srv, "tom")
    _, hist = _text_history(t, "50")
    assert [x for _, _, x in hist] == ["p6", "p7", "p8", "p9"], hist


def test_private_and_join_leave_not_stored(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    a = JsonClient(srv, "alice")
    b = JsonClient(srv, "bob")
    a.ok("PRIVATE", {"to": "bob", "content": "secret"})
    b.wait_type("private", content="secret")
    b.ok("JOIN", {"room": "dev"})
    b.ok("LEAVE")
    a.say("only this")
    a.wait_chat("only this")
    p = b.ok("LIST_MESSAGES")
    assert _contents(p) == ["only this"], p
    # a room that no longer exists still has its (empty) history
    assert _contents(b.ok("LIST_MESSAGES", {"room": "dev"})) == []
    assert all(m["type"] == "chat" for m in p["messages"]), p


def test_history_reply_bounded_by_half_of_max_queue(chat_factory):
    # --max-queue 256K: a history reply may use up to 128 KiB; older messages
    # are left out only when the reply would pass that.
    srv = chat_factory("--flood-rate", "0", "--max-queue", "256K", "--history-page", "1000")
    a = JsonClient(srv, "alice")
    body = "x" * 3000
    for i in range(60):
        a.say(f"{i:03d}{body}")
    a.wait_chat(f"059{body}")
    half = 128 * 1024

    # 30 messages (~93 KB of JSON) fit: nothing is left out
    rid = a.send("LIST_MESSAGES", {"limit": 30})
    line = a.c.recv_line()
    p = json.loads(line)["payload"]
    assert [m["content"][:3] for m in p["messages"]] == [f"{i:03d}" for i in range(30, 60)] and \
        p["truncated"] is False, (len(line), len(p["messages"]), p["truncated"])
    # 60 (~187 KB) do not: the newest that fit, oldest first, under half of --max-queue
    rid = a.send("LIST_MESSAGES", {"limit": 60})
    line = a.c.recv_line()
    r = json.loads(line)
    assert r["id"] == rid
    got = [m["content"][:3] for m in r["payload"]["messages"]]
    assert r["payload"]["truncated"] is True, (len(line), len(got))
    assert got == [f"{i:03d}" for i in range(60 - len(got), 60)], got
    assert len(line) <= half, len(line)
    assert len(got) >= 35, f"only {len(got)} messages ({len(line)} bytes) in a reply allowed {half} bytes"

    t = TextClient(srv, "tom")
    _, hist = _text_history(t, "30")
    assert [x[:3] for _, _, x in hist] == [f"{i:03d}" for i in range(30, 60)]
    _, hist = _text_history(t, "60")
    assert [x[:3] for _, _, x in hist] == [f"{i:03d}" for i in range(60 - len(hist), 60)]
    assert 35 <= len(hist) < 60, len(hist)
