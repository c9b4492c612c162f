"""vmlib — what booting the static sandbox-agent under QEMU needs, shared by
tests/vm/vm_boot.py (the VM boot test) and gateway/provisioners/qemu:

  fetch_kernel(work)    Debian's cloud kernel and its virtio-net modules:
                        `apt-get download` of the linux-image package that
                        linux-image-cloud-amd64 points to (newest first; when
                        the archive no longer serves that file, the versions
                        before it, saying which was used), unpacked with
                        dpkg-deb -x (never installed); cached in WORK/kernel.
  build_initramfs(...)  a newc cpio (gzip) with the static agent as /init,
                        Debian's busybox-static and its applets, root and
                        vercel-sandbox (1000), /vercel/sandbox, the modules,
                        and any extra files (e.g. a root-only token).
  MODULES               the modules, in load order (sandbox_agent.modules=).

Failures raise Failure; commands run through run() with a timeout. log()
prints with the prefix set_log_prefix() chose (default "vm_boot").
"""

import functools
import gzip
import io
import os
import re
import shutil
import stat
import subprocess
import sys

MODULES = ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "failover", "net_failover", "virtio_net"]

_prefix = ["vm_boot"]


def set_log_prefix(prefix):
    _prefix[0] = prefix


def log(msg, file=None):
    print("%s: %s" % (_prefix[0], msg), flush=True, file=file or sys.stdout)


class Failure(Exception):
    pass


def run(argv, timeout=60, check=True, **kw):
    r = subprocess.run(argv, timeout=timeout, capture_output=True, **kw)
    if check and r.returncode != 0:
        raise Failure("%s: exit %d\n%s%s" % (" ".join(argv), r.returncode,
                                            r.stdout.decode(errors="replace")[-2000:],
                                            r.stderr.decode(errors="replace")[-2000:]))
    return r


# ---- the kernel ---------------------------------------------------------------

def debver_newest_first(versions):
    """Debian versions sorted newest first, as dpkg orders them."""
    def cmp(a, b):
        if a == b:
            return 0
        gt = subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0
        return -1 if gt else 1
    return sorted(set(versions), key=functools.cmp_to_key(cmp))


def kernel_candidates():
    """(package, version) of every kernel image linux-image-cloud-amd64
    points to, in any version the indexes list, newest first."""
    show = run(["apt-cache", "show", "linux-image-cloud-amd64"], check=False).stdout.decode()
    pins = {}
    for rec in show.split("\n\n"):
        m = re.search(r"^Depends:.*?(linux-image-[^ ,]+) \(= ([^)]+)\)", rec, re.M)
        if m:
            pins[m.group(2)] = m.group(1)
    return [(pins[v], v) for v in debver_newest_first(pins)]


def download_kernel(kdir):
    """apt-get download the newest kernel package whose file the archive
    still serves: a security update's index may list a version whose file
    is gone (404); fall back to the older ones, saying which was used."""
    cands = kernel_candidates()
    if not cands:
        raise Failure("linux-image-cloud-amd64 names no kernel package (apt-get update?)")
    tried = []
    for pkg, ver in cands:
        log("downloading %s %s (not installing it)" % (pkg, ver))
        r = run(["apt-get", "download", "-q", "%s=%s" % (pkg, ver)], timeout=300, cwd=kdir,
                check=False)
        debs = [f for f in os.listdir(kdir) if f.endswith(".deb")]
        if r.returncode == 0 and debs:
            note = " (%s unavailable)" % ", ".join(tried) if tried else ""
            log("kernel: %s %s%s" % (pkg, ver, note))
            return debs[0]
        for f in debs:
            os.unlink(os.path.join(kdir, f))
        tried.append("%s %s" % (pkg, ver))
        err = [l for l in r.stderr.decode(errors="replace").splitlines() if l.startswith("E:")]
        log("  unavailable: %s" % ("; ".join(err[:2]) or "exit %d" % r.returncode))
    raise Failure("no kernel package could be downloaded; tried: %s" % ", ".join(tried))


def fetch_kernel(work):
    kdir = os.path.join(work, "kernel")
    done = os.path.join(kdir, ".done")
    if not os.path.exists(done):
        shutil.rmtree(kdir, ignore_errors=True)
        os.makedirs(kdir)
        deb = download_kernel(kdir)
        run(["dpkg-deb", "-x", deb, "x"], timeout=300, cwd=kdir)
        os.unlink(os.path.join(kdir, deb))
        open(done, "w").close()
    boot = os.path.join(kdir, "x", "boot")
    vmlinuz = [f for f in os.listdir(boot) if f.startswith("vmlinuz-")][0]
    version = vmlinuz[len("vmlinuz-"):]
    mods = {}
    for root, _, files in os.walk(os.path.join(kdir, "x", "lib", "modules", version)):
        for f in files:
            if f.endswith(".ko") and f[:-3] in MODULES:
                mods[f[:-3]] = os.path.join(root, f)
    missing = [m for m in MODULES if m not in mods]
    if missing:
        raise Failure("kernel %s lacks modules %s" % (version, missing))
    return os.path.join(boot, vmlinuz), version, mods


# ---- the initramfs (newc cpio) -----------------------------------------------

class Cpio:
    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b"", uid=0, gid=0, rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            self.ino, mode, uid, gid, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0))
        self.ino += 1
        self.out.write(hdr.encode() + name_b)
        self.out.write(b"\0" * ((4 - (110 + len(name_b)) % 4) % 4))
        self.out.write(data)
        self.out.write(b"\0" * ((4 - len(data) % 4) % 4))

    def dir(self, name, perm=0o755, uid=0, gid=0):
        self._entry(name, stat.S_IFDIR | perm, uid=uid, gid=gid)

    def file(self, name, data, perm=0o644):
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name, major, minor, perm=0o600):
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def build_initramfs(path, agent, busybox, mods, extra=()):
    """extra: (name, data, perm) files added last, owned by root (name under
    an existing directory, e.g. root/agent.token in the 0700 /root)."""
    c = Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "lib", "lib/modules", "dev",
              "proc", "sys", "run", "tmp", "root", "vercel"):
        c.dir(d, 0o1777 if d == "tmp" else (0o700 if d == "root" else 0o755))
    c.dir("vercel/sandbox", 0o755, 1000, 1000)
    c.dir("home", 0o755)
    c.dir("home/vercel-sandbox", 0o750, 1000, 1000)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
           b"vercel-sandbox:x:1000:1000:Vercel Sandbox:/home/vercel-sandbox:/bin/sh\n")
    c.file("etc/group", b"root:x:0:\nvercel-sandbox:x:1000:\n")
    c.file("etc/hosts", b"127.0.0.1 localhost\n")
    with open(agent, "rb") as f:
        c.file("usr/sbin/sandbox-agent", f.read(), 0o755)
    with open(busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    applets = run([busybox, "--list-full"]).stdout.decode().split()
    for a in applets:
        if a != "bin/busybox" and not a.startswith("linuxrc"):
            c.symlink(a, "/bin/busybox")
    for m, p in mods.items():
        with open(p, "rb") as f:
            c.file("lib/modules/%s.ko" % m, f.read())
    c.symlink("init", "/usr/sbin/sandbox-agent")     # the agent is the kernel's /init
    for name, data, perm in extra:
        c.file(name, data, perm)
    with open(path, "wb") as f:
        f.write(gzip.compress(c.finish(), 6))
