#!/usr/bin/env python3
"""Writes docs/BENCHMARKS.md from what bench/run.sh left in bench/out/.

Usage: bench/report.py OUTDIR REPORT.md

Reads OUTDIR/results.json (the settings of the run), OUTDIR/tables.txt (the
tables run.sh printed: medians, spreads and ratios against each peer) and
any OUTDIR/*.svg plots (copied next to the report, under benchmarks/). Adds
the machine and the versions of the peers (and of OpenSSL and curl, which the
TLS downloads use), so a figure can be read with the hardware and software
that produced it. Standard library only.
"""

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys


def first_line(cmd):
    """The first line a command prints (stdout or stderr), or None."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout or "") + (p.stderr or "")
    return text.strip().splitlines()[0] if text.strip() else None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1024 * 1024)
    except OSError:
        pass
    return 0.0


def os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out, report = sys.argv[1], sys.argv[2]
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(out, "tables.txt")) as f:
        tables = f.read().strip("\n")

    sections = os.environ.get("BENCH_SECTIONS", "echo chat files balance scan")
    env = " ".join(f"{k}={os.environ[k]}" for k in ("BENCH_SECTIONS", "BENCH_SECONDS",
                                                    "BENCH_ROUNDS", "BENCH_IDLE_CONNS")
                   if k in os.environ)
    peers = [
        ("HAProxy", ["haproxy", "-v"]),
        ("nginx", ["nginx", "-v"]),
        ("Redis", ["redis-server", "--version"]),
        ("iperf3", ["iperf3", "--version"]),
        ("Go", ["go", "version"]),
        ("nmap", ["nmap", "--version"]),
        ("OpenSSL", ["openssl", "version"]),
        ("curl", ["curl", "--version"]),
    ]
    # Kernel TLS decides how the TLS downloads are encrypted: by the kernel
    # (files sent with sendfile()) or by OpenSSL in the server.
    ktls = {
        "yes": "yes (the `tls` module is there)",
        "no": "no (no `tls` module: TLS records are encrypted in user space)",
        "unknown": "unknown",
    }.get(results.get("files", {}).get("tls", {}).get("kernel_tls", ""))

    plots = sorted(p for p in os.listdir(out) if p.endswith(".svg"))
    plot_dir = os.path.join(os.path.dirname(report), "benchmarks")
    if plots:
        os.makedirs(plot_dir, exist_ok=True)
        for p in plots:
            shutil.copyfile(os.path.join(out, p), os.path.join(plot_dir, p))

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {now}; run it again to refresh this page (do not edit it",
        "by hand). How each scenario is run, what every column means and what bounds each",
        "figure: [bench/README.md](../bench/README.md).",
        "",
        "## Machine",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs",
        f"- memory: {mem_gib():.1f} GiB",
        f"- system: {os_name()}, Linux {platform.release()}",
    ]
    if ktls:
        lines.append(f"- kernel TLS: {ktls}")
    for name, cmd in peers:
        v = first_line(cmd)
        if v and name == "curl":
            v = " ".join(v.split()[:5])  # up to its TLS library, not every one it links
        if v:
            lines.append(f"- {name}: {v}")
    lines += [
        "",
        "## Run",
        "",
        "```",
        f"{env + ' ' if env else ''}make bench",
        "```",
        "",
        f"Sections: {sections}. Each load run lasts {results.get('seconds')} s; every scenario",
        f"runs in {results.get('rounds')} round(s). Within a round tcpkit and its peers run",
        "back to back (the order rotates from round to round), so a ratio compares runs made",
        "minutes apart at most; the tables give the median over the rounds and the spread",
        "((max - min) / median). On a shared machine the spread is the first column to read.",
        "",
        "## Results",
        "",
        "```",
        tables,
        "```",
    ]
    if plots:
        lines += ["", "## Plots", ""]
        for p in plots:
            lines += [f"![{p[:-4]}](benchmarks/{p})", ""]
    with open(report, "w") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
