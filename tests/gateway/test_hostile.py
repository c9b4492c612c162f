"""A hostile agent (the guest has root and may replace the agent): a fake
agent written here answers the gateway with malformed or lying messages. Each
lie must end only that session's request with an error — never crash the
gateway (ASan build included) or disturb a session on a real agent."""

import json
import os
import shutil
import socket
import struct
import threading
import unittest

import msgpack

import gwlib


class FakeAgent:
    """protocol v1 over a Unix socket; `behaviour` picks the lies."""

    def __init__(self, path, hello_extra=None):
        self.path = path
        self.behaviour = "ok"
        self.hello = {"type": "hello", "protocol": 1, "agent": "fake", "capabilities":
                      ["exec", "stdin", "signal", "lifecycle", "files", "fs"], "boot_id": "b",
                      "user": "nobody", "workdir": "/fake", "dev": False, "max_frame": 1 << 20,
                      "stdin_window": 1 << 20, "generation": 0, "auth_required": False}
        self.hello.update(hello_extra or {})
        self.conns = []
        self.exec_oks = 0               # exec requests answered ok
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def send(c, m, bin_type=True):
        # bin_type=False packs bytes as msgpack str: a str that is not UTF-8
        b = msgpack.packb(m, use_bin_type=bin_type)
        c.sendall(struct.pack(">I", len(b)) + b)

    @staticmethod
    def recv(c):
        hdr = b""
        while len(hdr) < 4:
            k = c.recv(4 - len(hdr))
            if not k:
                return None
            hdr += k
        n = struct.unpack(">I", hdr)[0]
        body = b""
        while len(body) < n:
            k = c.recv(n - len(body))
            if not k:
                return None
            body += k
        return msgpack.unpackb(body, raw=False)

    def serve(self, c):
        self.conns.append(c)
        try:
            self.send(c, self.hello)
            while True:
                m = self.recv(c)
                if m is None:
                    return
                self.answer(c, m)
        except OSError:
            pass
        finally:
            c.close()

    def answer(self, c, m):
        t, i, b = m["type"], m.get("id"), self.behaviour
        rec = {"cmd": 7, "argv": ["echo", b"\xff\xfe"], "cwd": "/fake", "user": "nobody",
               "pid": 1, "started_ms": 1, "state": "running"}
        if t == "exec" and b == "drop":
            c.close()                   # the exec went out; no answer ever comes
        elif t == "exec":
            self.send(c, {"type": "ok", "id": i, "cmd": 7, "pid": 1, "started_ms": 1, "cwd": "/fake"})
            self.exec_oks += 1
            out = {"type": "output", "id": i, "cmd": 7, "stream": "stdout", "offset": 0, "pos": 0,
                   "data": b"hi\n"}
            if b == "backwards":
                self.send(c, out)
                self.send(c, dict(out, offset=1))
            elif b == "bad_stream":
                self.send(c, dict(out, stream="stdin"))
            elif b == "other_cmd":
                self.send(c, dict(out, cmd=8))
            elif b == "bad_exit":
                self.send(c, out)
                self.send(c, {"type": "exit", "id": i, "cmd": 7, "code": 100000})
            elif b == "garbage":
                c.sendall(struct.pack(">I", 5) + b"\xdf\xff\xff\xff\xff")
            elif b == "huge":
                c.sendall(struct.pack(">I", 0x7fffffff) + b"\x80")
            elif b == "hangup":
                c.close()
        elif t == "get":
            if b == "bad_record":
                self.send(c, {"type": "ok", "id": i, "cmd": 7, "argv": "not-a-list"})
            else:
                self.send(c, dict(rec, type="ok", id=i), bin_type=False)
        elif t == "read":
            self.send(c, {"type": "ok", "id": i, "size": 10})
            self.send(c, {"type": "data", "id": i, "offset": 0, "data": b"abc"})
            self.send(c, {"type": "data", "id": i, "offset": 99, "data": b"def"})
        elif t == "list" and b == "die_on_stop":
            for other in self.conns:    # as an agent killed by the stop would
                try:
                    other.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        elif t in ("list",):
            self.send(c, {"type": "ok", "id": i, "commands": [{"cmd": "x"}, 5]})
        else:
            self.send(c, {"type": "ok", "id": i})

    def close(self):
        self.sock.close()


class HostileAgentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = gwlib.need_root_and_tmp("gwhostile-")
        cls.fake = FakeAgent(os.path.join(cls.tmp, "fake.sock"))
        cls.bigframe = FakeAgent(os.path.join(cls.tmp, "big.sock"), {"max_frame": 16 << 20})
        cls.badwd = FakeAgent(os.path.join(cls.tmp, "wd.sock"), {"workdir": "relative"})
        cls.pool = gwlib.Pool(1, cls.tmp)
        cls.gw = gwlib.Gateway(cls.tmp, ["unix:" + cls.fake.path] + cls.pool.addrs)
        cls.fake_sid = cls.gw.create()[0]
        cls.real_sid = cls.gw.create()[0]

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gw.stop()
        finally:
            for f in (cls.fake, cls.bigframe, cls.badwd):
                f.close()
            cls.pool.stop()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def real_still_works(self):
        st, r, payload = self.gw.http("POST", self.gw.sess(self.real_sid) + "/cmd",
                                      {"command": "echo", "args": ["fine"], "wait": True})
        self.assertEqual(json.loads(payload.splitlines()[1])["data"], "fine\n")

    def stream(self, behaviour):
        self.fake.behaviour = behaviour
        st, r, payload = self.gw.http("POST", self.gw.sess(self.fake_sid) + "/cmd",
                                      {"command": "echo", "wait": True})
        return st, [json.loads(x) for x in payload.splitlines() if x.strip()]

    def test_lying_output_ends_the_stream_with_an_error(self):
        for b in ("backwards", "bad_stream", "other_cmd", "bad_exit", "garbage", "huge", "hangup"):
            st, lines = self.stream(b)
            self.assertEqual(st, 200, b)
            self.assertEqual(lines[-1]["stream"], "error", b)
            self.assertEqual(lines[-1]["data"]["code"], "sandbox_stream_closed", b)
            self.assertFalse(any("command" in x and x["command"]["exitCode"] is not None
                                 for x in lines), b)
            self.real_still_works()

    def test_an_exec_without_answer_is_4xx_so_the_sdk_does_not_run_it_twice(self):
        self.fake.behaviour = "drop"
        for wait in (False, True):
            st, j = self.gw.json("POST", self.gw.sess(self.fake_sid) + "/cmd",
                                 {"command": "echo", "wait": wait})
            self.assertEqual((st, j["error"]["code"]), (424, "agent_lost"))
        self.real_still_works()

    def test_bad_records_and_reads(self):
        self.fake.behaviour = "ok"
        st, j = self.gw.json("GET", self.gw.sess(self.fake_sid) + "/cmd/cmd_7")
        self.assertEqual(st, 200)
        self.assertEqual(j["command"]["args"], ["\ufffd\ufffd"], "non-UTF-8 from the agent is replaced")
        self.fake.behaviour = "bad_record"
        st, j = self.gw.json("GET", self.gw.sess(self.fake_sid) + "/cmd/cmd_7")
        self.assertEqual((st, j["error"]["code"]), (502, "bad_agent"))
        self.fake.behaviour = "ok"
        c = self.gw.conn()
        c.request("POST", self.gw.sess(self.fake_sid) + "/fs/read", body=b'{"path":"x"}',
                  headers={"authorization": "Bearer " + gwlib.TOKEN})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        with self.assertRaises(Exception):   # cut short: the data had a hole
            r.read()
        c.close()
        self.real_still_works()

    def test_agents_with_bad_hellos_are_refused_at_create(self):
        gw2 = gwlib.Gateway(os.path.join(self.tmp), ["unix:" + self.bigframe.path],
                            state_dir=os.path.join(self.tmp, "state-big"))
        try:
            st, j = gw2.json("POST", "/v3/sandboxes", {})
            self.assertEqual(st, 502)
            self.assertIn("max_frame", j["error"]["message"])
        finally:
            gw2.stop()
        gw3 = gwlib.Gateway(os.path.join(self.tmp), ["unix:" + self.badwd.path],
                            state_dir=os.path.join(self.tmp, "state-wd"))
        try:
            st, j = gw3.json("POST", "/v3/sandboxes", {})
            self.assertEqual(st, 502)
            self.assertIn("workdir", j["error"]["message"])
        finally:
            gw3.stop()

    def test_streams_cut_by_a_stop_end_with_sandbox_stopped(self):
        dying = FakeAgent(os.path.join(self.tmp, "dying.sock"))
        dying.behaviour = "die_on_stop"     # exec: ok, then silence
        gw = gwlib.Gateway(self.tmp, ["unix:" + dying.path],
                           state_dir=os.path.join(self.tmp, "state-dying"))
        try:
            sid = gw.create()[0]
            got = {}
            t = threading.Thread(target=lambda: got.update(r=gw.http(
                "POST", gw.sess(sid) + "/cmd", {"command": "sleep", "wait": True})))
            t.start()
            # the exec answered: the stream has begun (a stop before the ok is
            # an exec whose fate is unknown, a 424, not a cut stream)
            gwlib.wait_for(lambda: dying.exec_oks >= 1, 10, "the stream's exec answered")
            gw.json("POST", gw.sess(sid) + "/stop")
            t.join(30)
            last = json.loads(got["r"][2].splitlines()[-1])
            self.assertEqual(last["data"]["code"], "sandbox_stopped")
        finally:
            gw.stop()
            dying.close()

    def test_a_vanished_agent_is_502_never_404(self):
        gone = FakeAgent(os.path.join(self.tmp, "gone.sock"))
        gw = gwlib.Gateway(self.tmp, ["unix:" + gone.path],
                           state_dir=os.path.join(self.tmp, "state-gone"))
        try:
            sid = gw.create()[0]
            gone.close()
            os.unlink(gone.path)        # connecting now fails with ENOENT
            base = gw.sess(sid)
            for method, path, body in [("GET", "/cmd/cmd_1", None),
                                       ("POST", "/fs/read", {"path": "x"}),
                                       ("POST", "/cmd", {"command": "ls"})]:
                st, j = gw.json(method, base + path, body)
                self.assertEqual((st, j["error"]["code"]), (502, "agent_unreachable"), path)
        finally:
            gw.stop()


if __name__ == "__main__":
    unittest.main()
