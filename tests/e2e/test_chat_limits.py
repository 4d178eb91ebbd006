"""Chat limits and bad input: bad JSON and unknown commands answered while the
connection stays usable, --max-line, --max-message, content rules, flood
control (token bucket), --max-clients, --max-rooms, idle timeouts."""

import json
import math
import re
import time

import pytest

from chat_helpers import (
    TIMESTAMP_RE,
    JsonClient,
    TextClient,
    chat_factory,  # noqa: F401  (fixture)
    check_error,
)


# -- bad requests -----------------------------------------------------------------


def test_json_bad_json_unknown_type_bad_request_connection_survives(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    c = JsonClient(srv)
    c.send_raw(b'{"type": "ECHO", "payload": \n')
    check_error(c.response(), "bad_json", "truncated JSON")
    for raw in (b"not json at all", b'{"type":"MESSAGE","type":"ECHO","id":1}', b"   ",
                b'{"type":"ECHO","payload":{"data":"\xff"},"id":1}', b"[" * 100 + b"]" * 100):
        c.send_raw(raw + b"\n")
        r = c.response()
        check_error(r, "bad_json", raw)
        assert "id" not in r, r
    # empty lines are ignored: the next answer is for the next request
    c.send_raw(b"\n\r\n")
    assert c.ok("PING") == {"status": "ok"}
    r = c.request("FROBNICATE", {"x": 1})
    p = check_error(r, "unknown_type", "FROBNICATE")
    assert p["message"] == 'unknown type "FROBNICATE"', r
    c.error("message", {"content": "x"}, "unknown_type")  # type is matched exactly
    for raw in (b"[1,2,3]", b'"str"', b'{"type": 5, "id": 3}', b'{"type": "ECHO", "payload": "x", "id": 3}',
                b'{"payload": {"data": "x"}, "id": 3}'):
        c.send_raw(raw + b"\n")
        r = c.response()
        check_error(r, "bad_request", raw)
        assert "id" not in r, r  # refused before the id was looked at
    for raw in (b'{"type": "ECHO", "payload": {"data": 5}, "id": 4}', b'{"type": "ECHO", "id": 4}'):
        c.send_raw(raw + b"\n")
        r = c.response()
        check_error(r, "bad_request", raw)
        assert r.get("id") == 4, r
    # unnamed: room commands are refused, the rest works
    c.error("MESSAGE", {"content": "x"}, "not_registered")
    c.error("JOIN", {"room": "dev"}, "not_registered")
    c.error("LIST_USERS", None, "not_registered")
    assert c.ok("ECHO", {"data": "still here"})["data"] == "still here"
    assert TIMESTAMP_RE.match(c.ok("TIME")["time"])
    c.ok("PING")
    # named: wrong field types are bad_request, and the connection still works
    c.register("alice")
    c.error("MESSAGE", {"content": 5}, "bad_request")
    c.error("MESSAGE", {}, "bad_request")
    c.error("PRIVATE", {"content": "x"}, "bad_request")
    c.error("JOIN", {"room": ["dev"]}, "bad_request")
    for bad in (0, -1, 1000001, "5", 2.5):
        c.error("LIST_MESSAGES", {"limit": bad}, "bad_request")
    c.ok("LIST_MESSAGES", {"limit": 1000000})
    watcher = JsonClient(srv, "watcher")
    c.say("works after errors")
    watcher.wait_chat("works after errors")


def test_json_data_shorthand_and_id_copied(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    c = JsonClient(srv)
    c.send_obj({"type": "REGISTER", "data": "Alice", "id": "r-1"})
    r = c.response()
    assert r["type"] == "REGISTER" and r["id"] == "r-1" and r["payload"]["name"] == "Alice", r
    c.send_obj({"type": "ECHO", "payload": {"data": "x"}, "id": {"nested": [1, 2]}})
    r = c.response()
    assert r["id"] == {"nested": [1, 2]} and r["payload"]["data"] == "x", r
    c.send_obj({"type": "NOPE", "id": 99})
    r = c.response()
    assert r["type"] == "error" and r["id"] == 99 and r["payload"]["code"] == "unknown_type", r


def test_text_unknown_command_and_bad_arguments(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    watcher = JsonClient(srv, "watcher")
    t = TextClient(srv, "tom")
    for line, why in (("/frobnicate", "unknown command (try /help)"),
                      ("/frobnicate with args", "unknown command (try /help)"),
                      ("/join", "missing or bad arguments (try /help)"),
                      ("/join a b", "missing or bad arguments (try /help)"),
                      ("/msg", "missing or bad arguments (try /help)"),
                      ("/msg watcher", "missing or bad arguments (try /help)"),
                      ("/history abc", "missing or bad arguments (try /help)"),
                      ("/history 0", "missing or bad arguments (try /help)"),
                      ("/users a b", "missing or bad arguments (try /help)"),
                      ("/users #x", "invalid room name"),
                      ("/users nowhere", "no such room")):
        t.send_line(line)
        m, skipped = t.wait_line(r"^(ERROR: .*|\*\*\* .*)$")
        assert m.group(0) == "ERROR: " + why, (line, m.group(0), skipped)
    # lines of only spaces and tabs are ignored; commands without arguments
    # ignore extra words
    t.send_line(" \t ")
    t.send_line("/time now please")
    m, skipped = t.wait_line(r"^\*\*\* \d{4}-\d\d-\d\dT")
    assert skipped == [], skipped
    t.send_line("/time")
    t.wait_line(r"^\*\*\* \d{4}-\d\d-\d\dT")
    t.send_line("after errors")
    ev, skipped = watcher.wait_type("chat", **{"from": "tom"})
    assert ev["content"] == "after errors", ev


# -- sizes -------------------------------------------------------------------------


def test_too_long_lines(chat_factory):
    srv = chat_factory("--flood-rate", "0", "--max-line", "1K")
    watcher = JsonClient(srv, "watcher")
    j = JsonClient(srv, "jay")
    big = json.dumps({"type": "MESSAGE", "payload": {"content": "a" * 3000}})
    j.send_raw(big.encode() + b"\n")
    r = j.response()
    p = check_error(r, "too_long", "3000-byte line")
    assert p["message"] == "line too long (limit 1024 bytes)" and "id" not in r, r
    # the error comes as soon as the limit is passed, before the line ends
    j.send_raw(b'{"type":"MESSAGE","payload":{"content":"' + b"b" * 1500)
    check_error(j.response(), "too_long", "line still arriving")
    j.send_raw(b"c" * 1500)
    j.send_raw(b'"}}\n')
    j.say("jay after")
    _, skipped = watcher.wait_chat("jay after")
    assert not [e for e in skipped if e["type"] == "chat"], skipped

    t = TextClient(srv, "tom")
    t.send_line("x" * 3000)
    m, _ = t.wait_line(r"^ERROR: .*$")
    assert m.group(0) == "ERROR: line too long (limit 1024 bytes)", m.group(0)
    t.send_line("/time")
    m, skipped = t.wait_line(r"^\*\*\* \d{4}-\d\d-\d\dT")
    assert not [l for l in skipped if l.startswith("ERROR")], skipped
    t.send_line("tom after")
    _, skipped = watcher.wait_chat("tom after")
    assert not [e for e in skipped if e["type"] == "chat"], skipped


def test_message_too_long(chat_factory):
    srv = chat_factory("--flood-rate", "0", "--max-message", "100", "--max-line", "1K")
    watcher = JsonClient(srv, "watcher")
    j = JsonClient(srv, "jay")
    j.error("MESSAGE", {"content": "a" * 101}, "message_too_long")
    j.error("MESSAGE", {"content": "\u00e9" * 51}, "message_too_long")  # 102 bytes
    j.error("PRIVATE", {"to": "watcher", "content": "p" * 101}, "message_too_long")
    j.say("a" * 100)
    j.say("\u00e9" * 50)
    ev, skipped = watcher.wait_type("chat", **{"from": "jay"})
    assert ev["content"] == "a" * 100 and not [e for e in skipped if e["type"] == "private"], (ev, skipped)
    ev, _ = watcher.wait_type("chat", **{"from": "jay"})
    assert ev["content"] == "\u00e9" * 50, ev
    t = TextClient(srv, "tom")
    t.send_line("t" * 101)
    t.wait_line(r"^ERROR: .*$")
    t.send_line("t" * 100)
    ev, skipped = watcher.wait_type("chat", **{"from": "tom"})
    assert ev["content"] == "t" * 100, ev


def test_bad_content(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    watcher = JsonClient(srv, "watcher")
    j = JsonClient(srv, "jay")
    for bad in ("esc \u001b[31m red", "bell \u0007", "nl\nin", "cr\rin", "nul\u0000", "c1 \u009b",
                "del \u007f"):
        j.error("MESSAGE", {"content": bad}, "bad_content")
    j.error("MESSAGE", {"content": ""}, "bad_content")
    j.error("PRIVATE", {"to": "watcher", "content": "esc \u001b"}, "bad_content")
    j.say("tab\tis fine \u202e and format chars in content are fine")
    ev, skipped = watcher.wait_type("chat", **{"from": "jay"})
    assert ev["content"] == "tab\tis fine \u202e and format chars in content are fine", ev
    assert not [e for e in skipped if e["type"] == "private"], skipped


# -- flood control -------------------------------------------------------------------


def _accepted_bound(elapsed, rate=5):
    # tokens refilled while the burst was in flight (the bucket starts full and
    # is capped at the burst size)
    return math.floor(rate * elapsed)


def _refill_wait(seconds):
    # Not synchronisation: the flood rule is about time, and a bucket refills
    # only as time passes.
    time.sleep(seconds)


def test_flood_json_token_bucket(chat_factory):
    srv = chat_factory("--flood-rate", "5", "--flood-burst", "5")
    c = JsonClient(srv)
    t0 = time.monotonic()
    c.send_raw(b"".join(json.dumps({"type": "ECHO", "payload": {"data": f"e{i}"}, "id": i}).encode() + b"\n"
                        for i in range(20)))
    replies = [c.response() for _ in range(20)]
    elapsed = time.monotonic() - t0
    assert [r.get("id") for r in replies] == list(range(20)), replies
    ok = [r["id"] for r in replies if r.get("type") == "ECHO"]
    flooded = [r for r in replies if r.get("type") != "ECHO"]
    for r in flooded:
        p = check_error(r, "flood", "flooded ECHO")
        assert p["message"] == "slow down: at most 5 requests per second", r
    for r in replies:
        if r.get("type") == "ECHO":
            assert r["payload"]["data"] == f"e{r['id']}", r
    assert ok[:5] == [0, 1, 2, 3, 4], ok
    extra = _accepted_bound(elapsed)
    assert 5 <= len(ok) <= 5 + extra, (ok, elapsed)
    assert len(flooded) >= 15 - extra, (len(flooded), elapsed)
    # the connection stays open: once a token is back, requests work again
    rejected = len(flooded)
    deadline = time.monotonic() + 10
    while True:
        r = c.request("STATS")
        if r.get("type") == "STATS":
            break
        check_error(r, "flood", "STATS while flooded")
        rejected += 1
        assert time.monotonic() < deadline, "no token came back within 10 s"
        _refill_wait(0.1)
    assert r["payload"]["flood_rejected"] == rejected, (r, rejected)


def test_flood_text_token_bucket(chat_factory):
    srv = chat_factory("--flood-rate", "5", "--flood-burst", "5")
    t = TextClient(srv, "tom")
    _refill_wait(0.5)  # the name line took a token; let the bucket fill up again (5/s, cap 5)
    t0 = time.monotonic()
    t.c.send(b"/time\n" * 20)
    lines = [t.line() for _ in range(20)]
    elapsed = time.monotonic() - t0
    kinds = ["ok" if l.startswith("*** ") else "flood" if l == "ERROR: slow down: at most 5 requests per second"
             else l for l in lines]
    assert set(kinds) <= {"ok", "flood"}, lines
    assert kinds[:5] == ["ok"] * 5, lines
    extra = _accepted_bound(elapsed)
    assert 5 <= kinds.count("ok") <= 5 + extra, (lines, elapsed)
    # still connected
    deadline = time.monotonic() + 10
    while True:
        t.send_line("/time")
        if t.line().startswith("*** "):
            break
        assert time.monotonic() < deadline
        _refill_wait(0.1)


def test_flooded_messages_are_not_delivered(chat_factory):
    srv = chat_factory("--flood-rate", "5", "--flood-burst", "5")
    watcher = JsonClient(srv, "watcher")
    j = JsonClient(srv, "jay")
    _refill_wait(0.5)  # REGISTER took a token
    j.send_raw(b"".join(json.dumps({"type": "MESSAGE", "payload": {"content": f"f{i}"}, "id": i}).encode()
                        + b"\n" for i in range(20)))
    replies = [j.response() for _ in range(20)]
    accepted = [r["id"] for r in replies if r.get("type") == "MESSAGE"]
    for r in replies:
        if r.get("type") != "MESSAGE":
            check_error(r, "flood", "flooded MESSAGE")
    assert accepted[:5] == [0, 1, 2, 3, 4] and len(accepted) < 20, accepted
    deadline = time.monotonic() + 10
    while j.request("MESSAGE", {"content": "end"}).get("type") != "MESSAGE":
        assert time.monotonic() < deadline
        _refill_wait(0.1)
    _, skipped = watcher.wait_chat("end")
    got = [e["content"] for e in skipped if e["type"] == "chat" and e["from"] == "jay"]
    assert got == [f"f{i}" for i in accepted], (got, accepted)


def test_flood_empty_json_lines_take_no_tokens(chat_factory):
    srv = chat_factory("--flood-rate", "1", "--flood-burst", "5")
    c = JsonClient(srv)
    # (the first byte must be '{' to select JSON mode)
    reqs = [json.dumps({"type": "PING", "id": i}).encode() + b"\n" for i in range(5)]
    c.send_raw(reqs[0] + b"\n" * 25 + b"\r\n" * 25 + b"".join(reqs[1:]))
    replies = [c.response() for _ in range(5)]
    assert [(r["type"], r["id"]) for r in replies] == [("PING", i) for i in range(5)], replies


def test_flood_off(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    c = JsonClient(srv)
    n = 300
    c.send_raw(b"".join(json.dumps({"type": "ECHO", "payload": {"data": str(i)}, "id": i}).encode() + b"\n"
                        for i in range(n)))
    for i in range(n):
        r = c.response()
        assert r.get("type") == "ECHO" and r["id"] == i, r


# -- clients and rooms -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "json"])
def test_max_clients_busy(chat_factory, mode):
    srv = chat_factory("--flood-rate", "0", "--max-clients", "2", "--mode", mode)
    a = JsonClient(srv, "a")
    b = JsonClient(srv, "b")
    c = srv.connect()
    data = c.recv_until_eof(timeout=10, allow_reset=True)
    if mode == "json":
        assert data == b'{"type":"error","payload":{"status":"error","code":"busy","message":"server busy"}}\n', data
    else:
        assert data == b"ERROR: server busy\n", data
    # once one leaves there is room again
    a.ok("QUIT")
    a.expect_closed()
    a.c.close()
    b.wait_type("leave", **{"from": "a"})
    # the server may still count the closing connection for a moment: retry
    # (bounded) while the answer is "busy"
    deadline = time.monotonic() + 10
    while True:
        d = JsonClient(srv)
        d.send("REGISTER", {"name": "d"})
        try:
            line = d.c.recv_line(timeout=10)
        except (EOFError, ConnectionResetError):
            line = b""
        if line == b"" or line == b"ERROR: server busy\n" or b'"busy"' in line:
            assert time.monotonic() < deadline, f"still busy 10 s after a client left: {line!r}"
            d.c.close()
            continue
        r = json.loads(line)
        assert r["type"] == "REGISTER", r
        break
    st = b.ok("STATS")
    assert st["conns_active"] == 2, st


def test_max_rooms(chat_factory):
    srv = chat_factory("--flood-rate", "0", "--max-rooms", "2")
    stay = JsonClient(srv, "stay")  # keeps lobby alive
    a, b, c = JsonClient(srv, "a"), JsonClient(srv, "b"), JsonClient(srv, "c")
    results = []
    for cl, room in ((a, "r1"), (b, "r2"), (c, "r3")):
        r = cl.request("JOIN", {"room": room})
        results.append(r)
    codes = [r["payload"].get("code") if r["type"] == "error" else "ok" for r in results]
    # lobby always exists and counts: one more room fits
    assert codes == ["ok", "too_many_rooms", "too_many_rooms"], results
    assert results[1]["payload"]["message"] == "too many rooms (limit 2)", results
    assert [r["name"] for r in stay.ok("LIST_ROOMS")["rooms"]] == ["lobby", "r1"]
    refused = b
    # the refused user is still in lobby, and may join an existing room
    assert "lobby" == refused.ok("LIST_USERS")["room"]
    assert refused.ok("JOIN", {"room": "r1"})["room"] == "r1"
    # once r1 empties it disappears, and a new room can be made
    a.ok("LEAVE")
    refused.ok("LEAVE")
    assert a.ok("JOIN", {"room": "r9"})["room"] == "r9"


# -- idle ------------------------------------------------------------------------------


def test_json_idle_ping_then_close(chat_factory):
    srv = chat_factory("--flood-rate", "0", "--idle-timeout", "1")
    c = JsonClient(srv, "sleepy")
    # a text user in the room (text clients are not idled by --idle-timeout)
    t = TextClient(srv, "watcher")
    ev, _ = c.wait_type("ping", timeout=10)
    assert list(ev.keys()) == ["type", "timestamp"] and TIMESTAMP_RE.match(ev["timestamp"]), ev
    # never answers: a system notice, then the server closes
    rest = c.expect_closed(timeout=10)
    rest = list(c.events) + rest
    assert [(e["type"], e.get("from"), e.get("content"), e.get("room")) for e in rest] == [
        ("system", "server", "idle timeout: disconnected", "")], rest
    m, _ = t.wait_line(r"^\[\d\d:\d\d:\d\d\] \* sleepy left lobby \(idle\)$", timeout=10)


def test_json_idle_pong_keeps_alive(chat_factory):
    srv = chat_factory("--flood-rate", "0", "--idle-timeout", "1")
    c = JsonClient(srv, "awake")
    pings = 0
    end = time.monotonic() + 3.0  # three full idle timeouts
    while time.monotonic() < end:
        try:
            ev = c.next_event(timeout=max(0.01, end - time.monotonic()))
        except TimeoutError:
            break
        if ev["type"] == "join" and ev["from"] == "awake":
            continue  # its own join
        assert ev["type"] == "ping", f"unexpected event while idle: {ev}"
        pings += 1
        c.send_obj({"type": "PONG"})
    assert pings >= 2, pings
    assert not c.responses, f"PONG must not be answered: {list(c.responses)}"
    c.ok("PING")


def test_text_clients_not_pinged_unless_text_idle_timeout(chat_factory):
    srv = chat_factory("--flood-rate", "0", "--idle-timeout", "1")
    t = TextClient(srv, "tina")
    # a negative check: no ping line and no close for 2.5 s (2.5 idle timeouts)
    assert t.c.nothing_within(2.5), t.c.buf
    t.send_line("/time")
    t.wait_line(r"^\*\*\* \d{4}-")

    srv2 = chat_factory("--flood-rate", "0", "--text-idle-timeout", "1")
    t2 = TextClient(srv2, "tess")
    rest = t2.c.recv_until_eof(timeout=10, allow_reset=True).decode()
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] \*\*\* idle timeout: disconnected\n", rest), rest

