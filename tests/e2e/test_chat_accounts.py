"""Chat accounts: REGISTER with a password creates one, AUTH logs in, wrong
passwords are refused and three of them close the connection, a registered
name cannot be taken as a guest (online or not), the text front end asks
`Password: `, and accounts survive a restart."""


from chat_helpers import (
    NAME_PROMPT,
    PASSWORD_PROMPT,
    JsonClient,
    TextClient,
    chat_factory,  # noqa: F401  (fixture)
    check_error,
    graceful_stop,
)

PW = "correct horse battery"


def test_register_auth_and_refusals(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    owner = JsonClient(srv)
    p = owner.ok("REGISTER", {"name": "alice", "password": PW}, timeout=30)
    assert p["name"] == "alice" and p["room"] == "lobby" and p["registered"] is True, p
    assert p["message"] == "Registration successful. Welcome, alice!", p

    # while its owner is online the name is simply taken
    g = JsonClient(srv)
    g.error("REGISTER", {"name": "alice"}, "name_taken")
    g.error("REGISTER", {"name": "ALICE"}, "name_taken")

    # the owner leaves; still the name cannot be taken without the password
    q = owner.ok("QUIT")
    assert q.get("message") == "Goodbye!", q
    owner.expect_closed()
    owner.c.close()
    g.error("REGISTER", {"name": "alice"}, "name_registered")
    g.error("REGISTER", {"name": "Alice"}, "name_registered")
    g.error("NICK", {"name": "x y"}, "not_registered")
    g.register("guest1")  # retry on the same connection
    g.error("NICK", {"name": "ALICE"}, "name_registered")

    # AUTH on a new connection: wrong password refused, right one works
    a = JsonClient(srv)
    a.error("AUTH", {"name": "alice", "password": "wrong password"}, "bad_password", timeout=30)
    a.error("AUTH", {"name": "nobody", "password": PW}, "unknown_account", timeout=30)
    p = a.ok("AUTH", {"name": "ALICE", "password": PW}, timeout=30)
    assert p["name"] == "alice" and p["registered"] is True and p["room"] == "lobby", p
    assert p["message"] == "Login successful. Welcome back, alice!", p
    a.error("AUTH", {"name": "alice", "password": PW}, "already_registered", timeout=30)
    ev, _ = g.wait_type("join", **{"from": "alice"})
    a.say("authenticated")
    g.wait_chat("authenticated")


def test_requests_after_a_login_wait_and_are_answered_in_order(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    c = JsonClient(srv)
    ids = [c.send("REGISTER", {"name": "pip", "password": PW}), c.send("ECHO", {"data": "after"}),
           c.send("MESSAGE", {"content": "as pip"}), c.send("LIST_USERS")]
    replies = [c.response(timeout=30) for _ in ids]
    assert [r.get("id") for r in replies] == ids, replies
    assert [r["type"] for r in replies] == ["REGISTER", "ECHO", "MESSAGE", "LIST_USERS"], replies
    assert replies[3]["payload"]["users"] == ["pip"], replies


def test_too_many_logins_waiting_get_busy(chat_factory):
    # at most 32 hashing jobs may wait; 40 registrations at once: the rest
    # are answered busy at once
    srv = chat_factory("--flood-rate", "0")
    clients = [JsonClient(srv) for _ in range(40)]
    for i, c in enumerate(clients):
        c.send("REGISTER", {"name": f"acct{i}", "password": PW})
    replies = [c.response(timeout=60) for c in clients]
    ok = [r for r in replies if r["type"] == "REGISTER"]
    busy = [r for r in replies if r["type"] == "error"]
    for r in busy:
        p = check_error(r, "busy", "41st login")
        assert p["message"] == "too many logins in progress, try again", r
    assert len(ok) + len(busy) == 40, replies
    assert len(ok) >= 32 and len(busy) >= 1, (len(ok), len(busy))
    # a refused client may try again once the queue has drained
    again = clients[replies.index(busy[0])]
    assert again.ok("REGISTER", {"name": "late", "password": PW}, timeout=60)["registered"] is True


def test_password_length_rules(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    c = JsonClient(srv)
    c.error("REGISTER", {"name": "weak", "password": "7chars!"}, "weak_password", timeout=30)
    c.error("REGISTER", {"name": "weak", "password": ""}, "weak_password", timeout=30)
    c.error("REGISTER", {"name": "weak", "password": "x" * 257}, "weak_password", timeout=30)
    assert c.ok("REGISTER", {"name": "weak", "password": "8chars!!"}, timeout=30)["registered"] is True
    d = JsonClient(srv)
    assert d.ok("REGISTER", {"name": "long", "password": "p" * 256}, timeout=30)["registered"] is True


def test_three_wrong_passwords_close_the_connection_json(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    owner = JsonClient(srv)
    owner.ok("REGISTER", {"name": "bob", "password": PW}, timeout=30)
    owner.ok("QUIT")
    owner.expect_closed()
    owner.c.close()
    other = JsonClient(srv, "other")
    c = JsonClient(srv)
    c.error("AUTH", {"name": "bob", "password": "wrong 1!"}, "bad_password", timeout=30)
    c.error("AUTH", {"name": "bob", "password": "wrong 2!"}, "bad_password", timeout=30)
    c.send("AUTH", {"name": "bob", "password": "wrong 3!"})
    rest = c.expect_closed(timeout=30)
    assert len(rest) == 1, rest
    p = check_error(rest[0], "bad_password", "third wrong AUTH")
    assert p["message"] == "wrong password; too many attempts", rest
    # others are unaffected, and the right password still works elsewhere
    other.ok("PING")
    assert JsonClient(srv).auth("bob", PW)["registered"] is True


def test_text_password_prompt_and_three_wrong_passwords(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    t = TextClient(srv, "carol")
    t.send_line("/register " + PW)
    t.wait_line(r"^\*\*\* carol is now registered$", timeout=30)
    t.send_line("/quit")
    t.wait_line(r"^\*\*\* goodbye$")
    t.c.expect_eof(allow_reset=True)
    t.c.close()

    # the right password: welcome
    t2 = TextClient(srv)
    m = t2.login("carol", password=PW)
    assert m.group("name") == "carol"
    t2.send_line("/quit")
    t2.wait_line(r"^\*\*\* goodbye$")
    t2.c.expect_eof(allow_reset=True)
    t2.c.close()

    # JSON AUTH with the password set in text mode
    j = JsonClient(srv)
    assert j.auth("carol", PW)["registered"] is True
    j.ok("QUIT")
    j.expect_closed()
    j.c.close()

    # three wrong passwords: an ERROR each, then the connection is closed
    t3 = TextClient(srv)
    t3.send_line("CAROL")
    t3.expect_prompt(NAME_PROMPT)
    t3.expect_prompt(PASSWORD_PROMPT)
    for attempt in range(2):
        t3.send_line(f"wrong password {attempt}")
        # "ERROR: wrong password", then the name prompt again
        assert t3.expect_prompt(NAME_PROMPT, timeout=30) == ["ERROR: wrong password"]
        t3.send_line("carol")
        t3.expect_prompt(PASSWORD_PROMPT)
    t3.send_line("wrong password 2")
    rest = t3.c.recv_until_eof(timeout=30, allow_reset=True)
    assert rest == b"ERROR: wrong password; too many attempts, disconnected\n", rest


def test_named_guest_registers_own_name(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    c = JsonClient(srv, "dora")
    assert c.join_payload["registered"] is False
    p = c.ok("REGISTER", {"name": "dora", "password": PW}, timeout=30)
    assert p == {"status": "ok", "name": "dora", "room": "lobby", "registered": True}, p
    c.error("REGISTER", {"name": "dora", "password": PW}, "already_registered", timeout=30)
    c.error("REGISTER", {"name": "other", "password": PW}, "already_registered", timeout=30)
    c.ok("QUIT")
    c.expect_closed()
    c.c.close()
    assert JsonClient(srv).auth("dora", PW)["registered"] is True
    t = TextClient(srv, "tom")
    t.send_line("/register short")
    m, _ = t.wait_line(r"^ERROR: .*$", timeout=30)
    assert m.group(0) == "ERROR: a password must be 8 to 256 bytes", m.group(0)
    t.send_line("/register   spaces inside are kept  ")
    t.wait_line(r"^\*\*\* tom is now registered$", timeout=30)
    t.send_line("/register again-and-again")
    m, _ = t.wait_line(r"^ERROR: .*$", timeout=30)
    assert m.group(0) == "ERROR: you are already registered", m.group(0)
    t.send_line("/quit")
    t.wait_line(r"^\*\*\* goodbye$")
    t.c.expect_eof(allow_reset=True)
    t.c.close()
    # the password is the rest of the line after the spaces following /register
    assert JsonClient(srv).auth("tom", "spaces inside are kept  ")["name"] == "tom"


def test_nick_to_registered_name_refused_text(chat_factory):
    srv = chat_factory("--flood-rate", "0")
    owner = JsonClient(srv)
    owner.ok("REGISTER", {"name": "dora", "password": PW}, timeout=30)
    t = TextClient(srv, "tom")
    t.send_line("/nick Dora")
    m, _ = t.wait_line(r"^ERROR: .*$")
    assert m.group(0) == "ERROR: that name is in use", m.group(0)  # online: taken
    owner.ok("QUIT")
    owner.expect_closed()
    owner.c.close()
    t.send_line("/nick Dora")
    m, _ = t.wait_line(r"^ERROR: .*$")
    assert m.group(0) == "ERROR: that name is registered: log in with its password", m.group(0)
    t.send_line("/nick tommy")
    t.wait_line(r"^\*\*\* you are now tommy$")


def test_accounts_survive_restart(chat_factory, tmp_path):
    db = tmp_path / "chat.db"
    srv = chat_factory("--flood-rate", "0", db=db)
    JsonClient(srv).ok("REGISTER", {"name": "erin", "password": PW}, timeout=30)
    t = TextClient(srv, "frank")
    t.send_line("/register " + PW + "!")
    t.wait_line(r"^\*\*\* frank is now registered$", timeout=30)
    assert graceful_stop(srv) == []

    srv2 = chat_factory("--flood-rate", "0", db=db)
    g = JsonClient(srv2)
    g.error("REGISTER", {"name": "erin"}, "name_registered")
    g.error("REGISTER", {"name": "FRANK"}, "name_registered")
    g.error("AUTH", {"name": "erin", "password": PW + "!"}, "bad_password", timeout=30)
    assert g.auth("Erin", PW)["name"] == "erin"
    t2 = TextClient(srv2)
    t2.login("frank", password=PW + "!")
