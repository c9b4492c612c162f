"""agentlib — harness of the sandbox-agent integration tests.

Starts the real agent (the binary named by $SA_AGENT) on a temporary Unix
socket and talks protocol v1 (protocol/PROTOCOL.md) to it the way a host
controller would:

  Agent       one agent process in a fresh temp dir: `--listen unix:<tmp>/agent.sock
              --workdir <tmp>/work` (+ `--dev` unless told otherwise, + extra args);
              stderr captured to <tmp>/agent.stderr; /proc helpers (RSS, fds,
              children, zombies); stop() = SIGTERM, SIGKILL after 5 s, then
              kill whatever its commands left behind and remove the temp dir.
  Client      one connection: frames out (dict -> msgpack map), frames in (with
              timeouts), replies matched by id, exec streams verified
              (offsets contiguous, exit last and consistent), stdin pushed
              within the agent's window, raw bytes for the garbage tests.
  AgentTestCase
              a unittest.TestCase with one agent per class (`agent_args`,
              `agent_dev`), a fresh client per test, and checks that the agent
              did not die, did not report a sanitizer error and left no zombies.

Everything is bounded in time: every wait has a deadline; nothing here can
hang forever. Time limits are multiplied by $SA_TIME_SCALE (default 1, or 3
when the agent is built with AddressSanitizer).

Only Debian's python3 and python3-msgpack are needed.
"""

import errno
import os
import pwd
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import msgpack

# --------------------------------------------------------------------------
# configuration

AGENT_BIN = os.environ.get("SA_AGENT", "")
CTL_BIN = os.environ.get("SA_CTL", "")

MiB = 1 << 20


def _binary_has_asan(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return b"__asan_init" in data or b"AddressSanitizer" in data
    except OSError:
        return False


ASAN = bool(AGENT_BIN) and _binary_has_asan(AGENT_BIN)
TIME_SCALE = float(os.environ.get("SA_TIME_SCALE") or (3.0 if ASAN else 1.0))


def T(seconds):
    """A time limit, stretched for slow (sanitizer) builds."""
    return seconds * TIME_SCALE


DEFAULT_TIMEOUT = T(30)
SANITIZER_MARKERS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer",
                     b"runtime error:", b"SUMMARY: UndefinedBehaviorSanitizer")


class ProtocolViolation(AssertionError):
    """The agent broke PROTOCOL.md (reported as a test failure)."""


class AgentError(AssertionError):
    """An `error` reply where the test expected `ok`."""

    def __init__(self, reply, what=""):
        self.reply = reply
        self.code = reply.get("code")
        super().__init__("%sagent replied error %r: %r" % (what and what + ": ", self.code, reply))


class Timeout(AssertionError):
    pass


# --------------------------------------------------------------------------
# /proc helpers

def proc_stat(pid):
    """state, ppid, pgrp, sid, starttime, comm of a process, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            s = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    lp, rp = s.index("("), s.rindex(")")
    comm = s[lp + 1:rp]
    f = s[rp + 2:].split()
    return {"pid": pid, "comm": comm, "state": f[0], "ppid": int(f[1]), "pgrp": int(f[2]),
            "sid": int(f[3]), "starttime": int(f[19])}


def all_procs():
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st:
                out.append(st)
    return out


def procs_in_group(pgid, include_zombies=False):
    """Live processes whose process group is pgid."""
    return [p for p in all_procs() if p["pgrp"] == pgid
            and (include_zombies or p["state"] not in ("Z", "X"))]


def procs_in_session(sid):
    return [p for p in all_procs() if p["sid"] == sid and p["state"] not in ("Z", "X")]


def is_running(pid):
    """True while pid exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st["state"] not in ("Z", "X")


def proc_environ(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a true value; that value, or Timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise Timeout("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def kill_quietly(pid, sig=signal.SIGKILL, starttime=None):
    """Kill pid if it is still the process we knew (same start time)."""
    st = proc_stat(pid)
    if st is None or (starttime is not None and st["starttime"] != starttime):
        return
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def kill_sessions(sids):
    """SIGKILL every process left in the sessions (or process groups) led by
    these command pids (cleanup).

    pid_max may be small (32768), and other test modules run alongside, so
    the numbers can be reused: a pid, and so a session id, is free for
    reuse once no process uses it any more. So a session is only ours while
    its leader pid is either gone (then any members are the original's: a
    session cannot outlive the allocation of its id) or still the very
    process the agent reported (same start time, recorded when the exec
    reply was read). Pids never recorded are trusted as the caller's."""
    sids = set(sids)
    if not sids:
        return
    with _SPAWNED_LOCK:
        known = dict(_SPAWNED)
    ours = set()
    for sid in sids:
        st = proc_stat(sid)
        if st is None:
            ours.add(sid)                       # leader gone: members are the original's
        elif sid not in known:
            ours.add(sid)                       # not recorded: the caller vouches for it
        elif known[sid] is not None and st["starttime"] == known[sid]:
            ours.add(sid)                       # still the very process the agent reported
    if not ours:
        return
    for p in all_procs():
        if (p["sid"] in ours or p["pgrp"] in ours) and p["state"] not in ("Z", "X") \
                and p["pid"] != os.getpid():
            kill_quietly(p["pid"], signal.SIGKILL, p["starttime"])


# Every command pid the agent reported (exec reply `pid`) -> that process's
# start time as seen right then (None if it was already gone). Agent.stop()
# kills what is left of these sessions, so that no test leaks `sleep 1000`
# orphans whatever the agent does.
_SPAWNED = {}
_SPAWNED_LOCK = threading.Lock()


def _note_spawned(pid):
    if isinstance(pid, int) and pid > 1:
        st = proc_stat(pid)
        with _SPAWNED_LOCK:
            _SPAWNED[pid] = st["starttime"] if st else None


# --------------------------------------------------------------------------
# frames

def pack(msg):
    """One frame: 4-byte big-endian length + a msgpack map (bytes -> bin)."""
    payload = msgpack.packb(msg, use_bin_type=True)
    return len(payload).to_bytes(4, "big") + payload


def raw_frame(payload):
    return len(payload).to_bytes(4, "big") + payload


def unpack_payload(payload):
    return msgpack.unpackb(payload, raw=False, strict_map_key=False,
                           unicode_errors="surrogateescape")


class ExecStream:
    """Verifies the event stream of one exec request and collects it:
    - the first message for the id is the reply (`ok` or `error`);
    - every `output` names the command, a stream, an `offset` equal to the
      bytes received so far on that stream, a `pos` equal to the bytes
      received so far on both (no holes: no gaps for a reader that keeps up),
      and `data` as bin;
    - `exit` comes last, once, with stdout_bytes/stderr_bytes equal to what
      was received (so every output byte arrived before it)."""

    def __init__(self, rid, argv=None, sink=None):
        self.rid = rid
        self.argv = argv
        self.sink = sink               # callable(stream, bytes) or None: keep in memory
        self.reply = None
        self.cmd = None
        self.chunks = {"stdout": [], "stderr": []}
        self.nbytes = {"stdout": 0, "stderr": 0}
        self.pos = 0
        self.exit = None
        self.events = 0

    @property
    def done(self):
        return self.exit is not None or (self.reply is not None and self.reply.get("type") == "error")

    def _bad(self, why, msg):
        raise ProtocolViolation("exec id %r %r: %s: %r" % (self.rid, self.argv, why, _short(msg)))

    def feed(self, msg):
        t = msg.get("type")
        if self.reply is None:
            if t not in ("ok", "error"):
                self._bad("first message for the request is not its reply", msg)
            self.reply = msg
            if t == "ok":
                self.cmd = msg.get("cmd")
                if not isinstance(self.cmd, int):
                    self._bad("exec ok without an integer cmd", msg)
                _note_spawned(msg.get("pid"))
            return
        if self.done:
            self._bad("message after the end of the stream", msg)
        self.events += 1
        if msg.get("cmd") != self.cmd:
            self._bad("event for another cmd (expected %r)" % self.cmd, msg)
        if t == "output":
            s = msg.get("stream")
            if s not in self.nbytes:
                self._bad("bad stream name", msg)
            data = msg.get("data")
            if not isinstance(data, bytes):
                self._bad("output data is not bin", msg)
            if msg.get("offset") != self.nbytes[s]:
                self._bad("%s offset %r but %d bytes received so far (hole or overlap)"
                          % (s, msg.get("offset"), self.nbytes[s]), msg)
            if msg.get("pos") != self.pos:
                self._bad("pos %r but %d bytes received on both streams"
                          % (msg.get("pos"), self.pos), msg)
            self.nbytes[s] += len(data)
            self.pos += len(data)
            if self.sink is not None:
                self.sink(s, data)
            else:
                self.chunks[s].append(data)
        elif t == "exit":
            for k in ("code", "signal", "duration_ms", "timed_out", "stdout_bytes", "stderr_bytes"):
                if k not in msg:
                    self._bad("exit without %r" % k, msg)
            if msg["stdout_bytes"] != self.nbytes["stdout"] or \
                    msg["stderr_bytes"] != self.nbytes["stderr"]:
                self._bad("exit totals differ from bytes received (stdout %d, stderr %d)"
                          % (self.nbytes["stdout"], self.nbytes["stderr"]), msg)
            self.exit = msg
        else:
            self._bad("unexpected event type in an exec stream", msg)

    @property
    def stdout(self):
        return b"".join(self.chunks["stdout"])

    @property
    def stderr(self):
        return b"".join(self.chunks["stderr"])


class Result:
    """What run() collected: stdout, stderr (bytes), exit (dict), reply (the
    exec `ok`), cmd (its id), stdin_replies (the replies to our stdin requests)."""

    def __init__(self, st, stdin_replies=()):
        self.stdout = st.stdout
        self.stderr = st.stderr
        self.exit = st.exit
        self.reply = st.reply
        self.cmd = st.cmd
        self.stream = st
        self.stdin_replies = list(stdin_replies)

    @property
    def code(self):
        return self.exit["code"]

    def __repr__(self):
        return "Result(code=%r, stdout=%r, stderr=%r)" % (
            self.exit and self.exit.get("code"), self.stdout[:200], self.stderr[:200])


def _short(msg, n=300):
    r = repr(msg)
    return r if len(r) <= n else r[:n] + "..."


# --------------------------------------------------------------------------
# the client

class Client:
    """One protocol connection. Not thread-safe: one thread per Client.

    Sending and receiving share one select loop, so a large send never
    deadlocks against an agent that is itself blocked writing to us: while
    our output is pending we keep reading (into memory)."""

    def __init__(self, path=None, timeout=None, read_hello=True, sock=None, max_frame=16 * MiB):
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self.max_frame = max_frame
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
        self.sock = sock
        self.sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)
        self.inbuf = bytearray()
        self.inpos = 0
        self.out = bytearray()
        self.eof = False
        self.pending = []              # decoded frames read but not yet consumed, arrival order
        self._next_id = 1
        self.hello = None
        if read_hello:
            h = self.recv()
            if h.get("type") != "hello":
                raise ProtocolViolation("first message is not a hello: %r" % _short(h))
            self.hello = h

    # ---- basics
    def next_id(self):
        i = self._next_id
        self._next_id += 1
        return i

    @property
    def stdin_window(self):
        return (self.hello or {}).get("stdin_window") or MiB

    @property
    def agent_max_frame(self):
        return (self.hello or {}).get("max_frame") or MiB

    def close(self):
        if self.sock is not None:
            try:
                self.sel.unregister(self.sock)
            except Exception:
                pass
            self.sel.close()
            self.sock.close()
            self.sock = None

    def abort(self):
        """Vanish abruptly (the agent may have unread data queued for us)."""
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # ---- the select loop
    def _frame_available(self):
        n = len(self.inbuf) - self.inpos
        if n < 4:
            return None
        ln = int.from_bytes(self.inbuf[self.inpos:self.inpos + 4], "big")
        if ln == 0 or ln > self.max_frame:
            raise ProtocolViolation("agent sent a frame length of %d" % ln)
        if n < 4 + ln:
            return None
        with memoryview(self.inbuf) as mv:
            payload = bytes(mv[self.inpos + 4:self.inpos + 4 + ln])
        self.inpos += 4 + ln
        if self.inpos > MiB or self.inpos == len(self.inbuf):
            del self.inbuf[:self.inpos]
            self.inpos = 0
        try:
            msg = unpack_payload(payload)
        except Exception as e:
            raise ProtocolViolation("agent sent undecodable msgpack (%s): %r" % (e, payload[:64]))
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise ProtocolViolation("agent sent a frame that is not a map with a type: %r" % _short(msg))
        return msg

    def _pump(self, deadline, until):
        """Write pending output and read input until until() is true."""
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("no progress from the agent within the deadline (out pending %d, "
                              "in buffered %d, eof %s)" % (len(self.out), len(self.inbuf) - self.inpos, self.eof))
            ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0)
            self.sel.modify(self.sock, ev)
            for _key, mask in self.sel.select(min(left, 1.0)):
                if mask & selectors.EVENT_WRITE and self.out:
                    try:
                        n = self.sock.send(self.out[:256 * 1024])
                        del self.out[:n]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        raise ConnectionError("agent closed the connection with %d bytes "
                                              "of ours unsent" % len(self.out))
                if mask & selectors.EVENT_READ and not self.eof:
                    try:
                        data = self.sock.recv(1 << 20)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        self.eof = True
                        if self.out:
                            raise ConnectionError("agent closed the connection with %d bytes "
                                                  "of ours unsent" % len(self.out))
                        return
                    self.inbuf += data
            if self.eof and not self.out:
                return

    def send_raw(self, data, timeout=None):
        self.out += data
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._pump(deadline, lambda: not self.out)
        if self.out:
            raise ConnectionError("connection closed while sending")

    def send(self, msg, timeout=None):
        self.send_raw(pack(msg), timeout)

    def recv(self, timeout=None):
        """The next message in arrival order."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if self.pending:
            return self.pending.pop(0)
        while True:
            m = self._frame_available()
            if m is not None:
                return m
            if self.eof:
                raise ConnectionError("agent closed the connection")
            self._pump(deadline, lambda: self.eof or self._frame_available_peek())

    def _frame_available_peek(self):
        n = len(self.inbuf) - self.inpos
        if n < 4:
            return False
        ln = int.from_bytes(self.inbuf[self.inpos:self.inpos + 4], "big")
        return n >= 4 + ln

    def recv_match(self, pred, timeout=None):
        """The first message satisfying pred; others stay queued in order."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for i, m in enumerate(self.pending):
            if pred(m):
                return self.pending.pop(i)
        while True:
            m = self._frame_available()
            if m is None:
                if self.eof:
                    raise ConnectionError("agent closed the connection")
                self._pump(deadline, lambda: self.eof or self._frame_available_peek())
                continue
            if pred(m):
                return m
            self.pending.append(m)

    def recv_id(self, rid, timeout=None):
        return self.recv_match(lambda m: m.get("id") == rid, timeout)

    def expect_closed(self, timeout=None):
        """Read until the agent closes the connection; the frames read before."""
        deadline = time.monotonic() + (T(10) if timeout is None else timeout)
        frames = list(self.pending)
        self.pending = []
        while True:
            m = self._frame_available()
            if m is not None:
                frames.append(m)
                continue
            if self.eof:
                return frames
            self._pump(deadline, lambda: self.eof or self._frame_available_peek())

    def drain_nowait(self):
        """Messages that have already arrived (no waiting)."""
        try:
            self._pump(time.monotonic() + 0.05, lambda: False)
        except Timeout:
            pass
        out = list(self.pending)
        self.pending = []
        while True:
            m = self._frame_available()
            if m is None:
                return out
            out.append(m)

    @staticmethod
    def _stalled(streams, e):
        """Re-raise a Timeout naming the streams that were still open."""
        desc = "; ".join("id %s %r: reply=%s stdout=%d stderr=%d exit=%s" % (
            st.rid, st.argv, st.reply and st.reply.get("type"), st.nbytes["stdout"],
            st.nbytes["stderr"], st.exit is not None) for st in streams[:5])
        more = " (+%d more)" % (len(streams) - 5) if len(streams) > 5 else ""
        raise Timeout("%s — agent sent nothing more for these exec streams: %s%s"
                      % (e, desc, more)) from None

    def _stall_wait(self, deadline):
        """How long to wait for the next message of a stream: the rest of the
        overall deadline, but at most self.timeout, so that an agent that
        stops sending fails the test quickly instead of at the deadline."""
        return max(0.0, min(self.timeout, deadline - time.monotonic()))

    # ---- requests
    def request(self, type_, timeout=None, **fields):
        """Send a request with a fresh id; its reply (`ok` or `error`)."""
        rid = self.next_id()
        msg = {"type": type_, "id": rid}
        msg.update(fields)
        self.send(msg)
        r = self.recv_id(rid, timeout)
        if r.get("type") not in ("ok", "error"):
            raise ProtocolViolation("first message for %s id %d is not a reply: %r" % (type_, rid, _short(r)))
        if type_ == "exec" and r["type"] == "ok":
            _note_spawned(r.get("pid"))
        return r

    def ok(self, type_, timeout=None, **fields):
        r = self.request(type_, timeout=timeout, **fields)
        if r["type"] != "ok":
            raise AgentError(r, type_)
        return r

    def ping(self, timeout=None):
        return self.ok("ping", timeout=timeout)

    def exec_start(self, argv, **fields):
        """Send exec; return (id, reply). Events stay queued for recv_id(id)."""
        rid = self.next_id()
        msg = {"type": "exec", "id": rid, "argv": list(argv)}
        msg.update(fields)
        self.send(msg)
        r = self.recv_id(rid)
        if r.get("type") not in ("ok", "error"):
            raise ProtocolViolation("exec id %d: first message is not its reply: %r" % (rid, _short(r)))
        if r["type"] == "ok":
            _note_spawned(r.get("pid"))
        return rid, r

    def finish(self, rid, reply, timeout=None, sink=None, argv=None):
        """Collect the events of an exec already started; a Result."""
        st = ExecStream(rid, argv, sink)
        st.feed(reply)
        if reply["type"] != "ok":
            raise AgentError(reply, "exec %r" % (argv,))
        deadline = time.monotonic() + (T(60) if timeout is None else timeout)
        try:
            while not st.done:
                st.feed(self.recv_id(rid, self._stall_wait(deadline)))
        except Timeout as e:
            self._stalled([st], e)
        return Result(st)

    def run(self, argv, stdin=None, timeout=None, sink=None, check_tail=True, stdin_chunk=None,
            stdin_errors_ok=False, **fields):
        """exec argv and collect everything (see ExecStream for what is checked).

        stdin: None -> the command gets stdin "null"; bytes -> a pipe fed with
        them through `stdin` requests (at most stdin_window unacknowledged),
        the last one with eof. Raises AgentError if the exec is refused."""
        deadline = time.monotonic() + (T(120) if timeout is None else timeout)
        rid = self.next_id()
        msg = {"type": "exec", "id": rid, "argv": list(argv)}
        if stdin is None:
            msg["stdin"] = "null"
        msg.update(fields)
        self.send(msg)
        st = ExecStream(rid, argv, sink)
        st.feed(self.recv_id(rid, deadline - time.monotonic()))
        if st.reply["type"] != "ok":
            raise AgentError(st.reply, "exec %r" % (argv,))

        window = self.stdin_window
        chunk = stdin_chunk or min(64 * 1024, window, self.agent_max_frame - 1024)
        data = memoryview(stdin) if stdin is not None else None
        off = 0
        eof_sent = stdin is None
        unacked = {}                   # stdin request id -> bytes
        stdin_replies = []
        ids = {rid}
        while True:
            # push stdin while the window allows
            while not eof_sent:
                n = min(chunk, len(data) - off)
                if unacked and sum(unacked.values()) + n > window:
                    break
                sid = self.next_id()
                last = off + n == len(data)
                self.send({"type": "stdin", "id": sid, "cmd": st.cmd,
                           "data": bytes(data[off:off + n]), "eof": last})
                unacked[sid] = n
                ids.add(sid)
                off += n
                eof_sent = last
            if st.done and not unacked:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("exec %r: not finished in time (exit %s, %d stdin requests unacknowledged)"
                              % (argv, st.exit is not None, len(unacked)))
            try:
                m = self.recv_match(lambda m: m.get("id") in ids, self._stall_wait(deadline))
            except Timeout as e:
                self._stalled([st], "%s (%d stdin requests unacknowledged)" % (e, len(unacked)))
            mid = m.get("id")
            if mid == rid:
                st.feed(m)
            elif mid in unacked:
                if m.get("type") not in ("ok", "error"):
                    raise ProtocolViolation("stdin id %r: not a reply: %r" % (mid, _short(m)))
                if m["type"] == "error" and not stdin_errors_ok:
                    raise AgentError(m, "stdin for %r" % (argv,))
                if m["type"] == "error":
                    eof_sent = True            # stop feeding a command that is gone
                del unacked[mid]
                stdin_replies.append(m)
            else:
                raise ProtocolViolation("second reply to stdin id %r: %r" % (mid, _short(m)))
        if check_tail:
            # nothing may follow the exit for this id: a ping round trip flushes
            # anything the agent had already queued.
            pid_ = self.next_id()
            self.send({"type": "ping", "id": pid_})
            while True:
                m = self.recv_match(lambda m: m.get("id") in (rid, pid_), deadline - time.monotonic() + T(10))
                if m.get("id") == rid:
                    raise ProtocolViolation("message after exit for exec id %d: %r" % (rid, _short(m)))
                break
        return Result(st, stdin_replies)

    def exec_collect(self, argv, stdin=None, **fields):
        """(stdout bytes, stderr bytes, exit dict) — see run()."""
        r = self.run(argv, stdin=stdin, **fields)
        return r.stdout, r.stderr, r.exit

    def run_many(self, specs, timeout=None):
        """Start every exec in specs (dicts of exec fields, with argv) before
        reading anything, then collect them all concurrently. Results in order."""
        deadline = time.monotonic() + (T(120) if timeout is None else timeout)
        streams = {}
        order = []
        for spec in specs:
            rid = self.next_id()
            msg = {"type": "exec", "id": rid, "stdin": "null"}
            msg.update(spec)
            streams[rid] = ExecStream(rid, spec.get("argv"))
            order.append(rid)
            self.send(msg)
        open_ = set(order)
        while open_:
            try:
                m = self.recv_match(lambda m: m.get("id") in open_, self._stall_wait(deadline))
            except Timeout as e:
                self._stalled([streams[r] for r in order if r in open_], e)
            st = streams[m["id"]]
            st.feed(m)
            if st.reply["type"] == "error":
                raise AgentError(st.reply, "exec %r" % (st.argv,))
            if st.done:
                open_.discard(m["id"])
        return [Result(streams[r]) for r in order]

    # ======================================================================
    # files (PROTOCOL.md "Files"): file streams, `chunk` input, fs requests
    #
    # upload/download/read/write/ls are streams: the first message for the
    # request's id is its `ok` or `error`; after an `ok` only `data` (read,
    # download) or `entries` (ls) events, then exactly one `end` or `error`.
    # FileStream checks that order, `data` offsets contiguous from 0, event
    # sizes, and the totals in `end`. Every helper below also keeps the whole
    # verified stream in self.last_stream (first reply, events, final).

    def file_start(self, type_, **fields):
        """Send a file request with a fresh id (nothing is read); its id."""
        rid = self.next_id()
        msg = {"type": type_, "id": rid}
        msg.update(fields)
        self.send(msg)
        return rid

    def file_stream(self, rid, timeout=None, sink=None, check_tail=True):
        """Collect file stream rid to its terminal message: (first, events,
        final). first is the `ok` or `error` reply; final is the terminal
        message (`end`, or `error`: the same object as first when the
        request was refused). With sink, `data` bytes go to sink(bytes) and
        the events keep only their offset. check_tail: a ping round trip
        proves nothing more arrives for rid after the terminal."""
        st = FileStream(rid, sink)
        self._collect_stream(st, set(), timeout)
        if check_tail:
            self._check_tail({rid})
        self.last_stream = st
        return st.first, st.events, st.final

    def _collect_stream(self, st, extra_ids, timeout, on_other=None):
        deadline = time.monotonic() + (T(120) if timeout is None else timeout)
        while not st.done or (on_other is not None and extra_ids):
            try:
                m = self.recv_match(lambda m: m.get("id") == st.rid or m.get("id") in extra_ids,
                                    self._stall_wait(deadline))
            except Timeout as e:
                raise Timeout("%s — file stream id %d: first=%s events=%d final=%s"
                              % (e, st.rid, st.first and st.first.get("type"), len(st.events),
                                 st.final and st.final.get("type"))) from None
            if m.get("id") == st.rid:
                st.feed(m)
            else:
                on_other(m)

    def _check_tail(self, ids):
        """Nothing more may arrive for these ids: a ping round trip flushes
        whatever the agent had already queued."""
        pid_ = self.next_id()
        self.send({"type": "ping", "id": pid_})
        m = self.recv_match(lambda m: m.get("id") in ids or m.get("id") == pid_, T(30))
        if m.get("id") != pid_:
            raise ProtocolViolation("message after the end of request %r: %r" % (m.get("id"), _short(m)))

    @staticmethod
    def _pieces(data, chunk):
        """data (bytes-like, or an iterable of bytes, consumed lazily) in
        pieces of at most chunk bytes."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            mv = memoryview(data)
            for off in range(0, len(mv), chunk):
                yield bytes(mv[off:off + chunk])
            return
        for block in data:
            mv = memoryview(block)
            for off in range(0, len(mv), chunk):
                yield bytes(mv[off:off + chunk])

    def _send_chunks(self, rid, data, chunk=None, timeout=None):
        """Feed `chunk` requests for transfer rid (sent already, its reply
        not read: chunks are pipelined behind it), at most stdin_window bytes
        unacknowledged, the last with eof; stop sending once the transfer
        ends or a chunk is `stopped`/`not_found`. Collects the stream and
        exactly one reply per chunk: (final, acks)."""
        window = self.stdin_window
        chunk = chunk or min(64 * 1024, window, self.agent_max_frame - 1024)
        st = FileStream(rid)
        pieces = self._pieces(data, chunk)
        nxt = next(pieces, None)
        first_piece = True
        sending = True
        unacked = {}                   # chunk request id -> bytes
        acks = []
        chunk_ids = set()

        def on_ack(m):
            nonlocal sending
            if m.get("type") not in ("ok", "error"):
                raise ProtocolViolation("chunk id %r: not a reply: %r" % (m.get("id"), _short(m)))
            if m["id"] not in unacked:
                raise ProtocolViolation("second reply to chunk id %r: %r" % (m["id"], _short(m)))
            del unacked[m["id"]]
            acks.append(m)
            if m["type"] == "error":
                if m.get("code") not in ("stopped", "not_found"):
                    raise AgentError(m, "chunk of transfer %d" % rid)
                sending = False

        deadline = time.monotonic() + (T(300) if timeout is None else timeout)
        while True:
            while sending and not st.done and (nxt is not None or first_piece):
                piece = nxt if nxt is not None else b""
                if unacked and sum(unacked.values()) + len(piece) > window:
                    break
                nxt = next(pieces, None) if nxt is not None else None
                first_piece = False
                cid = self.next_id()
                self.send({"type": "chunk", "id": cid, "ref": rid, "data": piece, "eof": nxt is None})
                unacked[cid] = len(piece)
                chunk_ids.add(cid)
                if nxt is None:
                    sending = False
            if st.done and not unacked:
                break
            if time.monotonic() >= deadline:
                raise Timeout("transfer %d not finished in time (%d chunks unacknowledged)"
                              % (rid, len(unacked)))
            try:
                m = self.recv_match(lambda m: m.get("id") == rid or m.get("id") in unacked,
                                    self._stall_wait(deadline))
            except Timeout as e:
                raise Timeout("%s — transfer id %d: first=%s final=%s, %d chunks unacknowledged"
                              % (e, rid, st.first and st.first.get("type"),
                                 st.final and st.final.get("type"), len(unacked))) from None
            if m.get("id") == rid:
                st.feed(m)
            else:
                on_ack(m)
        if st.final.get("type") == "end":
            bad = [a for a in acks if a["type"] != "ok"]
            if bad:
                raise ProtocolViolation("transfer %d ended with `end` but chunks were refused: %r"
                                        % (rid, _short(bad)))
        self._check_tail({rid} | chunk_ids)
        self.last_stream = st
        self.last_acks = acks
        return st.final, acks

    def upload(self, data, chunk=None, timeout=None, **fields):
        """upload {fields} with data (bytes, or an iterable of bytes sent as it
        is produced) as chunks: (final, acks). final is `end` or `error`."""
        rid = self.file_start("upload", **fields)
        return self._send_chunks(rid, data, chunk, timeout)

    def write_file(self, path, data, chunk=None, timeout=None, **fields):
        """write {path, fields} with data as chunks: (final, acks)."""
        rid = self.file_start("write", path=path, **fields)
        return self._send_chunks(rid, data, chunk, timeout)

    def download(self, paths, sink=None, timeout=None, **fields):
        """download {paths, fields}: (final, tar bytes), or (final, None)
        with sink(bytes) receiving the stream."""
        rid = self.file_start("download", paths=list(paths), **fields)
        self.file_stream(rid, timeout=timeout, sink=sink)
        st = self.last_stream
        return st.final, (None if sink else st.data)

    def read_file(self, path, sink=None, timeout=None, **fields):
        """read {path, fields}: (final, bytes) (see download)."""
        rid = self.file_start("read", path=path, **fields)
        self.file_stream(rid, timeout=timeout, sink=sink)
        st = self.last_stream
        return st.final, (None if sink else st.data)

    def ls(self, path, timeout=None, **fields):
        """ls {path}: (final, every entry of every `entries` event)."""
        rid = self.file_start("ls", path=path, **fields)
        _first, events, final = self.file_stream(rid, timeout=timeout)
        return final, [e for ev in events for e in ev["entries"]]

    def fs(self, type_, timeout=None, **fields):
        """A one-shot file request (stat, mkdir, remove, rename, chmod): its
        `ok` or `error` reply; nothing else may follow it."""
        r = self.request(type_, timeout=timeout, **fields)
        self._check_tail({r["id"]})
        return r


# --------------------------------------------------------------------------
# files: one verified file stream (Client.file_stream and the helpers after it)

FILE_DATA_MAX = 64 * 1024          # PROTOCOL.md: each `data` event holds at most 64 KiB
FILE_LS_BATCH = 256                # at most 256 entries per `entries` event


class FileStream:
    """Verifies the messages of one file stream (upload, download, read,
    write, ls) and collects them: the first is `ok` or `error`; an `error`
    ends it; after an `ok` come only `data` or `entries` events, then one
    `end` or `error`. `data` offsets are contiguous from 0, each at most
    64 KiB of bin; `entries` hold at most 256; an `end` with `count` equals
    the entries received, and a data stream's `end` `bytes` equals the bytes
    received."""

    def __init__(self, rid, sink=None):
        self.rid = rid
        self.sink = sink
        self.first = None
        self.events = []
        self.final = None
        self.nbytes = 0
        self.nentries = 0
        self.chunks = []

    @property
    def done(self):
        return self.final is not None

    @property
    def data(self):
        return b"".join(self.chunks)

    def _bad(self, why, msg):
        raise ProtocolViolation("file stream id %r: %s: %r" % (self.rid, why, _short(msg)))

    def feed(self, msg):
        t = msg.get("type")
        if self.final is not None:
            self._bad("message after the terminal message", msg)
        if self.first is None:
            if t not in ("ok", "error"):
                self._bad("first message for the request is not its reply", msg)
            self.first = msg
            if t == "error":
                self.final = msg
            return
        if t == "data":
            data = msg.get("data")
            if not isinstance(data, bytes):
                self._bad("data is not bin", msg)
            if msg.get("offset") != self.nbytes:
                self._bad("offset %r but %d bytes received so far (hole or overlap)"
                          % (msg.get("offset"), self.nbytes), msg)
            if len(data) > FILE_DATA_MAX:
                self._bad("a data event of %d bytes (more than 64 KiB)" % len(data), msg)
            self.nbytes += len(data)
            if self.sink is not None:
                self.sink(data)
                self.events.append({"type": "data", "id": self.rid, "offset": msg["offset"],
                                    "len": len(data)})
            else:
                self.chunks.append(data)
                self.events.append(msg)
        elif t == "entries":
            ents = msg.get("entries")
            if not isinstance(ents, list) or not 0 < len(ents) <= FILE_LS_BATCH:
                self._bad("entries is not a list of 1..256 entries", msg)
            self.nentries += len(ents)
            self.events.append(msg)
        elif t == "end":
            if "count" in msg and msg["count"] != self.nentries:
                self._bad("end count %r but %d entries received" % (msg["count"], self.nentries), msg)
            if self.nbytes and "bytes" in msg and msg["bytes"] != self.nbytes:
                self._bad("end bytes %r but %d bytes of data received" % (msg["bytes"], self.nbytes),
                          msg)
            self.final = msg
        elif t == "error":
            if not isinstance(msg.get("code"), str):
                self._bad("error without a code", msg)
            self.final = msg
        else:
            self._bad("unexpected message in a file stream", msg)


# --------------------------------------------------------------------------
# the agent process

class Agent:
    """One sandbox-agent process in its own temp dir."""

    def __init__(self, extra_args=(), dev=True, env=None, workdir_owner=None, sock_path=None,
                 preexec=None):
        if not AGENT_BIN or not os.access(AGENT_BIN, os.X_OK):
            raise unittest.SkipTest("SA_AGENT is not set to an executable sandbox-agent "
                                    "(run through ctest, or export SA_AGENT=build/sandbox-agent)")
        self.extra_args = list(extra_args)
        self.dev = dev
        self.env_extra = dict(env or {})
        self.workdir_owner = workdir_owner
        self.sock_override = sock_path
        self.preexec = preexec          # run in the child before the exec (resource limits)
        self.proc = None
        self.tmp = None
        self.stopped = False
        self.hello = None

    # ---- paths
    @property
    def pid(self):
        return self.proc.pid

    def start(self, timeout=None):
        self.tmp = tempfile.mkdtemp(prefix="sa-it-")
        os.chmod(self.tmp, 0o755)      # a dropped user must reach its workdir below
        self.sock_path = self.sock_override or os.path.join(self.tmp, "agent.sock")
        self.workdir = os.path.join(self.tmp, "work")
        os.mkdir(self.workdir, 0o755)
        if self.workdir_owner is not None:
            os.chown(self.workdir, *self.workdir_owner)
        self.stderr_path = os.path.join(self.tmp, "agent.stderr")
        self.args = [AGENT_BIN, "--listen", "unix:" + self.sock_path]
        self.args += ["--workdir", self.workdir]
        if self.dev:
            self.args.append("--dev")
        self.args += self.extra_args
        env = dict(os.environ)
        # Keep AddressSanitizer's quarantine small so RSS bounds stay meaningful.
        env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS"), "quarantine_size_mb=8") if x)
        env.update(self.env_extra)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         env=env, start_new_session=True, close_fds=True,
                                         preexec_fn=self.preexec)
        try:
            self.hello = self._wait_ready(T(10) if timeout is None else timeout)
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("agent exited with %r during start-up:\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            if os.path.exists(self.sock_path):
                try:
                    with Client(self.sock_path, timeout=max(0.5, deadline - time.monotonic())) as c:
                        return c.hello
                except (OSError, ConnectionError, Timeout) as e:
                    last = e
            time.sleep(0.05)
        raise AssertionError("agent not ready within %.0f s (last error %r):\n%s"
                             % (timeout, last, self.log_tail()))

    def client(self, **kw):
        return Client(self.sock_path, **kw)

    # ---- diagnostics
    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()
        except (OSError, AttributeError):
            return b""

    def log_tail(self, lines=60):
        tail = self.log().decode(errors="replace").splitlines()[-lines:]
        return "---- agent stderr (%s) ----\n%s\n----" % (
            getattr(self, "stderr_path", "?"), "\n".join(tail))

    def sanitizer_report(self):
        log = self.log()
        for m in SANITIZER_MARKERS:
            i = log.find(m)
            if i >= 0:
                return log[max(0, i - 200):i + 3000].decode(errors="replace")
        return None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self, field):
        """A /proc/<pid>/status field in kB (VmRSS, VmHWM...) as bytes."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def rss(self):
        return self.status("VmRSS")

    def fds(self):
        return sorted(os.listdir("/proc/%d/fd" % self.pid), key=int)

    def fd_targets(self):
        out = {}
        for fd in self.fds():
            try:
                out[fd] = os.readlink("/proc/%d/fd/%s" % (self.pid, fd))
            except OSError:
                pass
        return out

    def children(self):
        """Direct children of the agent (all threads)."""
        kids = set()
        task = "/proc/%d/task" % self.pid
        try:
            tids = os.listdir(task)
        except OSError:
            return []
        have_file = False
        for tid in tids:
            try:
                with open("%s/%s/children" % (task, tid)) as f:
                    have_file = True
                    kids.update(int(x) for x in f.read().split())
            except OSError:
                pass
        if not have_file:
            kids = {p["pid"] for p in all_procs() if p["ppid"] == self.pid}
        return [st for st in (proc_stat(k) for k in sorted(kids)) if st]

    def zombies(self):
        return [c for c in self.children() if c["state"] == "Z"]

    def lingering_zombies(self, settle=None):
        """Zombie children that are still there after a short settle."""
        deadline = time.monotonic() + (T(3) if settle is None else settle)
        while True:
            z = self.zombies()
            if not z or time.monotonic() >= deadline:
                return z
            time.sleep(0.05)

    def descendants(self):
        out, todo, seen = [], [self.pid], set()
        procs = all_procs()
        while todo:
            p = todo.pop()
            for st in procs:
                if st["ppid"] == p and st["pid"] not in seen:
                    seen.add(st["pid"])
                    out.append(st)
                    todo.append(st["pid"])
        return out

    def check_healthy(self):
        """A list of problems: agent died, sanitizer report."""
        problems = []
        if self.proc is not None and self.proc.poll() is not None and not self.stopped:
            problems.append("agent died unexpectedly (exit status %r)" % self.proc.returncode)
        rep = self.sanitizer_report()
        if rep:
            problems.append("sanitizer report in agent stderr:\n" + rep)
        return problems

    def stop(self, check=True):
        """SIGTERM (SIGKILL after 5 s), clean up leftovers; a list of problems
        (died before, zombies left, sanitizer reports)."""
        problems = []
        if self.proc is None:
            return problems
        if check:
            problems += [p for p in self.check_healthy() if "sanitizer" not in p]
        leftovers = []
        if self.proc.poll() is None:
            if check:
                z = self.lingering_zombies()
                if z:
                    problems.append("agent left zombie children: %r" % z)
            leftovers = self.descendants()
            self.stopped = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                if check:
                    problems.append("agent ignored SIGTERM for 5 s")
        self.stopped = True
        for st in leftovers:
            kill_quietly(st["pid"], signal.SIGKILL, st["starttime"])
        with _SPAWNED_LOCK:
            sids = set(_SPAWNED)
        kill_sessions(sids)
        with _SPAWNED_LOCK:
            for sid in sids:          # done with them: a reused pid is not ours any more
                _SPAWNED.pop(sid, None)
        if check:
            rep = self.sanitizer_report()
            if rep:
                problems.append("sanitizer report in agent stderr:\n" + rep)
        if problems:
            problems.append(self.log_tail())
        if not os.environ.get("SA_KEEP_TMP") and self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return problems


# --------------------------------------------------------------------------
# the test case base

class AgentTestCase(unittest.TestCase):
    """One agent per class; `self.c` is a fresh connected Client per test."""

    agent_args = ()
    agent_dev = True
    agent_env = None
    agent_workdir_owner = None
    agent_preexec = None

    @classmethod
    def setUpClass(cls):
        cls.agent = Agent(cls.agent_args, dev=cls.agent_dev, env=cls.agent_env,
                          workdir_owner=cls.agent_workdir_owner, preexec=cls.agent_preexec).start()
        cls.addClassCleanup(cls._stop_agent)

    @classmethod
    def _stop_agent(cls):
        problems = cls.agent.stop()
        if problems:
            raise AssertionError("\n".join(problems))

    def setUp(self):
        self.c = self.agent.client()
        self.addCleanup(self.c.close)

    def tearDown(self):
        if not self.agent.alive():
            self.agent.stopped = True      # reported here; not again at class teardown
            self.fail("agent died during this test (exit status %r)\n%s"
                      % (self.agent.proc.returncode, self.agent.log_tail()))

    def run(self, result=None):
        # On a failure, show the agent's side of the story.
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        r = super().run(result)
        if len(result.failures) + len(result.errors) != before and getattr(self, "agent", None):
            sys.stderr.write("\n" + self.agent.log_tail(40) + "\n")
        return r

    # ---- assertion helpers
    def assertErrorReply(self, reply, code, msg=None):
        self.assertEqual(reply.get("type"), "error", msg or "expected an error reply, got %r" % (reply,))
        self.assertEqual(reply.get("code"), code, msg or "wrong error code in %r" % (reply,))
        self.assertIsInstance(reply.get("message"), str, "error without a message: %r" % (reply,))

    def assertStillServes(self, client=None):
        """The connection still answers ping."""
        (client or self.c).ping(timeout=T(10))


def own_user():
    return pwd.getpwuid(os.geteuid())


def env_lines(out):
    """`env` output -> dict (values may contain '=')."""
    env = {}
    for line in out.decode(errors="replace").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


def free_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

