"""Hardening against in-VM users (docs/agent.md "Threat model"; issue 12,
"Security"). The agent runs as root with --user sa-test; an unprivileged
attacker (sa-test) races the agent's root operations with swapper.py, for a
bounded time. Needs root: without it every class is skipped visibly."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

from agentlib import (AGENT_BIN, Agent, Client, T, Timeout, free_tcp_port, procs_in_session,
                      wait_until)
from test_files import tar_of, ti
from test_files_identity import UserFilesCase
from test_identity import IS_ROOT, USER, SandboxUserCase

SKIP_WHY = "needs root: privilege drop not exercised"
SWAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "swapper.py")
RACE_SECONDS = float(os.environ.get("SA_RACE_SECONDS", "12"))   # per race test


def agent_under_strace(tc, syscalls, follow=False):
    """Start an agent (--dev, its own temp dir) under strace tracing
    syscalls: (process, a Client once it listens, the trace file, the
    socket). Stop it with a `shutdown` request (strace's SIGTERM would only
    detach it)."""
    tmp = tempfile.mkdtemp(prefix="sa-strace-")
    tc.addCleanup(shutil.rmtree, tmp, True)
    sock = os.path.join(tmp, "agent.sock")
    trace = os.path.join(tmp, "trace")
    p = subprocess.Popen(["strace"] + (["-f"] if follow else []) +
                         ["-qq", "-o", trace, "-e", "trace=" + syscalls,
                          AGENT_BIN, "--dev", "--workdir", tmp, "--listen", "unix:" + sock],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    tc.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))

    def connected():
        try:                            # the file appears at bind, before listen
            return Client(sock, timeout=T(10))
        except OSError:
            return None
    return p, wait_until(connected, T(20), what="the agent listening"), trace, sock


class RaceCase(UserFilesCase):
    """The root-owned 0600 secret of UserFilesCase is the target; a swapper
    runs as the sandbox user in a directory of its own (user_dir)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.target = cls.secret

    def setUp(self):
        super().setUp()
        os.chown(self.target, 0, 0)
        os.chmod(self.target, 0o600)

    def target_state(self):
        st = os.lstat(self.target)
        return stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    def swapper(self, *args):
        """Start swapper.py as the user; returns the process once armed."""
        p = subprocess.Popen([sys.executable, SWAPPER] + [str(a) for a in args], user=USER,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
        self.addCleanup(self._reap, p)
        line = p.stdout.readline()
        self.assertEqual(line.strip(), b"ready", p.stderr.read() if not line else line)
        return p

    @staticmethod
    def _reap(p):
        if p.poll() is None:
            p.kill()
        p.communicate()

    def swaps(self, p):
        out, err = p.communicate(timeout=T(30))
        words = out.decode().split()
        self.assertEqual(words[:1], ["swaps"], (out, err))
        return int(words[1])

    def race(self, attempt, seconds=RACE_SECONDS):
        """Run attempt(i) until the target changes or the time is up: the
        number of attempts made. Fails as soon as the target changed."""
        before = (stat.S_IFREG, 0o600, 0, 0)
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            attempt(i)
            i += 1
            self.assertEqual(self.target_state(), before,
                             "the root-owned target changed after %d attempts" % i)
        return i


@unittest.skipUnless(IS_ROOT, SKIP_WHY)
class CreateThenAct(RaceCase):
    """Item 1: after creating a name, root acts on what it created, never
    again on the name (which the user may have swapped for a symlink)."""

    def test_sudo_mkdir_with_special_bits_never_chmods_through_a_swapped_symlink(self):
        d = self.user_dir("mk")
        sw = self.swapper("watch", d, self.target, RACE_SECONDS + 1)

        def attempt(i):
            r = self.c.fs("mkdir", path=os.path.join(d, "m%d" % i), mode=0o3777, sudo=True)
            self.assertIn(r["type"], ("ok", "error"), r)

        n = self.race(attempt)
        swaps = self.swaps(sw)
        self.assertGreater(n, 100)
        self.assertGreater(swaps, 0, "the swapper never got to swap a name")
        # without a swap the directory has every bit asked for, through its fd
        plain = os.path.join(self.user_dir("plain"), "d")
        self.assertEqual(self.c.fs("mkdir", path=plain, mode=0o3777, sudo=True)["type"], "ok")
        st = os.lstat(plain)
        self.assertTrue(stat.S_ISDIR(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o3777)

    def test_root_upload_of_fifos_never_chmods_through_a_swapped_symlink(self):
        d = self.user_dir("fifos")
        sw = self.swapper("watch", d, self.target, RACE_SECONDS + 1)
        per_upload = 500

        def attempt(i):
            archive = tar_of([(ti("r%df%d" % (i, k), tarfile.FIFOTYPE, mode=0o666), None)
                              for k in range(per_upload)])
            final, _ = self.c.upload(archive, dest=d, sudo=True, allow_devices=True)
            self.assertIn(final["type"], ("end", "error"), final)

        n = self.race(attempt)
        swaps = self.swaps(sw)
        self.assertGreater(n, 0)
        self.assertGreater(swaps, 0, "the swapper never got to swap a name")
        # the FIFOs that were not swapped away got their mode, through a descriptor
        fifo = os.path.join(d, "r0f0")
        if os.path.lexists(fifo) and stat.S_ISFIFO(os.lstat(fifo).st_mode):
            self.assertEqual(stat.S_IMODE(os.lstat(fifo).st_mode), 0o666)



@unittest.skipUnless(IS_ROOT, SKIP_WHY)
class HelpersNeverHang(RaceCase):
    """Item 3: a download helper cannot be made to block by a FIFO swapped
    in, and a helper nobody waits for any more is killed, freeing its slot."""

    def test_download_of_a_file_flipped_with_a_fifo_never_hangs(self):
        d = self.user_dir("flip")
        for k in range(20):
            with open(os.path.join(d, "g%d" % k), "wb") as fh:
                fh.write(b"x" * 100)
        with open(os.path.join(d, "f"), "wb") as fh:
            fh.write(b"regular\n")
        os.mkfifo(os.path.join(d, "p"), 0o644)
        for name in os.listdir(d):
            os.lchown(os.path.join(d, name), *self.ids)
        sw = self.swapper("flip", d, "f", "p", RACE_SECONDS + 1)
        end = time.monotonic() + RACE_SECONDS
        outcomes = {}
        n = 0
        while time.monotonic() < end:
            # a hang is a Timeout here (the helper blocked in open)
            final, _ = self.c.download([d], timeout=T(10))
            outcomes[final["type"], final.get("code")] = True
            n += 1
        swaps = self.swaps(sw)
        self.assertGreater(swaps, 0)
        self.assertGreater(n, 20)
        self.assertIn(("end", None), outcomes)

    def xfer_helpers(self):
        """The agent's children: its file helpers (no command runs here)."""
        return {p["pid"] for p in self.agent.children() if p["state"] != "Z"}

    def test_helpers_of_vanished_clients_are_killed_and_free_their_slots(self):
        # A helper that makes no progress — stopped here, as one stuck in
        # the kernel would be — keeps its slot while its client waits. When
        # the client vanishes, the helper must go: 70 such (more than the 64
        # slots) must not deny later file operations.
        big = os.path.join(self.user_dir("big"), "big")
        with open(big, "wb") as fh:
            fh.truncate(64 << 20)
        stopped = []
        self.addCleanup(lambda: [os.kill(p, signal.SIGKILL) for p in stopped
                                 if os.path.exists("/proc/%d" % p)])
        for i in range(70):
            c = self.agent.client()
            known = self.xfer_helpers()
            c.file_start("download", paths=[big])
            try:
                pid = wait_until(lambda: (self.xfer_helpers() - known) or None, T(10),
                                 what="a download helper").pop()
            except Timeout:
                self.fail("client %d got no file helper: the slots are held by the "
                          "helpers of vanished clients" % i)
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
            c.abort()
        r = self.c.fs("stat", path=big)
        self.assertEqual(r["type"], "ok", r)
        wait_until(lambda: not self.xfer_helpers(), T(20), what="every helper gone")
        final, data = self.c.read_file(big, length=10)
        self.assertEqual((final["type"], data), ("end", b"\0" * 10))


    def test_a_cancelled_write_whose_helper_hangs_is_killed_after_its_grace(self):
        # an upload or write first sees the cancellation (to remove its
        # temporary file), then is killed 5 s later if it has not ended
        d = self.user_dir("wr")
        c = self.agent.client()
        known = self.xfer_helpers()
        c.file_start("write", path=os.path.join(d, "f"))
        pid = wait_until(lambda: (self.xfer_helpers() - known) or None, T(10),
                         what="a write helper").pop()
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.path.exists("/proc/%d" % pid) and os.kill(pid, signal.SIGKILL))
        c.abort()
        time.sleep(2)
        self.assertIn(pid, self.xfer_helpers(), "killed before its grace period")
        wait_until(lambda: pid not in self.xfer_helpers(), T(15), what="the helper killed")


@unittest.skipUnless(IS_ROOT, SKIP_WHY)
class IdleHelpers(RaceCase):
    """Item 3: a helper that shows no progress for --helper-idle-ms while its
    client waits (here: stopped, as one stuck in the kernel would be) is
    killed, and its request ends with EIO."""

    extra_agent_args = ("--helper-idle-ms", "2000")

    def test_a_helper_without_progress_is_killed_after_the_idle_deadline(self):
        big = os.path.join(self.user_dir("idle"), "big")
        with open(big, "wb") as fh:
            fh.truncate(64 << 20)
        known = {p["pid"] for p in self.agent.children()}
        rid = self.c.file_start("download", paths=[big])
        pid = wait_until(lambda: ({p["pid"] for p in self.agent.children()} - known) or None,
                         T(10), what="a download helper").pop()
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.path.exists("/proc/%d" % pid) and os.kill(pid, signal.SIGKILL))
        t0 = time.monotonic()
        _first, _events, final = self.c.file_stream(rid, sink=lambda b: None, timeout=T(30))
        self.assertEqual((final["type"], final.get("code")), ("error", "EIO"), final)
        self.assertIn("killed by signal 9", final["message"])
        self.assertGreaterEqual(time.monotonic() - t0, 1.5)
        self.assertIn(b"made no progress for 2.0 s; killing it", self.agent.log())
        self.assertEqual(self.c.fs("stat", path=big)["type"], "ok")


@unittest.skipUnless(AGENT_BIN, "SA_AGENT not set")
class TcpNeedsTheToken(unittest.TestCase):
    """Item 2: TCP has no peer identity, so any process in the VM could
    connect and run commands as root. A tcp: listener needs the token, or an
    explicit --insecure-tcp that the log and the hello report."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sa-tcp-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def tcp_client(self, port):
        return Client(sock=socket.create_connection(("127.0.0.1", port), timeout=T(10)))

    def test_a_tcp_listener_without_a_token_refuses_to_start(self):
        port = free_tcp_port()
        p = subprocess.run([AGENT_BIN, "--dev", "--workdir", self.tmp,
                            "--listen", "tcp:127.0.0.1:%d" % port],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=T(20))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"without a token", p.stderr)
        self.assertIn(b"--insecure-tcp", p.stderr)

    def test_a_tcp_listener_with_a_token_serves_nothing_before_auth(self):
        token = os.path.join(self.tmp, "token")
        with open(token, "wb") as fh:
            fh.write(b"s3cret\n")
        os.chmod(token, 0o600)
        port = free_tcp_port()
        a = Agent(["--listen", "tcp:127.0.0.1:%d" % port, "--token-file", token]).start()
        self.addCleanup(a.stop)
        with self.tcp_client(port) as c:
            self.assertIs(c.hello["auth_required"], True)
            self.assertIs(c.hello["insecure_tcp"], False)
            r = c.request("exec", argv=["id", "-u"], sudo=True)
            self.assertEqual((r["type"], r.get("code")), ("error", "auth_required"), r)
            self.assertEqual(c.request("auth", token=b"s3cret")["type"], "ok")
            c.ping()

    def test_insecure_tcp_is_logged_loudly_and_reported_in_the_hello(self):
        port = free_tcp_port()
        a = Agent(["--listen", "tcp:127.0.0.1:%d" % port, "--insecure-tcp"]).start()
        self.addCleanup(a.stop)
        self.assertIn(b"INSECURE: tcp:127.0.0.1:%d serves WITHOUT A TOKEN" % port, a.log())
        with self.tcp_client(port) as c:
            self.assertIs(c.hello["insecure_tcp"], True)
            self.assertIs(c.hello["auth_required"], False)
            c.ping()
        with a.client() as c:               # every hello says so, unix ones too
            self.assertIs(c.hello["insecure_tcp"], True)

    def test_a_unix_only_agent_is_not_insecure(self):
        a = Agent([]).start()
        self.addCleanup(a.stop)
        with a.client() as c:
            self.assertIs(c.hello["insecure_tcp"], False)



@unittest.skipUnless(IS_ROOT, SKIP_WHY)
class CommandTerminal(SandboxUserCase):
    """Item 4: the pty slave belongs to the command's user (mode 0620), so a
    command run as the sandbox user can reopen its own terminal."""

    def test_a_pty_command_as_the_user_owns_and_can_reopen_its_tty(self):
        script = ('t=$(tty); stat -c "owner=%U mode=%a" "$t"; '
                  'if (exec 3<>"$t"); then echo reopened-tty; fi; '
                  'if (exec 4</dev/tty); then echo reopened-devtty; fi')
        out, _err, x = self.c.exec_collect(["sh", "-c", script], pty=True)
        self.assertEqual(x["code"], 0, out)
        self.assertIn(b"owner=%s mode=620" % USER.encode(), out)
        self.assertIn(b"reopened-tty", out)
        self.assertIn(b"reopened-devtty", out)


@unittest.skipUnless(AGENT_BIN, "SA_AGENT not set")
class UnixSocketMode(unittest.TestCase):
    """Item 4: the socket file is born 0600, whatever the umask, and is
    never chmod'ed by name (which would follow a symlink swapped in)."""

    @unittest.skipUnless(shutil.which("strace"), "needs strace to see the system calls")
    def test_the_socket_is_born_0600_without_a_chmod_by_name(self):
        old = os.umask(0)
        try:
            p, c, trace, sock = agent_under_strace(self, "%file,fchmod", follow=True)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.lstat(sock).st_mode), 0o600)
        with c:
            c.ping()
            c.ok("shutdown")
        p.wait(T(30))
        with open(trace) as fh:
            calls = fh.read()
        by_name = [l for l in calls.splitlines() if "chmod" in l and "agent.sock" in l]
        self.assertEqual(by_name, [])
        self.assertRegex(calls, r"fchmod\(\d+, 0600\)")


@unittest.skipUnless(AGENT_BIN, "SA_AGENT not set")
class SyncChildHoldsNothing(unittest.TestCase):
    """Item 4: the child that runs sync(2) for a `sync` request closes every
    descriptor it inherited (connections, pipes, ptys) before it calls
    sync(), which can take seconds: a client that goes away meanwhile must
    see its connection close."""

    @unittest.skipUnless(shutil.which("strace"), "needs strace to see the system calls")
    def test_the_sync_child_closes_its_fds_before_sync(self):
        p, c, trace, _sock = agent_under_strace(self, "close_range,sync", follow=True)
        # the agent is strace's child; its own sync() at shutdown is not the child's
        agent = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                               text=True).stdout.split()
        self.assertEqual(len(agent), 1, agent)
        with c:
            c.ok("sync")
            c.ok("shutdown")
        p.wait(T(30))
        with open(trace) as fh:
            lines = fh.read().splitlines()
        syncs = [l for l in lines if re.search(r"\bsync\(\)", l) and l.split()[0] != agent[0]]
        self.assertTrue(syncs, "no sync() traced in a child:\n" + "\n".join(lines))
        for l in syncs:
            pid = l.split()[0]
            mine = [x for x in lines if x.split()[0] == pid]
            first_sync = next(i for i, x in enumerate(mine) if re.search(r"\bsync\(\)", x))
            closed = [x for x in mine[:first_sync] if re.search(r"close_range\(0, 4294967295", x)]
            self.assertTrue(closed, "process %s called sync() holding its fds:\n%s"
                            % (pid, "\n".join(mine)))


@unittest.skipUnless(AGENT_BIN and IS_ROOT, "needs root (per-command cgroups) and SA_AGENT")
class GroupSignalsByPidfd(unittest.TestCase):
    """Item 4: a group signal walks cgroup.procs and signals each member
    through a pidfd opened and checked after the pid was read, never with
    kill(pid), which could hit a process that got a recycled pid."""

    @unittest.skipUnless(shutil.which("strace"), "needs strace to see the system calls")
    def test_a_group_sigterm_goes_through_pidfds_not_kill(self):
        # no -f: only the agent's own calls (the commands are not traced)
        p, c, trace, _sock = agent_under_strace(self, "kill,pidfd_send_signal")
        with c:
            if "cgroup" not in c.hello["capabilities"]:
                self.skipTest("no per-command cgroups here")
            rid, r = c.exec_start(["sh", "-c", "sleep 100 & sleep 100 & wait"])
            self.assertEqual(r["type"], "ok", r)
            wait_until(lambda: len(procs_in_session(r["pid"])) >= 3, T(10),
                       what="the shell and its two sleeps")
            c.ok("signal", cmd=r["cmd"], signal=15)
            res = c.finish(rid, r)
            self.assertEqual(res.exit.get("signal"), 15, res.exit)
            c.ok("shutdown")
        p.wait(T(30))
        with open(trace) as fh:
            calls = fh.read()
        self.assertGreaterEqual(calls.count("pidfd_send_signal("), 3, calls)
        self.assertNotRegex(calls, r"\bkill\(\d+, SIGTERM\)")


if __name__ == "__main__":
    unittest.main()
