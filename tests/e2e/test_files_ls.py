"""`tcpkit ls --json`: every row carries the path on the server, so the rows
of several PATHs stay apart; a PATH that is a file is shown alone under its
own path (docs/files.md, "tcpkit ls")."""

import json

from conftest import run_tcpkit
from files_helpers import file_server  # noqa: F401 (fixture)


def test_json_rows_carry_their_path_on_the_server(file_server, tmp_path):  # noqa: F811
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "inner.txt").write_bytes(b"inner")
    (root / "top.txt").write_bytes(b"top!")
    srv = file_server(root)
    cp = run_tcpkit(["ls", srv.target, "sub", "top.txt", "", "--json"], timeout=30)
    assert cp.returncode == 0, cp.stderr
    rows = [json.loads(line) for line in cp.stdout.decode().splitlines()]
    paths = [(r["name"], r["path"], r["kind"], r["size"]) for r in rows]
    assert paths == [
        ("inner.txt", "sub/inner.txt", "file", 5),
        ("top.txt", "top.txt", "file", 4),
        ("sub", "sub", "dir", 0),
        ("top.txt", "top.txt", "file", 4),
    ], paths
