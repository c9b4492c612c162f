"""`release` (PROTOCOL.md "get, list, wait"): the host drops exited
commands' logs and records; running commands and logs being streamed are
refused; the memory is accounted back (stats' log bytes)."""

import unittest

from agentlib import AgentTestCase, T, wait_until
from test_cli import CtlTestCase


class Release(AgentTestCase):
    def run_to_exit(self, argv):
        r = self.c.run(argv)
        self.assertEqual(r.code, 0)
        return r.reply["cmd"]

    def log_bytes(self):
        return self.c.ok("stats")["log_bytes"]

    def test_release_one_forgets_its_record_and_log(self):
        cmd = self.run_to_exit(["sh", "-c", "head -c 300000 /dev/zero"])
        other = self.run_to_exit(["echo", "keep me"])
        r = self.c.ok("release", cmd=cmd)
        self.assertEqual(r["released"], 1)
        self.assertErrorReply(self.c.request("get", cmd=cmd), "not_found")
        self.assertErrorReply(self.c.request("logs", cmd=cmd), "not_found")
        self.assertErrorReply(self.c.request("release", cmd=cmd), "not_found")
        self.assertEqual(self.c.ok("get", cmd=other)["state"], "exited")

    def test_release_of_a_running_command_is_refused(self):
        rid = self.c.next_id()
        self.c.send({"type": "exec", "id": rid, "argv": ["sleep", "30"], "detached": True})
        cmd = self.c.recv_id(rid)["cmd"]
        self.addCleanup(lambda: self.c.request("signal", cmd=cmd, signal=9))
        self.assertErrorReply(self.c.request("release", cmd=cmd), "running")
        self.assertEqual(self.c.ok("get", cmd=cmd)["state"], "running")
        self.assertEqual(self.c.ok("release", all=True)["released"] >= 0, True)
        self.assertEqual(self.c.ok("get", cmd=cmd)["state"], "running", "all skips running ones")

    def test_release_of_a_log_being_streamed_is_busy_then_works(self):
        cmd = self.run_to_exit(["sh", "-c", "head -c 8000000 /dev/urandom"])
        reader = self.agent.client()
        rid = reader.next_id()
        reader.send({"type": "logs", "id": rid, "cmd": cmd})
        self.assertEqual(reader.recv_id(rid)["type"], "ok")  # the reader exists; read no more
        self.assertErrorReply(self.c.request("release", cmd=cmd), "busy")
        self.assertEqual(self.c.ok("release", all=True)["released"] >= 0, True)
        self.assertEqual(self.c.ok("get", cmd=cmd)["state"], "exited", "all skips busy ones")
        reader.abort()
        wait_until(lambda: self.c.request("release", cmd=cmd).get("type") == "ok", T(10),
                   what="release once the reader is gone")
        self.assertErrorReply(self.c.request("get", cmd=cmd), "not_found")

    def test_release_all_gives_the_log_bytes_back(self):
        for _ in range(3):
            self.run_to_exit(["sh", "-c", "head -c 1000000 /dev/zero"])
        self.assertGreater(self.log_bytes(), 3_000_000)
        r = self.c.ok("release", all=True)
        self.assertGreaterEqual(r["released"], 3)
        self.assertEqual(self.log_bytes(), 0)
        self.assertEqual(self.c.ok("list")["commands"], [])
        self.assertEqual(self.c.ok("stats")["commands_exited"], 0)

    def test_bad_requests(self):
        self.assertErrorReply(self.c.request("release"), "bad_request")
        self.assertErrorReply(self.c.request("release", cmd="x"), "bad_request")
        self.assertErrorReply(self.c.request("release", cmd=999999), "not_found")


class ReleaseCli(CtlTestCase):
    def test_sandboxctl_release_ids_and_all(self):
        ids = []
        for _ in range(3):
            p = self.ctl("exec", "--detach", "--", "true")
            self.assertEqual(p.returncode, 0, p.stderr)
            ids.append(p.stdout.decode().strip())
            self.assertEqual(self.ctl("wait", ids[-1]).returncode, 0)
        p = self.ctl("release", ids[0])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.ctl("inspect", ids[0]).returncode, 1)
        p = self.ctl("release", ids[0])
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"no command", p.stderr)
        self.assertEqual(self.ctl("release").returncode, 2)
        self.assertEqual(self.ctl("release", "--all", ids[1]).returncode, 2)
        self.assertEqual(self.ctl("release", "--all").returncode, 0)
        self.assertEqual(self.ctl("inspect", ids[2]).returncode, 1)


if __name__ == "__main__":
    unittest.main()
