#!/usr/bin/python3
"""Write the seed corpus of fuzz_client (tests/fuzz/corpus/client/): byte
streams an agent could send on one connection — a hello, then replies and
events — well-formed ones and the hostile shapes the client must bound.
Run from anywhere: /usr/bin/python3 tests/fuzz/make_client_corpus.py"""
import os
import struct

import msgpack

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "client")


def frame(obj):
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def hello(**kw):
    h = {"type": "hello", "protocol": 1, "agent": "sandbox-agent 0.1.0",
         "capabilities": ["exec", "stdin", "signal", "pty", "logs", "files"],
         "boot_id": "b0", "user": "vercel-sandbox", "workdir": "/vercel/sandbox",
         "dev": False, "max_frame": 1048576, "stdin_window": 1048576, "generation": 0}
    h.update(kw)
    return frame(h)


OK_PING = frame({"type": "ok", "id": 1, "time_ms": 1764982800000})
OUTPUT = frame({"type": "output", "id": 2, "cmd": 7, "stream": "stdout", "offset": 0,
                "data": b"hello \xe2\x82"})
EXIT = frame({"type": "exit", "id": 2, "cmd": 7, "code": 0, "signal": 0, "duration_ms": 3,
              "timed_out": False, "stdout_bytes": 8, "stderr_bytes": 0})
LIST = frame({"type": "ok", "id": 3, "commands": [
    {"cmd": 7, "argv": ["sh", "-c", "echo 'x'"], "started_ms": 1, "exit": None},
    {"cmd": 8, "argv": ["\x1b[2J", b"\xff"], "duration_ms": 5}]})
DATA = frame({"type": "data", "id": 4, "offset": 0, "data": b"\x00\x01binary"})

SEEDS = {
    "session": hello() + OK_PING + OUTPUT + EXIT + LIST + DATA + frame({"type": "end", "id": 4}),
    "error-reply": hello() + frame({"type": "error", "id": 1, "code": "ENOENT",
                                    "message": "exec nope: \x1b]0;title\x07", "stage": "exec"}),
    "refused": frame({"type": "error", "code": "auth_required", "message": "token"}),
    "auth": hello(auth_required=True) + frame({"type": "ok", "id": 1}) +
    frame({"type": "ok", "id": 2}),
    "auth-refused": hello(auth_required=True) + frame({"type": "error", "id": 1,
                                                       "code": "auth_required"}),
    "max-frame-4g": hello(max_frame=1 << 32) + OK_PING,
    "max-frame-u64": hello(max_frame=(1 << 64) - 1, stdin_window=-1) + OK_PING,
    "huge-header": hello() + struct.pack(">I", 0xFFFFFFFF),
    "zero-header": hello() + struct.pack(">I", 0),
    "nul-workdir": hello(workdir="/w\0/x") + OK_PING,
    "long-agent": hello(agent="a" * 5000) + OK_PING,
    "many-caps": hello(capabilities=["c"] * 300) + OK_PING,
    "wrong-types": hello(agent=7, capabilities="exec", user=["x"], max_frame="big",
                         dev="yes") + frame({"type": "ok", "id": "1"}) +
    frame({"type": "output", "cmd": -1, "offset": 1.5, "data": 3}) + OK_PING,
    "flood-then-reply": hello() + OUTPUT * 20 + OK_PING,
    "protocol-2": frame({"type": "hello", "protocol": 2}),
    "truncated": (hello() + OK_PING)[:-3],
}

os.makedirs(HERE, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)
