"""Who may connect (docs/agent.md "Listeners", "Settings"): the Unix peer
check with --allow-uid (also from a --config file), the vsock CID allow-list
(when this kernel has a vsock loopback transport), and the config file at
start-up (errors name the line; flags win over it). The --allow-uid tests
need root (they connect as the user sa-test): without it they are skipped
visibly."""

import os
import socket
import subprocess
import tempfile
import shutil
import unittest

from agentlib import AGENT_BIN, Agent, Client, T
from test_identity import USER, connect_as, ensure_test_user

IS_ROOT = os.geteuid() == 0

class AgentPerTest(unittest.TestCase):
    def start_agent(self, *args, **kw):
        a = Agent(args, **kw).start()
        self.addCleanup(self._stop, a)
        return a

    def _stop(self, a):
        problems = a.stop()
        if problems:
            raise AssertionError("\n".join(problems))


@unittest.skipUnless(IS_ROOT, "needs root: the peer check is exercised as another user")
class UnixAllowUid(AgentPerTest):

    @classmethod
    def setUpClass(cls):
        cls.pw, _ = ensure_test_user()

    def open_socket(self, a):
        # loosen the file mode so that only the agent's peer check decides
        os.chmod(a.sock_path, 0o666)

    def test_allow_uid_admits_that_user(self):
        a = self.start_agent("--allow-uid", str(self.pw.pw_uid))
        self.open_socket(a)
        self.assertEqual(connect_as(USER, a.sock_path)[0], "hello")
        self.assertNotIn(b"refused connection", a.log())

    def test_without_allow_uid_the_user_gets_a_closed_connection_and_one_log_line(self):
        a = self.start_agent()
        self.open_socket(a)
        verdict = connect_as(USER, a.sock_path)
        self.assertNotEqual(verdict[0], "hello")
        self.assertIn(verdict[0], ("closed", "error"), verdict)
        if verdict[0] == "error":
            self.assertIn(verdict[1], ("ConnectionResetError", "BrokenPipeError"), verdict)
        lines = [l for l in a.log().decode(errors="replace").splitlines()
                 if "refused connection" in l]
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"refused connection from unix:pid=\d+,uid=%d$" % self.pw.pw_uid)
        with a.client() as c:        # root is still served
            c.ping()

    def test_another_uid_on_the_list_does_not_admit_this_one(self):
        a = self.start_agent("--allow-uid", str(self.pw.pw_uid + 1000))
        self.open_socket(a)
        self.assertNotEqual(connect_as(USER, a.sock_path)[0], "hello")

    def test_allow_uid_from_a_config_file(self):
        d = tempfile.mkdtemp(prefix="sa-conf-")
        self.addCleanup(shutil.rmtree, d, True)
        conf = os.path.join(d, "agent.conf")
        with open(conf, "w") as f:
            f.write("# who else may connect\nallow-uid = %d\n" % self.pw.pw_uid)
        a = self.start_agent("--config", conf)
        self.open_socket(a)
        self.assertEqual(connect_as(USER, a.sock_path)[0], "hello")


class VsockAllowCid(AgentPerTest):
    """Needs a vsock transport that connects locally (vsock_loopback: the
    peer is CID 1); skipped visibly without one."""

    PORT = 17000 + os.getpid() % 1000

    def local_vsock_works(self):
        try:
            with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s, \
                    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as c:
                s.bind((socket.VMADDR_CID_ANY, self.PORT + 500))
                s.listen()
                c.settimeout(1)
                c.connect((1, self.PORT + 500))
            return True
        except (OSError, AttributeError):
            return False

    def connect(self):
        s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        s.settimeout(T(5))
        s.connect((1, self.PORT))
        return Client(sock=s, read_hello=False)

    def test_local_cid_refused_by_default_and_admitted_when_listed(self):
        if not self.local_vsock_works():
            self.skipTest("no local vsock transport (vsock_loopback) here; "
                          "the CID decision is unit-tested in test_config")
        a = self.start_agent("--listen", "vsock:%d" % self.PORT)
        with self.connect() as c:
            self.assertEqual(c.expect_closed(), [])
        self.assertIn(b"refused connection from vsock:1:", a.log())
        a.stop()
        b = self.start_agent("--listen", "vsock:%d" % self.PORT, "--vsock-allow-cid", "1")
        with self.connect() as c:
            self.assertEqual(c.recv()["type"], "hello")


class ConfigFileAtStartup(AgentPerTest):

    def write(self, text):
        d = tempfile.mkdtemp(prefix="sa-conf-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "agent.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_help_lists_the_access_and_config_options(self):
        if not AGENT_BIN:
            self.skipTest("SA_AGENT not set")
        out = subprocess.run([AGENT_BIN, "--help"], capture_output=True, timeout=T(10)).stdout
        for opt in (b"--config FILE", b"--allow-uid UID", b"--vsock-allow-cid CID"):
            self.assertIn(opt, out)

    def test_file_settings_apply_and_flags_win(self):
        conf = self.write("max-frame = 65536\n"
                          "workdir = /nonexistent-from-the-file\n"
                          "stdin-window = 8192\n")
        a = self.start_agent("--config", conf, "--stdin-window", "16384")
        self.assertEqual(a.hello["max_frame"], 65536)          # from the file
        self.assertEqual(a.hello["stdin_window"], 16384)       # the flag wins
        self.assertEqual(a.hello["workdir"], os.path.realpath(a.workdir))  # --workdir flag wins

    def test_a_bad_file_stops_start_up_naming_the_line(self):
        if not AGENT_BIN:
            self.skipTest("SA_AGENT not set")
        conf = self.write("# ok\nworkdir = /tmp\ncolour = blue\n")
        d = os.path.dirname(conf)
        p = subprocess.run([AGENT_BIN, "--dev", "--listen", "unix:" + os.path.join(d, "s"),
                            "--config", conf], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=T(10))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(("%s:3: unknown key 'colour'" % conf).encode(), p.stderr)
        self.assertFalse(os.path.exists(os.path.join(d, "s")))
