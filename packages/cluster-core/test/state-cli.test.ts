import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { EtcdServer, StateStore } from "@berth/storage"

const berth = fileURLToPath(new URL("../dist/bin/berth.js", import.meta.url))
const run = (...args: Array<string>) =>
  Effect.promise(() =>
    promisify(execFile)(process.execPath, [berth, "state", ...args], { encoding: "utf8", timeout: 20_000 }).then(
      ({ stderr, stdout }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr })
    )
  )

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-state-cli-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const seed = Effect.gen(function*() {
  const store = yield* StateStore.StateStore
  yield* store.put("frameworks/f1", new TextEncoder().encode(JSON.stringify({ name: "hello", roles: ["web"] })))
  yield* store.put("agents/a1", new TextEncoder().encode("10.0.0.5:5051"))
  yield* store.put("blob", new Uint8Array([0xff, 0x00, 0x01]))
})

describe("berth state", () => {
  it.live("lists, gets and dumps a SQLite store as JSON, read-only", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "master.db")
      yield* seed.pipe(Effect.provide(StateStore.layerSqlite({ path: file })))
      const listed = yield* run("--store", `sqlite:${file}`)
      expect(listed.code).toBe(0)
      const list = JSON.parse(listed.stdout)
      expect(list).toMatchObject({ store: `sqlite:${file}`, revision: 3, prefix: "", count: 3 })
      expect(list.keys.map((k: { key: string }) => k.key)).toEqual(["agents/a1", "blob", "frameworks/f1"])
      expect(list.keys[2]).toEqual({ key: "frameworks/f1", version: 1, revision: 1, bytes: 32 })

      const dumped = JSON.parse((yield* run("--store", `sqlite:${file}`, "--dump", "--prefix", "frameworks/")).stdout)
      expect(dumped.entries).toEqual([
        { key: "frameworks/f1", version: 1, revision: 1, bytes: 32, json: { name: "hello", roles: ["web"] } }
      ])
      expect(JSON.parse((yield* run("--store", `sqlite:${file}`, "--get", "agents/a1")).stdout)).toMatchObject({ text: "10.0.0.5:5051" })
      expect(JSON.parse((yield* run("--store", `sqlite:${file}`, "--get", "blob")).stdout)).toMatchObject({ base64: "/wAB" })

      const missing = yield* run("--store", `sqlite:${file}`, "--get", "nope")
      expect(missing.code).toBe(1)
      expect(missing.stderr.trim()).toBe(`berth state: key "nope" not found in sqlite:${file}`)
      // inspecting never writes
      const before = fs.statSync(file).mtimeMs
      yield* run("--store", `sqlite:${file}`)
      expect(fs.statSync(file).mtimeMs).toBe(before)
    }), 60_000)

  it.live("reads an etcd store", () =>
    Effect.gen(function*() {
      const etcd = yield* EtcdServer.start()
      yield* seed.pipe(Effect.provide(StateStore.layerEtcd({ endpoints: [etcd.endpoint], prefix: "berth/" })))
      const result = yield* run("--store", `etcd:${etcd.endpoint.replace("http://", "")}`, "--dump")
      expect(result.code).toBe(0)
      const dump = JSON.parse(result.stdout)
      expect(dump.entries.map((e: { key: string }) => e.key)).toEqual(["agents/a1", "blob", "frameworks/f1"])
      expect(dump.entries[2].json).toEqual({ name: "hello", roles: ["web"] })
    }), 60_000)

  it.live.each([
    [["--store", "postgres:x"], 2, /^berth state: --store: invalid store URL "postgres:x": unknown scheme/],
    [["--store", "sqlite:/nonexistent/berth/master.db"], 1, /^berth state: SQLite store at .*: open failed: no such file/],
    [["--get", "k", "--dump"], 2, /^berth state: --get: reads one key; it cannot be combined with --dump or --prefix$/],
    [["--store", "etcd:127.0.0.1:1"], 1, /^berth state: etcd store at http:\/\/127\.0\.0\.1:1: .*etcd is unreachable/],
    [["--bogus"], 2, /^berth state: Unknown option '--bogus'/]
  ])("berth state %j fails with one line and exit code %i", ([args, code, message]) =>
    Effect.gen(function*() {
      const result = yield* run(...(args as Array<string>))
      expect(result.code).toBe(code)
      const lines = result.stderr.trim().split("\n")
      expect(lines).toHaveLength(1)
      expect(lines[0]).toMatch(message as RegExp)
      expect(result.stdout).toBe("")
    }), 30_000)
})
