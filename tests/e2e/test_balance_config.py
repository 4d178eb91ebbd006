"""`tcpkit balance` settings: the command line (usage errors exit 2), the
--config file ("name value" lines, comments, quoted values with escapes; a bad
file exits 1 naming the line), and SIGHUP reload (a broken file keeps the
current settings; added / removed / kept backends, with established
connections and the kept backends' counters and health surviving)."""

import os
import re

import pytest

from balance_helpers import (  # noqa: F401  (fixtures)
    backend_down_re,
    backend_entry,
    balancer,
    close_line_for,
    connect,
    echo_backends,
    expect_log,
    py_backend,
    refused_addr,
    stats_json,
    wait_stats,
    which_many,
    sighup_reload,
    write_config,
)
from conftest import run_tcpkit

# ---- command line -------------------------------------------------------------------------

B = "127.0.0.1:9"  # syntactically fine; these runs never get as far as connecting


@pytest.mark.parametrize("args, message", [
    (["--bogus"], r"unrecognized option '--bogus'"),
    (["-b", "127.0.0.1"], r"backend: '127\.0\.0\.1' is not HOST:PORT"),
    (["-b", "127.0.0.1:0"], r"port must be 1 to 65535"),
    (["-b", "127.0.0.1:70000"], r"not HOST:PORT|port"),
    ([], r"no backend"),
    (["-b", B, "--connect-timeout", "5x"], r"connect-timeout: '5x' is not a duration"),
    (["-b", B, "--queue-timeout", "soon"], r"queue-timeout: 'soon' is not a duration"),
    (["-b", B + ",weight=1001"], r"weight=1001"),
    (["-b", B + ",weight=-1"], r"weight"),
    (["-b", B + ",foo=1"], r"bad option 'foo=1'"),
    (["-b", B + ",proxy=v3"], r"proxy=v3"),
    (["-b", B, "--algo", "fastest"], r"algo: 'fastest'"),
    (["-b", B, "--send-proxy", "v9"], r"send-proxy: 'v9'"),
    (["-b", B, "-b", B], r"given twice"),
    (["-b", B, "--retries", "x"], r"retries"),
    (["-b", B, "--check-interval", "100ms", "--check-timeout", "1s"], r"check-timeout"),
    (["-b", B, "--connect-timeout", "10s", "--connect-budget", "1s"], r"connect-timeout"),
    (["-b", B, "stray"], r"unexpected argument 'stray'"),
    (["-b", B, "--pipe-size", "1"], r"pipe-size"),
])
def test_usage_errors_exit_2_with_a_clear_message(args, message):
    cp = run_tcpkit(["balance", "-l", "127.0.0.1:0"] + args, timeout=15)
    err = cp.stderr.decode()
    assert cp.returncode == 2, (cp.returncode, err)
    assert re.search(message, err), err
    assert "Try 'tcpkit balance --help'" in err
    assert b"listening on" not in cp.stdout


def test_help_exits_0_with_usage():
    cp = run_tcpkit(["balance", "--help"], timeout=15)
    assert cp.returncode == 0
    out = cp.stdout.decode()
    assert out.startswith("usage: tcpkit balance")
    for opt in ("--backend SPEC", "--algo ALGO", "--config FILE", "--stats ADDR", "--drain-timeout"):
        assert opt in out


# ---- the config file ------------------------------------------------------------------------


def test_config_file_comments_quotes_escapes_and_backend_options(server_factory, balancer, tmp_path):
    # plain echo backends (no banner) so the check's reply is exactly the echo
    e1, e2, e3 = (server_factory(["-l", "127.0.0.1:0", "--threads", "1"]) for _ in range(3))
    s1, s2, s3 = (f"127.0.0.1:{e.addr[1]}" for e in (e1, e2, e3))
    cfg = write_config(tmp_path / "bal.conf", f"""\
# a test configuration
   # an indented comment

algo leastconn            # a comment after a value
backend {s1} weight=3 maxconn=7
backend {s2}, weight=2, backup    # options after commas and blanks
\tbackend\t{s3},maxconn=0,proxy=none
check-interval 100ms
check-timeout 100ms
rise 1
fall 1
# '#' inside quotes is text; \\" \\x41 \\r \\n are escapes
check-send "a#b\\x41\\"q\\r\\n"
check-expect "ECHO: a#bA\\"q\\n"   # the echo server's answer
queue 5
""")
    bal = balancer([], "-c", cfg, check_interval=None)
    st = wait_stats(bal.stats_addr,
                    lambda st: all(b["check"]["last"] == "ok" for b in st["backends"]),
                    what="every check ok")
    assert st["algo"] == "leastconn"
    b1, b2, b3 = (backend_entry(st, s) for s in (s1, s2, s3))
    assert (b1["weight"], b1["maxconn"], b1["backup"]) == (3, 7, False)
    assert (b2["weight"], b2["maxconn"], b2["backup"]) == (2, 0, True)
    assert (b3["weight"], b3["maxconn"], b3["backup"]) == (1, 0, False)
    assert all(b["state"] == "up" for b in st["backends"])
    assert not re.search(r"backend \S+ down", bal.stderr()), bal.stderr()
    c = connect(bal)
    assert c.request("through") == b"ECHO: through"


@pytest.mark.parametrize("send, expect, ok", [
    (r'"ping\r\n"', r'"ECHO: ping"', True),
    (r"ping\r\n", r"ECHO: ping", True),                 # unquoted: the setting decodes
    (r'"\\x41\n"', r'"ECHO: \\x41\n"', True),           # quoted \\ is one backslash: 4 bytes \x41
    (r'"\x55PPER quiet\n"', r'"QUIET\n"', True),        # \xHH decoded: the UPPER command
    (r'"ping\r\n"', r'"ECHO: pong"', False),            # a wrong answer: down
])
def test_config_check_send_expect_escapes(server_factory, balancer, tmp_path, send, expect, ok):
    e = server_factory(["-l", "127.0.0.1:0", "--threads", "1"])
    be = f"127.0.0.1:{e.addr[1]}"
    cfg = write_config(tmp_path / "bal.conf",
                       f"backend {be}\ncheck-interval 100ms\ncheck-timeout 100ms\nrise 1\nfall 1\n"
                       f"check-send {send}\ncheck-expect {expect}\n")
    bal = balancer([], "-c", cfg, check_interval=None)
    if ok:
        st = wait_stats(bal.stats_addr, lambda st: st["backends"][0]["check"]["last"] == "ok",
                        what="check ok")
        assert st["backends"][0]["state"] == "up"
    else:
        expect_log(bal, backend_down_re(be) + r" \(unexpected reply\)")


def test_config_with_bom_and_crlf_lines(echo_backends, balancer, tmp_path):
    a, b = echo_backends(["A", "B"])
    path = tmp_path / "bal.conf"
    path.write_bytes(b"\xef\xbb\xbf# windows file\r\nbackend " + a.spec.encode() + b" weight=2\r\n"
                     b"backend " + b.spec.encode() + b"\r\nalgo roundrobin\r\n")
    bal = balancer([], "-c", str(path))
    names = which_many(bal.addr, 30)
    assert names.count("A") == 20 and names.count("B") == 10


def test_command_line_adds_to_and_overrides_the_file(echo_backends, balancer, tmp_path):
    a, b = echo_backends(["A", "B"])
    cfg = write_config(tmp_path / "bal.conf", f"backend {a.spec}\nalgo first\n")
    bal = balancer([b], "-c", cfg, algo="roundrobin")
    st = stats_json(bal.stats_addr)
    assert st["algo"] == "roundrobin"
    assert [x["addr"] for x in st["backends"]] == [a.spec, b.spec]
    assert set(which_many(bal.addr, 4)) == {"A", "B"}


@pytest.mark.parametrize("text, line, message", [
    ("backend 127.0.0.1:9\nbogus-setting 5\n", 2, r"unknown setting 'bogus-setting'"),
    ("backend 127.0.0.1:9\n\n# c\ncheck-send \"abc\n", 4, r"no closing quote"),
    ("backend 127.0.0.1:9 weight=x\n", 1, r"weight"),
    ("backend 127.0.0.1:9\nconnect-timeout 3 parsecs\n", 2, r"not a duration"),
    ("backend 127.0.0.1:9\ncheck-send \"\\q\"\n", 2, r"escape"),
    ("# only\nbackend\n", 2, r"missing value"),
    ("backend 127.0.0.1:9\ncheck-expect \"a\" b\n", 2, r"after the closing quote"),
    ("backend 127.0.0.1:9\nalgo \"first\n", 2, r"quote"),
    ("backend 127.0.0.1:9\nqueue\x01 1\n", 2, r"control character"),
])
def test_bad_config_file_exits_1_naming_the_line(tmp_path, text, line, message):
    cfg = write_config(tmp_path / "bad.conf", text)
    cp = run_tcpkit(["balance", "-l", "127.0.0.1:0", "--threads", "1", "-c", cfg], timeout=15)
    err = cp.stderr.decode()
    assert cp.returncode == 1, (cp.returncode, err)
    assert cfg in err, err
    assert re.search(rf"line {line}\b", err), err
    assert re.search(message, err), err
    assert b"listening on" not in cp.stdout


def test_config_without_backend_exits_1(tmp_path):
    cfg = write_config(tmp_path / "empty.conf", "# nothing but a comment\nalgo first\n")
    cp = run_tcpkit(["balance", "-l", "127.0.0.1:0", "-c", cfg], timeout=15)
    assert cp.returncode == 1, cp.stderr
    assert b"no backend" in cp.stderr


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_config_exits_1(tmp_path, kind):
    path = tmp_path / "bal.conf"
    if kind == "directory":
        path.mkdir()
    cp = run_tcpkit(["balance", "-l", "127.0.0.1:0", "-b", B, "-c", str(path)], timeout=15)
    err = cp.stderr.decode()
    assert cp.returncode == 1, err
    assert str(path) in err
    assert ("No such file" in err) if kind == "missing" else ("not a regular file" in err), err


# ---- SIGHUP reload ---------------------------------------------------------------------------


def backends_conf(*servers, extra=""):
    return "".join(f"backend {s if isinstance(s, str) else s.spec}\n" for s in servers) + extra


@pytest.mark.parametrize("broken", [
    "backend 127.0.0.1:9\nbackend nonsense\n",
    "no-such-setting 1\n",
    "# the backends are gone\n",
    None,  # the file was deleted
])
def test_reload_with_broken_config_keeps_serving_the_old_set(echo_backends, balancer, tmp_path, broken):
    a, b = echo_backends(["A", "B"])
    cfg = write_config(tmp_path / "bal.conf", backends_conf(a, b))
    bal = balancer([], "-c", cfg)
    assert set(which_many(bal.addr, 4)) == {"A", "B"}
    if broken is None:
        os.unlink(cfg)
    else:
        write_config(cfg, broken)
    sighup_reload(bal, r"reload failed: .*\(keeping the current settings\)")
    assert bal.alive()
    assert set(which_many(bal.addr, 6)) == {"A", "B"}
    st = stats_json(bal.stats_addr)
    assert [x["addr"] for x in st["backends"]] == [a.spec, b.spec]
    # a good file afterwards is applied
    write_config(cfg, backends_conf(b))
    sighup_reload(bal, r"reload: 1 backends? \(0 added, 1 removed, 1 kept\)",
                  stats_pred=lambda st: len(st["backends"]) == 1)
    assert set(which_many(bal.addr, 4)) == {"B"}


def test_reload_adds_and_removes_while_clients_stay_connected(echo_backends, balancer, tmp_path):
    a, b, c = echo_backends(["A", "B", "C"])
    cfg = write_config(tmp_path / "bal.conf", backends_conf(a, b))
    bal = balancer([], "-c", cfg)
    ka, kb = connect(bal), connect(bal)
    assert (ka.recv_line(), kb.recv_line()) == (b"A\n", b"B\n")  # round robin from the first
    assert ka.request("before") == b"ECHO: before"
    which_many(bal.addr, 4)
    st = wait_stats(bal.stats_addr, lambda st: st["clients"]["active"] == 2, what="two held")
    a_total_before = backend_entry(st, a)["total"]
    a_sent_before = backend_entry(st, a)["bytes_sent"]
    assert a_total_before == 3

    write_config(cfg, backends_conf(a, c))
    sighup_reload(bal, r"reload: 2 backends \(1 added, 1 removed, 1 kept\)",
                  stats_pred=lambda st: [x["addr"] for x in st["backends"]] == [a.spec, c.spec])

    # both established connections survive, the one on the removed backend too
    assert ka.request("after") == b"ECHO: after"
    assert kb.request("after on B") == b"ECHO: after on B"
    # new clients: never the removed backend
    names = which_many(bal.addr, 20)
    assert set(names) == {"A", "C"}, names
    st = stats_json(bal.stats_addr)
    assert [x["addr"] for x in st["backends"]] == [a.spec, c.spec]
    ea = backend_entry(st, a)
    # the kept backend's counters carry on from where they were
    assert ea["total"] == a_total_before + names.count("A")
    assert ea["bytes_sent"] >= a_sent_before
    assert ea["active"] == 1
    assert backend_entry(st, c)["total"] == names.count("C")
    assert st["clients"]["total"] == 2 + 4 + 20
    # the connection to the removed backend still ends with its own close line
    kb.close()
    line = close_line_for(bal, kb.local)
    assert line["backend"] == b.spec and line["reason"] == "client"
    ka.close()
    assert close_line_for(bal, ka.local)["backend"] == a.spec


def test_reload_changes_weights_and_algo(echo_backends, balancer, tmp_path):
    a, b = echo_backends(["A", "B"])
    cfg = write_config(tmp_path / "bal.conf", backends_conf(a, b))
    bal = balancer([], "-c", cfg)
    names = which_many(bal.addr, 10)
    assert names.count("A") == names.count("B") == 5
    write_config(cfg, f"backend {a.spec} weight=3\nbackend {b.spec}\n")
    sighup_reload(bal, r"reload: 2 backends \(0 added, 0 removed, 2 kept\)",
                  stats_pred=lambda st: backend_entry(st, a)["weight"] == 3)
    names = which_many(bal.addr, 40)
    assert names.count("A") == 30 and names.count("B") == 10, names
    st = stats_json(bal.stats_addr)
    assert backend_entry(st, a)["weight"] == 3
    assert backend_entry(st, a)["total"] == 5 + 30  # not reset by the reload
    write_config(cfg, backends_conf(a, b, extra="algo first\n"))
    sighup_reload(bal, r"reload: 2 backends", stats_pred=lambda st: st["algo"] == "first")
    assert set(which_many(bal.addr, 6)) == {"A"}


def test_reload_keeps_health_of_kept_backends(echo_backends, balancer, tmp_path):
    a, c = echo_backends(["A", "C"])
    dead = refused_addr()
    dead_s = f"{dead[0]}:{dead[1]}"
    cfg = write_config(tmp_path / "bal.conf", backends_conf(a, dead_s))
    bal = balancer([], "-c", cfg, "--check-timeout", "100ms", "--rise", "1", "--fall", "1",
                   check_interval="100ms")
    expect_log(bal, backend_down_re(dead_s))
    wait_stats(bal.stats_addr, lambda st: backend_entry(st, dead_s)["state"] == "down", what="dead down")
    write_config(cfg, backends_conf(a, dead_s, c))
    sighup_reload(bal, r"reload: 3 backends \(1 added, 0 removed, 2 kept\)",
                  stats_pred=lambda st: len(st["backends"]) == 3)
    st = stats_json(bal.stats_addr)
    assert backend_entry(st, dead_s)["state"] == "down", st
    names = which_many(bal.addr, 10)
    assert set(names) == {"A", "C"}
    # no client was tried on the down backend
    assert not re.search(re.escape(dead_s) + r" failed", bal.stderr()), bal.stderr()


def test_reload_reapplies_the_command_line(echo_backends, balancer, tmp_path):
    # the command line still wins after a reload
    a, b = echo_backends(["A", "B"])
    cfg = write_config(tmp_path / "bal.conf", f"backend {a.spec}\nalgo first\n")
    bal = balancer([b], "-c", cfg, algo="roundrobin")
    write_config(cfg, f"backend {a.spec} weight=4\nalgo leastconn\n")
    sighup_reload(bal, r"reload: 2 backends \(0 added, 0 removed, 2 kept\)",
                  stats_pred=lambda st: backend_entry(st, a)["weight"] == 4)
    st = stats_json(bal.stats_addr)
    assert st["algo"] == "roundrobin"
    assert [x["addr"] for x in st["backends"]] == [a.spec, b.spec]


def test_reload_line_means_the_new_set_is_in_effect(echo_backends, balancer, tmp_path):
    # Once `reload: ...` is logged, a client that connects must not be sent to
    # a backend the reload removed, and the stats must show the new set.
    # (Each round removes A, connects at once, then puts A back; the window is
    # short, so several rounds.)
    a, b = echo_backends(["A", "B"])
    cfg = write_config(tmp_path / "bal.conf", backends_conf(a, b))
    bal = balancer([], "-c", cfg)
    problems = []
    for i in range(25):
        write_config(cfg, backends_conf(b))
        sighup_reload(bal, r"reload: 1 backends? \(0 added, 1 removed, 1 kept\)")
        got = which_many(bal.addr, 2)
        addrs = [x["addr"] for x in stats_json(bal.stats_addr)["backends"]]
        if got != ["B", "B"] or addrs != [b.spec]:
            problems.append(f"round {i}: clients reached {got}, stats list {addrs}")
        write_config(cfg, backends_conf(a, b))
        sighup_reload(bal, r"reload: 2 backends \(1 added, 0 removed, 1 kept\)",
                      stats_pred=lambda st: len(st["backends"]) == 2)
    assert not problems, "after the reload line, the removed backend was still in use:\n" + "\n".join(problems)


def test_reload_mid_first_exchange_keeps_its_replay_buffer(py_backend, balancer, tmp_path):
    """A client in its first exchange keeps the replay buffer it started with:
    a reload that enlarges --replay-buffer must not make the balancer read
    past the buffer it already allocated (a heap overflow under ASan)."""
    hold = py_backend("hold")
    cfg = write_config(tmp_path / "bal.conf", f"backend {hold.spec}\n"
                       "first-byte-timeout 20s\nreplay-buffer 64\ndrain-timeout 1s\n")
    bal = balancer([], "-c", cfg)
    c = connect(bal)
    c.send(b"x" * 10)
    assert hold.wait_data(0, 10) == b"x" * 10
    write_config(cfg, f"backend {hold.spec}\nfirst-byte-timeout 20s\nreplay-buffer 1M\n"
                 "drain-timeout 1s\n")
    sighup_reload(bal, r"reload: 1 backends? \(0 added, 0 removed, 1 kept\)")
    c.send(b"y" * 4000)
    assert hold.wait_data(0, 4010) == b"x" * 10 + b"y" * 4000
    assert bal.alive()
