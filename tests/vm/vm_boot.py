#!/usr/bin/python3
"""vm_boot — boot the static sandbox-agent as PID 1 of a real kernel and drive
it from the host with sandboxctl (docs/testing.md, "The VM boot test").

  tests/vm/vm_boot.py --agent build-static/sandbox-agent --ctl build-static/sandboxctl \
                      [--work build-vm] [--timeout 240]

1. Debian's cloud kernel: `apt-get download` of the linux-image package that
   linux-image-cloud-amd64 points to (newest first; when the archive no
   longer serves that file, the versions before it, saying which was used),
   unpacked with dpkg-deb -x (never installed); cached in WORK/kernel.
2. An initramfs (newc cpio, gzip, written here): the static agent at
   /usr/sbin/sandbox-agent, Debian's busybox-static at /bin/busybox with its
   applets, /etc/passwd and /etc/group with root and vercel-sandbox (1000),
   /vercel/sandbox, the virtio-net modules, /dev/console, and /init: a
   symlink to the agent, which the kernel runs as PID 1. Debian's kernels
   have virtio-net as a module and no CONFIG_IP_PNP (no `ip=`), so the
   agent's own init mode loads the modules (`sandbox_agent.modules=`) and
   gives eth0 QEMU's user-network address (`sandbox_agent.net=`).
3. qemu-system-x86_64 under TCG, virtio-net on QEMU's user network with a
   hostfwd to the agent's TCP listener, which the kernel command line opens
   (`sandbox_agent.listen=tcp:10.0.2.15:7071`,
   `sandbox_agent.insecure_tcp_any_address=1` and, since the test has no
   token, `sandbox_agent.insecure_tcp=1`).
4. From the host: wait for the hello (timed from QEMU's start), check PID 1 is
   the agent, run commands (user, sudo, stdin, exit codes), read the agent's
   RSS inside the guest, upload and download a tree (the `files` capability
   is required), then the `shutdown` request: QEMU must exit 0.

Every step is bounded; QEMU is killed on any failure. Prints the hello time
and the guest RSS. Exit status 0 on success, 1 on failure.
"""

import argparse
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from agentlib import Client  # noqa: E402  (Debian's python3-msgpack)
# the kernel, the initramfs, run/log/Failure: shared with the qemu provisioner
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "gateway",
                                "provisioners"))
from vmlib import MODULES, Failure, build_initramfs, fetch_kernel, log, run  # noqa: E402

GUEST_IP = "10.0.2.15"
AGENT_PORT = 7071


# ---- the host side -------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port, timeout):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return Client(sock=s, timeout=timeout)
    except BaseException:
        s.close()
        raise


def guest_ready_time(console):
    """The guest kernel's timestamp of the agent's "ready" log line, or None."""
    try:
        with open(console, "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if "sandbox-agent: info: sandbox-agent" in line and " ready: " in line and line.startswith("["):
                    return float(line[1:line.index("]")])
    except (OSError, ValueError):
        pass
    return None


def wait_hello(port, qemu, deadline):
    last = None
    while time.monotonic() < deadline:
        if qemu.poll() is not None:
            raise Failure("QEMU exited with %d before the agent answered" % qemu.returncode)
        try:
            # 1 s per try: a try that reaches no listener ends at once (reset)
            # or, before the guest has a network, when this timeout runs out
            with connect(port, 1) as c:
                c.ping(timeout=5)
                return c.hello
        except (OSError, ConnectionError, AssertionError) as e:
            last = e
        time.sleep(0.2)
    raise Failure("no hello before the deadline (last error: %r)" % (last,))


class Ctl:
    def __init__(self, ctl, port):
        self.ctl = ctl
        self.addr = "tcp:127.0.0.1:%d" % port

    def __call__(self, *args, stdin=b"", timeout=60, check=True):
        r = subprocess.run([self.ctl, "-c", self.addr] + list(args), input=stdin,
                           capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            raise Failure("sandboxctl %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                          r.stderr.decode(errors="replace")))
        return r


def expect(cond, what):
    if not cond:
        raise Failure(what)
    log("ok: " + what)


def check_commands(ctl):
    r = ctl("exec", "--", "/bin/busybox", "uname", "-a")
    expect(r.stdout.startswith(b"Linux vmtest "), "uname in the guest: %s" % r.stdout.decode().strip())
    exe = ctl("exec", "--sudo", "--", "readlink", "/proc/1/exe").stdout.decode().strip()
    expect(exe == "/usr/sbin/sandbox-agent", "PID 1 is the agent, started as the kernel's /init "
                                             "(/proc/1/exe: %s)" % exe)
    r = ctl("exec", "--", "id")
    expect(r.stdout.startswith(b"uid=1000(vercel-sandbox) gid=1000(vercel-sandbox)"),
           "commands run as vercel-sandbox: %s" % r.stdout.decode().strip())
    r = ctl("exec", "--", "pwd")
    expect(r.stdout == b"/vercel/sandbox\n", "in /vercel/sandbox")
    r = ctl("exec", "--sudo", "--", "id", "-u")
    expect(r.stdout == b"0\n", "--sudo runs as root")
    r = ctl("exec", "--", "tr", "a-z", "A-Z", stdin=b"hello from the host\n")
    expect(r.stdout == b"HELLO FROM THE HOST\n", "stdin reaches a command")
    r = ctl("exec", "--", "sh", "-c", "echo err >&2; exit 3", check=False)
    expect(r.returncode == 3 and r.stderr == b"err\n", "exit code and stderr")
    blob = os.urandom(1 << 20)
    r = ctl("exec", "--", "sha256sum", stdin=blob)
    expect(r.stdout.split()[0].decode() == hashlib.sha256(blob).hexdigest(), "1 MiB of stdin, byte-exact")
    r = ctl("exec", "--", "sh", "-c", "mount | grep -c -E ' /(proc|sys|dev|tmp) '")
    expect(int(r.stdout) >= 4, "the agent mounted /proc, /sys, /dev, /tmp")
    status = ctl("exec", "--", "cat", "/proc/1/status").stdout.decode()
    fields = dict(l.split(":", 1) for l in status.splitlines() if ":" in l)
    return int(fields["VmRSS"].split()[0])


def make_tree(root):
    files = {
        "a.txt": b"alpha\n",
        "dir/b.bin": os.urandom(100000),
        "dir/sub/c.txt": b"gamma\n" * 1000,
        "dir/empty": b"",
    }
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    return files


def check_files(ctl, hello, tmp):
    expect("files" in hello.get("capabilities", []), "the agent has the files capability")
    src = os.path.join(tmp, "tree")
    files = make_tree(src)
    ctl("upload", "-p", src, "/vercel/sandbox/up", timeout=120)    # a directory: its contents
    r = ctl("exec", "--", "sh", "-c", "cd /vercel/sandbox/up && find . -type f | sort")
    got = sorted(l[2:] for l in r.stdout.decode().split())
    expect(got == sorted(files), "upload: the tree is in the guest (%d files)" % len(got))
    r = ctl("exec", "--", "stat", "-c", "%U", "/vercel/sandbox/up/dir/sub/c.txt")
    expect(r.stdout == b"vercel-sandbox\n", "uploaded files belong to vercel-sandbox")
    for rel, data in files.items():
        r = ctl("exec", "--", "sha256sum", "/vercel/sandbox/up/" + rel)
        expect(r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest(), "upload: %s intact" % rel)
    for gz in (False, True):
        args = ["download"] + (["-z"] if gz else []) + ["/vercel/sandbox/up"]
        r = ctl(*args, timeout=120)
        with tarfile.open(fileobj=io.BytesIO(r.stdout), mode="r:gz" if gz else "r:") as t:
            members = {m.name: m for m in t.getmembers() if m.isfile()}
            for rel, data in files.items():
                name = next((n for n in members if n == "up/" + rel or n.endswith("/up/" + rel)), None)
                expect(name is not None, "download%s: %s in the archive" % (" -z" if gz else "", rel))
                expect(t.extractfile(members[name]).read() == data,
                       "download%s: %s intact" % (" -z" if gz else "", rel))


def check_tunnel(ctl, guest_port=8080):
    """A server inside the VM (busybox httpd on the guest's loopback only)
    reached from the host through the agent's `connect` tunnel with
    `sandboxctl forward` (issue 14): one HTTP response, byte-exact."""
    import http.client
    body = b"hello through the tunnel\n"
    # in the workdir (/vercel/sandbox)
    ctl("exec", "--", "sh", "-c", "mkdir -p www && printf 'hello through the tunnel\\n' > www/index.html")
    httpd = ctl("exec", "--detach", "--", "busybox", "httpd", "-f", "-p",
                "127.0.0.1:%d" % guest_port, "-h", "www").stdout.decode().strip()
    fwd = subprocess.Popen([ctl.ctl, "-c", ctl.addr, "forward", "0:%d" % guest_port],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = fwd.stdout.readline().decode().strip()
        if not line.startswith("forwarding "):
            raise Failure("sandboxctl forward printed %r: %s" % (line, fwd.stderr.read().decode()))
        port = int(line.split()[1].rsplit(":", 1)[1])
        deadline = time.monotonic() + 30        # httpd may still be starting: refused, retried
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
                conn.request("GET", "/index.html")
                r = conn.getresponse()
                status, got = r.status, r.read()
                conn.close()
                break
            except (OSError, http.client.HTTPException) as e:
                if time.monotonic() > deadline:
                    raise Failure("no HTTP response through the tunnel: %r" % (e,))
                time.sleep(0.5)
        expect(status == 200 and got == body, "an HTTP request through sandboxctl forward reached "
               "busybox httpd on the guest's 127.0.0.1:%d (%s)" % (guest_port, line))
    finally:
        fwd.terminate()
        try:
            fwd.wait(10)
        except subprocess.TimeoutExpired:
            fwd.kill()
            fwd.wait()
        fwd.stdout.close()
        fwd.stderr.close()
    ctl("kill", httpd)


def expect_poweroff(qemu, timeout):
    """After a `shutdown` request: QEMU must exit 0 within timeout seconds."""
    t0 = time.monotonic()
    try:
        rc = qemu.wait(timeout)
    except subprocess.TimeoutExpired:
        raise Failure("QEMU still running %d s after the shutdown request" % timeout)
    expect(rc == 0, "QEMU exited %d after the shutdown request (%.1f s)" % (rc, time.monotonic() - t0))


def shutdown(port, qemu, timeout):
    with connect(port, 10) as c:
        c.ok("shutdown", timeout=10)
    expect_poweroff(qemu, timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--work", default="build-vm")
    ap.add_argument("--timeout", type=float, default=240, help="the whole test, seconds")
    ap.add_argument("--memory", default="512")
    o = ap.parse_args()
    t_start = time.monotonic()
    deadline = t_start + o.timeout
    os.makedirs(o.work, exist_ok=True)
    kernel, version, mods = fetch_kernel(o.work)
    if "statically linked" not in run(["file", "-L", o.agent]).stdout.decode():
        raise Failure("%s is not statically linked" % o.agent)
    initrd = os.path.join(o.work, "initramfs.cpio.gz")
    build_initramfs(initrd, o.agent, o.busybox, mods)
    log("kernel %s, initramfs %d KiB" % (version, os.path.getsize(initrd) >> 10))
    port = free_port()
    console = os.path.join(o.work, "console.log")
    append = ("console=ttyS0 panic=-1 loglevel=7 printk.devkmsg=on "
              "sandbox_agent.listen=tcp:%s:%d sandbox_agent.hostname=vmtest "
              "sandbox_agent.insecure_tcp_any_address=1 sandbox_agent.insecure_tcp=1 "
              "sandbox_agent.modules=%s sandbox_agent.net=eth0,%s/24,10.0.2.2"
              % (GUEST_IP, AGENT_PORT, ",".join("/lib/modules/%s.ko" % m for m in MODULES),
                 GUEST_IP))
    argv = ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", o.memory, "-smp", "1",
            "-display", "none", "-monitor", "none", "-serial", "file:" + console, "-no-reboot",
            "-kernel", kernel, "-initrd", initrd, "-append", append,
            "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:%d-%s:%d" % (port, GUEST_IP, AGENT_PORT),
            "-device", "virtio-net-pci,netdev=n0"]
    tmp = tempfile.mkdtemp(prefix="sa-vm-")
    t_qemu = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        hello = wait_hello(port, qemu, min(deadline, t_qemu + 180))
        hello_s = time.monotonic() - t_qemu
        log("hello from %s after %.2f s (QEMU start to hello, TCG)" % (hello.get("agent"), hello_s))
        ctl = Ctl(o.ctl, port)
        expect(ctl("ping").returncode == 0, "sandboxctl ping over QEMU's user network")
        rss_kib = check_commands(ctl)
        stats = ctl("stats").stdout.decode()
        check_files(ctl, hello, tmp)
        check_tunnel(ctl)
        d = ctl("exec", "--detach", "--", "sleep", "1000")   # the shutdown must end it
        expect(d.stdout.strip().isdigit(), "a detached command runs during the shutdown")
        shutdown(port, qemu, max(5, min(60, deadline - time.monotonic())))
        agent_line = next((l for l in stats.splitlines() if l.startswith("agent")), "")
        ready = guest_ready_time(console)
        if ready is not None:
            print("vm_boot: the agent logged 'ready' at %.2f s of the guest kernel's clock" % ready)
        print("\nvm_boot: RESULT hello %.2f s after QEMU start; agent (PID 1) VmRSS %d KiB in the guest; "
              "upload/download checked; total %.1f s" % (hello_s, rss_kib,
                                                         time.monotonic() - t_start))
        print("vm_boot: stats: " + agent_line.strip())
        return 0
    except (Failure, subprocess.TimeoutExpired, OSError, AssertionError) as e:
        print("vm_boot: FAILED: %s" % e, file=sys.stderr)
        try:
            with open(console, "rb") as f:
                tail = f.read().decode(errors="replace").splitlines()[-60:]
            print("---- guest console (%s) ----\n%s\n----" % (console, "\n".join(tail)), file=sys.stderr)
        except OSError:
            pass
        return 1
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait(10)
        out = qemu.stdout.read().decode(errors="replace").strip()
        if out:
            print("qemu: " + out, file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
