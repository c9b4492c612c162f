"""Work pending on a connection (docs/agent.md "Pending work on a
connection"). Every request that answers later — a `wait`, a `logs`
follower, an attached exec, a stdin acknowledgement, a file operation, a
`sync` — is owned by its connection: a client that half-closes (shuts down
its sending side, as socat does at the end of its input) still gets each of
those answers, and only then is the connection closed; a connection that
closes entirely ends them all (the sanitizer build checks that every one is
freed) and kills its kill_on_disconnect commands, while the commands
themselves, and other connections, go on."""

import os
import socket
import time
import unittest

from agentlib import AgentTestCase, T, is_running, kill_sessions, wait_until

KiB = 1024
MiB = 1024 * KiB


class HalfClosed(AgentTestCase):
    """Each kind of pending keeps a half-closed connection open until it is answered."""

    def half_closed(self, *msgs):
        """Send msgs on a new connection, shut down its sending side, and
        return every frame read until the agent closes it."""
        c = self.agent.client()
        self.addCleanup(c.close)
        for m in msgs:
            c.send(m)
        c.sock.shutdown(socket.SHUT_WR)
        return c.expect_closed(T(30))

    def detached(self, argv, **fields):
        r = self.c.ok("exec", argv=argv, detached=True, **fields)
        self.addCleanup(kill_sessions, [r["pid"]])
        return r

    def test_a_wait_is_answered_after_the_half_close_then_the_connection_closes(self):
        r = self.detached(["sh", "-c", "sleep 1; exit 7"], stdin="null")
        frames = self.half_closed({"type": "wait", "id": 1, "cmd": r["cmd"]})
        self.assertEqual([(m["type"], m["id"]) for m in frames], [("ok", 1)], frames)
        self.assertEqual(frames[0]["code"], 7)

    def test_a_logs_follower_gets_the_rest_and_the_exit(self):
        r = self.detached(["sh", "-c", "echo one; sleep 1; echo two"], stdin="null")
        frames = self.half_closed({"type": "logs", "id": 1, "cmd": r["cmd"], "follow": True})
        self.assertEqual(frames[0]["type"], "ok", frames[0])
        self.assertEqual(frames[-1]["type"], "exit", frames[-1])
        out = b"".join(m["data"] for m in frames if m["type"] == "output")
        self.assertEqual(out, b"one\ntwo\n")

    def test_an_attached_exec_streams_to_its_exit(self):
        frames = self.half_closed({"type": "exec", "id": 1, "stdin": "null",
                                   "argv": ["sh", "-c", "sleep 1; echo late"]})
        self.addCleanup(kill_sessions, [frames[0].get("pid")] if frames else [])
        self.assertEqual(frames[0]["type"], "ok", frames[0])
        self.assertEqual(frames[-1]["type"], "exit", frames[-1])
        self.assertEqual(b"".join(m["data"] for m in frames if m["type"] == "output"), b"late\n")

    def test_a_stdin_acknowledgement_is_sent_once_the_command_reads(self):
        # 256 KiB cannot fit the 64 KiB pipe: the ok waits until cat reads, a
        # second after the half-close
        r = self.detached(["sh", "-c", "sleep 1; exec cat >/dev/null"], stdin="pipe")
        frames = self.half_closed({"type": "stdin", "id": 1, "cmd": r["cmd"],
                                   "data": b"x" * (256 * KiB)})
        self.assertEqual([(m["type"], m["id"]) for m in frames], [("ok", 1)], frames)

    def test_a_file_read_is_relayed_to_its_end(self):
        body = os.urandom(8 * MiB)
        with open(os.path.join(self.agent.workdir, "big"), "wb") as f:
            f.write(body)
        frames = self.half_closed({"type": "read", "id": 1, "path": "big"})
        self.assertEqual(frames[0]["type"], "ok", frames[0])
        self.assertEqual(frames[-1], {"type": "end", "id": 1, "bytes": len(body)})
        self.assertEqual(b"".join(m["data"] for m in frames if m["type"] == "data"), body)

    def test_a_sync_is_answered(self):
        frames = self.half_closed({"type": "sync", "id": 1})
        self.assertEqual([(m["type"], m["id"]) for m in frames], [("ok", 1)], frames)

    def test_all_kinds_at_once_each_get_their_answer(self):
        w = self.detached(["sh", "-c", "sleep 1; exit 3"], stdin="null")
        f = self.detached(["sh", "-c", "sleep 1; echo f"], stdin="null")
        k = self.detached(["sh", "-c", "sleep 1; exec cat >/dev/null"], stdin="pipe")
        with open(os.path.join(self.agent.workdir, "small"), "wb") as fh:
            fh.write(b"abc")
        frames = self.half_closed(
            {"type": "wait", "id": 1, "cmd": w["cmd"]},
            {"type": "logs", "id": 2, "cmd": f["cmd"], "follow": True},
            {"type": "stdin", "id": 3, "cmd": k["cmd"], "data": b"x" * (256 * KiB)},
            {"type": "read", "id": 4, "path": "small"},
            {"type": "sync", "id": 5},
            {"type": "exec", "id": 6, "argv": ["sh", "-c", "sleep 1"], "stdin": "null"})
        last = {}
        for m in frames:
            last[m["id"]] = m["type"]
        self.assertEqual(last, {1: "ok", 2: "exit", 3: "ok", 4: "end", 5: "ok", 6: "exit"})


class Bound(AgentTestCase):
    """At most 4096 requests wait for their answer on one connection when an
    exec stream, logs or wait would add one (conn.h CONN_MAX_STREAMS); stdin
    acknowledgements count among them."""

    def test_the_4096th_pending_request_is_the_last_and_room_comes_back(self):
        r = self.c.ok("exec", argv=["sh", "-c", "read x; exit 5"], detached=True, stdin="pipe")
        self.addCleanup(kill_sessions, [r["pid"]])
        fed = self.c.ok("exec", argv=["sh", "-c", "sleep 1000; cat"], detached=True,
                        stdin="pipe")
        self.addCleanup(kill_sessions, [fed["pid"]])
        c = self.agent.client()
        self.addCleanup(c.close)
        # a stdin acknowledgement that waits (256 KiB into a 64 KiB pipe nobody reads)
        c.send({"type": "stdin", "id": 1, "cmd": fed["cmd"], "data": b"x" * (256 * KiB)})
        for i in range(2, 4097):
            c.send({"type": "wait", "id": i, "cmd": r["cmd"]})
        c.send({"type": "wait", "id": 4097, "cmd": r["cmd"]})
        c.send({"type": "logs", "id": 4098, "cmd": r["cmd"], "follow": True})
        for rid in (4097, 4098):
            m = c.recv_id(rid, T(30))
            self.assertEqual((m["type"], m.get("code")), ("error", "too_many"), m)
        self.assertEqual(c.request("ping")["type"], "ok")    # other requests still go
        self.c.ok("stdin", cmd=r["cmd"], data=b"\n")         # the command exits
        codes = [c.recv_id(i, T(30))["code"] for i in range(2, 4097)]
        self.assertEqual(set(codes), {5})
        self.assertEqual(c.ok("logs", cmd=fed["cmd"])["type"], "ok")   # room again


class Closed(AgentTestCase):
    """A connection that goes away ends its pendings; its commands go on
    unless kill_on_disconnect."""

    def test_a_closed_connection_ends_every_pending_and_kills_only_its_kill_on_disconnect_commands(self):
        c = self.agent.client()
        with open(os.path.join(self.agent.workdir, "big"), "wb") as fh:
            fh.write(os.urandom(8 * MiB))
        doomed = c.ok("exec", argv=["sleep", "1000"], detached=True, stdin="null",
                      kill_on_disconnect=True)
        waited = c.ok("exec", argv=["sleep", "1000"], detached=True, stdin="null")
        followed = c.ok("exec", argv=["sh", "-c", "while :; do echo x; sleep 0.1; done"],
                        detached=True, stdin="null")
        fed = c.ok("exec", argv=["sh", "-c", "sleep 1000; cat"], detached=True, stdin="pipe")
        pids = [doomed["pid"], waited["pid"], followed["pid"], fed["pid"]]
        self.addCleanup(kill_sessions, pids)
        c.send({"type": "wait", "id": 101, "cmd": waited["cmd"]})
        c.send({"type": "logs", "id": 102, "cmd": followed["cmd"], "follow": True})
        c.send({"type": "stdin", "id": 103, "cmd": fed["cmd"], "data": b"x" * (256 * KiB)})
        c.send({"type": "read", "id": 104, "path": "big"})     # left unread
        c.send({"type": "sync", "id": 105})
        _, attached = c.exec_start(["sleep", "1000"], stdin="null")
        self.addCleanup(kill_sessions, [attached["pid"]])
        time.sleep(T(0.5))
        c.close()
        wait_until(lambda: not is_running(doomed["pid"]), T(10),
                   what="the kill_on_disconnect command killed")
        for pid in (waited["pid"], followed["pid"], fed["pid"]):
            self.assertTrue(is_running(pid),
                            "a command without kill_on_disconnect died with its connection")
        # the agent serves on, and the closed connection is no longer counted
        wait_until(lambda: self.c.ok("stats")["connections"] == 1, T(10), what="one connection left")
        for r in (waited, followed, fed, attached):
            self.assertEqual(self.c.ok("get", cmd=r["cmd"])["state"], "running")
        self.assertTrue(is_running(attached["pid"]), "the attached exec's command died with its stream")


if __name__ == "__main__":
    unittest.main()
