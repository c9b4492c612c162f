"""Process trees: a kill or a timeout reaches every process of a command —
its process group always, and with the `cgroup` capability also
descendants that left the group with setsid or by double-forking
(PROTOCOL.md "signal", "Timeouts and process trees")."""

import os
import signal
import time
import unittest

from agentlib import (Agent, AgentTestCase, T, is_running, kill_sessions, procs_in_group, wait_until)
from lifelib import caps, kill_procs_with_arg, procs_with_arg, sleep_marker, wait_cmd

NEEDS_CGROUP = "the agent does not report the cgroup capability (no per-command cgroups here)"

# $1 is a unique sleep argument; every process of the tree carries it.
PLAIN = "sleep $1 & sleep $1"
SETSID = "setsid sleep $1 & sleep $1"
DAEMON = '(setsid sh -c "sleep $1" &) ; sleep $1'


class TreeCase(AgentTestCase):

    def has_cgroup(self):
        return "cgroup" in caps(self.c)

    def start(self, script, want, escaped=0, **fields):
        """Run `sh -c script sh <marker>`; wait until `want` sleeps run and
        `escaped` processes of the tree are outside the command's session.
        (id, reply, marker)."""
        m = sleep_marker()
        self.addCleanup(kill_procs_with_arg, m)
        rid, r = self.c.exec_start(["sh", "-c", script, "sh", m], stdin="null", **fields)
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])

        def ready():
            procs = procs_with_arg(m)
            sleeps = [p for p in procs if p["comm"] == "sleep"]
            out = [p for p in procs if p["sid"] != r["pid"]]
            return len(sleeps) >= want and len(out) >= escaped and procs
        wait_until(ready, T(10), what="%d sleeps, %d outside the session" % (want, escaped))
        return rid, r, m

    def gone(self, m, r, what):
        wait_until(lambda: not procs_with_arg(m) and not procs_in_group(r["pid"]), T(10),
                   what="nothing of %s to survive" % what)

    def escaped(self, m, r):
        return [p for p in procs_with_arg(m) if p["sid"] != r["pid"]]


class GroupKill(TreeCase):

    def test_sigkill_to_the_group_leaves_nothing(self):
        rid, r, m = self.start(PLAIN, 2)
        self.c.ok("signal", cmd=r["cmd"], signal=9)
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual((res.code, res.exit["signal"]), (137, 9))
        self.gone(m, r, "the group after SIGKILL")

    def test_sigterm_to_the_group_leaves_nothing(self):
        rid, r, m = self.start(PLAIN, 2)
        self.c.ok("signal", cmd=r["cmd"])               # default: 15, group
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual((res.code, res.exit["signal"]), (143, 15))
        self.gone(m, r, "the group after SIGTERM")

    def test_timeout_leaves_nothing_of_the_group(self):
        rid, r, m = self.start(PLAIN, 2, timeout_ms=800)
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual((res.code, res.exit["timed_out"]), (137, True))
        self.gone(m, r, "the group after the timeout")


class Escapees(TreeCase):
    """Descendants that left the process group."""

    def _kill(self, script, sig):
        escaped_n = 1
        rid, r, m = self.start(script, 2, escaped=escaped_n)
        self.assertTrue(self.escaped(m, r), "the setsid'd process is not outside the session")
        self.c.ok("signal", cmd=r["cmd"], signal=sig)
        res = self.c.finish(rid, r, timeout=T(20))
        self.assertEqual(res.exit["signal"], sig, res.exit)
        if self.has_cgroup():
            self.gone(m, r, "the tree (setsid'd descendants included) after signal %d" % sig)
        else:
            # documented: without cgroup v2 a descendant that left the group escapes
            time.sleep(0.5)
            self.assertTrue(self.escaped(m, r), "without cgroups the setsid'd process was expected to "
                            "escape (PROTOCOL.md) but it is gone")
            self.assertEqual(procs_in_group(r["pid"]), [], "the process group itself survived")
            kill_procs_with_arg(m)
            wait_until(lambda: not procs_with_arg(m), T(10), what="the escapee to be cleaned up")
            self.skipTest(NEEDS_CGROUP + "; verified the documented escape instead")

    def _timeout(self, script):
        rid, r, m = self.start(script, 2, escaped=1, timeout_ms=1500)
        res = self.c.finish(rid, r, timeout=T(30))
        self.assertEqual((res.code, res.exit["timed_out"]), (137, True), res.exit)
        if self.has_cgroup():
            self.gone(m, r, "the tree after the timeout")
        else:
            time.sleep(0.5)
            self.assertTrue(self.escaped(m, r), "without cgroups the setsid'd process was expected to escape")
            kill_procs_with_arg(m)
            wait_until(lambda: not procs_with_arg(m), T(10), what="the escapee to be cleaned up")
            self.skipTest(NEEDS_CGROUP + "; verified the documented escape instead")

    def test_sigkill_reaches_a_setsid_child(self):
        self._kill(SETSID, 9)

    def test_sigterm_reaches_a_setsid_child(self):
        self._kill(SETSID, 15)

    def test_sigkill_reaches_a_double_forked_daemon(self):
        self._kill(DAEMON, 9)

    def test_sigterm_reaches_a_double_forked_daemon(self):
        self._kill(DAEMON, 15)

    def test_timeout_reaches_a_setsid_child(self):
        self._timeout(SETSID)

    def test_timeout_reaches_a_double_forked_daemon(self):
        self._timeout(DAEMON)

    def test_kill_on_disconnect_reaches_a_double_forked_daemon(self):
        if not self.has_cgroup():
            self.skipTest(NEEDS_CGROUP)
        c1 = self.agent.client()
        m = sleep_marker()
        self.addCleanup(kill_procs_with_arg, m)
        rid, r = c1.exec_start(["sh", "-c", DAEMON, "sh", m], stdin="null", kill_on_disconnect=True)
        self.assertEqual(r["type"], "ok", r)
        self.addCleanup(kill_sessions, [r["pid"]])
        wait_until(lambda: self.escaped(m, r) and len(procs_with_arg(m)) >= 3, T(10), what="the daemon")
        c1.close()
        self.gone(m, r, "the tree after the connection closed")
        self.assertEqual(wait_cmd(self.c, r["cmd"])["code"], 137)


class Cgroups(TreeCase):
    """Where per-command cgroups are in use."""

    def setUp(self):
        super().setUp()
        if not self.has_cgroup():
            self.skipTest(NEEDS_CGROUP)

    @staticmethod
    def cgroup_of(pid):
        try:
            with open("/proc/%d/cgroup" % pid) as f:
                for line in f:
                    if line.startswith("0::"):
                        return line[3:].strip()
        except OSError:
            return None
        return None

    @staticmethod
    def cgroup2_mount():
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                sep = parts.index("-")
                if parts[sep + 1] == "cgroup2":
                    return parts[4]
        return None

    def test_every_process_of_a_command_is_in_its_own_cgroup_named_after_it(self):
        rid, r, m = self.start(DAEMON, 2, escaped=1)
        paths = {p["pid"]: self.cgroup_of(p["pid"]) for p in procs_with_arg(m)}
        want = "/sandbox-agent/agent-%d/cmd-%d" % (self.agent.pid, r["cmd"])
        for pid, path in paths.items():
            if path is None:
                continue                               # exited meanwhile
            self.assertTrue(path.endswith(want), "process %d of cmd %d is in cgroup %r, not ...%s"
                            % (pid, r["cmd"], path, want))
        self.assertNotEqual(self.cgroup_of(self.agent.pid), paths[r["pid"]],
                            "the command shares the agent's cgroup")
        mnt = self.cgroup2_mount()
        cgdir = mnt + paths[r["pid"]] if mnt else None
        self.c.ok("signal", cmd=r["cmd"], signal=9)
        self.c.finish(rid, r, timeout=T(20))
        self.gone(m, r, "the tree")
        if cgdir:
            wait_until(lambda: not os.path.exists(cgdir), T(10),
                       what="the command's cgroup %s to be removed after its exit" % cgdir)

    def test_the_cgroup_directory_of_a_dead_agent_is_removed_when_an_agent_starts(self):
        mnt = self.cgroup2_mount()
        self.assertIsNotNone(mnt, "cgroup capability without a cgroup2 mount")
        dead = Agent(self.agent.extra_args, dev=self.agent.dev).start()
        self.addCleanup(dead.stop, False)
        m = sleep_marker()
        self.addCleanup(kill_procs_with_arg, m)
        with dead.client() as dc:
            rid, r = dc.exec_start(["sleep", m], stdin="null")
            self.assertEqual(r["type"], "ok", r)
            self.addCleanup(kill_sessions, [r["pid"]])
        path = self.cgroup_of(r["pid"])
        agent_dir = mnt + path.rsplit("/", 1)[0]
        self.assertTrue(agent_dir.endswith("/sandbox-agent/agent-%d" % dead.pid), agent_dir)
        dead.stopped = True
        os.kill(dead.pid, signal.SIGKILL)             # no chance to clean up after itself
        dead.proc.wait(T(10))
        # (any agent starting on this machine may now clean it up: check before
        # the sleep that keeps it busy is gone)
        self.assertTrue(os.path.isdir(agent_dir), "the dead agent's directory vanished")
        kill_procs_with_arg(m)
        wait_until(lambda: not procs_with_arg(m), T(10), what="the orphaned sleep to die")
        fresh = Agent(self.agent.extra_args, dev=self.agent.dev).start()
        self.addCleanup(fresh.stop, False)
        wait_until(lambda: not os.path.exists(agent_dir), T(10),
                   what="%s to be removed by the next agent's start-up" % agent_dir)
        self.assertTrue(fresh.alive())

    def test_two_agents_do_not_kill_each_others_commands(self):
        # Two fresh agents side by side (as under `ctest -j`), each starting
        # its first command, so that their command ids are likely equal:
        # killing one agent's command must not touch the other's.
        agents = []
        for _ in range(2):
            ag = Agent(self.agent.extra_args, dev=self.agent.dev).start()
            self.addCleanup(ag.stop, False)
            agents.append(ag)
        clients = [ag.client() for ag in agents]
        for c in clients:
            self.addCleanup(c.close)
        marks = [sleep_marker(), sleep_marker()]
        runs = []
        for c, m in zip(clients, marks):
            self.addCleanup(kill_procs_with_arg, m)
            rid, r = c.exec_start(["sleep", m], stdin="null")
            self.assertEqual(r["type"], "ok", r)
            self.addCleanup(kill_sessions, [r["pid"]])
            runs.append((rid, r))
        wait_until(lambda: all(procs_with_arg(m) for m in marks), T(10), what="both sleeps")
        (rid1, r1), (rid2, r2) = runs
        clients[1].ok("signal", cmd=r2["cmd"], signal=9)
        self.assertEqual(clients[1].finish(rid2, r2, timeout=T(20)).code, 137)
        time.sleep(0.5)
        self.assertTrue(is_running(r1["pid"]), "killing cmd %d of one agent killed cmd %d of another agent"
                        % (r2["cmd"], r1["cmd"]))
        clients[0].ok("signal", cmd=r1["cmd"], signal=9)
        self.assertEqual(clients[0].finish(rid1, r1, timeout=T(20)).code, 137)


if __name__ == "__main__":
    unittest.main()
