"""gwlib — harness of the sandbox-gateway tests.

  Pool        N real agents (SA_AGENT), as root with the sandbox user as default
              user (vercel-sandbox where it exists, else nobody), each on a private
              Unix socket with its own workdir owned by that user.
  Gateway     sandbox-gateway (SA_GATEWAY) with --pool on those agents, a token
              file and a state dir; listens on 127.0.0.1:0 and reads the port it
              prints; stop() = SIGTERM and checks a clean exit (exit 0, no
              sanitizer report: ASan builds run with detect_leaks=1).
  http()      one request over http.client, JSON in and out.
  GatewayCase a TestCase with one pool and one gateway per class.

Every wait has a deadline. Needs root (the agents drop privileges for real).
"""

import http.client
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

GATEWAY_BIN = os.environ.get("SA_GATEWAY", "")
AGENT_BIN = os.environ.get("SA_AGENT", "")
TOKEN = "gw-test-token-opaque"


def _has_asan(path):
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


SCALE = 3 if _has_asan(GATEWAY_BIN) else 1


def sandbox_user():
    for name in ("vercel-sandbox", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    raise RuntimeError("neither vercel-sandbox nor nobody exists")


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Pool:
    def __init__(self, n, tmp):
        self.user = sandbox_user()
        self.procs, self.addrs = [], []
        for i in range(n):
            wd = os.path.join(tmp, f"wd{i}")
            os.mkdir(wd)
            os.chown(wd, self.user.pw_uid, self.user.pw_gid)
            sock = os.path.join(tmp, f"agent{i}.sock")
            err = open(os.path.join(tmp, f"agent{i}.stderr"), "wb")
            p = subprocess.Popen([AGENT_BIN, "--listen", "unix:" + sock, "--workdir", wd,
                                  "--user", self.user.pw_name, "-q"],
                                 stdin=subprocess.DEVNULL, stdout=err, stderr=err)
            err.close()
            self.procs.append(p)
            self.addrs.append("unix:" + sock)
            wait_for(lambda: os.path.exists(sock), 10, "agent socket")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Gateway:
    def __init__(self, tmp, pool_addrs, extra=(), state_dir=None, env=None):
        self.tmp = tmp
        self.env = env or {}
        self.token_file = os.path.join(tmp, "token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.state_dir = state_dir or os.path.join(tmp, "state")
        self.args = [GATEWAY_BIN, "--listen", "127.0.0.1:0", "--token-file", self.token_file,
                     "--state-dir", self.state_dir]
        for a in pool_addrs:
            self.args += ["--pool", a]
        self.args += list(extra)
        self.start()

    def start(self):
        self.log = os.path.join(self.tmp, f"gateway.{time.monotonic_ns()}.stderr")
        err = open(self.log, "wb")
        env = dict(os.environ, **self.env)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                     env=env)
        err.close()

        def port():
            with open(self.log, errors="replace") as f:
                for line in f:
                    if "listening on " in line:
                        return int(line.rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited: " + self.stderr())
            return None
        self.port = wait_for(port, 10, "the gateway's port")

    def stderr(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self, check=True):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30 * SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the gateway did not exit on SIGTERM")
        if check:
            text = self.stderr()
            if rc != 0 or "Sanitizer" in text or "runtime error" in text:
                raise AssertionError(f"gateway exit {rc}:\n{text[-4000:]}")

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * SCALE)

    def http(self, method, path, body=None, headers=None, token=TOKEN, raw=None, timeout=30):
        h = {"content-type": "application/json"}
        if token is not None:
            h["authorization"] = "Bearer " + token
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        c = self.conn(timeout)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            payload = r.read()
            return r.status, r, payload
        finally:
            c.close()

    def json(self, method, path, body=None, **kw):
        st, r, payload = self.http(method, path, body, **kw)
        try:
            return st, json.loads(payload) if payload.strip() else None
        except ValueError:
            return st, payload

    def create(self, **body):
        st, j = self.json("POST", "/v3/sandboxes", body)
        assert st == 200, (st, j)
        return j["session"]["id"], j

    def sess(self, sid):
        return f"/v2/sandboxes/sessions/{sid}"


def need_root_and_tmp(prefix):
    """Skip (visibly) unless root with both binaries; a fresh 0755 temp dir."""
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root: the agents drop privileges to the sandbox user")
    if not GATEWAY_BIN or not AGENT_BIN:
        raise unittest.SkipTest("SA_GATEWAY and SA_AGENT must name the binaries")
    tmp = tempfile.mkdtemp(prefix=prefix)
    os.chmod(tmp, 0o755)
    return tmp


LOCAL_PROVISIONER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                 "gateway", "provisioners", "local")


def local_provisioner_gateway(tmp):
    """A gateway whose sessions come from gateway/provisioners/local: one agent
    per session, as root, the sandbox user as default user."""
    run = os.path.join(tmp, "run")
    os.mkdir(run, 0o755)
    env = {"SANDBOX_GATEWAY_RUN": run, "SANDBOX_AGENT": AGENT_BIN,
           "SANDBOX_GATEWAY_USER": sandbox_user().pw_name}
    return Gateway(tmp, [], ("--provisioner", os.path.abspath(LOCAL_PROVISIONER)), env=env)


class GatewayCase(unittest.TestCase):
    pool_size = 4
    gateway_args = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = need_root_and_tmp("gwtest-")
        cls.pool = Pool(cls.pool_size, cls.tmp)
        cls.gw = Gateway(cls.tmp, cls.pool.addrs, cls.gateway_args)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gw.stop()
        finally:
            cls.pool.stop()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def stop_session(self, sid):
        st, _ = self.gw.json("POST", self.gw.sess(sid) + "/stop")
        self.assertEqual(st, 200)

