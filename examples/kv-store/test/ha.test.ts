// kv-store with two scheduler replicas (two processes of `dist/main.js --lease-ttl`) on one
// SQLite file: the leader is SIGKILLed (it cannot resign: its lease must lapse); the standby
// leads, serves the operator API, and the service stays deployed with no task launched twice.
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Deferred, Effect, References } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const main = fileURLToPath(new URL("../dist/main.js", import.meta.url))

/** Starts a replica; `leads` completes with its operator API URL once it leads (it prints it then). */
const replica = (master: string, state: string) =>
  Effect.gen(function*() {
    const leads = yield* Deferred.make<string>()
    const child: ChildProcess = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(process.execPath, [main, "--master", master, "--state", state, "--lease-ttl", "2"], { stdio: ["ignore", "pipe", "ignore"] })),
      (c) => Effect.sync(() => c.kill("SIGKILL"))
    )
    let out = ""
    child.stdout!.on("data", (chunk) => {
      out += chunk
      const m = /operator API on (\S+)/.exec(out)
      if (m !== null) Deferred.doneUnsafe(leads, Effect.succeed(m[1]!))
    })
    return { child, leads }
  })

const getJson = (url: string) => Effect.promise(() => fetch(url).then((r) => r.json() as Promise<any>))

describe("kv-store replicas", () => {
  it.live("the leading replica is SIGKILLed; the standby leads once its lease lapses; the service stays deployed, no duplicate task", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:512;disk:256" })
      const state = path.join(cluster.workDir, "kv-store.db")
      const kvTasks = (s: v1.GetStateResponse) => s.tasks.filter((t) => t.info!.taskId.startsWith("kv-"))

      const a = yield* replica(cluster.master, state)
      const aUrl = yield* Deferred.await(a.leads).pipe(Effect.timeout("60 seconds"))
      const b = yield* replica(cluster.master, state)
      const deployed = yield* cluster.waitFor("three kv pods running", (s) =>
        kvTasks(s).filter((t) => t.state === v1.TaskState.RUNNING).length === 3, { timeout: 90_000 })
      // The standby does not lead while A does (it has not even started its operator API).
      expect(yield* Deferred.isDone(b.leads)).toBe(false)
      expect(deployed.frameworks).toHaveLength(1)
      const frameworkId = (yield* getJson(`${aUrl}/v1/state`)).frameworkId
      expect(frameworkId).toBe(deployed.frameworks[0]!.info!.frameworkId)
      const before = kvTasks(deployed).map((t) => t.info!.taskId).sort()

      a.child.kill("SIGKILL")
      const bUrl = yield* Deferred.await(b.leads).pipe(Effect.timeout("60 seconds"))
      // B resumes from the stored state: the same framework, the deploy plan complete, the pods RUNNING.
      const plan = yield* Effect.gen(function*() {
        while (true) {
          const p = yield* getJson(`${bUrl}/v1/plans/deploy`)
          if (p.status === "COMPLETE") return p
          yield* Effect.sleep("200 millis")
        }
      }).pipe(Effect.timeout("60 seconds"))
      expect(plan.status).toBe("COMPLETE")
      expect((yield* getJson(`${bUrl}/v1/state`)).frameworkId).toBe(frameworkId)
      const after = yield* cluster.waitFor("the framework reconnected with its three pods", (s) =>
        s.frameworks.length === 1 && s.frameworks[0]!.connected && kvTasks(s).filter((t) => t.state === v1.TaskState.RUNNING).length === 3,
        { timeout: 60_000 })
      expect(after.frameworks[0]!.info!.frameworkId).toBe(frameworkId)
      expect(kvTasks(after).map((t) => t.info!.taskId).sort()).toEqual(before)
      const pods = (yield* getJson(`${bUrl}/v1/pods`)) as Array<any>
      expect(pods.map((p) => [p.instance, p.state])).toEqual([["kv-0", "RUNNING"], ["kv-1", "RUNNING"], ["kv-2", "RUNNING"]])
    }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "Error")), 180_000)
})
