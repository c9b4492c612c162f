// The unmodified @vercel/sandbox SDK through sandbox-gateway's qemu
// provisioner (tests/gateway/qemu_e2e.py runs it): create → runCommand →
// writeFiles → readFile → stop, each result checked.
// Environment: SDK_DIR (where npm installed @vercel/sandbox), GW_URL, GW_TOKEN.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.SDK_DIR, "node_modules", "x.js"));
const { Sandbox } = require("@vercel/sandbox");
const { fetch: undiciFetch } = require("undici");

const fetch = (url, init) =>
  undiciFetch(String(url).replace("https://vercel.com/api", process.env.GW_URL), init);
const sbx = await Sandbox.create({ token: process.env.GW_TOKEN, teamId: "team_local",
                                   projectId: "prj_local", fetch, env: { E2E: "sdk in a vm" } });
try {
  const r = await sbx.runCommand("sh", ["-c", "echo $E2E; id -un; uname -s"]);
  assert.equal(r.exitCode, 0);
  assert.equal(await r.stdout(), "sdk in a vm\nvercel-sandbox\nLinux\n");
  const pid1 = await sbx.runCommand({ cmd: "readlink", args: ["/proc/1/exe"], sudo: true });
  assert.equal(await pid1.stdout(), "/usr/sbin/sandbox-agent\n");
  const bin = Buffer.from(Array.from({ length: 70000 }, (_, i) => (i * 7) & 255));
  await sbx.writeFiles([{ path: "hello.txt", content: Buffer.from("hello from the sdk\n") },
                        { path: "data/bin.dat", content: bin }]);
  assert.equal((await sbx.readFileToBuffer({ path: "hello.txt" })).toString(), "hello from the sdk\n");
  assert.deepEqual(await sbx.readFileToBuffer({ path: "/vercel/sandbox/data/bin.dat" }), bin);
  assert.equal(await sbx.readFileToBuffer({ path: "missing.txt" }), null);
} finally {
  await sbx.stop();
}
assert.equal(sbx.status, "stopped");
console.log("qemu_e2e.mjs: ok");
