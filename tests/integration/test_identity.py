"""Identity: the agent runs as root and drops privileges for commands
(PROTOCOL.md §4 exec `user`, `sudo`; CONTEXT.md security model). Needs root:
without it the whole module is skipped visibly."""

import grp
import os
import pwd
import stat
import subprocess
import sys
import unittest

from agentlib import AgentTestCase, T, env_lines, kill_sessions

USER = "sa-test"
GROUP = "sa-test-grp"
IS_ROOT = os.geteuid() == 0


def ensure_test_user():
    """Create sa-test (home directory, /bin/sh) with supplementary group
    sa-test-grp if missing; idempotent and safe when modules run in parallel."""
    def run(*argv):
        subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        run("groupadd", GROUP)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        run("useradd", "--create-home", "--shell", "/bin/sh", "--groups", GROUP, USER)
    pw = pwd.getpwnam(USER)
    if USER not in grp.getgrnam(GROUP).gr_mem:
        run("usermod", "-a", "-G", GROUP, USER)
    if not os.path.isdir(pw.pw_dir):
        os.makedirs(pw.pw_dir, 0o755)
        os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)
    return pwd.getpwnam(USER), grp.getgrnam(GROUP)


class SandboxUserCase(AgentTestCase):
    """One agent per class, not in dev mode, with --user sa-test (created if
    missing) owning the workdir; cls.pw and cls.gr are its passwd and group
    entries. Needs root: subclasses skip themselves visibly without it."""
    agent_dev = False

    @classmethod
    def setUpClass(cls):
        cls.pw, cls.gr = ensure_test_user()
        cls.agent_args = ("--user", USER) + tuple(getattr(cls, "extra_agent_args", ()))
        cls.agent_workdir_owner = (cls.pw.pw_uid, cls.pw.pw_gid)
        super().setUpClass()


# Run as another user: connects to the socket in argv[1], sends a ping,
# prints "hello N" if a hello came, else "closed N" or "error <exception>".
PEER_PROG = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX); s.settimeout(5)\n"
    "data = b''\n"
    "try:\n"
    "    s.connect(sys.argv[1])\n"
    "    s.sendall(bytes.fromhex('0000000f82a474797065a470696e67a2696401'))\n"
    "    while b'hello' not in data:\n"
    "        b = s.recv(65536)\n"
    "        if not b: break\n"
    "        data += b\n"
    "except Exception as e:\n"
    "    if b'hello' not in data:\n"
    "        print('error', type(e).__name__); sys.exit(0)\n"
    "print('hello' if b'hello' in data else 'closed', len(data))\n")


def connect_as(user, path):
    """PEER_PROG as user against the socket path: its verdict words."""
    p = subprocess.run([sys.executable, "-c", PEER_PROG, path], user=user,
                       capture_output=True, timeout=T(20), cwd="/")
    verdict = p.stdout.decode().split()
    if not verdict:
        raise AssertionError("peer program failed: %r" % p.stderr)
    return verdict


@unittest.skipUnless(IS_ROOT, "needs root: privilege drop not exercised")
class PrivilegeDrop(SandboxUserCase):

    def run_env(self, **kw):
        out, err, x = self.c.exec_collect(["env"], **kw)
        self.assertEqual(x["code"], 0, err)
        return env_lines(out)

    def test_hello_reports_not_dev_and_the_default_user(self):
        self.assertIs(self.c.hello["dev"], False)
        self.assertEqual(self.c.hello["user"], USER)

    def test_command_runs_with_the_users_uid_and_gid(self):
        r = self.c.run(["sh", "-c", "id -u; id -g; id -un"])
        self.assertEqual(r.stdout.decode().split(), [str(self.pw.pw_uid), str(self.pw.pw_gid), USER])
        self.assertEqual(r.reply["user"], USER)

    def test_supplementary_groups_are_the_users_groups(self):
        out, _, _ = self.c.exec_collect(["id", "-G"])
        got = set(int(g) for g in out.split())
        self.assertIn(self.gr.gr_gid, got)
        self.assertEqual(got, set(os.getgrouplist(USER, self.pw.pw_gid)))
        self.assertNotIn(0, got, "root's group leaked into the command")

    def test_real_effective_and_saved_ids_are_all_dropped(self):
        out, _, _ = self.c.exec_collect(["grep", "-E", "^(Uid|Gid|CapEff|CapPrm):", "/proc/self/status"])
        fields = {l.split(":")[0]: l.split(":")[1].split() for l in out.decode().splitlines()}
        self.assertEqual(set(fields["Uid"]), {str(self.pw.pw_uid)})
        self.assertEqual(set(fields["Gid"]), {str(self.pw.pw_gid)})
        self.assertEqual(int(fields["CapEff"][0], 16), 0)
        self.assertEqual(int(fields["CapPrm"][0], 16), 0)

    def test_environment_names_the_user(self):
        env = self.run_env()
        self.assertEqual(env["HOME"], self.pw.pw_dir)
        self.assertEqual(env["USER"], USER)
        self.assertEqual(env["LOGNAME"], USER)

    def test_root_only_files_are_out_of_reach(self):
        out, err, x = self.c.exec_collect(["cat", "/etc/shadow"])
        self.assertNotEqual(x["code"], 0)
        self.assertEqual(out, b"")

    def test_files_created_in_the_workdir_belong_to_the_user(self):
        out, err, x = self.c.exec_collect(["sh", "-c", "echo hi > created-by-cmd"])
        self.assertEqual(x["code"], 0, err)
        st = os.stat(os.path.join(self.agent.workdir, "created-by-cmd"))
        self.assertEqual((st.st_uid, st.st_gid), (self.pw.pw_uid, self.pw.pw_gid))

    def test_sudo_runs_as_root_with_root_home_and_keeps_env_and_path(self):
        plain = self.run_env(env={"KEEP_ME": "1"})
        r = self.c.run(["sh", "-c", "id -u; id -g; env"], sudo=True, env={"KEEP_ME": "1"})
        lines = r.stdout.decode().splitlines()
        self.assertEqual(lines[:2], ["0", "0"])
        env = env_lines("\n".join(lines[2:]).encode())
        self.assertEqual(env["HOME"], "/root")
        self.assertEqual(env["USER"], "root")
        self.assertEqual(env["LOGNAME"], "root")
        self.assertEqual(env["KEEP_ME"], "1")
        self.assertEqual(env["PATH"], plain["PATH"])
        self.assertEqual(r.reply["user"], "root")

    def test_explicit_user_root(self):
        r = self.c.run(["sh", "-c", "id -u; echo $HOME; echo $USER"], user="root")
        self.assertEqual(r.stdout.decode().split(), ["0", "/root", "root"])

    def test_explicit_other_user(self):
        nobody = pwd.getpwnam("nobody")
        r = self.c.run(["sh", "-c", "id -u; id -g"], user="nobody", cwd="/")
        self.assertEqual(r.stdout.decode().split(), [str(nobody.pw_uid), str(nobody.pw_gid)])

    def test_unknown_user_is_unknown_user_stage_user(self):
        rid, r = self.c.exec_start(["true"], user="sa-it-no-such-user", stdin="null")
        self.assertErrorReply(r, "unknown_user")
        self.assertEqual(r.get("stage"), "user")
        self.assertStillServes()

    def test_cwd_the_user_cannot_enter_is_eacces_stage_cwd(self):
        d = os.path.join(self.agent.tmp, "root-only")
        os.mkdir(d, 0o700)
        rid, r = self.c.exec_start(["true"], cwd=d, stdin="null")
        self.assertErrorReply(r, "EACCES")
        self.assertEqual(r.get("stage"), "cwd")
        # but root may
        self.assertEqual(self.c.run(["true"], cwd=d, sudo=True).code, 0)

    def test_other_local_users_cannot_talk_to_the_agent(self):
        # Even if the socket's mode were loosened, the peer-credential check
        # must refuse a connection from an unprivileged process.
        os.chmod(self.agent.sock_path, 0o666)
        try:
            verdict = connect_as(USER, self.agent.sock_path)
            self.assertNotEqual(verdict[0], "hello",
                                "an unprivileged local user got a hello from the agent: %r" % verdict)
            # it did reach the socket (so the refusal was the agent's, not the file mode's)
            self.assertIn(verdict[0], ("closed", "error"), verdict)
            if verdict[0] == "error":
                self.assertIn(verdict[1], ("ConnectionResetError", "BrokenPipeError"), verdict)
        finally:
            os.chmod(self.agent.sock_path, 0o600)
        self.assertStillServes()


@unittest.skipUnless(IS_ROOT, "needs root: privilege drop not exercised")
class PrivilegeDropSignals(SandboxUserCase):
    """Signalling and killing a command of another user works (the agent
    signals as root)."""

    def test_signal_a_dropped_command_group(self):
        rid, r = self.c.exec_start(["sh", "-c", "sleep 1000 & sleep 1000 & wait"], stdin="null")
        self.addCleanup(kill_sessions, [r["pid"]])
        self.assertEqual(r["type"], "ok", r)
        self.c.ok("signal", cmd=r["cmd"], signal=9)
        self.assertEqual(self.c.finish(rid, r, timeout=T(20)).code, 137)


if __name__ == "__main__":
    unittest.main()
