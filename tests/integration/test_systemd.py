"""The agent as a systemd service.

Logging (docs/agent.md, after the flags): when $JOURNAL_STREAM names the agent's
stderr (DEVICE:INODE, as systemd sets it for a service whose output goes to
the journal), log lines carry sd-daemon(3)'s "<N>" priority and no
"sandbox-agent[PID]:" (journald adds both); otherwise — the variable unset or
naming another stream — the usual prefix.

The `shutdown` request under systemd (docs/agent.md "Stopping"): an agent
started by PID 1 with $NOTIFY_SOCKET, where PID 1 is systemd
(/run/systemd/system exists), asks PID 1 to power off with signal 38 —
systemd's SIGRTMIN+4 in glibc's numbering, not musl's SIGRTMIN+4 (39, which
systemd takes for reboot) — then exits 0. Without $NOTIFY_SOCKET, or with a
PID 1 that is not systemd, it only exits: an agent run by hand never powers
off its machine.

PID 1 here is a small Python stand-in for systemd at the head of a new PID
and mount namespace (`unshare --pid --fork --mount-proc --mount`): it mounts
a tmpfs on its namespace's /run (with /run/systemd/system in it when it plays
systemd), binds the notify socket, starts the agent, records the signals it
receives, and reports them with the agent's exit status. The live proof with
the real systemd is tests/vm/image_boot.py. Needs root and unshare; skipped
visibly otherwise."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from agentlib import AGENT_BIN, Client, T, wait_until
from test_init import UNSHARE, WHY_NOT

POWEROFF, REBOOT = 38, 39     # systemd's SIGRTMIN+4 and SIGRTMIN+5 (glibc: SIGRTMIN is 34)

PID1 = r"""
import os, signal, socket, subprocess, sys, time
agent, tmp, mode = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
got = []
for s in (%(poweroff)d, %(reboot)d):
    signal.signal(s, lambda n, f: got.append(n))
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)   # this namespace's /run
if "systemd" in mode:
    os.makedirs("/run/systemd/system")
env = dict(os.environ)
env.pop("NOTIFY_SOCKET", None)
if "notify" in mode:
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(tmp + "/notify")
    env["NOTIFY_SOCKET"] = tmp + "/notify"
p = subprocess.Popen([agent, "--listen", "unix:" + tmp + "/agent.sock", "--workdir", tmp + "/work",
                      "--dev"], env=env)
rc = p.wait()
time.sleep(0.3)          # a signal sent just before the exit has arrived by now
print("exit %%d signals %%s" %% (rc, sorted(got)), flush=True)
""" % {"poweroff": POWEROFF, "reboot": REBOOT}


@unittest.skipIf(not AGENT_BIN, "SA_AGENT is not set")
class JournalStream(unittest.TestCase):

    def log_lines(self, journal_stream_of):
        """The agent's stderr (a file) after a start and a SIGTERM, with
        $JOURNAL_STREAM naming the file given (or unset for None)."""
        tmp = tempfile.mkdtemp(prefix="sa-journal-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.mkdir(os.path.join(tmp, "work"))
        sock = os.path.join(tmp, "agent.sock")
        err_path = os.path.join(tmp, "stderr")
        other = os.path.join(tmp, "other")
        open(other, "w").close()
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
        with open(err_path, "wb") as err:
            named = {"stderr": err_path, "other": other}.get(journal_stream_of)
            if named:
                st = os.stat(named)
                env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
            p = subprocess.Popen([AGENT_BIN, "--listen", "unix:" + sock, "--workdir", os.path.join(tmp, "work"),
                                  "--dev"], stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        wait_until(lambda: os.path.exists(sock) or p.poll() is not None, T(20), what="the agent's socket")
        with Client(sock) as c:
            c.ping()
        p.terminate()
        self.assertEqual(p.wait(T(20)), 0)
        with open(err_path) as f:
            return [l for l in f.read().splitlines() if l]

    def test_on_the_journal_stream_lines_carry_the_priority_and_no_name(self):
        lines = self.log_lines("stderr")
        self.assertTrue(any(l.startswith("<6>info: sandbox-agent ") and " ready: " in l for l in lines), lines)
        self.assertTrue(all(re.match(r"<[3467]>(error|warn|info|debug): ", l) for l in lines), lines)

    def test_elsewhere_lines_carry_name_and_pid(self):
        for named in (None, "other"):
            lines = self.log_lines(named)
            self.assertTrue(lines, named)
            self.assertTrue(all(re.match(r"sandbox-agent\[\d+\]: (error|warn|info|debug): ", l)
                                for l in lines), (named, lines))


@unittest.skipIf(WHY_NOT, WHY_NOT)
class ShutdownUnderSystemd(unittest.TestCase):

    def shutdown_as(self, mode):
        """Runs the agent under the stand-in PID 1, sends `shutdown`; returns
        PID 1's report: the agent's exit status and the signals PID 1 got."""
        tmp = tempfile.mkdtemp(prefix="sa-sdpoweroff-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.chmod(tmp, 0o755)
        os.mkdir(os.path.join(tmp, "work"))
        p = subprocess.Popen([UNSHARE, "--pid", "--fork", "--mount-proc", "--mount", sys.executable,
                              "-c", PID1, AGENT_BIN, tmp, mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        sock = os.path.join(tmp, "agent.sock")
        wait_until(lambda: os.path.exists(sock) or p.poll() is not None, T(20), what="the agent's socket")
        if p.poll() is not None:
            self.fail("PID 1 ended early: %s" % p.communicate()[1].decode(errors="replace"))
        with Client(sock) as c:
            c.ok("shutdown")
        out, err = p.communicate(timeout=T(30))
        self.assertEqual(p.returncode, 0, err.decode(errors="replace"))
        return out.decode().strip(), err.decode(errors="replace")

    def test_a_notify_service_of_systemd_asks_pid_1_to_power_off(self):
        out, err = self.shutdown_as("systemd,notify")
        self.assertEqual(out, "exit 0 signals [%d]" % POWEROFF, err)
        self.assertIn("asking systemd (PID 1) to power off", err)

    def test_without_notify_socket_the_agent_only_exits(self):
        out, err = self.shutdown_as("systemd")
        self.assertEqual(out, "exit 0 signals []", err)
        self.assertNotIn("power off", err)

    def test_when_pid_1_is_not_systemd_the_agent_only_exits(self):
        out, err = self.shutdown_as("notify")
        self.assertEqual(out, "exit 0 signals []", err)
        self.assertNotIn("power off", err)


if __name__ == "__main__":
    unittest.main()
