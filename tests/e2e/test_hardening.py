"""The tcpkit binary is built hardened (Makefile, HARDEN_*).

Black-box: readelf (binutils) reads the ELF headers, program headers, dynamic
section and dynamic symbols of $TCPKIT_BIN. Each assertion fails on a binary
built without the corresponding flag (checked on a build with
-fno-stack-protector -fno-pie -no-pie -U_FORTIFY_SOURCE -z norelro -z lazy
-z execstack, where every one of them failed).
"""

import re
import shutil
import subprocess

import pytest

from conftest import require_binary


def readelf(*args):
    exe = shutil.which("readelf")
    if exe is None:
        pytest.fail("readelf not found (scripts/deps.sh test installs binutils)")
    cp = subprocess.run([exe, "-W", *args, require_binary()], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=60, check=False)
    assert cp.returncode == 0, cp.stderr.decode("utf-8", "replace")
    return cp.stdout.decode("utf-8", "replace")


def segments():
    """Program header types mapped to their flags ("R", "RW", "R E"...)."""
    out = {}
    for line in readelf("--program-headers").splitlines():
        f = line.split()
        if f and f[0].isupper() and len(f) >= 8 and f[1].startswith("0x"):
            # Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg... Align
            out.setdefault(f[0], " ".join(f[6:-1]))
    return out


def dynamic_symbols():
    names = set()
    for line in readelf("--dyn-syms").splitlines():
        f = line.split()
        if len(f) >= 8 and f[0].rstrip(":").isdigit():
            names.add(f[7].split("@")[0])
    return names


def test_position_independent_executable():
    # -fPIE -pie: the kernel can load it at a random address (ASLR).
    m = re.search(r"^\s*Type:\s+(\S+)", readelf("--file-header"), re.M)
    assert m and m.group(1) == "DYN", m and m.group(0)


def test_relro_segment():
    # -z relro: the relocated data (GOT, .init_array...) is made read-only
    # after start-up.
    assert "GNU_RELRO" in segments()


def test_bind_now():
    # -z now: every symbol is resolved at start-up, so the whole GOT can be
    # read-only (full RELRO), not only the part before .got.plt.
    dyn = readelf("--dynamic")
    flags = re.findall(r"\((FLAGS|FLAGS_1)\)\s+(.*)$", dyn, re.M)
    assert any(("BIND_NOW" in v) if k == "FLAGS" else re.search(r"\bNOW\b", v)
               for k, v in flags), flags


def test_stack_protector():
    # -fstack-protector-strong: functions with arrays or address-taken locals
    # check a canary before returning and call __stack_chk_fail if it changed.
    assert "__stack_chk_fail" in dynamic_symbols()


def test_fortified_calls():
    # -D_FORTIFY_SOURCE: calls whose destination size the compiler knows go to
    # the checking variants (__memcpy_chk, __snprintf_chk...).
    chk = sorted(s for s in dynamic_symbols() if re.fullmatch(r"__\w+_chk", s)
                 and s != "__stack_chk_fail")
    assert chk, "no fortified (_chk) function referenced"


def test_stack_not_executable():
    # -z noexecstack: the GNU_STACK segment asks for a stack without execute
    # permission (without the segment the kernel may make it executable).
    seg = segments()
    assert "GNU_STACK" in seg
    assert "E" not in seg["GNU_STACK"], seg["GNU_STACK"]
