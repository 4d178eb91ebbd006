"""Chat names: unique without regard to case, invalid names refused, and the
client may retry with another name on the same connection (JSON and text)."""

import pytest

from chat_helpers import NAME_PROMPT, JsonClient, TextClient, chat_factory, check_error  # noqa: F401

INVALID_NAMES = [
    pytest.param("a b", id="space"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\u0001b", id="control"),
    pytest.param("a\u007fb", id="del"),
    pytest.param("a\u0085b", id="c1-control"),
    pytest.param("\u202eevil", id="bidi-override"),
    pytest.param("a\u200bb", id="zero-width-space"),
    pytest.param("a\u00a0b", id="nbsp"),
    pytest.param("", id="empty"),
    pytest.param("x" * 33, id="33-chars"),
    pytest.param("\u00e9" * 33, id="33-two-byte-chars"),
    pytest.param("/x", id="slash"),
    pytest.param("{x", id="brace"),
    pytest.param("#x", id="hash"),
    pytest.param("a\ue000", id="private-use"),
    pytest.param("a\u0378", id="unassigned"),
    pytest.param("a\U000e0041", id="tag-character"),
]


@pytest.fixture
def srv(chat_factory):
    return chat_factory("--flood-rate", "0")


@pytest.mark.parametrize("bad", INVALID_NAMES)
def test_json_invalid_name_refused_then_retry(srv, bad):
    c = JsonClient(srv)
    c.error("REGISTER", {"name": bad}, "invalid_name")
    # not registered: room commands are refused
    c.error("MESSAGE", {"content": "x"}, "not_registered")
    p = c.register("good")
    assert p["name"] == "good" and p["room"] == "lobby", p


@pytest.mark.parametrize("good", ["x" * 32, "\u00e9" * 32, "\U0001f600" * 32, "Stra\u00dfe", "\u65e5\u672c",
                                  "a-b_c.d", "caf\u00e9"])
def test_json_valid_names_accepted(srv, good):
    c = JsonClient(srv)
    assert c.register(good)["name"] == good


@pytest.mark.parametrize("reserved", ["system", "server", "System", "SERVER"])
def test_reserved_names_refused(srv, reserved):
    c = JsonClient(srv)
    r = c.request("REGISTER", {"name": reserved})
    p = check_error(r, "invalid_name", reserved)
    assert p["message"] == "that name is reserved", r
    c.register("notreserved")


def test_json_duplicate_names_case_insensitive_then_retry(srv):
    a = JsonClient(srv, "Alice")
    s = JsonClient(srv, "Stra\u00dfe")
    c = JsonClient(srv)
    JsonClient(srv, "caf\u00e9")  # composed
    for dup in ("Alice", "ALICE", "alice", "aLiCe", "\uff21\uff2c\uff29\uff23\uff25",  # fullwidth
                "STRASSE", "strasse", "STRA\u00dfE", "cafe\u0301", "CAFE\u0301", "CAF\u00c9"):
        c.error("REGISTER", {"name": dup}, "name_taken")
    c.register("bob")
    # names keep the spelling their owners chose
    users = c.ok("LIST_USERS")["users"]
    assert set(users) == {"Alice", "Stra\u00dfe", "bob", "caf\u00e9"}, users
    assert users in (sorted(users), sorted(users, key=str.casefold)), f"users not sorted: {users}"
    # once the owner has left, the name is free
    a.ok("QUIT")
    a.expect_closed()
    c.wait_type("leave", **{"from": "Alice"})
    d = JsonClient(srv)
    d.register("ALICE")
    # already named: a second REGISTER on the same connection is refused
    d.error("REGISTER", {"name": "other"}, "already_registered")
    s.ok("PING")


def _refused_at_prompt(t, raw, why=None):
    """Sends a name line at the prompt: one ERROR line, then the prompt again."""
    t.send_line(raw)
    before = t.expect_prompt(NAME_PROMPT)
    assert len(before) == 1 and before[0].startswith("ERROR: "), (raw, before)
    if why is not None:
        assert before[0] == "ERROR: " + why, (raw, before)


def test_text_duplicate_and_invalid_names_then_retry(srv):
    JsonClient(srv, "alice")
    t = TextClient(srv)
    t.send_line("ALICE")
    t.expect_prompt(NAME_PROMPT)  # banner, prompt
    before = t.expect_prompt(NAME_PROMPT)
    assert before == ['ERROR: name "ALICE" is taken'], before
    _refused_at_prompt(t, b"/help", "name must not start with '/', '{' or '#'")
    _refused_at_prompt(t, b"bad name", "name contains a space, control or format character")
    _refused_at_prompt(t, b"server", "that name is reserved")
    _refused_at_prompt(t, b"y" * 33, "name is too long")
    # an empty line just gets the prompt again
    t.send_line(b"")
    assert t.expect_prompt(NAME_PROMPT) == []
    for raw in (b"Alice", b"a b", b"a\x01b", "\u202eevil".encode(), b"\xff\xfe", b"ab\xc3", b"/x", b"#x",
                b"x" * 33, "a\u200bb".encode(), b"system"):
        _refused_at_prompt(t, raw)
    t.send_line("carol")
    m, _ = t.wait_line(r"^\*\*\* welcome carol, you are in lobby with 2 users: (.*)$")
    assert m.group(1) == "alice, carol", m.group(0)


def test_text_invalid_utf8_message_refused(srv):
    watcher = JsonClient(srv, "watcher")
    t = TextClient(srv, "tom")
    t.send_line(b"bad \xff byte")
    t.wait_line(r"^ERROR: .*$")
    t.send_line(b"esc \x1b[31m red")
    t.wait_line(r"^ERROR: .*$")
    t.send_line("fine \u00e9")
    ev, skipped = watcher.wait_type("chat", **{"from": "tom"})
    assert ev["content"] == "fine \u00e9", ev
