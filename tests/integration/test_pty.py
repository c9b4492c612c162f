"""Pseudo-terminals: size, TERM, controlling terminal, resize with SIGWINCH,
an interactive shell driven through stdin with ^C and ^D, exit codes
(PROTOCOL.md "exec" `pty`, "resize")."""

import re
import time
import unittest

from agentlib import AgentTestCase, T, Timeout, is_running, kill_sessions, wait_until
from lifelib import LogStream, caps, kill_procs_with_arg, procs_with_arg, sleep_marker


def tty_nr(pid):
    """The controlling terminal device number of pid (0: none)."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    return int(s[s.rindex(")") + 2:].split()[4])


class PtySession:
    """One exec with a pty, driven through stdin, its output read as it comes."""

    def __init__(self, tc, argv, pty=True, **fields):
        self.tc = tc
        self.c = tc.c
        rid, r = self.c.exec_start(argv, pty=pty, **fields)
        tc.assertEqual(r["type"], "ok", r)
        tc.addCleanup(kill_sessions, [r["pid"]])
        self.reply = r
        self.cmd = r["cmd"]
        self.pid = r["pid"]
        self.st = LogStream(rid, exec_=True, what="pty exec %r" % (argv,))
        self.st.feed(r)
        self.buf = bytearray()
        self.mark = 0

    def send(self, data):
        self.c.ok("stdin", cmd=self.cmd, data=data)

    def _pull(self, timeout):
        m = self.c.recv_id(self.st.rid, timeout)
        self.st.feed(m)
        if m.get("type") == "output":
            if m["stream"] != "stdout":
                self.tc.fail("pty output arrived as %r, not stdout: %r" % (m["stream"], m))
            self.buf += m["data"]

    def expect(self, pattern, timeout=None):
        """Read until the regex (bytes) matches the output after the last
        match; the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + (T(10) if timeout is None else timeout)
        while True:
            mt = rx.search(self.buf, self.mark)
            if mt:
                self.mark = mt.end()
                return mt
            if self.st.done:
                self.tc.fail("the pty command ended before %r appeared; output: %r"
                             % (pattern, bytes(self.buf[-500:])))
            left = deadline - time.monotonic()
            if left <= 0:
                self.tc.fail("%r did not appear within the deadline; output so far: %r"
                             % (pattern, bytes(self.buf[-500:])))
            try:
                self._pull(left)
            except Timeout:
                pass

    def finish(self, timeout=None):
        deadline = time.monotonic() + (T(20) if timeout is None else timeout)
        while not self.st.done:
            left = deadline - time.monotonic()
            if left <= 0:
                self.tc.fail("the pty command did not end; output: %r" % bytes(self.buf[-500:]))
            self._pull(left)
        return self.st.exit


class PtyCase(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.assertIn("pty", caps(self.c), "the hello does not list the pty capability")


class Terminal(PtyCase):

    def test_hello_lists_pty(self):
        self.assertIn("pty", caps(self.c))

    def test_pty_has_the_requested_size_term_and_a_pts_device(self):
        s = PtySession(self, ["sh", "-c", 'tty; stty size; echo "TERM=$TERM"; '
                              'test -t 0 && test -t 1 && test -t 2 && echo ALL-TTY'],
                       pty={"rows": 30, "cols": 100, "term": "xterm-256color"})
        x = s.finish()
        out = bytes(s.buf)
        self.assertEqual(x["code"], 0, out)
        self.assertRegex(out, rb"(?m)^/dev/pts/\d+\r?$", "tty did not print a /dev/pts path")
        self.assertRegex(out, rb"(?m)^30 100\r?$", "stty size is not 30 100")
        self.assertRegex(out, rb"(?m)^TERM=xterm-256color\r?$")
        self.assertIn(b"ALL-TTY", out, "stdin, stdout and stderr are not all the terminal")
        self.assertEqual(x["stderr_bytes"], 0, "a pty command produced stderr events")

    def test_pty_true_defaults_to_24x80_and_xterm_256color(self):
        s = PtySession(self, ["sh", "-c", 'stty size; echo "TERM=$TERM"'], pty=True)
        self.assertEqual(s.finish()["code"], 0)
        self.assertRegex(bytes(s.buf), rb"(?m)^24 80\r?$")
        self.assertRegex(bytes(s.buf), rb"(?m)^TERM=xterm-256color\r?$")

    def test_term_is_passed_through(self):
        s = PtySession(self, ["sh", "-c", 'stty size; echo "TERM=$TERM"'],
                       pty={"rows": 10, "cols": 33, "term": "vt100"})
        s.finish()
        self.assertRegex(bytes(s.buf), rb"(?m)^10 33\r?$")
        self.assertRegex(bytes(s.buf), rb"(?m)^TERM=vt100\r?$")

    def test_stderr_of_a_pty_command_arrives_as_stdout(self):
        s = PtySession(self, ["sh", "-c", "echo to-err >&2"], pty=True)
        x = s.finish()
        self.assertIn(b"to-err", bytes(s.buf))
        self.assertEqual((x["stderr_bytes"], x["stdout_bytes"]), (0, len(s.buf)))

    def test_the_command_is_a_session_leader_with_the_pty_as_controlling_terminal(self):
        m = sleep_marker()
        self.addCleanup(kill_procs_with_arg, m)
        s = PtySession(self, ["sleep", m], pty=True)
        wait_until(lambda: procs_with_arg(m), T(10), what="sleep")
        p = procs_with_arg(m)[0]
        self.assertEqual(p["pid"], s.pid)
        self.assertEqual(p["sid"], s.pid, "not a session leader")
        self.assertNotEqual(tty_nr(s.pid), 0, "no controlling terminal")
        g = self.c.ok("get", cmd=s.cmd)
        self.assertIs(g["pty"], True, g)
        self.c.ok("signal", cmd=s.cmd, signal=9)
        self.assertEqual(s.finish()["code"], 137)

    def test_exit_code_under_a_pty(self):
        s = PtySession(self, ["sh", "-c", "exit 5"], pty=True)
        self.assertEqual(s.finish()["code"], 5)


class Resize(PtyCase):

    def test_resize_changes_the_size_a_running_shell_sees(self):
        s = PtySession(self, ["sh", "-i"], pty={"rows": 30, "cols": 100, "term": "xterm-256color"})
        s.send(b"stty size\n")
        s.expect(rb"(?<![0-9])30 100\r?\n")
        self.c.ok("resize", cmd=s.cmd, rows=40, cols=120)
        s.send(b"stty size\n")
        s.expect(rb"(?<![0-9])40 120\r?\n")
        self.c.ok("close_stdin", cmd=s.cmd)
        self.assertEqual(s.finish()["code"], 0)

    def test_resize_sends_sigwinch_to_the_foreground_group(self):
        s = PtySession(self, ["sh", "-c", 'trap "echo WINCH; stty size" WINCH; echo ready; '
                              'while :; do sleep 0.05; done'], pty={"rows": 20, "cols": 70})
        s.expect(rb"ready")
        self.c.ok("resize", cmd=s.cmd, rows=50, cols=132)
        s.expect(rb"WINCH\r?\n50 132\r?\n")
        self.c.ok("signal", cmd=s.cmd, signal=9)
        s.finish()

    def test_resize_of_a_command_without_pty_is_bad_request(self):
        rid, r = self.c.exec_start(["cat"])
        self.addCleanup(kill_sessions, [r["pid"]])
        self.assertErrorReply(self.c.request("resize", cmd=r["cmd"], rows=40, cols=120), "bad_request")
        self.c.ok("close_stdin", cmd=r["cmd"])
        self.assertEqual(self.c.finish(rid, r).code, 0)

    def test_resize_of_an_unknown_command_is_not_found(self):
        self.assertErrorReply(self.c.request("resize", cmd=987654321, rows=40, cols=120), "not_found")


class InteractiveShell(PtyCase):

    def shell(self):
        s = PtySession(self, ["sh", "-i"], pty={"rows": 30, "cols": 100, "term": "xterm-256color"})
        return s

    def test_commands_typed_into_the_shell_run_and_their_output_comes_back(self):
        s = self.shell()
        s.send(b"echo mark$((6*7))er\n")
        s.expect(rb"mark42er")                 # computed: not the echo of what we typed
        s.send(b"exit 3\n")
        self.assertEqual(s.finish()["code"], 3)

    def test_ctrl_c_interrupts_a_sleep_in_the_shell(self):
        s = self.shell()
        m = sleep_marker()
        self.addCleanup(kill_procs_with_arg, m)
        s.send(b"sleep " + m.encode() + b"\n")
        wait_until(lambda: procs_with_arg(m), T(10), what="sleep in the shell")
        s.send(b"\x03")
        wait_until(lambda: not procs_with_arg(m), T(5), what="^C to kill the sleep")
        self.assertTrue(is_running(s.pid), "^C killed the interactive shell itself")
        s.send(b"echo back$((2+3))\n")
        s.expect(rb"back5")
        s.send(b"exit\n")
        self.assertEqual(s.finish()["code"], 0)

    def test_ctrl_d_ends_the_shell_with_its_exit_code(self):
        s = self.shell()
        s.send(b"(exit 7)\n")
        s.send(b"\x04")
        x = s.finish()
        self.assertEqual((x["code"], x["signal"]), (7, 0), bytes(s.buf))

    def test_close_stdin_sends_eof_to_the_terminal(self):
        s = self.shell()
        s.send(b"(exit 4)\n")
        self.c.ok("close_stdin", cmd=s.cmd)
        self.assertEqual(s.finish()["code"], 4, bytes(s.buf))

    def test_close_stdin_ends_cat_on_a_pty_after_its_input(self):
        s = PtySession(self, ["cat"], pty=True)
        s.send(b"hello pty\n")
        self.c.ok("close_stdin", cmd=s.cmd)
        x = s.finish()
        self.assertEqual(x["code"], 0)
        # echoed by the terminal, then written by cat
        self.assertEqual(bytes(s.buf).count(b"hello pty"), 2, bytes(s.buf))

    def test_close_stdin_after_a_partial_line_still_ends_cat(self):
        # ^D after "abc" only hands "abc" to cat; the agent sends a second one
        s = PtySession(self, ["cat"], pty=True)
        s.send(b"abc")
        self.c.ok("close_stdin", cmd=s.cmd)
        x = s.finish()
        self.assertEqual(x["code"], 0)
        self.assertEqual(bytes(s.buf).count(b"abc"), 2, bytes(s.buf))


if __name__ == "__main__":
    unittest.main()
