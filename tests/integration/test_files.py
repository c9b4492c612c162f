"""Files: upload, download, read, write and the fs requests (PROTOCOL.md
"Files"; docs/files.md for the archive rules), driven like a host would.

The agent runs in dev mode as whoever runs the tests (root in CI: then
uploads are "privileged", which keeps setuid bits; the non-root rules are
in test_files_identity.py). Archives come from GNU tar, bsdtar, Python's
tarfile and node's tar-stream (the Vercel SDK's writer); hostile ones are
crafted with tarfile.
"""

import hashlib
import io
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
import unittest
import zlib

from agentlib import (AgentTestCase, MiB, ProtocolViolation, T, pack,
                      wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
TARSTREAM = os.path.normpath(os.path.join(HERE, "..", "fixtures", "tarstream"))
IS_ROOT = os.geteuid() == 0
MTIME = 1600000000                     # every mtime in the source tree (seconds)
BSDTAR = "/usr/bin/bsdtar"

# --------------------------------------------------------------------------
# trees on disk and in archives

LONG_NAME = "n" * 120 + ".txt"                                    # one component > 100 bytes
LONG_DIRS = "L/" + "/".join(["p%d-" % i + "x" * 90 for i in range(3)])  # > 255 bytes with the file
LONG_PATH = LONG_DIRS + "/file-at-the-end-of-a-long-path.txt"
LONG_TARGET = LONG_PATH                                           # a link target > 100 bytes


def make_tree(root, full=True):
    """The source tree of the round trips. full=False leaves out what plain
    ustar cannot hold (a name > 100 bytes, a path > 255, a link target > 100)."""
    rng = random.Random(4242)
    os.makedirs(root)

    def d(rel, mode=0o755):
        os.makedirs(os.path.join(root, rel), exist_ok=True)

    def f(rel, data, mode=0o644):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(data)
        os.chmod(p, mode)

    d("d1/sub")
    d("private")
    f("d1/a.txt", b"alpha\n")
    f("d1/run.sh", b"#!/bin/sh\necho hi\n", 0o755)
    f("d1/secret", b"only me\n", 0o600)
    f("d1/sub/empty", b"")
    f("private/inner.txt", b"inside a 0700 directory\n")
    f("big.bin", rng.randbytes(MiB))
    f("ünïcödé/日本.txt", "こんにちは\n".encode())
    os.symlink("d1/a.txt", os.path.join(root, "rel-link"))
    os.symlink("/etc/hostname", os.path.join(root, "abs-link"))
    os.symlink("d1", os.path.join(root, "dir-link"))
    os.link(os.path.join(root, "d1/a.txt"), os.path.join(root, "d1/hard"))
    if full:
        f(LONG_NAME, b"a long name\n")
        f(LONG_PATH, b"at the end of a long path\n", 0o640)
        os.symlink(LONG_TARGET, os.path.join(root, "long-target-link"))
    os.chmod(os.path.join(root, "private"), 0o700)
    os.chmod(os.path.join(root, "d1/sub"), 0o750)
    set_mtimes(root)


def set_mtimes(root, when=MTIME):
    """Every entry below root (not root itself) gets mtime `when`; directories
    after their contents."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            p = os.path.join(dirpath, n)
            os.utime(p, (when, when), follow_symlinks=False)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def disk_manifest(root, exclude=()):
    """relpath -> {type, mode, size, sha256 | target, mtime} of everything
    below root (symlinks not followed), and the hardlink groups (sets of
    paths sharing an inode)."""
    out, inodes = {}, {}

    def walk(d, rel):
        for e in sorted(os.scandir(d), key=lambda e: e.name):
            r = rel + e.name
            if r in exclude:
                continue
            st = os.lstat(e.path)
            if stat.S_ISLNK(st.st_mode):
                out[r] = {"type": "symlink", "target": os.readlink(e.path), "mtime": int(st.st_mtime)}
            elif stat.S_ISDIR(st.st_mode):
                out[r] = {"type": "dir", "mode": stat.S_IMODE(st.st_mode), "mtime": int(st.st_mtime)}
                walk(e.path, r + "/")
            elif stat.S_ISREG(st.st_mode):
                out[r] = {"type": "file", "mode": stat.S_IMODE(st.st_mode), "size": st.st_size,
                          "sha256": file_sha256(e.path), "mtime": int(st.st_mtime)}
                if st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), set()).add(r)
            else:
                out[r] = {"type": "other:%o" % stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode)}

    walk(root, "")
    groups = {frozenset(g) for g in inodes.values() if len(g) > 1}
    return out, groups


def tar_manifest(data, strip=""):
    """relpath -> the same fields as disk_manifest, from a tar stream (plain
    or gzip); names must start with `strip` + "/" (the entry `strip` itself
    is left out). Hardlink entries are reported as type "hardlink"."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
        for ti in t:
            name = ti.name
            if strip:
                if name == strip:
                    continue
                if not name.startswith(strip + "/"):
                    raise AssertionError("tar entry %r is not below %r" % (name, strip))
                name = name[len(strip) + 1:]
            if name in out:
                raise AssertionError("tar entry %r twice" % name)
            if ti.issym():
                out[name] = {"type": "symlink", "target": ti.linkname, "mtime": int(ti.mtime)}
            elif ti.islnk():
                out[name] = {"type": "hardlink", "target": ti.linkname}
            elif ti.isdir():
                out[name] = {"type": "dir", "mode": ti.mode & 0o7777, "mtime": int(ti.mtime)}
            elif ti.isfile():
                body = t.extractfile(ti).read()
                out[name] = {"type": "file", "mode": ti.mode & 0o7777, "size": len(body),
                             "sha256": sha256(body), "mtime": int(ti.mtime)}
            else:
                out[name] = {"type": "other:%r" % ti.type, "mode": ti.mode & 0o7777}
    return out


def tar_names(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
        return [ti.name for ti in t]


def tar_of(members, fmt=tarfile.PAX_FORMAT, gz=False):
    """A tar archive in memory from (TarInfo, data-or-None) pairs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=fmt) as t:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
    return buf.getvalue()


def ti(name, kind=tarfile.REGTYPE, mode=0o644, linkname="", mtime=MTIME, devmajor=0, devminor=0,
       uid=0, gid=0):
    """A TarInfo for tar_of (test_files_identity uses them too)."""
    t = tarfile.TarInfo(name)
    t.type = kind
    t.mode = mode
    t.linkname = linkname
    t.mtime = mtime
    t.devmajor, t.devminor = devmajor, devminor
    t.uid, t.gid = uid, gid
    return t


def refused_reasons(final):
    return {r["path"]: r["reason"] for r in final.get("refused", [])}


LEAVES = {"path leaves the destination", "symlink in the path"}   # openat2, or the no-openat2 walk


class FileTestCase(AgentTestCase):
    """Helpers shared by the file test classes."""

    def work(self, *rel):
        return os.path.join(self.agent.workdir, *rel)

    def assertUploadEnd(self, final, refused=None):
        self.assertEqual(final.get("type"), "end", "upload did not end with `end`: %r" % (final,))
        for k in ("entries", "bytes", "refused", "refused_more"):
            self.assertIn(k, final, "upload end without %r: %r" % (k, final))
        if refused is not None:
            self.assertEqual(refused_reasons(final), refused, final)
            self.assertEqual(final["refused_more"], 0)

    def assertFileError(self, final, code, path=None):
        self.assertErrorReply(final, code)
        self.assertIn("path", final, "file error without a path: %r" % (final,))
        if path is not None:
            self.assertEqual(final["path"], path, final)

    def assertNoHelpersLeft(self):
        """Every file helper has exited and been reaped."""
        wait_until(lambda: not self.agent.children(), T(10), what="the file helpers to exit")

    def hostile(self, name, members, pre=None, gz=False, raw=None, **fields):
        """Upload a hostile archive (tar_of(members), or raw: bytes or an
        iterable of bytes) into <case>/dest beside <case>/sentinel; checks
        that nothing outside dest changed, that the agent still answers and
        that its helper is gone. (final, case, dest)."""
        case = self.fresh("hostile-" + name)
        dest = os.path.join(case, "dest")
        sentinel = os.path.join(case, "sentinel")
        os.makedirs(dest)
        os.makedirs(sentinel)
        with open(os.path.join(sentinel, "keep.txt"), "wb") as fh:
            fh.write(b"keep\n")
        os.mkdir(os.path.join(sentinel, "dir"))
        set_mtimes(case, MTIME - 1000)
        if pre:
            pre(case, dest)
        before = disk_manifest(case, exclude=("dest",))
        archive = raw if raw is not None else tar_of(members, gz=gz)
        final, _acks = self.c.upload(archive, dest=dest, timeout=T(300), **fields)
        self.assertEqual(disk_manifest(case, exclude=("dest",)), before,
                         "something outside the destination changed")
        self.assertStillServes()
        self.assertNoHelpersLeft()
        return final, case, dest

    def fresh(self, name):
        """A new empty directory in the workdir (removed at the end)."""
        p = self.work(name)
        if os.path.lexists(p):
            shutil.rmtree(p)
        os.makedirs(p)
        self.addCleanup(shutil.rmtree, p, True)
        return p


# --------------------------------------------------------------------------
# 1. the helpers' own checks, and the capabilities

class FileBasics(FileTestCase):

    def test_hello_advertises_files_fs_and_gzip(self):
        caps = self.c.hello["capabilities"]
        for cap in ("files", "fs", "gzip"):
            self.assertIn(cap, caps)

    def test_read_stream_is_ok_with_size_then_data_from_offset_0_then_end(self):
        d = self.fresh("basics")
        body = os.urandom(200 * 1024 + 17)
        with open(os.path.join(d, "f"), "wb") as fh:
            fh.write(body)
        rid = self.c.file_start("read", path="basics/f")
        first, events, final = self.c.file_stream(rid)
        self.assertEqual(first["type"], "ok")
        self.assertEqual(first["size"], len(body))
        self.assertGreaterEqual(len(events), 4, "200 KiB in at most 64 KiB events")
        self.assertEqual([e["type"] for e in events], ["data"] * len(events))
        self.assertEqual(final, {"type": "end", "id": rid, "bytes": len(body)})
        self.assertEqual(b"".join(e["data"] for e in events), body)

    def test_file_stream_rejects_an_event_before_the_reply(self):
        # the checker itself: a stream whose first message is not its reply fails
        from agentlib import FileStream
        st = FileStream(5)
        with self.assertRaises(ProtocolViolation):
            st.feed({"type": "data", "id": 5, "offset": 0, "data": b"x"})
        st = FileStream(5)
        st.feed({"type": "ok", "id": 5})
        with self.assertRaises(ProtocolViolation):
            st.feed({"type": "data", "id": 5, "offset": 3, "data": b"x"})

    def test_unknown_keys_are_ignored_and_missing_path_is_bad_request(self):
        r = self.c.fs("stat", path=".", some_future_key=1)
        self.assertEqual(r["type"], "ok", r)
        self.assertErrorReply(self.c.fs("stat"), "bad_request")
        self.assertErrorReply(self.c.fs("chmod", path="."), "bad_request")
        self.assertErrorReply(self.c.fs("mkdir", path="x", mode=0o10000), "bad_request")
        self.assertStillServes()


# --------------------------------------------------------------------------
# 2. round trips

class RoundTrip(FileTestCase):
    """Archives from several writers extract to exactly the source tree, and
    download gives it back (symlinks as symlinks)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.src_tmp = tempfile.mkdtemp(prefix="sa-ft-src-")
        cls.addClassCleanup(shutil.rmtree, cls.src_tmp, True)
        cls.full = os.path.join(cls.src_tmp, "full")
        cls.small = os.path.join(cls.src_tmp, "small")
        make_tree(cls.full, full=True)
        make_tree(cls.small, full=False)
        cls.want = {k: disk_manifest(getattr(cls, k)) for k in ("full", "small")}

    # ---- archive writers
    def gnu_tar(self, tree, fmt, gz=False):
        argv = ["tar", "-C", tree, "--sort=name", "--format=" + fmt, "-c", "-f", "-"]
        if gz:
            argv.append("-z")
        return subprocess.run(argv + ["."], check=True, capture_output=True, timeout=60).stdout

    def bsdtar(self, tree, fmt=None, gz=False):
        if not os.access(BSDTAR, os.X_OK):
            self.skipTest("bsdtar missing (Debian package libarchive-tools)")
        argv = [BSDTAR, "-C", tree, "-c", "-f", "-"]
        if fmt:
            argv += ["--format", fmt]
        if gz:
            argv.append("-z")
        return subprocess.run(argv + ["."], check=True, capture_output=True, timeout=60).stdout

    def py_tar(self, tree, fmt, gz=False):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=fmt) as t:
            for name in sorted(os.listdir(tree)):
                t.add(os.path.join(tree, name), arcname=name)
        return buf.getvalue()

    # ---- the round trip
    def round_trip(self, name, archive, tree="full"):
        want, want_groups = self.want[tree]
        dest = "rt/" + name
        final, acks = self.c.upload(archive, dest=dest, parents=True)
        self.assertUploadEnd(final, refused={})
        self.assertTrue(all(a["type"] == "ok" for a in acks))
        got, groups = disk_manifest(self.work(dest))
        self.addCleanup(shutil.rmtree, self.work(dest), True)
        self.assertEqual(sorted(got), sorted(want))
        for k in want:
            self.assertEqual(got[k], want[k], "extracted %r differs from the source" % k)
        self.assertEqual(groups, want_groups, "hardlinks not kept")
        # bytes: the file data written, each inode once (a hardlink entry has none)
        linked = {k for g in want_groups for k in sorted(g)[1:]}
        self.assertEqual(final["bytes"], sum(v["size"] for k, v in want.items()
                                             if v["type"] == "file" and k not in linked))
        # entries: every entry placed, plus a "./" entry (the destination itself) if any
        dot = sum(1 for n in tar_names(archive) if n.strip("/") in ("", "."))
        self.assertEqual(final["entries"], len(want) + dot)

        # download it back, plain and gzip'd; symlinks stay symlinks
        for gz in (False, True):
            dfinal, tar = self.c.download([dest], gzip=gz)
            self.assertEqual(dfinal["type"], "end", dfinal)
            self.assertEqual(dfinal["bytes"], len(tar))
            if gz:
                self.assertEqual(tar[:2], b"\x1f\x8b", "gzip:true did not give a gzip stream")
            else:
                self.assertNotEqual(tar[:2], b"\x1f\x8b")
            back = tar_manifest(tar, strip=dest)
            self.assertEqual(sorted(back), sorted(want))
            for k in want:
                self.assertEqual(back[k], want[k], "downloaded %r differs (gzip=%s)" % (k, gz))

    def test_gnu_tar_gnu_format(self):
        self.round_trip("gnu", self.gnu_tar(self.full, "gnu"))

    def test_gnu_tar_pax_format(self):
        self.round_trip("pax", self.gnu_tar(self.full, "pax"))

    def test_gnu_tar_ustar_format(self):
        self.round_trip("ustar", self.gnu_tar(self.small, "ustar"), tree="small")

    def test_gnu_tar_gzip(self):
        self.round_trip("gnu-gz", self.gnu_tar(self.full, "gnu", gz=True))

    def test_gnu_tar_pax_gzip(self):
        self.round_trip("pax-gz", self.gnu_tar(self.full, "pax", gz=True))

    def test_bsdtar_default_format(self):
        self.round_trip("bsd", self.bsdtar(self.full))

    def test_bsdtar_ustar_format(self):
        self.round_trip("bsd-ustar", self.bsdtar(self.small, "ustar"), tree="small")

    def test_bsdtar_gnutar_format(self):
        self.round_trip("bsd-gnutar", self.bsdtar(self.full, "gnutar"))

    def test_bsdtar_gzip(self):
        self.round_trip("bsd-gz", self.bsdtar(self.full, gz=True))

    def test_python_tarfile_ustar(self):
        self.round_trip("py-ustar", self.py_tar(self.small, tarfile.USTAR_FORMAT), tree="small")

    def test_python_tarfile_gnu(self):
        self.round_trip("py-gnu", self.py_tar(self.full, tarfile.GNU_FORMAT))

    def test_python_tarfile_pax(self):
        self.round_trip("py-pax", self.py_tar(self.full, tarfile.PAX_FORMAT))

    def test_python_tarfile_ustar_gzip(self):
        self.round_trip("py-ustar-gz", self.py_tar(self.small, tarfile.USTAR_FORMAT, gz=True),
                        tree="small")

    def test_python_tarfile_gnu_gzip(self):
        self.round_trip("py-gnu-gz", self.py_tar(self.full, tarfile.GNU_FORMAT, gz=True))

    def test_python_tarfile_pax_gzip(self):
        self.round_trip("py-pax-gz", self.py_tar(self.full, tarfile.PAX_FORMAT, gz=True))

    def test_upload_into_an_existing_dest_without_parents(self):
        d = self.fresh("rt-existing")
        final, _ = self.c.upload(self.py_tar(self.small, tarfile.PAX_FORMAT), dest=d)
        self.assertUploadEnd(final, refused={})
        got, _ = disk_manifest(d)
        self.assertEqual(got, self.want["small"][0])

    def test_default_dest_is_the_root_as_the_sdk_sends_it(self):
        # the Vercel SDK sends `vercel/sandbox/a.txt` with no dest: names are from "/"
        d = self.fresh("rt-sdk-root")
        final, _ = self.c.upload(tar_of([(ti(d.lstrip("/") + "/from-root.txt"), b"via /")]))
        self.assertUploadEnd(final, refused={})
        with open(os.path.join(d, "from-root.txt"), "rb") as fh:
            self.assertEqual(fh.read(), b"via /")

    def test_upload_to_a_missing_dest_without_parents_is_enoent_before_ok(self):
        rid = self.c.file_start("upload", dest="rt-no-such/dir")
        first, events, final = self.c.file_stream(rid)
        self.assertFileError(first, "ENOENT", "rt-no-such/dir")
        self.assertEqual(events, [])
        self.assertFalse(os.path.exists(self.work("rt-no-such")))

    def test_upload_to_a_file_is_enotdir_before_ok(self):
        d = self.fresh("rt-notdir")
        open(os.path.join(d, "file"), "wb").close()
        for dest, parents in (("rt-notdir/file", False), ("rt-notdir/file/sub", True)):
            rid = self.c.file_start("upload", dest=dest, parents=parents)
            first, events, final = self.c.file_stream(rid)
            self.assertFileError(first, "ENOTDIR")

    def test_upload_of_an_empty_stream_is_an_empty_archive(self):
        d = self.fresh("rt-empty")
        final, _ = self.c.upload(b"", dest=d)
        self.assertUploadEnd(final, refused={})
        self.assertEqual((final["entries"], final["bytes"]), (0, 0))

    def test_download_of_several_paths(self):
        d = self.fresh("dl-several")
        for n in ("one", "two"):
            with open(os.path.join(d, n), "wb") as fh:
                fh.write(n.encode() * 100)
        os.symlink("one", os.path.join(d, "link"))
        final, tar = self.c.download(["dl-several/one", "dl-several/two", "dl-several/link"])
        self.assertEqual(final["type"], "end", final)
        m = tar_manifest(tar)
        self.assertEqual(sorted(m), ["dl-several/link", "dl-several/one", "dl-several/two"])
        self.assertEqual(m["dl-several/two"]["sha256"], sha256(b"two" * 100))
        self.assertEqual(m["dl-several/link"], {"type": "symlink", "target": "one",
                                                "mtime": m["dl-several/link"]["mtime"]})

    def test_download_of_an_absolute_path_is_stored_without_the_slash(self):
        d = self.fresh("dl-abs")
        with open(os.path.join(d, "f.txt"), "wb") as fh:
            fh.write(b"absolute\n")
        final, tar = self.c.download([d])
        self.assertEqual(final["type"], "end", final)
        names = tar_names(tar)
        self.assertIn(d.lstrip("/") + "/f.txt", names)
        self.assertFalse([n for n in names if n.startswith("/")], names)
        m = tar_manifest(tar)
        self.assertEqual(m[d.lstrip("/") + "/f.txt"]["sha256"], sha256(b"absolute\n"))

    def test_download_of_a_symlink_to_a_directory_stores_the_link(self):
        d = self.fresh("dl-link")
        os.makedirs(os.path.join(d, "real"))
        with open(os.path.join(d, "real", "inside"), "wb") as fh:
            fh.write(b"x")
        os.symlink("real", os.path.join(d, "link"))
        final, tar = self.c.download(["dl-link/link"])
        self.assertEqual(final["type"], "end", final)
        m = tar_manifest(tar)
        self.assertEqual(list(m), ["dl-link/link"], "the link was followed")
        self.assertEqual(m["dl-link/link"]["type"], "symlink")
        self.assertEqual(m["dl-link/link"]["target"], "real")

    def test_download_of_a_missing_path_is_enoent_with_path_and_no_ok(self):
        d = self.fresh("dl-missing")
        with open(os.path.join(d, "here"), "wb") as fh:
            fh.write(b"x")
        rid = self.c.file_start("download", paths=["dl-missing/here", "dl-missing/absent"])
        first, events, final = self.c.file_stream(rid)
        self.assertFileError(first, "ENOENT", "dl-missing/absent")
        self.assertIs(first, final)
        self.assertEqual(events, [])
        self.assertStillServes()


# --------------------------------------------------------------------------
# 3. hostile archives

class Hostile(FileTestCase):
    """Each hostile archive is refused entry by entry (or fails) as
    PROTOCOL.md says; a sentinel directory next to the destination is
    unchanged, nothing is written outside the destination, the agent still
    answers and its helper is gone."""

    def test_dotdot_names_are_refused_and_the_rest_extracted(self):
        final, case, dest = self.hostile("dotdot", [
            (ti("ok1.txt"), b"1"),
            (ti("../x"), b"pwn"),
            (ti("a/../../x"), b"pwn"),
            (ti("sentinel/../../sentinel/pwn"), b"pwn"),
            (ti("ok2.txt"), b"2"),
        ])
        self.assertUploadEnd(final, refused={"../x": "'..' in path", "a/../../x": "'..' in path",
                                             "sentinel/../../sentinel/pwn": "'..' in path"})
        self.assertEqual(sorted(os.listdir(dest)), ["ok1.txt", "ok2.txt"])
        self.assertFalse(os.path.exists(os.path.join(case, "x")))

    def test_absolute_names_are_refused(self):
        case = self.work("hostile-abs")
        target = os.path.join(case, "sentinel", "pwn")
        final, case, dest = self.hostile("abs", [(ti(target), b"pwn"), (ti("/tmp/sa-ft-pwn"), b"x")])
        self.assertUploadEnd(final, refused={target: "absolute path",
                                             "/tmp/sa-ft-pwn": "absolute path"})
        self.assertFalse(os.path.exists(target))
        self.assertFalse(os.path.exists("/tmp/sa-ft-pwn"))

    def test_file_through_an_archive_symlink_to_an_outside_dir_is_refused(self):
        case = self.work("hostile-symout")
        final, case, dest = self.hostile("symout", [
            (ti("l", tarfile.SYMTYPE, linkname=os.path.join(case, "sentinel")), None),
            (ti("l/pwn"), b"pwn"),
            (ti("l/dir/pwn"), b"pwn"),
        ])
        self.assertUploadEnd(final)
        r = refused_reasons(final)
        self.assertEqual(sorted(r), ["l/dir/pwn", "l/pwn"], final)
        self.assertLessEqual(set(r.values()), LEAVES, final)
        self.assertEqual(os.readlink(os.path.join(dest, "l")), os.path.join(case, "sentinel"),
                         "the symlink itself is data and is created")

    def test_file_through_a_dotdot_symlink_is_refused(self):
        final, case, dest = self.hostile("symdotdot", [
            (ti("l2", tarfile.SYMTYPE, linkname=".."), None),
            (ti("l2/pwn"), b"pwn"),
            (ti("l2/sentinel/pwn"), b"pwn"),
        ])
        self.assertUploadEnd(final)
        r = refused_reasons(final)
        self.assertEqual(sorted(r), ["l2/pwn", "l2/sentinel/pwn"], final)
        self.assertLessEqual(set(r.values()), LEAVES, final)
        self.assertFalse(os.path.exists(os.path.join(case, "pwn")))

    def test_file_through_a_symlink_already_on_disk_is_refused(self):
        def plant(case, dest):
            os.symlink("../sentinel", os.path.join(dest, "out"))
            os.symlink(os.path.join(case, "sentinel"), os.path.join(dest, "abs-out"))
        final, case, dest = self.hostile("ondisk", [
            (ti("out/pwn"), b"pwn"), (ti("abs-out/pwn"), b"pwn"), (ti("out/keep.txt"), b"pwn"),
        ], pre=plant)
        self.assertUploadEnd(final)
        r = refused_reasons(final)
        self.assertEqual(sorted(r), ["abs-out/pwn", "out/keep.txt", "out/pwn"], final)
        self.assertLessEqual(set(r.values()), LEAVES, final)

    def test_regular_file_replaces_a_symlink_at_its_name_and_does_not_follow_it(self):
        def plant(case, dest):
            os.symlink("../sentinel/keep.txt", os.path.join(dest, "victim"))
        final, case, dest = self.hostile("replace-link", [(ti("victim"), b"new content")], pre=plant)
        self.assertUploadEnd(final, refused={})
        p = os.path.join(dest, "victim")
        self.assertFalse(os.path.islink(p))
        with open(p, "rb") as fh:
            self.assertEqual(fh.read(), b"new content")

    def test_hardlinks_out_of_the_destination_are_refused(self):
        case = self.work("hostile-hardout")
        keep = os.path.join(case, "sentinel", "keep.txt")
        final, case, dest = self.hostile("hardout", [
            (ti("h-abs", tarfile.LNKTYPE, linkname=keep), None),
            (ti("h-rel", tarfile.LNKTYPE, linkname="../sentinel/keep.txt"), None),
            (ti("d", tarfile.DIRTYPE, mode=0o755), None),
            (ti("h-dir", tarfile.LNKTYPE, linkname="d"), None),
            (ti("h-missing", tarfile.LNKTYPE, linkname="nothing-here"), None),
        ])
        self.assertUploadEnd(final, refused={
            "h-abs": "hardlink target outside the destination",
            "h-rel": "hardlink target outside the destination",
            "h-dir": "hardlink to a directory",
            "h-missing": "hardlink target missing",
        })
        self.assertEqual(os.stat(keep).st_nlink, 1, "a hardlink to the sentinel was made")
        self.assertEqual(sorted(os.listdir(dest)), ["d"])

    def test_hardlink_through_a_symlink_links_the_symlink_not_its_target(self):
        case = self.work("hostile-hardsym")
        keep = os.path.join(case, "sentinel", "keep.txt")
        final, case, dest = self.hostile("hardsym", [
            (ti("s", tarfile.SYMTYPE, linkname=keep), None),
            (ti("h", tarfile.LNKTYPE, linkname="s"), None),
        ])
        self.assertUploadEnd(final, refused={})
        self.assertEqual(os.stat(keep).st_nlink, 1, "the hardlink went through the symlink")
        h = os.path.join(dest, "h")
        self.assertTrue(os.path.islink(h))
        self.assertEqual(os.readlink(h), keep)
        self.assertEqual(os.lstat(h).st_ino, os.lstat(os.path.join(dest, "s")).st_ino)

    def test_device_and_fifo_are_refused_without_allow_devices(self):
        final, case, dest = self.hostile("devices", [
            (ti("null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3), None),
            (ti("blk", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=0), None),
            (ti("fifo", tarfile.FIFOTYPE, mode=0o644), None),
            (ti("after.txt"), b"still extracted"),
        ])
        self.assertUploadEnd(final, refused={"null": "device node not allowed",
                                             "blk": "device node not allowed",
                                             "fifo": "FIFO not allowed"})
        self.assertEqual(os.listdir(dest), ["after.txt"])

    def test_allow_devices_in_dev_mode(self):
        """As root (dev mode, so the upload is privileged) a FIFO is created
        with allow_devices; as another user allow_devices is EPERM."""
        if IS_ROOT:
            final, case, dest = self.hostile("fifo-allowed", [
                (ti("fifo", tarfile.FIFOTYPE, mode=0o640), None)], allow_devices=True)
            self.assertUploadEnd(final, refused={})
            st = os.lstat(os.path.join(dest, "fifo"))
            self.assertTrue(stat.S_ISFIFO(st.st_mode))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        else:
            final, case, dest = self.hostile("fifo-allowed", [
                (ti("fifo", tarfile.FIFOTYPE, mode=0o640), None)], allow_devices=True)
            self.assertErrorReply(final, "EPERM")
            self.assertEqual(os.listdir(dest), [])

    def test_setuid_bits_follow_the_uploader(self):
        """Dev mode as root is a root upload: setuid/setgid/sticky are kept.
        As another user they are dropped (test_files_identity covers the
        non-dev user)."""
        final, case, dest = self.hostile("setuid", [
            (ti("suid", mode=0o4755), b"#!/bin/sh\n"),
            (ti("sgid", mode=0o2755), b"#!/bin/sh\n"),
            (ti("sticky", tarfile.DIRTYPE, mode=0o1777), None),
        ])
        self.assertUploadEnd(final, refused={})
        modes = {n: stat.S_IMODE(os.lstat(os.path.join(dest, n)).st_mode)
                 for n in ("suid", "sgid", "sticky")}
        if IS_ROOT:
            self.assertEqual(modes, {"suid": 0o4755, "sgid": 0o2755, "sticky": 0o1777})
        else:
            self.assertEqual(modes, {"suid": 0o755, "sgid": 0o755, "sticky": 0o777})

    def test_a_directory_in_the_way_of_a_file_is_refused(self):
        final, case, dest = self.hostile("dir-in-way", [
            (ti("x", tarfile.DIRTYPE, mode=0o755), None),
            (ti("x/inner"), b"i"),
            (ti("x"), b"a file over a directory"),
        ])
        self.assertUploadEnd(final, refused={"x": "a directory is in the way"})
        self.assertTrue(os.path.isdir(os.path.join(dest, "x")))

    def test_truncated_archive_is_bad_archive(self):
        whole = tar_of([(ti("a"), os.urandom(100 * 1024)), (ti("b"), b"b")])
        final, case, dest = self.hostile("trunc", None, raw=whole[:50 * 1024])
        self.assertErrorReply(final, "bad_archive")
        for k in ("entries", "bytes", "refused", "path"):
            self.assertIn(k, final)

    def test_truncated_gzip_archive_is_bad_archive(self):
        whole = tar_of([(ti("a"), os.urandom(100 * 1024)), (ti("b"), b"b")], gz=True)
        final, case, dest = self.hostile("trunc-gz", None, raw=whole[:len(whole) // 2])
        self.assertErrorReply(final, "bad_archive")

    def test_archive_without_end_blocks_is_accepted(self):
        whole = tar_of([(ti("a"), b"a" * 1000)], fmt=tarfile.USTAR_FORMAT)
        final, case, dest = self.hostile("no-end", None, raw=whole[:1536])
        # a header and its data, cut exactly before the end-of-archive blocks
        self.assertUploadEnd(final, refused={})
        with open(os.path.join(dest, "a"), "rb") as fh:
            self.assertEqual(fh.read(), b"a" * 1000)

    def test_dot_entry_does_not_change_the_destination(self):
        final, case, dest = self.hostile("dot", [(ti("./", tarfile.DIRTYPE, mode=0o700, mtime=1), None),
                                                 (ti("./f"), b"f")])
        self.assertUploadEnd(final, refused={})
        st = os.stat(dest)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o755)
        self.assertNotEqual(int(st.st_mtime), 1)

    def test_random_garbage_is_bad_archive(self):
        final, case, dest = self.hostile("garbage", None, raw=random.Random(7).randbytes(64 * 1024))
        self.assertErrorReply(final, "bad_archive")
        self.assertEqual(os.listdir(dest), [])

    def test_garbage_after_the_archive_end_within_a_mib_is_accepted(self):
        whole = tar_of([(ti("a"), b"a")]) + b"\0" * 4096
        final, case, dest = self.hostile("trailer", None, raw=whole)
        self.assertUploadEnd(final, refused={})


class UploadCaps(FileTestCase):
    """--upload-max-bytes and --upload-max-entries (flags) stop bombs."""
    CAP = 64 * MiB
    agent_args = ("--upload-max-bytes", str(64 * MiB), "--upload-max-entries", "100")

    @staticmethod
    def gzip_bomb(entries=128, each=16 * MiB):
        """A gzip'd tar of `entries` files of zeros (2 GiB by default),
        compressed as it is consumed: never held in memory."""
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        zeros = bytes(MiB)
        for i in range(entries):
            h = tarfile.TarInfo("zero-%03d" % i)
            h.size = each
            h.mtime = MTIME
            yield z.compress(h.tobuf(format=tarfile.GNU_FORMAT))
            left = each
            while left:
                n = min(left, len(zeros))
                out = z.compress(zeros[:n])
                left -= n
                if out:
                    yield out
            pad = (-each) % 512
            if pad:
                yield z.compress(bytes(pad))
        yield z.compress(bytes(1024))
        yield z.flush()

    def test_gzip_bomb_stops_at_the_byte_cap(self):
        final, case, d = self.hostile("bomb", None, raw=self.gzip_bomb())
        self.assertErrorReply(final, "too_large")
        self.assertEqual(final.get("path"), "zero-004", "the cap is passed by the fifth 16 MiB entry")
        names = os.listdir(d)
        written = sum(os.lstat(os.path.join(d, n)).st_size for n in names)
        self.assertLessEqual(written, self.CAP, "more than the cap was written")
        self.assertLessEqual(sum(os.lstat(os.path.join(d, n)).st_blocks * 512 for n in names),
                             self.CAP + MiB)
        self.assertEqual(final["bytes"], written)
        self.assertFalse([n for n in names if n.startswith(".sa-xfer")], "temp file left")

    def test_one_entry_declaring_more_than_the_cap_is_too_large_before_any_byte(self):
        final, case, d = self.hostile("bomb-one", None, raw=self.gzip_bomb(entries=1, each=2048 * MiB))
        self.assertErrorReply(final, "too_large")
        self.assertEqual(final.get("path"), "zero-000")
        self.assertEqual(os.listdir(d), [])

    def test_too_many_entries(self):
        final, case, d = self.hostile("many", [(ti("f%03d" % i), b"") for i in range(150)])
        self.assertErrorReply(final, "too_many")
        self.assertEqual(len(os.listdir(d)), 100)
        self.assertEqual(final["entries"], 100)

    def test_exactly_the_entry_cap_is_fine(self):
        d = self.fresh("many-ok")
        final, acks = self.c.upload(tar_of([(ti("f%03d" % i), b"x") for i in range(100)]), dest=d)
        self.assertUploadEnd(final, refused={})
        self.assertEqual(len(os.listdir(d)), 100)


class UploadCapsFromConfigFile(UploadCaps):
    """The same caps set in a --config file (`upload-max-bytes = ...`)."""
    agent_args = ()

    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="sa-ft-conf-")
        cls.addClassCleanup(shutil.rmtree, d, True)
        conf = os.path.join(d, "agent.conf")
        with open(conf, "w") as fh:
            fh.write("upload-max-bytes = %d\nupload-max-entries = 100\n" % UploadCaps.CAP)
        cls.agent_args = ("--config", conf)
        super().setUpClass()


# --------------------------------------------------------------------------
# 4. read, write and the fs requests

class ReadWrite(FileTestCase):

    def put(self, rel, data, mode=0o644):
        p = self.work(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(data)
        os.chmod(p, mode)
        return p

    def temps(self, d):
        return [n for n in os.listdir(d) if n.startswith(".sa-write.")]

    def test_write_in_chunks_then_read_back(self):
        d = self.fresh("rw-big")
        body = os.urandom(3 * MiB)
        final, acks = self.c.write_file("rw-big/f", body, chunk=200 * 1024)
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(final["bytes"], len(body))
        self.assertEqual(len(acks), 16)
        self.assertEqual(file_sha256(os.path.join(d, "f")), sha256(body))
        rfinal, back = self.c.read_file("rw-big/f")
        self.assertEqual(rfinal["bytes"], len(body))
        self.assertEqual(sha256(back), sha256(body))
        self.assertEqual(self.c.last_stream.first["size"], len(body))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "f")).st_mode), 0o644)
        self.assertEqual(self.temps(d), [])

    def test_read_with_offset_and_length(self):
        self.fresh("rw-off")
        body = os.urandom(300000)
        self.put("rw-off/f", body)
        for off, ln in ((1000, 5000), (0, 1), (299999, 10), (70000, 140000), (300000, 5)):
            final, got = self.c.read_file("rw-off/f", offset=off, length=ln)
            self.assertEqual(got, body[off:off + ln], (off, ln))
            self.assertEqual(final["bytes"], len(body[off:off + ln]))
            self.assertEqual(self.c.last_stream.first["size"], len(body))
        final, got = self.c.read_file("rw-off/f", offset=299000)
        self.assertEqual(got, body[299000:])
        final, got = self.c.read_file("rw-off/f", length=0)
        self.assertEqual((got, final["bytes"]), (b"", 0))

    def test_read_follows_symlinks(self):
        self.fresh("rw-sym")
        self.put("rw-sym/t", b"target")
        os.symlink("t", self.work("rw-sym/l"))
        self.assertEqual(self.c.read_file("rw-sym/l")[1], b"target")

    def test_read_missing_is_enoent_instead_of_ok(self):
        rid = self.c.file_start("read", path="rw-nothing/here")
        first, events, final = self.c.file_stream(rid)
        self.assertFileError(first, "ENOENT", "rw-nothing/here")
        self.assertEqual(events, [])

    def test_read_directory_is_eisdir(self):
        self.fresh("rw-dir")
        final, _ = self.c.read_file("rw-dir")
        self.assertFileError(final, "EISDIR", "rw-dir")

    def test_read_fifo_is_einval_and_does_not_hang(self):
        d = self.fresh("rw-fifo")
        os.mkfifo(os.path.join(d, "p"))
        final, _ = self.c.read_file("rw-fifo/p", timeout=T(10))
        self.assertFileError(final, "EINVAL", "rw-fifo/p")
        self.assertNoHelpersLeft()

    def test_write_mode_is_exact(self):
        d = self.fresh("rw-mode")
        for mode in (0o600, 0o777, 0o640):
            final, _ = self.c.write_file("rw-mode/m%o" % mode, b"x", mode=mode)
            self.assertEqual(final["type"], "end", final)
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "m%o" % mode)).st_mode), mode)

    def test_replacing_write_keeps_the_old_mode_unless_given(self):
        d = self.fresh("rw-keep")
        self.put("rw-keep/f", b"old", 0o751)
        self.c.write_file("rw-keep/f", b"new")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "f")).st_mode), 0o751)
        self.c.write_file("rw-keep/f", b"newer", mode=0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "f")).st_mode), 0o600)
        with open(os.path.join(d, "f"), "rb") as fh:
            self.assertEqual(fh.read(), b"newer")

    def test_append(self):
        d = self.fresh("rw-append")
        self.put("rw-append/f", b"one\n")
        ino = os.stat(os.path.join(d, "f")).st_ino
        final, _ = self.c.write_file("rw-append/f", b"two\n", append=True)
        self.assertEqual(final, {"type": "end", "id": final["id"], "bytes": 4})
        with open(os.path.join(d, "f"), "rb") as fh:
            self.assertEqual(fh.read(), b"one\ntwo\n")
        self.assertEqual(os.stat(os.path.join(d, "f")).st_ino, ino, "append replaced the file")
        final, _ = self.c.write_file("rw-append/new", b"x", append=True, mode=0o604)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "new")).st_mode), 0o604)

    def test_write_with_parents_creates_missing_dirs_0755(self):
        d = self.fresh("rw-parents")
        final, _ = self.c.write_file("rw-parents/a/b/c/f", b"deep", parents=True)
        self.assertEqual(final["type"], "end", final)
        for sub in ("a", "a/b", "a/b/c"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, sub)).st_mode), 0o755)
        with open(os.path.join(d, "a/b/c/f"), "rb") as fh:
            self.assertEqual(fh.read(), b"deep")

    def test_write_without_parents_into_a_missing_dir_is_enoent(self):
        final, _ = self.c.write_file("rw-nodir/x/f", b"x")
        self.assertFileError(final, "ENOENT")
        self.assertFalse(os.path.exists(self.work("rw-nodir")))

    def test_write_to_a_directory_is_eisdir(self):
        self.fresh("rw-isdir")
        final, acks = self.c.write_file("rw-isdir", b"x")
        self.assertFileError(final, "EISDIR", "rw-isdir")
        self.assertEqual(len(acks), 1)

    def test_write_to_a_fifo_is_einval(self):
        d = self.fresh("rw-wfifo")
        os.mkfifo(os.path.join(d, "p"))
        final, _ = self.c.write_file("rw-wfifo/p", b"x", timeout=T(10))
        self.assertFileError(final, "EINVAL")
        self.assertNoHelpersLeft()

    def test_write_replaces_atomically_at_eof(self):
        d = self.fresh("rw-atomic")
        self.put("rw-atomic/f", b"old content")
        rid = self.c.file_start("write", path="rw-atomic/f")
        cid = self.c.next_id()
        self.c.send({"type": "chunk", "id": cid, "ref": rid, "data": b"new ", "eof": False})
        ack = self.c.recv_id(cid)
        self.assertEqual(ack["type"], "ok", ack)
        first = self.c.recv_id(rid)
        self.assertEqual(first["type"], "ok", first)
        # the bytes are with the helper, the file is untouched
        wait_until(lambda: self.temps(d), T(5), what="the temporary file")
        with open(os.path.join(d, "f"), "rb") as fh:
            self.assertEqual(fh.read(), b"old content")
        cid2 = self.c.next_id()
        self.c.send({"type": "chunk", "id": cid2, "ref": rid, "data": b"content", "eof": True})
        self.assertEqual(self.c.recv_id(cid2)["type"], "ok")
        end = self.c.recv_id(rid)
        self.assertEqual(end, {"type": "end", "id": rid, "bytes": 11})
        with open(os.path.join(d, "f"), "rb") as fh:
            self.assertEqual(fh.read(), b"new content")
        self.assertEqual(self.temps(d), [])

    def test_cancelled_write_keeps_the_old_file_and_leaves_no_temp(self):
        d = self.fresh("rw-cancel")
        self.put("rw-cancel/f", b"old content")
        with self.agent.client() as c2:
            rid = c2.file_start("write", path="rw-cancel/f")
            cid = c2.next_id()
            c2.send({"type": "chunk", "id": cid, "ref": rid, "data": b"x" * 100000, "eof": False})
            self.assertEqual(c2.recv_id(cid)["type"], "ok")
            self.assertEqual(c2.recv_id(rid)["type"], "ok")
            wait_until(lambda: self.temps(d), T(5), what="the temporary file")
        self.assertNoHelpersLeft()
        wait_until(lambda: not self.temps(d), T(5), what="the temporary file to go")
        with open(os.path.join(d, "f"), "rb") as fh:
            self.assertEqual(fh.read(), b"old content")

    def test_cancelled_upload_stops_its_helper_and_leaves_no_temp(self):
        d = self.fresh("up-cancel")
        h = tarfile.TarInfo("partial")
        h.size = 8 * MiB
        head = h.tobuf(format=tarfile.PAX_FORMAT)
        with self.agent.client() as c2:
            rid = c2.file_start("upload", dest="up-cancel")
            cid = c2.next_id()
            c2.send({"type": "chunk", "id": cid, "ref": rid, "data": head + bytes(256 * 1024),
                     "eof": False})
            self.assertEqual(c2.recv_id(cid)["type"], "ok")
            self.assertEqual(c2.recv_id(rid)["type"], "ok")
            wait_until(lambda: os.listdir(d), T(5), what="the entry in progress on disk")
        self.assertNoHelpersLeft()
        self.assertEqual(os.listdir(d), [], "a cancelled upload left its temporary file")
        self.assertStillServes()

    def test_at_most_64_file_operations_at_once(self):
        self.fresh("rw-many")
        self.assertNoHelpersLeft()              # nothing of an earlier test still counts
        with self.agent.client() as c2:
            rids = [c2.file_start("write", path="rw-many/f%02d" % i) for i in range(64)]
            for rid in rids:
                r = c2.recv_id(rid)
                self.assertEqual(r["type"], "ok", r)
            r = c2.request("stat", path=".")
            self.assertErrorReply(r, "too_many")
            self.assertErrorReply(self.c.request("write", path="rw-many/other"), "too_many")
        self.assertNoHelpersLeft()
        self.assertEqual(self.c.fs("stat", path=".")["type"], "ok")

    def test_write_through_a_symlink_writes_the_target_in_place(self):
        d = self.fresh("rw-wsym")
        self.put("rw-wsym/t", b"old")
        os.symlink("t", os.path.join(d, "l"))
        final, _ = self.c.write_file("rw-wsym/l", b"through the link")
        self.assertEqual(final["type"], "end", final)
        self.assertTrue(os.path.islink(os.path.join(d, "l")), "the symlink was replaced")
        with open(os.path.join(d, "t"), "rb") as fh:
            self.assertEqual(fh.read(), b"through the link")

    def test_write_to_a_hardlinked_file_writes_in_place(self):
        d = self.fresh("rw-whard")
        self.put("rw-whard/a", b"old")
        os.link(os.path.join(d, "a"), os.path.join(d, "b"))
        self.c.write_file("rw-whard/a", b"shared")
        with open(os.path.join(d, "b"), "rb") as fh:
            self.assertEqual(fh.read(), b"shared")

    def test_chunk_for_an_unknown_ref_is_not_found(self):
        r = self.c.request("chunk", ref=987654, data=b"x", eof=True)
        self.assertErrorReply(r, "not_found")
        self.assertStillServes()

    def test_chunk_for_a_download_is_bad_request(self):
        d = self.fresh("rw-chunkdl")
        with open(os.path.join(d, "big"), "wb") as fh:
            fh.truncate(16 * MiB)
        rid, cid = self.c.next_id(), self.c.next_id()
        # both frames in one write: the download is surely still running
        self.c.send_raw(pack({"type": "download", "id": rid, "paths": ["rw-chunkdl/big"]}) +
                        pack({"type": "chunk", "id": cid, "ref": rid, "data": b"x", "eof": True}))
        self.assertErrorReply(self.c.recv_id(cid), "bad_request")
        first, events, final = self.c.file_stream(rid, sink=lambda b: None)
        self.assertEqual(final["type"], "end", final)

    def test_chunk_after_the_transfer_ended_is_not_found(self):
        self.fresh("rw-late")
        final, _ = self.c.write_file("rw-late/f", b"x")
        r = self.c.request("chunk", ref=final["id"], data=b"y", eof=True)
        self.assertErrorReply(r, "not_found")

    def test_chunks_of_a_refused_write_are_stopped_or_not_found(self):
        rid = self.c.file_start("write", path="rw-nodir2/x/f")
        ids = []
        for i in range(3):
            cid = self.c.next_id()
            ids.append(cid)
            self.c.send({"type": "chunk", "id": cid, "ref": rid, "data": b"x", "eof": i == 2})
        first, events, final = self.c.file_stream(rid, check_tail=False)
        self.assertFileError(first, "ENOENT")
        # each chunk gets exactly one reply: ok (its bytes reached the helper
        # before it failed), stopped (still queued) or not_found (too late)
        codes = []
        for cid in ids:
            r = self.c.recv_id(cid)
            codes.append(r.get("code") if r["type"] == "error" else "ok")
        self.assertLessEqual(set(codes), {"ok", "stopped", "not_found"}, codes)
        self.c._check_tail(set(ids) | {rid})


class WindowLimit(FileTestCase):
    agent_args = ("--stdin-window", "65536")

    def test_chunk_over_the_window_is_window_exceeded_and_not_written(self):
        d = self.fresh("win")
        self.assertEqual(self.c.stdin_window, 65536)
        rid = self.c.file_start("write", path="win/f")
        cid = self.c.next_id()
        self.c.send({"type": "chunk", "id": cid, "ref": rid, "data": b"A" * 65537, "eof": False})
        self.assertErrorReply(self.c.recv_id(cid), "window_exceeded")
        self.assertEqual(self.c.recv_id(rid)["type"], "ok")
        cid = self.c.next_id()
        self.c.send({"type": "chunk", "id": cid, "ref": rid, "data": b"B" * 65536, "eof": True})
        self.assertEqual(self.c.recv_id(cid)["type"], "ok")
        end = self.c.recv_id(rid)
        self.assertEqual(end, {"type": "end", "id": rid, "bytes": 65536})
        with open(os.path.join(d, "f"), "rb") as fh:
            self.assertEqual(fh.read(), b"B" * 65536)

    def test_upload_helper_respects_a_small_window(self):
        d = self.fresh("win-up")
        body = os.urandom(2 * MiB)
        final, acks = self.c.upload(tar_of([(ti("f"), body)]), dest=d)
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(file_sha256(os.path.join(d, "f")), sha256(body))


class SmallFrames(FileTestCase):
    """--max-frame 4096: every event of a file stream fits in a frame."""
    agent_args = ("--max-frame", "4096")

    def test_read_download_and_ls_fit_in_small_frames(self):
        d = self.fresh("small")
        body = os.urandom(100 * 1024)
        with open(os.path.join(d, "f"), "wb") as fh:
            fh.write(body)
        for i in range(300):
            os.symlink("target-%03d-" % i + "t" * 200, os.path.join(d, "link-%03d-" % i + "n" * 100))
        with self.agent.client(max_frame=4096) as c:      # a larger frame fails the test
            self.assertEqual(c.agent_max_frame, 4096)
            final, got = c.read_file("small/f")
            self.assertEqual(got, body)
            self.assertGreater(len(c.last_stream.events), 25)
            final, tar = c.download(["small"], gzip=True)
            self.assertEqual(final["type"], "end", final)
            self.assertEqual(len(tar_names(tar)), 302)
            final, ents = c.ls("small")
            self.assertEqual(final["count"], 301)
            final, acks = c.write_file("small/w", body)
            self.assertEqual(final["type"], "end", final)
            self.assertEqual(c.read_file("small/w")[1], body)

    def test_a_link_target_too_long_for_the_frame_is_cut_and_says_so(self):
        d = self.fresh("small-long")
        target = "x" * 4000
        os.symlink(target, os.path.join(d, "n" * 250))
        with self.agent.client(max_frame=4096) as c:
            final, ents = c.ls("small-long")
            self.assertEqual(final["type"], "end", final)
            self.assertEqual(len(ents), 1)
            e = ents[0]
            self.assertTrue(e.get("target_cut"), e)
            self.assertTrue(target.startswith(e["target"]) and len(e["target"]) < len(target))
            st = c.fs("stat", path="small-long/" + "n" * 250)["stat"]
            self.assertTrue(st.get("target_cut"), st)
            self.assertTrue(target.startswith(st["target"]))
            self.assertGreater(len(st["target"]), len(e["target"]), "stat has no name to fit")



class FsOps(FileTestCase):

    def test_stat_lstat_and_follow(self):
        d = self.fresh("fs-stat")
        with open(os.path.join(d, "t"), "wb") as fh:
            fh.write(b"12345")
        os.chmod(os.path.join(d, "t"), 0o640)
        os.utime(os.path.join(d, "t"), (MTIME, MTIME + 0.25))
        os.symlink("t", os.path.join(d, "l"))
        r = self.c.fs("stat", path="fs-stat/l")
        self.assertEqual(r["type"], "ok", r)
        st = r["stat"]
        self.assertEqual(st["type"], "symlink")
        self.assertEqual(st["target"], "t")
        self.assertEqual(st["size"], 1)
        r = self.c.fs("stat", path="fs-stat/l", follow=True)
        st = r["stat"]
        lst = os.stat(os.path.join(d, "t"))
        self.assertEqual(st, {"type": "file", "size": 5, "mode": 0o640, "uid": lst.st_uid,
                              "gid": lst.st_gid, "nlink": 1, "mtime_ms": MTIME * 1000 + 250})
        r = self.c.fs("stat", path=d)          # absolute
        self.assertEqual(r["stat"]["type"], "dir")
        self.assertNotIn("target", r["stat"])

    def test_stat_types(self):
        d = self.fresh("fs-types")
        os.mkfifo(os.path.join(d, "p"))
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(d, "s"))
        self.addCleanup(s.close)
        self.assertEqual(self.c.fs("stat", path="fs-types/p")["stat"]["type"], "fifo")
        self.assertEqual(self.c.fs("stat", path="fs-types/s")["stat"]["type"], "socket")
        self.assertEqual(self.c.fs("stat", path="/dev/null")["stat"]["type"], "char")

    def test_stat_missing_is_enoent_with_path(self):
        self.assertFileError(self.c.fs("stat", path="fs-none"), "ENOENT", "fs-none")

    def test_ls_of_1000_files_in_several_events(self):
        d = self.fresh("fs-ls")
        names = {"f%04d" % i for i in range(1000)}
        for n in names:
            open(os.path.join(d, n), "wb").close()
        rid = self.c.file_start("ls", path="fs-ls")
        first, events, final = self.c.file_stream(rid)
        self.assertEqual(first["type"], "ok")
        self.assertGreaterEqual(len(events), 4, "more than 256 entries in one event?")
        self.assertEqual(final["count"], 1000)
        got = [e["name"] for ev in events for e in ev["entries"]]
        self.assertEqual(len(got), 1000)
        self.assertEqual(set(got), names)
        e = events[0]["entries"][0]
        for k in ("name", "type", "size", "mode", "mtime_ms"):
            self.assertIn(k, e)
        self.assertEqual(e["type"], "file")

    def test_ls_entry_of_a_symlink_is_the_links_own(self):
        d = self.fresh("fs-ls2")
        os.mkdir(os.path.join(d, "sub"), 0o700)
        os.chmod(os.path.join(d, "sub"), 0o700)
        os.symlink("sub", os.path.join(d, "link"))
        final, ents = self.c.ls("fs-ls2")
        self.assertEqual(final["count"], 2)
        by = {e["name"]: e for e in ents}
        self.assertEqual(by["link"]["type"], "symlink")
        self.assertEqual(by["link"]["target"], "sub")
        self.assertEqual(by["sub"]["type"], "dir")
        self.assertEqual(by["sub"]["mode"], 0o700)
        self.assertNotIn(".", by)
        self.assertNotIn("..", by)

    def test_ls_empty_dir(self):
        self.fresh("fs-ls-empty")
        final, ents = self.c.ls("fs-ls-empty")
        self.assertEqual((final["count"], ents), (0, []))

    def test_ls_of_a_file_is_enotdir_and_of_missing_enoent(self):
        d = self.fresh("fs-ls3")
        open(os.path.join(d, "f"), "wb").close()
        rid = self.c.file_start("ls", path="fs-ls3/f")
        first, events, final = self.c.file_stream(rid)
        self.assertFileError(first, "ENOTDIR", "fs-ls3/f")
        rid = self.c.file_start("ls", path="fs-ls3/none")
        first, events, final = self.c.file_stream(rid)
        self.assertFileError(first, "ENOENT", "fs-ls3/none")

    def test_mkdir_mode_is_exact_despite_the_umask(self):
        d = self.fresh("fs-mkdir")
        for mode in (0o777, 0o700, 0o1777, 0o2750):
            r = self.c.fs("mkdir", path="fs-mkdir/m%o" % mode, mode=mode)
            self.assertEqual(r["type"], "ok", r)
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "m%o" % mode)).st_mode), mode)
        self.c.fs("mkdir", path="fs-mkdir/default")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "default")).st_mode), 0o755)

    def test_mkdir_parents_and_eexist(self):
        d = self.fresh("fs-mkdir2")
        r = self.c.fs("mkdir", path="fs-mkdir2/a/b/c", mode=0o700, parents=True)
        self.assertEqual(r["type"], "ok", r)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "a")).st_mode), 0o755)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "a/b")).st_mode), 0o755)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "a/b/c")).st_mode), 0o700)
        self.assertEqual(self.c.fs("mkdir", path="fs-mkdir2/a/b/c", parents=True)["type"], "ok")
        self.assertFileError(self.c.fs("mkdir", path="fs-mkdir2/a/b/c"), "EEXIST", "fs-mkdir2/a/b/c")
        self.assertFileError(self.c.fs("mkdir", path="fs-mkdir2/x/y"), "ENOENT")
        open(os.path.join(d, "file"), "wb").close()
        r = self.c.fs("mkdir", path="fs-mkdir2/file", parents=True)
        self.assertEqual(r["type"], "error", "mkdir -p over a file succeeded: %r" % (r,))

    def test_remove_file_and_empty_dir(self):
        d = self.fresh("fs-rm")
        open(os.path.join(d, "f"), "wb").close()
        os.mkdir(os.path.join(d, "e"))
        self.assertEqual(self.c.fs("remove", path="fs-rm/f")["type"], "ok")
        self.assertEqual(self.c.fs("remove", path="fs-rm/e")["type"], "ok")
        self.assertEqual(os.listdir(d), [])

    def test_remove_non_empty_dir_needs_recursive(self):
        d = self.fresh("fs-rm2")
        os.makedirs(os.path.join(d, "x/y"))
        r = self.c.fs("remove", path="fs-rm2/x")
        self.assertErrorReply(r, "ENOTEMPTY")
        self.assertEqual(r.get("path"), "fs-rm2/x")
        self.assertTrue(os.path.isdir(os.path.join(d, "x/y")))

    def test_recursive_remove_of_5000_files(self):
        d = self.fresh("fs-rm3")
        for i in range(50):
            sub = os.path.join(d, "t", "d%02d" % i, "deeper")
            os.makedirs(sub)
            for j in range(100):
                open(os.path.join(sub, "f%03d" % j), "wb").close()
        r = self.c.fs("remove", path="fs-rm3/t", recursive=True, timeout=T(60))
        self.assertEqual(r["type"], "ok", r)
        self.assertFalse(os.path.lexists(os.path.join(d, "t")))

    def test_recursive_remove_does_not_follow_symlinks(self):
        d = self.fresh("fs-rm4")
        outside = os.path.join(d, "outside")
        os.makedirs(os.path.join(outside, "sub"))
        with open(os.path.join(outside, "precious"), "wb") as fh:
            fh.write(b"keep")
        os.makedirs(os.path.join(d, "t/inner"))
        os.symlink(outside, os.path.join(d, "t/inner/link"))
        os.symlink("../../outside/precious", os.path.join(d, "t/flink"))
        self.assertEqual(self.c.fs("remove", path="fs-rm4/t", recursive=True)["type"], "ok")
        self.assertFalse(os.path.lexists(os.path.join(d, "t")))
        self.assertEqual(sorted(os.listdir(outside)), ["precious", "sub"])
        # a symlink itself, recursive or not, is removed, its target stays
        os.symlink(outside, os.path.join(d, "top-link"))
        self.assertEqual(self.c.fs("remove", path="fs-rm4/top-link", recursive=True)["type"], "ok")
        self.assertFalse(os.path.lexists(os.path.join(d, "top-link")))
        self.assertEqual(sorted(os.listdir(outside)), ["precious", "sub"])

    def test_recursive_remove_deeper_than_1024_levels_is_eloop(self):
        d = self.fresh("fs-rm-deep")
        self.addCleanup(subprocess.run, ["rm", "-rf", "--one-file-system", d], timeout=60)
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(1030):
                os.mkdir("d", dir_fd=fd)
                nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nfd
        finally:
            os.close(fd)
        r = self.c.fs("remove", path="fs-rm-deep/d", recursive=True)
        self.assertFileError(r, "ELOOP")
        self.assertTrue(r["path"].startswith("fs-rm-deep/d/d/"), r)
        self.assertTrue(os.path.isdir(os.path.join(d, "d")))

    def test_remove_missing_with_and_without_force(self):
        self.assertEqual(self.c.fs("remove", path="fs-rm-none", force=True)["type"], "ok")
        self.assertEqual(self.c.fs("remove", path="fs-rm-none/x", force=True, recursive=True)["type"],
                         "ok")
        self.assertFileError(self.c.fs("remove", path="fs-rm-none"), "ENOENT", "fs-rm-none")

    def test_rename_overwrites_by_default_and_not_with_overwrite_false(self):
        d = self.fresh("fs-mv")
        for n in ("a", "b", "c"):
            with open(os.path.join(d, n), "wb") as fh:
                fh.write(n.encode())
        self.assertEqual(self.c.fs("rename", **{"from": "fs-mv/a", "to": "fs-mv/b"})["type"], "ok")
        self.assertEqual(sorted(os.listdir(d)), ["b", "c"])
        with open(os.path.join(d, "b"), "rb") as fh:
            self.assertEqual(fh.read(), b"a")
        r = self.c.fs("rename", overwrite=False, **{"from": "fs-mv/c", "to": "fs-mv/b"})
        self.assertFileError(r, "EEXIST", "fs-mv/b")
        with open(os.path.join(d, "b"), "rb") as fh:
            self.assertEqual(fh.read(), b"a")
        r = self.c.fs("rename", overwrite=False, **{"from": "fs-mv/c", "to": "fs-mv/new"})
        self.assertEqual(r["type"], "ok", r)
        self.assertFileError(self.c.fs("rename", **{"from": "fs-mv/none", "to": "fs-mv/z"}),
                             "ENOENT", "fs-mv/none")

    def test_chmod_follows_symlinks_and_keeps_special_bits(self):
        d = self.fresh("fs-chmod")
        open(os.path.join(d, "f"), "wb").close()
        os.symlink("f", os.path.join(d, "l"))
        self.assertEqual(self.c.fs("chmod", path="fs-chmod/f", mode=0o600)["type"], "ok")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "f")).st_mode), 0o600)
        self.assertEqual(self.c.fs("chmod", path="fs-chmod/l", mode=0o751)["type"], "ok")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "f")).st_mode), 0o751)
        self.assertTrue(os.path.islink(os.path.join(d, "l")))
        self.assertEqual(self.c.fs("chmod", path="fs-chmod/f", mode=0o4755)["type"], "ok")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "f")).st_mode), 0o4755)
        self.assertFileError(self.c.fs("chmod", path="fs-chmod/none", mode=0o644), "ENOENT")


class DefaultCwd(FileTestCase):
    """Relative paths start at set_defaults' cwd (own agent: the default is
    agent-wide)."""

    def test_relative_paths_follow_set_defaults_cwd(self):
        sub = self.fresh("cwd-sub")
        self.assertEqual(self.c.ok("set_defaults", cwd="cwd-sub")["type"], "ok")
        try:
            final, _ = self.c.write_file("rel.txt", b"relative")
            self.assertEqual(final["type"], "end", final)
            self.assertTrue(os.path.isfile(os.path.join(sub, "rel.txt")))
            self.assertEqual(self.c.read_file("rel.txt")[1], b"relative")
            final, _ = self.c.upload(tar_of([(ti("up.txt"), b"u")]), dest="updest", parents=True)
            self.assertEqual(final["type"], "end", final)
            self.assertTrue(os.path.isfile(os.path.join(sub, "updest", "up.txt")))
            final, tar = self.c.download(["rel.txt"])
            self.assertEqual(tar_names(tar), ["rel.txt"])
            self.assertEqual(self.c.fs("stat", path="up" + "dest")["stat"]["type"], "dir")
            # a default cwd that does not exist: relative paths fail, absolute ones work
            self.c.ok("set_defaults", cwd="cwd-missing")
            r = self.c.fs("stat", path="rel.txt")
            self.assertFileError(r, "ENOENT")
            self.assertEqual(self.c.fs("stat", path=os.path.join(sub, "rel.txt"))["type"], "ok")
        finally:
            self.c.ok("set_defaults", cwd=self.agent.workdir)


class NotBlocking(FileTestCase):
    """Long file operations run in helpers: the event loop keeps serving."""

    def test_ping_is_answered_during_a_recursive_remove(self):
        d = self.fresh("nb-rm")
        for i in range(30):
            sub = os.path.join(d, "t", "d%02d" % i)
            os.makedirs(sub)
            for j in range(1000):
                open(os.path.join(sub, "f%04d" % j), "wb").close()
        rid, pid_ = self.c.next_id(), self.c.next_id()
        self.c.send_raw(pack({"type": "remove", "id": rid, "path": "nb-rm/t", "recursive": True}) +
                        pack({"type": "ping", "id": pid_}))
        first = self.c.recv_match(lambda m: m.get("id") in (rid, pid_), T(120))
        self.assertEqual(first["id"], pid_, "the remove's reply came before the ping's: the loop "
                                           "was blocked by the remove (%r)" % (first,))
        r = self.c.recv_id(rid, T(120))
        self.assertEqual(r["type"], "ok", r)
        self.assertFalse(os.path.lexists(os.path.join(d, "t")))

    def test_exec_on_another_connection_completes_during_an_upload(self):
        d = self.fresh("nb-up")
        # 512 MiB of zeros, about 0.5 MiB gzip'd: extracting it takes a while
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        h = tarfile.TarInfo("zeros")
        h.size = 512 * MiB
        parts = [z.compress(h.tobuf(format=tarfile.GNU_FORMAT))]
        zeros = bytes(MiB)
        for _ in range(512):
            parts.append(z.compress(zeros))
        parts += [z.compress(bytes(1024)), z.flush()]
        archive = b"".join(parts)
        rid = self.c.file_start("upload", dest=d)
        off = 0
        cids = []
        while off < len(archive):
            cid = self.c.next_id()
            piece = archive[off:off + 256 * 1024]
            off += len(piece)
            self.c.send({"type": "chunk", "id": cid, "ref": rid, "data": piece,
                         "eof": off >= len(archive)})
            cids.append(cid)
            if len(cids) >= 3:                 # stay within the 1 MiB window
                self.assertEqual(self.c.recv_id(cids.pop(0))["type"], "ok")
        with self.agent.client() as c2:
            r = c2.run(["echo", "hi"], timeout=T(60))
            self.assertEqual(r.stdout, b"hi\n")
        early = self.c.drain_nowait()
        self.assertFalse([m for m in early if m.get("id") == rid and m["type"] in ("end", "error")],
                         "the upload ended before an echo on another connection did: %r" % early)
        self.c.pending = early + self.c.pending
        for cid in cids:
            self.assertEqual(self.c.recv_id(cid)["type"], "ok")
        first, events, final = self.c.file_stream(rid, timeout=T(120))
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(final["bytes"], 512 * MiB)
        self.assertEqual(os.stat(os.path.join(d, "zeros")).st_size, 512 * MiB)
        os.unlink(os.path.join(d, "zeros"))


# --------------------------------------------------------------------------
# 5. node tar-stream: what the Vercel Sandbox SDK sends

class Zstd(FileTestCase):
    """zstd-compressed uploads: extracted when the hello lists `zstd`, and a
    clear `bad_archive` when it does not (never a silent half-extraction)."""

    def zstd_of(self, data):
        if not shutil.which("zstd"):
            self.skipTest("no zstd program to compress with (scripts/deps --test installs it)")
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True,
                              timeout=T(60)).stdout

    def test_a_tar_zst_is_extracted_as_its_capability_says(self):
        blob = os.urandom(200000)
        archive = self.zstd_of(tar_of([(ti("z/a.txt"), b"zstd\n"), (ti("z/blob.bin"), blob)]))
        self.assertEqual(archive[:4], b"\x28\xb5\x2f\xfd")
        d = self.fresh("zst")
        final, _ = self.c.upload(archive, dest="zst", parents=True)
        if "zstd" in self.c.hello["capabilities"]:
            self.assertUploadEnd(final, refused={})
            self.assertEqual((final["entries"], final["bytes"]), (2, 5 + len(blob)))
            with open(os.path.join(d, "z", "blob.bin"), "rb") as fh:
                self.assertEqual(fh.read(), blob)
        else:
            self.assertFileError(final, "bad_archive")
            self.assertFalse(os.path.exists(os.path.join(d, "z")))


class TarStream(FileTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        with open(os.path.join(TARSTREAM, "expected.json"), encoding="utf-8") as fh:
            cls.expected = json.load(fh)

    def check(self, archive, name, check_default_mtime=False):
        dest = "ts/" + name
        final, _ = self.c.upload(archive, dest=dest, parents=True)
        self.assertUploadEnd(final, refused={})
        self.addCleanup(shutil.rmtree, self.work(dest), True)
        got, _ = disk_manifest(self.work(dest))
        self.assertEqual(sorted(got), sorted(self.expected))
        for k, want in self.expected.items():
            g = got[k]
            for field, v in want.items():
                self.assertEqual(g.get(field), v, "%s: %s" % (k, field))

    def test_recorded_sdk_style_archive(self):
        with open(os.path.join(TARSTREAM, "sdk-style.tar.gz"), "rb") as fh:
            self.check(fh.read(), "recorded")

    def test_freshly_generated_sdk_style_archive(self):
        node, npm = shutil.which("node"), shutil.which("npm")
        if not node or not npm:
            self.skipTest("node or npm not installed: live tar-stream archive not generated")
        tmp = tempfile.mkdtemp(prefix="sa-ft-tarstream-")
        self.addCleanup(shutil.rmtree, tmp, True)
        for n in ("package.json", "make.js"):
            shutil.copy(os.path.join(TARSTREAM, n), tmp)
        try:
            p = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent"], cwd=tmp,
                               capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.skipTest("npm install of tar-stream took more than 120 s (no registry?)")
        if p.returncode != 0:
            self.skipTest("npm install of tar-stream failed (no registry?): %s"
                          % p.stderr.decode(errors="replace")[-300:])
        out = os.path.join(tmp, "fresh.tar.gz")
        subprocess.run([node, "make.js", out], cwd=tmp, check=True, timeout=60, capture_output=True)
        with open(out, "rb") as fh:
            self.check(fh.read(), "fresh")


# --------------------------------------------------------------------------
# 6. flow control

class DownloadFlowControl(FileTestCase):
    """A client that does not read stalls its download, not the agent's memory."""

    def test_stalled_200_mib_download_keeps_rss_bounded(self):
        d = self.fresh("fc")
        h = hashlib.sha256()
        with open(os.path.join(d, "big"), "wb") as fh:
            for _ in range(200):
                b = os.urandom(MiB)
                h.update(b)
                fh.write(b)
        want = h.hexdigest()
        base = self.agent.rss()
        rid = self.c.file_start("download", paths=["fc/big"])
        peak = base
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:         # not reading
            peak = max(peak, self.agent.rss())
            time.sleep(0.05)
        self.assertLess(peak - base, 64 * MiB, "agent RSS grew by %d MiB while the client did not read"
                        % ((peak - base) // MiB))
        out = os.path.join(self.agent.tmp, "fc-download.tar")
        events_seen = [0]
        with open(out, "wb") as sink:
            def write(b):
                nonlocal peak
                sink.write(b)
                events_seen[0] += 1
                if events_seen[0] % 64 == 0:
                    peak = max(peak, self.agent.rss())
            first, events, final = self.c.file_stream(rid, sink=write, timeout=T(300))
        self.assertEqual(final["type"], "end", final)
        self.assertLess(peak - base, 64 * MiB)
        with tarfile.open(out) as t:
            m = t.next()
            self.assertEqual(m.name, "fc/big")
            got = hashlib.sha256()
            src = t.extractfile(m)
            for block in iter(lambda: src.read(MiB), b""):
                got.update(block)
        self.assertEqual(got.hexdigest(), want)
        os.unlink(out)


if __name__ == "__main__":
    unittest.main()
