"""The --provisioner contract of sandbox-gateway, with a provisioner written
here: `create ID` (request JSON on stdin) starts an agent with a token on a
private Unix socket and prints `unix:PATH` and `token TOKEN`; `stop ID` kills
it. A control file makes it fail, hang, or forget the token, to check that a
failed create is a clear 5xx and leaves nothing behind."""

import json
import os
import shutil
import stat
import sys
import time
import unittest

import gwlib

PROVISIONER = r'''#!PYTHON
import json, os, secrets, signal, subprocess, sys, time
tmp = os.path.dirname(os.path.abspath(__file__))
what, sid = sys.argv[1], sys.argv[2]
with open(os.path.join(tmp, "calls.log"), "a") as f:
    f.write(f"{what} {sid}\n")
mode = open(os.path.join(tmp, "mode")).read().strip()
if what == "stop":
    try:
        os.kill(int(open(os.path.join(tmp, sid + ".pid")).read()), signal.SIGTERM)
    except (OSError, ValueError):
        pass
    sys.exit(0)
request = json.load(sys.stdin)
with open(os.path.join(tmp, sid + ".json"), "w") as f:
    json.dump(request, f)
if mode == "fail":
    print("no capacity left on this host", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    time.sleep(600)
token = secrets.token_hex(16)
tokfile = os.path.join(tmp, sid + ".token")
with open(tokfile, "w") as f:
    f.write(token)
os.chmod(tokfile, 0o600)
wd = os.path.join(tmp, sid + ".wd")
os.mkdir(wd)
os.chown(wd, USER_UID, USER_GID)
sock = os.path.join(tmp, sid + ".sock")
log = open(os.path.join(tmp, sid + ".agent.log"), "wb")
p = subprocess.Popen(["AGENT", "--listen", "unix:" + sock, "--workdir", wd, "--user", "USER",
                      "--token-file", tokfile, "-q"], stdin=subprocess.DEVNULL, stdout=log,
                     stderr=log, start_new_session=True)
with open(os.path.join(tmp, sid + ".pid"), "w") as f:
    f.write(str(p.pid))
for _ in range(200):
    if os.path.exists(sock):
        break
    time.sleep(0.05)
print("unix:" + sock)
if mode != "notoken":
    print("token " + token)
'''


def read_pid(path):
    with open(path) as f:
        return int(f.read())


class ProvisionerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = gwlib.need_root_and_tmp("gwprov-")
        user = gwlib.sandbox_user()
        prog = os.path.join(cls.tmp, "provisioner")
        text = (PROVISIONER.replace("PYTHON", sys.executable).replace("AGENT", gwlib.AGENT_BIN)
                .replace("USER_UID", str(user.pw_uid)).replace("USER_GID", str(user.pw_gid))
                .replace('"USER"', json.dumps(user.pw_name)))
        with open(prog, "w") as f:
            f.write(text)
        os.chmod(prog, stat.S_IRWXU)
        cls.gw = gwlib.Gateway(cls.tmp, [], ("--provisioner", prog,
                                             "--provisioner-timeout", str(3 * gwlib.SCALE)))

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gw.stop()
        finally:
            for name in os.listdir(cls.tmp):
                if name.endswith(".pid"):
                    try:
                        os.kill(read_pid(os.path.join(cls.tmp, name)), 9)
                    except (OSError, ValueError):
                        pass
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def mode(self, m):
        with open(os.path.join(self.tmp, "mode"), "w") as f:
            f.write(m)

    def calls(self):
        try:
            with open(os.path.join(self.tmp, "calls.log")) as f:
                return f.read().split("\n")
        except OSError:
            return []

    def agent_alive(self, sid):
        pid = read_pid(os.path.join(self.tmp, sid + ".pid"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"

    def test_create_uses_the_agent_and_token_and_stop_tears_it_down(self):
        self.mode("ok")
        st, j = self.gw.json("POST", "/v3/sandboxes", {"env": {"A": "b"}, "timeout": 120000})
        self.assertEqual(st, 200, j)
        sid = j["session"]["id"]
        with open(os.path.join(self.tmp, sid + ".json")) as f:
            req = json.load(f)
        self.assertEqual((req["sessionId"], req["env"], req["timeout"]), (sid, {"A": "b"}, 120000))
        self.assertEqual(j["session"]["cwd"], os.path.join(self.tmp, sid + ".wd"))
        st, r, payload = self.gw.http("POST", self.gw.sess(sid) + "/cmd",
                                      {"command": "sh", "args": ["-c", "echo $A"], "wait": True})
        self.assertEqual(json.loads(payload.splitlines()[1]), {"stream": "stdout", "data": "b\n"})
        st, j = self.gw.json("POST", self.gw.sess(sid) + "/stop")
        self.assertEqual(j["session"]["status"], "stopped")
        self.assertIn(f"stop {sid}", self.calls())
        gwlib.wait_for(lambda: not self.agent_alive(sid), 10, "the agent to go")

    def test_a_failed_create_is_5xx_and_leaves_nothing(self):
        self.mode("fail")
        st, j = self.gw.json("POST", "/v3/sandboxes", {"name": "doomed"})
        self.assertEqual((st, j["error"]["code"]), (502, "provisioning_failed"))
        self.assertIn("exit status 3", j["error"]["message"])
        self.assertIn("no capacity left on this host", self.gw.stderr())
        created = [c.split()[1] for c in self.calls() if c.startswith("create")]
        self.assertIn(f"stop {created[-1]}", self.calls())
        self.assertEqual(self.gw.json("GET", "/v2/sandboxes/doomed")[0], 404)

    def test_a_hanging_provisioner_is_killed_at_its_timeout(self):
        self.mode("hang")
        t0 = time.monotonic()
        st, j = self.gw.json("POST", "/v3/sandboxes", {})
        self.assertEqual(st, 502, j)
        self.assertLess(time.monotonic() - t0, 30 * gwlib.SCALE)
        created = [c.split()[1] for c in self.calls() if c.startswith("create")]
        self.assertIn(f"stop {created[-1]}", self.calls())

    def test_an_agent_that_refuses_the_session_is_torn_down(self):
        self.mode("notoken")        # the agent wants a token the gateway never got
        st, j = self.gw.json("POST", "/v3/sandboxes", {})
        self.assertEqual((st, j["error"]["code"]), (502, "provisioning_failed"))
        created = [c.split()[1] for c in self.calls() if c.startswith("create")]
        self.assertIn(f"stop {created[-1]}", self.calls())
        gwlib.wait_for(lambda: not self.agent_alive(created[-1]), 10, "the agent to go")


if __name__ == "__main__":
    unittest.main()
