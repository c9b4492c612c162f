"""Bounded memory and the documented promises under hostile load (issue 12,
items 5-11; PROTOCOL.md §5 "Connection lifetime and resource bounds", "get,
list, wait", "The log, its caps, and flow control", "stdin", "shutdown"):

  - a client that does not read its replies stops being served: its
    requests wait (unread) instead of turning into output, so one command
    with a huge argv and hundreds of pipelined `get`s cost about nothing;
    the requests are all answered once it reads;
  - command records are bounded: an exited record keeps at most 4 KiB of
    argv (`argv_cut`), a record that could not fit one frame is refused;
  - `list` is paged (`limit`, `cursor`, `more`) and no reply of any type is
    larger than max_frame; `sandboxctl ps` follows the pages;
  - followers that stop reading never hold the whole global log cap: a
    command nobody follows keeps running;
  - exited commands are forgotten in exit order (`--keep-exited`);
  - stdin requests waiting for their acknowledgement are bounded in number,
    not only in bytes;
  - `--max-connections` and `--max-commands` are answered with `too_many`;
  - `shutdown` lets every connection take its pending output first.

Unix sockets only (agentlib's default)."""

import json
import os
import socket
import subprocess
import threading
import time
import unittest

import msgpack

from agentlib import (ASAN, CTL_BIN, MiB, Agent, AgentTestCase, Client, T, Timeout,
                      kill_sessions, pack, wait_until)
from test_init import WHY_NOT as NS_WHY_NOT, NsAgent

KiB = 1024


def rss_growth_limit(plain):
    """An RSS growth bound; AddressSanitizer's allocator and quarantine
    (kept at 8 MiB by agentlib) inflate what a plain build needs, so the
    bound is doubled there."""
    return 2 * plain if ASAN else plain


def long_argv(total, piece=100 * KiB, head=("sh", "-c", "sleep 30")):
    """argv of about total bytes: arguments stay under the kernel's 128 KiB
    per-argument limit."""
    argv = list(head)
    i = 0
    while sum(len(a) for a in argv) < total:
        argv.append(chr(ord("a") + i % 26) * min(piece, total - sum(len(a) for a in argv)))
        i += 1
    return argv


class Drainer(threading.Thread):
    """Reads and decodes everything a raw socket receives (another thread
    sends): frames counted by type."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock = sock
        self.counts = {}
        self.frames = 0
        self.max_len = 0
        self.stop = False

    def run(self):
        buf = bytearray()
        while not self.stop:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 4:
                n = int.from_bytes(buf[:4], "big")
                if len(buf) < 4 + n:
                    break
                m = msgpack.unpackb(bytes(buf[4:4 + n]), raw=False)
                del buf[:4 + n]
                self.frames += 1
                self.max_len = max(self.max_len, n)
                key = (m.get("type"), m.get("code"))
                self.counts[key] = self.counts.get(key, 0) + 1


def raw_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(T(30))
    s.connect(path)
    return s


class UnreadReplies(AgentTestCase):
    """Item 5: output memory is bounded by what the client reads."""

    def test_pipelined_gets_of_a_huge_record_wait_while_the_client_does_not_read(self):
        argv = long_argv(900 * KiB)
        r = self.c.ok("exec", argv=argv, detached=True, stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        before = self.agent.rss()
        s = raw_connect(self.agent.sock_path)
        self.addCleanup(s.close)
        reqs = b"".join(pack({"type": "get", "id": i, "cmd": r["cmd"]}) for i in range(300))
        s.sendall(reqs)                      # 300 requests, each answered by ~900 KB
        time.sleep(T(1.5))
        self.assertTrue(self.agent.alive())
        grown = self.agent.rss() - before
        self.assertLess(grown, rss_growth_limit(32 * MiB),
                        "300 unread replies of 900 KB grew the agent by %d MiB" % (grown >> 20))
        # reading now, the client gets every reply, in order
        c = Client(sock=s, read_hello=True)
        for i in range(300):
            m = c.recv(T(30))
            self.assertEqual((m["type"], m["id"]), ("ok", i), m.get("code"))
            self.assertEqual(m["argv"], argv)
        self.assertStillServes()

    def test_a_half_closed_client_still_gets_the_answers_to_what_it_sent(self):
        r = self.c.ok("exec", argv=long_argv(600 * KiB), detached=True, stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        s = raw_connect(self.agent.sock_path)
        self.addCleanup(s.close)
        s.sendall(b"".join(pack({"type": "get", "id": i, "cmd": r["cmd"]}) for i in range(20)))
        s.shutdown(socket.SHUT_WR)
        time.sleep(T(0.5))
        c = Client(sock=s, read_hello=True)
        frames = c.expect_closed(T(30))
        self.assertEqual([m["id"] for m in frames], list(range(20)))


class Records(AgentTestCase):
    """Item 5 (records) and the record-per-frame rule."""

    def test_an_exited_record_keeps_4_KiB_of_argv_and_says_it_was_cut(self):
        argv = ["sh", "-c", "exit 3", "\u00e9" * 3000, "y" * 100000]
        r = self.c.ok("exec", argv=argv, detached=True, stdin="null")
        self.assertEqual(self.c.ok("wait", cmd=r["cmd"])["code"], 3)
        g = self.c.ok("get", cmd=r["cmd"])
        self.assertIs(g.get("argv_cut"), True, g.keys())
        kept = sum(len(a.encode()) + 1 for a in g["argv"])
        self.assertLessEqual(kept, 4096)
        self.assertEqual(g["argv"][:3], argv[:3])
        self.assertTrue(argv[3].startswith(g["argv"][3]), "the cut is not a prefix (UTF-8 kept)")
        self.assertGreater(kept, 4000)
        short = self.c.ok("exec", argv=["true"], detached=True, stdin="null")
        self.c.ok("wait", cmd=short["cmd"])
        self.assertNotIn("argv_cut", self.c.ok("get", cmd=short["cmd"]))

    def test_a_record_that_could_not_fit_one_frame_is_refused_with_E2BIG(self):
        mf = self.c.agent_max_frame
        argv = long_argv(mf - 200, head=("true",))
        r = self.c.request("exec", argv=argv, stdin="null", detached=True)
        self.assertErrorReply(r, "E2BIG")


class Paging(AgentTestCase):
    """Item 6: `list` pages; no reply exceeds max_frame."""
    agent_args = ("--max-frame", "65536")

    def client(self):
        c = self.agent.client(max_frame=65536)     # a longer frame is a ProtocolViolation
        self.addCleanup(c.close)
        return c

    def start_big(self, c, n):
        """n running commands with 40 KB records; their ids."""
        started = []
        for _ in range(n):
            r = c.ok("exec", argv=long_argv(40 * KiB, piece=20 * KiB), detached=True, stdin="null")
            self.addCleanup(kill_sessions, [r["pid"]])
            started.append(r["cmd"])
        return started

    def pages(self, c, **fields):
        out, cursor, n = [], None, 0
        while True:
            f = dict(fields)
            if cursor is not None:
                f["cursor"] = cursor
            r = c.ok("list", **f)
            out.append(r)
            n += 1
            self.assertLess(n, 1000)
            if not r["more"]:
                self.assertNotIn("cursor", r)
                return out
            cursor = r["cursor"]
            self.assertEqual(cursor, r["commands"][-1]["cmd"])

    def test_list_of_records_larger_than_a_frame_comes_in_pages_newest_first(self):
        c = self.client()
        started = self.start_big(c, 5)
        pages = self.pages(c, running=True)
        self.assertGreater(len(pages), 1, "5 records of 40 KB in one 64 KiB frame?")
        ids = [rec["cmd"] for p in pages for rec in p["commands"]]
        self.assertEqual(ids, sorted(started, reverse=True))
        # limit
        one = c.ok("list", running=True, limit=1)
        self.assertEqual([x["cmd"] for x in one["commands"]], [max(started)])
        self.assertIs(one["more"], True)
        self.assertEqual(one["cursor"], max(started))
        nxt = c.ok("list", running=True, limit=2, cursor=one["cursor"])
        got = [x["cmd"] for x in nxt["commands"]]      # 40 KB records: one per 64 KiB frame
        self.assertTrue(1 <= len(got) <= 2, got)
        self.assertEqual(got, sorted(started, reverse=True)[1:1 + len(got)])
        self.assertIs(nxt["more"], True)

    def test_list_of_many_small_records_is_paged_and_complete(self):
        c = self.client()
        specs = [{"argv": ["true", "x" * 200]} for _ in range(600)]
        res = c.run_many(specs, timeout=T(120))
        ids = {r.cmd for r in res}
        got = [rec["cmd"] for p in self.pages(c) for rec in p["commands"]]
        self.assertEqual(len(got), len(set(got)), "a record listed twice")
        self.assertTrue(ids <= set(got))

    @unittest.skipUnless(CTL_BIN and os.access(CTL_BIN, os.X_OK), "SA_CTL is not set")
    def test_sandboxctl_ps_follows_the_pages(self):
        c = self.client()
        started = self.start_big(c, 4)
        out = subprocess.run([CTL_BIN, "-c", "unix:" + self.agent.sock_path, "ps", "--json"],
                             capture_output=True, timeout=T(30))
        self.assertEqual(out.returncode, 0, out.stderr)
        got = [json.loads(line)["cmd"] for line in out.stdout.decode().splitlines()]
        self.assertTrue(set(started) <= set(got), (started, got))
        table = subprocess.run([CTL_BIN, "-c", "unix:" + self.agent.sock_path, "ps"],
                               capture_output=True, timeout=T(30))
        self.assertEqual(table.returncode, 0, table.stderr)
        rows = [l.split()[0] for l in table.stdout.decode().splitlines()[1:]]
        self.assertTrue({str(x) for x in started} <= set(rows), table.stdout[:500])


class LargestReplies(AgentTestCase):
    """Item 6: with the smallest max_frame, the largest reply of each type
    the agent can be made to build still fits (the client refuses longer
    frames), or is cut or paged as documented."""
    agent_args = ("--max-frame", "4096")

    def setUp(self):
        super().setUp()
        self.c.close()
        self.c = self.agent.client(max_frame=4096)

    def test_exec_get_list_wait_and_logs_replies_fit(self):
        w = self.agent.workdir
        # the longest cwd that leaves room for the record: components of 200 bytes
        rel = "/".join(["d" * 200] * 13)
        os.makedirs(os.path.join(w, rel))
        argv = ["sh", "-c", "echo hi; exit 0", "z" * 200]
        r = self.c.ok("exec", argv=argv, cwd=rel, stdin="null", detached=True)
        self.assertEqual(r["cwd"], os.path.join(w, rel))
        self.c.ok("wait", cmd=r["cmd"])
        self.c.ok("get", cmd=r["cmd"])
        self.c.ok("list")
        self.c.ok("logs", cmd=r["cmd"])
        # too long for a record: refused, and the refusal fits
        rel2 = rel + "/" + "/".join(["e" * 200] * 3)
        os.makedirs(os.path.join(w, rel2))
        self.assertErrorReply(self.c.request("exec", argv=argv, cwd=rel2, stdin="null"), "E2BIG")

    def test_output_events_fit(self):
        out, _, x = self.c.exec_collect(["head", "-c", "100000", "/dev/zero"])
        self.assertEqual((len(out), x["code"]), (100000, 0))

    def test_error_replies_fit(self):
        self.assertEqual(self.c.request("x" * 3000)["code"], "unknown_type")
        self.assertEqual(self.c.request("get", cmd=2 ** 64 - 1)["code"], "not_found")

    def test_stats_fits(self):
        for _ in range(60):
            r = self.c.ok("exec", argv=["sleep", "30"], detached=True, stdin="null")
            self.addCleanup(kill_sessions, [r["pid"]])
        s = self.c.ok("stats")
        self.assertGreaterEqual(s["commands_running"], 60)
        self.assertLess(len(s["commands"]), 60)

    def test_file_replies_fit(self):
        if "fs" not in (self.c.hello.get("capabilities") or ()):
            self.skipTest("no fs capability")
        w = self.agent.workdir
        os.symlink("t" * 4000, os.path.join(w, "link"))
        st = self.c.fs("stat", path=os.path.join(w, "link"))
        self.assertIs(st["stat"].get("target_cut"), True)
        for i in range(40):
            open(os.path.join(w, ("n%02d" % i) + "m" * 200), "w").close()
        final, ents = self.c.ls(w)
        self.assertEqual(final["type"], "end")
        self.assertGreaterEqual(len(ents), 41)
        r = self.c.fs("stat", path=os.path.join(w, "q" * 250, "r" * 250, "s" * 250))
        self.assertEqual(r["type"], "error")
        # an upload's refusals are cut to fit, the rest counted
        import io
        import tarfile
        bio = io.BytesIO()
        with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as t:
            for i in range(60):
                ti = tarfile.TarInfo("../" + ("x%02d" % i) * 60)
                t.addfile(ti, io.BytesIO(b""))
        final, _ = self.c.upload(bio.getvalue(), dest=w, chunk=2048)
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(len(final["refused"]) + final["refused_more"], 60)
        self.assertGreater(final["refused_more"], 0)
        # data events of read and download
        with open(os.path.join(w, "big"), "wb") as f:
            f.write(os.urandom(50000))
        f, data = self.c.read_file(os.path.join(w, "big"))
        self.assertEqual((f["type"], len(data)), ("end", 50000))
        f, _ = self.c.download([os.path.join(w, "big")])
        self.assertEqual(f["type"], "end")


class StalledFollowers(AgentTestCase):
    """Item 7: followers that stop reading hold at most their share of the
    global log cap; a command nobody follows keeps running."""
    agent_args = ("--log-cap", str(MiB), "--log-total-cap", str(2 * MiB))

    def test_two_stalled_attached_yes_do_not_block_an_unfollowed_command(self):
        stall = raw_connect(self.agent.sock_path)
        self.addCleanup(stall.close)
        stall.sendall(pack({"type": "exec", "id": 1, "argv": ["yes"], "stdin": "null"}) +
                      pack({"type": "exec", "id": 2, "argv": ["yes", "no"], "stdin": "null"}))
        wait_until(lambda: len(self.c.ok("list", running=True)["commands"]) >= 2, T(10),
                   what="the two yes to run")
        pids = [x["pid"] for x in self.c.ok("list", running=True)["commands"]]
        self.addCleanup(kill_sessions, pids)
        time.sleep(T(1))               # they fill what the caps let them
        r = self.c.ok("exec", argv=["head", "-c", "3000000", "/dev/zero"], detached=True,
                      stdin="null")
        try:
            w = self.c.ok("wait", cmd=r["cmd"], timeout=T(15))
        except Timeout:
            g = self.c.ok("get", cmd=r["cmd"])
            self.fail("an unfollowed command is blocked by stalled followers: %r" % (
                {k: g[k] for k in ("state", "log_start", "log_end")},))
        self.assertEqual((w["code"], w["stdout_bytes"]), (0, 3000000))
        g = self.c.ok("get", cmd=r["cmd"])
        self.assertEqual(g["log_end"], 3000000)
        st = self.c.ok("stats")
        self.assertLessEqual(st["log_bytes"], 2 * MiB + 256 * KiB)


class ExitOrder(AgentTestCase):
    """Item 8: exited commands are forgotten oldest exit first."""
    agent_args = ("--keep-exited", "16")

    def test_a_long_command_outlives_many_short_ones_started_after_it(self):
        slow = self.c.ok("exec", argv=["sleep", "2"], detached=True, stdin="null")
        shorts = [r.cmd for r in self.c.run_many([{"argv": ["true"]} for _ in range(40)])]
        w = self.c.ok("wait", cmd=slow["cmd"], timeout=T(20))
        self.assertEqual(w["code"], 0)
        g = self.c.request("get", cmd=slow["cmd"])
        self.assertEqual(g["type"], "ok", "the last command to exit was forgotten first: %r" % g)
        kept = [x for x in shorts if self.c.request("get", cmd=x)["type"] == "ok"]
        self.assertEqual(len(kept), 15, "16 exited commands are kept: the last 15 shorts and it")
        # 16 newer exits push it out
        for r in self.c.run_many([{"argv": ["true"]} for _ in range(16)]):
            self.c.ok("get", cmd=r.cmd)
        self.assertEqual(self.c.request("get", cmd=slow["cmd"])["code"], "not_found")
        self.assertEqual(self.c.ok("stats")["commands_exited"], 16)


class ExitOrderDefault(AgentTestCase):
    """Item 8 at the default --keep-exited (4096), as reported: a command
    that exits after 4100 short commands started after it is still known
    right after its wait returns. (4100 `true`s take about 3 s, 10 s with
    ASan.)"""

    def test_a_command_exiting_after_4100_others_is_still_known(self):
        # `cat` exits when told to (stdin closed): after all the others
        rid, r = self.c.exec_start(["cat"], detached=True, stdin="pipe")
        self.assertEqual(r["type"], "ok")
        self.addCleanup(kill_sessions, [r["pid"]])
        for _ in range(41):
            self.c.run_many([{"argv": ["true"]} for _ in range(100)], timeout=T(60))
        self.c.ok("close_stdin", cmd=r["cmd"])
        self.assertEqual(self.c.ok("wait", cmd=r["cmd"], timeout=T(20))["code"], 0)
        g = self.c.request("get", cmd=r["cmd"])
        self.assertEqual(g["type"], "ok", "forgotten by start order: %r" % g)
        self.assertEqual(self.c.ok("stats")["commands_exited"], 4096)


class EmptyStdin(AgentTestCase):
    """Item 9: empty stdin requests to a command whose pipe is full cost a
    bounded amount of memory."""

    def test_30_MB_of_empty_stdin_requests_keep_rss_bounded(self):
        rid, r = self.c.exec_start(["sleep", "60"])
        self.assertEqual(r["type"], "ok")
        self.addCleanup(kill_sessions, [r["pid"]])
        cmd = r["cmd"]
        # fill the pipe and the window: the last bytes stay unacknowledged
        for i in range(16):
            self.c.send({"type": "stdin", "id": 10000 + i, "cmd": cmd, "data": b"x" * (64 * KiB)})
        time.sleep(T(0.5))
        s = raw_connect(self.agent.sock_path)
        self.addCleanup(s.close)
        d = Drainer(s)
        d.start()
        before = self.agent.rss()
        one = pack({"type": "stdin", "id": 7, "cmd": cmd, "data": b""})
        block = one * (MiB // len(one))
        peak = before
        for _ in range(30):
            s.sendall(block)
            peak = max(peak, self.agent.rss())
        s.sendall(pack({"type": "ping", "id": 8}))
        wait_until(lambda: d.counts.get(("ok", None), 0) >= 1 and
                   d.frames >= 30 * (MiB // len(one)), T(60), what="every reply")
        peak = max(peak, self.agent.rss())
        d.stop = True
        self.assertLess(peak - before, rss_growth_limit(16 * MiB),
                        "30 MB of empty stdin requests grew the agent by %d MiB"
                        % ((peak - before) >> 20))
        self.assertGreater(d.counts.get(("error", "window_exceeded"), 0), 0)
        self.assertStillServes()


class Limits(unittest.TestCase):
    """Item 10: --max-connections and --max-commands."""

    def start(self, *args):
        a = Agent(args).start()
        self.addCleanup(lambda: self.assertEqual(a.stop(), []))
        return a

    def test_a_connection_over_the_limit_gets_too_many_then_closes(self):
        a = self.start("--max-connections", "3")
        cs = [a.client()]
        wait_until(lambda: cs[0].ok("stats")["connections"] == 1, T(10),
                   what="the start-up probe's connection to go")
        cs += [a.client() for _ in range(2)]
        for c in cs:
            c.ping()
        extra = a.client(read_hello=False)
        frames = extra.expect_closed(T(10))
        extra.close()
        self.assertEqual(len(frames), 1, frames)
        self.assertEqual((frames[0]["type"], frames[0]["code"]), ("error", "too_many"))
        self.assertNotIn("id", frames[0])
        cs.pop().close()
        c = wait_until(lambda: _try_client(a), T(10), what="a connection under the limit")
        c.ping()
        c.close()
        for c in cs:
            c.ping()
            c.close()

    def test_commands_over_the_limit_are_too_many(self):
        a = self.start("--max-commands", "2")
        c = a.client()
        self.addCleanup(c.close)
        rs = [c.ok("exec", argv=["sleep", "30"], detached=True, stdin="null") for _ in range(2)]
        self.addCleanup(kill_sessions, [r["pid"] for r in rs])
        r = c.request("exec", argv=["true"], stdin="null")
        self.assertEqual((r["type"], r["code"]), ("error", "too_many"))
        c.ok("signal", cmd=rs[0]["cmd"], signal=9)
        c.ok("wait", cmd=rs[0]["cmd"])
        self.assertEqual(c.run(["true"]).code, 0)

    def test_the_limits_from_a_config_file(self):
        tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sa-bounds-%d.conf" % os.getpid())
        with open(tmp, "w") as f:
            f.write("max-commands = 1\nmax-connections = 2\nkeep-exited = 5\n")
        self.addCleanup(os.unlink, tmp)
        a = self.start("--config", tmp)
        c = a.client()
        self.addCleanup(c.close)
        r = c.ok("exec", argv=["sleep", "30"], detached=True, stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        self.assertEqual(c.request("exec", argv=["true"], stdin="null")["code"], "too_many")
        c2 = a.client()
        self.addCleanup(c2.close)
        extra = a.client(read_hello=False)
        self.addCleanup(extra.close)
        self.assertEqual(extra.expect_closed(T(10))[0]["code"], "too_many")


def _try_client(a):
    try:
        c = a.client()
    except (OSError, ConnectionError, AssertionError):   # refused: too_many instead of a hello
        return None
    return c


class ShutdownFlush(unittest.TestCase):
    """Item 11: `shutdown` waits (briefly) for every connection to take its
    pending output: the last output, the exit events, the replies."""

    def test_a_slow_reader_gets_its_whole_stream_and_exit_after_shutdown(self):
        a = Agent(("--grace-ms", "500")).start()
        self.addCleanup(a.stop, False)
        self.slow_reader_after_shutdown(a)
        a.stopped = True
        self.assertEqual(a.proc.wait(T(10)), 0)

    @unittest.skipIf(NS_WHY_NOT, NS_WHY_NOT)
    def test_as_pid_1_the_flush_comes_before_power_off(self):
        a = NsAgent(extra=["--grace-ms", "500"]).start()
        self.addCleanup(a.stop)
        self.slow_reader_after_shutdown(a)
        a.proc.wait(T(10))                 # the namespace ended: powered off
        self.assertIn("shutdown: sync", a.log())

    def slow_reader_after_shutdown(self, a):
        slow = a.client()
        self.addCleanup(slow.close)
        n = 3000000
        rid, r = slow.exec_start(["head", "-c", str(n), "/dev/zero"], stdin="null")
        ctl = a.client()
        self.addCleanup(ctl.close)
        wait_until(lambda: ctl.ok("get", cmd=r["cmd"])["state"] == "exited", T(20),
                   what="the command to exit with its output unread")
        ctl.ok("shutdown")
        got, x = 0, None
        while x is None:
            m = slow.recv_id(rid, T(10))
            if m["type"] == "output":
                got += len(m["data"])
            elif m["type"] == "exit":
                x = m
        self.assertEqual((got, x["stdout_bytes"]), (n, n))


if __name__ == "__main__":
    unittest.main()
