"""sandboxctl's file commands against a real agent (docs/sandboxctl.md
"Files"): upload of a directory, a file, a tar.gz and a tar on stdin;
download [-z]; get/put; stat, ls [-l], mkdir [-p], rm [-r] [-f], mv [-n],
chmod; errors that name the path with exit status 1."""

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import unittest

from test_cli import CtlTestCase


def make_tree(root):
    """A small tree with modes, a symlink, a nested empty dir, a binary file."""
    os.makedirs(os.path.join(root, "src", "lib"))
    os.makedirs(os.path.join(root, "empty"))
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("# hello\n")
    with open(os.path.join(root, "src", "main.py"), "w") as f:
        f.write("print('hi')\n")
    os.chmod(os.path.join(root, "src", "main.py"), 0o755)
    with open(os.path.join(root, "src", "lib", "blob.bin"), "wb") as f:
        f.write(bytes(range(256)) * 4096)
    os.chmod(os.path.join(root, "src", "lib", "blob.bin"), 0o600)
    os.symlink("src/main.py", os.path.join(root, "run"))
    os.utime(os.path.join(root, "README.md"), (1_600_000_000, 1_600_000_000))


def snapshot(root):
    """path -> (kind, mode, content sha or link target) for everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest())
    return out


class Files(CtlTestCase):
    def setUp(self):
        super().setUp()
        self.local = tempfile.mkdtemp(prefix="sa-cli-files-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.local])
        self.tree = os.path.join(self.local, "tree")
        make_tree(self.tree)

    def remote(self, *parts):
        return os.path.join(self.agent.workdir, *parts)

    def ok(self, *args, **kw):
        p = self.ctl(*args, **kw)
        self.assertEqual(p.returncode, 0, "sandboxctl %r: %r" % (args, p.stderr))
        return p

    def failed(self, *args, status=1, **kw):
        p = self.ctl(*args, **kw)
        self.assertEqual(p.returncode, status, "sandboxctl %r: %r" % (args, p))
        return p

    # ---- upload

    def test_upload_of_a_directory_copies_its_contents_with_modes_links_and_mtimes(self):
        self.ok("upload", "-p", self.tree, "up/dir")
        self.assertEqual(snapshot(self.remote("up", "dir")), snapshot(self.tree))
        self.assertEqual(os.stat(self.remote("up", "dir", "README.md")).st_mtime, 1_600_000_000)

    def test_upload_gzip_on_the_way_gives_the_same_tree(self):
        self.ok("upload", "-z", "--parents", self.tree, "upz")
        self.assertEqual(snapshot(self.remote("upz")), snapshot(self.tree))

    def test_upload_of_a_tar_gz_extracts_it_and_of_a_plain_file_places_it(self):
        tgz = os.path.join(self.local, "t.tgz")
        subprocess.run(["tar", "czf", tgz, "-C", self.tree, "."], check=True)
        self.ok("upload", tgz, "fromtgz", "-p")        # options after the operands
        self.assertEqual(snapshot(self.remote("fromtgz")), snapshot(self.tree))
        self.ok("upload", os.path.join(self.tree, "README.md"), "fromtgz")
        p = self.failed("upload", tgz, "fromtgz/raw")  # raw does not exist, and no -p
        self.assertIn(b"fromtgz/raw", p.stderr)
        # a .tgz uploaded into an existing directory is extracted, not copied
        self.assertFalse(os.path.exists(self.remote("fromtgz", "t.tgz")))

    def test_upload_of_a_tar_zst_is_extracted(self):
        if not shutil.which("zstd"):
            self.skipTest("no zstd program to compress with (scripts/deps --test installs it)")
        tzst = os.path.join(self.local, "t.tar.zst")
        subprocess.run(["tar", "--zstd", "-cf", tzst, "-C", self.tree, "."], check=True)
        if "zstd" not in self.c.hello["capabilities"]:
            p = self.failed("upload", "-p", tzst, "fromzst")
            self.assertIn(b"bad_archive", p.stderr)
            return
        self.ok("upload", "-p", tzst, "fromzst")
        self.assertEqual(snapshot(self.remote("fromzst")), snapshot(self.tree))

    def test_upload_of_a_single_file_lands_under_its_name(self):
        os.makedirs(self.remote("single"))
        self.ok("upload", os.path.join(self.tree, "src", "main.py"), "single")
        st = os.stat(self.remote("single", "main.py"))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o755)

    def test_upload_of_a_tar_on_stdin(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            t.add(self.tree, arcname=".")
        self.ok("upload", "-p", "-", "stdin", input=buf.getvalue())
        self.assertEqual(snapshot(self.remote("stdin")), snapshot(self.tree))

    def test_refused_entries_are_listed_and_exit_1(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name in ("../escape.txt", "fine.txt"):
                ti = tarfile.TarInfo(name)
                ti.size = 2
                t.addfile(ti, io.BytesIO(b"x\n"))
        p = self.failed("upload", "-p", "-", "refused", input=buf.getvalue())
        self.assertIn(b"refused ../escape.txt: '..' in path", p.stderr)
        self.assertIn(b"1 entries (2 bytes) extracted, 1 refused", p.stderr)
        self.assertTrue(os.path.exists(self.remote("refused", "fine.txt")))
        self.assertFalse(os.path.exists(os.path.join(self.agent.workdir, "escape.txt")))

    def test_upload_into_a_missing_directory_without_p_names_it(self):
        p = self.failed("upload", self.tree, "no/such/dir")
        self.assertIn(b"no/such/dir", p.stderr)
        self.assertIn(b"ENOENT", p.stderr)

    def test_upload_of_a_missing_local_source_fails_without_contacting_anything(self):
        p = self.failed("upload", os.path.join(self.local, "nope"), "x")
        self.assertIn(b"nope", p.stderr)

    def test_an_unreadable_local_file_cancels_the_upload(self):
        if os.geteuid() == 0:
            self.skipTest("root reads every local file: no unreadable file to test with")
        os.chmod(os.path.join(self.tree, "src", "lib", "blob.bin"), 0)
        p = self.failed("upload", "-p", self.tree, "cancelled")
        self.assertIn(b"blob.bin", p.stderr)

    # ---- download

    def test_download_round_trip_plain_and_gzip(self):
        self.ok("upload", "-p", self.tree, "dl")
        for flags, mode in (((), "r:"), (("-z",), "r:gz")):
            p = self.ok("download", *flags, "dl")      # stdout is a pipe, not a terminal
            dest = tempfile.mkdtemp(dir=self.local)
            with tarfile.open(fileobj=io.BytesIO(p.stdout), mode=mode) as t:
                t.extractall(dest)
            self.assertEqual(snapshot(os.path.join(dest, "dl")), snapshot(self.tree))

    def test_download_of_a_missing_path_writes_nothing_and_names_it(self):
        self.ok("upload", "-p", self.tree, "dl2")
        p = self.failed("download", "dl2", "missing-thing")
        self.assertEqual(p.stdout, b"")
        self.assertIn(b"missing-thing", p.stderr)
        self.assertIn(b"ENOENT", p.stderr)

    # ---- get / put

    def test_put_then_get_round_trip_with_mode_and_parents(self):
        data = os.urandom(3 << 20)
        self.ok("put", "-", "deep/er/file.bin", "--mode", "640", input=data)
        st = os.stat(self.remote("deep", "er", "file.bin"))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.assertEqual(self.ok("get", "deep/er/file.bin").stdout, data)
        local = os.path.join(self.local, "got.bin")
        self.ok("get", "deep/er/file.bin", local)
        with open(local, "rb") as f:
            self.assertEqual(f.read(), data)
        self.ok("get", "deep/er/file.bin", self.local)           # into a directory
        with open(os.path.join(self.local, "file.bin"), "rb") as f:
            self.assertEqual(f.read(), data)
        self.ok("put", "-", "deep/er/file.bin", "--append", input=b"tail")
        self.assertEqual(self.ok("get", "deep/er/file.bin").stdout, data + b"tail")

    def test_put_of_a_local_file_replaces_the_remote_one(self):
        with open(self.remote("victim.txt"), "w") as f:
            f.write("old")
        os.chmod(self.remote("victim.txt"), 0o600)
        self.ok("put", os.path.join(self.tree, "README.md"), "victim.txt")
        with open(self.remote("victim.txt")) as f:
            self.assertEqual(f.read(), "# hello\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.remote("victim.txt")).st_mode), 0o600,
                         "the old file's mode is kept without --mode")

    def test_get_of_a_missing_file_fails_and_leaves_no_local_file(self):
        local = os.path.join(self.local, "never.txt")
        p = self.failed("get", "no/such.txt", local)
        self.assertIn(b"no/such.txt", p.stderr)
        self.assertIn(b"ENOENT", p.stderr)
        self.assertEqual([n for n in os.listdir(self.local) if n.startswith("never")], [])

    def test_get_of_a_directory_is_eisdir(self):
        os.makedirs(self.remote("adir"), exist_ok=True)
        p = self.failed("get", "adir")
        self.assertIn(b"EISDIR", p.stderr)

    # ---- stat, ls

    def test_stat_and_stat_json(self):
        self.ok("upload", "-p", self.tree, "st")
        out = self.ok("stat", "st/run").stdout.decode()
        self.assertIn("type: symlink", out)
        self.assertIn("target: src/main.py", out)
        j = json.loads(self.ok("stat", "-L", "--json", "st/run").stdout)
        self.assertEqual((j["type"], j["mode"]), ("file", 0o755))
        p = self.failed("stat", "st/nothing")
        self.assertIn(b"st/nothing", p.stderr)

    def test_ls_sorted_long_and_json(self):
        self.ok("upload", "-p", self.tree, "ls")
        self.assertEqual(self.ok("ls", "ls").stdout.decode().split("\n"),
                         ["README.md", "empty", "run", "src", ""])
        long = self.ok("ls", "-l", "ls").stdout.decode().splitlines()
        self.assertTrue(long[0].startswith("-rw-r--r--"), long)
        self.assertTrue(any(l.startswith("lrwxrwxrwx") and l.endswith("run -> src/main.py")
                            for l in long), long)
        js = [json.loads(l) for l in self.ok("ls", "--json", "ls/src").stdout.splitlines()]
        self.assertEqual(sorted(e["name"] for e in js), ["lib", "main.py"])
        p = self.failed("ls", "ls/README.md")
        self.assertIn(b"ENOTDIR", p.stderr)

    def test_ls_of_a_big_directory_lists_everything(self):
        d = self.remote("big")
        os.makedirs(d)
        for i in range(1500):
            open(os.path.join(d, "f%05d" % i), "w").close()
        names = self.ok("ls", "big").stdout.decode().split()
        self.assertEqual(names, ["f%05d" % i for i in range(1500)])

    # ---- mkdir, rm, mv, chmod

    def test_mkdir_rm_mv_chmod(self):
        self.ok("mkdir", "-p", "-m", "700", "m/n/o")
        self.assertEqual(stat.S_IMODE(os.stat(self.remote("m", "n", "o")).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(self.remote("m")).st_mode), 0o755)
        p = self.failed("mkdir", "m")
        self.assertIn(b"EEXIST", p.stderr)
        self.ok("mv", "m", "m2")
        self.assertTrue(os.path.isdir(self.remote("m2", "n", "o")))
        self.ok("chmod", "711", "m2", "m2/n")
        self.assertEqual(stat.S_IMODE(os.stat(self.remote("m2", "n")).st_mode), 0o711)
        p = self.failed("rm", "m2")
        self.assertIn(b"ENOTEMPTY", p.stderr)
        p = self.failed("rm", "-r", "m2", "not-there")      # both tried, one fails
        self.assertIn(b"not-there", p.stderr)
        self.assertFalse(os.path.exists(self.remote("m2")))
        self.ok("rm", "-rf", "not-there")

    def test_mv_no_clobber(self):
        for n in ("a", "b"):
            with open(self.remote(n), "w") as f:
                f.write(n)
        p = self.failed("mv", "-n", "a", "b")
        self.assertIn(b"EEXIST", p.stderr)
        self.ok("mv", "a", "b")
        with open(self.remote("b")) as f:
            self.assertEqual(f.read(), "a")

    def test_rm_r_does_not_follow_a_symlink_out(self):
        outside = tempfile.mkdtemp(dir=self.local)
        open(os.path.join(outside, "keep"), "w").close()
        os.makedirs(self.remote("rmme"))
        os.symlink(outside, self.remote("rmme", "out"))
        self.ok("rm", "-r", "rmme")
        self.assertTrue(os.path.exists(os.path.join(outside, "keep")))

    def test_usage_errors_exit_2(self):
        self.failed("upload", "only-one", status=2)
        self.failed("chmod", "999", "x", status=2)
        self.failed("mv", "a", status=2)
        self.failed("put", status=2)


if __name__ == "__main__":
    unittest.main()
