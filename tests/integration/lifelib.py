"""lifelib — helpers of the lifecycle, log-cap, pty and process-tree tests
(PROTOCOL.md "get, list, wait", "logs", "The log, its caps, and flow
control", "Timeouts and process trees", "resize").

  LogStream   verifies the event stream of a `logs` request (or of an exec
              read from a position other than 0): the reply first, then
              `output` events whose `pos` continues without holes except
              where a `gap` names exactly what is missing, per-stream
              `offset`s consistent with `pos` (pos == stdout offset + stderr
              offset at every chunk), then `exit` (or `end`) last, with
              totals matching the positions reached.
  read_logs() one `logs` request collected to its end.
  Log         a combined log as a list of (stream, bytes) runs, to compare
              two readers byte for byte including the interleaving.
  gen_argv()  a deterministic generator of interleaved stdout/stderr with
              binary bytes; expected_gen() is what it writes.
  sleep_marker() / procs_with_arg()
              unique `sleep` arguments to find escaped processes in /proc.
  rss_limit(), io_wchar(), caps()

Only the standard library, python3-msgpack and agentlib are used.
"""

import os
import random
import sys
import time

from agentlib import (ASAN, MiB, T, AgentError, ProtocolViolation, Timeout, _short, all_procs,
                      kill_quietly)

PY = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else (sys.executable or "python3")

STREAMS = ("stdout", "stderr")
OTHER = {"stdout": "stderr", "stderr": "stdout"}


def caps(client):
    return set((client.hello or {}).get("capabilities") or ())


def rss_limit(baseline, plain=64 * MiB):
    """`plain` (64 MiB); with AddressSanitizer (shadow memory, allocator,
    quarantine) that much above the agent's start-up RSS."""
    return baseline + plain if ASAN else plain


def io_wchar(pid):
    """Bytes a process has written so far (/proc/<pid>/io), or None."""
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------
# combined logs

class Log:
    """A combined log: runs of (stream, bytes), adjacent runs of one stream
    merged, so that two readers that chunked differently compare equal."""

    def __init__(self):
        self.runs = []
        self.n = {"stdout": 0, "stderr": 0}

    def add(self, stream, data):
        if not data:
            return
        if self.runs and self.runs[-1][0] == stream:
            self.runs[-1][1].extend(data)
        else:
            self.runs.append((stream, bytearray(data)))
        self.n[stream] += len(data)

    def stream(self, name):
        return b"".join(bytes(d) for s, d in self.runs if s == name)

    @property
    def total(self):
        return self.n["stdout"] + self.n["stderr"]

    def key(self):
        return [(s, bytes(d)) for s, d in self.runs]

    def suffix(self, pos):
        """(Log of the bytes from combined position pos, stdout offset at
        pos, stderr offset at pos)."""
        out = Log()
        at = 0
        off = {"stdout": 0, "stderr": 0}
        for s, d in self.runs:
            if at + len(d) <= pos:
                off[s] += len(d)
            elif at >= pos:
                out.add(s, d)
            else:
                k = pos - at
                off[s] += k
                out.add(s, d[k:])
            at += len(d)
        return out, off["stdout"], off["stderr"]

    def __eq__(self, other):
        return isinstance(other, Log) and self.key() == other.key()

    def __repr__(self):
        return "Log(%d runs, stdout %d, stderr %d)" % (len(self.runs), self.n["stdout"], self.n["stderr"])


# --------------------------------------------------------------------------
# the logs stream verifier

class LogStream:
    """Verifies and collects the events of one `logs` request id (or of an
    exec stream, with exec=True: then the reply is the exec `ok`, the start
    is position 0 and no `end` may come).

    Rules checked (PROTOCOL.md "logs", "The log, its caps"):
    - the first message for the id is `ok` (with cmd, log_start <= log_end)
      or `error`;
    - `output`: cmd, stream, bin data; `pos` equals the position reached
      (the start, or the `to` of the last gap); at every chunk pos ==
      stdout offset + stderr offset, where the offset of each stream
      continues exactly from what was received unless a gap came in
      between (then it may only move forward);
    - `gap`: `from` equals the position reached, `to` > `from`; a gap for a
      reader starting at `from` may only come first or after output;
    - `exit` last, once: stdout_bytes + stderr_bytes equals the position
      reached, each stream's total at least what was received (equal when
      no gap came after that stream's last chunk);
    - `end` last (not for exec): `pos` equals the position reached.
    """

    def __init__(self, rid, start=0, exec_=False, keep=True, sink=None, what=""):
        self.rid = rid
        self.start = start              # the `from` asked for
        self.exec_ = exec_
        self.keep = keep
        self.sink = sink                # callable(stream, offset, pos, data)
        self.what = what
        self.reply = None
        self.cmd = None
        self.pos = None                 # position reached (None: not known yet)
        self.off = {"stdout": None, "stderr": None}
        self.exact = False              # offsets known exactly (no gap since)
        self.first_pos = None           # pos of the first output
        self.first_off = None           # (stdout offset, stderr offset) at the first output
        self.gaps = []
        self.log = Log()
        self.received = 0
        self.exit = None
        self.end = None
        self.events = 0
        self.outputs = 0

    @property
    def done(self):
        return self.exit is not None or self.end is not None or \
            (self.reply is not None and self.reply.get("type") == "error")

    def _bad(self, why, msg):
        raise ProtocolViolation("%s id %r: %s: %r" % (self.what or ("exec" if self.exec_ else "logs"),
                                                     self.rid, why, _short(msg)))

    def feed(self, msg):
        t = msg.get("type")
        if self.reply is None:
            if t not in ("ok", "error"):
                self._bad("first message for the request is not its reply", msg)
            self.reply = msg
            if t == "ok":
                self.cmd = msg.get("cmd")
                if not isinstance(self.cmd, int):
                    self._bad("ok without an integer cmd", msg)
                if self.exec_:
                    self.pos = 0
                    self.off = {"stdout": 0, "stderr": 0}
                    self.exact = True
                else:
                    ls, le = msg.get("log_start"), msg.get("log_end")
                    if not isinstance(ls, int) or not isinstance(le, int) or ls > le:
                        self._bad("logs ok without log_start <= log_end", msg)
                    if self.start == 0:
                        self.pos = 0
                        self.off = {"stdout": 0, "stderr": 0}
                        self.exact = True
            return
        if self.done:
            self._bad("message after the end of the stream", msg)
        self.events += 1
        if msg.get("cmd") != self.cmd:
            self._bad("event for another cmd (expected %r)" % self.cmd, msg)
        if t == "output":
            s = msg.get("stream")
            if s not in STREAMS:
                self._bad("bad stream name", msg)
            data = msg.get("data")
            if not isinstance(data, bytes):
                self._bad("output data is not bin", msg)
            pos, off = msg.get("pos"), msg.get("offset")
            if not isinstance(pos, int) or not isinstance(off, int):
                self._bad("output without integer pos/offset", msg)
            if self.pos is not None and pos != self.pos:
                self._bad("pos %r but the position reached is %r (a hole without a gap event, "
                          "or an overlap)" % (pos, self.pos), msg)
            if self.pos is None and pos < self.start:
                self._bad("first output at pos %r before the requested from %r" % (pos, self.start), msg)
            other = pos - off
            if other < 0:
                self._bad("offset %r beyond pos %r" % (off, pos), msg)
            if self.exact:
                if off != self.off[s] or other != self.off[OTHER[s]]:
                    self._bad("offsets %s=%r, %s=%r (pos - offset) but %r/%r were received: hole or overlap"
                              % (s, off, OTHER[s], other, self.off[s], self.off[OTHER[s]]), msg)
            elif self.off[s] is not None:
                if off < self.off[s] or other < self.off[OTHER[s]]:
                    self._bad("offset went backwards after a gap (%s %r < %r or %s %r < %r)"
                              % (s, off, self.off[s], OTHER[s], other, self.off[OTHER[s]]), msg)
            if self.first_pos is None:
                self.first_pos = pos
                self.first_off = {s: off, OTHER[s]: other}
            self.off[s] = off + len(data)
            self.off[OTHER[s]] = other
            self.pos = pos + len(data)
            self.exact = True
            self.received += len(data)
            self.outputs += 1
            if self.sink is not None:
                self.sink(s, off, pos, data)
            if self.keep:
                self.log.add(s, data)
        elif t == "gap":
            a, b = msg.get("from"), msg.get("to")
            if not isinstance(a, int) or not isinstance(b, int) or a >= b:
                self._bad("gap without from < to", msg)
            if self.pos is not None and a != self.pos:
                self._bad("gap from %r but the position reached is %r" % (a, self.pos), msg)
            if self.pos is None and a < self.start:
                self._bad("gap from %r before the requested from %r" % (a, self.start), msg)
            self.gaps.append((a, b))
            self.pos = b
            self.exact = False
        elif t == "exit":
            for k in ("code", "signal", "duration_ms", "timed_out", "stdout_bytes", "stderr_bytes"):
                if k not in msg:
                    self._bad("exit without %r" % k, msg)
            so, se = msg["stdout_bytes"], msg["stderr_bytes"]
            if self.pos is not None and so + se != self.pos:
                self._bad("exit totals %d+%d but the position reached is %r: bytes missing before "
                          "the exit" % (so, se, self.pos), msg)
            for s, tot in (("stdout", so), ("stderr", se)):
                if self.off[s] is None:
                    continue
                if self.exact and tot != self.off[s]:
                    self._bad("exit %s_bytes %d but the stream reached offset %d" % (s, tot, self.off[s]), msg)
                if tot < self.off[s]:
                    self._bad("exit %s_bytes %d below offset reached %d" % (s, tot, self.off[s]), msg)
            self.exit = msg
        elif t == "end":
            if self.exec_:
                self._bad("`end` in an exec stream", msg)
            if not isinstance(msg.get("pos"), int):
                self._bad("end without pos", msg)
            if self.pos is not None and msg["pos"] != self.pos:
                self._bad("end pos %r but the position reached is %r" % (msg["pos"], self.pos), msg)
            self.end = msg
        else:
            self._bad("unexpected event type", msg)

    def stdout(self):
        return self.log.stream("stdout")

    def stderr(self):
        return self.log.stream("stderr")


def collect(client, st, timeout=None, stall=None):
    """Feed st from client until it is done; st."""
    deadline = time.monotonic() + (T(60) if timeout is None else timeout)
    stall = client.timeout if stall is None else stall
    while not st.done:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("%s id %r not finished in time (pos %r, %d bytes, exit %r, end %r)"
                          % (st.what or "stream", st.rid, st.pos, st.received, st.exit, st.end))
        st.feed(client.recv_id(st.rid, min(left, stall)))
    return st


def logs_start(client, cmd, from_=None, follow=None, what="logs", **kw):
    """Send `logs`; a LogStream fed with the reply (events not yet read)."""
    rid = client.next_id()
    msg = {"type": "logs", "id": rid, "cmd": cmd}
    if from_ is not None:
        msg["from"] = from_
    if follow is not None:
        msg["follow"] = follow
    client.send(msg)
    st = LogStream(rid, start=from_ or 0, what=what, **kw)
    st.feed(client.recv_id(rid))
    return st


def read_logs(client, cmd, from_=None, follow=None, timeout=None, **kw):
    """One `logs` request collected to its end (AgentError on an error reply)."""
    st = logs_start(client, cmd, from_, follow, **kw)
    if st.reply["type"] != "ok":
        raise AgentError(st.reply, "logs cmd %r" % cmd)
    return collect(client, st, timeout)


def exec_stream(client, argv, timeout=None, **fields):
    """An attached exec collected as a LogStream (so gaps would be caught)."""
    rid = client.next_id()
    msg = {"type": "exec", "id": rid, "argv": list(argv)}
    msg.update(fields)
    client.send(msg)
    st = LogStream(rid, exec_=True, what="exec %r" % (argv,))
    st.feed(client.recv_id(rid))
    if st.reply["type"] != "ok":
        raise AgentError(st.reply, "exec %r" % (argv,))
    return collect(client, st, timeout)


def wait_cmd(client, cmd, timeout=None):
    return client.ok("wait", cmd=cmd, timeout=T(60) if timeout is None else timeout)


# --------------------------------------------------------------------------
# deterministic generators

GEN_SRC = r"""
import os, random, sys, time
n, seed, binsize, flag = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
half = int(sys.argv[5]) if len(sys.argv) > 5 else -1
r = random.Random(seed)
def w(fd, b):
    while b:
        k = os.write(fd, b); b = b[k:]
for i in range(n):
    if i == half and flag != "-":
        while not os.path.exists(flag):
            time.sleep(0.02)
    w(1, b"out %d\n" % i)
    if i % 3 == 0:
        w(2, b"err %d\n" % i)
    if i % 50 == 7:
        w(1, r.randbytes(binsize))
    if i % 70 == 11:
        w(2, bytes(range(256)))
w(1, b"\x00\xff\xfe\x80 done\n")
w(2, b"\xc3\x28 done\n")
"""


def gen_argv(n=2000, seed=1, binsize=3000, flag="-", half=-1):
    """argv of a generator writing n numbered lines to stdout, every third
    also to stderr, random binary blocks to stdout and all 256 byte values
    to stderr now and then, then invalid-UTF-8 trailers. With flag, it waits
    at line `half` until the file flag exists."""
    return [PY, "-c", GEN_SRC, str(n), str(seed), str(binsize), flag, str(half)]


def expected_gen(n=2000, seed=1, binsize=3000):
    """(stdout, stderr) that gen_argv(n, seed, binsize) writes."""
    r = random.Random(seed)
    out, err = [], []
    for i in range(n):
        out.append(b"out %d\n" % i)
        if i % 3 == 0:
            err.append(b"err %d\n" % i)
        if i % 50 == 7:
            out.append(r.randbytes(binsize))
        if i % 70 == 11:
            err.append(bytes(range(256)))
    out.append(b"\x00\xff\xfe\x80 done\n")
    err.append(b"\xc3\x28 done\n")
    return b"".join(out), b"".join(err)


# 63 bytes: a period that divides no power-of-two chunk size
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n"[:62] + b"\n"
assert len(PATTERN) == 63


def pattern_argv(nbytes, pattern=PATTERN):
    """`yes <line> | head -c nbytes` as argv: byte k of its stdout is
    pattern[k % len(pattern)]."""
    line = pattern[:-1].decode()
    return ["sh", "-c", 'yes "$1" | head -c "$2"', "sh", line, str(nbytes)]


def pattern_at(offset, n, pattern=PATTERN):
    """The n bytes of pattern_argv's output from offset."""
    p = len(pattern)
    reps = (offset % p + n) // p + 2
    s = offset % p
    return (pattern * reps)[s:s + n]


# --------------------------------------------------------------------------
# processes

def sleep_marker():
    """A unique argument for `sleep` (about 1000 s), to find that very
    process in /proc later."""
    return "1000.%06d" % random.randrange(10 ** 6)


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def procs_with_arg(arg):
    """Live processes (not zombies) with arg inside one of their argv
    elements (`sh -c "sleep <marker>"` counts)."""
    arg = arg.encode() if isinstance(arg, str) else arg
    me = os.getpid()
    out = []
    for p in all_procs():
        if p["state"] in ("Z", "X") or p["pid"] == me:
            continue
        cl = proc_cmdline(p["pid"])
        if cl and any(arg in el for el in cl):
            out.append(p)
    return out


def kill_procs_with_arg(arg):
    for p in procs_with_arg(arg):
        kill_quietly(p["pid"], 9, p["starttime"])


def bytes_diff(got, want):
    """None when equal; else a short description of the first difference
    (assertEqual on megabytes would print megabytes)."""
    if got == want:
        return None
    n = min(len(got), len(want))
    i = next((k for k in range(n) if got[k] != want[k]), n)
    return "lengths %d (got) vs %d (expected); first difference at byte %d: got %r, expected %r" % (
        len(got), len(want), i, bytes(got[max(0, i - 16):i + 32]), bytes(want[max(0, i - 16):i + 32]))


def assert_bytes(tc, got, want, what="bytes"):
    d = bytes_diff(got, want)
    if d:
        tc.fail("%s differ: %s" % (what, d))
