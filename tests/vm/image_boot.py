#!/usr/bin/python3
"""image_boot — our .deb installed into a debootstrapped Debian 12 root, booted
with systemd as init under QEMU, driven from the host (docs/testing.md, "The
image test"; docs/packaging.md, "Baking the agent into an image").

  tests/vm/image_boot.py --deb build-pkg/sandbox-agent_VERSION-1_amd64.deb \
                         --ctl build-static/sandboxctl [--work build-image] [--timeout 900]

1. The kernel: Debian's cloud kernel, fetched and cached exactly as the VM boot
   test does (vmlib.fetch_kernel), in WORK/kernel-PACKAGE_VERSION.
2. The root, cached in WORK/root-KEY (KEY: a hash of the recipe, debootstrap's
   version, the mirror, and the versions apt sees of systemd-sysv, sudo and the
   kernel package): `debootstrap --variant=minbase --include=systemd-sysv,sudo
   bookworm` from the machine's Debian mirror, the kernel package's modules in
   /lib/modules, apt's caches and lists dropped, hostname `sandbox`.
3. Every run: a copy of that root, our .deb installed with `dpkg --root`
   (its post-install script creates the user, the workdir and enables the
   unit), the image's agent settings (a TCP listener for QEMU's user network
   and a root-only token file in /etc/sandbox-agent), then an ext4 image made
   with `mkfs.ext4 -d` (no loop device, no mount).
4. A tiny initramfs (newc cpio written here): Debian's busybox-static as
   /init's shell, the virtio modules with their dependencies (the cloud
   kernel has virtio_pci, virtio_blk and virtio_net as modules; ext4 is built
   in). /init loads them, gives eth0 QEMU's user-network address, mounts
   /dev/vda and switch_root's to /sbin/init: systemd.
5. qemu-system-x86_64 -accel tcg, the disk on virtio-blk, virtio-net with a
   hostfwd to the agent's port. From the host, with the token: the unit is
   active/running (Type=notify: READY=1 arrived) and its MainPID is the agent
   that runs the commands, under systemd as PID 1; commands run as
   vercel-sandbox (the uid sysusers gave) in /vercel/sandbox (tmpfiles, owned
   by it); --sudo and `sudo -n` through the shipped drop-in; an upload and
   download round trip; SIGKILL to the agent: systemd restarts it and it
   answers again; `shutdown`: the agent asks systemd to power off, QEMU exits
   0 and the kernel said "Power down".

Prints the timings (root build when cold, QEMU start to hello, the unit's
activation on the guest's clock) and the agent's RSS. Every step is bounded;
QEMU is killed on any failure and the console's tail printed. Exit 0 on
success, 1 on failure.
"""

import argparse
import glob
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vm_boot  # noqa: E402  (the host-side helpers)
from vm_boot import expect  # noqa: E402
import vmlib  # noqa: E402  (the kernel, the cpio writer; vm_boot put it on the path)
from vmlib import Failure, run  # noqa: E402

GUEST_IP = "10.0.2.15"
AGENT_PORT = 7071
SUITE = "bookworm"
PACKAGES = ["systemd-sysv", "sudo"]
# Bump when the root's recipe below changes: the cached roots are rebuilt.
RECIPE = "1"
# Loaded by the initramfs, with their dependencies first (from .modinfo).
INITRD_MODULES = ["virtio_pci", "virtio_blk", "virtio_net"]
INITRD_APPLETS = ["sh", "mount", "umount", "insmod", "ip", "sleep", "mkdir", "switch_root",
                  "poweroff", "echo", "cat"]
TOKEN_FILE = "/etc/sandbox-agent/token"


vmlib.set_log_prefix("image_boot")   # vmlib's and vm_boot's reports name this test
log = vmlib.log


def candidate(pkg):
    out = run(["apt-cache", "show", "--no-all-versions", pkg]).stdout.decode()
    m = re.search(r"^Version: (\S+)$", out, re.M)
    if not m:
        raise Failure("apt knows no version of %s (apt-get update?)" % pkg)
    return m.group(1)


def kernel_package():
    deps = run(["apt-cache", "depends", "linux-image-cloud-amd64"]).stdout.decode()
    pkg = next((l.split(":", 1)[1].strip() for l in deps.splitlines()
                if l.strip().startswith("Depends: linux-image-")), None)
    if not pkg:
        raise Failure("linux-image-cloud-amd64 names no kernel package (apt-get update?)")
    return pkg


def mirror():
    """The machine's Debian mirror (deb822 or one-line sources), for debootstrap."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            for stanza in f.read().split("\n\n"):
                fields = dict(l.split(":", 1) for l in stanza.splitlines()
                              if ":" in l and not l.startswith("#"))
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and SUITE in suites:
                    return fields["URIs"].split()[0].strip()
    try:
        with open("/etc/apt/sources.list") as f:
            for l in f:
                w = l.split()
                if len(w) >= 3 and w[0] == "deb" and w[2] == SUITE:
                    return w[1]
    except OSError:
        pass
    return "http://deb.debian.org/debian"


def prune(work, prefix, keep):
    """Cached roots and kernels of other keys go (one of each is kept)."""
    for d in glob.glob(os.path.join(work, prefix + "*")):
        if os.path.basename(d) != keep:
            shutil.rmtree(d, ignore_errors=True)


# ---- the kernel and the root (cached) ---------------------------------------------

def get_kernel(work):
    pkg = kernel_package()
    name = "kernel-%s_%s" % (pkg, candidate(pkg))
    prune(work, "kernel-", name)
    kernel, version, _ = vmlib.fetch_kernel(os.path.join(work, name))
    return kernel, version, name, os.path.join(work, name, "kernel", "x", "lib", "modules", version)


def build_root(work, kernel_key, moddir, version, deadline):
    url = mirror()
    key_src = "\n".join([RECIPE, SUITE, url, run(["dpkg-query", "-W", "debootstrap"]).stdout.decode(),
                         kernel_key] + ["%s=%s" % (p, candidate(p)) for p in PACKAGES])
    name = "root-" + hashlib.sha256(key_src.encode()).hexdigest()[:16]
    root = os.path.join(work, name)
    if os.path.exists(os.path.join(root, ".done")):
        log("cached root %s" % root)
        return root, 0.0
    prune(work, "root-", "")
    t0 = time.monotonic()
    log("debootstrap --variant=minbase --include=%s %s from %s" % (",".join(PACKAGES), SUITE, url))
    tmp = root + ".tmp"
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE, tmp, url],
        timeout=max(30, deadline - time.monotonic()))
    # the kernel package's modules, so that modprobe works in the booted system
    os.makedirs(os.path.join(tmp, "lib", "modules"), exist_ok=True)
    run(["cp", "-a", moddir, os.path.join(tmp, "lib", "modules", version)], timeout=120)
    # what an image does not need: apt's downloaded packages and lists
    for d in ("var/cache/apt", "var/lib/apt/lists"):
        for p in glob.glob(os.path.join(tmp, d, "*")):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
    with open(os.path.join(tmp, "etc", "hostname"), "w") as f:
        f.write("sandbox\n")
    with open(os.path.join(tmp, "etc", "hosts"), "w") as f:
        f.write("127.0.0.1 localhost\n127.0.1.1 sandbox\n")
    with open(os.path.join(tmp, "etc", "machine-id"), "w") as f:
        f.write(os.urandom(16).hex() + "\n")     # not the build machine's; no first-boot prompts
    with open(os.path.join(tmp, "etc", "fstab"), "w") as f:
        f.write("/dev/vda / ext4 rw 0 1\n")
    open(os.path.join(tmp, ".done"), "w").close()
    os.rename(tmp, root)
    return root, time.monotonic() - t0


def install_agent(base, stage, deb, token):
    """A copy of the cached root with the package installed and configured as an
    image builder would: the conffile's listener and token edited."""
    shutil.rmtree(stage, ignore_errors=True)
    run(["cp", "-a", base, stage], timeout=300)
    os.unlink(os.path.join(stage, ".done"))
    r = run(["dpkg", "--root=" + stage, "-i", os.path.abspath(deb)], timeout=120)
    log("dpkg --root: %s" % r.stdout.decode().strip().splitlines()[-1])
    conf = os.path.join(stage, "etc", "sandbox-agent", "agent.conf")
    with open(conf) as f:
        text = f.read()
    if "\nlisten = vsock:7071\n" not in text:
        raise Failure("the shipped agent.conf has no `listen = vsock:7071` line")
    # QEMU here has no vhost-vsock: QEMU's user network and a hostfwd stand in
    # for Firecracker's vsock, so the listener is TCP, with a token.
    text = text.replace("\nlisten = vsock:7071\n",
                        "\nlisten = tcp:%s:%d\ninsecure-tcp-any-address = true\n"
                        "token-file = %s\n" % (GUEST_IP, AGENT_PORT, TOKEN_FILE))
    with open(conf, "w") as f:
        f.write(text)
    fd = os.open(os.path.join(stage, TOKEN_FILE.lstrip("/")), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    # No login on the serial console: minbase has no udev, so systemd would
    # wait 90 s for dev-ttyS0.device and fill the console with that job.
    os.symlink("/dev/null", os.path.join(stage, "etc", "systemd", "system", "serial-getty@ttyS0.service"))


def make_disk(stage, disk, size_mib=1536):
    if os.path.exists(disk):
        os.unlink(disk)
    run(["mkfs.ext4", "-q", "-F", "-L", "sandbox-root", "-d", stage, disk, "%dM" % size_mib], timeout=300)


# ---- the initramfs ------------------------------------------------------------

def module_order(moddir, wanted):
    """Module names and files, every module after its dependencies (.modinfo)."""
    paths = {}
    for root, _, files in os.walk(moddir):
        for f in files:
            if f.endswith(".ko"):
                paths[f[:-3].replace("-", "_")] = os.path.join(root, f)
    order = []

    def visit(m, path):
        if m in order:
            return
        if m not in paths:
            raise Failure("module %s (wanted by %s) is not in %s" % (m, "/".join(path), moddir))
        with open(paths[m], "rb") as f:
            info = re.search(rb"\0depends=([^\0]*)\0", f.read())
        for d in (info.group(1).decode().split(",") if info else []):
            if d:
                visit(d.replace("-", "_"), path + [m])
        order.append(m)

    for m in wanted:
        visit(m, [])
    return [(m, paths[m]) for m in order]


INIT = """#!/bin/sh
# The image test's initramfs: the virtio modules, eth0, the ext4 root, systemd.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in %(modules)s; do insmod /lib/modules/$m.ko || echo "initramfs: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
# QEMU's user network stands in for vsock: the address before systemd starts
# the agent (its unit runs early, before any network service)
ip link set eth0 up && ip addr add %(ip)s/24 dev eth0 && ip route add default via 10.0.2.2 ||
    echo "initramfs: eth0 not configured"
mkdir -p /root
mount -t ext4 -o rw /dev/vda /root || { echo "initramfs: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys /dev
exec switch_root /root /sbin/init
echo "initramfs: switch_root failed"
poweroff -f
"""


def build_initramfs(path, busybox, mods):
    c = vmlib.Cpio()
    for d in ("bin", "dev", "proc", "sys", "root", "lib", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    with open(busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    for a in INITRD_APPLETS:
        c.symlink("bin/" + a, "busybox")
    for m, p in mods:
        with open(p, "rb") as f:
            c.file("lib/modules/%s.ko" % m, f.read())
    c.file("init", (INIT % {"modules": " ".join(m for m, _ in mods), "ip": GUEST_IP}).encode(), 0o755)
    with open(path, "wb") as f:
        f.write(gzip.compress(c.finish(), 6))


# ---- the host side --------------------------------------------------------------

def connect(port, token, timeout):
    c = vm_boot.connect(port, timeout)
    try:
        expect_hello = c.hello.get("auth_required") is True
        c.ok("auth", token=token.encode(), timeout=timeout)
    except BaseException:
        c.close()
        raise
    return c, expect_hello


def wait_agent(port, token, qemu, deadline, what):
    last = None
    while time.monotonic() < deadline:
        if qemu.poll() is not None:
            raise Failure("QEMU exited with %d before the agent answered (%s)" % (qemu.returncode, what))
        try:
            c, auth_required = connect(port, token, 2)
            with c:
                c.ping(timeout=5)
                return c.hello, auth_required
        except (OSError, ConnectionError, AssertionError) as e:
            last = e
        time.sleep(0.2)
    raise Failure("no hello before the deadline (%s; last error: %r)" % (what, last))


def unit_props(ctl):
    r = ctl("exec", "--sudo", "--", "systemctl", "show", "-p",
            "ActiveState,SubState,Type,MainPID,NRestarts,ActiveEnterTimestampMonotonic,UnitFileState",
            "sandbox-agent.service")
    return dict(l.split("=", 1) for l in r.stdout.decode().splitlines() if "=" in l)


def check_systemd(ctl):
    comm = ctl("exec", "--", "cat", "/proc/1/comm").stdout.decode().strip()
    expect(comm == "systemd", "PID 1 is systemd (/proc/1/comm: %s)" % comm)
    p = unit_props(ctl)
    expect(p.get("Type") == "notify" and p.get("ActiveState") == "active" and p.get("SubState") == "running",
           "sandbox-agent.service: Type=%s ActiveState=%s SubState=%s (a notify unit is active only "
           "after READY=1)" % (p.get("Type"), p.get("ActiveState"), p.get("SubState")))
    expect(p.get("UnitFileState") == "enabled", "the unit is enabled (UnitFileState=%s)" % p.get("UnitFileState"))
    ppid = ctl("exec", "--", "sh", "-c", "echo $PPID").stdout.decode().strip()
    expect(ppid == p.get("MainPID") and ppid != "0",
           "commands are children of the unit's main process (MainPID %s, the command's parent %s)"
           % (p.get("MainPID"), ppid))
    parent = ctl("exec", "--", "sh", "-c", "cut -d' ' -f4 /proc/%s/stat" % ppid).stdout.decode().strip()
    expect(parent == "1", "the agent's parent is PID 1 (systemd started it)")
    # stderr is the journal stream: lines carry their priority, journald the name
    warn = ctl("exec", "--sudo", "--", "journalctl", "-b", "-u", "sandbox-agent", "-p", "warning",
               "-o", "cat", "--no-pager").stdout.decode()
    expect(any(l.startswith("warn: listening on non-loopback") for l in warn.splitlines()),
           "the agent's warnings are in the journal at priority warning, without a second name prefix")
    return p


def check_user(ctl):
    pw = ctl("exec", "--", "getent", "passwd", "vercel-sandbox").stdout.decode().strip().split(":")
    uid, gid = pw[2], pw[3]
    expect(pw[5] == "/home/vercel-sandbox", "sysusers made vercel-sandbox (uid %s, home %s)" % (uid, pw[5]))
    r = ctl("exec", "--", "id")
    expect(r.stdout.decode().startswith("uid=%s(vercel-sandbox) gid=%s(vercel-sandbox)" % (uid, gid)),
           "commands run as vercel-sandbox: %s" % r.stdout.decode().strip())
    r = ctl("exec", "--", "pwd")
    expect(r.stdout == b"/vercel/sandbox\n", "commands run in /vercel/sandbox")
    r = ctl("exec", "--", "stat", "-c", "%U:%G %a", "/vercel/sandbox", "/home/vercel-sandbox")
    expect(r.stdout == b"vercel-sandbox:vercel-sandbox 755\nvercel-sandbox:vercel-sandbox 750\n",
           "tmpfiles made /vercel/sandbox and the home, owned by vercel-sandbox: %r" % r.stdout)
    r = ctl("exec", "--sudo", "--", "id", "-u")
    expect(r.stdout == b"0\n", "--sudo runs as root")
    r = ctl("exec", "--", "sudo", "-n", "id", "-u")
    expect(r.stdout == b"0\n", "sudo -n works for vercel-sandbox (the shipped sudoers drop-in)")
    r = ctl("exec", "--", "sudo", "-n", "true", check=False)
    expect(r.returncode == 0, "sudo -n true exits 0")
    r = ctl("exec", "--sudo", "--", "stat", "-c", "%a %U", "/etc/sudoers.d/vercel-sandbox", TOKEN_FILE)
    expect(r.stdout == b"440 root\n600 root\n", "the sudoers drop-in is 0440, the token file 0600, root's")


def agent_rss(ctl, pid):
    status = ctl("exec", "--", "cat", "/proc/%s/status" % pid).stdout.decode()
    fields = dict(l.split(":", 1) for l in status.splitlines() if ":" in l)
    return int(fields["VmRSS"].split()[0])


def check_restart(ctl, port, token, qemu, deadline, before):
    pid = before["MainPID"]
    # the shell's kill (minbase has no procps); the agent dies under the command
    r = ctl("exec", "--sudo", "--", "sh", "-c", "kill -KILL %s" % pid, check=False)
    expect(r.returncode != 0, "the connection ended with the killed agent (sandboxctl exit %d)" % r.returncode)
    t0 = time.monotonic()
    wait_agent(port, token, qemu, min(deadline, t0 + 60), "after SIGKILL")
    took = time.monotonic() - t0
    after = unit_props(ctl)
    expect(after.get("MainPID") not in (pid, "0") and after.get("ActiveState") == "active"
           and after.get("SubState") == "running"
           and int(after.get("NRestarts", "0")) == int(before.get("NRestarts", "0")) + 1,
           "SIGKILL to the agent (pid %s): systemd restarted it (pid %s, NRestarts %s, %s/%s), "
           "answering again after %.1f s" % (pid, after.get("MainPID"), after.get("NRestarts"),
                                              after.get("ActiveState"), after.get("SubState"), took))
    r = ctl("exec", "--", "id", "-un")
    expect(r.stdout == b"vercel-sandbox\n", "the restarted agent runs commands")
    return after


def shutdown(port, token, qemu, console, timeout):
    c, _ = connect(port, token, 10)
    with c:
        c.ok("shutdown", timeout=10)
    vm_boot.expect_poweroff(qemu, timeout)
    with open(console, "rb") as f:
        text = f.read().decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)            # systemd's colours
    expect("Reached target poweroff.target" in text and "systemd-shutdown[1]: Powering off." in text,
           "systemd powered the VM off (poweroff.target, systemd-shutdown)")
    expect("reboot: Power down" in text, "the kernel powered off (not a reboot: QEMU runs -no-reboot)")


class Guest:
    """QEMU running the image: killed when the block ends, whatever happened,
    and whatever QEMU itself printed is shown."""

    def __init__(self, argv):
        self.argv = argv

    def __enter__(self):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        said = self.proc.stdout.read().decode(errors="replace").strip()
        self.proc.stdout.close()
        if said:
            print("qemu: " + said, file=sys.stderr)
        return False

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout):
        return self.proc.wait(timeout)

    @property
    def returncode(self):
        return self.proc.returncode


def console_tail(path, n=80):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError as e:
        return ["(no console: %s)" % e]


def drive(o, qemu, port, token, console, tmp, deadline, t_start, root_s):
    """Everything the host checks, in order; raises Failure on the first miss."""
    hello, auth_required = wait_agent(port, token, qemu, min(deadline, qemu.t0 + 300), "boot")
    hello_s = time.monotonic() - qemu.t0
    log("hello from %s after %.2f s (QEMU start to hello, systemd, TCG)" % (hello.get("agent"), hello_s))
    expect(auth_required, "the hello says auth_required (the image's token file)")
    ctl = vm_boot.Ctl(o.ctl, port)
    r = ctl("exec", "--", "true", check=False)
    expect(r.returncode == 0, "sandboxctl with the token runs a command")
    bad = subprocess.run([o.ctl, "-c", ctl.addr, "ping"], capture_output=True, timeout=30,
                         env=dict(os.environ, SANDBOX_AGENT_TOKEN_FILE="/dev/null"))
    expect(bad.returncode != 0, "without the token the agent refuses (sandboxctl exit %d)" % bad.returncode)
    props = check_systemd(ctl)
    active_s = int(props.get("ActiveEnterTimestampMonotonic", "0")) / 1e6
    rss_kib = agent_rss(ctl, props["MainPID"])
    check_user(ctl)
    vm_boot.check_files(ctl, hello, tmp)
    check_restart(ctl, port, token, qemu, deadline, props)
    d = ctl("exec", "--detach", "--", "sleep", "1000")
    expect(d.stdout.strip().isdigit(), "a detached command runs during the shutdown")
    shutdown(port, token, qemu, console, max(5, min(120, deadline - time.monotonic())))
    print("\nimage_boot: RESULT hello %.2f s after QEMU start (unit active at %.2f s of the guest's "
          "clock); agent (systemd service) VmRSS %d KiB; root %s; total %.1f s"
          % (hello_s, active_s, rss_kib,
             "built in %.1f s" % root_s if root_s else "cached", time.monotonic() - t_start))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deb", required=True, help="the sandbox-agent .deb (packaging/build-packages)")
    ap.add_argument("--ctl", required=True, help="sandboxctl for the host")
    ap.add_argument("--busybox", default="/bin/busybox", help="a static busybox for the initramfs")
    ap.add_argument("--work", default="build-image", help="cache and scratch directory")
    ap.add_argument("--timeout", type=float, default=900, help="the whole test, seconds")
    ap.add_argument("--memory", default="512")
    o = ap.parse_args()
    t_start = time.monotonic()
    deadline = t_start + o.timeout
    os.makedirs(o.work, exist_ok=True)
    if os.geteuid() != 0:
        raise Failure("needs root (debootstrap, dpkg --root, the files' owners in mkfs.ext4 -d)")
    if "statically linked" not in run(["file", "-L", o.busybox]).stdout.decode():
        raise Failure("%s is not statically linked (apt-get install busybox-static)" % o.busybox)

    kernel, version, kernel_key, moddir = get_kernel(o.work)
    base, root_s = build_root(o.work, kernel_key, moddir, version, deadline)
    t_prep = time.monotonic()
    stage = os.path.join(o.work, "stage")
    token = os.urandom(24).hex()
    install_agent(base, stage, o.deb, token)
    disk = os.path.join(o.work, "disk.img")
    make_disk(stage, disk)
    shutil.rmtree(stage)
    initrd = os.path.join(o.work, "initramfs.cpio.gz")
    mods = module_order(moddir, INITRD_MODULES)
    build_initramfs(initrd, o.busybox, mods)
    log("kernel %s; root %s; image %d MiB used; initramfs %d KiB (%s); install + mkfs %.1f s"
        % (version, os.path.basename(base), os.stat(disk).st_blocks * 512 >> 20,
           os.path.getsize(initrd) >> 10, " ".join(m for m, _ in mods), time.monotonic() - t_prep))

    port = vm_boot.free_port()
    console = os.path.join(o.work, "console.log")
    append = "console=ttyS0 panic=-1 root=/dev/vda rw systemd.show_status=1"
    argv = ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", o.memory, "-smp", "1",
            "-display", "none", "-monitor", "none", "-serial", "file:" + console, "-no-reboot",
            "-kernel", kernel, "-initrd", initrd, "-append", append,
            "-drive", "file=%s,format=raw,if=virtio,cache=unsafe" % disk,
            "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:%d-%s:%d" % (port, GUEST_IP, AGENT_PORT),
            "-device", "virtio-net-pci,netdev=n0"]
    with tempfile.TemporaryDirectory(prefix="sa-image-") as tmp:
        tokfile = os.path.join(tmp, "token")
        with open(tokfile, "w") as f:
            f.write(token + "\n")
        os.environ["SANDBOX_AGENT_TOKEN_FILE"] = tokfile     # sandboxctl's token
        try:
            with Guest(argv) as qemu:
                drive(o, qemu, port, token, console, tmp, deadline, t_start, root_s)
            return 0
        except (Failure, subprocess.TimeoutExpired, OSError, AssertionError, KeyError, ValueError) as e:
            print("image_boot: FAILED: %s" % e, file=sys.stderr)
            print("---- guest console (%s) ----\n%s\n----" % (console, "\n".join(console_tail(console))),
                  file=sys.stderr)
            return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Failure, OSError, subprocess.TimeoutExpired) as e:
        print("image_boot: FAILED: %s" % e, file=sys.stderr)
        sys.exit(1)
