"""provlib — what the provisioners in this directory (local, qemu) share:
session ids, private directories, the processes they start (recorded with
their start time, so a recycled pid is never signalled), and the agent's
first frame as a readiness probe."""

import os
import re
import signal
import struct
import sys
import time

SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HELLO_MAX = 1 << 20          # the protocol's default max_frame bounds the hello


def die(name, msg, code=1):
    print(f"{name}: {msg}", file=sys.stderr)
    sys.exit(code)


def start_timeout(name, default):
    """SANDBOX_GATEWAY_START_TIMEOUT (seconds), else default."""
    try:
        return float(os.environ.get("SANDBOX_GATEWAY_START_TIMEOUT") or default)
    except ValueError:
        die(name, "SANDBOX_GATEWAY_START_TIMEOUT must be a number of seconds")


def mkdir_private(path, mode, uid=0, gid=0):
    """Create path (not there before) with mode and owner, through its fd."""
    os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def ensure_dir(path):
    """path and its parents, 0755 when made here (others must traverse it)."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o755)


def write_private(path, text):
    """A new root-only file (0600) holding text."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def proc_start_time(pid):
    """The start time (field 22 of /proc/PID/stat) of a live process, None when
    there is none or only its zombie (once create has exited, whoever inherits
    the process reaps it, maybe later)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def spawn(argv, log_path):
    """Start argv in its own session (not in the gateway's process group: it
    outlives the provisioner), stdin /dev/null, stdout+stderr to a new
    root-only log. Returns the pid."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(log)
    os.close(null)
    return pid


def exited(pid, start):
    """True once the process is gone (reaped here when it is our child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    return proc_start_time(pid) != start


def wait_gone(pid, start, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited(pid, start):
            return True
        time.sleep(0.02)
    return exited(pid, start)


def terminate(pid, start, grace):
    """SIGTERM, SIGKILL after grace seconds; nothing when the process is gone."""
    if exited(pid, start):
        return
    os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, start, grace):
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, start, 5)


def log_tail(name, path, n=2048):
    """The end of a log on stderr, for the gateway's log."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            tail = f.read().decode(errors="replace").strip()
        if tail:
            print(f"{name}: {os.path.basename(path)}: {tail}", file=sys.stderr)
    except OSError:
        pass


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("the agent closed the connection")
        data += chunk
    return data


def recv_frame(sock):
    """One frame's payload, at most HELLO_MAX bytes."""
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    if n == 0 or n > HELLO_MAX:
        raise ConnectionResetError(f"a frame of {n} bytes")
    return recv_exact(sock, n)


def is_hello(payload):
    """Readiness only (the gateway decodes the hello itself): a map whose
    first key "type" is the str "hello", as the agent always writes it."""
    return b"\xa4type\xa5hello" in payload[:16]
