"""gateway/provisioners/local: one agent per session, as root on a private
Unix socket, the sandbox user as default user, a per-session workdir.

Driven directly (create → ping through sandboxctl → stop leaves nothing,
including a daemon that left its process group; a failing create leaves
nothing) and through sandbox-gateway --provisioner (a command runs as the
sandbox user in the session's workdir; stop removes everything)."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import gwlib

HERE = os.path.dirname(os.path.abspath(__file__))
LOCAL = os.path.join(HERE, "..", "..", "gateway", "provisioners", "local")
CTL = os.environ.get("SA_CTL", "")


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def cgroup2_available():
    with open("/proc/self/mountinfo") as f:
        return any(" - cgroup2 " in line for line in f)


class LocalProvisionerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root: the agent drops privileges to the sandbox user")
        if not gwlib.AGENT_BIN or not CTL or not gwlib.GATEWAY_BIN:
            raise unittest.SkipTest("SA_AGENT, SA_CTL and SA_GATEWAY must name the binaries")
        cls.user = gwlib.sandbox_user()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="gwlocal-")
        os.chmod(self.tmp, 0o755)       # the sandbox user reaches its workdir
        self.run_dir = os.path.join(self.tmp, "run")
        self.env = dict(os.environ, SANDBOX_GATEWAY_RUN=self.run_dir,
                        SANDBOX_AGENT=gwlib.AGENT_BIN, SANDBOX_GATEWAY_USER=self.user.pw_name)
        self.started = []

    def tearDown(self):
        for sid in self.started:
            self.local("stop", sid, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def local(self, what, sid, stdin="{}", env=None, check=True):
        p = subprocess.run([LOCAL, what, sid], input=stdin, capture_output=True, text=True,
                           env=env or self.env, timeout=60 * gwlib.SCALE)
        if check:
            self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def create(self, sid):
        self.started.append(sid)
        return self.local("create", sid).stdout.splitlines()

    def ctl(self, addr, *args):
        return subprocess.run([CTL, "-c", addr, *args], capture_output=True, text=True,
                              timeout=60 * gwlib.SCALE)

    def leftovers(self):
        out = []
        for root, dirs, files in os.walk(self.run_dir):
            out += [os.path.join(root, n) for n in dirs + files]
        return sorted(out)

    def test_create_answers_on_a_private_socket_and_stop_leaves_nothing(self):
        lines = self.create("sess_a1")
        self.assertEqual(len(lines), 1, lines)      # no token: the socket is root's only
        addr = lines[0]
        self.assertTrue(addr.startswith("unix:"), addr)
        sock = addr[5:]
        st = os.stat(sock)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (0, 0o600))
        dst = os.stat(os.path.dirname(sock))
        self.assertEqual((dst.st_uid, dst.st_mode & 0o777), (0, 0o700))
        p = self.ctl(addr, "ping")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("protocol 1", p.stdout)

        # commands run as the sandbox user in the session's own workdir
        p = self.ctl(addr, "exec", "-n", "--", "sh", "-c", "id -un; pwd")
        self.assertEqual(p.returncode, 0, p.stderr)
        who, cwd = p.stdout.split()
        self.assertEqual(who, self.user.pw_name)
        self.assertEqual(cwd, os.path.join(self.run_dir, "work", "sess_a1"))
        wst = os.stat(cwd)
        self.assertEqual((wst.st_uid, wst.st_mode & 0o777), (self.user.pw_uid, 0o700))

        with open(os.path.join(os.path.dirname(sock), "agent.pid")) as f:
            agent_pid = int(f.read().split()[0])
        # a command still running at stop
        p = self.ctl(addr, "exec", "--detach", "--", "sh", "-c", "echo $$ > pid; exec sleep 1000")
        self.assertEqual(p.returncode, 0, p.stderr)
        pidfile = os.path.join(cwd, "pid")
        gwlib.wait_for(lambda: os.path.exists(pidfile) and os.path.getsize(pidfile) > 0, 10,
                       "the command's pid")
        with open(pidfile) as f:
            child = int(f.read())
        self.assertTrue(pid_alive(child))

        self.local("stop", "sess_a1")
        self.assertFalse(pid_alive(agent_pid))
        gwlib.wait_for(lambda: not pid_alive(child), 10, "the command to go")
        self.assertEqual(self.leftovers(), [os.path.join(self.run_dir, "work")])
        # stopping again (the gateway may) succeeds
        self.local("stop", "sess_a1")

    def test_stop_reaches_a_daemon_that_left_its_process_group(self):
        if not cgroup2_available():
            self.skipTest("no cgroup2 mount: the agent cannot track a daemon that calls setsid")
        addr = self.create("sess_d1")[0]
        p = self.ctl(addr, "exec", "-n", "--", "sh", "-c", "setsid sleep 1000 & echo $!")
        self.assertEqual(p.returncode, 0, p.stderr)
        daemon = int(p.stdout)
        time.sleep(0.2)
        self.assertTrue(pid_alive(daemon))
        self.local("stop", "sess_d1")
        gwlib.wait_for(lambda: not pid_alive(daemon), 10, "the daemon to go")

    def test_a_failed_create_leaves_nothing(self):
        # an "agent" that exits at once
        env = dict(self.env, SANDBOX_AGENT="/bin/false")
        p = self.local("create", "sess_f1", env=env, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(p.stdout, "")
        self.assertIn("exited during start-up", p.stderr)
        self.assertEqual(self.leftovers(), [os.path.join(self.run_dir, "work")])
        # an agent that never answers: bounded by SANDBOX_GATEWAY_START_TIMEOUT
        mute = os.path.join(self.tmp, "mute-agent")
        with open(mute, "w") as f:
            f.write("#!/bin/sh\nexec sleep 1000\n")
        os.chmod(mute, 0o755)
        env = dict(self.env, SANDBOX_AGENT=mute, SANDBOX_GATEWAY_START_TIMEOUT="0.5")
        t0 = time.monotonic()
        p = self.local("create", "sess_f2", env=env, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertLess(time.monotonic() - t0, 10 * gwlib.SCALE)
        self.assertIn("no hello", p.stderr)
        self.assertEqual(self.leftovers(), [os.path.join(self.run_dir, "work")])

    def test_a_missing_user_or_a_bad_session_id_is_refused(self):
        env = dict(self.env, SANDBOX_GATEWAY_USER="no-such-user-here")
        p = self.local("create", "sess_u1", env=env, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("no user", p.stderr)
        for bad in ("../x", "a/b", "", "x" * 65):
            p = self.local("create", bad, check=False)
            self.assertEqual(p.returncode, 2, bad)
        self.assertFalse(os.path.exists(os.path.join(self.run_dir, "x")))

    def test_through_the_gateway(self):
        os.environ.update(SANDBOX_GATEWAY_RUN=self.run_dir, SANDBOX_AGENT=gwlib.AGENT_BIN,
                          SANDBOX_GATEWAY_USER=self.user.pw_name)
        try:
            gw = gwlib.Gateway(self.tmp, [], ("--provisioner", os.path.abspath(LOCAL)))
        finally:
            for k in ("SANDBOX_GATEWAY_RUN", "SANDBOX_AGENT", "SANDBOX_GATEWAY_USER"):
                del os.environ[k]
        try:
            sid, j = gw.create(env={"GREETING": "hi"})
            work = os.path.join(self.run_dir, "work", sid)
            self.assertEqual(j["session"]["cwd"], work)
            st, r, payload = gw.http("POST", gw.sess(sid) + "/cmd",
                                     {"command": "sh", "args": ["-c", "echo $GREETING $(id -un)"],
                                      "wait": True})
            self.assertEqual(st, 200, payload)
            lines = [json.loads(x) for x in payload.splitlines()]
            self.assertEqual(lines[1], {"stream": "stdout",
                                        "data": f"hi {self.user.pw_name}\n"})
            self.assertEqual(lines[-1]["command"]["exitCode"], 0)
            st, j = gw.json("POST", gw.sess(sid) + "/stop")
            self.assertEqual(st, 200, j)
            gwlib.wait_for(lambda: self.leftovers() == [os.path.join(self.run_dir, "work")],
                           10, "the session's files to go")
        finally:
            gw.stop()
            # a stopped gateway leaves its sessions running: stop what a
            # failed assertion left
            for sid in os.listdir(self.run_dir) if os.path.isdir(self.run_dir) else ():
                if sid != "work":
                    self.local("stop", sid, check=False)


if __name__ == "__main__":
    unittest.main()
