"""The unmodified @vercel/sandbox SDK (3.5.0, installed with npm by this test
into $SA_GW_NODE_DIR, a cache under the build dir) driving sandbox-gateway
with the local provisioner (one agent per session, as root, the sandbox user
as default user):
each test runs one scenario of sdk_scenarios.mjs, which asserts on what the
SDK returns (create with env, attached and detached commands, logs, wait,
replay, kill, timeouts, sudo, cwd, concurrency, 3 MB and unicode output,
writeFiles/readFile/downloadFile/mkDir, sandbox.fs, stop and resume, routes)."""

import json
import os
import shutil
import subprocess
import unittest

import gwlib

SDK_VERSION = "3.5.0"
HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.environ.get("SA_GW_NODE_DIR") or os.path.join(HERE, ".node")


def install_sdk():
    pkg = os.path.join(NODE_DIR, "node_modules", "@vercel", "sandbox", "package.json")
    try:
        with open(pkg) as f:
            if json.load(f)["version"] == SDK_VERSION:
                return
    except (OSError, ValueError, KeyError):
        pass
    os.makedirs(NODE_DIR, exist_ok=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", NODE_DIR,
                    f"@vercel/sandbox@{SDK_VERSION}"], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)


def setUpModule():
    if not shutil.which("node") or not shutil.which("npm"):
        raise unittest.SkipTest("node and npm are needed (scripts/deps --test installs them)")
    install_sdk()


class SdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = gwlib.need_root_and_tmp("gwsdk-")
        cls.gw = gwlib.local_provisioner_gateway(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gw.stop()
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def scenario(self, name):
        env = dict(os.environ, SDK_DIR=NODE_DIR, GW_URL=f"http://127.0.0.1:{self.gw.port}",
                   GW_TOKEN=gwlib.TOKEN)
        r = subprocess.run(["node", os.path.join(HERE, "sdk_scenarios.mjs"), name], env=env,
                           capture_output=True, text=True, timeout=180 * gwlib.SCALE)
        self.assertEqual(r.returncode, 0, f"{name}:\n{r.stdout}\n{r.stderr}\n--- gateway:\n"
                         + self.gw.stderr()[-3000:])

    def test_create_with_env_and_get(self):
        self.scenario("create_env")

    def test_attached_detached_logs_wait_replay(self):
        self.scenario("attached_detached")

    def test_kill_term_default_and_kill(self):
        self.scenario("kill_signals")

    def test_timeout_sudo_cwd_spawn_failure(self):
        self.scenario("timeout_sudo_cwd")

    def test_concurrent_3mb_and_unicode_output(self):
        self.scenario("concurrent_big_unicode")

    def test_write_read_download_mkdir(self):
        self.scenario("files")

    def test_routes_from_create_and_update(self):
        self.scenario("routes")

    def test_fs_helpers(self):
        self.scenario("fs_helpers")

    def test_stop_ends_streams_and_resume(self):
        self.scenario("stop_and_resume")


if __name__ == "__main__":
    unittest.main()
