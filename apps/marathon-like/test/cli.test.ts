// The marathon-like binary: flags, environment variables, bad input.
import { describe, expect, it } from "@effect/vitest"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { client, eventually } from "./support/harness.ts"

const bin = fileURLToPath(new URL("../dist/bin/marathon-like.js", import.meta.url))

describe("marathon-like CLI", () => {
  it("prints usage, and rejects unknown commands and bad flag values with exit code 2", () => {
    const help = spawnSync(process.execPath, [bin, "--help"], { encoding: "utf8" })
    expect(help.status).toBe(0)
    expect(help.stderr + help.stdout).toMatch(/--master/)
    const unknown = spawnSync(process.execPath, [bin, "launch"], { encoding: "utf8" })
    expect(unknown.status).toBe(2)
    expect(unknown.stderr).toMatch(/unknown command "launch"/)
    const badPort = spawnSync(process.execPath, [bin, "serve", "--http-port", "eighty"], { encoding: "utf8" })
    expect(badPort.status).toBe(2)
    expect(badPort.stderr).toMatch(/--http-port: expected a non-negative integer, got "eighty"/)
    const badState = spawnSync(process.execPath, [bin, "serve", "--http-port", "0", "--state", "postgres://x"], { encoding: "utf8", timeout: 20_000 })
    expect(badState.status).not.toBe(0)
    expect(badState.stderr).toMatch(/postgres/)
  })

  it.live("serve takes flags and environment variables (flags win) and keeps state in a SQLite file", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "marathon-cli-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const child = spawn(process.execPath, [bin, "serve", "--http-port", "0", "--framework-name", "from-flag"], {
        env: { ...process.env, MARATHON_MASTER: cluster.master, MARATHON_BIND: "127.0.0.1", MARATHON_FRAMEWORK_NAME: "from-env", MARATHON_STATE: `sqlite:${path.join(dir, "sub", "state.db")}` },
        stdio: ["ignore", "pipe", "inherit"]
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      let out = ""
      child.stdout.on("data", (c) => (out += c))
      const url = yield* eventually(Effect.sync(() => /listening on (\S+)/.exec(out)?.[1]), 30_000, "listening")
      const api = client(url)
      const info = yield* eventually(Effect.map(api.get("/v2/info"), (r) => (r.status === 200 ? r.body : undefined)), 30_000, "leader")
      expect(info.marathon_config.framework_name).toBe("from-flag")
      expect(info.marathon_config.master).toBe(cluster.master)
      expect((yield* api.post("/v2/apps", { id: "/cli", cmd: "sleep 100", cpus: 0.1, mem: 16 })).status).toBe(201)
      expect(fs.existsSync(path.join(dir, "sub", "state.db"))).toBe(true)
      const state = yield* eventually(Effect.map(cluster.operator.state, (s) => (s.frameworks.some((f) => f.info?.name === "from-flag") ? s : undefined)), 30_000, "framework registered")
      expect(state.frameworks.map((f) => f.info?.name)).toContain("from-flag")
    }), 90_000)
})
