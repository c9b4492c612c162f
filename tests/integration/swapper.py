"""The attacker of the create-then-act race tests (test_hardening.py), run as
an unprivileged user. Bounded in time: it exits after SECONDS whatever happens.

  swapper.py watch DIR TARGET SECONDS
      inotify on DIR: every name created there (by anyone but us) is
      exchanged at once with a fresh symlink to TARGET (renameat2
      RENAME_EXCHANGE), so whoever created the name and then acts on it by
      name acts on TARGET.
  swapper.py flip DIR A B SECONDS
      exchange DIR/A and DIR/B (RENAME_EXCHANGE) in a tight loop.

Prints "ready" once armed, and at the end "swaps N"."""

import ctypes
import os
import select
import struct
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_EXCHANGE = 2
IN_CREATE = 0x100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
SYS_renameat2 = 316        # x86-64; also through glibc's renameat2 when present


def exchange(a, b):
    ab, bb = a.encode(), b.encode()
    if hasattr(libc, "renameat2"):
        return libc.renameat2(AT_FDCWD, ab, AT_FDCWD, bb, RENAME_EXCHANGE)
    return libc.syscall(SYS_renameat2, AT_FDCWD, ab, AT_FDCWD, bb, RENAME_EXCHANGE)


def watch(d, target, seconds):
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0 or libc.inotify_add_watch(fd, d.encode(), IN_CREATE) < 0:
        sys.exit("inotify: errno %d" % ctypes.get_errno())
    seq = 0
    swaps = 0

    def fresh_link():
        nonlocal seq
        seq += 1
        p = os.path.join(d, ".swl%d" % seq)
        os.symlink(target, p)
        return p

    link = fresh_link()
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        try:
            buf = os.read(fd, 65536)
        except BlockingIOError:
            continue
        off = 0
        while off + 16 <= len(buf):
            _wd, _mask, _cookie, ln = struct.unpack_from("iIII", buf, off)
            name = buf[off + 16:off + 16 + ln].rstrip(b"\0").decode(errors="surrogateescape")
            off += 16 + ln
            if not name or name.startswith(".swl"):
                continue
            if exchange(os.path.join(d, name), link) == 0:
                swaps += 1
                link = fresh_link()
    print("swaps", swaps, flush=True)


def flip(d, a, b, seconds):
    pa, pb = os.path.join(d, a), os.path.join(d, b)
    swaps = 0
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(1000):
            if exchange(pa, pb) == 0:
                swaps += 1
    print("swaps", swaps, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "watch":
        watch(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif sys.argv[1] == "flip":
        flip(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        sys.exit("usage: swapper.py watch DIR TARGET SECONDS | flip DIR A B SECONDS")
