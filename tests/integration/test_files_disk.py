"""A full disk during file operations (PROTOCOL.md "Files"): an upload, a
write and a download into a 4 MiB tmpfs mounted inside the agent's workdir
fail with ENOSPC naming the path, leave nothing half-done where the protocol
promises it (write keeps the old file, no temporary files stay behind), and
the agent keeps serving. Needs root to mount the tmpfs: skipped visibly
otherwise."""

import io
import os
import subprocess
import tarfile
import unittest

from agentlib import AgentTestCase, T

IS_ROOT = os.geteuid() == 0
SIZE = 4 << 20


def tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@unittest.skipUnless(IS_ROOT, "needs root to mount a small tmpfs: full-disk errors not exercised")
class FullDisk(AgentTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.small = os.path.join(cls.agent.workdir, "small")
        os.mkdir(cls.small)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % SIZE, "tmpfs", cls.small],
                           capture_output=True, timeout=30)
        if p.returncode != 0:
            raise unittest.SkipTest("cannot mount a tmpfs here: %s" % p.stderr.decode().strip())
        cls.addClassCleanup(subprocess.run, ["umount", "-l", cls.small], timeout=30)

    def setUp(self):
        super().setUp()
        subprocess.run(["sh", "-c", "rm -rf %s/* %s/.[!.]*" % (self.small, self.small)])

    def transfer(self, type_, data, **fields):
        """A write or upload of data, chunks within the window (agentlib):
        (first reply, final message, chunk replies)."""
        send = self.c.upload if type_ == "upload" else self.c.write_file
        final, acks = send(data, **fields) if type_ == "upload" else send(fields.pop("path"), data, **fields)
        return self.c.last_stream.first, final, acks

    def leftovers(self):
        return [n for n in os.listdir(self.small) if n.startswith(".sa-")]

    def test_upload_past_the_end_of_the_disk_is_enospc_with_the_path(self):
        data = tar_of([("a.txt", b"small\n"), ("big.bin", os.urandom(SIZE * 2)),
                       ("after.txt", b"never\n")])
        first, final, acks = self.transfer("upload", data, dest="small")
        self.assertEqual(first["type"], "ok")
        self.assertErrorReply(final, "ENOSPC")
        self.assertEqual(final["path"], "big.bin")
        self.assertEqual(final["entries"], 1)
        self.assertTrue(os.path.exists(os.path.join(self.small, "a.txt")))
        self.assertFalse(os.path.exists(os.path.join(self.small, "big.bin")),
                         "the entry that failed is removed")
        self.assertFalse(os.path.exists(os.path.join(self.small, "after.txt")))
        self.assertEqual(self.leftovers(), [])
        for a in acks:
            self.assertIn(a["type"], ("ok", "error"))
            if a["type"] == "error":     # queued when it stopped, or sent after its error
                self.assertIn(a["code"], ("stopped", "not_found"))
        self.assertStillServes()

    def test_write_past_the_end_of_the_disk_keeps_the_old_file(self):
        path = os.path.join(self.small, "keep.txt")
        with open(path, "wb") as f:
            f.write(b"old content")
        first, final, _ = self.transfer("write", os.urandom(SIZE * 2), path="small/keep.txt")
        self.assertEqual(first["type"], "ok")
        self.assertErrorReply(final, "ENOSPC")
        self.assertEqual(final["path"], "small/keep.txt")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"old content")
        self.assertEqual([n for n in os.listdir(self.small) if n != "keep.txt"], [])
        self.assertStillServes()

    def test_mkdir_and_upload_into_a_full_disk_then_the_agent_serves_on(self):
        with open(os.path.join(self.small, "filler"), "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (256 << 10))
            except OSError:
                pass
        first, final, _ = self.transfer("upload", tar_of([("f", b"1" * 8192)]), dest="small/x",
                                        parents=True)
        self.assertEqual(final["type"], "error", final)
        self.assertIn(final["code"], ("ENOSPC", "EDQUOT"))
        out = self.c.run(["echo", "still here"])
        self.assertEqual(out.stdout, b"still here\n")


if __name__ == "__main__":
    unittest.main()
