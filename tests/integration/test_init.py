"""PID-1 mode (docs/agent.md "PID 1"): the agent as init of a new PID
namespace (`unshare --pid --fork --mount-proc --mount --uts`) reaps every
orphan re-parented to it without disturbing the exit statuses of its
commands, and a SIGTERM shuts down gracefully — SIGTERM to the commands, a
grace period, SIGKILL, power off — which ends the namespace. With `--init`
but not PID 1, the same shutdown ends in exit 0.

The namespace tests run the agent with --no-mount (the test's temp dir lives
in the host's /tmp); the system duties (mounts, hostname, loopback) are
tested once in private mount, UTS and network namespaces with the temp dir
under /var/tmp. Needs root and unshare; skipped visibly otherwise."""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from agentlib import (AGENT_BIN, SANITIZER_MARKERS, Agent, Client, T, proc_stat, wait_until)

UNSHARE = shutil.which("unshare")
NS = ["--pid", "--fork", "--mount-proc", "--mount", "--uts"]


def _why_no_namespaces():
    if not AGENT_BIN or not os.access(AGENT_BIN, os.X_OK):
        return "SA_AGENT is not set to an executable sandbox-agent"
    if os.geteuid() != 0:
        return "needs root: PID namespaces not exercised"
    if not UNSHARE:
        return "unshare (util-linux) not found"
    try:
        r = subprocess.run([UNSHARE] + NS + ["--net", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unshare failed: %s" % e
    if r.returncode != 0:
        return "unshare not permitted here: %s" % r.stderr.decode(errors="replace").strip()
    return None


WHY_NOT = _why_no_namespaces()


def children_of(pid):
    kids = set()
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    kids.update(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        return []
    return [st for st in (proc_stat(k) for k in sorted(kids)) if st]


class NsAgent:
    """The agent as PID 1 of a fresh PID namespace, under unshare."""

    def __init__(self, extra=(), unshare_extra=(), no_mount=True, tmp_dir=None):
        self.extra = list(extra)
        self.unshare_extra = list(unshare_extra)
        self.no_mount = no_mount
        self.tmp_dir = tmp_dir
        self.proc = None

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="sa-init-", dir=self.tmp_dir)
        os.chmod(self.tmp, 0o755)
        self.sock = os.path.join(self.tmp, "agent.sock")
        self.work = os.path.join(self.tmp, "work")
        os.mkdir(self.work)
        self.stderr_path = os.path.join(self.tmp, "agent.stderr")
        args = [UNSHARE] + NS + self.unshare_extra + [
            AGENT_BIN, "--init", "--listen", "unix:" + self.sock, "--workdir", self.work, "--dev"]
        if self.no_mount:
            args.append("--no-mount")
        args += self.extra
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True, close_fds=True)
        try:
            self.pid = wait_until(self._find_agent, T(10), what="the agent inside the namespace")
            wait_until(self._hello, T(10), what="the agent to answer")
        except BaseException:
            self.stop()
            raise
        return self

    def _find_agent(self):
        for st in children_of(self.proc.pid):
            try:
                with open("/proc/%d/status" % st["pid"]) as f:
                    ns = [l.split()[1:] for l in f if l.startswith("NSpid:")]
            except OSError:
                continue
            if ns and ns[0][-1] == "1" and st["comm"] != "unshare":
                return st["pid"]
        if self.proc.poll() is not None:
            raise AssertionError("unshare exited with %r:\n%s" % (self.proc.returncode, self.log()))
        return None

    def _hello(self):
        if not os.path.exists(self.sock):
            return False
        try:
            with Client(self.sock, timeout=T(2)):
                return True
        except (OSError, ConnectionError, AssertionError):
            return False

    def client(self, **kw):
        return Client(self.sock, **kw)

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def children(self):
        return children_of(self.pid)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            # SIGKILL to a namespace's init kills everything in the namespace.
            st = proc_stat(self.pid) if getattr(self, "pid", None) else None
            if st:
                os.kill(self.pid, signal.SIGKILL)
            else:
                self.proc.kill()
            try:
                self.proc.wait(T(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not os.environ.get("SA_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)


def collect(c, rids, until, timeout):
    """Read events of the exec ids rids into {rid: {"out": bytes, "exit": msg}}
    until until(state) is true."""
    state = {rid: {"out": b"", "exit": None} for rid in rids}
    deadline = time.monotonic() + timeout
    while not until(state):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out; state %r" % state)
        m = c.recv_match(lambda m: m.get("id") in state, left)
        s = state[m["id"]]
        if m.get("type") == "output":
            s["out"] += m["data"]
        elif m.get("type") == "exit":
            s["exit"] = m
    return state


@unittest.skipIf(WHY_NOT, WHY_NOT)
class Pid1(unittest.TestCase):

    def start(self, **kw):
        a = NsAgent(**kw).start()
        self.addCleanup(a.stop)
        self.addCleanup(self.check_log, a)
        return a

    def check_log(self, a):
        log = a.log()
        for m in SANITIZER_MARKERS:
            self.assertNotIn(m.decode(), log, "sanitizer report:\n" + log[-3000:])

    def test_agent_is_pid_1_and_logs_init_mode(self):
        a = self.start()
        with a.client() as c:
            r = c.run(["sh", "-c", "echo $$; cat /proc/1/comm"])
        self.assertEqual(r.code, 0)
        self.assertEqual(r.stdout.split()[1], b"sandbox-agent")
        self.assertIn("init mode as PID 1", a.log())

    def test_orphan_storm_leaves_no_zombies_and_exit_codes_stay_right(self):
        a = self.start()
        storm = "for i in $(seq 2000); do (sleep 0.2 &); done"
        seen = {"max_orphans": 0}
        done = threading.Event()

        def sample():
            while not done.is_set():
                n = sum(1 for p in a.children() if p["comm"] == "sleep")
                seen["max_orphans"] = max(seen["max_orphans"], n)
                time.sleep(0.02)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            with a.client() as c:
                srid, sreply = c.exec_start(["sh", "-c", storm], stdin="null")
                self.assertEqual(sreply["type"], "ok", sreply)
                # concurrent commands while orphans die all around them
                specs = [{"argv": ["sh", "-c", "sleep 0.%d; exit %d" % (i % 5 + 1, 40 + i)]}
                         for i in range(20)]
                for res, i in zip(c.run_many(specs, timeout=T(60)), range(20)):
                    self.assertEqual((res.code, res.exit["signal"]), (40 + i, 0), res.exit)
                for i in range(10):
                    self.assertEqual(c.run(["sh", "-c", "exit %d" % (i + 1)]).code, i + 1)
                self.assertEqual(c.run(["sh", "-c", "sleep 0.5; exit 42"]).code, 42)
                res = c.finish(srid, sreply, timeout=T(120))
                self.assertEqual(res.code, 0, res)
                wait_until(lambda: not [p for p in a.children() if p["comm"] == "sleep"], T(20),
                           what="the orphaned sleeps to end")
        finally:
            done.set()
            t.join(5)
        self.assertGreater(seen["max_orphans"], 5,
                           "orphans were never seen re-parented to the agent (PID 1)")
        deadline = time.monotonic() + T(3)
        while True:
            z = [p for p in a.children() if p["state"] == "Z"]
            if not z or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(z, [], "zombies left under the agent as PID 1")
        with a.client() as c:
            c.ping()

    def test_sigterm_terms_then_kills_after_the_grace_period_and_ends_the_namespace(self):
        grace = T(1.5)
        a = self.start(extra=["--grace-ms", str(int(grace * 1000))])
        c = a.client()
        self.addCleanup(c.close)
        ra, r = c.exec_start(["sh", "-c", "trap 'echo got; exit 7' TERM; echo ready; "
                              "while :; do sleep 0.05; done"], stdin="null")
        self.assertEqual(r["type"], "ok", r)
        rb, r = c.exec_start(["sh", "-c", "trap '' TERM; echo ready; "
                              "while :; do sleep 0.05; done"], stdin="null")
        self.assertEqual(r["type"], "ok", r)
        collect(c, [ra, rb], lambda s: all(b"ready" in v["out"] for v in s.values()), T(10))
        t0 = time.monotonic()
        os.kill(a.pid, signal.SIGTERM)
        st = collect(c, [ra, rb], lambda s: s[ra]["exit"] is not None, T(10))
        self.assertIn(b"got", st[ra]["out"])
        self.assertEqual(st[ra]["exit"]["code"], 7, st[ra]["exit"])
        self.assertIsNone(st[rb]["exit"], "the TERM-ignoring command ended before the grace period")
        st = collect(c, [rb], lambda s: s[rb]["exit"] is not None, grace + T(10))
        elapsed = time.monotonic() - t0
        self.assertEqual((st[rb]["exit"]["code"], st[rb]["exit"]["signal"]), (137, 9), st[rb]["exit"])
        self.assertGreaterEqual(elapsed, grace * 0.9, "SIGKILL came before the grace period ended")
        try:
            a.proc.wait(T(10))
        except subprocess.TimeoutExpired:
            self.fail("the namespace did not end after the shutdown:\n" + a.log())
        log = a.log()
        self.assertIn("shutting down", log)
        self.assertIn("powering off", log)
        self.assertIsNone(proc_stat(a.pid), "the agent (PID 1 of the namespace) is still there")

    def test_sigterm_without_commands_powers_off_at_once(self):
        a = self.start(extra=["--grace-ms", "60000"])
        t0 = time.monotonic()
        os.kill(a.pid, signal.SIGTERM)
        a.proc.wait(T(10))
        self.assertLess(time.monotonic() - t0, T(5), "waited for a grace period with nothing to wait for")

    def test_system_duties_in_private_namespaces(self):
        # Private mount, UTS and network namespaces: the mounts, the hostname
        # and loopback stay inside. The temp dir is outside /tmp and /run,
        # which the agent may mount over. (Logs go to /dev/kmsg here.)
        a = self.start(extra=["--hostname", "sa-init-test"], unshare_extra=["--net"],
                       no_mount=False, tmp_dir="/var/tmp")
        lo = ("import fcntl,socket,struct;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
              "r=fcntl.ioctl(s,0x8913,struct.pack('16sH',b'lo',0)+bytes(22));"
              "print(struct.unpack('16sH',r[:18])[1]&1)")
        with a.client() as c:
            self.assertEqual(c.run(["hostname"]).stdout.strip(), b"sa-init-test")
            self.assertEqual(c.run(["python3", "-c", lo]).stdout.strip(), b"1", "lo is not up")
            r = c.run(["sh", "-c", "for p in /proc /sys /dev /dev/pts /dev/shm /run /tmp; do "
                       "mountpoint -q $p && echo $p; done; test -e /dev/ptmx && echo ptmx"])
            self.assertEqual(r.stdout.split(), [b"/proc", b"/sys", b"/dev", b"/dev/pts",
                                                b"/dev/shm", b"/run", b"/tmp", b"ptmx"], r)
        self.assertNotEqual(os.uname().nodename, "sa-init-test")


@unittest.skipIf(not AGENT_BIN or os.geteuid() != 0, "needs root and SA_AGENT")
class InitNotPid1(unittest.TestCase):

    def test_init_flag_shuts_down_gracefully_and_exits_0(self):
        a = Agent(["--init", "--grace-ms", str(int(T(5) * 1000))]).start()
        self.addCleanup(a.stop, False)
        c = a.client()
        self.addCleanup(c.close)
        rid, r = c.exec_start(["sh", "-c", "trap 'echo got; exit 7' TERM; echo ready; "
                               "while :; do sleep 0.05; done"], stdin="null")
        self.assertEqual(r["type"], "ok", r)
        collect(c, [rid], lambda s: b"ready" in s[rid]["out"], T(10))
        a.proc.send_signal(signal.SIGTERM)
        st = collect(c, [rid], lambda s: s[rid]["exit"] is not None, T(10))
        self.assertIn(b"got", st[rid]["out"])
        self.assertEqual(st[rid]["exit"]["code"], 7)
        self.assertEqual(a.proc.wait(T(10)), 0, a.log_tail())
        a.stopped = True
        self.assertIn(b"exiting (--init, not PID 1)", a.log())


if __name__ == "__main__":
    unittest.main()
