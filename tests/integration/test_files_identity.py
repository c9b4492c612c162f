"""Files as a dropped user (PROTOCOL.md "Files": every operation runs as the
user in a helper that switched identity first; `sudo` for root). Needs root:
the agent runs without --dev, with --user sa-test (as test_identity.py);
without root every class is skipped visibly."""

import io
import os
import shutil
import stat
import tarfile
import unittest

from agentlib import T, wait_until
from test_files import tar_of, ti
from test_identity import IS_ROOT, USER, SandboxUserCase

SKIP_WHY = "needs root: privilege drop not exercised"


def owner(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid


class UserFilesCase(SandboxUserCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ids = (cls.pw.pw_uid, cls.pw.pw_gid)
        # root's territory: a 0755 directory with a 0600 secret inside
        cls.rootdir = os.path.join(cls.agent.tmp, "rootdir")
        os.mkdir(cls.rootdir, 0o755)
        os.chmod(cls.rootdir, 0o755)
        cls.secret = os.path.join(cls.rootdir, "secret")
        with open(cls.secret, "wb") as fh:
            fh.write(b"root's secret\n")
        os.chmod(cls.secret, 0o600)

    def work(self, *rel):
        return os.path.join(self.agent.workdir, *rel)

    def assertSecretIntact(self):
        st = os.lstat(self.secret)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode), st.st_nlink), (0, 0o600, 1))
        with open(self.secret, "rb") as fh:
            self.assertEqual(fh.read(), b"root's secret\n")

    def assertFileError(self, final, codes):
        self.assertEqual(final.get("type"), "error", final)
        self.assertIn(final.get("code"), codes, final)
        self.assertIn("path", final)

    def user_dir(self, name):
        """A fresh directory of the user's in the workdir."""
        p = self.work(name)
        shutil.rmtree(p, ignore_errors=True)
        os.mkdir(p, 0o755)
        os.chown(p, *self.ids)
        self.addCleanup(shutil.rmtree, p, True)
        return p

    def as_user(self, script):
        r = self.c.run(["sh", "-c", script])
        self.assertEqual(r.code, 0, r)
        return r


@unittest.skipUnless(IS_ROOT, SKIP_WHY)
class UserUploads(UserFilesCase):

    def test_hello_is_not_dev(self):
        self.assertIs(self.c.hello["dev"], False)
        self.assertEqual(self.c.hello["user"], USER)

    def test_upload_into_a_root_owned_directory_is_one_eacces(self):
        d = os.path.join(self.agent.tmp, "root-0755")
        os.mkdir(d, 0o755)
        archive = tar_of([(ti("f%02d" % i), b"x") for i in range(50)] +
                         [(ti("sub", tarfile.DIRTYPE, mode=0o755), None)])
        final, acks = self.c.upload(archive, dest=d)
        self.assertFileError(final, ("EACCES",))
        self.assertEqual(final.get("refused"), [], "refusals instead of one error: %r" % (final,))
        self.assertEqual(final.get("entries"), 0)
        self.assertEqual(os.listdir(d), [])
        self.assertStillServes()

    def test_upload_with_parents_into_a_root_owned_directory_is_eacces_before_ok(self):
        d = os.path.join(self.agent.tmp, "root-0755-b")
        os.mkdir(d, 0o755)
        rid = self.c.file_start("upload", dest=os.path.join(d, "new/deeper"), parents=True)
        first, events, final = self.c.file_stream(rid)
        self.assertFileError(first, ("EACCES",))
        self.assertEqual(os.listdir(d), [])

    def test_uploaded_files_and_created_parents_belong_to_the_user(self):
        base = self.user_dir("up-owned")
        archive = tar_of([(ti("a/b/file.txt"), b"hello"), (ti("top.txt", uid=0, gid=0), b"t"),
                          (ti("link", tarfile.SYMTYPE, linkname="top.txt"), None),
                          (ti("dir", tarfile.DIRTYPE, mode=0o750), None)])
        final, acks = self.c.upload(archive, dest="up-owned/x/y", parents=True)
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(final["refused"], [])
        for rel in ("x", "x/y", "x/y/a", "x/y/a/b", "x/y/a/b/file.txt", "x/y/top.txt", "x/y/link",
                    "x/y/dir"):
            self.assertEqual(owner(os.path.join(base, rel)), self.ids, rel)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(base, "x")).st_mode), 0o755)

    def test_setuid_bits_are_dropped_for_the_user_and_kept_for_sudo(self):
        archive = tar_of([(ti("suid", mode=0o4755), b"#!/bin/sh\n"),
                          (ti("sgid", mode=0o2750), b"#!/bin/sh\n"),
                          (ti("sticky", tarfile.DIRTYPE, mode=0o1777), None)])
        d = self.user_dir("up-suid")
        final, _ = self.c.upload(archive, dest=d)
        self.assertEqual(final["type"], "end", final)
        modes = {n: stat.S_IMODE(os.lstat(os.path.join(d, n)).st_mode) for n in ("suid", "sgid", "sticky")}
        self.assertEqual(modes, {"suid": 0o755, "sgid": 0o750, "sticky": 0o777})
        d2 = self.user_dir("up-suid-root")
        final, _ = self.c.upload(archive, dest=d2, sudo=True)
        self.assertEqual(final["type"], "end", final)
        modes = {n: stat.S_IMODE(os.lstat(os.path.join(d2, n)).st_mode) for n in ("suid", "sgid", "sticky")}
        self.assertEqual(modes, {"suid": 0o4755, "sgid": 0o2750, "sticky": 0o1777})
        self.assertEqual(owner(os.path.join(d2, "suid")), (0, 0))

    def test_keep_owners_needs_sudo(self):
        archive = tar_of([(ti("owned", uid=1234, gid=5678), b"o"),
                          (ti("odir", tarfile.DIRTYPE, mode=0o755, uid=4321, gid=8765), None)])
        d = self.user_dir("up-owners")
        rid = self.c.file_start("upload", dest=d, keep_owners=True)
        first, _events, _final = self.c.file_stream(rid, check_tail=False)
        self.assertEqual((first["type"], first.get("code")), ("error", "EPERM"), first)
        final, _ = self.c.upload(archive, dest=d, keep_owners=True, sudo=True)
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(owner(os.path.join(d, "owned")), (1234, 5678))
        self.assertEqual(owner(os.path.join(d, "odir")), (4321, 8765))
        # without keep_owners, a root upload owns its files
        d2 = self.user_dir("up-owners-2")
        final, _ = self.c.upload(archive, dest=d2, sudo=True)
        self.assertEqual(owner(os.path.join(d2, "owned")), (0, 0))

    def test_device_nodes_need_sudo_and_allow_devices(self):
        archive = tar_of([(ti("null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3), None),
                          (ti("fifo", tarfile.FIFOTYPE, mode=0o600), None)])
        d = self.user_dir("up-dev")
        rid = self.c.file_start("upload", dest=d, allow_devices=True)
        first, _e, _f = self.c.file_stream(rid, check_tail=False)
        self.assertEqual((first["type"], first.get("code")), ("error", "EPERM"), first)
        final, _ = self.c.upload(archive, dest=d, sudo=True)
        self.assertEqual({r["path"]: r["reason"] for r in final["refused"]},
                         {"null": "device node not allowed", "fifo": "FIFO not allowed"})
        self.assertEqual(os.listdir(d), [])
        final, _ = self.c.upload(archive, dest=d, sudo=True, allow_devices=True)
        if final["type"] == "error" and final.get("code") == "EPERM":
            self.skipTest("mknod of a character device is not permitted here: %r" % (final,))
        self.assertEqual(final["type"], "end", final)
        refused = {r["path"]: r["reason"] for r in final["refused"]}
        st = os.lstat(os.path.join(d, "fifo"))
        self.assertTrue(stat.S_ISFIFO(st.st_mode))
        if "null" in refused:
            self.skipTest("mknod of a character device is not permitted here: %r" % refused)
        st = os.lstat(os.path.join(d, "null"))
        self.assertTrue(stat.S_ISCHR(st.st_mode))
        self.assertEqual((os.major(st.st_rdev), os.minor(st.st_rdev)), (1, 3))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o666)

    def test_write_creates_files_of_the_user(self):
        self.user_dir("w-owned")
        final, _ = self.c.write_file("w-owned/p/q/f", b"mine", parents=True)
        self.assertEqual(final["type"], "end", final)
        for rel in ("p", "p/q", "p/q/f"):
            self.assertEqual(owner(self.work("w-owned", rel)), self.ids, rel)
        r = self.c.fs("mkdir", path="w-owned/m", mode=0o700)
        self.assertEqual(r["type"], "ok", r)
        self.assertEqual(owner(self.work("w-owned/m")), self.ids)

    def test_write_to_a_file_owned_by_someone_else_writes_in_place(self):
        d = self.user_dir("w-other")
        p = os.path.join(d, "roots")
        with open(p, "wb") as fh:
            fh.write(b"old")
        os.chmod(p, 0o666)
        ino = os.stat(p).st_ino
        final, _ = self.c.write_file("w-other/roots", b"new from the user")
        self.assertEqual(final["type"], "end", final)
        st = os.stat(p)
        self.assertEqual((st.st_ino, st.st_uid, stat.S_IMODE(st.st_mode)), (ino, 0, 0o666),
                         "a rename changed the file's owner or identity")
        with open(p, "rb") as fh:
            self.assertEqual(fh.read(), b"new from the user")

    def test_sudo_write_to_the_users_file_keeps_its_owner(self):
        self.user_dir("w-sudo")
        final, _ = self.c.write_file("w-sudo/f", b"user's")
        self.assertEqual(owner(self.work("w-sudo/f")), self.ids)
        final, _ = self.c.write_file("w-sudo/f", b"root wrote this", sudo=True)
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(owner(self.work("w-sudo/f")), self.ids)
        with open(self.work("w-sudo/f"), "rb") as fh:
            self.assertEqual(fh.read(), b"root wrote this")
        final, _ = self.c.write_file("w-sudo/rootfile", b"r", sudo=True)
        self.assertEqual(owner(self.work("w-sudo/rootfile")), (0, 0))


@unittest.skipUnless(IS_ROOT, SKIP_WHY)
class PlantedSymlinks(UserFilesCase):
    """The user plants symlinks to root's files; the agent acts as the user
    and never follows them with root's rights."""

    def setUp(self):
        super().setUp()
        self.d = self.user_dir("planted")
        self.as_user("cd planted && ln -s %s evil && ln -s %s evildir" % (self.secret, self.rootdir))
        self.assertEqual(owner(os.path.join(self.d, "evil")), self.ids)

    def test_read_through_the_symlink_is_eacces(self):
        final, data = self.c.read_file("planted/evil")
        self.assertFileError(final, ("EACCES",))
        self.assertEqual(data, b"")

    def test_write_through_the_symlink_is_eacces_and_the_secret_unchanged(self):
        final, _ = self.c.write_file("planted/evil", b"overwritten")
        self.assertFileError(final, ("EACCES",))
        self.assertSecretIntact()
        final, _ = self.c.write_file("planted/evil", b"appended", append=True)
        self.assertFileError(final, ("EACCES",))
        self.assertSecretIntact()
        self.assertTrue(os.path.islink(os.path.join(self.d, "evil")))

    def test_download_of_the_symlink_holds_a_symlink_not_the_secret(self):
        final, tar = self.c.download(["planted/evil", "planted"])
        self.assertEqual(final["type"], "end", final)
        self.assertNotIn(b"root's secret", tar)
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            m = t.getmember("planted/evil")
            self.assertTrue(m.issym())
            self.assertEqual(m.linkname, self.secret)

    def test_upload_of_a_regular_file_replaces_the_symlink(self):
        final, _ = self.c.upload(tar_of([(ti("evil"), b"replaced")]), dest="planted")
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(final["refused"], [])
        p = os.path.join(self.d, "evil")
        self.assertFalse(os.path.islink(p))
        with open(p, "rb") as fh:
            self.assertEqual(fh.read(), b"replaced")
        self.assertEqual(owner(p), self.ids)
        self.assertSecretIntact()

    def test_upload_through_a_symlink_to_a_root_dir_is_refused(self):
        final, _ = self.c.upload(tar_of([(ti("evildir/pwn"), b"pwn"), (ti("evildir/secret"), b"pwn")]),
                                 dest="planted")
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(sorted(r["path"] for r in final["refused"]), ["evildir/pwn", "evildir/secret"])
        self.assertEqual(sorted(os.listdir(self.rootdir)), ["secret"])
        self.assertSecretIntact()
        # even as root the destination confines it
        final, _ = self.c.upload(tar_of([(ti("evildir/pwn"), b"pwn")]), dest="planted", sudo=True)
        self.assertEqual([r["path"] for r in final["refused"]], ["evildir/pwn"])
        self.assertEqual(sorted(os.listdir(self.rootdir)), ["secret"])

    def test_download_of_roots_0600_file_is_eacces(self):
        rid = self.c.file_start("download", paths=[self.secret])
        first, events, final = self.c.file_stream(rid)
        self.assertFileError(final, ("EACCES",))
        self.assertFalse(any(b"root's secret" in e.get("data", b"") for e in events))

    def test_download_of_a_dir_holding_roots_0600_file_ends_with_eacces(self):
        d = self.user_dir("dl-mixed")
        for n in ("a-mine", "z-mine"):
            with open(os.path.join(d, n), "wb") as fh:
                fh.write(b"mine\n")
            os.chown(os.path.join(d, n), *self.ids)
        shutil.copy(self.secret, os.path.join(d, "m-roots"))
        os.chmod(os.path.join(d, "m-roots"), 0o600)
        rid = self.c.file_start("download", paths=["dl-mixed"])
        first, events, final = self.c.file_stream(rid)
        self.assertFileError(final, ("EACCES",))
        self.assertEqual(final["path"], "dl-mixed/m-roots")
        self.assertFalse(any(b"root's secret" in e.get("data", b"") for e in events))

    def test_user_cannot_remove_chmod_or_rename_roots_file(self):
        self.assertFileError(self.c.fs("remove", path=self.secret), ("EACCES", "EPERM"))
        self.assertFileError(self.c.fs("remove", path=self.secret, force=True), ("EACCES", "EPERM"))
        self.assertFileError(self.c.fs("chmod", path=self.secret, mode=0o666), ("EPERM",))
        self.assertFileError(self.c.fs("chmod", path="planted/evil", mode=0o666), ("EPERM",))
        self.assertFileError(self.c.fs("rename", **{"from": self.secret, "to": "planted/stolen"}),
                             ("EACCES", "EPERM", "EXDEV"))
        self.assertFileError(self.c.fs("rename", **{"from": "planted/evil", "to": self.secret}),
                             ("EACCES", "EPERM"))
        self.assertFileError(self.c.fs("remove", path=self.rootdir, recursive=True),
                             ("EACCES", "EPERM"))
        self.assertFileError(self.c.fs("mkdir", path=os.path.join(self.rootdir, "new")), ("EACCES",))
        self.assertSecretIntact()
        self.assertEqual(sorted(os.listdir(self.rootdir)), ["secret"])

    def test_removing_the_symlink_leaves_the_secret(self):
        self.assertEqual(self.c.fs("remove", path="planted/evil")["type"], "ok")
        self.assertEqual(self.c.fs("remove", path="planted/evildir", recursive=True)["type"], "ok")
        self.assertSecretIntact()

    def test_stat_follow_of_the_symlink_is_allowed_but_ls_of_roots_0700_dir_is_not(self):
        r = self.c.fs("stat", path="planted/evil", follow=True)
        self.assertEqual(r["type"], "ok", r)        # the directory is 0755: stat is allowed
        self.assertEqual((r["stat"]["uid"], r["stat"]["mode"]), (0, 0o600))
        d = os.path.join(self.agent.tmp, "root-0700")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o700)
        final, ents = self.c.ls(d)
        self.assertFileError(final, ("EACCES",))

    def test_sudo_read_of_the_secret_works(self):
        final, data = self.c.read_file("planted/evil", sudo=True)
        self.assertEqual(final["type"], "end", final)
        self.assertEqual(data, b"root's secret\n")
        final, data = self.c.read_file(self.secret, user="root")
        self.assertEqual(data, b"root's secret\n")

    def test_no_helpers_left(self):
        self.c.read_file("planted/evil")
        wait_until(lambda: not self.agent.children(), T(10), what="the file helpers to exit")


if __name__ == "__main__":
    unittest.main()
