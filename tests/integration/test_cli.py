"""sandboxctl, the host-side CLI ($SA_CTL), driven against a real agent:
ping, exec (streams, exit status, stdin, -n, -e, --cwd, spawn errors),
addresses (SANDBOX_AGENT_ADDR, refused connections, Firecracker fc: with
retries through a fake hybrid-vsock proxy), encode/decode with socat."""

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import unittest

from agentlib import CTL_BIN, MiB, AgentTestCase, T, pack, unpack_payload

SOCAT = shutil.which("socat")


def need_ctl():
    if not CTL_BIN or not os.access(CTL_BIN, os.X_OK):
        raise unittest.SkipTest("SA_CTL is not set to an executable sandboxctl")


class CtlTestCase(AgentTestCase):

    @classmethod
    def setUpClass(cls):
        need_ctl()
        super().setUpClass()

    def ctl(self, *args, input=None, addr=None, env=None, timeout=None, stdin=None):
        """Run sandboxctl -c unix:<agent> ARGS; a CompletedProcess."""
        argv = [CTL_BIN]
        if addr is not False:
            argv += ["-c", addr or "unix:" + self.agent.sock_path]
        argv += list(args)
        e = dict(os.environ)
        e.pop("SANDBOX_AGENT_ADDR", None)
        e.update(env or {})
        kw = {}
        if input is not None:
            kw["input"] = input
        else:
            kw["stdin"] = subprocess.DEVNULL if stdin is None else stdin
        try:
            return subprocess.run(argv, capture_output=True, env=e, timeout=T(60) if timeout is None else timeout,
                                  **kw)
        except subprocess.TimeoutExpired as ex:
            self.fail("sandboxctl %r did not finish in time (stdout %r, stderr %r)"
                      % (args, (ex.stdout or b"")[-300:], (ex.stderr or b"")[-300:]))


class Ping(CtlTestCase):

    def test_ping_exits_0_and_prints_the_agent_version(self):
        p = self.ctl("ping")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(self.c.hello["agent"].encode(), p.stdout)
        self.assertIn(self.c.hello["agent"].split()[-1].encode(), p.stdout)

    def test_address_from_sandbox_agent_addr(self):
        p = self.ctl("ping", addr=False, env={"SANDBOX_AGENT_ADDR": "unix:" + self.agent.sock_path})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"sandbox-agent", p.stdout)

    def test_dash_c_wins_over_the_environment(self):
        p = self.ctl("ping", env={"SANDBOX_AGENT_ADDR": "unix:/nonexistent/sa-it.sock"})
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_missing_socket_exits_255(self):
        p = self.ctl("ping", addr="unix:" + os.path.join(self.agent.tmp, "no-such.sock"))
        self.assertEqual(p.returncode, 255, p)
        self.assertNotEqual(p.stderr, b"")

    def test_connection_refused_exits_255(self):
        path = os.path.join(self.agent.tmp, "refusing.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)                    # bound, never listening: ECONNREFUSED
        try:
            p = self.ctl("ping", addr="unix:" + path)
        finally:
            s.close()
        self.assertEqual(p.returncode, 255, p)
        self.assertNotEqual(p.stderr, b"")

    def test_bad_address_and_bad_usage(self):
        self.assertNotEqual(self.ctl("ping", addr="bogus:1").returncode, 0)
        self.assertEqual(self.ctl("no-such-subcommand").returncode, 2)
        self.assertEqual(self.ctl("ping", "extra").returncode, 2)

    def test_help_and_version(self):
        self.assertEqual(self.ctl("--help", addr=False).returncode, 0)
        p = self.ctl("--version", addr=False)
        self.assertEqual(p.returncode, 0)
        self.assertNotEqual(p.stdout, b"")


class Exec(CtlTestCase):

    def test_stdout_stderr_separated_and_exit_code(self):
        p = self.ctl("exec", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
        self.assertEqual(p.returncode, 7, p.stderr)
        self.assertEqual(p.stdout, b"out\n")
        self.assertIn(b"err\n", p.stderr)
        self.assertNotIn(b"out", p.stderr)

    def test_exit_0(self):
        p = self.ctl("exec", "--", "true")
        self.assertEqual((p.returncode, p.stdout), (0, b""), p.stderr)

    def test_killed_by_signal_is_128_plus_n(self):
        p = self.ctl("exec", "--", "sh", "-c", "kill -9 $$")
        self.assertEqual(p.returncode, 137, p.stderr)

    def test_stdin_is_forwarded(self):
        data = os.urandom(3 * MiB + 17)
        p = self.ctl("exec", "--", "cat", input=data, timeout=T(120))
        self.assertEqual(p.returncode, 0, p.stderr[-500:])
        self.assertEqual(len(p.stdout), len(data))
        self.assertEqual(hashlib.sha256(p.stdout).digest(), hashlib.sha256(data).digest())

    def test_stdin_in_many_small_reads_keeps_to_the_1024_request_limit(self):
        # The command's pipe is full and it reads nothing yet, so every one of
        # sandboxctl's 1-byte reads becomes a stdin request that waits for its
        # acknowledgement: past 1024 of them the agent refuses (PROTOCOL.md
        # "stdin"). sandboxctl must stop reading there rather than be refused.
        go = os.path.join(self.agent.workdir, "go-%d" % os.getpid())
        script = "while [ ! -e %s ]; do sleep 0.05; done; wc -c" % go
        r, w = os.pipe()
        p = subprocess.Popen([CTL_BIN, "-c", "unix:" + self.agent.sock_path, "exec", "--",
                              "sh", "-c", script], stdin=r, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        os.close(r)
        try:
            head = 256 * 1024               # fills the pipe, the rest waits in the agent
            os.write(w, b"x" * head)
            small = 1500
            for _ in range(small):
                os.write(w, b"y")
                time.sleep(0.002)           # one byte per read of sandboxctl
            with open(go, "w"):
                pass
        finally:
            os.close(w)
        try:
            out, err = p.communicate(timeout=T(60))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            self.fail("sandboxctl did not finish (stderr %r)" % err[-300:])
        self.assertEqual(err, b"")
        self.assertEqual((p.returncode, out.strip()), (0, str(head + small).encode()))

    def test_stdin_eof_is_forwarded(self):
        p = self.ctl("exec", "--", "wc", "-c", input=b"12345")
        self.assertEqual((p.returncode, p.stdout.strip()), (0, b"5"))

    def test_dash_n_gives_the_command_dev_null(self):
        # our stdin is a pipe that never closes: without -n cat would wait forever
        r, w = os.pipe()
        try:
            p = self.ctl("exec", "-n", "--", "cat", stdin=r, timeout=T(20))
        finally:
            os.close(r)
            os.close(w)
        self.assertEqual((p.returncode, p.stdout), (0, b""), p.stderr)

    def test_dash_e_sets_environment(self):
        p = self.ctl("exec", "-e", "FOO=bar", "-e", "X=1=2", "-e", "HOME=/elsewhere", "--",
                     "sh", "-c", 'echo "$FOO|$X|$HOME"')
        self.assertEqual(p.stdout, b"bar|1=2|/elsewhere\n", p.stderr)

    def test_cwd(self):
        p = self.ctl("exec", "--cwd", "/tmp", "--", "pwd", "-P")
        self.assertEqual(p.stdout, os.path.realpath("/tmp").encode() + b"\n", p.stderr)
        os.makedirs(os.path.join(self.agent.workdir, "rel"), exist_ok=True)
        p = self.ctl("exec", "--cwd", "rel", "--", "pwd", "-P")
        self.assertEqual(p.stdout.decode().strip(),
                         os.path.realpath(os.path.join(self.agent.workdir, "rel")), p.stderr)
        p = self.ctl("exec", "--", "pwd", "-P")
        self.assertEqual(p.stdout.decode().strip(), os.path.realpath(self.agent.workdir))

    def test_arguments_pass_unchanged(self):
        args = ["a b", "", "*", "$HOME", "-n", "--", "ünï"]
        p = self.ctl("exec", "--", "printf", "[%s]", *args)
        self.assertEqual(p.stdout.decode(), "".join("[%s]" % a for a in args), p.stderr)

    def test_program_not_found_exits_127_with_the_agents_message(self):
        rid, r = self.c.exec_start(["sa-it-no-such-program"], stdin="null")
        self.assertEqual(r["code"], "ENOENT")
        p = self.ctl("exec", "--", "sa-it-no-such-program")
        self.assertEqual(p.returncode, 127, p.stderr)
        self.assertIn(r["message"].encode(), p.stderr)

    def test_not_executable_exits_126(self):
        path = os.path.join(self.agent.tmp, "not-exec.sh")
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho no\n")
        os.chmod(path, 0o644)
        rid, r = self.c.exec_start([path], stdin="null")
        self.assertEqual(r["code"], "EACCES")
        p = self.ctl("exec", "--", path)
        self.assertEqual(p.returncode, 126, p.stderr)
        self.assertIn(r["message"].encode(), p.stderr)

    def test_bad_cwd_exits_126(self):
        p = self.ctl("exec", "--cwd", "/nonexistent-sa-it", "--", "true")
        self.assertEqual(p.returncode, 126, p.stderr)
        self.assertNotEqual(p.stderr, b"")

    def test_large_binary_output(self):
        prog = "import os,sys; sys.stdout.buffer.write(bytes(range(256)) * 81920)"
        p = self.ctl("exec", "--", "/usr/bin/python3", "-c", prog, timeout=T(120))
        self.assertEqual(p.returncode, 0, p.stderr[-300:])
        self.assertEqual(p.stdout, bytes(range(256)) * 81920)


class FakeFirecracker:
    """A Firecracker hybrid-vsock proxy: a Unix listener that reads
    `CONNECT <port>\\n`; the first `refuse` connections are closed without an
    answer (guest not listening yet); later ones get `OK 1073741824\\n` and are
    spliced to the agent's Unix socket."""

    def __init__(self, path, agent_sock, refuse=2):
        self.path = path
        self.agent_sock = agent_sock
        self.refuse = refuse
        self.attempts = 0
        self.ports = []
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(16)
        self.srv.settimeout(0.2)
        self.stopping = False
        self.threads = []
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn):
        conn.settimeout(10)
        try:
            line = b""
            while not line.endswith(b"\n") and len(line) < 64:
                b = conn.recv(1)
                if not b:
                    return
                line += b
            with self.lock:
                self.attempts += 1
                n = self.attempts
                self.ports.append(line.decode(errors="replace").strip())
            if n <= self.refuse:
                return
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.settimeout(10)
            up.connect(self.agent_sock)
            conn.sendall(b"OK 1073741824\n")
            self._splice(conn, up)
        except OSError:
            pass
        finally:
            conn.close()

    def _splice(self, a, b):
        a.settimeout(None)
        b.settimeout(None)

        def pump(src, dst):
            try:
                while True:
                    d = src.recv(65536)
                    if not d:
                        break
                    dst.sendall(d)
            except OSError:
                pass
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=pump, args=(b, a), daemon=True)
        t.start()
        pump(a, b)
        t.join(T(30))
        b.close()

    def close(self):
        self.stopping = True
        self.srv.close()
        self.t.join(5)


class Firecracker(CtlTestCase):

    def fc(self, refuse):
        path = os.path.join(self.agent.tmp, "fc-%d.sock" % refuse)
        fc = FakeFirecracker(path, self.agent.sock_path, refuse=refuse)
        self.addCleanup(fc.close)
        return fc, "fc:%s:1024" % path

    def test_fc_ping_succeeds_through_the_retries(self):
        fc, addr = self.fc(refuse=2)
        p = self.ctl("ping", addr=addr, timeout=T(30))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"sandbox-agent", p.stdout)
        self.assertEqual(fc.attempts, 3)
        self.assertEqual(fc.ports, ["CONNECT 1024"] * 3)

    def test_fc_exec_streams_both_ways(self):
        fc, addr = self.fc(refuse=1)
        data = os.urandom(MiB)
        p = self.ctl("exec", "--", "sh", "-c", "cat; echo done >&2; exit 3", input=data, addr=addr,
                     timeout=T(60))
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertEqual(p.stdout, data)
        self.assertIn(b"done\n", p.stderr)

    def test_fc_gives_up_at_the_connect_timeout_with_255(self):
        fc, addr = self.fc(refuse=10 ** 6)
        t0 = time.monotonic()
        p = self.ctl("ping", addr=addr, env={"SANDBOX_CONNECT_TIMEOUT": "1"}, timeout=T(30))
        self.assertEqual(p.returncode, 255, p.stderr)
        self.assertGreaterEqual(fc.attempts, 2, "no retry before giving up")
        self.assertLess(time.monotonic() - t0, T(15))


class EncodeDecode(CtlTestCase):

    def encode(self, lines):
        p = self.ctl("encode", addr=False, input="".join(json.dumps(l) + "\n" for l in lines).encode())
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def test_encode_produces_protocol_frames(self):
        raw = self.encode([{"type": "ping", "id": 1},
                           {"type": "stdin", "id": 2, "cmd": 5, "data": {"$base64": "AAEC/w=="}, "eof": True},
                           {"type": "stdin", "id": 3, "cmd": 5, "data": "text"}])
        frames = []
        while raw:
            n = int.from_bytes(raw[:4], "big")
            frames.append(unpack_payload(raw[4:4 + n]))
            raw = raw[4 + n:]
        self.assertEqual(frames[0], {"type": "ping", "id": 1})
        self.assertEqual(frames[1]["data"], b"\x00\x01\x02\xff")
        self.assertIsInstance(frames[1]["data"], bytes)          # bin
        self.assertIs(frames[1]["eof"], True)
        self.assertEqual(frames[2]["data"], "text")               # str
        # the worked example of PROTOCOL.md §6
        self.assertEqual(self.encode([{"type": "ping", "id": 1}]),
                         bytes.fromhex("0000000f82a474797065a470696e67a2696401"))

    def test_decode_prints_json_lines_and_base64_for_binary(self):
        frames = pack({"type": "output", "id": 2, "data": b"hi\n"}) + \
            pack({"type": "output", "id": 3, "data": b"\xff\xfe"})
        p = self.ctl("decode", addr=False, input=frames)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = [json.loads(l) for l in p.stdout.decode().splitlines()]
        self.assertEqual(lines[0]["data"], "hi\n")
        self.assertEqual(lines[1]["data"], {"$base64": base64.b64encode(b"\xff\xfe").decode()})

    def test_decode_rejects_a_truncated_stream(self):
        raw = self.encode([{"type": "ping", "id": 1}])
        p = self.ctl("decode", addr=False, input=raw[:-3])
        self.assertEqual(p.returncode, 1)

    @unittest.skipUnless(SOCAT, "socat is not installed")
    def test_socat_bridge_runs_an_exec(self):
        reqs = os.path.join(self.agent.tmp, "reqs.jsonl")
        with open(reqs, "w") as f:
            f.write(json.dumps({"type": "exec", "id": 2, "argv": ["sh", "-c", "echo hi; printf '\\377'"],
                                "stdin": "null"}) + "\n")
        cmd = "%s encode < %s | socat -t 3 - UNIX-CONNECT:%s | %s decode" % (
            CTL_BIN, reqs, self.agent.sock_path, CTL_BIN)
        p = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=T(60))
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = [json.loads(l) for l in p.stdout.decode().splitlines()]
        self.assertEqual(lines[0]["type"], "hello")
        self.assertEqual(lines[0]["protocol"], 1)
        by_type = {}
        for l in lines[1:]:
            self.assertEqual(l.get("id"), 2, l)
            by_type.setdefault(l["type"], []).append(l)
        self.assertEqual(len(by_type["ok"]), 1)
        self.assertEqual(len(by_type["exit"]), 1)
        self.assertEqual(by_type["exit"][0]["code"], 0)
        self.assertEqual(lines[-1]["type"], "exit")
        out = b""
        for o in by_type["output"]:
            d = o["data"]
            out += base64.b64decode(d["$base64"]) if isinstance(d, dict) else d.encode()
        self.assertEqual(out, b"hi\n\xff")


if __name__ == "__main__":
    unittest.main()
