// The unmodified @vercel/sandbox SDK against sandbox-gateway: one scenario per
// run (`node sdk_scenarios.mjs NAME`), each asserting what the SDK returns.
// Environment: SDK_DIR (where npm installed @vercel/sandbox), GW_URL, GW_TOKEN.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const require = createRequire(path.join(process.env.SDK_DIR, "node_modules", "x.js"));
const { Sandbox } = require("@vercel/sandbox");
const { fetch: undiciFetch } = require("undici");

const GW = process.env.GW_URL;
// The 10-line snippet of docs/gateway.md: every SDK request goes to the gateway.
const gatewayFetch = (url, init) =>
  undiciFetch(String(url).replace("https://vercel.com/api", GW), init);
const creds = { token: process.env.GW_TOKEN, teamId: "team_local", projectId: "prj_local",
                fetch: gatewayFetch };

const create = (extra = {}) => Sandbox.create({ ...creds, ...extra });
const run = async (sbx, cmd, args = [], opts = {}) => sbx.runCommand({ cmd, args, ...opts });

const scenarios = {
  async create_env() {
    const sbx = await create({ env: { GREETING: "hello", KEEP: "kept" } });
    try {
      assert.equal(sbx.status, "running");
      let r = await run(sbx, "sh", ["-c", 'echo "$GREETING $KEEP"']);
      assert.equal(r.exitCode, 0);
      assert.equal(await r.stdout(), "hello kept\n");
      r = await run(sbx, "sh", ["-c", 'echo "$GREETING $KEEP"'], { env: { GREETING: "override" } });
      assert.equal(await r.stdout(), "override kept\n", "per-command env wins");
      const again = await Sandbox.get({ ...creds, name: sbx.name });
      assert.equal(again.currentSession().sessionId, sbx.currentSession().sessionId);
      const before = sbx.currentSession().timeout;
      await sbx.extendTimeout(60000);
      assert.equal(sbx.currentSession().timeout, before + 60000);
      const sessions = await sbx.listSessions();
      assert.deepEqual(sessions.sessions.map((s) => s.id), [sbx.currentSession().sessionId]);
      await assert.rejects(sbx.snapshot(), /not_supported|not supported/);
    } finally { await sbx.stop(); }
  },

  async attached_detached() {
    const sbx = await create();
    try {
      const r = await run(sbx, "sh", ["-c", "echo out; echo err >&2; exit 3"]);
      assert.equal(r.exitCode, 3);
      assert.equal(await r.stdout(), "out\n");
      assert.equal(await r.stderr(), "err\n");
      const d = await run(sbx, "sh", ["-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"],
                          { detached: true });
      assert.equal(d.exitCode, null);
      const seen = [];
      for await (const log of d.logs()) seen.push(log.stream + ":" + log.data);
      assert.equal(seen.join(""), "stdout:line1\nstdout:line2\nstdout:line3\n");
      const done = await d.wait();
      assert.equal(done.exitCode, 0);
      // replay long after the exit, from a fresh getCommand
      await new Promise((res) => setTimeout(res, 300));
      const again = await sbx.getCommand(d.cmdId);
      assert.equal(await again.stdout(), "line1\nline2\nline3\n");
      assert.equal((await again.wait()).exitCode, 0);
      await assert.rejects(sbx.getCommand("cmd_999999"));
    } finally { await sbx.stop(); }
  },

  async kill_signals() {
    const sbx = await create();
    try {
      const a = await run(sbx, "sleep", ["100"], { detached: true });
      await a.kill();
      assert.equal((await a.wait()).exitCode, 143, "TERM by default");
      const b = await run(sbx, "sh", ["-c", "trap '' TERM; sleep 100"], { detached: true });
      await b.kill("SIGKILL");
      assert.equal((await b.wait()).exitCode, 137);
    } finally { await sbx.stop(); }
  },

  async timeout_sudo_cwd() {
    const sbx = await create();
    try {
      const t0 = Date.now();
      const t = await run(sbx, "sleep", ["30"], { timeoutMs: 500 });
      assert.equal(t.exitCode, 137);
      assert.ok(Date.now() - t0 < 20000);
      assert.equal(await (await run(sbx, "id", ["-u"], { sudo: true })).stdout(), "0\n");
      const user = await (await run(sbx, "id", ["-un"])).stdout();
      assert.notEqual(user, "root\n", "commands run as the sandbox user");
      assert.equal(await (await run(sbx, "pwd")).stdout(), sbx.currentSession().cwd + "\n");
      assert.equal(await (await run(sbx, "pwd", [], { cwd: "/tmp" })).stdout(), "/tmp\n");
      await run(sbx, "mkdir", ["-p", "sub"]);
      assert.equal(await (await run(sbx, "pwd", [], { cwd: "sub" })).stdout(),
                   sbx.currentSession().cwd + "/sub\n", "a relative cwd is under the session cwd");
      await assert.rejects(run(sbx, "no-such-program-x"), /ENOENT|No such file/);
    } finally { await sbx.stop(); }
  },

  async concurrent_big_unicode() {
    const sbx = await create();
    try {
      const outs = await Promise.all([...Array(10).keys()].map(async (i) =>
        (await run(sbx, "sh", ["-c", `sleep 0.3; echo ${i}`])).stdout()));
      assert.deepEqual(outs, [...Array(10).keys()].map((i) => `${i}\n`));
      const big = await run(sbx, "sh", ["-c", "head -c 3000000 /dev/zero | tr '\\0' a"]);
      const s = await big.stdout();
      assert.equal(s.length, 3000000);
      assert.ok(/^a+$/.test(s));
      // non-ASCII in megabytes of output: the SDK's NDJSON parser decodes each
      // network chunk on its own, so raw UTF-8 split between two chunks would
      // become U+FFFD; the gateway's lines are ASCII (\uXXXX)
      const many = await run(sbx, "sh", ["-c",
        "l=$(printf 'caf\\303\\251 \\344\\270\\255 \\360\\237\\230\\200'); yes \"$l\" | head -n 200000"]);
      assert.ok((await many.stdout()) === "café 中 😀\n".repeat(200000), "3 MB of non-ASCII output altered");
      // characters split across writes (and so across agent chunks) come out whole
      const u = await run(sbx, "sh", ["-c",
        "printf 'caf\\303'; sleep 0.2; printf '\\251 \\360\\237'; sleep 0.2; printf '\\230\\200 \\377!'"]);
      assert.equal(await u.stdout(), "café 😀 \uFFFD!");
      const d = await run(sbx, "sh", ["-c", "printf '\\344\\270'; sleep 0.2; printf '\\255\\346\\226\\207'"],
                          { detached: true });
      await d.wait();
      assert.equal(await d.stdout(), "中文");
    } finally { await sbx.stop(); }
  },

  async files() {
    const sbx = await create();
    const absDir = `/tmp/gw-sdk-${process.pid}-${Date.now()}`;
    try {
      const bin = Buffer.from([...Array(256).keys()]);
      const longName = "l".repeat(150) + ".txt";
      await sbx.writeFiles([
        { path: "bin.dat", content: bin },
        { path: "run.sh", content: Buffer.from("#!/bin/sh\necho ran\n"), mode: 0o755 },
        { path: `deep/${longName}`, content: Buffer.from("long") },
        { path: "ünïcödé/日本.txt", content: Buffer.from("uni") },
        { path: `${absDir}/abs.txt`, content: Buffer.from("absolute") },
      ]);
      assert.deepEqual(await sbx.readFileToBuffer({ path: "bin.dat" }), bin);
      assert.equal((await run(sbx, "./run.sh")).exitCode, 0);
      assert.equal(await (await run(sbx, "stat", ["-c", "%a", "run.sh"])).stdout(), "755\n");
      assert.equal((await sbx.readFileToBuffer({ path: `deep/${longName}` })).toString(), "long");
      assert.equal((await sbx.readFileToBuffer({ path: "ünïcödé/日本.txt" })).toString(), "uni");
      assert.equal((await sbx.readFileToBuffer({ path: `${absDir}/abs.txt` })).toString(), "absolute");
      assert.equal((await sbx.readFileToBuffer({ path: "abs.txt", cwd: absDir })).toString(), "absolute");
      const owner = await (await run(sbx, "stat", ["-c", "%U", "bin.dat"])).stdout();
      assert.equal(owner, await (await run(sbx, "id", ["-un"])).stdout(), "files belong to the default user");
      const stream = await sbx.readFile({ path: "bin.dat" });
      const chunks = [];
      for await (const c of stream) chunks.push(c);
      assert.deepEqual(Buffer.concat(chunks), bin);
      const local = path.join(os.tmpdir(), `gw-dl-${process.pid}`);
      assert.equal(await sbx.downloadFile({ path: "bin.dat" }, { path: local }), local);
      assert.deepEqual(fs.readFileSync(local), bin);
      fs.unlinkSync(local);
      assert.equal(await sbx.readFile({ path: "missing.txt" }), null);
      assert.equal(await sbx.readFileToBuffer({ path: "missing.txt" }), null);
      assert.equal(await sbx.downloadFile({ path: "missing.txt" }, { path: local }), null);
      await sbx.mkDir("made");
      assert.equal(await (await run(sbx, "stat", ["-c", "%F", "made"])).stdout(), "directory\n");
      await assert.rejects(sbx.mkDir("made"), "mkdir of an existing directory fails");
      await assert.rejects(sbx.mkDir("no/such/parent"), "mkDir is not recursive");
      await run(sbx, "rm", ["-rf", absDir], { sudo: true });
    } finally { await sbx.stop(); }
  },

  async fs_helpers() {
    const sbx = await create();
    try {
      const f = sbx.fs;
      await f.mkdir("a/b", { recursive: true });
      await f.writeFile("a/b/x.txt", "one");
      await f.appendFile("a/b/x.txt", "two");
      assert.equal(await f.readFile("a/b/x.txt", "utf8"), "onetwo");
      assert.deepEqual((await f.readdir("a/b")).sort(), ["x.txt"]);
      const st = await f.stat("a/b/x.txt");
      assert.equal(st.size, 6);
      assert.ok(st.isFile());
      assert.equal(await f.exists("a/b/x.txt"), true);
      assert.equal(await f.exists("a/b/nope"), false);
      await f.rename("a/b/x.txt", "a/b/y.txt");
      await f.chmod("a/b/y.txt", 0o600);
      assert.equal((await f.stat("a/b/y.txt")).mode & 0o777, 0o600);
      await f.copyFile("a/b/y.txt", "a/z.txt");
      assert.equal(await f.readFile("a/z.txt", "utf8"), "onetwo");
      await f.unlink("a/z.txt");
      await f.rm("a", { recursive: true });
      assert.equal(await f.exists("a"), false);
      await assert.rejects(f.readFile("a/b/y.txt"), /ENOENT/);
    } finally { await sbx.stop(); }
  },

  async stop_and_resume() {
    const sbx = await create();
    const first = sbx.currentSession().sessionId;
    const d = await run(sbx, "sh", ["-c", "echo started; sleep 100"], { detached: true });
    let began;
    const opened = new Promise((res) => { began = res; });
    const logs = (async () => { for await (const _ of d.logs()) began(); })()
      .then(() => null, (err) => err);
    await opened;   // the stream is open when the session stops
    const stopped = await sbx.stop();
    assert.equal(stopped.status, "stopped");
    assert.equal((await logs)?.code, "sandbox_stopped", "an open stream ends with sandbox_stopped");
    // a command after a stop resumes the sandbox on a new session (the SDK's 410 path)
    const r = await run(sbx, "echo", ["back"]);
    assert.equal(await r.stdout(), "back\n");
    assert.notEqual(sbx.currentSession().sessionId, first);
    await sbx.stop();
    const listed = await Sandbox.list({ ...creds });
    assert.ok(listed.sandboxes.some((s) => s.name === sbx.name));
    await sbx.delete();
  },

  // docs/gateway.md "Routes": the url comes from sandbox.routes (domain() is Vercel's)
  async routes() {
    const [port, port2] = [await freePort(), await freePort()];
    const sbx = await create({ ports: [port] });
    try {
      assert.deepEqual(sbx.routes.map((r) => r.port), [port]);
      assert.match(sbx.routes[0].url, /^http:\/\/127\.0\.0\.1:\d+$/);
      await run(sbx, "sh", ["-c", `echo routed > index.html && exec python3 -m http.server ${port} --bind 127.0.0.1`],
                { detached: true });
      assert.equal(await getWhenUp(sbx.routes[0].url), "routed\n");
      await sbx.update({ ports: [port, port2] });
      assert.deepEqual(sbx.routes.map((r) => r.port).sort(), [port, port2].sort());
      const again = await Sandbox.get({ ...creds, name: sbx.name });
      assert.deepEqual(again.routes, sbx.routes);
    } finally { await sbx.stop(); }
  },
};

function freePort() {
  return new Promise((res, rej) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    }).on("error", rej);
  });
}

async function getWhenUp(url) {
  for (let i = 0; ; i++) {
    try {
      const r = await undiciFetch(url + "/index.html");
      if (r.status === 200 || i > 200)
        return await r.text();
    } catch (err) {   // the server is not up yet: the route closes the connection
      if (i > 200)
        throw err;
    }
    await new Promise((res) => setTimeout(res, 100));
  }
}

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}`);
  process.exit(2);
}
try {
  await scenarios[name]();
  console.log(`ok ${name}`);
  process.exit(0);
} catch (err) {
  console.error(err);
  process.exit(1);
}
