"""JSON-lines framing: one object per line in, one object per line out."""

import datetime
import json
import re

import pytest


@pytest.fixture
def json_server(server_factory):
    return server_factory(["--listen", "127.0.0.1:0", "--framing", "json"])


def _ok(reply, typ, req_id=None):
    assert reply.get("type") == typ, reply
    if req_id is not None:
        assert reply.get("id") == req_id, reply
    assert isinstance(reply.get("payload"), dict), reply
    assert reply["payload"].get("status") == "ok", reply
    return reply["payload"]


def _err(reply, code):
    assert reply.get("type") == "error", reply
    p = reply.get("payload")
    assert isinstance(p, dict), reply
    assert p.get("status") == "error", reply
    assert p.get("code") == code, reply
    assert isinstance(p.get("message"), str), reply
    return p


def test_json_echo(json_server):
    c = json_server.connect()
    r = c.jrequest({"type": "ECHO", "payload": {"data": "hi"}, "id": 7})
    assert _ok(r, "ECHO", 7)["data"] == "hi"


@pytest.mark.parametrize(
    "typ,data,want",
    [
        ("UPPER", "héllo", "HÉLLO"),
        ("LOWER", "ÀB", "àb"),
        ("REVERSE", "héllo", "olléh"),
        ("ECHO", "tab\tquote\"nl\nnul\u0000", "tab\tquote\"nl\nnul\u0000"),
        ("REVERSE", "日本語", "語本日"),
    ],
)
def test_json_text_commands(json_server, typ, data, want):
    c = json_server.connect()
    r = c.jrequest({"type": typ, "payload": {"data": data}, "id": 1})
    assert _ok(r, typ, 1)["data"] == want


def test_json_string_id_preserved(json_server):
    c = json_server.connect()
    r = c.jrequest({"type": "ECHO", "payload": {"data": "x"}, "id": "abc-1"})
    assert _ok(r, "ECHO", "abc-1")["data"] == "x"


def test_json_time(json_server):
    c = json_server.connect()
    p = _ok(c.jrequest({"type": "TIME", "id": 3}), "TIME", 3)
    t = p.get("time")
    assert isinstance(t, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", t), p
    ts = datetime.datetime.strptime(t[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    assert abs((ts - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) < 3600


def test_json_stats_numeric_counters(json_server):
    c = json_server.connect()
    for i in range(3):
        _ok(c.jrequest({"type": "ECHO", "payload": {"data": str(i)}}), "ECHO")
    p = _ok(c.jrequest({"type": "STATS", "id": 4}), "STATS", 4)
    for key in ("conns_total", "conns_active", "bytes_in", "bytes_out", "messages"):
        assert isinstance(p.get(key), (int, float)) and not isinstance(p.get(key), bool), (key, p)
    assert p["conns_active"] >= 1 and p["conns_total"] >= 1
    assert p["messages"] >= 3
    assert p["bytes_in"] > 0 and p["bytes_out"] > 0


def test_json_quit_replies_then_closes(json_server):
    c = json_server.connect()
    r = c.jrequest({"type": "QUIT", "id": 9})
    assert r.get("type") == "QUIT" and r.get("id") == 9, r
    c.expect_eof(allow_reset=False)


def test_json_bad_json_keeps_connection(json_server):
    c = json_server.connect()
    _err(c.jrequest(b'{"type": "ECHO", "payload": '), "bad_json")
    _err(c.jrequest(b"not json at all"), "bad_json")
    r = c.jrequest({"type": "ECHO", "payload": {"data": "after"}, "id": 2})
    assert _ok(r, "ECHO", 2)["data"] == "after"


def test_json_unknown_type(json_server):
    c = json_server.connect()
    _err(c.jrequest({"type": "FLY", "payload": {}}), "unknown_type")
    _ok(c.jrequest({"type": "ECHO", "payload": {"data": "ok"}}), "ECHO")


def test_json_missing_type(json_server):
    c = json_server.connect()
    _err(c.jrequest({"payload": {"data": "x"}}), "bad_request")
    _ok(c.jrequest({"type": "ECHO", "payload": {"data": "ok"}}), "ECHO")


def test_json_too_long_line(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--framing", "json", "--max-line", "1K"])
    c = srv.connect()
    big = '{"type":"ECHO","payload":{"data":"' + "a" * 4000 + '"}}'
    _err(c.jrequest(big), "too_long")
    r = c.jrequest({"type": "ECHO", "payload": {"data": "small"}, "id": 5})
    assert _ok(r, "ECHO", 5)["data"] == "small"


def test_json_too_long_line_arriving_in_pieces(server_factory):
    srv = server_factory(["--listen", "127.0.0.1:0", "--framing", "json", "--max-line", "1K"])
    c = srv.connect()
    c.send(b'{"type":"ECHO","payload":{"data":"' + b"a" * 3000)
    c.send(b"b" * 3000)
    c.send(b'"}}\n{"type":"ECHO","payload":{"data":"ok"},"id":6}\n')
    _err(json.loads(c.recv_line()), "too_long")
    assert _ok(json.loads(c.recv_line()), "ECHO", 6)["data"] == "ok"


@pytest.mark.parametrize(
    "raw",
    [
        b"[1,2,3]",
        b'"just a string"',
        b"42",
        b"null",
        b'{"type": 5}',
        b'{"type": "ECHO"}',
        b'{"type": "ECHO", "payload": "notanobject"}',
        b'{"type": "ECHO", "payload": {"data": 5}}',
        b'{"type": "UPPER", "payload": {"data": null}}',
        b"{}",
        b"",
        b"\xff\xfe{",
        b'{"type":"ECHO","payload":{"data":"' + b"\\ud800" + b'"}}',
        b"[" * 5000,
    ],
)
def test_json_adversarial_input_one_reply_and_connection_survives(json_server, raw):
    c = json_server.connect()
    c.send(raw + b"\n")
    if raw == b"":
        # an empty line may be ignored or answered with an error; either way the
        # connection must stay usable
        r = c.jrequest({"type": "ECHO", "payload": {"data": "probe"}, "id": 11})
        if r.get("type") == "error":
            r = json.loads(c.recv_line())
        assert _ok(r, "ECHO", 11)["data"] == "probe"
        return
    line = c.recv_line()
    reply = json.loads(line)
    assert isinstance(reply, dict) and isinstance(reply.get("payload"), dict), reply
    assert reply["payload"].get("status") in ("ok", "error"), reply
    r = c.jrequest({"type": "ECHO", "payload": {"data": "probe"}, "id": 12})
    assert _ok(r, "ECHO", 12)["data"] == "probe"


def test_json_pipelined_in_order(json_server):
    c = json_server.connect()
    n = 300
    c.send(b"".join(json.dumps({"type": "ECHO", "payload": {"data": f"d{i}"}, "id": i}).encode() + b"\n"
                    for i in range(n)))
    for i in range(n):
        r = json.loads(c.recv_line())
        assert _ok(r, "ECHO", i)["data"] == f"d{i}"


def test_json_crlf_accepted(json_server):
    c = json_server.connect()
    r = c.jrequest(b'{"type":"UPPER","payload":{"data":"abc"},"id":1}\r')
    assert _ok(r, "UPPER", 1)["data"] == "ABC"
