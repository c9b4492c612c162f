"""Guest duties (PROTOCOL.md "Guest duties — guest"): the shared token, session
defaults, sync / set_time / add_entropy / restored, stats, and the OOM
protection of the agent. Parts that need root (other users, the clock, credited
entropy, oom_score_adj) are skipped visibly without it."""

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import unittest

from agentlib import (AGENT_BIN, CTL_BIN, AgentTestCase, T, env_lines, own_user, wait_until)
from test_identity import USER, ensure_test_user

IS_ROOT = os.geteuid() == 0
TOKEN = "s3cret t0ken, caf\u00e9".encode()   # sent as bin (and once as str)


def read_int(path):
    with open(path) as f:
        return int(f.read().split()[0])


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class TokenAgent(AgentTestCase):
    """An agent started with --token-file (content + trailing newline)."""

    @classmethod
    def setUpClass(cls):
        cls.token_dir = tempfile.mkdtemp(prefix="sa-token-")
        cls.addClassCleanup(shutil.rmtree, cls.token_dir, True)
        path = os.path.join(cls.token_dir, "token")
        with open(path, "wb") as f:
            f.write(TOKEN + b"\n")
        os.chmod(path, 0o600)
        cls.agent_args = ("--token-file", path)
        super().setUpClass()

    def auth(self, client=None, token=TOKEN):
        return (client or self.c).request("auth", token=token)

    def ctl(self, *args, env=None):
        e = dict(os.environ)
        e.pop("SANDBOX_AGENT_TOKEN_FILE", None)
        e.update(env or {})
        return subprocess.run([CTL_BIN, "-c", "unix:" + self.agent.sock_path] + list(args),
                              capture_output=True, timeout=T(20), env=e)

    def test_sandboxctl_presents_the_token_from_a_file_or_the_environment(self):
        path = os.path.join(self.token_dir, "token")
        p = self.ctl("ping")
        self.assertEqual(p.returncode, 255, p)
        self.assertIn(b"token", p.stderr)
        p = self.ctl("--token-file", path, "exec", "--", "echo", "in")
        self.assertEqual((p.returncode, p.stdout), (0, b"in\n"), p)
        p = self.ctl("ping", env={"SANDBOX_AGENT_TOKEN_FILE": path})
        self.assertEqual(p.returncode, 0, p)
        wrong = os.path.join(self.token_dir, "wrong")
        with open(wrong, "wb") as f:
            f.write(b"not-it\n")
        p = self.ctl("--token-file", wrong, "ping")
        self.assertEqual(p.returncode, 255, p)
        self.assertIn(b"auth", p.stderr)

    def test_hello_says_auth_required_and_lists_guest(self):
        self.assertIs(self.c.hello["auth_required"], True)
        self.assertIn("guest", self.c.hello["capabilities"])

    def test_every_request_before_auth_is_refused(self):
        for type_, fields in (("ping", {}), ("exec", {"argv": ["true"]}), ("list", {}),
                              ("stats", {}), ("set_defaults", {"env": {"A": "1"}}),
                              ("no_such_type", {})):
            self.assertErrorReply(self.c.request(type_, **fields), "auth_required")
        # the connection stays: the right token still works after refusals
        self.assertEqual(self.auth()["type"], "ok")
        self.c.ping()

    def test_no_command_runs_before_auth(self):
        marker = os.path.join(self.agent.workdir, "must-not-exist")
        self.assertErrorReply(self.c.request("exec", argv=["touch", marker]), "auth_required")
        time.sleep(0.2)
        self.assertFalse(os.path.exists(marker))

    def test_wrong_token_gets_auth_required_then_the_connection_closes(self):
        for wrong in (b"wrong", TOKEN[:-1], TOKEN + b"x", b""):
            with self.agent.client() as c:
                r = self.auth(c, wrong)
                self.assertErrorReply(r, "auth_required")
                c.expect_closed()
        self.assertIn(b"wrong token", self.agent.log())

    def test_refusals_are_logged(self):
        self.c.request("ping")
        self.assertIn(b"refused: not authenticated", self.agent.log())

    def test_right_token_then_everything_works(self):
        self.assertEqual(self.auth()["type"], "ok")
        self.c.ping()
        out, _, x = self.c.exec_collect(["echo", "hi"])
        self.assertEqual((out, x["code"]), (b"hi\n", 0))
        self.c.ok("stats")
        # authentication is per connection
        with self.agent.client() as c2:
            self.assertErrorReply(c2.request("ping"), "auth_required")

    def test_token_may_be_sent_as_str(self):
        self.assertEqual(self.auth(token=TOKEN.decode())["type"], "ok")
        self.c.ping()


class TokenFileErrors(unittest.TestCase):
    """A missing, empty or oversize token file stops the agent at start-up."""

    def start(self, path):
        if not AGENT_BIN:
            self.skipTest("SA_AGENT not set")
        d = tempfile.mkdtemp(prefix="sa-token-")
        self.addCleanup(shutil.rmtree, d, True)
        p = subprocess.run([AGENT_BIN, "--dev", "--listen", "unix:" + os.path.join(d, "s"),
                            "--workdir", d, "--token-file", path],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=T(10))
        return p

    def write(self, data):
        d = tempfile.mkdtemp(prefix="sa-token-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "token")
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_missing_file(self):
        p = self.start("/nonexistent/token")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"token-file", p.stderr)

    def test_empty_file_and_newline_only(self):
        for data in (b"", b"\n", b"\r\n"):
            p = self.start(self.write(data))
            self.assertEqual(p.returncode, 1, (data, p.stderr))

    def test_oversize_token(self):
        p = self.start(self.write(b"x" * 4097))
        self.assertEqual(p.returncode, 1, p.stderr)


class SessionDefaults(AgentTestCase):
    """set_defaults in dev mode: env, cwd; user limited to the agent's own."""

    def setUp(self):
        super().setUp()
        self.c.ok("set_defaults", env={}, cwd=self.agent.workdir, user=own_user().pw_name)

    def env_of(self, **kw):
        out, err, x = self.c.exec_collect(["env"], **kw)
        self.assertEqual(x["code"], 0, err)
        return env_lines(out)

    def test_env_is_inherited_under_the_requests_env(self):
        self.c.ok("set_defaults", env={"SESSION_A": "1", "SESSION_B": "2", "LANG": "fr_FR.UTF-8"})
        env = self.env_of(env={"SESSION_B": "request"})
        self.assertEqual(env["SESSION_A"], "1")
        self.assertEqual(env["SESSION_B"], "request")      # the request wins
        self.assertEqual(env["LANG"], "fr_FR.UTF-8")       # the session wins over the agent's
        self.assertIn("PATH", env)
        self.assertEqual(env["USER"], own_user().pw_name)
        # and every later command, on any connection, gets them
        with self.agent.client() as c2:
            out, _, _ = c2.exec_collect(["env"])
            self.assertEqual(env_lines(out)["SESSION_A"], "1")

    def test_env_replaces_the_whole_map_and_absent_fields_stay(self):
        self.c.ok("set_defaults", env={"OLD": "1"})
        self.c.ok("set_defaults", env={"NEW": "2"})
        env = self.env_of()
        self.assertNotIn("OLD", env)
        self.assertEqual(env["NEW"], "2")
        self.c.ok("set_defaults", cwd="/")                 # no env: untouched
        self.assertEqual(self.env_of()["NEW"], "2")
        self.c.ok("set_defaults", env={})
        self.assertNotIn("NEW", self.env_of())

    def test_clear_env_drops_the_session_env_too(self):
        self.c.ok("set_defaults", env={"SESSION_A": "1"})
        env = self.env_of(clear_env=True, env={"ONLY": "me"})
        self.assertEqual(env, {"ONLY": "me"})

    def test_cwd_relative_to_the_workdir_is_the_new_default(self):
        sub = os.path.join(self.agent.workdir, "proj")
        os.makedirs(os.path.join(sub, "src"), exist_ok=True)
        self.c.ok("set_defaults", cwd="proj")
        out, _, _ = self.c.exec_collect(["pwd"])
        self.assertEqual(out.decode().strip(), sub)
        r = self.c.run(["pwd"], cwd="src")                 # relative: against the default cwd
        self.assertEqual(r.stdout.decode().strip(), os.path.join(sub, "src"))
        self.assertEqual(r.reply["cwd"], os.path.join(sub, "src"))
        r = self.c.run(["pwd"], cwd="/tmp")                # the request wins
        self.assertEqual(r.stdout.decode().strip(), "/tmp")
        with self.agent.client() as c2:
            self.assertEqual(c2.hello["workdir"], sub)
        self.c.ok("set_defaults", cwd=self.agent.workdir)
        with self.agent.client() as c2:
            self.assertEqual(c2.hello["workdir"], self.agent.workdir)

    def test_dev_mode_accepts_only_its_own_user(self):
        self.c.ok("set_defaults", user=own_user().pw_name)
        other = "root" if os.geteuid() != 0 else "nobody"
        self.assertErrorReply(self.c.request("set_defaults", user=other), "EPERM")

    def test_bad_values_are_refused_and_change_nothing(self):
        self.c.ok("set_defaults", env={"KEEP": "1"})
        bad = [
            {"env": {"A=B": "1"}},
            {"env": {"": "1"}},
            {"env": ["A"]},
            {"env": {"A": 1}},
            {"env": {"K%d" % i: "v" for i in range(1025)}},
            {"env": {"BIG": "x" * (64 * 1024)}},
            {"cwd": ""},
            {"cwd": 5},
            {"env": {"NEW": "1"}, "cwd": ""},               # all or nothing
        ]
        for fields in bad:
            self.assertErrorReply(self.c.request("set_defaults", **fields), "bad_request", repr(fields)[:80])
        env = self.env_of()
        self.assertEqual(env["KEEP"], "1")
        self.assertNotIn("NEW", env)

    def test_bounds_are_inclusive(self):
        self.c.ok("set_defaults", env={"K%04d" % i: "v" for i in range(1024)})
        self.assertEqual(self.env_of()["K1023"], "v")


@unittest.skipUnless(IS_ROOT, "needs root: default user switching not exercised")
class SessionDefaultUser(AgentTestCase):
    agent_dev = False

    @classmethod
    def setUpClass(cls):
        cls.pw, _ = ensure_test_user()
        cls.agent_args = ("--user", USER)
        cls.agent_workdir_owner = (cls.pw.pw_uid, cls.pw.pw_gid)
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.c.ok("set_defaults", user=USER, env={})

    def test_default_user_is_inherited_and_reported(self):
        self.assertEqual(self.c.run(["id", "-un"]).stdout.decode().strip(), USER)
        self.c.ok("set_defaults", user="root", env={"FROM_SESSION": "yes"})
        r = self.c.run(["sh", "-c", "id -u; echo $HOME; echo $FROM_SESSION"])
        self.assertEqual(r.stdout.decode().split(), ["0", "/root", "yes"])
        self.assertEqual(r.reply["user"], "root")
        with self.agent.client() as c2:
            self.assertEqual(c2.hello["user"], "root")
        # a request's user still wins
        r = self.c.run(["id", "-un"], user=USER)
        self.assertEqual(r.stdout.decode().strip(), USER)

    def test_unknown_user_is_refused(self):
        self.assertErrorReply(self.c.request("set_defaults", user="no-such-user-xyz"), "unknown_user")
        self.assertEqual(self.c.run(["id", "-un"]).stdout.decode().strip(), USER)


class GuestDuties(AgentTestCase):

    def test_hello_lists_guest_and_no_auth(self):
        self.assertIn("guest", self.c.hello["capabilities"])
        self.assertIs(self.c.hello["auth_required"], False)
        self.assertIsInstance(self.c.hello["generation"], int)

    def test_sync(self):
        self.assertEqual(self.c.ok("sync")["type"], "ok")

    @unittest.skipUnless(IS_ROOT, "needs root: the clock cannot be set")
    def test_set_time_to_now(self):
        # never move the machine's clock: set it to what it is
        now = int(time.time() * 1000)
        self.c.ok("set_time", time_ms=now)
        self.assertLess(abs(self.c.ping()["time_ms"] - time.time() * 1000), 5000)
        self.assertIn(b"clock set by the host", self.agent.log())

    @unittest.skipIf(IS_ROOT, "as root the clock can be set")
    def test_set_time_unprivileged_is_eperm(self):
        self.assertErrorReply(self.c.request("set_time", time_ms=int(time.time() * 1000)), "EPERM")

    def test_set_time_bad_values(self):
        self.assertErrorReply(self.c.request("set_time"), "bad_request")
        self.assertErrorReply(self.c.request("set_time", time_ms=-5), "bad_request")
        self.assertErrorReply(self.c.request("set_time", time_ms=253402300800000), "bad_request")

    def test_add_entropy(self):
        r = self.c.ok("add_entropy", data=os.urandom(64))
        self.assertIsInstance(r["credited"], bool)
        if IS_ROOT:
            self.assertIs(r["credited"], True)
        self.c.ok("add_entropy", data=os.urandom(4096))
        self.c.ok("add_entropy", data="text is bytes too")

    def test_add_entropy_bounds(self):
        self.assertErrorReply(self.c.request("add_entropy", data=b""), "bad_request")
        self.assertErrorReply(self.c.request("add_entropy", data=os.urandom(4097)), "bad_request")
        self.assertErrorReply(self.c.request("add_entropy"), "bad_request")

    def test_restored_advances_the_generation(self):
        g0 = self.c.hello["generation"]
        g1 = self.c.ok("restored")["generation"]
        self.assertEqual(g1, g0 + 1)
        self.assertEqual(self.c.ok("restored")["generation"], g0 + 2)
        with self.agent.client() as c2:
            self.assertEqual(c2.hello["generation"], g0 + 2)
        self.assertEqual(self.c.ok("stats")["generation"], g0 + 2)

    def test_stats_fields_are_plausible(self):
        s = self.c.ok("stats")
        for k in ("uptime_ms", "mem_total", "mem_available", "disk_total", "disk_free",
                  "agent_rss", "agent_fds", "commands_running", "commands_exited",
                  "connections", "log_bytes", "generation"):
            self.assertIsInstance(s.get(k), int, k)
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0]) * 1000
        self.assertLess(abs(s["uptime_ms"] - up), 60000)
        self.assertEqual(len(s["load"]), 3)
        self.assertTrue(all(isinstance(x, float) and x >= 0 for x in s["load"]))
        # sysinfo's fixed point, scaled as /proc/loadavg prints it (the
        # 15-minute figure moves least between the two reads)
        self.assertLess(abs(s["load"][2] - os.getloadavg()[2]), 0.1)
        self.assertEqual(s["mem_total"], meminfo("MemTotal"))
        self.assertGreater(s["mem_available"], 0)
        self.assertLessEqual(s["mem_available"], s["mem_total"])
        v = os.statvfs(self.agent.workdir)
        self.assertEqual(s["disk_total"], v.f_blocks * v.f_frsize)
        self.assertLessEqual(s["disk_free"], s["disk_total"])
        self.assertGreater(s["agent_rss"], 0)
        self.assertLess(abs(s["agent_rss"] - self.agent.rss()), 16 << 20)
        self.assertGreater(s["agent_fds"], 2)
        self.assertLessEqual(s["agent_fds"], len(self.agent.fds()) + 1)
        self.assertGreaterEqual(s["connections"], 1)
        self.assertIsInstance(s["commands"], list)

    def test_stats_lists_running_commands_and_their_cpu(self):
        before = self.c.ok("stats")
        _, sleep = self.c.exec_start(["sleep", "30"], detached=True, timeout_ms=60000)
        _, busy = self.c.exec_start(["sh", "-c", "while :; do :; done"], detached=True,
                                    timeout_ms=60000)
        self.assertEqual(sleep["type"], "ok")
        self.assertEqual(busy["type"], "ok")
        try:
            s = self.c.ok("stats")
            cmds = {e["cmd"]: e for e in s["commands"]}
            self.assertIn(sleep["cmd"], cmds)
            e = cmds[sleep["cmd"]]
            self.assertEqual(e["pid"], sleep["pid"])
            self.assertEqual(e["state"], "running")
            self.assertGreater(e["rss"], 0)
            self.assertEqual(s["commands_running"], before["commands_running"] + 2)

            def cpu():
                st = self.c.ok("stats")
                return {x["cmd"]: x["cpu_ms"] for x in st["commands"]}.get(busy["cmd"], 0)
            first = cpu()
            wait_until(lambda: cpu() >= first + 100, T(20), interval=0.1,
                       what="the busy loop's cpu_ms to grow")
        finally:
            for r in (sleep, busy):
                self.c.request("signal", cmd=r["cmd"], signal=9)
            for r in (sleep, busy):
                self.c.request("wait", cmd=r["cmd"])
        s = self.c.ok("stats")
        self.assertNotIn(sleep["cmd"], {e["cmd"] for e in s["commands"]})
        self.assertGreaterEqual(s["commands_exited"], before["commands_exited"] + 2)

    def test_commands_get_the_default_oom_score_adj(self):
        out, _, x = self.c.exec_collect(["cat", "/proc/self/oom_score_adj"])
        self.assertEqual((out.strip(), x["code"]), (b"0", 0))

    @unittest.skipUnless(IS_ROOT, "needs root: the agent only protects itself as root")
    def test_agent_is_shielded_from_the_oom_killer(self):
        adj = read_int("/proc/%d/oom_score_adj" % self.agent.pid)
        if adj != -1000:
            # lowering oom_score_adj needs CAP_SYS_RESOURCE, which a container may lack
            self.assertIn(b"oom_score_adj -1000", self.agent.log())
            self.skipTest("the agent could not lower its oom_score_adj (no CAP_SYS_RESOURCE?)")
        self.assertEqual(adj, -1000)


class StatsCli(AgentTestCase):
    """sandboxctl stats [--json]."""

    def ctl(self, *args):
        if not CTL_BIN or not os.access(CTL_BIN, os.X_OK):
            self.skipTest("SA_CTL is not set to an executable sandboxctl")
        return subprocess.run([CTL_BIN, "-c", "unix:" + self.agent.sock_path] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=T(30))

    def test_json_is_the_reply_on_one_line(self):
        _, r = self.c.exec_start(["sleep", "30"], detached=True, timeout_ms=60000)
        try:
            p = self.ctl("stats", "--json")
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = p.stdout.decode().splitlines()
            self.assertEqual(len(lines), 1)
            s = json.loads(lines[0])
            self.assertEqual(s["type"], "ok")
            self.assertGreater(s["agent_rss"], 0)
            self.assertIn(r["pid"], [e["pid"] for e in s["commands"]])
            p = self.ctl("stats")
            self.assertEqual(p.returncode, 0, p.stderr)
            out = p.stdout.decode()
            for word in ("uptime", "load", "memory", "disk", "agent", "commands"):
                self.assertIn(word, out)
            self.assertIn(str(r["pid"]), out)
        finally:
            self.c.request("signal", cmd=r["cmd"], signal=9)
            self.c.request("wait", cmd=r["cmd"])

    def test_usage(self):
        self.assertEqual(self.ctl("stats", "--bogus").returncode, 2)
        self.assertEqual(self.ctl("stats", "extra").returncode, 2)


if __name__ == "__main__":
    unittest.main()
