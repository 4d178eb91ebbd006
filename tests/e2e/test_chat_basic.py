"""Chat server basics: join/leave/broadcast with per-sender ordering, private
messages, room isolation, text commands, NICK and STATS
(docs/PROTOCOL.md, "Chat")."""

import re
import time

from chat_helpers import (
    T_CHAT_RE,
    T_LEAVE_RE,
    T_PRIV_IN_RE,
    T_PRIV_OUT_RE,
    TIMESTAMP_RE,
    JsonClient,
    TextClient,
    chat_factory,  # noqa: F401  (fixture)
)

EVENT_KEYS = ["type", "from", "content", "room", "timestamp"]


def _check_event_shape(ev):
    assert list(ev.keys()) == EVENT_KEYS, f"event keys not in the documented order: {ev}"
    assert TIMESTAMP_RE.match(ev["timestamp"]), ev


def test_three_clients_join_broadcast_in_order_and_leave(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    alice = JsonClient(srv, "alice")
    assert alice.join_payload["name"] == "alice" and alice.join_payload["room"] == "lobby", alice.join_payload
    assert alice.join_payload["registered"] is False, alice.join_payload
    bob = JsonClient(srv, "bob")
    ev, _ = alice.wait_type("join", **{"from": "bob"})
    _check_event_shape(ev)
    assert ev["room"] == "lobby" and ev["content"] == "bob joined lobby", ev

    carol = TextClient(srv, "carol")
    listed = carol.welcome.group("users").split(", ")
    assert int(carol.welcome.group("n")) == len(listed), carol.welcome.group(0)
    assert {"alice", "bob"} <= set(listed) <= {"alice", "bob", "carol"}, carol.welcome.group(0)
    for c in (alice, bob):
        ev, _ = c.wait_type("join", **{"from": "carol"})
        assert ev["room"] == "lobby", ev

    # 3 senders x 50 numbered messages, interleaved, all pipelined
    n = 50
    for i in range(n):
        alice.send("MESSAGE", {"content": f"alice#{i}"})
        bob.send("MESSAGE", {"content": f"bob#{i}"})
        carol.send_line(f"carol#{i}")

    def check_order(seen, who, senders):
        for s in senders:
            nums = seen.get(s, [])
            assert nums == list(range(n)), f"{who} got {s}'s messages as {nums}"

    for c in (alice, bob):
        seen = {}
        while sum(len(v) for v in seen.values()) < 3 * n:
            ev, _ = c.wait_type("chat")
            s, num = ev["content"].split("#")
            assert ev["from"] == s and ev["room"] == "lobby", ev
            seen.setdefault(s, []).append(int(num))
        check_order(seen, c.name, ("alice", "bob", "carol"))
        for i in range(n):
            r = c.response()
            assert r.get("type") == "MESSAGE" and r["payload"]["status"] == "ok", r
            assert r["payload"].get("message") == "Message broadcasted", r

    # the text client: everyone's messages in order; its own (if echoed) too
    seen = {}
    carol.send_line("/time")
    m, skipped = carol.wait_line(r"^\*\*\* \d{4}-\d\d-\d\dT")
    for line in skipped:
        assert not line.startswith("ERROR"), line
        cm = T_CHAT_RE.match(line)
        if cm and "#" in cm.group("text"):
            s, num = cm.group("text").split("#")
            assert cm.group("from") == s, line
            seen.setdefault(s, []).append(int(num))
    check_order(seen, "carol", ("alice", "bob"))
    assert seen.get("carol", []) in ([], list(range(n))), seen.get("carol")

    # leave: /quit, then a plain disconnect
    carol.send_line("/quit")
    carol.wait_line(r"^\*\*\* goodbye$")
    carol.c.expect_eof(allow_reset=True)
    for c in (alice, bob):
        ev, _ = c.wait_type("leave", **{"from": "carol"})
        _check_event_shape(ev)
        assert ev["room"] == "lobby" and ev["content"] == "carol left lobby (quit)", ev
    bob.c.close()
    ev, _ = alice.wait_type("leave", **{"from": "bob"})
    assert ev["room"] == "lobby" and ev["content"] == "bob left lobby (disconnected)", ev
    users = alice.ok("LIST_USERS")
    assert users["room"] == "lobby" and users["users"] == ["alice"], users


def test_private_message_reaches_only_its_target(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    alice = JsonClient(srv, "alice")
    bob = JsonClient(srv, "bob")
    carol = JsonClient(srv, "carol")
    p = alice.ok("PRIVATE", {"to": "bob", "content": "psst"})
    assert p["to"] == "bob", p
    alice.say("marker-1")
    # bob: the private message, before the later room message from the same sender
    ev, skipped = bob.wait_chat("marker-1")
    privs = [e for e in skipped if e["type"] == "private"]
    assert len(privs) == 1, skipped
    pv = privs[0]
    assert list(pv.keys()) == ["type", "from", "to", "content", "room", "timestamp"], pv
    assert (pv["from"], pv["to"], pv["content"], pv["room"]) == ("alice", "bob", "psst", ""), pv
    # carol, in the same room: the marker, and no private message before it
    ev, skipped = carol.wait_chat("marker-1")
    assert not [e for e in skipped if e["type"] == "private"], skipped

    # the target is found without regard to case, also in another room
    carol.ok("JOIN", {"room": "dev"})
    alice.ok("PRIVATE", {"to": "CAROL", "content": "to dev"})
    ev, _ = carol.wait_type("private", content="to dev")
    assert ev["from"] == "alice" and ev["to"] == "carol", ev
    alice.say("marker-2")
    ev, skipped = bob.wait_chat("marker-2")
    assert not [e for e in skipped if e["type"] == "private"], skipped

    alice.error("PRIVATE", {"to": "nobody", "content": "x"}, "no_such_user")
    # the sender's answer names the target as its owner spells it
    assert alice.ok("PRIVATE", {"to": "BOB", "content": "case"})["to"] == "bob"
    # the connection stays usable
    alice.say("marker-3")
    bob.wait_chat("marker-3")


def test_private_message_text_mode(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    alice = TextClient(srv, "alice")
    bob = TextClient(srv, "bob")
    carol = JsonClient(srv, "carol")
    alice.send_line("/msg bob hi there, bob")
    m, _ = alice.wait_line(T_PRIV_OUT_RE)
    assert m.group("to") == "bob" and m.group("text") == "hi there, bob", m.group(0)
    m, _ = bob.wait_line(T_PRIV_IN_RE)
    assert m.group("from") == "alice" and m.group("text") == "hi there, bob", m.group(0)
    alice.send_line("after the private one")
    m, skipped = bob.wait_line(r"^\[\d\d:\d\d:\d\d\] alice: after the private one$")
    ev, skipped = carol.wait_chat("after the private one")
    assert not [e for e in skipped if e["type"] == "private"], skipped
    alice.send_line("/msg nobody hello")
    m, _ = alice.wait_line(r"^ERROR: .*$")
    assert m.group(0) == 'ERROR: no user named "nobody" is online', m.group(0)
    alice.send_line("/msg bob")  # missing text
    m, _ = alice.wait_line(r"^ERROR: .*$")
    assert m.group(0) == "ERROR: missing or bad arguments (try /help)", m.group(0)
    alice.send_line("still here")
    carol.wait_chat("still here")


def test_rooms_are_isolated(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    alice = JsonClient(srv, "alice")
    bob = JsonClient(srv, "bob")
    carol = JsonClient(srv, "carol")
    dave = TextClient(srv, "dave")
    for c in (alice, bob):
        c.wait_type("join", **{"from": "dave"})

    p = carol.ok("JOIN", {"room": "dev"})
    assert p["room"] == "dev" and p["users"] == ["carol"], p
    for c in (alice, bob):
        ev, _ = c.wait_type("leave", **{"from": "carol"})
        assert ev["room"] == "lobby" and ev["content"] == "carol left lobby (joined dev)", ev
    # a mover sees its own leave from the old room, then its own join
    ev, skipped = carol.wait_type("join", **{"from": "carol"}, room="dev")
    assert [(e["type"], e["from"], e["room"]) for e in skipped if e["from"] == "carol"][-1:] == [
        ("leave", "carol", "lobby")], skipped

    # commands and room names are case-insensitive; the room keeps its spelling
    m, _ = dave.cmd("/JOIN DEV", r"^\*\*\* you are in dev with 2 users: (.*)$")
    assert m.group(1) == "carol, dave", m.group(0)
    ev, _ = carol.wait_type("join", **{"from": "dave"})
    assert ev["room"] == "dev" and ev["content"] == "dave joined dev", ev
    for c in (alice, bob):
        ev, _ = c.wait_type("leave", **{"from": "dave"})
        assert ev["room"] == "lobby", ev

    rooms = alice.ok("LIST_ROOMS")["rooms"]
    assert rooms == [{"name": "dev", "users": 2}, {"name": "lobby", "users": 2}], rooms
    m, _ = dave.cmd("/rooms", r"^\*\*\* rooms \((\d+)\): (.*)$")
    assert m.group(0) == "*** rooms (2): dev (2), lobby (2)", m.group(0)
    assert alice.ok("LIST_USERS", {"room": "dev"})["users"] == ["carol", "dave"]
    # joining the current room again: just the reply
    m, skipped = dave.cmd("/join dev", r"^\*\*\* you are in dev with 2 users: carol, dave$")
    assert skipped == [], skipped
    m, _ = dave.cmd("/users", r"^\*\*\* users in dev \((\d+)\): (.*)$")
    assert m.group(1) == "2" and m.group(2) == "carol, dave", m.group(0)
    m, _ = dave.cmd("/users lobby", r"^\*\*\* users in lobby \((\d+)\): (.*)$")
    assert m.group(2) == "alice, bob", m.group(0)

    # a dev message reaches dev only; a lobby message reaches lobby only
    carol.say("in dev")
    m, _ = dave.wait_line(r"^\[\d\d:\d\d:\d\d\] carol: in dev$")
    ev, _ = carol.wait_chat("in dev")
    assert ev["room"] == "dev", ev
    alice.say("in lobby")
    ev, skipped = bob.wait_chat("in lobby")
    assert ev["room"] == "lobby", ev
    assert not [e for e in skipped if e["type"] == "chat"], skipped
    carol.say("dev marker")
    _, skipped = dave.wait_line(r"^\[\d\d:\d\d:\d\d\] carol: dev marker$")
    assert not [l for l in skipped if "in lobby" in l], skipped
    _, skipped = carol.wait_chat("dev marker")
    assert not [e for e in skipped if e["type"] == "chat"], skipped

    # LEAVE: back to lobby; dev sees the leave, lobby the join
    p = carol.ok("LEAVE")
    assert p["room"] == "lobby" and p["users"] == ["alice", "bob", "carol"], p
    m, _ = dave.wait_line(T_LEAVE_RE)
    assert m.group("who") == "carol" and m.group("room") == "dev", m.group(0)
    for c in (alice, bob):
        ev, _ = c.wait_type("join", **{"from": "carol"})
        assert ev["room"] == "lobby", ev
    # LEAVE in lobby is an error
    carol.error("LEAVE", None, "invalid_room")
    # the last user leaves dev: the room disappears
    dave.send_line("/leave")
    m, _ = dave.wait_line(r"^\*\*\* you are in lobby with \d+ users?: ")
    dave.send_line("/leave")
    m, _ = dave.wait_line(r"^ERROR: .*$")
    assert m.group(0) == "ERROR: you are in lobby already", m.group(0)
    # dev is gone (lobby always exists); its users list is refused
    assert alice.ok("LIST_ROOMS")["rooms"] == [{"name": "lobby", "users": 4}]
    alice.error("LIST_USERS", {"room": "dev"}, "invalid_room")

    # invalid room names
    for bad in ("#general", "a b", "/x", "", "x" * 33, "a\u202eb"):
        carol.error("JOIN", {"room": bad}, "invalid_room")
    carol.ok("JOIN", {"room": "Dev-2"})


def test_text_commands(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    watcher = JsonClient(srv, "watcher")
    t = TextClient(srv, "tina")
    watcher.wait_type("join", **{"from": "tina"})
    # /help: lines starting with ***, then /time
    t.send_line("/help")
    t.send_line("/time")
    m, skipped = t.wait_line(r"^\*\*\* (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)$")
    assert len(skipped) == 11 and all(l.startswith("***") for l in skipped), skipped
    text = "\n".join(skipped)
    for cmd in ("/join", "/leave", "/rooms", "/users", "/msg", "/history", "/nick", "/register", "/quit"):
        assert cmd in text, f"/help does not mention {cmd}: {skipped}"
    # an empty line is ignored: nothing comes back before the next reply
    t.send_line("")
    t.send_line("/time")
    m, skipped = t.wait_line(r"^\*\*\* \d{4}-")
    assert skipped == [], skipped
    # //x sends the message /x
    t.send_line("//slash")
    ev, _ = watcher.wait_type("chat", **{"from": "tina"})
    assert ev["content"] == "/slash", ev
    # a message with a tab is fine
    t.send_line("a\tb")
    ev, _ = watcher.wait_type("chat", **{"from": "tina"})
    assert ev["content"] == "a\tb", ev
    # text mode sees JSON users' messages in its format
    watcher.say("from json")
    t.wait_line(r"^\[\d\d:\d\d:\d\d\] watcher: from json$")
    # /quit: goodbye, then the server closes
    t.send_line("/quit")
    t.wait_line(r"^\*\*\* goodbye$")
    t.c.expect_eof(allow_reset=True)
    ev, _ = watcher.wait_type("leave", **{"from": "tina"})


def test_nick(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    alice = JsonClient(srv, "alice")
    bob = JsonClient(srv, "bob")
    assert alice.ok("NICK", {"name": "alicia"})["name"] == "alicia"
    ev, _ = bob.wait_type("system")
    assert (ev["from"], ev["content"], ev["room"]) == ("server", "alice is now known as alicia", "lobby"), ev
    bob.ok("PRIVATE", {"to": "alicia", "content": "found you"})
    ev, _ = alice.wait_type("private", content="found you")
    bob.error("PRIVATE", {"to": "alice", "content": "x"}, "no_such_user")
    alice.error("NICK", {"name": "BOB"}, "name_taken")
    alice.error("NICK", {"name": "b o b"}, "invalid_name")
    assert bob.ok("LIST_USERS")["users"] == ["alicia", "bob"]
    # the old name is free again
    JsonClient(srv, "Alice")
    t = TextClient(srv, "tom")
    t.send_line("/nick thomas")
    _, skipped = t.wait_line(r"^\*\*\* you are now thomas$")
    assert skipped[-1:] and re.match(r"^\[\d\d:\d\d:\d\d\] \*\*\* tom is now known as thomas$", skipped[-1]), skipped
    ev, _ = bob.wait_type("system", content="tom is now known as thomas")
    t.send_line("/nick bob")
    m, _ = t.wait_line(r"^ERROR: .*$")
    assert m.group(0) == "ERROR: that name is in use", m.group(0)
    t.send_line("hello as thomas")
    ev, _ = bob.wait_chat("hello as thomas")
    assert ev["from"] == "thomas", ev


def test_stats_counts(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    alice = JsonClient(srv, "alice")
    bob = JsonClient(srv, "bob")
    carol = TextClient(srv, "carol")
    alice.ok("JOIN", {"room": "dev"})
    for i in range(3):
        alice.say(f"dev {i}")
    for i in range(2):
        bob.say(f"lobby {i}")
    carol.send_line("carol says")
    bob.wait_chat("carol says")
    alice.ok("PRIVATE", {"to": "bob", "content": "p1"})
    carol.send_line("/msg alice p2")
    alice.wait_type("private", content="p2")
    bob.wait_type("private", content="p1")
    # a fourth client comes and goes
    dave = JsonClient(srv, "dave")
    dave.ok("QUIT")
    dave.expect_closed()
    dave.c.close()
    bob.wait_type("leave", **{"from": "dave"})

    # the server may linger on a closed connection for a moment: wait
    # (bounded) for it to count three active connections
    deadline = time.monotonic() + 10
    while True:
        st = alice.ok("STATS")
        if st.get("conns_active") == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for k in ("users", "rooms", "messages", "private", "deliveries", "drops", "flood_rejected",
              "conns_total", "conns_active"):
        assert isinstance(st.get(k), int) and not isinstance(st.get(k), bool), (k, st)
    assert st["users"] == 3, st
    assert st["rooms"] == 2, st
    assert st["messages"] == 6, st
    assert st["private"] == 2, st
    assert st["deliveries"] >= 6, st
    assert st["drops"] == 0, st
    assert st["flood_rejected"] == 0, st
    assert st["conns_total"] == 4, st
    assert st["conns_active"] == 3, st
    ts = carol.stats()
    for k in ("users", "rooms", "messages", "private", "drops", "flood_rejected", "conns_total", "conns_active"):
        assert ts[k] == st[k], (k, ts, st)
