"""sandbox-gateway routes (docs/gateway.md "Routes"): `ports` at create and by
PATCH give routes {url, subdomain, port}; each url is a gateway listener whose
connections are tunnelled to the guest port through the agent's `connect`.

The "guest" is this machine (pool agents on Unix sockets): servers run as
session commands (python3 -m http.server) or in this process (the WebSocket
echo server of tests/integration/test_tunnel.py), reached through the route."""

import http.client
import os
import socket
import sys
import threading
import time
import unittest
import urllib.parse

import gwlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from test_tunnel import Server, recv_all, ws_echo_exchange, ws_echo_handler  # noqa: E402

SCALE = gwlib.SCALE


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hostport(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port


def refused(url):
    """Nothing listens at url. A reset means a listener took the connection
    into its backlog and closed meanwhile: not refused yet (ask again)."""
    try:
        with socket.create_connection(hostport(url), timeout=5):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False


def closed_without_data(url):
    """A connection to url that the gateway closes without a byte."""
    with socket.create_connection(hostport(url), timeout=10 * SCALE) as s:
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(1) == b""
        except ConnectionResetError:
            return True


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def get(url, path, timeout=10):
    c = http.client.HTTPConnection(*hostport(url), timeout=timeout * SCALE)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class RoutesTest(gwlib.GatewayCase):
    pool_size = 8
    gateway_args = ("--max-route-connections", "64")

    def create(self, ports):
        sid, j = self.gw.create(ports=ports)
        self.addCleanup(self.stop_if_running, sid)
        return sid, j

    def stop_if_running(self, sid):
        st, j = self.gw.json("GET", self.gw.sess(sid))
        if st == 200 and j["session"]["status"] == "running":
            self.stop_session(sid)

    def route(self, j, port):
        r = [r for r in j["routes"] if r["port"] == port]
        self.assertEqual(len(r), 1, j["routes"])
        return r[0]["url"]

    def http_server(self, sid, port, content):
        """python3 -m http.server in the session (a detached command) serving
        f.txt; returns when it answers on the guest port."""
        st, j = self.gw.json("POST", self.gw.sess(sid) + "/cmd", {
            "command": "sh", "args": ["-c", 'printf %s "$C" > f.txt && exec python3 -m http.server '
                                      f"{port} --bind 127.0.0.1"],
            "env": {"C": content}})
        self.assertEqual(st, 200, j)

        def up():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False
        gwlib.wait_for(up, 20, "http.server in the session")
        return j["command"]["id"]

    # --- the responses -----------------------------------------------------------------

    def test_create_with_ports_returns_routes_in_create_get_and_session(self):
        p1, p2 = free_port(), free_port()
        sid, j = self.create([p1, p2, p1])
        self.assertEqual(sorted(r["port"] for r in j["routes"]), sorted([p1, p2]))
        for r in j["routes"]:
            self.assertEqual(r["subdomain"], f"{sid}-{r['port']}")
            host, lport = hostport(r["url"])
            self.assertEqual(host, "127.0.0.1")
            self.assertTrue(r["url"].startswith("http://127.0.0.1:") and lport > 0, r)
        self.assertNotEqual(self.route(j, p1), self.route(j, p2))
        st, g = self.gw.json("GET", "/v2/sandboxes/" + j["sandbox"]["name"])
        self.assertEqual((st, g["routes"]), (200, j["routes"]))
        st, s = self.gw.json("GET", self.gw.sess(sid))
        self.assertEqual((st, s["routes"]), (200, j["routes"]))
        sid2, j2 = self.create(None)
        self.assertEqual(j2["routes"], [])

    def test_bad_ports_are_400(self):
        for ports in ("3000", [0], [65536], ["80"], list(range(1, 66))):
            st, j = self.gw.json("POST", "/v3/sandboxes", {"ports": ports})
            self.assertEqual(st, 400, ports)
            self.assertEqual(j["error"]["code"], "bad_request")

    # --- serving -----------------------------------------------------------------------

    def test_http_server_in_the_session_answers_concurrent_requests(self):
        port = free_port()
        sid, j = self.create([port])
        url = self.route(j, port)
        self.http_server(sid, port, "hello from the guest")
        errors, done = [], []

        def client():
            try:   # keep-alive: several requests on one connection
                c = http.client.HTTPConnection(*hostport(url), timeout=30 * SCALE)
                for _ in range(5):
                    c.request("GET", "/f.txt")
                    r = c.getresponse()
                    body = r.read()
                    if (r.status, body) != (200, b"hello from the guest"):
                        errors.append((r.status, body))
                    done.append(1)
                c.close()
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120 * SCALE)
        self.assertEqual(errors, [])
        self.assertEqual(len(done), 80)

    def test_websocket_echo_through_a_route(self):
        srv = Server(ws_echo_handler)
        self.addCleanup(srv.close)
        sid, j = self.create([srv.port])
        with socket.create_connection(hostport(self.route(j, srv.port)), timeout=30 * SCALE) as s:
            ws_echo_exchange(self, s)
        self.assertEqual(srv.errors, [])

    def test_half_close_reaches_the_guest_and_its_reply_comes_back(self):
        srv = Server(lambda s: s.sendall(recv_all(s).upper()))
        self.addCleanup(srv.close)
        sid, j = self.create([srv.port])
        with socket.create_connection(hostport(self.route(j, srv.port)), timeout=30 * SCALE) as s:
            s.sendall(b"abc" * 10000)
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(s), b"ABC" * 10000)

    def test_a_client_that_stops_reading_holds_back_the_guest_not_gateway_memory(self):
        sent = [0]

        def flood(s):
            block = b"x" * 65536
            try:
                while sent[0] < (512 << 20):
                    s.sendall(block)
                    sent[0] += len(block)
            except OSError:
                pass
        srv = Server(flood)
        self.addCleanup(srv.close)
        sid, j = self.create([srv.port])
        before = rss(self.gw.proc.pid)
        with socket.create_connection(hostport(self.route(j, srv.port)), timeout=30 * SCALE) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            gwlib.wait_for(lambda: sent[0] > 0, 10, "the guest server sending")
            time.sleep(2)       # the server fills every buffer on the way and stops
            stalled = sent[0]
            time.sleep(1)
            self.assertLess(sent[0] - stalled, 8 << 20, "the guest server is held back")
            self.assertLess(sent[0], 256 << 20)
            self.assertLess(rss(self.gw.proc.pid) - before, 32 << 20,
                            "the gateway buffers a bounded amount (two 64 KiB relay buffers)")

    def test_a_guest_server_down_closes_that_connection_and_the_route_recovers(self):
        port = free_port()
        sid, j = self.create([port])
        url = self.route(j, port)
        self.assertTrue(closed_without_data(url), "a refused guest connect closes the client")
        self.assertTrue(closed_without_data(url), "and the next one too")
        cmd = self.http_server(sid, port, "up")
        self.assertEqual(get(url, "/f.txt"), (200, b"up"))
        st, _ = self.gw.json("POST", self.gw.sess(sid) + f"/cmd/{cmd}/kill", {"signal": 9})
        self.assertEqual(st, 200)
        gwlib.wait_for(lambda: closed_without_data(url), 20, "the server gone")
        self.http_server(sid, port, "up again")
        self.assertEqual(get(url, "/f.txt"), (200, b"up again"))

    def test_stopping_the_session_closes_its_listeners_and_connections(self):
        hold = threading.Event()
        srv = Server(lambda s: (s.sendall(b"hi"), hold.wait(60)))
        self.addCleanup(srv.close)
        self.addCleanup(hold.set)
        sid, j = self.create([srv.port])
        url = self.route(j, srv.port)
        s = socket.create_connection(hostport(url), timeout=30 * SCALE)
        self.addCleanup(s.close)
        self.assertEqual(s.recv(2), b"hi")
        self.stop_session(sid)
        self.assertEqual(s.recv(1), b"", "an open route connection ends with its session")
        gwlib.wait_for(lambda: refused(url), 10, "the route's listener closed")
        st, g = self.gw.json("GET", self.gw.sess(sid))
        self.assertEqual(g["routes"], j["routes"])

    def test_a_session_timeout_closes_its_listeners(self):
        port = free_port()
        sid, j = self.gw.create(ports=[port], timeout=1500)
        url = self.route(j, port)
        self.assertFalse(refused(url))
        gwlib.wait_for(lambda: refused(url), 20, "the route's listener closed at the timeout")

    def test_a_resumed_sandbox_serves_its_ports_on_its_new_session(self):
        srv = Server(lambda s: s.sendall(b"resumed"))
        self.addCleanup(srv.close)
        sid, j = self.create([srv.port])
        self.stop_session(sid)
        st, r = self.gw.json("GET", f"/v2/sandboxes/{j['sandbox']['name']}?resume=true")
        self.assertEqual(st, 200, r)
        self.addCleanup(self.stop_if_running, r["session"]["id"])
        self.assertEqual([x["port"] for x in r["routes"]], [srv.port])
        self.assertEqual(r["routes"][0]["subdomain"], f"{r['session']['id']}-{srv.port}")
        with socket.create_connection(hostport(self.route(r, srv.port)), timeout=30 * SCALE) as s:
            self.assertEqual(s.recv(7), b"resumed")

    def test_deleting_the_sandbox_closes_its_listeners(self):
        port = free_port()
        sid, j = self.create([port])
        url = self.route(j, port)
        self.assertFalse(refused(url))
        st, d = self.gw.json("DELETE", "/v2/sandboxes/" + j["sandbox"]["name"])
        self.assertEqual(st, 200, d)
        self.assertEqual(d["routes"], j["routes"])
        gwlib.wait_for(lambda: refused(url), 10, "the route's listener closed")

    def test_patch_ports_changes_the_routes(self):
        srv, srv2 = Server(lambda s: s.sendall(b"one")), Server(lambda s: s.sendall(b"two"))
        self.addCleanup(srv.close)
        self.addCleanup(srv2.close)
        gone = free_port()
        sid, j = self.create([srv.port, gone])
        name = j["sandbox"]["name"]
        st, p = self.gw.json("PATCH", "/v2/sandboxes/" + name, {"ports": [srv.port, srv2.port]})
        self.assertEqual(st, 200, p)
        self.assertEqual(p["sandbox"]["name"], name)
        self.assertEqual(sorted(r["port"] for r in p["routes"]), sorted([srv.port, srv2.port]))
        self.assertEqual(self.route(p, srv.port), self.route(j, srv.port), "a kept port keeps its url")
        for port, want in ((srv.port, b"one"), (srv2.port, b"two")):
            with socket.create_connection(hostport(self.route(p, port)), timeout=30 * SCALE) as s:
                self.assertEqual(s.recv(3), want)
        gwlib.wait_for(lambda: refused(self.route(j, gone)), 10, "the dropped port's listener closed")
        st, g = self.gw.json("GET", "/v2/sandboxes/" + name)
        self.assertEqual(g["routes"], p["routes"])
        st, e = self.gw.json("PATCH", "/v2/sandboxes/" + name, {"timeout": 1000})
        self.assertEqual((st, e["error"]["code"]), (400, "not_supported"))
        st, e = self.gw.json("PATCH", "/v2/sandboxes/" + name, {"ports": ["x"]})
        self.assertEqual((st, e["error"]["code"]), (400, "bad_request"))
        st, _ = self.gw.json("PATCH", "/v2/sandboxes/nope", {"ports": [1]})
        self.assertEqual(st, 404)

    def test_a_restarted_gateway_serves_the_routes_again(self):
        srv = Server(lambda s: s.sendall(b"still here"))
        self.addCleanup(srv.close)
        sid, j = self.create([srv.port])
        url = self.route(j, srv.port)
        self.gw.stop()
        self.assertTrue(refused(url), "no listener while no gateway runs")
        self.gw.start()
        st, g = self.gw.json("GET", self.gw.sess(sid))
        self.assertEqual((st, g["routes"]), (200, j["routes"]), "the same url")
        with socket.create_connection(hostport(url), timeout=30 * SCALE) as s:
            self.assertEqual(s.recv(10), b"still here")


class RouteConnectionBound(gwlib.GatewayCase):
    pool_size = 1
    gateway_args = ("--max-route-connections", "2")

    def test_connections_beyond_the_bound_wait_for_a_free_slot(self):
        release = threading.Event()
        srv = Server(lambda s: (s.sendall(b"in"), release.wait(60)))
        self.addCleanup(srv.close)
        self.addCleanup(release.set)
        sid, j = self.gw.create(ports=[srv.port])
        self.addCleanup(self.stop_session, sid)
        addr = hostport(j["routes"][0]["url"])
        socks = [socket.create_connection(addr, timeout=30 * SCALE) for _ in range(3)]
        for s in socks:
            self.addCleanup(s.close)
        for s in socks[:2]:
            self.assertEqual(s.recv(2), b"in")
        socks[2].settimeout(1)
        with self.assertRaises(socket.timeout, msg="a third connection is not relayed yet"):
            socks[2].recv(2)
        socks[0].close()
        release.set()
        socks[2].settimeout(30 * SCALE)
        self.assertEqual(socks[2].recv(2), b"in")


if __name__ == "__main__":
    unittest.main()
