"""Command lines of the file commands: bad values are usage errors (exit 2)
before anything starts, option combinations the protocol cannot do are
refused, and a refused connection is exit status 3."""

import pytest

from conftest import free_port
from files_helpers import tk


@pytest.mark.parametrize("args", [
    ["--chunk-size", "1000"],
    ["--chunk-size", "9M"],
    ["--zstd-level", "20"],
    ["--max-streams", "0"],
    ["--no-such-option"],
])
def test_file_server_bad_option_is_a_usage_error(tmp_path, args):
    cp = tk(["file-server", "--listen", "127.0.0.1:0", "--root", tmp_path] + args, timeout=20)
    assert cp.returncode == 2, (args, cp.returncode, cp.stderr)
    assert b"tcpkit file-server" in cp.stderr and b"--help" in cp.stderr, cp.stderr
    assert cp.stdout == b"", "it started anyway"


def test_file_server_missing_root_fails(tmp_path):
    cp = tk(["file-server", "--listen", "127.0.0.1:0", "--root", tmp_path / "nope"], timeout=20)
    assert cp.returncode == 1, cp.stderr
    assert b"nope" in cp.stderr
    assert b"listening on" not in cp.stdout


@pytest.mark.parametrize("args,why", [
    (["get", "127.0.0.1:9", "a", "-o", "-", "--continue"], b"stdout"),
    (["get", "127.0.0.1:9", "a", "--protocol", "1", "-z"], b"version 2"),
    (["get", "127.0.0.1:9", "a", "--protocol", "1", "--continue"], b"version 2"),
    (["get", "127.0.0.1:9", "a", "--protocol", "3"], b"protocol"),
    (["get", "127.0.0.1:9"], b"NAME"),
    (["put", "127.0.0.1:9", "/dev/null", "--protocol", "1"], b"version 2"),
    (["ls"], b"HOST:PORT"),
])
def test_client_option_combinations_that_cannot_work_are_usage_errors(args, why):
    cp = tk(args, timeout=20)
    assert cp.returncode == 2, (args, cp.returncode, cp.stderr)
    assert why in cp.stderr, cp.stderr


def test_get_several_names_need_an_existing_directory(tmp_path):
    cp = tk(["get", "127.0.0.1:9", "a", "b", "-o", tmp_path / "not_a_dir"], timeout=20)
    assert cp.returncode == 2, cp.stderr


@pytest.mark.parametrize("cmd", [["get", "a.txt"], ["ls"], ["put", "/dev/null"]])
def test_connection_refused_is_exit_status_3(tmp_path, cmd):
    target = f"127.0.0.1:{free_port()}"
    args = [cmd[0], target] + cmd[1:]
    if cmd[0] == "get":
        args += ["-o", tmp_path]
    cp = tk(args, timeout=30)
    assert cp.returncode == 3, (args, cp.returncode, cp.stderr)
    assert b"refused" in cp.stderr.lower(), cp.stderr
