"""Streams: binary output, stdin with flow control, large output, the drain
window for orphaned grandchildren, signals (PROTOCOL.md §4 exec, stdin,
close_stdin, signal)."""

import hashlib
import os
import random
import signal
import sys
import time
import unittest

from agentlib import (AgentTestCase, MiB, T, is_running, kill_sessions, proc_stat, procs_in_group,
                      wait_until)

PY = sys.executable or "/usr/bin/python3"


class BinaryData(AgentTestCase):
    """Bytes survive both directions exactly."""

    def test_all_256_byte_values_round_trip_through_cat(self):
        data = bytes(range(256)) * 64 + bytes(reversed(range(256)))
        out, err, x = self.c.exec_collect(["cat"], stdin=data)
        self.assertEqual(x["code"], 0, err)
        self.assertEqual(out, data)

    def test_binary_on_stderr_too(self):
        data = bytes(range(256))
        out, err, x = self.c.exec_collect(["sh", "-c", "cat >&2"], stdin=data)
        self.assertEqual((out, err), (b"", data))

    def test_output_without_trailing_newline_and_nul_bytes(self):
        out, _, x = self.c.exec_collect(["printf", r"a\000b\000"])
        self.assertEqual(out, b"a\0b\0")

    def test_many_chunks_of_stdin_are_echoed_in_order_within_the_window(self):
        rnd = random.Random(1234)
        data = rnd.randbytes(8 * MiB + 12345)
        r = self.c.run(["cat"], stdin=data, stdin_chunk=7919, timeout=T(180))
        self.assertEqual(r.code, 0)
        self.assertEqual(len(r.stdout), len(data))
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertTrue(all(m["type"] == "ok" for m in r.stdin_replies))
        self.assertEqual(len(r.stdin_replies), -(-len(data) // 7919))

    def test_large_stdin_chunks_near_the_frame_limit(self):
        data = random.Random(7).randbytes(4 * MiB)
        chunk = self.c.agent_max_frame - 256            # one stdin frame just under max_frame
        r = self.c.run(["sha256sum"], stdin=data, stdin_chunk=chunk, timeout=T(120))
        self.assertEqual(r.stdout.split()[0].decode(), hashlib.sha256(data).hexdigest())


class Interactive(AgentTestCase):
    """Output is relayed as it comes, not when more has gathered."""

    def test_a_lone_line_is_delivered_while_the_command_waits_for_input(self):
        # The command writes one short line, then blocks on stdin: the line
        # must reach us before we send anything (no batching waits for more).
        rid, r = self.c.exec_start(["sh", "-c", 'echo hi; read x; echo "$x"'])
        m = self.c.recv_match(lambda m: m.get("id") == rid and m.get("type") in ("output", "exit"),
                              timeout=T(20))
        self.assertEqual((m["type"], m.get("stream"), m.get("data")), ("output", "stdout", b"hi\n"))
        self.c.ok("stdin", cmd=r["cmd"], data=b"bye\n")
        rest = []
        while not rest or rest[-1]["type"] != "exit":
            rest.append(self.c.recv_id(rid, timeout=T(20)))
        self.assertEqual(b"".join(m["data"] for m in rest if m["type"] == "output"), b"bye\n")
        self.assertEqual(rest[-1]["code"], 0)


class LargeOutput(AgentTestCase):

    def test_256_mib_of_random_output_arrives_intact(self):
        n = 256 * MiB
        # The command checksums what it writes and reports it on stderr; we
        # checksum what we receive on stdout.
        prog = ("import hashlib, os, random, sys\n"
                "n = %d; h = hashlib.sha256(); r = random.Random(int.from_bytes(os.urandom(8), 'big'))\n"
                "out = sys.stdout.buffer\n"
                "while n:\n"
                "    b = r.randbytes(min(n, 1 << 20 | 4093)); n -= len(b)\n"
                "    h.update(b); out.write(b)\n"
                "out.flush()\n"
                "sys.stderr.write(h.hexdigest() + '\\n')\n" % n)
        h = hashlib.sha256()
        got = [0]

        def sink(stream, data):
            self.assertEqual(stream, "stdout", "unexpected stderr chunk before the end: %r" % data[:100])
            h.update(data)
            got[0] += len(data)

        # stderr arrives in the sink too: collect it separately
        stderr = []

        def sink2(stream, data):
            if stream == "stderr":
                stderr.append(data)
            else:
                sink(stream, data)

        r = self.c.run([PY, "-c", prog], sink=sink2, timeout=T(400))
        self.assertEqual(r.code, 0, b"".join(stderr))
        self.assertEqual(got[0], n)
        self.assertEqual(r.exit["stdout_bytes"], n)
        self.assertEqual(b"".join(stderr).decode().strip(), h.hexdigest())

    def test_interleaved_stdout_and_stderr_keep_per_stream_order(self):
        prog = ("import sys\n"
                "for i in range(20000):\n"
                "    (sys.stdout if i % 3 else sys.stderr).write('%d\\n' % i)\n"
                "    if i % 100 == 0: sys.stdout.flush(); sys.stderr.flush()\n")
        out, err, x = self.c.exec_collect([PY, "-c", prog])
        self.assertEqual(x["code"], 0, err[-500:])
        self.assertEqual(out, b"".join(b"%d\n" % i for i in range(20000) if i % 3))
        self.assertEqual(err, b"".join(b"%d\n" % i for i in range(20000) if not i % 3))


class DrainWindow(AgentTestCase):
    """Exit comes after all output, but an orphan holding the pipe delays it
    only by the drain window (default 1000 ms)."""

    def test_orphan_holding_the_pipe_does_not_hold_the_exit(self):
        t0 = time.monotonic()
        r = self.c.run(["sh", "-c", "sleep 1000 & echo done"], timeout=T(20))
        elapsed = time.monotonic() - t0
        self.assertEqual((r.code, r.stdout, r.stderr), (0, b"done\n", b""))
        self.assertLess(elapsed, 1.0 + T(4),
                        "exit took %.2f s with a 1000 ms drain window" % elapsed)
        # the orphan is still alive: the agent did not wait for it
        sleepers = [p for p in procs_in_group(r.reply["pid"]) if p["comm"] == "sleep"]
        self.assertEqual(len(sleepers), 1)
        kill_sessions([r.reply["pid"]])

    def test_output_is_complete_when_the_last_writer_closes_quickly(self):
        # Without orphans: many quick commands, exit always after all output.
        for i in range(30):
            out, _, x = self.c.exec_collect(["sh", "-c", "printf %%0%dd 0; echo" % (i * 997)])
            self.assertEqual(len(out), i * 997 + 1 if i else 2)


class DrainWindowOption(AgentTestCase):
    """--drain-ms: output the orphan writes inside the window is delivered;
    the agent waits about the window before giving up."""

    agent_args = ("--drain-ms", "3000")

    def test_output_written_within_the_window_is_delivered(self):
        r = self.c.run(["sh", "-c", "(sleep 0.3; echo late) & echo early"], timeout=T(20))
        self.assertEqual(r.stdout, b"early\nlate\n")
        self.assertEqual(r.code, 0)

    def test_exit_waits_for_the_window_when_the_pipe_stays_open(self):
        t0 = time.monotonic()
        r = self.c.run(["sh", "-c", "sleep 1000 & echo x"], timeout=T(30))
        elapsed = time.monotonic() - t0
        kill_sessions([r.reply["pid"]])
        self.assertGreaterEqual(elapsed, 2.4, "exit after %.2f s, drain window is 3 s" % elapsed)
        self.assertLess(elapsed, 3.0 + T(5))
        self.assertEqual(r.stdout, b"x\n")


class Signals(AgentTestCase):

    def start_two_sleepers(self):
        rid, r = self.c.exec_start(["sh", "-c", "sleep 1000 & sleep 1000 & wait"], stdin="null")
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])
        wait_until(lambda: len([p for p in procs_in_group(r["pid"]) if p["comm"] == "sleep"]) == 2,
                   T(10), what="two sleeps in the command's group")
        return rid, r

    def test_signal_to_group_kills_every_process_of_the_command(self):
        rid, r = self.start_two_sleepers()
        self.assertEqual(self.c.ok("signal", cmd=r["cmd"])["type"], "ok")        # default: 15, group
        t0 = time.monotonic()
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual((res.code, res.exit["signal"]), (143, 15), res.exit)
        # every process of the group got it, so the pipe closed: no drain wait needed
        self.assertLess(time.monotonic() - t0, T(10))
        wait_until(lambda: not procs_in_group(r["pid"]), T(5), what="group %d to be empty" % r["pid"])

    def test_signal_with_group_false_hits_only_the_leader(self):
        rid, r = self.start_two_sleepers()
        self.c.ok("signal", cmd=r["cmd"], signal=9, group=False)
        wait_until(lambda: not is_running(r["pid"]), T(10), what="leader to die")
        sleepers = [p for p in procs_in_group(r["pid"]) if p["comm"] == "sleep"]
        self.assertEqual(len(sleepers), 2, "group members died too: %r" % sleepers)
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual((res.code, res.exit["signal"]), (137, 9))

    def test_any_signal_number(self):
        rid, r = self.c.exec_start(["sleep", "1000"], stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        self.c.ok("signal", cmd=r["cmd"], signal=signal.SIGUSR1)
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual((res.code, res.exit["signal"]), (128 + signal.SIGUSR1, signal.SIGUSR1))

    def test_trapped_signal_lets_the_command_finish_its_output(self):
        rid, r = self.c.exec_start(
            ["sh", "-c", "trap 'echo got-term; exit 5' TERM; echo ready; while :; do sleep 0.05; done"],
            stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        first = self.c.recv_id(rid)
        self.assertEqual((first["type"], first["data"]), ("output", b"ready\n"))
        self.c.ok("signal", cmd=r["cmd"], signal=15, group=False)
        out = [first["data"]]
        while True:
            m = self.c.recv_id(rid)
            if m["type"] == "exit":
                break
            out.append(m["data"])
        self.assertEqual(b"".join(out), b"ready\ngot-term\n")
        self.assertEqual((m["code"], m["signal"]), (5, 0))

    def test_signal_to_an_exited_command_is_exited(self):
        res = self.c.run(["true"])
        self.assertErrorReply(self.c.request("signal", cmd=res.cmd), "exited")

    def test_signal_to_an_unknown_command_is_not_found(self):
        self.assertErrorReply(self.c.request("signal", cmd=987654321), "not_found")

    def test_bad_signal_number_is_einval(self):
        rid, r = self.c.exec_start(["sleep", "1000"], stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        for n in (0, 65, 1000):
            with self.subTest(signal=n):
                rep = self.c.request("signal", cmd=r["cmd"], signal=n)
                self.assertEqual(rep["type"], "error", rep)
                self.assertIn(rep["code"], ("EINVAL",) if n else ("EINVAL", "bad_request"), rep)
        self.assertTrue(is_running(r["pid"]))
        self.c.ok("signal", cmd=r["cmd"], signal=9)
        self.assertEqual(self.c.finish(rid, r).code, 137)

    def test_signal_from_another_connection(self):
        rid, r = self.c.exec_start(["sleep", "1000"], stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        with self.agent.client() as c2:
            c2.ok("signal", cmd=r["cmd"], signal=9)
        self.assertEqual(self.c.finish(rid, r).code, 137)


class StdinControl(AgentTestCase):

    def test_stdin_to_an_unknown_command_is_not_found(self):
        r = self.c.request("stdin", cmd=987654321, data=b"x")
        self.assertErrorReply(r, "not_found")
        self.assertErrorReply(self.c.request("close_stdin", cmd=987654321), "not_found")

    def test_close_stdin_makes_cat_exit(self):
        rid, r = self.c.exec_start(["cat"])
        self.c.ok("stdin", cmd=r["cmd"], data=b"before close\n")
        self.c.ok("close_stdin", cmd=r["cmd"])
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual((res.code, res.stdout), (0, b"before close\n"))

    def test_close_stdin_twice_is_not_an_error(self):
        rid, r = self.c.exec_start(["sh", "-c", "cat; sleep 0.2"])
        self.c.ok("close_stdin", cmd=r["cmd"])
        self.c.ok("close_stdin", cmd=r["cmd"])
        self.assertEqual(self.c.finish(rid, r).code, 0)

    def test_stdin_after_close_is_stdin_closed(self):
        rid, r = self.c.exec_start(["sh", "-c", "exec 0<&-; sleep 1000"])
        self.addCleanup(kill_sessions, [r["pid"]])
        self.c.ok("close_stdin", cmd=r["cmd"])
        self.assertErrorReply(self.c.request("stdin", cmd=r["cmd"], data=b"x"), "stdin_closed")
        self.c.ok("signal", cmd=r["cmd"], signal=9)
        self.c.finish(rid, r)

    def test_stdin_on_a_null_stdin_command_is_stdin_closed(self):
        rid, r = self.c.exec_start(["sleep", "1000"], stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        self.assertErrorReply(self.c.request("stdin", cmd=r["cmd"], data=b"x"), "stdin_closed")
        self.c.ok("signal", cmd=r["cmd"], signal=9)
        self.c.finish(rid, r)

    def test_stdin_to_an_exited_command_is_exited(self):
        res = self.c.run(["true"])
        self.assertErrorReply(self.c.request("stdin", cmd=res.cmd, data=b"x"), "exited")

    def test_empty_stdin_with_eof_closes(self):
        rid, r = self.c.exec_start(["cat"])
        self.c.ok("stdin", cmd=r["cmd"], data=b"", eof=True)
        self.assertEqual(self.c.finish(rid, r, timeout=T(20)).code, 0)

    def test_stdin_from_another_connection(self):
        rid, r = self.c.exec_start(["cat"])
        with self.agent.client() as c2:
            c2.ok("stdin", cmd=r["cmd"], data=b"from c2\n", eof=True)
        self.assertEqual(self.c.finish(rid, r).stdout, b"from c2\n")

    def test_data_beyond_the_window_is_refused_and_every_request_answered_once(self):
        window = self.c.stdin_window
        rid, r = self.c.exec_start(["sleep", "1000"])     # never reads its stdin
        self.addCleanup(kill_sessions, [r["pid"]])
        part = window // 4
        ids = []
        for _ in range(4):                               # exactly one window, unacknowledged
            sid = self.c.next_id()
            ids.append(sid)
            self.c.send({"type": "stdin", "id": sid, "cmd": r["cmd"], "data": b"w" * part})
        # well beyond the window even if the agent counted what the pipe absorbed
        over = self.c.request("stdin", cmd=r["cmd"], data=b"w" * (window // 2))
        self.assertErrorReply(over, "window_exceeded")
        # the agent is not stuck: other requests are served meanwhile
        self.c.ping()
        self.c.ok("signal", cmd=r["cmd"], signal=9)
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual(res.code, 137)
        # each pending stdin request still gets exactly one reply (ok or error)
        replies = {}
        for sid in ids:
            m = self.c.recv_id(sid, timeout=T(10))
            self.assertIn(m["type"], ("ok", "error"), m)
            replies[sid] = m
        self.c.ping()
        stray = [m for m in self.c.drain_nowait() if m.get("id") in ids]
        self.assertEqual(stray, [], "second reply to a stdin request")

    def test_a_command_not_reading_stdin_does_not_stall_others(self):
        rid, r = self.c.exec_start(["sleep", "1000"])
        self.addCleanup(kill_sessions, [r["pid"]])
        self.c.send({"type": "stdin", "id": self.c.next_id(), "cmd": r["cmd"],
                     "data": b"z" * (self.c.stdin_window // 2)})
        t0 = time.monotonic()
        out, _, x = self.c.exec_collect(["cat"], stdin=b"still flowing\n")
        self.assertEqual(out, b"still flowing\n")
        self.assertLess(time.monotonic() - t0, T(10))
        self.c.ok("signal", cmd=r["cmd"], signal=9)


if __name__ == "__main__":
    unittest.main()
