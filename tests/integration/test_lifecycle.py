"""Lifecycle: detached commands, reconnecting, replaying logs, followers,
wait/get/list, timeouts (PROTOCOL.md "exec", "get, list, wait", "logs",
"The log, its caps, and flow control", "Timeouts and process trees")."""

import os
import random
import threading
import time
import unittest

from agentlib import (AgentTestCase, ExecStream, T, Timeout, is_running, kill_sessions, procs_in_group,
                      wait_until)
from lifelib import (assert_bytes, caps, collect, exec_stream, expected_gen, gen_argv,
                     kill_procs_with_arg, logs_start, procs_with_arg, read_logs, sleep_marker, wait_cmd)

EXIT_FIELDS = ("code", "signal", "duration_ms", "timed_out", "stdout_bytes", "stderr_bytes")
RECORD_FIELDS = ("cmd", "argv", "cwd", "user", "pid", "started_ms", "state", "detached", "pty",
                 "log_start", "log_end")


class LifecycleCase(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.assertIn("lifecycle", caps(self.c), "the hello does not list the lifecycle capability")

    def flag_path(self):
        p = os.path.join(self.agent.tmp, "flag-%d" % random.randrange(10 ** 9))
        self.addCleanup(lambda: os.path.exists(p) and os.unlink(p))
        return p

    def detached(self, argv, client=None, **fields):
        c = client or self.c
        fields.setdefault("stdin", "null")
        rid, r = c.exec_start(argv, detached=True, **fields)
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])
        return r

    def get(self, cmd, client=None):
        return (client or self.c).ok("get", cmd=cmd)

    def assertExitLike(self, exit_msg, wait_reply):
        for k in EXIT_FIELDS:
            self.assertEqual(exit_msg.get(k), wait_reply.get(k),
                             "%s differs between %r and %r" % (k, exit_msg, wait_reply))


class Detached(LifecycleCase):

    def test_hello_lists_lifecycle(self):
        self.assertIn("lifecycle", caps(self.c))

    def test_detached_exec_replies_with_cmd_and_sends_no_events_on_its_id(self):
        rid, r = self.c.exec_start(["sh", "-c", "echo out; echo err >&2; exit 4"], detached=True,
                                   stdin="null")
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])
        for k in ("cmd", "pid", "started_ms", "cwd", "user"):
            self.assertIn(k, r, "detached exec reply without %r" % k)
        x = wait_cmd(self.c, r["cmd"])
        self.assertEqual((x["cmd"], x["code"], x["signal"], x["timed_out"]), (r["cmd"], 4, 0, False), x)
        self.assertEqual((x["stdout_bytes"], x["stderr_bytes"]), (4, 4), x)
        self.c.ping()                  # anything the agent queued for rid is here by now
        stray = [m for m in self.c.drain_nowait() if m.get("id") == rid]
        self.assertEqual(stray, [], "a detached exec streamed events on its request id")
        # ... and the output went to the log
        st = read_logs(self.c, r["cmd"])
        self.assertEqual((st.stdout(), st.stderr()), (b"out\n", b"err\n"))
        self.assertExitLike(st.exit, x)

    def test_logs_from_0_after_reconnect_replay_the_whole_log_byte_exact(self):
        c1 = self.agent.client()
        r = self.detached(gen_argv(), client=c1)
        c1.close()                                   # nobody is connected while it runs
        with self.agent.client() as c2:
            x = wait_cmd(c2, r["cmd"])
            self.assertEqual(x["code"], 0, x)
            st = read_logs(c2, r["cmd"])
            out, err = expected_gen()
            assert_bytes(self, st.stdout(), out, "replayed stdout")
            assert_bytes(self, st.stderr(), err, "replayed stderr")
            self.assertEqual(st.gaps, [])
            self.assertEqual((st.reply["log_start"], st.reply["log_end"]), (0, len(out) + len(err)))
            self.assertEqual(st.reply.get("cmd"), r["cmd"])
            self.assertIsNotNone(st.exit, "logs of an exited command must end with exit")
            self.assertExitLike(st.exit, x)
            # a second replay sees the same interleaving of the two streams
            st2 = read_logs(c2, r["cmd"], from_=0)
            self.assertTrue(st2.log == st.log, "two replays of one log differ: %r vs %r" % (st2.log, st.log))

    def test_output_produced_while_nobody_is_connected_reaches_a_later_follower(self):
        flag = self.flag_path()
        c1 = self.agent.client()
        r = self.detached(gen_argv(n=3000, flag=flag, half=1500), client=c1)
        c1.close()
        # the first half is written with no connection at all
        wait_until(lambda: self.get(r["cmd"])["log_end"] > 50000, T(20), what="the first half in the log")
        time.sleep(0.2)
        with self.agent.client() as c2:
            st = logs_start(c2, r["cmd"], from_=0, follow=True)
            self.assertEqual(st.reply["type"], "ok", st.reply)
            first = st.reply["log_end"]
            while st.pos < first:
                st.feed(c2.recv_id(st.rid))
            self.assertIsNone(st.exit)
            self.assertIsNone(st.end, "a following reader got `end`")
            with open(flag, "w"):
                pass
            collect(c2, st, T(60))
            out, err = expected_gen(n=3000)
            assert_bytes(self, st.stdout(), out, "followed stdout")
            assert_bytes(self, st.stderr(), err, "followed stderr")
            self.assertEqual(st.gaps, [])
            self.assertIsNotNone(st.exit)
            self.assertEqual(st.exit["code"], 0)

    def test_a_multi_mib_log_is_replayed_to_its_exit_every_time(self):
        # A replay larger than a connection's 1 MiB output bound has to be
        # resumed as the connection drains; it must never stall short of the
        # end (seen: a reader stuck 152 bytes before its exit on an idle
        # connection). Many replays, fresh and reused connections, fast and
        # slow readers.
        n, seed, binsize = 3000, 21, 60000
        r = self.detached(gen_argv(n=n, seed=seed, binsize=binsize))
        x = wait_cmd(self.c, r["cmd"])
        out, err = expected_gen(n=n, seed=seed, binsize=binsize)
        total = len(out) + len(err)
        for i in range(64):
            c = self.agent.client() if i % 2 else self.c
            try:
                st = logs_start(c, r["cmd"], from_=0, keep=False)
                while not st.done:
                    st.feed(c.recv_id(st.rid, T(20)))
                    if i % 4 == 3 and st.outputs % 40 == 0:
                        time.sleep(0.005)
            except Timeout as e:
                self.fail("replay %d stalled at pos %r of %d: %s" % (i, st.pos, total, e))
            finally:
                if c is not self.c:
                    c.close()
            self.assertEqual((st.received, st.gaps), (total, []), "replay %d" % i)
            self.assertExitLike(st.exit, x)

    def test_attached_stream_and_a_later_replay_are_the_same_log(self):
        st = exec_stream(self.c, gen_argv(n=1500, seed=5), stdin="null")
        out, err = expected_gen(n=1500, seed=5)
        assert_bytes(self, st.stdout(), out, "attached stdout")
        assert_bytes(self, st.stderr(), err, "attached stderr")
        rep = read_logs(self.c, st.cmd)
        self.assertTrue(rep.log == st.log, "replay %r differs from the attached stream %r" % (rep.log, st.log))
        self.assertExitLike(rep.exit, st.exit)

    def test_logs_from_the_middle_return_exactly_the_suffix(self):
        r = self.detached(gen_argv(n=1200, seed=3))
        wait_cmd(self.c, r["cmd"])
        full = read_logs(self.c, r["cmd"])
        total = full.log.total
        self.assertGreater(total, 10000)
        for frm in (1, 4097, total // 3 + 7, total // 2, total - 1):
            with self.subTest(frm=frm):
                st = read_logs(self.c, r["cmd"], from_=frm)
                suffix, o_out, o_err = full.log.suffix(frm)
                self.assertEqual(st.first_pos, frm, "the first output does not start at `from`")
                self.assertEqual(st.first_off, {"stdout": o_out, "stderr": o_err},
                                 "per-stream offsets at `from` do not match the full log")
                self.assertTrue(st.log == suffix, "suffix from %d differs: %r vs %r" % (frm, st.log, suffix))
                self.assertEqual(st.gaps, [])
                self.assertIsNotNone(st.exit)
                self.assertExitLike(st.exit, full.exit)
        for frm in (total, total + 12345):
            with self.subTest(frm=frm):
                st = read_logs(self.c, r["cmd"], from_=frm)
                self.assertEqual((st.outputs, st.gaps), (0, []), "output at or beyond the log's end")
                self.assertIsNotNone(st.exit, "logs at the end of an exited command must give exit")

    def test_logs_of_a_running_command_without_follow_end_with_end_and_the_position(self):
        r = self.detached(["sh", "-c", "echo ready; echo e1 >&2; cat; echo bye"], stdin="pipe")
        cmd = r["cmd"]
        wait_until(lambda: self.get(cmd)["log_end"] == 9, T(10), what="9 bytes in the log")
        st = read_logs(self.c, cmd)
        self.assertEqual((st.stdout(), st.stderr()), (b"ready\n", b"e1\n"))
        self.assertIsNone(st.exit)
        self.assertIsNotNone(st.end, "logs of a running command without follow must end with `end`")
        self.assertEqual(st.end["pos"], 9)
        st = read_logs(self.c, cmd, from_=9)
        self.assertEqual((st.outputs, st.end and st.end["pos"]), (0, 9))
        self.c.ok("stdin", cmd=cmd, data=b"more\n")
        wait_until(lambda: self.get(cmd)["log_end"] == 14, T(10), what="14 bytes in the log")
        st = read_logs(self.c, cmd, from_=9)
        self.assertEqual((st.stdout(), st.stderr()), (b"more\n", b""))
        self.assertEqual(st.first_off, {"stdout": 6, "stderr": 3})
        self.assertEqual(st.end["pos"], 14)
        self.c.ok("close_stdin", cmd=cmd)
        x = wait_cmd(self.c, cmd)
        self.assertEqual(x["code"], 0)
        st = read_logs(self.c, cmd, from_=14)
        self.assertEqual(st.stdout(), b"bye\n")
        self.assertIsNone(st.end, "`end` for an exited command")
        self.assertExitLike(st.exit, x)

    def test_two_followers_on_two_connections_both_get_everything_and_the_exit(self):
        flag = self.flag_path()
        n, seed, binsize = 6000, 11, 20000
        r = self.detached(gen_argv(n=n, seed=seed, binsize=binsize, flag=flag, half=100))
        readers = [self.agent.client(), self.agent.client()]
        for c in readers:
            self.addCleanup(c.close)
        streams = [logs_start(c, r["cmd"], follow=True) for c in readers]
        for st in streams:
            self.assertEqual(st.reply["type"], "ok", st.reply)
        errors = []

        def follow(c, st, slow):
            try:
                while not st.done:
                    st.feed(c.recv_id(st.rid, T(30)))
                    if slow and st.outputs % 50 == 0:
                        time.sleep(0.01)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=follow, args=(c, st, i == 1))
                   for i, (c, st) in enumerate(zip(readers, streams))]
        for t in threads:
            t.start()
        with open(flag, "w"):
            pass
        for t in threads:
            t.join(T(120))
        self.assertFalse(any(t.is_alive() for t in threads), "a follower hung")
        self.assertEqual(errors, [])
        out, err = expected_gen(n=n, seed=seed, binsize=binsize)
        for i, st in enumerate(streams):
            assert_bytes(self, st.stdout(), out, "follower %d stdout" % i)
            assert_bytes(self, st.stderr(), err, "follower %d stderr" % i)
            self.assertEqual(st.gaps, [], "a follower saw a gap")
            self.assertIsNotNone(st.exit, "follower %d got no exit" % i)
            self.assertEqual(st.exit["code"], 0)
        self.assertTrue(streams[0].log == streams[1].log, "the two followers saw different interleavings")


class Disconnect(LifecycleCase):

    def test_attached_exec_keeps_running_after_its_connection_closes_and_its_log_is_complete(self):
        flag = self.flag_path()
        n, seed, binsize = 3000, 21, 60000           # about 3.7 MB: more than any connection backlog
        argv = gen_argv(n=n, seed=seed, binsize=binsize, flag=flag, half=10)
        c1 = self.agent.client()
        rid, r = c1.exec_start(argv, stdin="null")
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])
        st = ExecStream(rid, argv)
        st.feed(r)
        while st.pos == 0:
            st.feed(c1.recv_id(rid))
        self.assertFalse(self.get(r["cmd"])["detached"], "get says detached while exec streams it")
        c1.close()
        with open(flag, "w"):
            pass
        x = wait_cmd(self.c, r["cmd"])
        self.assertEqual((x["code"], x["signal"]), (0, 0), "the command did not finish normally: %r" % x)
        g = self.get(r["cmd"])
        self.assertTrue(g["detached"], "get says not detached though no connection streams it: %r" % g)
        full = read_logs(self.c, r["cmd"])
        out, err = expected_gen(n=n, seed=seed, binsize=binsize)
        assert_bytes(self, full.stdout(), out, "stdout after the disconnect")
        assert_bytes(self, full.stderr(), err, "stderr after the disconnect")
        self.assertEqual(full.gaps, [])
        self.assertExitLike(full.exit, x)

    def test_kill_on_disconnect_still_kills_an_attached_command(self):
        self._kill_on_disconnect(detached=False)

    def test_kill_on_disconnect_kills_a_detached_command_when_its_connection_closes(self):
        self._kill_on_disconnect(detached=True)

    def _kill_on_disconnect(self, detached):
        m = sleep_marker()
        self.addCleanup(kill_procs_with_arg, m)
        c1 = self.agent.client()
        rid, r = c1.exec_start(["sh", "-c", "sleep $1 & sleep $1", "sh", m], stdin="null",
                               kill_on_disconnect=True, detached=detached)
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])
        wait_until(lambda: len([p for p in procs_with_arg(m) if p["comm"] == "sleep"]) == 2, T(10),
                   what="two sleeps")
        time.sleep(0.2)
        self.assertTrue(procs_with_arg(m), "killed before the connection closed")
        c1.close()
        wait_until(lambda: not procs_with_arg(m) and not procs_in_group(r["pid"]), T(10),
                   what="the group to be killed")
        x = wait_cmd(self.c, r["cmd"])
        self.assertEqual((x["code"], x["signal"], x["timed_out"]), (137, 9, False), x)


class Waiting(LifecycleCase):

    def test_wait_blocks_until_exit_and_every_waiter_on_any_connection_gets_it(self):
        r = self.detached(["sh", "-c", "read x; exit $x"], stdin="pipe")
        cmd = r["cmd"]
        waiters = [self.c, self.agent.client(), self.agent.client()]
        for c in waiters[1:]:
            self.addCleanup(c.close)
        rids = []
        for c in waiters:
            rid = c.next_id()
            c.send({"type": "wait", "id": rid, "cmd": cmd})
            rids.append(rid)
        quitter = self.agent.client()            # a waiter whose connection goes away
        quitter.send({"type": "wait", "id": 1, "cmd": cmd})
        time.sleep(T(0.5))
        for c, rid in zip(waiters, rids):
            msgs = c.drain_nowait()
            c.pending.extend(msgs)
            early = [m for m in msgs if m.get("id") == rid]
            self.assertEqual(early, [], "wait answered before the command exited")
        quitter.close()
        self.c.ok("stdin", cmd=cmd, data=b"9\n", eof=True)
        replies = [c.recv_id(rid, T(20)) for c, rid in zip(waiters, rids)]
        for rep in replies:
            self.assertEqual(rep["type"], "ok", rep)
            self.assertEqual((rep["cmd"], rep["code"], rep["signal"], rep["timed_out"]), (cmd, 9, 0, False), rep)
            for k in EXIT_FIELDS:
                self.assertIn(k, rep)
            self.assertExitLike(rep, replies[0])
        self.assertStillServes()

    def test_wait_on_an_already_exited_command_returns_at_once(self):
        res = self.c.run(["sh", "-c", "echo x; exit 6"])
        t0 = time.monotonic()
        x = wait_cmd(self.c, res.cmd, timeout=T(5))
        self.assertLess(time.monotonic() - t0, T(2))
        self.assertEqual((x["cmd"], x["code"], x["stdout_bytes"]), (res.cmd, 6, 2))
        self.assertExitLike(res.exit, x)
        # and again: waiting does not consume anything
        self.assertExitLike(wait_cmd(self.c, res.cmd, timeout=T(5)), x)

    def test_unknown_cmd_is_not_found_for_get_wait_and_logs(self):
        for t, extra in (("get", {}), ("wait", {}), ("logs", {}), ("logs", {"follow": True})):
            with self.subTest(type=t, **extra):
                self.assertErrorReply(self.c.request(t, cmd=987654321, **extra), "not_found")
        self.assertStillServes()


class Records(LifecycleCase):

    def test_get_record_fields_while_running_and_after_exit(self):
        sub = os.path.join(self.agent.workdir, "sub")
        os.makedirs(sub, exist_ok=True)
        argv = ["sh", "-c", "echo hi; read x; echo bye >&2; exit 3"]
        r = self.detached(argv, cwd="sub", stdin="pipe")
        cmd = r["cmd"]
        wait_until(lambda: self.get(cmd)["log_end"] == 3, T(10), what="hi in the log")
        g = self.get(cmd)
        for k in RECORD_FIELDS:
            self.assertIn(k, g, "record without %r: %r" % (k, g))
        self.assertEqual(g["cmd"], cmd)
        self.assertEqual(g["argv"], argv)
        self.assertEqual(g["cwd"], os.path.realpath(sub))
        self.assertEqual(g["user"], self.c.hello["user"])
        self.assertEqual((g["pid"], g["started_ms"]), (r["pid"], r["started_ms"]))
        self.assertEqual(g["state"], "running")
        self.assertIs(g["detached"], True)
        self.assertIs(g["pty"], False)
        self.assertEqual((g["log_start"], g["log_end"]), (0, 3))
        self.assertIsNone(g.get("code"), "a running command has an exit code: %r" % g)
        self.c.ok("stdin", cmd=cmd, data=b"\n", eof=True)
        x = wait_cmd(self.c, cmd)
        g = self.get(cmd)
        self.assertEqual(g["state"], "exited")
        self.assertEqual((g["code"], g["signal"], g["timed_out"]), (3, 0, False), g)
        self.assertEqual((g["stdout_bytes"], g["stderr_bytes"]), (3, 4), g)
        self.assertIsInstance(g["duration_ms"], int)
        self.assertEqual((g["log_start"], g["log_end"]), (0, 7))
        self.assertEqual((g["argv"], g["pid"], g["started_ms"], g["cwd"]),
                         (argv, r["pid"], r["started_ms"], os.path.realpath(sub)))
        self.assertExitLike(g, x)

    def test_get_of_an_attached_command_says_not_detached_and_follows_its_state(self):
        rid, r = self.c.exec_start(["cat"])
        self.addCleanup(kill_sessions, [r["pid"]])
        g = self.get(r["cmd"])
        self.assertEqual((g["state"], g["detached"], g["pty"]), ("running", False, False), g)
        self.c.ok("stdin", cmd=r["cmd"], data=b"abc", eof=True)
        res = self.c.finish(rid, r)
        g = self.get(r["cmd"])
        self.assertEqual((g["state"], g["code"], g["stdout_bytes"]), ("exited", 0, 3), g)
        self.assertExitLike(g, res.exit)

    def test_list_is_newest_first_and_running_filters(self):
        a = self.c.run(["true"])
        ma, mb = sleep_marker(), sleep_marker()
        self.addCleanup(kill_procs_with_arg, ma)
        self.addCleanup(kill_procs_with_arg, mb)
        b = self.detached(["sleep", ma])
        c = self.detached(["sleep", mb])
        lst = self.c.ok("list")["commands"]
        self.assertIsInstance(lst, list)
        ids = [x["cmd"] for x in lst]
        for want in (a.cmd, b["cmd"], c["cmd"]):
            self.assertIn(want, ids)
        self.assertEqual(ids, sorted(ids, reverse=True), "list is not newest first")
        self.assertLess(ids.index(c["cmd"]), ids.index(b["cmd"]))
        self.assertLess(ids.index(b["cmd"]), ids.index(a.cmd))
        for rec in lst:
            for k in RECORD_FIELDS:
                self.assertIn(k, rec, "list record without %r: %r" % (k, rec))
        by = {x["cmd"]: x for x in lst}
        self.assertEqual((by[a.cmd]["state"], by[a.cmd]["code"]), ("exited", 0))
        self.assertEqual((by[b["cmd"]]["state"], by[b["cmd"]]["argv"]), ("running", ["sleep", ma]))
        running = self.c.ok("list", running=True)["commands"]
        rids = [x["cmd"] for x in running]
        self.assertIn(b["cmd"], rids)
        self.assertIn(c["cmd"], rids)
        self.assertNotIn(a.cmd, rids, "an exited command in list {running:true}")
        self.assertTrue(all(x["state"] == "running" for x in running), running)
        self.assertEqual(rids, sorted(rids, reverse=True))
        for x in (b, c):
            self.c.ok("signal", cmd=x["cmd"], signal=9)
            wait_cmd(self.c, x["cmd"])
        rids = [x["cmd"] for x in self.c.ok("list", running=True)["commands"]]
        self.assertNotIn(b["cmd"], rids)
        self.assertNotIn(c["cmd"], rids)


class DrainState(LifecycleCase):
    agent_args = ("--drain-ms", "3000")

    def test_state_stays_running_until_the_exit_event_after_the_drain_window(self):
        m = sleep_marker()
        self.addCleanup(kill_procs_with_arg, m)
        rid, r = self.c.exec_start(["sh", "-c", "sleep $1 & echo started", "sh", m], stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        wait_until(lambda: not is_running(r["pid"]), T(10), what="the leader to exit")
        t_leader = time.monotonic()
        g = self.get(r["cmd"])
        if time.monotonic() - t_leader < 2.5:
            self.assertEqual(g["state"], "running",
                             "state is exited while the drain window is still open: %r" % g)
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual((res.code, res.stdout), (0, b"started\n"))
        self.assertEqual(self.get(r["cmd"])["state"], "exited")


class Many(LifecycleCase):

    def test_1000_short_commands_started_concurrently_report_the_right_exit_codes(self):
        n_conn, per = 4, 250
        conns = [self.c] + [self.agent.client() for _ in range(n_conn - 1)]
        for c in conns[1:]:
            self.addCleanup(c.close)
        # connections 0 and 1: attached; 2 and 3: detached, then wait. Every
        # request is sent before any reply is read.
        plan = []                                   # (conn index, request id, command number)
        for k, c in enumerate(conns):
            for j in range(per):
                i = k * per + j
                rid = c.next_id()
                c.send({"type": "exec", "id": rid, "argv": ["sh", "-c", "exit $(($1 % 7))", "sh", str(i)],
                        "stdin": "null", "detached": k >= 2})
                plan.append((k, rid, i))
        deadline = time.monotonic() + T(240)
        codes = {}
        waits = {}                                  # (conn, wait id) -> i
        streams = {}
        pids = []
        self.addCleanup(kill_sessions, pids)
        for k, rid, i in plan:
            c = conns[k]
            if k < 2:
                streams[(k, rid)] = (ExecStream(rid), i)
                continue
            rep = c.recv_id(rid, max(1, deadline - time.monotonic()))
            self.assertEqual(rep["type"], "ok", "exec %d: %r" % (i, rep))
            pids.append(rep["pid"])
            wid = c.next_id()
            c.send({"type": "wait", "id": wid, "cmd": rep["cmd"]})
            waits[(k, wid)] = i
        for (k, rid), (st, i) in streams.items():
            while not st.done:
                st.feed(conns[k].recv_id(rid, max(1, deadline - time.monotonic())))
            self.assertEqual(st.reply["type"], "ok", "exec %d: %r" % (i, st.reply))
            codes[i] = st.exit["code"]
        for (k, wid), i in waits.items():
            rep = conns[k].recv_id(wid, max(1, deadline - time.monotonic()))
            self.assertEqual(rep["type"], "ok", "wait for %d: %r" % (i, rep))
            codes[i] = rep["code"]
        self.assertEqual(len(codes), n_conn * per)
        wrong = {i: c for i, c in codes.items() if c != i % 7}
        self.assertEqual(wrong, {}, "wrong exit codes (command: code)")
        self.assertEqual(self.agent.lingering_zombies(), [])


class Timeouts(LifecycleCase):

    def _group_gone(self, r, m):
        wait_until(lambda: not procs_with_arg(m) and not procs_in_group(r["pid"]), T(10),
                   what="the whole group to be gone")

    def test_timeout_on_an_attached_command_kills_the_whole_group(self):
        m = sleep_marker()
        self.addCleanup(kill_procs_with_arg, m)
        t0 = time.monotonic()
        res = self.c.run(["sh", "-c", "sleep $1 & echo started; sleep $1", "sh", m], timeout_ms=700,
                         timeout=T(30))
        elapsed = time.monotonic() - t0
        self.addCleanup(kill_sessions, [res.reply["pid"]])
        x = res.exit
        self.assertEqual((x["timed_out"], x["code"], x["signal"]), (True, 137, 9), x)
        self.assertGreaterEqual(elapsed, 0.65, "killed before the deadline")
        self.assertGreaterEqual(x["duration_ms"], 690)
        self.assertEqual(res.stdout, b"started\n")
        self._group_gone(res.reply, m)
        g = self.c.ok("get", cmd=res.cmd)
        self.assertIs(g["timed_out"], True)

    def test_timeout_on_a_detached_command_kills_the_whole_group(self):
        m = sleep_marker()
        self.addCleanup(kill_procs_with_arg, m)
        r = self.detached(["sh", "-c", "sleep $1 & sleep $1", "sh", m], timeout_ms=500)
        wait_until(lambda: len([p for p in procs_with_arg(m) if p["comm"] == "sleep"]) >= 1, T(10),
                   what="sleep to start")
        x = wait_cmd(self.c, r["cmd"], timeout=T(30))
        self.assertEqual((x["timed_out"], x["code"], x["signal"]), (True, 137, 9), x)
        self.assertGreaterEqual(x["duration_ms"], 490)
        self._group_gone(r, m)
        st = read_logs(self.c, r["cmd"])
        self.assertIs(st.exit["timed_out"], True)

    def test_a_command_that_ends_before_its_timeout_is_not_timed_out(self):
        res = self.c.run(["sh", "-c", "exit 3"], timeout_ms=20000)
        self.assertEqual((res.code, res.exit["timed_out"]), (3, False))
        r = self.detached(["sh", "-c", "exit 4"], timeout_ms=20000)
        x = wait_cmd(self.c, r["cmd"])
        self.assertEqual((x["code"], x["timed_out"]), (4, False))


if __name__ == "__main__":
    unittest.main()
