"""Readiness for a service manager (docs/agent.md "Readiness"): with
$NOTIFY_SOCKET set, the agent sends the datagram READY=1 once its listeners
accept connections and STOPPING=1 when it stops (sd_notify's protocol, no
libsystemd), and removes the variable from its environment so that commands
never see it."""

import os
import signal
import socket
import tempfile
import unittest

from agentlib import Agent, T


class NotifySocket(unittest.TestCase):

    def bind(self, abstract=False):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        if abstract:
            name = "@sa-notify-test-%d-%d" % (os.getpid(), id(s))
            s.bind("\0" + name[1:])
        else:
            d = tempfile.mkdtemp(prefix="sa-notify-")
            self.addCleanup(lambda: (os.path.exists(name) and os.unlink(name), os.rmdir(d)))
            name = os.path.join(d, "notify")
            s.bind(name)
        s.settimeout(T(10))
        return s, name

    def start(self, name, *args):
        a = Agent(args, env={"NOTIFY_SOCKET": name}).start()
        self.addCleanup(a.stop, False)
        return a

    def check_ready_and_hidden(self, abstract):
        s, name = self.bind(abstract)
        a = self.start(name)
        self.assertEqual(s.recv(4096), b"READY=1")
        with a.client() as c:              # ready means: connections are served
            c.ping()
            env = c.run(["env"]).stdout.decode()
            self.assertNotIn("NOTIFY_SOCKET", env)
            env = c.run(["env"], clear_env=False, env={"X": "1"}).stdout.decode()
            self.assertNotIn("NOTIFY_SOCKET", env)
        return s, a

    def test_ready_on_a_socket_path_and_commands_do_not_inherit_it(self):
        self.check_ready_and_hidden(abstract=False)

    def test_ready_on_an_abstract_socket(self):
        self.check_ready_and_hidden(abstract=True)

    def test_stopping_on_sigterm(self):
        s, a = self.check_ready_and_hidden(abstract=False)
        a.proc.send_signal(signal.SIGTERM)
        self.assertEqual(s.recv(4096), b"STOPPING=1")
        self.assertEqual(a.proc.wait(T(10)), 0)
        a.stopped = True

    def test_stopping_on_the_shutdown_request(self):
        s, a = self.check_ready_and_hidden(abstract=True)
        with a.client() as c:
            self.assertEqual(c.ok("shutdown")["type"], "ok")
        self.assertEqual(s.recv(4096), b"STOPPING=1")
        self.assertEqual(a.proc.wait(T(10)), 0)
        a.stopped = True

    def test_no_notification_without_the_variable(self):
        a = Agent().start()
        self.addCleanup(a.stop, False)
        with a.client() as c:
            c.ping()
        self.assertNotIn(b"notify", a.log())

    def test_an_unusable_value_is_a_warning_not_a_failure(self):
        a = self.start("relative/path")
        with a.client() as c:
            c.ping()
        self.assertIn(b"NOTIFY_SOCKET=relative/path", a.log())


if __name__ == "__main__":
    unittest.main()
