"""Log caps and flow control: the per-command and global log caps drop the
oldest bytes of unread logs (and say so with `gap`), followers never lose
a byte and throttle the command instead, a stalled client stalls only
itself, stdin is held to the window (PROTOCOL.md "The log, its caps, and
flow control", "stdin", §5). Each class has its own agent so that RSS
numbers and log totals are not disturbed by other tests."""

import hashlib
import time
import unittest

from agentlib import (MiB, AgentTestCase, ExecStream, T, Timeout, kill_sessions, wait_until)
from lifelib import (PATTERN, PY, LogStream, caps, collect, io_wchar, logs_start,
                     pattern_argv, pattern_at, read_logs, rss_limit, wait_cmd)

KiB = 1024


class CapCase(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.assertIn("lifecycle", caps(self.c), "the hello does not list the lifecycle capability")

    def detached(self, argv, **fields):
        fields.setdefault("stdin", "null")
        rid, r = self.c.exec_start(argv, detached=True, **fields)
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])
        return r

    def get(self, cmd):
        return self.c.ok("get", cmd=cmd)

    def check_pattern_sink(self, pattern=PATTERN):
        def sink(stream, off, pos, data):
            if stream != "stdout":
                self.fail("unexpected %s chunk at pos %d: %r" % (stream, pos, data[:100]))
            want = pattern_at(off, len(data), pattern)
            if data != want:
                self.fail("log bytes at stdout offset %d do not match what the command wrote" % off)
        return sink


def rotated(i):
    """PATTERN rotated by i (each command of a test writes its own bytes)."""
    body = PATTERN[:-1]
    return body[i:] + body[:i] + b"\n"


class PerCommandCap(CapCase):
    agent_args = ("--log-cap", str(MiB))

    def test_unread_output_far_beyond_the_cap_never_blocks_and_keeps_exactly_the_tail(self):
        baseline = self.agent.rss()
        limit = rss_limit(baseline)
        total = 200 * MiB
        t0 = time.monotonic()
        r = self.detached(pattern_argv(total))
        cmd = r["cmd"]
        peak = 0
        deadline = t0 + T(180)
        while True:
            peak = max(peak, self.agent.rss())
            g = self.get(cmd)
            if g["state"] == "exited":
                break
            if time.monotonic() > deadline:
                self.fail("a command nobody reads did not finish in %.0f s (blocked?): %r" % (T(180), g))
            time.sleep(0.05)
        self.assertLess(peak, limit, "agent RSS reached %d MiB (start %d MiB)" % (peak >> 20, baseline >> 20))
        hwm = self.agent.status("VmHWM")
        self.assertLess(hwm, limit, "agent peak RSS (VmHWM) %d MiB (start %d MiB)" % (hwm >> 20, baseline >> 20))
        self.assertEqual((g["code"], g["stdout_bytes"], g["stderr_bytes"]), (0, total, 0), g)
        ls, le = g["log_start"], g["log_end"]
        self.assertEqual(le, total, "log_end is not the end of the output")
        self.assertGreater(ls, 0, "nothing was dropped from a 200 MiB log with a 1 MiB cap")
        self.assertLessEqual(le - ls, MiB, "the log holds more than --log-cap")

        st = logs_start(self.c, cmd, from_=0, keep=False, sink=self.check_pattern_sink())
        self.assertEqual((st.reply["log_start"], st.reply["log_end"]), (ls, le))
        collect(self.c, st, T(60))
        self.assertEqual(st.gaps, [(0, ls)], "the gap does not name exactly the dropped bytes")
        self.assertEqual(st.first_pos, ls)
        self.assertEqual(st.first_off, {"stdout": ls, "stderr": 0},
                         "the stdout offset after the gap does not jump by the dropped amount")
        self.assertEqual(st.received, le - ls)
        self.assertIsNotNone(st.exit)
        self.assertEqual((st.exit["code"], st.exit["stdout_bytes"]), (0, total))

        # from inside the dropped range: the gap starts where the reader asked
        st = read_logs(self.c, cmd, from_=12345, keep=False, sink=self.check_pattern_sink())
        self.assertEqual(st.gaps, [(12345, ls)])
        self.assertEqual(st.received, le - ls)
        # from inside the retained tail: no gap
        mid = ls + (le - ls) // 2 + 1
        st = read_logs(self.c, cmd, from_=mid, keep=False, sink=self.check_pattern_sink())
        self.assertEqual((st.gaps, st.first_pos, st.received), ([], mid, le - mid))


class SmallestCap(AgentTestCase):
    """The smallest --log-cap still works: reading never waits for more room
    than one small chunk, and the log keeps close to its cap."""
    agent_args = ("--log-cap", "65536")

    def test_attached_output_larger_than_the_cap_is_delivered_whole(self):
        out, err, x = self.c.exec_collect(["head", "-c", "300000", "/dev/zero"])
        self.assertEqual((len(out), x["code"]), (300000, 0))

    def test_a_detached_log_keeps_most_of_its_cap(self):
        r = self.c.ok("exec", argv=["head", "-c", "300000", "/dev/zero"], stdin="null",
                      detached=True)
        w = self.c.ok("wait", cmd=r["cmd"], timeout=T(20))
        self.assertEqual(w["stdout_bytes"], 300000)
        g = self.c.ok("get", cmd=r["cmd"])
        kept = g["log_end"] - g["log_start"]
        self.assertEqual(g["log_end"], 300000)
        self.assertGreaterEqual(kept, 32768, "only %d bytes kept under a 64 KiB cap" % kept)
        self.assertLessEqual(kept, 65536)


class GlobalCap(CapCase):
    agent_args = ("--log-cap", str(2 * MiB), "--log-total-cap", str(4 * MiB))

    def test_new_output_evicts_whole_logs_of_the_oldest_exited_commands_first(self):
        size = 600 * KiB
        # A starts first but exits after B: eviction goes by exit, not by start.
        a = self.detached(["sh", "-c", 'yes "$1" | head -c "$2"; read x', "sh",
                           rotated(0)[:-1].decode(), str(size)], stdin="pipe")
        wait_until(lambda: self.get(a["cmd"])["log_end"] == size, T(20), what="A's output")
        b = self.detached(pattern_argv(size, rotated(1)))
        self.assertEqual(wait_cmd(self.c, b["cmd"])["code"], 0)
        self.c.ok("stdin", cmd=a["cmd"], data=b"\n", eof=True)
        self.assertEqual(wait_cmd(self.c, a["cmd"])["code"], 0)
        rest = []
        for i in (2, 3, 4):
            x = self.detached(pattern_argv(size, rotated(i)))
            self.assertEqual(wait_cmd(self.c, x["cmd"])["code"], 0)
            rest.append((x, i))
        olds = [(b, 1), (a, 0)] + rest                  # in exit order
        for x, i in olds:
            g = self.get(x["cmd"])
            self.assertEqual((g["log_start"], g["log_end"]), (0, size),
                             "5 x 600 KiB fit in a 4 MiB total cap, yet something was dropped: %r" % g)
        # 3000 KiB held; 1500 KiB more needs 4500 > 4096: exactly one exited log
        # must go, the one that exited first (B).
        n = self.detached(pattern_argv(1500 * KiB, rotated(5)))
        self.assertEqual(wait_cmd(self.c, n["cmd"])["code"], 0)

        g = self.get(b["cmd"])
        self.assertEqual((g["state"], g["code"], g["stdout_bytes"]), ("exited", 0, size),
                         "the record of an evicted log must stay queryable")
        self.assertEqual((g["log_start"], g["log_end"]), (size, size),
                         "the oldest exited log (B) was not evicted whole")
        st = read_logs(self.c, b["cmd"])
        self.assertEqual((st.gaps, st.outputs), ([(0, size)], 0), "logs of an evicted log: gap, no output")
        self.assertIsNotNone(st.exit, "logs of an evicted log must still end with exit")
        self.assertEqual((st.exit["code"], st.exit["stdout_bytes"]), (0, size))

        for x, i in [(a, 0)] + rest:
            st = read_logs(self.c, x["cmd"], keep=False, sink=self.check_pattern_sink(rotated(i)))
            self.assertEqual((st.gaps, st.received), ([], size),
                             "log of command %d was dropped though an older exited log was enough" % i)
        st = read_logs(self.c, n["cmd"], keep=False, sink=self.check_pattern_sink(rotated(5)))
        self.assertEqual((st.gaps, st.received), ([], 1500 * KiB))
        held = sum(r["log_end"] - r["log_start"] for r in self.c.ok("list")["commands"])
        self.assertLessEqual(held, 4 * MiB, "logs hold more than --log-total-cap")


class SlowReader(CapCase):
    agent_args = ("--log-cap", str(MiB))

    PROG = ("import hashlib, os, random, sys\n"
            "n = int(sys.argv[1]); r = random.Random(77); h = hashlib.sha256()\n"
            "while n:\n"
            "    b = r.randbytes(min(n, 65536 + 1234)); n -= len(b); h.update(b)\n"
            "    while b:\n"
            "        k = os.write(1, b); b = b[k:]\n"
            "os.write(2, h.hexdigest().encode() + b'\\n')\n")

    def test_a_slow_attached_reader_loses_nothing_and_the_writer_is_throttled(self):
        baseline = self.agent.rss()
        limit = rss_limit(baseline)
        n = 50 * MiB
        rid, r = self.c.exec_start([PY, "-c", self.PROG, str(n)], stdin="null")
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])
        h = hashlib.sha256()
        err = []

        def sink(stream, off, pos, data):
            if stream == "stdout":
                h.update(data)
            else:
                err.append(data)

        st = LogStream(rid, exec_=True, keep=False, sink=sink, what="exec (slow reader)")
        st.feed(r)
        while st.received < 2 * MiB:
            st.feed(self.c.recv_id(rid))
        # stop reading: the agent must stop reading the pipe, and the writer block
        time.sleep(T(1.5))
        w1 = io_wchar(r["pid"])
        time.sleep(1.0)
        w2 = io_wchar(r["pid"])
        peak = self.agent.rss()
        self.assertIsNotNone(w2, "the writer ended while its only reader was not reading")
        self.assertLess(w2 - w1, 128 * KiB, "the writer kept writing (%d bytes in 1 s) while its follower "
                        "did not read: no back-pressure" % (w2 - w1))
        self.assertLess(w2 - st.received, MiB + 4 * MiB,
                        "%d bytes written but only %d read: more than the cap buffered"
                        % (w2, st.received))
        # now read slowly to the end
        mark = st.received
        while not st.done:
            st.feed(self.c.recv_id(rid, T(30)))
            if st.received - mark >= 512 * KiB:
                mark = st.received
                time.sleep(0.02)
                peak = max(peak, self.agent.rss())
        self.assertEqual(st.gaps, [], "a follower (attached exec) saw a gap")
        self.assertEqual(st.received - len(b"".join(err)), n)
        self.assertEqual((st.exit["code"], st.exit["stdout_bytes"]), (0, n), st.exit)
        self.assertEqual(b"".join(err).strip().decode(), h.hexdigest(), "the bytes received are not those written")
        self.assertLess(peak, limit, "agent RSS %d MiB (start %d MiB)" % (peak >> 20, baseline >> 20))


class StalledClient(CapCase):

    def test_a_client_that_never_reads_stalls_only_itself(self):
        baseline = self.agent.rss()
        limit = rss_limit(baseline)
        a = self.agent.client()
        self.addCleanup(a.close)
        a.send({"type": "exec", "id": a.next_id(), "argv": ["yes"], "stdin": "null"})   # never read

        def find_yes():
            return [p for p in self.agent.children() if p["comm"] == "yes"]
        yes = wait_until(find_yes, T(10), what="yes to start")[0]
        self.addCleanup(kill_sessions, [yes["pid"]])
        time.sleep(T(1))
        w1 = io_wchar(yes["pid"])
        for i in range(10):
            t0 = time.monotonic()
            out, err, x = self.c.exec_collect(["sh", "-c", "echo o$1; echo e$1 >&2; exit 3", "sh", str(i)])
            self.assertEqual((out, err, x["code"]), (b"o%d\n" % i, b"e%d\n" % i, 3))
            self.assertLess(time.monotonic() - t0, T(5), "a command on another client was slow")
        r = self.detached(["sh", "-c", "echo detached"])
        self.assertEqual(wait_cmd(self.c, r["cmd"], timeout=T(5))["code"], 0)
        self.assertEqual(read_logs(self.c, r["cmd"], timeout=T(5)).stdout(), b"detached\n")
        time.sleep(1.0)
        w2 = io_wchar(yes["pid"])
        self.assertLess(w2 - w1, 4 * MiB, "yes kept writing %d bytes although its follower never read" % (w2 - w1))
        rss = self.agent.rss()
        self.assertLess(rss, limit, "agent RSS %d MiB (start %d MiB)" % (rss >> 20, baseline >> 20))
        recs = [x for x in self.c.ok("list", running=True)["commands"] if x["pid"] == yes["pid"]]
        self.assertEqual(len(recs), 1, "yes is not listed as running")
        self.assertIs(recs[0]["detached"], False)
        self.c.ok("signal", cmd=recs[0]["cmd"], signal=9)
        a.close()
        self.assertEqual(wait_cmd(self.c, recs[0]["cmd"], timeout=T(20))["code"], 137)


class StdinFlow(CapCase):

    def test_stdin_faster_than_the_command_reads_is_held_to_the_window(self):
        c = self.c
        baseline = self.agent.rss()
        limit = rss_limit(baseline)
        window = c.stdin_window
        with open("/proc/sys/fs/pipe-max-size") as f:
            pipe_max = int(f.read())
        trid, tr = c.exec_start(["sh", "-c", "while :; do echo tick; sleep 0.05; done"], stdin="null")
        self.addCleanup(kill_sessions, [tr["pid"]])
        ticker = ExecStream(trid, ["ticker"], sink=lambda s, d: None)
        ticker.feed(tr)
        t_exec = time.monotonic()
        srid, sr = c.exec_start(["sh", "-c", "sleep 3; cat >/dev/null; echo fin"])
        self.addCleanup(kill_sessions, [sr["pid"]])
        slow = ExecStream(srid, ["slow"])
        slow.feed(sr)
        chunk = 64 * KiB
        burst = [c.next_id() for _ in range(128)]       # 8 MiB, sent without waiting for acks
        for sid in burst:
            c.send({"type": "stdin", "id": sid, "cmd": sr["cmd"], "data": b"s" * chunk})
        replies = {}

        def route(m):
            mid = m.get("id")
            if mid == trid:
                ticker.feed(m)
            elif mid == srid:
                slow.feed(m)
            elif mid in replies or mid in burst:
                if mid in replies:
                    self.fail("second reply to stdin id %r: %r" % (mid, m))
                replies[mid] = m
            else:
                self.fail("unexpected message %r" % (m,))

        ticks0 = ticker.nbytes["stdout"]
        window_end = t_exec + 2.5                       # the command sleeps 3 s
        while time.monotonic() < window_end:
            try:
                route(c.recv(timeout=0.05))
            except Timeout:
                pass
        observed = time.monotonic() < t_exec + 3.0
        ticks = (ticker.nbytes["stdout"] - ticks0) // 5
        oks = [m for m in replies.values() if m["type"] == "ok"]
        refused = [m for m in replies.values() if m["type"] == "error"]
        pending = len(burst) - len(replies)
        for m in refused:
            self.assertEqual(m.get("code"), "window_exceeded", m)
        self.assertGreater(len(refused), 0, "8 MiB beyond a %d-byte window were all accepted" % window)
        self.assertLessEqual(pending * chunk, window, "more than the window is held unacknowledged")
        if observed:
            self.assertLessEqual(len(oks) * chunk, pipe_max,
                                 "more stdin acknowledged than a pipe can hold while nothing reads it")
        self.assertGreaterEqual(ticks, 5, "the other command on the connection was stalled (%d ticks)" % ticks)
        rss = self.agent.rss()
        self.assertLess(rss, limit, "agent RSS %d MiB (start %d MiB)" % (rss >> 20, baseline >> 20))
        # once cat reads, every accepted request is acknowledged
        deadline = time.monotonic() + T(20)
        while len(replies) < len(burst):
            route(c.recv(timeout=max(0.1, deadline - time.monotonic())))
        # a well-behaved writer: 16 MiB within the window, then eof
        total, sent, unacked = 16 * MiB, 0, {}
        deadline = time.monotonic() + T(120)
        while sent < total or unacked:
            while sent < total and sum(unacked.values()) + chunk <= window:
                sid = c.next_id()
                last = sent + chunk >= total
                c.send({"type": "stdin", "id": sid, "cmd": sr["cmd"], "data": b"w" * chunk, "eof": last})
                unacked[sid] = chunk
                sent += chunk
            m = c.recv(timeout=max(0.1, deadline - time.monotonic()))
            if m.get("id") in unacked:
                self.assertEqual(m["type"], "ok", m)
                del unacked[m["id"]]
            elif m.get("id") == trid:
                ticker.feed(m)
            elif m.get("id") == srid:
                slow.feed(m)
            else:
                self.fail("unexpected message %r" % (m,))
            rss = self.agent.rss()
            self.assertLess(rss, limit, "agent RSS %d MiB (start %d MiB)" % (rss >> 20, baseline >> 20))
        while not slow.done:
            m = c.recv(timeout=T(20))
            (slow if m.get("id") == srid else ticker).feed(m)
        self.assertEqual((slow.exit["code"], slow.stdout), (0, b"fin\n"))
        c.ok("signal", cmd=tr["cmd"], signal=9)


if __name__ == "__main__":
    unittest.main()
