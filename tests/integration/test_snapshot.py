"""Snapshot/restore as the host sees it (docs/agent.md "Snapshot and
restore"; PROTOCOL.md "Guest duties"): every connection vanishes at once in
the middle of streaming commands — as when a VM is snapshotted and restored —
then new clients reconnect, send `restored`, and pick the commands up by id.
The commands must have kept running, their logs must replay every byte from 0
with no gap, and their exits must be right."""

import socket
import struct
import time
import unittest

from agentlib import AgentTestCase, Client, T, is_running

LINES = 300          # ~3 s at one line every 10 ms


def counter(prefix, n, code, stream=""):
    """sh that prints `<prefix> 00000` .. n-1, one line every 10 ms, then exits code."""
    redirect = " >&2" if stream == "stderr" else ""
    return ["sh", "-c", "i=0; while [ $i -lt %d ]; do printf '%s %%05d\\n' $i%s; i=$((i+1)); "
            "sleep 0.01; done; exit %d" % (n, prefix, redirect, code)]


def expected(prefix, n):
    return b"".join(b"%s %05d\n" % (prefix.encode(), i) for i in range(n))


def cut(client):
    """Vanish abruptly: SO_LINGER 0 makes close() send a reset."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


class CutAllConnections(AgentTestCase):

    def replay(self, c, cmd):
        """logs from 0, following to the exit: (stdout, stderr, exit); positions
        contiguous."""
        r = c.ok("logs", cmd=cmd, follow=True, **{"from": 0})
        self.assertEqual(r["log_start"], 0, "the log lost its beginning")
        rid = r["id"]
        data = {"stdout": b"", "stderr": b""}
        pos = 0
        while True:
            m = c.recv_id(rid, T(20))
            if m["type"] == "output":
                self.assertEqual(m["pos"], pos, "gap in the replay of cmd %d" % cmd)
                self.assertEqual(m["offset"], len(data[m["stream"]]))
                data[m["stream"]] += m["data"]
                pos += len(m["data"])
            elif m["type"] == "exit":
                return data["stdout"], data["stderr"], m
            else:
                self.fail("unexpected event in a replay: %r" % (m,))

    def test_commands_survive_all_connections_vanishing_and_replay_byte_exact(self):
        gen0 = self.c.hello["generation"]
        clients = [self.agent.client() for _ in range(3)]
        self.addCleanup(lambda: [c.close() for c in clients])
        specs = [  # (client, argv, prefix, stream, code, detached)
            (0, "alpha", "stdout", 3, False),
            (1, "beta", "stderr", 0, False),
            (2, "gamma", "stdout", 5, True),
        ]
        cmds = []
        for ci, prefix, stream, code, detached in specs:
            rid, r = clients[ci].exec_start(counter(prefix, LINES, code, stream), stdin="null",
                                            detached=detached)
            self.assertEqual(r["type"], "ok", r)
            cmds.append((rid, r, ci, prefix, stream, code))
        # a follower of the detached one as well, on the third connection
        fr = clients[2].ok("logs", cmd=cmds[2][1]["cmd"], follow=True)
        # mid-stream: every attached stream and the follower have seen output
        for rid, r, ci, prefix, stream, code in cmds[:2]:
            got = 0
            while got < 200:
                m = clients[ci].recv_id(rid, T(10))
                self.assertEqual(m["type"], "output", m)
                got += len(m["data"])
        m = clients[2].recv_id(fr["id"], T(10))
        self.assertEqual(m["type"], "output", m)

        for c in clients:                       # all at once, with resets
            cut(c)
        self.c.close()
        cut_at = time.monotonic()

        for _, r, *_ in cmds:
            self.assertTrue(is_running(r["pid"]), "a command died with the connections")

        with self.agent.client() as n1:
            self.assertEqual(n1.hello["generation"], gen0)
            self.assertEqual(n1.ok("restored")["generation"], gen0 + 1)
            with self.agent.client() as n2:
                self.assertEqual(n2.hello["generation"], gen0 + 1)
                running = {x["cmd"] for x in n2.ok("list", running=True)["commands"]}
                for _, r, *_ in cmds:
                    self.assertIn(r["cmd"], running)
                for _, r, ci, prefix, stream, code in cmds:
                    out, err, x = self.replay(n2, r["cmd"])
                    want = expected(prefix, LINES)
                    got = err if stream == "stderr" else out
                    self.assertEqual(got, want, "replay of %s is not byte-exact" % prefix)
                    self.assertEqual(err if stream == "stdout" else out, b"")
                    self.assertEqual((x["code"], x["signal"]), (code, 0))
                    self.assertEqual(x["stdout_bytes"] + x["stderr_bytes"], len(want))
                    w = n1.ok("wait", cmd=r["cmd"])
                    self.assertEqual(w["code"], code)
        self.assertGreater(time.monotonic() - cut_at, 0.5,
                           "the commands ended too soon for the cut to be mid-stream")
        self.assertStillServes(self.agent.client())


if __name__ == "__main__":
    unittest.main()
