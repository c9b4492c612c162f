"""The `shutdown` request under systemd (docs/agent.md "Stopping"): an agent
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
