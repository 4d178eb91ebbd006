"""`tcpkit balance` algorithms: how clients are spread over backends.

Every balancer here runs with --threads 1 and without health checks, so the
picks are deterministic where the algorithm is. Backends are echo servers
whose banner names them; a client learns where it landed from the first line.
"""

from collections import Counter

import pytest

from balance_helpers import (  # noqa: F401  (fixtures)
    balancer,
    connect,
    echo_backends,
    sighup_reload,
    spec,
    stats_json,
    backend_entry,
    wait_stats,
    which,
    which_many,
    write_config,
)


def runs(seq):
    """Longest run of each value in seq."""
    best = Counter()
    prev, n = None, 0
    for x in seq:
        n = n + 1 if x == prev else 1
        prev = x
        best[x] = max(best[x], n)
    return best


def held(bal, n):
    """n connections kept open; returns [(conn, backend name)]."""
    out = []
    for _ in range(n):
        c = connect(bal.addr)
        bal.clients.append(c)
        out.append((c, c.recv_line().rstrip(b"\n").decode()))
    return out


def wait_active(bal, backends, want):
    """Wait until each backend's stats 'active' equals want[i]."""
    return wait_stats(
        bal.stats_addr,
        lambda st: [backend_entry(st, b)["active"] for b in backends] == list(want),
        what=f"active == {want}",
    )


# ---- roundrobin --------------------------------------------------------------------------


def test_roundrobin_weights_3_1_exact_share_and_smooth(echo_backends, balancer):
    a, b = echo_backends(["A", "B"])
    bal = balancer([spec(a, weight=3), spec(b, weight=1)])
    names = which_many(bal.addr, 400)
    assert Counter(names) == {"A": 300, "B": 100}, Counter(names)
    # smooth: never more of one backend in a row than its share of a cycle
    r = runs(names)
    assert r["A"] <= 3 and r["B"] == 1, (r, names[:40])
    # every window of 4 consecutive picks holds exactly one B
    for i in range(len(names) - 3):
        assert names[i:i + 4].count("B") == 1, (i, names[i:i + 4])
    st = stats_json(bal.stats_addr)
    assert backend_entry(st, a)["total"] == 300
    assert backend_entry(st, b)["total"] == 100
    assert st["clients"]["total"] == 400


def test_roundrobin_equal_weights_rotates(echo_backends, balancer):
    bs = echo_backends(["A", "B", "C"])
    bal = balancer(bs)
    names = which_many(bal.addr, 60)
    assert Counter(names) == {"A": 20, "B": 20, "C": 20}
    # a strict rotation: each window of three sees every backend once
    for i in range(len(names) - 2):
        assert sorted(names[i:i + 3]) == ["A", "B", "C"], (i, names[:12])


def test_roundrobin_smooth_with_5_1_1(echo_backends, balancer):
    a, b, c = echo_backends(["A", "B", "C"])
    bal = balancer([spec(a, weight=5), b, c])
    names = which_many(bal.addr, 70)
    assert Counter(names) == {"A": 50, "B": 10, "C": 10}
    # smooth weighted round robin interleaves: A never 5 times in a row
    # inside a cycle of 7 (nginx's order is A A B A C A A)
    assert runs(names)["A"] < 5, names[:21]


@pytest.mark.parametrize("algo", ["roundrobin", "leastconn", "random", "source", "first"])
def test_weight_zero_gets_no_new_clients(echo_backends, balancer, algo):
    a, b = echo_backends(["A", "B"])
    bal = balancer([spec(a, weight=0), b], algo=algo)
    names = [which(bal.addr, source=f"127.0.0.{i}") for i in range(2, 42)]
    assert set(names) == {"B"}, Counter(names)
    assert backend_entry(stats_json(bal.stats_addr), a)["total"] == 0


# ---- leastconn ------------------------------------------------------------------------------


def test_leastconn_new_clients_go_to_the_less_busy_backend(echo_backends, balancer):
    a, b = echo_backends(["A", "B"])
    bal = balancer([a, b], algo="leastconn")
    conns = held(bal, 4)
    # each new client went to the backend with fewer: 2 and 2
    assert Counter(n for _, n in conns) == {"A": 2, "B": 2}, conns
    # empty A: the next two clients both go to A (A 0 < B 2, then 1 < 2)
    for c, n in conns:
        if n == "A":
            c.close()
    wait_active(bal, [a, b], [0, 2])
    more = held(bal, 2)
    assert [n for _, n in more] == ["A", "A"]
    # now 2 and 2 again; hold B busier and every new one goes to A
    more2 = held(bal, 1)
    other = "B" if more2[0][1] == "A" else "A"
    nxt = held(bal, 1)
    assert nxt[0][1] == other, (more2, nxt)
    for c, _ in conns + more + more2 + nxt:
        c.close()


def test_leastconn_respects_weights(echo_backends, balancer):
    a, b = echo_backends(["A", "B"])
    bal = balancer([spec(a, weight=2), b], algo="leastconn")
    conns = held(bal, 6)
    # fewest active per weight: 4 on A (weight 2) and 2 on B, whatever the ties
    assert Counter(n for _, n in conns) == {"A": 4, "B": 2}, conns
    wait_active(bal, [a, b], [4, 2])
    for c, _ in conns:
        c.close()
    wait_active(bal, [a, b], [0, 0])


def test_leastconn_sequential_short_clients_use_both(echo_backends, balancer):
    a, b = echo_backends(["A", "B"])
    bal = balancer([a, b], algo="leastconn")
    names = which_many(bal.addr, 40)
    assert set(names) == {"A", "B"}, Counter(names)


# ---- random (two choices) ---------------------------------------------------------------


def test_random_equal_weights_fair_share(echo_backends, balancer):
    a, b = echo_backends(["A", "B"])
    bal = balancer([a, b], algo="random")
    names = which_many(bal.addr, 400)
    cnt = Counter(names)
    # expected 200 each; 100 is more than 10 standard deviations away
    assert cnt["A"] >= 100 and cnt["B"] >= 100, cnt
    assert cnt["A"] + cnt["B"] == 400


def test_random_two_choices_avoids_the_loaded_backend(echo_backends, balancer):
    a, b = echo_backends(["A", "B"])
    bal = balancer([a, b], algo="random")
    conns = held(bal, 20)
    cnt = Counter(n for _, n in conns)
    # two choices, the less loaded wins: the two never drift far apart. A
    # draw of the same backend twice is the only way to pick the busier one,
    # so a gap of 12 out of 20 would take many such draws in a row.
    assert abs(cnt["A"] - cnt["B"]) <= 12, cnt
    assert cnt["A"] + cnt["B"] == 20
    for c, _ in conns:
        c.close()


# ---- source (consistent hashing) ---------------------------------------------------------------


SOURCES = [f"127.0.0.{i}" for i in range(2, 202)]


def test_source_same_address_same_backend(echo_backends, balancer):
    bs = echo_backends(["A", "B", "C"])
    bal = balancer(bs, algo="source")
    first = {s: which(bal.addr, source=s) for s in SOURCES}
    # every backend gets some addresses
    cnt = Counter(first.values())
    assert set(cnt) == {"A", "B", "C"}, cnt
    # again, in another order, and with held connections in between: same answers
    hold = held(bal, 5)
    for s in reversed(SOURCES):
        assert which(bal.addr, source=s) == first[s], s
    for c, _ in hold:
        c.close()


def test_source_adding_a_backend_moves_about_a_quarter(echo_backends, balancer, tmp_path):
    bs = echo_backends(["A", "B", "C", "D"])
    cfg = write_config(tmp_path / "bal.conf", "".join(f"backend {b.spec}\n" for b in bs[:3]))
    bal = balancer([], "-c", cfg, algo="source")
    before = {s: which(bal.addr, source=s) for s in SOURCES}
    assert "D" not in before.values()
    write_config(cfg, "".join(f"backend {b.spec}\n" for b in bs))
    sighup_reload(bal, r"reload: 4 backends \(1 added, 0 removed, 3 kept\)",
                  stats_pred=lambda st: len(st["backends"]) == 4)
    after = {s: which(bal.addr, source=s) for s in SOURCES}
    moved = {s: (before[s], after[s]) for s in SOURCES if before[s] != after[s]}
    assert len(moved) < 0.4 * len(SOURCES), (len(moved), Counter(moved.values()))
    assert len(moved) > 0, "the new backend got no address at all"
    bad = {s: m for s, m in moved.items() if m[1] != "D"}
    assert not bad, f"addresses moved between old backends: {bad}"


# ---- first ---------------------------------------------------------------------------------


def test_first_fills_backends_in_order(echo_backends, balancer):
    a, b, c = echo_backends(["A", "B", "C"])
    bal = balancer([spec(a, maxconn=2), spec(b, maxconn=2), c], algo="first")
    conns = held(bal, 5)
    assert [n for _, n in conns] == ["A", "A", "B", "B", "C"]
    # a slot frees on A: the next client goes there again, before B and C
    conns[0][0].close()
    wait_active(bal, [a, b, c], [1, 2, 1])
    nxt = held(bal, 1)
    assert nxt[0][1] == "A"
    # all slots of A and B taken: the unlimited last backend takes the rest
    assert [n for _, n in held(bal, 3)] == ["C", "C", "C"]


def test_first_without_maxconn_uses_only_the_first(echo_backends, balancer):
    bs = echo_backends(["A", "B"])
    bal = balancer(bs, algo="first")
    assert set(which_many(bal.addr, 20)) == {"A"}
    conns = held(bal, 5)
    assert {n for _, n in conns} == {"A"}
