"""sandbox-gateway at the HTTP level: auth, bad input, unsupported endpoints,
exact content types, 200 concurrent streams, a client that stops reading,
session timeout and extend-timeout, streams ending with sandbox_stopped,
pagination, and a gateway restart in the middle of a running session."""

import gzip
import io
import json
import os
import socket
import tarfile
import threading
import time
import unittest

import gwlib

SCALE = gwlib.SCALE


def ndjson(payload):
    return [json.loads(line) for line in payload.decode().splitlines() if line.strip()]


def tar_gz(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


class HttpTest(gwlib.GatewayCase):
    pool_size = 6
    gateway_args = ("--max-body", "65536")

    def setUp(self):
        self.sid, self.created = self.gw.create(env={"FROM_CREATE": "yes"})
        self.base = self.gw.sess(self.sid)

    def tearDown(self):
        st, j = self.gw.json("GET", self.base)
        if st == 200 and j["session"]["status"] == "running":
            self.stop_session(self.sid)

    def run_cmd(self, command, args=(), **kw):
        st, j = self.gw.json("POST", self.base + "/cmd", dict(command=command, args=list(args), **kw))
        self.assertEqual(st, 200, j)
        return j["command"]

    # --- auth and bad input ----------------------------------------------------------

    def test_requests_without_the_right_token_are_401(self):
        for token in (None, "wrong", gwlib.TOKEN + "x", gwlib.TOKEN[:-1], ""):
            st, j = self.gw.json("GET", self.base, token=token)
            self.assertEqual(st, 401, token)
            self.assertEqual(j["error"]["code"], "unauthorized")
        st, _, _ = self.gw.http("GET", self.base, token=None,
                                headers={"authorization": "Basic " + gwlib.TOKEN})
        self.assertEqual(st, 401)

    def test_malformed_json_and_wrong_types_are_400_naming_the_field(self):
        st, j = self.gw.json("POST", self.base + "/cmd", raw=b"{not json")
        self.assertEqual((st, j["error"]["code"]), (400, "bad_request"))
        self.assertIn("body", j["error"]["message"])
        st, j = self.gw.json("POST", self.base + "/cmd", raw=b"[1]")
        self.assertEqual(st, 400)
        cases = [
            ("/cmd", {"args": []}, "command"),
            ("/cmd", {"command": 5}, "command"),
            ("/cmd", {"command": "ls", "args": "x"}, "args"),
            ("/cmd", {"command": "ls", "args": [1]}, "args[0]"),
            ("/cmd", {"command": "ls", "env": {"A": 1}}, "env"),
            ("/cmd", {"command": "ls", "sudo": "yes"}, "sudo"),
            ("/cmd", {"command": "ls", "timeout": -1}, "timeout"),
            ("/fs/read", {"path": 7}, "path"),
            ("/fs/mkdir", {}, "path"),
            ("/extend-timeout", {"duration": "long"}, "duration"),
        ]
        for sub, body, field in cases:
            st, j = self.gw.json("POST", self.base + sub, body)
            self.assertEqual(st, 400, (sub, body, j))
            self.assertIn(field, j["error"]["message"], (sub, body))
        st, j = self.gw.json("POST", "/v3/sandboxes", {"timeout": "soon"})
        self.assertEqual(st, 400)
        self.assertIn("timeout", j["error"]["message"])
        st, j = self.gw.json("POST", "/v3/sandboxes", {"name": "../x"})
        self.assertEqual(st, 400)
        self.assertIn("name", j["error"]["message"])

    def test_oversize_bodies_are_413(self):
        big = json.dumps({"command": "echo", "args": ["x" * 70000]}).encode()
        st, j = self.gw.json("POST", self.base + "/cmd", raw=big)
        self.assertEqual((st, j["error"]["code"]), (413, "too_large"))
        # without a Content-Length (chunked): counted as it arrives
        c = self.gw.conn()
        c.putrequest("POST", self.base + "/cmd")
        c.putheader("authorization", "Bearer " + gwlib.TOKEN)
        c.putheader("transfer-encoding", "chunked")
        c.endheaders()
        for _ in range(5):
            piece = b"x" * 20000
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        self.assertEqual(r.status, 413)
        c.close()

    def test_unknown_session_command_and_endpoint_are_404(self):
        st, j = self.gw.json("GET", "/v2/sandboxes/sessions/sess_nope")
        self.assertEqual((st, j["error"]["code"]), (404, "not_found"))
        st, _ = self.gw.json("POST", "/v2/sandboxes/sessions/sess_nope/cmd", {"command": "ls"})
        self.assertEqual(st, 404)
        st, _, _ = self.gw.http("POST", "/v2/sandboxes/sessions/sess_nope/fs/write", raw=b"x")
        self.assertEqual(st, 404)
        for cid in ("cmd_999999", "cmd_0", "cmd_x", "42"):
            st, j = self.gw.json("GET", self.base + "/cmd/" + cid)
            self.assertEqual(st, 404, cid)
            self.assertEqual(j["error"]["code"], "not_found")
        st, _ = self.gw.json("GET", self.base + "/cmd/cmd_999999/logs")
        self.assertEqual(st, 404)
        st, _ = self.gw.json("POST", self.base + "/cmd/cmd_999999/kill", {"signal": 9})
        self.assertEqual(st, 404)
        st, _ = self.gw.json("GET", "/v2/sandboxes/nope-nope")
        self.assertEqual(st, 404)
        st, _ = self.gw.json("GET", "/v1/other")
        self.assertEqual(st, 404)

    def test_unsupported_features_are_4xx_not_supported(self):
        for method, path, body in [
            ("POST", self.base + "/snapshot", None),
            ("POST", self.base + "/network-policy", {"mode": "deny-all"}),
            ("POST", self.base + "/interactive", {}),
            ("GET", "/v2/sandboxes/snapshots", None),
            ("GET", "/v2/sandboxes/drives", None),
            ("POST", "/v2/sandboxes/x/fork", {}),
            ("PATCH", "/v2/sandboxes/" + self.created["sandbox"]["name"], {"timeout": 1000}),
            ("POST", "/v3/sandboxes", {"source": {"type": "snapshot", "snapshotId": "s"}}),
            ("POST", "/v3/sandboxes", {"networkPolicy": {"mode": "deny-all"}}),
        ]:
            st, j = self.gw.json(method, path, body)
            self.assertTrue(400 <= st < 500, (path, st))
            self.assertEqual(j["error"]["code"], "not_supported", path)

    def test_spawn_failure_is_4xx(self):
        st, j = self.gw.json("POST", self.base + "/cmd", {"command": "/no/such/prog", "wait": True})
        self.assertTrue(400 <= st < 500, st)
        st, j = self.gw.json("POST", self.base + "/cmd", {"command": "ls", "cwd": "/no/such/dir"})
        self.assertTrue(400 <= st < 500, st)

    # --- shapes -------------------------------------------------------------------

    def test_stream_content_types_and_command_lines(self):
        st, r, payload = self.gw.http("POST", self.base + "/cmd",
                                      {"command": "sh", "args": ["-c", "echo $FROM_CREATE"],
                                       "wait": True})
        self.assertEqual(r.getheader("content-type"), "application/x-ndjson")
        lines = ndjson(payload)
        self.assertIsNone(lines[0]["command"]["exitCode"])
        self.assertEqual(lines[1], {"stream": "stdout", "data": "yes\n"})
        last = lines[-1]["command"]
        self.assertEqual(last["exitCode"], 0)
        self.assertIsInstance(last["durationMs"], int)
        self.assertEqual(last["cwd"], self.created["session"]["cwd"])
        st, r, payload = self.gw.http("GET", self.base + "/cmd/" + last["id"] + "/logs")
        self.assertEqual(r.getheader("content-type"), "application/x-ndjson")
        self.assertEqual(ndjson(payload), [{"stream": "stdout", "data": "yes\n"}])
        self.gw.http("POST", self.base + "/fs/write", raw=tar_gz({"f.txt": b"\x00\xff"}),
                     headers={"content-type": "application/gzip", "x-cwd": self.created["session"]["cwd"]})
        st, r, payload = self.gw.http("POST", self.base + "/fs/read", {"path": "f.txt"})
        self.assertEqual((st, payload), (200, b"\x00\xff"))
        self.assertEqual(r.getheader("content-type"), "application/octet-stream")

    def test_get_wait_sends_headers_before_the_exit(self):
        cmd = self.run_cmd("sleep", ["4"])
        c = self.gw.conn()
        t0 = time.monotonic()
        c.request("GET", self.base + f"/cmd/{cmd['id']}?wait=true",
                  headers={"authorization": "Bearer " + gwlib.TOKEN})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertLess(time.monotonic() - t0, 3.5, "headers came only with the exit")
        body = json.loads(r.read())
        self.assertEqual(body["command"]["exitCode"], 0)
        c.close()

    def test_write_refused_and_bad_archives_are_errors(self):
        st, j = self.gw.json("POST", self.base + "/fs/write", raw=b"not a tarball at all",
                             headers={"content-type": "application/gzip"})
        self.assertEqual(st, 400, j)
        evil = tar_gz({"../escape.txt": b"x"})
        st, j = self.gw.json("POST", self.base + "/fs/write", raw=evil,
                             headers={"x-cwd": self.created["session"]["cwd"]})
        self.assertEqual(st, 400)
        self.assertIn("escape.txt", j["error"]["message"])

    def test_large_upload_streams_through(self):
        data = os.urandom(1 << 20) * 24
        body = tar_gz({"big.bin": data})
        c = self.gw.conn(120)
        c.putrequest("POST", self.base + "/fs/write")
        c.putheader("authorization", "Bearer " + gwlib.TOKEN)
        c.putheader("transfer-encoding", "chunked")
        c.putheader("x-cwd", self.created["session"]["cwd"])
        c.endheaders()
        for i in range(0, len(body), 50000):
            piece = body[i:i + 50000]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (200, b"{}"))
        c.close()
        st, _, payload = self.gw.http("POST", self.base + "/fs/read", {"path": "big.bin"}, timeout=120)
        self.assertEqual(st, 200)
        self.assertEqual(payload, data)

    def test_list_pagination(self):
        names = []
        for i in range(3):
            sid, j = self.gw.create(name=f"page-{os.getpid()}-{i}")
            names.append(j["sandbox"]["name"])
            self.stop_session(sid)
        st, j = self.gw.json("GET", f"/v2/sandboxes?limit=2&namePrefix=page-{os.getpid()}-")
        self.assertEqual(st, 200)
        self.assertEqual([s["name"] for s in j["sandboxes"]], names[::-1][:2])
        self.assertIsNotNone(j["pagination"]["next"])
        st, j2 = self.gw.json("GET", f"/v2/sandboxes?limit=2&namePrefix=page-{os.getpid()}-"
                                    f"&cursor={j['pagination']['next']}")
        self.assertEqual([s["name"] for s in j2["sandboxes"]], [names[0]])
        self.assertIsNone(j2["pagination"]["next"])
        st, j = self.gw.json("GET", f"/v2/sandboxes/sessions?name={names[0]}")
        self.assertEqual([s["status"] for s in j["sessions"]], ["stopped"])
        for n in names:
            st, _ = self.gw.json("DELETE", "/v2/sandboxes/" + n)
            self.assertEqual(st, 200)
            self.assertEqual(self.gw.json("GET", "/v2/sandboxes/" + n)[0], 404)

    # --- concurrency and flow control ---------------------------------------------------

    def test_200_concurrent_streams(self):
        """160 /logs followers, 20 waiting GET ?wait=true, 15 waiting POST /cmd
        and 5 uploads, all open at once."""
        cmd = self.run_cmd("sh", ["-c", "sleep 3; echo done"])
        cwd = self.created["session"]["cwd"]
        results, errors = {}, []

        def logs(i):
            st, r, payload = self.gw.http("GET", self.base + f"/cmd/{cmd['id']}/logs", timeout=120)
            results[i] = (st, ndjson(payload)) == (200, [{"stream": "stdout", "data": "done\n"}])

        def get_wait(i):
            st, j = self.gw.json("GET", self.base + f"/cmd/{cmd['id']}?wait=true", timeout=120)
            results[i] = (st, j["command"]["exitCode"]) == (200, 0)

        def run_wait(i):
            st, r, payload = self.gw.http("POST", self.base + "/cmd",
                                          {"command": "sh", "args": ["-c", f"sleep 2; echo {i}"],
                                           "wait": True}, timeout=120)
            lines = ndjson(payload)
            results[i] = st == 200 and lines[1]["data"] == f"{i}\n" and lines[-1]["command"]["exitCode"] == 0

        def upload(i):
            st, j = self.gw.json("POST", self.base + "/fs/write",
                                 raw=tar_gz({f"up{i}.bin": bytes([i]) * 300000}),
                                 headers={"x-cwd": cwd}, timeout=120)
            results[i] = st == 200

        def guarded(fn, i):
            try:
                fn(i)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{fn.__name__} {i}: {e!r}")
        kinds = [logs] * 160 + [get_wait] * 20 + [run_wait] * 15 + [upload] * 5
        threads = [threading.Thread(target=guarded, args=(fn, i)) for i, fn in enumerate(kinds)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180 * SCALE)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(i for i, ok in results.items() if not ok), [])
        self.assertEqual(len(results), 200)
        st, _, payload = self.gw.http("POST", self.base + "/fs/read", {"path": "up199.bin"})
        self.assertEqual(payload, bytes([199]) * 300000)

    def test_a_client_that_stops_reading_stalls_only_itself(self):
        big = self.run_cmd("sh", ["-c", "head -c 200000000 /dev/zero | tr '\\0' a"])
        s = socket.create_connection(("127.0.0.1", self.gw.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall((f"GET {self.base}/cmd/{big['id']}/logs HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {gwlib.TOKEN}\r\n\r\n").encode())
        s.recv(100)     # the stream started; now it is never read again
        try:
            for i in range(5):
                st, r, payload = self.gw.http("POST", self.base + "/cmd",
                                              {"command": "echo", "args": [str(i)], "wait": True},
                                              timeout=20)
                self.assertEqual(ndjson(payload)[1]["data"], f"{i}\n")
            other = self.gw.create()[0]
            self.stop_session(other)
        finally:
            s.close()
        self.gw.json("POST", self.base + f"/cmd/{big['id']}/kill", {"signal": 9})

    def gateway_threads(self):
        with open(f"/proc/{self.gw.proc.pid}/status") as f:
            return int(next(l for l in f if l.startswith("Threads:")).split()[1])

    def test_a_client_that_hangs_up_frees_its_stream(self):
        cmd = self.run_cmd("sleep", ["100"])      # silent: nothing would reveal the hang-up

        def settled():      # threads of earlier requests end asynchronously
            a = self.gateway_threads()
            time.sleep(0.3)
            return a if a == self.gateway_threads() else None
        before = gwlib.wait_for(settled, 10, "the gateway's threads to settle")
        socks = []
        for path in [f"/cmd/{cmd['id']}/logs", f"/cmd/{cmd['id']}?wait=true"] * 10:
            s = socket.create_connection(("127.0.0.1", self.gw.port))
            s.sendall((f"GET {self.base}{path} HTTP/1.1\r\nHost: x\r\n"
                       f"Authorization: Bearer {gwlib.TOKEN}\r\n\r\n").encode())
            s.settimeout(10 * SCALE)
            self.assertIn(b" 200 ", s.recv(100))
            socks.append(s)
        self.assertGreaterEqual(self.gateway_threads(), before + 20)
        for s in socks:
            s.close()
        gwlib.wait_for(lambda: self.gateway_threads() <= before + 2, 10,
                       "the threads of hung-up streams to end")
        self.gw.json("POST", self.base + f"/cmd/{cmd['id']}/kill", {"signal": 9})

    # --- session life --------------------------------------------------------------------

    def test_stop_ends_open_streams_with_sandbox_stopped(self):
        cmd = self.run_cmd("sh", ["-c", "echo up; sleep 100"])
        got = {}

        def run_wait():
            got["wait"] = self.gw.http("POST", self.base + "/cmd",
                                       {"command": "sleep", "args": ["100"], "wait": True}, timeout=60)

        def logs():
            got["logs"] = self.gw.http("GET", self.base + f"/cmd/{cmd['id']}/logs", timeout=60)
        ts = [threading.Thread(target=run_wait), threading.Thread(target=logs)]
        for t in ts:
            t.start()
        time.sleep(1 * SCALE)
        self.stop_session(self.sid)
        for t in ts:
            t.join(60 * SCALE)
        for k in ("wait", "logs"):
            last = ndjson(got[k][2])[-1]
            self.assertEqual(last["stream"], "error", k)
            self.assertEqual(last["data"]["code"], "sandbox_stopped", k)
        st, j = self.gw.json("POST", self.base + "/cmd", {"command": "ls"})
        self.assertEqual((st, j["error"]["code"]), (410, "sandbox_stopped"))

    def test_session_timeout_and_extend(self):
        sid, j = self.gw.create(timeout=1500)
        base = self.gw.sess(sid)
        st, j = self.gw.json("POST", base + "/extend-timeout", {"duration": 2500})
        self.assertEqual((st, j["session"]["timeout"]), (200, 4000))
        time.sleep(2)
        self.assertEqual(self.gw.json("GET", base)[1]["session"]["status"], "running",
                         "extend-timeout moved the deadline")
        cmd = self.gw.json("POST", base + "/cmd", {"command": "sleep", "args": ["100"]})[1]["command"]
        gwlib.wait_for(lambda: self.gw.json("GET", base)[1]["session"]["status"] == "stopped",
                       15, "the session to time out")
        # the agent stays (a pool agent): its command was killed at the expiry
        st, j = self.gw.json("GET", base + "/cmd/" + cmd["id"])
        self.assertEqual(st, 410)


class RestartTest(gwlib.GatewayCase):
    pool_size = 1

    def test_restarted_gateway_keeps_serving_a_running_session(self):
        sid, j = self.gw.create(env={"K": "v"})
        base = self.gw.sess(sid)
        cmd = self.gw.json("POST", base + "/cmd",
                           {"command": "sh", "args": ["-c", "echo before; sleep 3; echo $K after"]})[1]["command"]
        got = {}
        follower = threading.Thread(target=lambda: got.update(r=self.gw.http(
            "GET", base + f"/cmd/{cmd['id']}/logs", timeout=60)))
        follower.start()
        time.sleep(0.5 * SCALE)
        self.gw.stop()      # open streams end, the gateway exits 0 (checked by stop)
        follower.join(30)
        lines = ndjson(got["r"][2])
        self.assertEqual(lines[0], {"stream": "stdout", "data": "before\n"})
        self.assertEqual(lines[-1]["data"]["code"], "sandbox_stream_closed")
        st = os.stat(os.path.join(self.gw.state_dir, "state.json"))
        self.assertEqual(st.st_mode & 0o777, 0o600)
        self.gw.start()
        st, j = self.gw.json("GET", base + f"/cmd/{cmd['id']}?wait=true", timeout=60)
        self.assertEqual((st, j["command"]["exitCode"]), (200, 0))
        st, r, payload = self.gw.http("GET", base + f"/cmd/{cmd['id']}/logs")
        self.assertEqual("".join(x["data"] for x in ndjson(payload)), "before\nv after\n")
        st, j = self.gw.json("POST", base + "/cmd", {"command": "sh", "args": ["-c", "echo $K"],
                                                     "wait": True})
        self.assertEqual(st, 200)
        self.stop_session(sid)


if __name__ == "__main__":
    unittest.main()
