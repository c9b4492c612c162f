"""exec and the basics: hello, ping, exit codes, environment, cwd, PATH
lookup, spawn errors, request validation (PROTOCOL.md §2-§4)."""

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import unittest

from agentlib import (AGENT_BIN, Agent, AgentTestCase, Client, T, env_lines, free_tcp_port,
                      own_user, pack, raw_frame, wait_until)


class HelloAndPing(AgentTestCase):
    """The greeting and the liveness check."""

    def test_hello_is_sent_first_unsolicited_with_v1_fields(self):
        h = self.c.hello
        self.assertEqual(h["type"], "hello")
        self.assertEqual(h.get("protocol"), 1)
        self.assertIsInstance(h.get("agent"), str)
        self.assertTrue(h["agent"].startswith("sandbox-agent "), h["agent"])
        caps = h.get("capabilities")
        self.assertIsInstance(caps, list)
        for cap in ("exec", "stdin", "signal"):
            self.assertIn(cap, caps)
        self.assertIs(h.get("dev"), True, "started with --dev")
        self.assertEqual(h.get("workdir"), self.agent.workdir)
        self.assertEqual(h.get("max_frame"), 1048576)
        self.assertEqual(h.get("stdin_window"), 1048576)
        self.assertEqual(h.get("generation"), 0)
        self.assertIs(h.get("auth_required"), False)

    def test_hello_boot_id_is_the_kernel_boot_id(self):
        with open("/proc/sys/kernel/random/boot_id") as f:
            self.assertEqual(self.c.hello.get("boot_id"), f.read().strip())

    def test_hello_user_in_dev_mode_is_the_agents_own_user(self):
        self.assertEqual(self.c.hello.get("user"), own_user().pw_name)

    def test_hello_agent_version_matches_dash_dash_version(self):
        p = subprocess.run([AGENT_BIN, "--version"], capture_output=True, timeout=T(10))
        self.assertEqual(p.returncode, 0, p.stderr)
        version = self.c.hello["agent"].split()[-1]
        self.assertIn(version, p.stdout.decode(), "hello %r vs --version %r" % (self.c.hello["agent"], p.stdout))

    def test_every_connection_gets_its_own_hello(self):
        for _ in range(3):
            with self.agent.client() as c2:
                self.assertEqual(c2.hello["type"], "hello")

    def test_ping_replies_ok_with_wall_clock(self):
        before = time.time() * 1000
        r = self.c.ping()
        after = time.time() * 1000
        self.assertEqual(r["type"], "ok")
        self.assertEqual(r["id"], 1)
        self.assertIsInstance(r.get("time_ms"), int)
        self.assertGreaterEqual(r["time_ms"], before - 5000)
        self.assertLessEqual(r["time_ms"], after + 5000)

    def test_reply_echoes_large_u64_id(self):
        big = (1 << 64) - 1
        self.c.send({"type": "ping", "id": big})
        r = self.c.recv()
        self.assertEqual((r["type"], r["id"]), ("ok", big))

    def test_unix_socket_is_mode_0600(self):
        st = os.stat(self.agent.sock_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)

    def test_example_ping_frame_from_protocol_md(self):
        # PROTOCOL.md §6, byte for byte.
        self.c.send_raw(bytes.fromhex("0000000f82a474797065a470696e67a2696401"))
        r = self.c.recv()
        self.assertEqual((r["type"], r["id"]), ("ok", 1))


class ExitStatus(AgentTestCase):
    """Exit codes, signals, output separation."""

    def test_exit_code_is_reported(self):
        for n in (0, 1, 3, 255):
            out, err, x = self.c.exec_collect(["sh", "-c", "exit %d" % n])
            self.assertEqual((x["code"], x["signal"]), (n, 0), x)
            self.assertIs(x["timed_out"], False)

    def test_killed_by_signal_is_128_plus_n(self):
        out, err, x = self.c.exec_collect(["sh", "-c", "kill -9 $$"])
        self.assertEqual((x["code"], x["signal"]), (137, 9), x)
        out, err, x = self.c.exec_collect(["sh", "-c", "kill -TERM $$"])
        self.assertEqual((x["code"], x["signal"]), (143, 15), x)

    def test_stdout_and_stderr_are_kept_separate(self):
        out, err, x = self.c.exec_collect(
            ["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"])
        self.assertEqual(out, b"out1\nout2\n")
        self.assertEqual(err, b"err1\nerr2\n")
        self.assertEqual((x["stdout_bytes"], x["stderr_bytes"]), (10, 10))

    def test_exec_reply_fields(self):
        before = time.time() * 1000
        r = self.c.run(["true"])
        rep = r.reply
        self.assertIsInstance(rep.get("cmd"), int)
        self.assertIsInstance(rep.get("pid"), int)
        self.assertGreater(rep["pid"], 1)
        self.assertIsInstance(rep.get("started_ms"), int)
        self.assertGreaterEqual(rep["started_ms"], before - 5000)
        self.assertLessEqual(rep["started_ms"], time.time() * 1000 + 5000)
        self.assertEqual(rep.get("cwd"), self.agent.workdir)
        self.assertEqual(rep.get("user"), own_user().pw_name)
        self.assertEqual(r.exit["cmd"], rep["cmd"])

    def test_command_ids_are_never_reused(self):
        cmds = [self.c.run(["true"]).cmd for _ in range(10)]
        self.assertEqual(len(set(cmds)), 10, cmds)

    def test_duration_covers_the_run(self):
        x = self.c.run(["sleep", "0.5"]).exit
        self.assertGreaterEqual(x["duration_ms"], 400, x)
        self.assertLess(x["duration_ms"], T(30) * 1000, x)

    def test_command_is_its_own_session_and_group_leader(self):
        r = self.c.run(["sh", "-c", "cut -d' ' -f1,5,6 /proc/$$/stat"])
        pid, pgid, sid = [int(x) for x in r.stdout.split()[:3]]
        self.assertEqual(pid, r.reply["pid"])
        self.assertEqual((pgid, sid), (pid, pid))

    def test_signal_mask_and_dispositions_are_reset(self):
        # SigBlk and SigIgn of the command itself must be empty.
        out, _, x = self.c.exec_collect(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])
        self.assertEqual(x["code"], 0)
        for line in out.decode().splitlines():
            name, mask = line.split()
            self.assertEqual(int(mask, 16), 0, "command started with %s=%s" % (name, mask))

    def test_no_agent_fd_leaks_into_the_command(self):
        out, _, x = self.c.exec_collect(["ls", "/proc/self/fd"])
        fds = sorted(int(f) for f in out.split())
        # 0,1,2 and the fd ls itself opens to read the directory
        self.assertLessEqual(len(fds), 4, "command inherited fds %r" % fds)
        self.assertEqual(fds[:3], [0, 1, 2])


class Environment(AgentTestCase):
    """Default environment, per-command env, clear_env."""

    agent_env = {"SA_AGENT_ONLY_CANARY": "leaked"}

    def env_of(self, **kw):
        out, err, x = self.c.exec_collect(["env"], **kw)
        self.assertEqual(x["code"], 0, err)
        return env_lines(out)

    def test_default_environment_is_present(self):
        env = self.env_of()
        for k in ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG"):
            self.assertIn(k, env, "default env lacks %s: %r" % (k, env))
            self.assertNotEqual(env[k], "", k)
        me = own_user()
        self.assertEqual(env["USER"], me.pw_name)
        self.assertEqual(env["LOGNAME"], me.pw_name)
        self.assertEqual(env["HOME"], me.pw_dir)
        self.assertIn("/bin", env["PATH"].split(":"))

    def test_agent_environment_is_not_inherited(self):
        self.assertNotIn("SA_AGENT_ONLY_CANARY", self.env_of())

    def test_env_is_added_on_top_and_overrides_defaults(self):
        base = self.env_of()
        env = self.env_of(env={"FOO": "bar baz", "HOME": "/tmp/elsewhere", "EMPTY": ""})
        self.assertEqual(env["FOO"], "bar baz")
        self.assertEqual(env["HOME"], "/tmp/elsewhere")
        self.assertEqual(env["EMPTY"], "")
        for k in ("PATH", "USER", "LOGNAME", "SHELL", "LANG"):
            self.assertEqual(env.get(k), base[k], k)
        self.assertEqual(list(env).count("HOME"), 1)

    def test_clear_env_replaces_everything(self):
        out, _, x = self.c.exec_collect(["/usr/bin/env"], clear_env=True, env={"ONLY": "1"})
        self.assertEqual(x["code"], 0)
        self.assertEqual(out, b"ONLY=1\n")

    def test_clear_env_with_no_env_is_empty(self):
        out, _, x = self.c.exec_collect(["/usr/bin/env"], clear_env=True)
        self.assertEqual((x["code"], out), (0, b""))

    def test_bad_env_is_bad_request(self):
        for env in ({"A=B": "x"}, {"": "x"}, {"K": 1}, ["K=V"]):
            with self.subTest(env=env):
                rid, r = self.c.exec_start(["true"], env=env, stdin="null")
                self.assertErrorReply(r, "bad_request")
        self.assertStillServes()


class WorkingDirectory(AgentTestCase):

    def pwd(self, **kw):
        out, err, x = self.c.exec_collect(["/bin/pwd", "-P"], **kw)
        self.assertEqual(x["code"], 0, err)
        return out.decode().rstrip("\n")

    def test_default_cwd_is_the_workdir(self):
        self.assertEqual(self.pwd(), os.path.realpath(self.agent.workdir))

    def test_relative_cwd_resolves_against_the_workdir(self):
        os.makedirs(os.path.join(self.agent.workdir, "sub", "dir"), exist_ok=True)
        r = self.c.run(["/bin/pwd", "-P"], cwd="sub/dir")
        self.assertEqual(r.stdout.decode().strip(),
                         os.path.realpath(os.path.join(self.agent.workdir, "sub", "dir")))
        self.assertEqual(r.reply.get("cwd"), os.path.join(self.agent.workdir, "sub", "dir"))

    def test_absolute_cwd(self):
        r = self.c.run(["/bin/pwd", "-P"], cwd="/tmp")
        self.assertEqual(r.stdout, os.path.realpath("/tmp").encode() + b"\n")
        self.assertEqual(r.reply.get("cwd"), "/tmp")

    def test_nil_cwd_is_the_default(self):
        self.assertEqual(self.pwd(cwd=None), os.path.realpath(self.agent.workdir))


class PathLookup(AgentTestCase):
    """A bare program name is looked up in the command's own PATH."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bindir = os.path.join(cls.agent.tmp, "bin")
        os.mkdir(cls.bindir, 0o755)
        script = os.path.join(cls.bindir, "sa-it-found-me")
        with open(script, "w") as f:
            f.write("#!/bin/sh\necho found-it \"$@\"\n")
        os.chmod(script, 0o755)

    def test_bare_name_found_in_the_commands_env_path(self):
        out, err, x = self.c.exec_collect(["sa-it-found-me", "arg 1"],
                                          env={"PATH": self.bindir + ":/usr/bin:/bin"})
        self.assertEqual((x["code"], out), (0, b"found-it arg 1\n"), err)

    def test_bare_name_not_in_path_is_enoent(self):
        rid, r = self.c.exec_start(["sa-it-found-me"], stdin="null")
        self.assertErrorReply(r, "ENOENT")
        self.assertEqual(r.get("stage"), "exec")

    def test_name_with_slash_is_not_looked_up(self):
        out, err, x = self.c.exec_collect([os.path.join(self.bindir, "sa-it-found-me")])
        self.assertEqual(out, b"found-it\n")
        rid, r = self.c.exec_start(["./sa-it-found-me"], stdin="null",
                                   env={"PATH": self.bindir})
        self.assertErrorReply(r, "ENOENT")


class SpawnErrors(AgentTestCase):
    """Spawn failures are error replies with an errno name and a stage, never
    exit codes, and no events follow them."""

    def spawn_error(self, argv, code, stage, **kw):
        kw.setdefault("stdin", "null")
        rid, r = self.c.exec_start(argv, **kw)
        self.assertErrorReply(r, code)
        self.assertEqual(r.get("stage"), stage, r)
        self.assertEqual(r.get("id"), rid)
        # no output/exit for a command that never started
        self.c.ping()
        stray = [m for m in self.c.drain_nowait() if m.get("id") == rid]
        self.assertEqual(stray, [])
        return r

    def test_program_not_found_is_enoent_stage_exec(self):
        self.spawn_error(["/nonexistent/sa-it-prog"], "ENOENT", "exec")
        self.spawn_error(["sa-it-no-such-program"], "ENOENT", "exec")

    def test_not_executable_is_eacces_stage_exec(self):
        path = os.path.join(self.agent.tmp, "not-exec")
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho hi\n")
        os.chmod(path, 0o644)
        self.spawn_error([path], "EACCES", "exec")
        self.spawn_error([self.agent.tmp], "EACCES", "exec")     # a directory

    def test_bad_cwd_is_enoent_stage_cwd(self):
        self.spawn_error(["true"], "ENOENT", "cwd", cwd="/nonexistent-sa-it-dir")
        self.spawn_error(["true"], "ENOENT", "cwd", cwd="no/such/relative")

    def test_cwd_that_is_a_file_is_enotdir_stage_cwd(self):
        path = os.path.join(self.agent.tmp, "a-file")
        open(path, "w").close()
        self.spawn_error(["true"], "ENOTDIR", "cwd", cwd=path)

    def test_unknown_user(self):
        rid, r = self.c.exec_start(["true"], user="sa-it-no-such-user", stdin="null")
        if self.c.hello.get("dev"):
            # dev mode runs everything as the agent's user: any other name is refused
            self.assertEqual(r.get("type"), "error", r)
            self.assertIn(r.get("code"), ("unknown_user", "EPERM"), r)
        else:
            self.assertErrorReply(r, "unknown_user")
            self.assertEqual(r.get("stage"), "user")
        self.assertStillServes()

    def test_other_user_in_dev_mode_is_eperm(self):
        if not self.c.hello.get("dev"):
            self.skipTest("agent is not in dev mode")
        me = own_user().pw_name
        other = "nobody" if me != "nobody" else "root"
        rid, r = self.c.exec_start(["true"], user=other, stdin="null")
        self.assertErrorReply(r, "EPERM")
        # its own name is fine
        out, _, x = self.c.exec_collect(["id", "-un"], user=me)
        self.assertEqual(out.decode().strip(), me)

    def test_spawn_errors_do_not_leave_processes(self):
        before = len(self.agent.children())
        for _ in range(20):
            rid, r = self.c.exec_start(["/nonexistent/sa-it-prog"], stdin="null")
            self.assertEqual(r["type"], "error")
        self.assertEqual(self.agent.lingering_zombies(), [])
        # a failed child may still be on its way out when the error is sent
        try:
            wait_until(lambda: len(self.agent.children()) <= before, T(5), what="children to go")
        except AssertionError:
            self.fail("spawn errors left processes behind: %r" % self.agent.children())


class RequestValidation(AgentTestCase):
    """Well-formed frames with bad content get an error reply; the connection
    stays usable."""

    def test_unknown_request_type_is_unknown_type(self):
        r = self.c.request("sa-it-no-such-request")
        self.assertErrorReply(r, "unknown_type")
        self.assertEqual(r.get("id"), 1)
        self.assertStillServes()

    def test_missing_id_is_bad_request(self):
        self.c.send({"type": "ping"})
        r = self.c.recv()
        self.assertErrorReply(r, "bad_request")
        self.assertIsNone(r.get("id"))
        self.assertStillServes()

    def test_missing_or_bad_type_is_bad_request(self):
        for msg in ({"id": 5}, {"type": 7, "id": 5}, {"type": b"ping", "id": 5}):
            with self.subTest(msg=msg):
                self.c.send(msg)
                r = self.c.recv()
                self.assertErrorReply(r, "bad_request")
        self.assertStillServes()

    def test_id_of_wrong_type_is_bad_request(self):
        for bad in (-1, "7", 1.5):
            with self.subTest(id=bad):
                self.c.send({"type": "ping", "id": bad})
                self.assertErrorReply(self.c.recv(), "bad_request")
        self.assertStillServes()

    def test_exec_argv_validation(self):
        for fields in ({}, {"argv": []}, {"argv": "true"}, {"argv": [1]}, {"argv": [""]},
                       {"argv": ["tr\0ue"]}):
            with self.subTest(fields=fields):
                r = self.c.request("exec", stdin="null", **fields)
                self.assertErrorReply(r, "bad_request")
        self.assertStillServes()

    def test_exec_field_type_validation(self):
        for fields in ({"cwd": 5}, {"clear_env": "yes"}, {"stdin": "file"}, {"user": 0},
                       {"sudo": 1}, {"kill_on_disconnect": "no"}):
            with self.subTest(fields=fields):
                r = self.c.request("exec", argv=["true"], **fields)
                self.assertErrorReply(r, "bad_request")
        self.assertStillServes()

    def test_user_and_sudo_together_is_bad_request(self):
        r = self.c.request("exec", argv=["true"], user=own_user().pw_name, sudo=True, stdin="null")
        self.assertErrorReply(r, "bad_request")

    def test_unknown_keys_are_ignored(self):
        out, _, x = self.c.exec_collect(["echo", "hi"], sa_it_future_field={"x": [1, 2]})
        self.assertEqual((x["code"], out), (0, b"hi\n"))
        r = self.c.ok("ping", sa_it_future_field=True)
        self.assertEqual(r["type"], "ok")

    def test_known_but_absent_requests_are_unsupported(self):
        caps = set(self.c.hello["capabilities"])
        by_cap = {"lifecycle": ("get", "list", "wait", "logs"), "pty": ("resize",),
                  "files": ("upload", "download", "read", "write"),
                  "fs": ("stat", "ls", "mkdir", "remove", "rename", "chmod"),
                  "guest": ("set_defaults", "sync", "stats")}
        absent = [t for cap, types in by_cap.items() if cap not in caps for t in types]
        if not absent:
            self.skipTest("every capability is implemented")
        for t in absent:
            with self.subTest(type=t):
                self.assertErrorReply(self.c.request(t, cmd=1, path="/nonexistent"), "unsupported")
        self.assertStillServes()

    def test_requests_are_answered_in_order_on_one_connection(self):
        ids = []
        batch = b""
        for i in range(50):
            rid = self.c.next_id()
            ids.append(rid)
            batch += pack({"type": "ping", "id": rid})
        self.c.send_raw(batch)
        got = [self.c.recv()["id"] for _ in ids]
        self.assertEqual(got, ids)


class Stdin(AgentTestCase):

    def test_stdin_null_gives_cat_eof(self):
        out, err, x = self.c.exec_collect(["cat"])      # run() sends stdin "null"
        self.assertEqual((x["code"], out, err), (0, b"", b""))

    def test_stdin_null_is_dev_null(self):
        out, _, x = self.c.exec_collect(["readlink", "/proc/self/fd/0"])
        self.assertEqual(out, b"/dev/null\n")

    def test_stdin_pipe_is_the_default(self):
        rid, r = self.c.exec_start(["cat"])
        self.assertEqual(r["type"], "ok")
        self.assertEqual(self.c.ok("stdin", cmd=r["cmd"], data=b"piped\n", eof=True)["type"], "ok")
        res = self.c.finish(rid, r)
        self.assertEqual((res.code, res.stdout), (0, b"piped\n"))

    def test_stdin_accepts_str_as_bytes(self):
        out, _, x = self.c.exec_collect(["cat"], stdin=b"")
        self.assertEqual((x["code"], out), (0, b""))
        rid, r = self.c.exec_start(["cat"])
        self.c.ok("stdin", cmd=r["cmd"], data="as a str\n", eof=True)
        res = self.c.finish(rid, r)
        self.assertEqual(res.stdout, b"as a str\n")


class AgentCommandLine(unittest.TestCase):
    """The agent's own options."""

    def run_agent(self, *args):
        if not AGENT_BIN:
            self.skipTest("SA_AGENT not set")
        return subprocess.run([AGENT_BIN] + list(args), capture_output=True, timeout=T(10),
                              stdin=subprocess.DEVNULL)

    def test_help_exits_0(self):
        p = self.run_agent("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"--listen", p.stdout + p.stderr)

    def test_version_exits_0(self):
        p = self.run_agent("--version")
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"sandbox-agent", p.stdout)

    def test_bad_usage_exits_nonzero_without_serving(self):
        if not AGENT_BIN:
            self.skipTest("SA_AGENT not set")
        tmp = tempfile.mkdtemp(prefix="sa-it-usage-")
        self.addCleanup(shutil.rmtree, tmp, True)
        sock = os.path.join(tmp, "a.sock")
        for args in (("--no-such-option",), ("--max-frame", "100"), ("--max-frame", "99999999999"),
                     ("--listen", "bogus:1"), ("--drain-ms", "-5"), ("--drain-ms", "soon"),
                     ("extra-arg",)):
            with self.subTest(args=args):
                p = subprocess.Popen([AGENT_BIN, "--dev", "--workdir", tmp, "--listen", "unix:" + sock]
                                     + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
                try:
                    out, err = p.communicate(timeout=T(5))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.communicate()
                    self.fail("agent accepted %r and kept running" % (args,))
                self.assertNotEqual(p.returncode, 0)
                self.assertNotEqual(err, b"", "no diagnostic for %r" % (args,))

    def test_tcp_loopback_and_unix_listeners_together(self):
        port = free_tcp_port()
        a = Agent(["--listen", "tcp:127.0.0.1:%d" % port, "--insecure-tcp"]).start()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=T(10))
            with Client(sock=s) as c:
                self.assertEqual(c.hello["protocol"], 1)
                out, _, x = c.exec_collect(["echo", "over tcp"])
                self.assertEqual(out, b"over tcp\n")
            with a.client() as c:
                c.ping()
        finally:
            problems = a.stop()
        self.assertEqual(problems, [])

    def test_max_frame_option_is_reported_in_hello(self):
        a = Agent(["--max-frame", "4096"]).start()
        try:
            self.assertEqual(a.hello["max_frame"], 4096)
        finally:
            problems = a.stop()
        self.assertEqual(problems, [])

    def test_stale_socket_file_is_replaced(self):
        a = Agent().start()
        path = a.sock_path
        try:
            a.stopped = True
            a.proc.kill()
            a.proc.wait(10)
            self.assertTrue(os.path.exists(path), "SIGKILL leaves the socket file behind")
            b = Agent(sock_path=path).start()       # a's stale path
            try:
                with b.client() as c:
                    c.ping()
            finally:
                self.assertEqual(b.stop(), [])
        finally:
            a.stop(check=False)


class CommandUmask(unittest.TestCase):
    """A command gets umask 022 whatever umask the agent was started with."""

    def test_umask_is_022_even_if_the_agent_has_077(self):
        old = os.umask(0o077)                 # the agent inherits it
        try:
            a = Agent().start()
        finally:
            os.umask(old)
        self.addCleanup(a.stop, False)
        with a.client() as c:
            out, err, x = c.exec_collect(["sh", "-c", "umask; touch f; stat -c %a f"])
        self.assertEqual((out, x["code"]), (b"0022\n644\n", 0), err)
        with open("/proc/%d/status" % a.pid) as f:
            self.assertIn("Umask:\t0077", f.read())   # the agent's own is untouched


if __name__ == "__main__":
    unittest.main()
