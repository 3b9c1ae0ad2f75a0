// When the master removes the framework (torn down, or its id refused), marathon-like stops
// with an explained error (and the CLI exits non-zero) instead of retrying forever; the stored
// id can then be forgotten to start over as a new framework with the same apps.
import { describe, expect, it } from "@effect/vitest"
import { Server } from "@berth/marathon-like"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Layer } from "effect"
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { client, eventually, serve } from "./support/harness.ts"

const bin = fileURLToPath(new URL("../dist/bin/marathon-like.js", import.meta.url))

/** A scheduler session of our own, subscribed with `frameworkId` when given. */
const session = (master: string, frameworkId?: string) =>
  Effect.map(
    Layer.build(SchedulerSession.layer({ master, framework: { name: "intruder", roles: ["marathon"], ...(frameworkId === undefined ? {} : { frameworkId }) } })),
    (context) => Context.get(context, SchedulerSession.SchedulerSession)
  )

/** Runs the CLI to its exit (or kills it after `timeoutMs`); answers the exit code and output. */
const run = (args: ReadonlyArray<string>, env: Record<string, string>, timeoutMs: number) =>
  Effect.promise(() =>
    new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      let err = ""
      child.stdout.on("data", (c) => (out += c))
      child.stderr.on("data", (c) => (err += c))
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
      child.on("exit", (code) => {
        clearTimeout(timer)
        resolve({ code, out, err })
      })
    })
  )

describe("framework removed", () => {
  it.live("a torn-down framework stops the server with an explained error; it does not retry", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      yield* api.post("/v2/apps", { id: "/w", cmd: "sleep 1000", cpus: 0.1, mem: 16 })
      const frameworkId: string = yield* eventually(Effect.map(api.get("/v2/info"), (r) => r.body?.frameworkId ?? undefined), 30_000, "framework id")
      yield* eventually(Effect.map(api.get("/v2/apps/w"), (r) => (r.body.app.tasksRunning === 1 ? true : undefined)), 60_000, "running")

      // Another scheduler takes the framework over and tears it down.
      const intruder = yield* session(cluster.master, frameworkId)
      expect(yield* intruder.frameworkId).toBe(frameworkId)
      yield* intruder.teardown

      const error = yield* server.stopped.pipe(Effect.timeout("30 seconds"), Effect.flip)
      expect(error._tag).toBe("FrameworkGone")
      expect((error as Server.FrameworkGone).frameworkId).toBe(frameworkId)
      expect(error.message).toMatch(/can never subscribe again/)
      expect(server.isLeader()).toBe(false)
      // The API says why, instead of proxying to nobody.
      const info = yield* api.get("/v2/info")
      expect(info.status).toBe(503)
      expect(info.body.message).toContain(`removed framework ${frameworkId}`)
      // No new framework was registered behind the operator's back, a while later either.
      yield* Effect.sleep("2 seconds")
      expect((yield* cluster.operator.state).frameworks).toEqual([])
    }), 120_000)

  it.live("the CLI exits non-zero with the explanation; forget-framework lets it start over with the same apps", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "marathon-removed-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const state = `sqlite:${path.join(dir, "state.db")}`

      // A framework id the master has torn down, stored as marathon-like's, with one app.
      const old = yield* Effect.scoped(Effect.gen(function*() {
        const s = yield* session(cluster.master)
        const id = yield* s.frameworkId
        yield* s.teardown
        return id
      }))
      yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* serve(cluster.master, { store: state, frameworkName: "seed" })
        const api = client(server.url)
        yield* eventually(Effect.map(api.get("/v2/info"), (r) => (r.body?.frameworkId ? true : undefined)), 30_000, "seed leader")
        expect((yield* api.post("/v2/apps", { id: "/kept", cmd: "sleep 1000", cpus: 0.1, mem: 16, instances: 0 })).status).toBe(201)
      }))
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* StateStore.make(Layer.provide(StateStore.layerNamespace("marathon-like/"), StateStore.layerFromUrl(state)))
        yield* store.put("framework/id", new TextEncoder().encode(old))
      })).pipe(Effect.orDie)

      const env = { MARATHON_MASTER: cluster.master, MARATHON_BIND: "127.0.0.1", MARATHON_HTTP_PORT: "0", MARATHON_STATE: state }
      const refused = yield* run(["serve"], env, 60_000)
      expect(refused.code, refused.err).not.toBe(0)
      expect(refused.code).not.toBeNull()
      expect(refused.err).toContain(`the master removed framework ${old}`)
      expect(refused.err).toContain("marathon-like forget-framework")

      const forgot = spawnSync(process.execPath, [bin, "forget-framework", "--state", state], { encoding: "utf8", timeout: 30_000 })
      expect(forgot.status, forgot.stderr).toBe(0)
      expect(forgot.stdout).toMatch(/deleted the stored framework id/)

      // Started again: a new framework, the same apps.
      const child = spawn(process.execPath, [bin, "serve"], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] })
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      let out = ""
      child.stdout.on("data", (c) => (out += c))
      const url = yield* eventually(Effect.sync(() => /listening on (\S+)/.exec(out)?.[1]), 30_000, "listening")
      const api = client(url)
      const info = yield* eventually(Effect.map(api.get("/v2/info"), (r) => (r.status === 200 && r.body.frameworkId !== null ? r.body : undefined)), 30_000, "new framework")
      expect(info.frameworkId).not.toBe(old)
      expect((yield* api.get("/v2/apps/kept")).status).toBe(200)
    }), 150_000)
})
