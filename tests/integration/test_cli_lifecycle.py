"""sandboxctl's lifecycle and pty commands against a real agent: exec
--detach / --timeout / -t, logs [-f] [--from], wait, kill -s NAME, ps, inspect."""

import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import fcntl
import time
import unittest

from agentlib import CTL_BIN, T, kill_sessions
from test_cli import CtlTestCase


class Lifecycle(CtlTestCase):
    def detach(self, *argv, extra=()):
        p = self.ctl("exec", "--detach", *extra, "--", *argv)
        self.assertEqual(p.returncode, 0, p)
        cmd = int(p.stdout.decode().strip())
        g = json.loads(self.ctl("inspect", str(cmd)).stdout)
        self.addCleanup(kill_sessions, [g["pid"]])
        return cmd

    def test_detach_logs_wait_get(self):
        cmd = self.detach("sh", "-c", "echo out1; echo err1 >&2; sleep 0.3; echo out2; exit 4")
        p = self.ctl("wait", str(cmd), timeout=T(20))
        self.assertEqual(p.returncode, 4, p)
        p = self.ctl("logs", str(cmd))
        self.assertEqual((p.returncode, p.stdout, p.stderr), (0, b"out1\nout2\n", b"err1\n"))
        g = json.loads(self.ctl("inspect", str(cmd)).stdout)
        self.assertEqual((g["state"], g["code"], g["detached"]), ("exited", 4, True))

    def test_logs_from_a_position_prints_the_suffix(self):
        cmd = self.detach("sh", "-c", "echo out1; echo out2")
        self.ctl("wait", str(cmd), timeout=T(20))
        p = self.ctl("logs", "--from", "5", str(cmd))      # after "out1\n"
        self.assertEqual((p.returncode, p.stdout), (0, b"out2\n"))

    def test_logs_follow_streams_until_the_exit(self):
        cmd = self.detach("sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done")
        p = self.ctl("logs", "-f", str(cmd), timeout=T(20))
        self.assertEqual((p.returncode, p.stdout), (0, b"1\n2\n3\n"))

    def test_kill_by_name_and_wait_reports_the_signal(self):
        cmd = self.detach("sleep", "1000")
        self.assertEqual(self.ctl("kill", "-s", "SIGKILL", str(cmd)).returncode, 0)
        self.assertEqual(self.ctl("wait", str(cmd), timeout=T(20)).returncode, 137)
        p = self.ctl("kill", str(cmd))
        self.assertEqual(p.returncode, 1, p)                # exited
        self.assertEqual(self.ctl("kill", "-s", "bogus", str(cmd)).returncode, 2)

    def test_ps_lists_running_and_with_all_exited_ones(self):
        run = self.detach("sleep", "1000")
        done = self.detach("true")
        self.ctl("wait", str(done), timeout=T(20))
        rows = [json.loads(l) for l in self.ctl("ps", "--json").stdout.splitlines()]
        self.assertIn(run, [r["cmd"] for r in rows])
        self.assertNotIn(done, [r["cmd"] for r in rows])
        rows = [json.loads(l) for l in self.ctl("ps", "--all", "--json").stdout.splitlines()]
        self.assertIn(done, [r["cmd"] for r in rows])
        table = self.ctl("ps").stdout.decode()
        self.assertIn("sleep 1000", table)
        self.ctl("kill", "-s", "KILL", str(run))

    def test_exec_timeout_kills_and_says_so(self):
        p = self.ctl("exec", "--timeout", "0.5", "--", "sh", "-c", "echo start; sleep 100",
                     timeout=T(20))
        self.assertEqual((p.returncode, p.stdout), (137, b"start\n"), p)
        self.assertIn(b"timed out", p.stderr)

    def test_unknown_id(self):
        self.assertEqual(self.ctl("wait", "999999").returncode, 127)
        self.assertEqual(self.ctl("logs", "999999").returncode, 1)


class Tty(CtlTestCase):
    def test_exec_t_runs_on_a_pty_with_our_size_and_forwards_resizes(self):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        argv = [CTL_BIN, "-c", "unix:" + self.agent.sock_path, "exec", "-t", "--", "sh"]
        p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                             start_new_session=True, env=dict(os.environ, TERM="vt220"))
        os.close(slave)
        self.addCleanup(os.close, master)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        buf = bytearray()

        def until(needle, timeout=T(20)):
            deadline = time.monotonic() + timeout
            while needle not in buf:
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, "no %r in %r" % (needle, bytes(buf)))
                r, _, _ = select.select([master], [], [], left)
                if r:
                    try:
                        buf.extend(os.read(master, 4096))
                    except OSError:
                        break

        time.sleep(0.5)
        os.write(master, b"stty size; echo T=$TERM; tty\n")
        until(b"30 100")
        until(b"T=vt220")
        until(b"/dev/pts/")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.kill(p.pid, signal.SIGWINCH)
        time.sleep(0.5)
        os.write(master, b"stty size\n")
        until(b"40 120")
        os.write(master, b"exit 6\n")
        self.assertEqual(p.wait(timeout=T(20)), 6)


if __name__ == "__main__":
    unittest.main()
