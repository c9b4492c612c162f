"""The `shutdown` request (PROTOCOL.md "Guest duties"; docs/agent.md
"Stopping"): `ok`, then the graceful stop also when the agent is not in init
mode — SIGTERM to every command's tree, up to --grace-ms, SIGKILL to what is
left, exit 0 — with the open connection still getting the exits."""

import time
import unittest

from agentlib import Agent, T, is_running


class ShutdownRequest(unittest.TestCase):

    def start(self, grace_ms):
        a = Agent(("--grace-ms", str(grace_ms))).start()
        self.addCleanup(a.stop, False)
        return a

    @staticmethod
    def until_output(c, rid, want):
        """Read rid's events until `want` is in its stdout; that stdout."""
        out = b""
        while want not in out:
            m = c.recv_id(rid, T(10))
            if m["type"] == "output":
                out += m["data"]
        return out

    @staticmethod
    def until_exit(c, rid):
        out = b""
        while True:
            m = c.recv_id(rid, T(20))
            if m["type"] == "output":
                out += m["data"]
            elif m["type"] == "exit":
                return out, m

    def test_ok_then_sigterm_to_every_command_and_exit_0(self):
        a = self.start(int(T(5) * 1000))
        c = a.client()
        self.addCleanup(c.close)
        rid, r = c.exec_start(["sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; "
                               "while :; do sleep 0.05; done"], stdin="null")
        self.assertEqual(r["type"], "ok", r)
        pid = r["pid"]
        self.until_output(c, rid, b"ready")
        d = c.ok("exec", argv=["sleep", "1000"], detached=True, stdin="null")
        a.stopped = True                       # the agent is expected to exit now
        t0 = time.monotonic()
        self.assertEqual(c.ok("shutdown")["type"], "ok")
        out, x = self.until_exit(c, rid)       # the connection still gets the exit
        self.assertIn(b"got-term", out)
        self.assertEqual((x["code"], x["signal"]), (7, 0))   # SIGTERM first, handled
        self.assertEqual(a.proc.wait(T(10)), 0)
        self.assertLess(time.monotonic() - t0, T(4), "no command needed the grace period")
        self.assertFalse(is_running(pid))
        self.assertFalse(is_running(d["pid"]))
        self.assertIn(b"shutdown request", a.log())
        self.assertIn(b"shutdown: done; exiting", a.log())

    def test_a_command_ignoring_sigterm_is_killed_after_the_grace_period(self):
        grace = 600
        a = self.start(grace)
        c = a.client()
        self.addCleanup(c.close)
        # SIG_IGN is inherited across exec: sleep ignores SIGTERM too
        rid, r = c.exec_start(["sh", "-c", "trap '' TERM; echo ready; sleep 1000"], stdin="null")
        self.assertEqual(r["type"], "ok", r)
        self.until_output(c, rid, b"ready")
        a.stopped = True
        t0 = time.monotonic()
        c.ok("shutdown")
        self.assertEqual(c.ok("shutdown")["type"], "ok")     # again: already under way, ok
        _, x = self.until_exit(c, rid)
        self.assertGreaterEqual(time.monotonic() - t0, grace / 1000 * 0.9)
        self.assertEqual((x["code"], x["signal"]), (137, 9))
        self.assertEqual(a.proc.wait(T(10)), 0)
        self.assertFalse(is_running(r["pid"]))
        self.assertIn(b"shutdown already under way", a.log())

    def test_no_new_connections_during_the_grace_period(self):
        a = self.start(int(T(5) * 1000))
        c = a.client()
        self.addCleanup(c.close)
        rid, r = c.exec_start(["sh", "-c", "trap 'sleep 0.5; exit 0' TERM; echo ready; "
                               "while :; do sleep 0.05; done"], stdin="null")
        self.until_output(c, rid, b"ready")
        a.stopped = True
        c.ok("shutdown")
        with self.assertRaises(OSError):       # the socket file is gone
            a.client(timeout=T(2))
        self.until_exit(c, rid)
        self.assertEqual(a.proc.wait(T(10)), 0)


if __name__ == "__main__":
    unittest.main()
