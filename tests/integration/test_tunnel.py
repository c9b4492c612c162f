"""Tunnels: the `connect` request (the agent connection becomes a raw byte
pipe to a TCP port in the guest) and `sandboxctl forward` on top of it.

The "guest" is this machine: servers are started as agent commands
(`python3 -m http.server`) or run in this process, and reached through the
agent on its Unix socket exactly as a host reaches a VM's ports.

Bulk transfers move 1 GiB each way (byte-exact, sha256) in normal builds and
256 MiB under AddressSanitizer (printed on stderr when it applies)."""

import base64
import hashlib
import http.client
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from test_cli import FakeFirecracker
from agentlib import (ASAN, CTL_BIN, MiB, AgentTestCase, T, pack, wait_until,
                      free_tcp_port)

BULK = (256 if ASAN else 1024) * MiB
BLOCK = MiB


def need_ctl():
    if not CTL_BIN or not os.access(CTL_BIN, os.X_OK):
        raise unittest.SkipTest("SA_CTL is not set to an executable sandboxctl")


def bulk_blocks(total, seed):
    """total bytes as BLOCK-sized pieces, each distinct (its index up front),
    so that lost, repeated or reordered blocks change the digest."""
    base = hashlib.sha256(seed).digest() * (BLOCK // 32)
    for i in range(total // BLOCK):
        yield i.to_bytes(8, "big") + base[8:]


def bulk_digest(total, seed):
    h = hashlib.sha256()
    for b in bulk_blocks(total, seed):
        h.update(b)
    return h.hexdigest()


def recv_digest(sock):
    """Read to EOF: (bytes, sha256 hex) without keeping the bytes."""
    h, n = hashlib.sha256(), 0
    buf = bytearray(1 << 20)
    while True:
        k = sock.recv_into(buf)
        if not k:
            return n, h.hexdigest()
        h.update(memoryview(buf)[:k])
        n += k


def recv_all(sock, limit=None):
    out = bytearray()
    while True:
        d = sock.recv(1 << 20)
        if not d:
            return bytes(out)
        out += d
        if limit is not None and len(out) >= limit:
            return bytes(out)


# --------------------------------------------------------------------------
# servers in this process (the "guest" side)

class Server:
    """A TCP listener on 127.0.0.1 (or host) whose connections each run
    handler(sock) in a thread."""

    def __init__(self, handler, host="127.0.0.1", port=0):
        self.handler = handler
        self.lsock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.errors = []
        self.accepted = 0
        self.stopping = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(s,), daemon=True).start()

    def _run(self, s):
        try:
            s.settimeout(T(60))
            self.handler(s)
        except Exception as e:            # reported by the test that owns the server
            self.errors.append(e)
        finally:
            s.close()

    def close(self):
        self.stopping = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()


def ws_accept_key(key):
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


def ws_read_frame(f):
    """One frame from a file-like: (opcode, payload), unmasking as needed."""
    h = f.read(2)
    if len(h) < 2:
        return None, b""
    op, ln = h[0] & 0x0F, h[1] & 0x7F
    masked = h[1] & 0x80
    if ln == 126:
        ln = struct.unpack(">H", f.read(2))[0]
    elif ln == 127:
        ln = struct.unpack(">Q", f.read(8))[0]
    mask = f.read(4) if masked else None
    data = f.read(ln)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return op, data


def ws_frame(op, data, mask=None):
    n = len(data)
    head = bytes([0x80 | op])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack(">Q", n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        head += mask
    return head + data


def ws_echo_handler(s):
    """A WebSocket echo server (RFC 6455): the Upgrade handshake, then every
    data frame back unmasked, until a close frame."""
    f = s.makefile("rb")
    req = b""
    while not req.endswith(b"\r\n\r\n"):
        line = f.readline()
        if not line:
            return
        req += line
    key = next(l.split(b":", 1)[1].strip() for l in req.split(b"\r\n")
               if l.lower().startswith(b"sec-websocket-key:"))
    s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: " + ws_accept_key(key) + b"\r\n\r\n")
    while True:
        op, data = ws_read_frame(f)
        if op is None or op == 8:
            s.sendall(ws_frame(8, b""))
            return
        s.sendall(ws_frame(op, data))


def ws_echo_exchange(test, s):
    """The client side against ws_echo_handler over socket s: the Upgrade
    handshake, text and binary frames (one of 200 kB) echoed, a close."""
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
              b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    fr = s.makefile("rb")
    status = fr.readline()
    test.assertIn(b" 101 ", status)
    headers = b""
    while True:
        line = fr.readline()
        if line in (b"\r\n", b""):
            break
        headers += line
    test.assertIn(b"Sec-WebSocket-Accept: " + ws_accept_key(key), headers)
    for op, msg in ((1, b"hello websocket"), (2, os.urandom(200000)), (1, b"x" * 300)):
        s.sendall(ws_frame(op, msg, mask=os.urandom(4)))
        test.assertEqual(ws_read_frame(fr), (op, msg))
    s.sendall(ws_frame(8, b"", mask=os.urandom(4)))
    test.assertEqual(ws_read_frame(fr)[0], 8)


# --------------------------------------------------------------------------
# the client side

def open_tunnel(agent, port, host=None, pipelined=b"", **fields):
    """A raw `connect` on a fresh agent connection: (reply, sock, first bytes).
    sock is blocking once the reply arrived."""
    c = agent.client()
    req = dict({"type": "connect", "id": 7, "port": port}, **fields)
    if host is not None:
        req["host"] = host
    c.send_raw(pack(req) + pipelined)
    reply = c.recv()
    sock, rest = take_socket(c)
    return reply, sock, rest


def take_socket(c):
    """The socket of Client c after its last frame (now a tunnel), blocking,
    and the bytes c had already read past that frame."""
    rest = bytes(c.inbuf[c.inpos:])
    sock = c.sock
    c.sel.unregister(sock)
    c.sel.close()
    c.sock = None
    sock.setblocking(True)
    sock.settimeout(T(60))
    return sock, rest


class Forward:
    """`sandboxctl forward` running against an agent: ports, process."""

    def __init__(self, agent, *specs, extra=()):
        argv = [CTL_BIN, "-c", "unix:" + agent.sock_path, "forward"] + list(extra) + list(specs)
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL)
        self.lines = []
        self.ports = []
        for _ in specs:
            line = self.p.stdout.readline().decode()
            if not line.startswith("forwarding "):
                self.p.kill()
                raise AssertionError("sandboxctl forward printed %r; stderr %r"
                                     % (line, self.p.stderr.read()))
            self.lines.append(line.strip())
            self.ports.append(int(line.split()[1].rsplit(":", 1)[1]))
        self.port = self.ports[0]

    def connect(self, port=None):
        return socket.create_connection(("127.0.0.1", port or self.port), timeout=T(60))

    def stop(self):
        """SIGTERM; (exit status, stderr)."""
        if self.p.stdout.closed:
            return self.p.returncode, b""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(T(10))
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        err = self.p.stderr.read()
        self.p.stdout.close()
        self.p.stderr.close()
        return self.p.returncode, err


class TunnelCase(AgentTestCase):

    def stats(self):
        with self.agent.client() as c:
            return c.ok("stats")

    def server(self, handler, **kw):
        s = Server(handler, **kw)
        self.addCleanup(s.close)
        return s

    def forward(self, *specs, extra=()):
        need_ctl()
        f = Forward(self.agent, *specs, extra=extra)
        self.addCleanup(f.stop)
        return f

    def assertTunnelsClose(self):
        wait_until(lambda: self.stats()["tunnels_open"] == 0, T(10), what="every tunnel closed")


# --------------------------------------------------------------------------

class Protocol(TunnelCase):
    """`connect` on the wire."""

    def test_hello_lists_the_tunnel_capability(self):
        self.assertIn("tunnel", self.c.hello["capabilities"])

    def test_connect_ok_then_the_connection_is_a_byte_pipe_both_ways(self):
        def echo(s):
            while True:
                d = s.recv(65536)
                if not d:
                    break
                s.sendall(d.upper())
        srv = self.server(echo)
        reply, sock, rest = open_tunnel(self.agent, srv.port)
        with sock:
            self.assertEqual(reply["type"], "ok", reply)
            self.assertEqual(rest, b"")
            sock.sendall(b"hello tunnel")
            self.assertEqual(sock.recv(100), b"HELLO TUNNEL")
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(sock), b"")
        self.assertTunnelsClose()

    def test_bytes_pipelined_after_connect_are_payload_even_if_they_look_like_frames(self):
        got = []

        def collect(s):
            got.append(recv_all(s))
            s.sendall(b"bye")
        srv = self.server(collect)
        ping = pack({"type": "ping", "id": 99})
        reply, sock, rest = open_tunnel(self.agent, srv.port, pipelined=ping + b"raw bytes")
        with sock:
            self.assertEqual(reply, {"type": "ok", "id": 7})
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(rest + recv_all(sock), b"bye",
                             "nothing but the server's bytes follows the ok (no pong)")
        self.assertEqual(got, [ping + b"raw bytes"])

    def test_replies_to_earlier_requests_come_before_the_ok(self):
        srv = self.server(lambda s: s.sendall(b"after"))
        c = self.agent.client()
        c.send_raw(pack({"type": "ping", "id": 1}) + pack({"type": "stats", "id": 2}) +
                   pack({"type": "connect", "id": 3, "port": srv.port}))
        self.assertEqual([c.recv()["id"] for _ in range(3)], [1, 2, 3])
        sock, rest = take_socket(c)
        with sock:
            self.assertEqual(rest + recv_all(sock), b"after")

    def test_kill_on_disconnect_commands_of_the_connection_die_at_the_hand_over(self):
        srv = self.server(lambda s: recv_all(s))
        c = self.agent.client()
        r = c.ok("exec", argv=["sleep", "60"], detached=True, kill_on_disconnect=True, stdin="null")
        c.send({"type": "connect", "id": 9, "port": srv.port})
        self.assertEqual(c.recv(), {"type": "ok", "id": 9})
        with self.agent.client() as other:
            w = other.ok("wait", cmd=r["cmd"], timeout=T(10))
        self.assertEqual(w["signal"], 9, "killed as when its connection closes")
        c.close()

    def test_refused_connect_is_an_error_before_any_ok_and_the_connection_closes(self):
        port = free_tcp_port()             # nothing listens there
        c = self.agent.client()
        c.send_raw(pack({"type": "connect", "id": 3, "port": port}) +
                   pack({"type": "ping", "id": 4}))
        frames = c.expect_closed()
        c.close()
        self.assertEqual(len(frames), 1, "the error, then the close (the pipelined ping is "
                                         "not answered): %r" % frames)
        self.assertErrorReply(frames[0], "ECONNREFUSED")
        self.assertEqual(frames[0]["id"], 3)
        self.assertTunnelsClose()
        self.assertStillServes()

    def test_a_pending_connect_blocks_nothing_and_times_out(self):
        # a listener with a full accept queue: the kernel drops further SYNs,
        # so a connect to it stays in progress
        lsock = socket.socket()
        self.addCleanup(lsock.close)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        filler = socket.create_connection(lsock.getsockname(), timeout=T(5))
        self.addCleanup(filler.close)
        c = self.agent.client()
        self.addCleanup(c.close)
        t0 = time.monotonic()
        c.send({"type": "connect", "id": 5, "port": lsock.getsockname()[1]})
        with self.agent.client() as other:
            other.ping(timeout=T(2))
            self.assertLess(time.monotonic() - t0, T(2), "the loop answered while connecting")
            self.assertEqual(self.stats()["tunnels_open"], 1, "a connecting tunnel counts")
        reply = c.recv(timeout=T(20))
        self.assertErrorReply(reply, "ETIMEDOUT")
        self.assertGreaterEqual(time.monotonic() - t0, 9.5, "the 10 s connect deadline")
        self.assertEqual(c.expect_closed(), [])
        self.assertTunnelsClose()

    def test_bad_requests_are_refused_and_close_the_connection(self):
        for fields, code in (({}, "bad_request"), ({"port": 0}, "bad_request"),
                             ({"port": 70000}, "bad_request"),
                             ({"port": 80, "host": "localhost"}, "bad_request"),
                             ({"port": 80, "host": "192.0.2.1"}, "EPERM")):
            c = self.agent.client()
            c.send(dict({"type": "connect", "id": 1}, **fields))
            frames = c.expect_closed()
            c.close()
            self.assertEqual(len(frames), 1, frames)
            self.assertErrorReply(frames[0], code)

    def test_connect_with_a_stream_open_on_the_connection_is_busy(self):
        rid, r = self.c.exec_start(["sleep", "30"])
        self.assertEqual(r["type"], "ok")
        self.c.send({"type": "connect", "id": 50, "port": 9})
        frames = self.c.expect_closed()
        err = [f for f in frames if f.get("id") == 50]
        self.assertEqual(len(err), 1, frames)
        self.assertErrorReply(err[0], "busy")
        with self.agent.client() as c2:
            c2.ok("signal", cmd=r["cmd"], signal=9)

    def test_a_reset_from_the_server_closes_the_tunnel(self):
        def reset(s):
            s.recv(10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        srv = self.server(reset)
        reply, sock, _ = open_tunnel(self.agent, srv.port)
        with sock:
            self.assertEqual(reply["type"], "ok")
            sock.sendall(b"x")
            try:
                self.assertEqual(recv_all(sock), b"")
            except ConnectionResetError:
                pass
        self.assertTunnelsClose()

    def test_stats_count_tunnels_and_bytes_each_way(self):
        def reply100(s):
            recv_all(s)
            s.sendall(b"y" * 100)
        srv = self.server(reply100)
        before = self.stats()
        reply, sock, rest = open_tunnel(self.agent, srv.port)
        with sock:
            self.assertEqual(reply["type"], "ok")
            self.assertEqual(self.stats()["tunnels_open"], before["tunnels_open"] + 1)
            sock.sendall(b"x" * 1000)
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(rest + recv_all(sock), b"y" * 100)
        self.assertTunnelsClose()
        after = self.stats()
        self.assertEqual(after["tunnels_total"], before["tunnels_total"] + 1)
        self.assertEqual(after["tunnel_bytes_in"] - before["tunnel_bytes_in"], 1000)
        self.assertEqual(after["tunnel_bytes_out"] - before["tunnel_bytes_out"], 100)

    def test_half_close_passes_each_direction_on_separately(self):
        seen = {}

        def server(s):
            s.sendall(b"early")
            s.shutdown(socket.SHUT_WR)          # the server is done talking...
            seen["got"] = recv_all(s)           # ...and keeps listening
        srv = self.server(server)
        reply, sock, rest = open_tunnel(self.agent, srv.port)
        with sock:
            self.assertEqual(reply["type"], "ok")
            self.assertEqual(rest + recv_all(sock), b"early", "EOF from the server arrives")
            sock.sendall(b"after the server's EOF")
            sock.shutdown(socket.SHUT_WR)
            wait_until(lambda: "got" in seen, T(10), what="the server saw our EOF")
        self.assertEqual(seen["got"], b"after the server's EOF")
        self.assertTunnelsClose()

    def test_half_close_false_ends_the_tunnel_at_the_first_eof(self):
        def server(s):
            s.sendall(b"bye")                   # and close: EOF towards the host
        srv = self.server(server)
        reply, sock, rest = open_tunnel(self.agent, srv.port, half_close=False)
        with sock:
            self.assertEqual(reply, {"type": "ok", "id": 7})
            # we keep our sending side open: only half_close false closes the tunnel
            self.assertEqual(rest + recv_all(sock), b"bye")
            self.assertTunnelsClose()
            with self.assertRaises(OSError, msg="the agent closed its end entirely"):
                for _ in range(50):
                    sock.sendall(b"x" * 65536)
                    time.sleep(0.01)

    def test_a_host_that_stops_reading_leaves_the_agent_bounded(self):
        sent = [0]
        stop = threading.Event()

        def firehose(s):
            chunk = b"z" * 65536
            s.settimeout(1)
            while not stop.is_set():
                try:
                    sent[0] += s.send(chunk)
                except socket.timeout:
                    continue
                except OSError:
                    return
        srv = self.server(firehose)
        rss0 = self.agent.rss()
        before = self.stats()["tunnel_bytes_out"]
        reply, sock, _ = open_tunnel(self.agent, srv.port)
        with sock:
            self.assertEqual(reply["type"], "ok")
            # nothing is read; wait until the relay stalls
            last = [-1]

            def stalled():
                now = sent[0]
                same = now == last[0]
                last[0] = now
                return same and now > 0
            wait_until(stalled, T(30), interval=0.5, what="the server to block")
            out = self.stats()["tunnel_bytes_out"] - before
            growth = self.agent.rss() - rss0
            self.assertLess(sent[0], 32 * MiB, "the server was stopped by back-pressure")
            self.assertLess(out, 32 * MiB, "the agent relayed only what the sockets hold")
            self.assertLess(growth, (24 if ASAN else 4) * MiB, "agent RSS grew by %d" % growth)
            stop.set()
        self.assertTunnelsClose()


class Limits(TunnelCase):
    agent_args = ("--max-tunnels", "2")

    def test_tunnels_beyond_max_tunnels_are_too_many(self):
        def hold(s):
            recv_all(s)
        srv = self.server(hold)
        socks = []
        try:
            for _ in range(2):
                reply, sock, _ = open_tunnel(self.agent, srv.port)
                socks.append(sock)
                self.assertEqual(reply["type"], "ok")
            reply, sock, _ = open_tunnel(self.agent, srv.port)
            socks.append(sock)
            self.assertErrorReply(reply, "too_many")
        finally:
            for s in socks:
                s.close()
        self.assertTunnelsClose()
        reply, sock, _ = open_tunnel(self.agent, srv.port)
        sock.close()
        self.assertEqual(reply["type"], "ok", "room again once they closed")


def own_address():
    """A non-loopback IPv4 address of this machine, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))           # no packet is sent: picks the source address
        ip = s.getsockname()[0]
        return None if ip.startswith("127.") else ip
    except OSError:
        return None
    finally:
        s.close()


class Reach(TunnelCase):
    """--tunnel any (the default): loopback and the guest's own addresses."""

    def test_the_guests_own_address_is_reachable_and_other_hosts_are_not(self):
        ip = own_address()
        if not ip:
            self.skipTest("no non-loopback address on this machine")
        srv = self.server(lambda s: s.sendall(b"own"), host="0.0.0.0")
        reply, sock, rest = open_tunnel(self.agent, srv.port, host=ip)
        with sock:
            self.assertEqual(reply["type"], "ok", reply)
            self.assertEqual(rest + recv_all(sock), b"own")
        reply, sock, _ = open_tunnel(self.agent, srv.port, host="192.0.2.1")
        sock.close()
        self.assertErrorReply(reply, "EPERM")


class LoopbackOnly(TunnelCase):
    agent_args = ("--tunnel", "loopback")

    def test_loopback_works_and_the_guests_own_address_is_refused(self):
        srv = self.server(lambda s: s.sendall(b"lo"), host="0.0.0.0")
        reply, sock, rest = open_tunnel(self.agent, srv.port, host="127.0.0.1")
        with sock:
            self.assertEqual(reply["type"], "ok", reply)
            self.assertEqual(rest + recv_all(sock), b"lo")
        ip = own_address()
        if not ip:
            self.skipTest("no non-loopback address on this machine")
        reply, sock, _ = open_tunnel(self.agent, srv.port, host=ip)
        sock.close()
        self.assertErrorReply(reply, "EPERM")
        self.assertEqual(srv.accepted, 1, "the refused connect never reached the server")


class Off(TunnelCase):
    agent_args = ("--tunnel", "off")

    def test_no_capability_and_connect_is_refused(self):
        self.assertNotIn("tunnel", self.c.hello["capabilities"])
        srv = self.server(lambda s: s.sendall(b"no"))
        reply, sock, _ = open_tunnel(self.agent, srv.port)
        sock.close()
        self.assertErrorReply(reply, "EPERM")
        self.assertEqual(srv.accepted, 0)

    def test_sandboxctl_forward_says_the_agent_lacks_the_capability(self):
        need_ctl()
        p = subprocess.run([CTL_BIN, "-c", "unix:" + self.agent.sock_path, "forward", "0:80"],
                           capture_output=True, timeout=T(20))
        self.assertEqual(p.returncode, 2, p)
        self.assertIn(b"tunnel", p.stderr)


class TokenRequired(TunnelCase):
    """A tunnel opens only on an authenticated connection."""

    @classmethod
    def setUpClass(cls):
        cls.token_dir = tempfile.mkdtemp(prefix="sa-token-")
        cls.addClassCleanup(shutil.rmtree, cls.token_dir, True)
        cls.token_path = os.path.join(cls.token_dir, "token")
        with open(cls.token_path, "wb") as f:
            f.write(b"tunnel-secret\n")
        os.chmod(cls.token_path, 0o600)
        cls.agent_args = ("--token-file", cls.token_path)
        super().setUpClass()

    def test_connect_before_auth_is_refused_and_works_after(self):
        srv = self.server(lambda s: s.sendall(b"authed"))
        r = self.c.request("connect", port=srv.port)
        self.assertErrorReply(r, "auth_required")
        self.assertEqual(srv.accepted, 0)
        self.c.ok("auth", token=b"tunnel-secret")
        self.c.send({"type": "connect", "id": 77, "port": srv.port})
        self.assertEqual(self.c.recv(), {"type": "ok", "id": 77})

    def test_sandboxctl_forward_presents_the_token(self):
        need_ctl()
        srv = self.server(lambda s: s.sendall(b"via ctl"))
        argv = [CTL_BIN, "-c", "unix:" + self.agent.sock_path, "--token-file", self.token_path,
                "forward", "0:%d" % srv.port]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            port = int(p.stdout.readline().split()[1].rsplit(b":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=T(20)) as s:
                self.assertEqual(recv_all(s), b"via ctl")
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()


# --------------------------------------------------------------------------

class CtlForward(TunnelCase):
    """sandboxctl forward: many connections, real servers, restarts."""

    @classmethod
    def setUpClass(cls):
        need_ctl()
        super().setUpClass()

    def start_http_server(self, port, root):
        """`python3 -m http.server` as an agent command (in the "guest");
        its cmd id once it accepts connections."""
        r = self.c.ok("exec", argv=[sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                    str(port), "--directory", root], detached=True, stdin="null")

        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(up, T(20), what="http.server listening on %d" % port)
        return r["cmd"]

    def stop_cmd(self, cmd):
        self.c.ok("signal", cmd=cmd, signal=9)
        self.c.ok("wait", cmd=cmd, timeout=T(20))

    def http_get(self, port, path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=T(60))
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def test_it_prints_what_it_forwards_and_stops_on_sigterm(self):
        f = self.forward("0:3000", "127.0.0.1:0:4000")
        self.assertRegex(f.lines[0], r"^forwarding 127\.0\.0\.1:\d+ -> guest 127\.0\.0\.1:3000$")
        self.assertRegex(f.lines[1], r"^forwarding 127\.0\.0\.1:\d+ -> guest 127\.0\.0\.1:4000$")
        rc, err = f.stop()
        self.assertEqual(rc, 0, err)

    def test_many_concurrent_http_requests_to_an_http_server_in_the_guest(self):
        root = tempfile.mkdtemp(prefix="sa-www-")
        self.addCleanup(shutil.rmtree, root, True)
        files = {}
        for i in range(8):
            files["/f%d" % i] = os.urandom(1000 * (i + 1) * 37)
            with open(os.path.join(root, "f%d" % i), "wb") as fh:
                fh.write(files["/f%d" % i])
        gport = free_tcp_port()
        cmd = self.start_http_server(gport, root)
        self.addCleanup(self.stop_cmd, cmd)
        before = self.stats()["tunnels_total"]
        f = self.forward("0:%d" % gport)
        results, errors = [], []

        def worker(k):
            try:
                for j in range(4):
                    path = "/f%d" % ((k + j) % 8)
                    st, body = self.http_get(f.port, path)
                    results.append((st, body == files[path]))
            except Exception as e:
                errors.append(e)
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(32)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(T(120))
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 128)
        self.assertTrue(all(st == 200 and same for st, same in results), results)
        self.assertTunnelsClose()
        self.assertGreaterEqual(self.stats()["tunnels_total"] - before, 128)
        rc, err = f.stop()
        self.assertEqual(rc, 0, err)

    def test_the_server_restarting_midway(self):
        root = tempfile.mkdtemp(prefix="sa-www-")
        self.addCleanup(shutil.rmtree, root, True)
        with open(os.path.join(root, "x"), "wb") as fh:
            fh.write(b"version 1")
        gport = free_tcp_port()
        f = self.forward("0:%d" % gport)
        cmd = self.start_http_server(gport, root)
        self.assertEqual(self.http_get(f.port, "/x"), (200, b"version 1"))
        held = f.connect()                      # a connection open across the stop
        held.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n")
        self.stop_cmd(cmd)
        try:
            self.assertEqual(recv_all(held), b"", "the open connection closes with the server")
        except ConnectionResetError:
            pass
        held.close()
        # during the gap: accepted by sandboxctl, then closed without a byte
        for _ in range(3):
            with f.connect() as s:
                s.sendall(b"GET /x HTTP/1.0\r\n\r\n")
                try:
                    self.assertEqual(recv_all(s), b"")
                except ConnectionResetError:
                    pass
        self.assertIsNone(f.p.poll(), "forward survives refused connects")
        with open(os.path.join(root, "x"), "wb") as fh:
            fh.write(b"version 2")
        cmd = self.start_http_server(gport, root)
        self.addCleanup(self.stop_cmd, cmd)
        self.assertEqual(self.http_get(f.port, "/x"), (200, b"version 2"))
        rc, err = f.stop()
        self.assertEqual(rc, 0, err)
        self.assertIn(b"Connection refused", err, "each refused connect is reported")

    def test_websocket_echo(self):
        srv = self.server(ws_echo_handler)
        f = self.forward("0:%d" % srv.port)
        with f.connect() as s:
            ws_echo_exchange(self, s)
        self.assertEqual(srv.errors, [])

    def test_half_close_through_forward_both_directions(self):
        seen = {}

        def server(s):
            seen["req"] = recv_all(s)             # until the host's EOF
            s.sendall(b"len=%d" % len(seen["req"]))
        srv = self.server(server)
        f = self.forward("0:%d" % srv.port)
        with f.connect() as s:
            s.sendall(b"a" * 300000)
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(s), b"len=300000")

        def server2(s):
            s.sendall(b"first")
            s.shutdown(socket.SHUT_WR)
            seen["late"] = recv_all(s)
        srv2 = self.server(server2)
        f2 = self.forward("0:%d" % srv2.port)
        with f2.connect() as s:
            self.assertEqual(recv_all(s), b"first")
            s.sendall(b"still talking")
            s.shutdown(socket.SHUT_WR)
            wait_until(lambda: "late" in seen, T(10), what="the server to see our bytes and EOF")
        self.assertEqual(seen["late"], b"still talking")

    def test_over_firecracker_vsock_a_server_close_ends_the_tunnel(self):
        # Firecracker's hybrid vsock never passes a guest's half-close to the
        # host, so over fc: forward asks for half_close false: the server's
        # close must close the host's connection although the host still sends
        path = os.path.join(self.agent.tmp, "fc.sock")
        fc = FakeFirecracker(path, self.agent.sock_path, refuse=0)
        self.addCleanup(fc.close)
        srv = self.server(lambda s: s.sendall(b"served"))
        argv = [CTL_BIN, "-c", "fc:%s:1024" % path, "forward", "0:%d" % srv.port]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        self.addCleanup(p.stdout.close)
        self.addCleanup(p.stderr.close)
        port = int(p.stdout.readline().split()[1].rsplit(b":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=T(20)) as s:
            self.assertEqual(recv_all(s), b"served")
            self.assertTunnelsClose()

    def test_stdio_relays_stdin_and_stdout(self):
        def upper(s):
            s.sendall(recv_all(s).upper())
        srv = self.server(upper)
        p = subprocess.run([CTL_BIN, "-c", "unix:" + self.agent.sock_path, "forward", "--stdio",
                            str(srv.port)], input=b"over stdio " * 10000, capture_output=True,
                           timeout=T(30))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"OVER STDIO " * 10000)

    def test_stdio_to_a_closed_port_fails_with_the_error(self):
        p = subprocess.run([CTL_BIN, "-c", "unix:" + self.agent.sock_path, "forward", "--stdio",
                            str(free_tcp_port())], capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=T(30))
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"Connection refused", p.stderr)

    def test_bad_specs_are_usage_errors(self):
        for spec in ("80", "a:80", "1:2:3:4", "::1:80:90", "0:0", "70000:80", "[::1:80:90"):
            p = subprocess.run([CTL_BIN, "-c", "unix:" + self.agent.sock_path, "forward", spec],
                               capture_output=True, timeout=T(20))
            self.assertEqual(p.returncode, 2, (spec, p))


class Bulk(TunnelCase):
    """BULK bytes each way through sandboxctl forward, byte-exact."""

    @classmethod
    def setUpClass(cls):
        need_ctl()
        if ASAN:
            sys.stderr.write("\ntest_tunnel.Bulk: AddressSanitizer build: %d MiB each way "
                             "instead of 1024\n" % (BULK // MiB))
        super().setUpClass()

    def test_bulk_upload_to_the_guest_is_byte_exact(self):
        def digest(s):
            n, h = recv_digest(s)
            s.sendall(b"%d %s" % (n, h.encode()))
        srv = self.server(digest)
        f = self.forward("0:%d" % srv.port)
        with f.connect() as s:
            for b in bulk_blocks(BULK, b"up"):
                s.sendall(b)
            s.shutdown(socket.SHUT_WR)
            got = recv_all(s)
        self.assertEqual(got, b"%d %s" % (BULK, bulk_digest(BULK, b"up").encode()))
        self.assertEqual(srv.errors, [])

    def test_bulk_download_from_the_guest_is_byte_exact(self):
        def source(s):
            for b in bulk_blocks(BULK, b"down"):
                s.sendall(b)
        srv = self.server(source)
        f = self.forward("0:%d" % srv.port)
        with f.connect() as s:
            n, h = recv_digest(s)
        self.assertEqual(n, BULK)
        self.assertEqual(h, bulk_digest(BULK, b"down"))
        self.assertEqual(srv.errors, [])


if __name__ == "__main__":
    unittest.main()
