"""End to end through the qemu provisioner: sandbox-gateway --provisioner
gateway/provisioners/qemu boots the static agent as PID 1 of Debian's cloud
kernel under QEMU for a session, and the requests the @vercel/sandbox SDK
sends (same paths, headers, bodies: ?teamId=, content-type
application/json, the gzip'd tar of writeFiles with x-cwd /) go through it:
create → runCommand → writeFiles → readFile → stop, then nothing is left.
With node and @vercel/sandbox in $SA_GW_NODE_DIR (test_sdk installs it
there), the same through the unmodified SDK (qemu_e2e.mjs).

Not a ctest entry (the name does not match test_*.py: it boots a VM, about a
minute under TCG); scripts/test runs it in the packaging stage, after
build-static and the VM boot test, whose kernel cache it reuses:

  cd tests/gateway && SA_GATEWAY=../../build/sandbox-gateway \\
      SA_STATIC_AGENT=../../build-static/sandbox-agent SA_QEMU_CACHE=../../build-vm \\
      SA_GW_NODE_DIR=../../build/gateway-node /usr/bin/python3 -m unittest -v qemu_e2e
"""

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import unittest

import gwlib

HERE = os.path.dirname(os.path.abspath(__file__))
QEMU_PROV = os.path.abspath(os.path.join(HERE, "..", "..", "gateway", "provisioners", "qemu"))
STATIC_AGENT = os.path.abspath(os.environ.get("SA_STATIC_AGENT") or "")
CACHE = os.path.abspath(os.environ.get("SA_QEMU_CACHE") or os.path.join(HERE, "..", "..",
                                                                         "build-vm"))
NODE_DIR = os.environ.get("SA_GW_NODE_DIR") or ""
TEAM = "?teamId=team_local"
BOOT_S = 240        # TCG boot and the kernel's download on a cold cache


def tar_gz(files):
    """What the SDK's writeFiles sends: tar-stream entries relative to /,
    gzip level 6."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), 6)


class QemuE2E(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not gwlib.GATEWAY_BIN or not os.path.isfile(STATIC_AGENT):
            raise unittest.SkipTest("SA_GATEWAY and SA_STATIC_AGENT must name the binaries")
        cls.tmp = tempfile.mkdtemp(prefix="gwqemu-")
        cls.run_dir = os.path.join(cls.tmp, "run")
        os.makedirs(CACHE, exist_ok=True)
        saved = dict(os.environ)
        os.environ.update(SANDBOX_GATEWAY_RUN=cls.run_dir, SANDBOX_AGENT_STATIC=STATIC_AGENT,
                          SANDBOX_GATEWAY_QEMU_CACHE=CACHE,
                          SANDBOX_GATEWAY_START_TIMEOUT=str(BOOT_S - 20))
        try:
            cls.gw = gwlib.Gateway(cls.tmp, [], ("--provisioner", QEMU_PROV,
                                                 "--provisioner-timeout", str(BOOT_S), "-v"))
        finally:
            os.environ.clear()
            os.environ.update(saved)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gw.stop()
        finally:
            # a stopped gateway leaves its sessions running (a restarted one
            # serves them again): power off what a failed test left
            env = dict(os.environ, SANDBOX_GATEWAY_RUN=cls.run_dir)
            for sid in cls.vm_sessions(cls.run_dir):
                subprocess.run([QEMU_PROV, "stop", sid], env=env, timeout=60)
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @staticmethod
    def vm_sessions(run_dir):
        d = os.path.join(run_dir, "qemu")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def sdk(self, method, path, body=None, **kw):
        return self.gw.http(method, path + TEAM, body, timeout=BOOT_S + 60, **kw)

    @staticmethod
    def stdout(lines):
        return "".join(x["data"] for x in lines if x.get("stream") == "stdout")

    def vm_files(self):
        return self.vm_sessions(self.run_dir)

    def test_create_run_write_read_stop(self):
        t0 = time.monotonic()
        st, _, payload = self.sdk("POST", "/v3/sandboxes",
                                  {"projectId": "prj_local", "runtime": "node22",
                                   "timeout": 600000, "resources": {"vcpus": 1},
                                   "env": {"E2E": "through qemu"}})
        self.assertEqual(st, 200, payload[-2000:] + self.gw.stderr()[-3000:].encode())
        j = json.loads(payload)
        sid = j["session"]["id"]
        base = self.gw.sess(sid)
        print(f"\nqemu_e2e: session {sid} running {time.monotonic() - t0:.1f} s after create",
              flush=True)
        self.assertEqual(j["session"]["cwd"], "/vercel/sandbox")
        self.assertEqual(j["routes"], [])
        self.assertEqual(self.vm_files(), [sid])

        # runCommand (attached, as the SDK's wait:true): the create env, the
        # sandbox user, the guest's kernel; with sudo, PID 1 is the agent
        st, r, payload = self.sdk("POST", base + "/cmd",
                                  {"command": "sh", "args": ["-c", "echo $E2E; id -un; uname -s"],
                                   "env": {}, "sudo": False, "wait": True, "logs": True})
        self.assertEqual((st, r.getheader("content-type")), (200, "application/x-ndjson"))
        lines = [json.loads(x) for x in payload.splitlines()]
        self.assertIsNone(lines[0]["command"]["exitCode"])
        self.assertEqual(self.stdout(lines), "through qemu\nvercel-sandbox\nLinux\n")
        self.assertEqual(lines[-1]["command"]["exitCode"], 0)
        st, _, payload = self.sdk("POST", base + "/cmd", {"command": "readlink",
                                                          "args": ["/proc/1/exe"], "sudo": True,
                                                          "wait": True})
        self.assertEqual(self.stdout(map(json.loads, payload.splitlines())),
                         "/usr/sbin/sandbox-agent\n")

        # writeFiles: binary, mode 755, a nested path
        blob = os.urandom(300000)
        body = tar_gz({"vercel/sandbox/hello.txt": (b"hello from the host\n", 0o644),
                       "vercel/sandbox/bin/blob": (blob, 0o755)})
        st, _, payload = self.sdk("POST", base + "/fs/write", raw=body,
                                  headers={"content-type": "application/gzip", "x-cwd": "/"})
        self.assertEqual((st, json.loads(payload)), (200, {}))
        st, _, payload = self.sdk("POST", base + "/cmd",
                                  {"command": "stat", "args": ["-c", "%U %a", "bin/blob"],
                                   "wait": True})
        self.assertEqual(self.stdout(map(json.loads, payload.splitlines())),
                         "vercel-sandbox 755\n")

        # readFile: relative to the session cwd, bytes exact; missing is a 404
        st, r, payload = self.sdk("POST", base + "/fs/read", {"path": "hello.txt"})
        self.assertEqual((st, payload), (200, b"hello from the host\n"))
        self.assertIn("application/octet-stream", r.getheader("content-type"))
        st, _, payload = self.sdk("POST", base + "/fs/read",
                                  {"path": "/vercel/sandbox/bin/blob"})
        self.assertEqual((st, payload == blob), (200, True))
        st, _, _ = self.sdk("POST", base + "/fs/read", {"path": "missing.txt"})
        self.assertEqual(st, 404)

        # stop: the VM powers off, its files go
        st, _, payload = self.sdk("POST", base + "/stop")
        self.assertEqual(st, 200, payload)
        self.assertEqual(json.loads(payload)["session"]["status"], "stopped")
        self.assertEqual(self.vm_files(), [])
        st, _, _ = self.sdk("POST", base + "/cmd", {"command": "true"})
        self.assertEqual(st, 410)       # a stopped session, as the SDK expects
        print(f"qemu_e2e: create to stopped in {time.monotonic() - t0:.1f} s", flush=True)

    def test_a_failed_create_leaves_nothing(self):
        run = os.path.join(self.tmp, "run-failing")
        base = dict(os.environ, SANDBOX_GATEWAY_RUN=run, SANDBOX_AGENT_STATIC=STATIC_AGENT,
                    SANDBOX_GATEWAY_QEMU_CACHE=CACHE, SANDBOX_GATEWAY_START_TIMEOUT="20")
        cases = (("a dynamic agent", {"SANDBOX_AGENT_STATIC": gwlib.GATEWAY_BIN},
                  "not a statically linked agent"),
                 ("QEMU that exits at once", {"SANDBOX_GATEWAY_QEMU": "/bin/false"},
                  "QEMU exited before the agent answered"))
        for what, env, says in cases:
            with self.subTest(what):
                p = subprocess.run([QEMU_PROV, "create", "sess_fail"], input="{}", text=True,
                                   capture_output=True, env=dict(base, **env), timeout=120)
                self.assertNotEqual(p.returncode, 0)
                self.assertEqual(p.stdout, "")
                self.assertIn(says, p.stderr)
                self.assertEqual(os.listdir(os.path.join(run, "qemu")), [])

    def test_the_sdk_create_run_write_read_stop(self):
        sdk = os.path.join(NODE_DIR, "node_modules", "@vercel", "sandbox", "package.json")
        if not shutil.which("node") or not os.path.isfile(sdk):
            self.skipTest("needs node and @vercel/sandbox in SA_GW_NODE_DIR (test_sdk installs it)")
        env = dict(os.environ, SDK_DIR=NODE_DIR, GW_URL=f"http://127.0.0.1:{self.gw.port}",
                   GW_TOKEN=gwlib.TOKEN)
        r = subprocess.run(["node", os.path.join(HERE, "qemu_e2e.mjs")], env=env,
                           capture_output=True, text=True, timeout=BOOT_S + 120)
        self.assertEqual(r.returncode, 0, f"{r.stdout}\n{r.stderr}\n--- gateway:\n"
                         + self.gw.stderr()[-3000:])
        self.assertEqual(self.vm_files(), [])


if __name__ == "__main__":
    unittest.main()
