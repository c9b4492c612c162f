#!/usr/bin/python3
"""gw_bench — bench/run's item 9: sandbox-gateway next to the direct agent.

  gw_bench.py exec PORT TOKEN_FILE N     N x runCommand("/bin/true") through
                                         the gateway, on one keep-alive
                                         connection, as the SDK sends it
                                         (POST /cmd {wait:true}, the NDJSON
                                         body read to its end); p50/p90/p99
  gw_bench.py logs PORT TOKEN_FILE BYTES BYTES of stdout (`head -c BYTES
                                         /dev/zero | tr '\\0' a`, the same
                                         command as `sa-bench text`) read
                                         through GET /cmd/ID/logs, MiB/s of
                                         command output from its first byte
                                         to the end of the stream

Each creates its own session (the gateway runs with --pool on the agent
under test) and stops it at the end. Prints `key value` lines like sa-bench.
The client is Python's http.client: its own cost per request is measured
too (`gw_floor_*`: GET of the session, which the gateway answers from its
state without the agent), so that what the gateway adds can be told apart.
"""

import http.client
import json
import math
import sys
import time

TEAM = "?teamId=team_bench"


class Gw:
    def __init__(self, port, token_file):
        with open(token_file) as f:
            token = f.read().strip()
        self.conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=600)
        self.headers = {"content-type": "application/json", "authorization": "Bearer " + token}

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path + TEAM, body=data, headers=self.headers)
        return self.conn.getresponse()

    def json(self, method, path, body=None):
        r = self.request(method, path, body)
        payload = r.read()
        if r.status != 200:
            sys.exit(f"gw_bench: {method} {path}: {r.status} {payload[:300]!r}")
        return json.loads(payload)

    def session(self):
        sid = self.json("POST", "/v3/sandboxes", {"timeout": 3600000})["session"]["id"]
        return f"/v2/sandboxes/sessions/{sid}"


def pct(samples, p):
    """The nearest-rank percentile, as sa-bench computes it."""
    s = sorted(samples)
    return s[min(len(s), max(1, math.ceil(p / 100 * len(s)))) - 1]


def report(name, samples_ns):
    for p in (50, 90, 99):
        print(f"{name}_p{p}_us {pct(samples_ns, p) / 1000:.0f}")


def bench_exec(gw, n):
    base = gw.session()
    cmd = {"command": "/bin/true", "args": [], "env": {}, "sudo": False, "wait": True,
           "logs": True}
    runs, floor = [], []
    for i in range(n + 50):             # 50 warm-ups, as sa-bench
        t0 = time.perf_counter_ns()
        r = gw.request("POST", base + "/cmd", cmd)
        body = r.read()
        t1 = time.perf_counter_ns()
        g = gw.request("GET", base)
        g.read()
        t2 = time.perf_counter_ns()
        last = json.loads(body.splitlines()[-1])
        if r.status != 200 or last["command"]["exitCode"] != 0 or g.status != 200:
            sys.exit(f"gw_bench: run {i}: {r.status} {body[-300:]!r}")
        if i >= 50:
            runs.append(t1 - t0)
            floor.append(t2 - t1)
    report("gw_exec", runs)
    report("gw_floor", floor)
    gw.json("POST", base + "/stop")


def bench_logs(gw, nbytes):
    base = gw.session()
    # the log follower attaches before the first byte (the sleep), so the
    # whole output goes through the live stream, never only the retained log
    cmd = {"command": "sh", "args": ["-c", f"sleep 0.5; head -c {nbytes} /dev/zero | tr '\\0' a"]}
    cid = gw.json("POST", base + "/cmd", cmd)["command"]["id"]
    r = gw.request("GET", f"{base}/cmd/{cid}/logs")
    if r.status != 200:
        sys.exit(f"gw_bench: logs: {r.status}")
    got = lines = 0
    first = None
    while True:
        chunk = r.read1(1 << 20)
        if not chunk:
            break
        if first is None:
            first = time.perf_counter_ns()
        # each line is {"stream":"stdout","data":"aaa..."}: 3 'a's of its own
        got += chunk.count(b"a")
        lines += chunk.count(b"\n")
    t1 = time.perf_counter_ns()
    got -= 3 * lines
    if got != nbytes:
        sys.exit(f"gw_bench: logs delivered {got} bytes, {nbytes} expected")
    secs = (t1 - first) / 1e9
    print(f"gw_logs_secs {secs:.4f}")
    print(f"gw_logs_mib_s {nbytes / secs / (1 << 20):.1f}")
    print(f"gw_logs_lines {lines}")
    gw.json("POST", base + "/stop")


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("exec", "logs"):
        sys.exit(__doc__)
    gw = Gw(sys.argv[2], sys.argv[3])
    (bench_exec if sys.argv[1] == "exec" else bench_logs)(gw, int(sys.argv[4]))


if __name__ == "__main__":
    main()
