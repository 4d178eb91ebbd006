"""Many concurrent clients, and the --threads option."""

import pytest

from conftest import run_many_clients


def test_200_concurrent_clients_several_round_trips(echo_server):
    failures = run_many_clients(echo_server.addr, n_clients=200, rounds=5, deadline_s=90)
    assert not failures, "\n".join(failures[:30])
    # the server is still healthy afterwards
    c = echo_server.connect()
    assert c.request("after") == b"ECHO: after"


@pytest.mark.parametrize("threads", ["1", "4"])
def test_threads_option_serves_concurrent_clients(server_factory, threads):
    srv = server_factory(["--listen", "127.0.0.1:0", "--threads", threads])
    failures = run_many_clients(srv.addr, n_clients=50, rounds=4, deadline_s=60)
    assert not failures, "\n".join(failures[:30])
    c = srv.connect()
    assert c.request("STATS").startswith(b"STATS ")


@pytest.mark.parametrize("threads", ["1", "4"])
def test_threads_stats_are_process_wide(server_factory, threads):
    srv = server_factory(["--listen", "127.0.0.1:0", "--threads", threads])
    conns = [srv.connect() for _ in range(8)]
    for i, c in enumerate(conns):
        assert c.request(f"m{i}") == f"ECHO: m{i}".encode()
    line = conns[0].request("STATS").decode()
    fields = dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)
    assert int(fields["conns_active"]) >= 8, line
    assert int(fields["messages"]) >= 8, line
