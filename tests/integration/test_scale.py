"""Many commands in one agent (docs/agent.md "Many commands"; issue 15):
file descriptors per detached command, the agent's RLIMIT_NOFILE against
its commands' own, stdin of detached commands (PROTOCOL.md "exec", "stdin"),
and `list` pages that a client can decode however many records there are.
No timing assertions: bench item 11 measures speed and memory."""

import os
import resource
import unittest

from agentlib import AgentTestCase, T, kill_sessions, wait_until

N = 300
START_SOFT, START_HARD = 1000, 4000   # the agent's limits at start-up in RlimitNofile
WIRE_MAX_OBJECTS = 65536              # PROTOCOL.md §1
CAP_SYS_RESOURCE = 24


def start_detached(c, n, argv, **fields):
    """Pipeline n detached execs of argv; the ok replies, in order."""
    ids = []
    for _ in range(n):
        rid = c.next_id()
        msg = {"type": "exec", "id": rid, "argv": argv, "detached": True, "timeout_ms": 600000}
        msg.update(fields)
        c.send(msg)
        ids.append(rid)
    return [c.recv_id(rid, T(60)) for rid in ids]


def objects(o):
    """msgpack objects in a decoded message, counted as the frame check does:
    a map or array, and each key and element."""
    if isinstance(o, dict):
        return 1 + sum(objects(k) + objects(v) for k, v in o.items())
    if isinstance(o, (list, tuple)):
        return 1 + sum(objects(v) for v in o)
    return 1


def have_cap(bit):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def nr_open():
    with open("/proc/sys/fs/nr_open") as f:
        return int(f.read())


class FdsPerCommand(AgentTestCase):
    """Each detached command costs the agent its stdout and stderr pipes and
    nothing else: no stdin pipe unless asked for, no cgroup fd."""

    agent_args = ("--max-commands", str(N + 64))

    def start_sleeps(self, n, **fields):
        replies = start_detached(self.c, n, ["sleep", "3600"], **fields)
        for r in replies:
            self.assertEqual(r["type"], "ok", r)
        pids = [r["pid"] for r in replies]
        self.addCleanup(kill_sessions, pids)
        self.addCleanup(self.kill_all, replies)
        return replies

    def kill_all(self, replies):
        """SIGKILL them and wait until none runs, so that the next test counts
        fds from a quiet agent."""
        for r in replies:
            self.c.request("signal", cmd=r["cmd"], signal=9)
        wait_until(lambda: self.c.ok("stats")["commands_running"] == 0, T(30),
                   what="every command reaped")

    def test_a_detached_command_costs_the_agent_at_most_two_fds(self):
        before = len(self.agent.fds())
        self.start_sleeps(N)
        self.assertEqual(self.c.ok("stats")["commands_running"], N)
        grown = len(self.agent.fds()) - before
        self.assertLessEqual(grown, 2 * N, "%d detached commands took %d fds (%.2f each): %r"
                             % (N, grown, grown / N, sorted(set(self.agent.fd_targets().values()))[:20]))

    def test_a_detached_command_that_asks_for_a_stdin_pipe_costs_one_more(self):
        before = len(self.agent.fds())
        self.start_sleeps(50, stdin="pipe")
        grown = len(self.agent.fds()) - before
        self.assertLessEqual(grown, 3 * 50, "%d fds for 50 commands with stdin pipes" % grown)
        self.assertGreater(grown, 2 * 50, "a stdin pipe was asked for and not held")


class DetachedStdin(AgentTestCase):
    """A detached command reads /dev/null unless its exec asks for a pipe;
    then stdin requests reach it as they reach an attached command."""

    def detached(self, argv, **fields):
        r = start_detached(self.c, 1, argv, **fields)[0]
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])
        return r

    def test_a_detached_command_reads_dev_null_by_default(self):
        r = self.detached(["sh", "-c", "cat; echo eof"])
        self.assertEqual(self.c.ok("wait", cmd=r["cmd"], timeout=T(20))["code"], 0)
        self.assertErrorReply(self.c.request("stdin", cmd=r["cmd"], data=b"late\n"), "exited")

    def test_stdin_to_a_running_detached_command_without_a_pipe_is_stdin_closed(self):
        r = self.detached(["sleep", "3600"])
        self.assertErrorReply(self.c.request("stdin", cmd=r["cmd"], data=b"x\n"), "stdin_closed")
        self.assertEqual(self.c.request("close_stdin", cmd=r["cmd"])["type"], "ok",
                         "closing what was never open is not an error")
        self.c.ok("signal", cmd=r["cmd"], signal=9)

    def test_a_detached_command_with_stdin_pipe_gets_the_bytes(self):
        r = self.detached(["sh", "-c", "read x; echo \"got $x\""], stdin="pipe")
        self.c.ok("stdin", cmd=r["cmd"], data=b"hello\n", eof=True)
        self.assertEqual(self.c.ok("wait", cmd=r["cmd"], timeout=T(20))["code"], 0)
        rid = self.c.next_id()
        self.c.send({"type": "logs", "id": rid, "cmd": r["cmd"]})
        out = b""
        while True:
            m = self.c.recv_id(rid, T(20))
            if m["type"] == "output":
                out += m["data"]
            elif m["type"] in ("exit", "end"):
                break
        self.assertEqual(out, b"got hello\n")


def start_limits():
    resource.setrlimit(resource.RLIMIT_NOFILE, (START_SOFT, START_HARD))


class RlimitNofile(AgentTestCase):
    """The agent raises its own RLIMIT_NOFILE; its commands get the limits it
    started with."""

    agent_preexec = start_limits

    def agent_limits(self):
        with open("/proc/%d/limits" % self.agent.pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return int(soft), int(hard)
        self.fail("no 'Max open files' in the agent's limits")

    def test_a_command_gets_the_agents_start_up_limits(self):
        r = self.c.run(["sh", "-c", "ulimit -Sn; ulimit -Hn"])
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.stdout.split(), [str(START_SOFT).encode(), str(START_HARD).encode()])

    def test_the_agent_raises_its_own_limit_and_logs_it(self):
        soft, hard = self.agent_limits()
        if have_cap(CAP_SYS_RESOURCE):
            want = min(nr_open(), 1 << 20)
            self.assertEqual((soft, hard), (want, want), "root with CAP_SYS_RESOURCE: fs.nr_open")
        else:
            self.assertEqual((soft, hard), (START_HARD, START_HARD), "soft limit raised to the hard one")
        wait_until(lambda: b"RLIMIT_NOFILE %d/%d (commands get %d/%d)" % (soft, hard, START_SOFT, START_HARD)
                   in self.agent.log(), T(5), what="the limits in the agent's log")


class ListPages(AgentTestCase):
    """Every `list` page stays within the decoder's object bound, however
    small the records are in bytes: records with long argvs of short
    arguments used to fill one 1 MiB page with more objects than any client
    may decode."""

    def test_list_pages_stay_within_65536_objects_and_hold_every_record(self):
        argv = ["sleep", "3600"] + ["0"] * 1000     # GNU sleep adds its arguments
        replies = start_detached(self.c, 100, argv)
        for r in replies:
            self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"] for r in replies])
        self.addCleanup(lambda: [self.c.request("signal", cmd=r["cmd"], signal=9) for r in replies])
        seen, cursor, pages = [], 0, 0
        while True:
            fields = {"running": True}
            if cursor:
                fields["cursor"] = cursor
            page = self.c.ok("list", **fields)
            pages += 1
            self.assertLessEqual(objects(page), WIRE_MAX_OBJECTS,
                                 "page %d: %d records in %d objects" % (pages, len(page["commands"]),
                                                                        objects(page)))
            self.assertGreater(len(page["commands"]), 0)
            seen += [rec["cmd"] for rec in page["commands"]]
            if not page["more"]:
                break
            cursor = page["cursor"]
        self.assertGreater(pages, 1)
        self.assertEqual(sorted(seen), sorted(r["cmd"] for r in replies))


if __name__ == "__main__":
    unittest.main()
