// Fixed host ports: with `requirePorts: true` a port definition's number is the host port the
// task gets, exactly; a second instance on the same agent cannot have it and waits, and
// /v2/queue says which port is missing.
import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { TestCluster } from "@berth/testkit"
import { Effect, Result } from "effect"
import * as http from "node:http"
import * as AppDefinition from "../src/AppDefinition.ts"
import { Core } from "../src/internal/core.ts"
import { EventBus } from "../src/internal/events.ts"
import { client, eventually, serve } from "./support/harness.ts"

const launched = (operations: ReadonlyArray<v1.Operation>): v1.TaskInfo => {
  const op = operations.find((o) => o.kind?.$case === "launch")!
  return (op.kind as { value: v1.Operation_Launch }).value.taskInfos[0]!
}

describe("requirePorts", () => {
  it.effect("a fixed port comes from the offer exactly; other ports are chosen; PORTn match", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.make(StateStore.layerMemory)
      const accepted: Array<ReadonlyArray<v1.Operation>> = []
      const core = new Core({ store, events: new EventBus(10_000, () => 0), role: "marathon", principal: "test", now: () => 0 })
      core.attach({
        accept: (_, operations) => Effect.sync(() => accepted.push(operations)),
        decline: () => Effect.void, kill: () => Effect.void, reconcile: () => Effect.void, revive: () => Effect.void
      })
      const app = Result.getOrThrow(AppDefinition.decode({
        id: "/fixed", cmd: "x", cpus: 0.1, mem: 16, requirePorts: true,
        portDefinitions: [{ port: 0, name: "any" }, { port: 31050, name: "fixed" }]
      }, new Date().toISOString()))
      yield* core.deploy("/fixed", app, "StartApplication", false)
      yield* core.converge
      yield* core.handleOffers([v1.Offer.create({ offerId: "o1", agentId: "a1", hostname: "h1", resources: [Resources.scalar("cpus", 4), Resources.scalar("mem", 4096), Resources.ranges("ports", [[31000, 31100]])] })])
      const task = launched(accepted[0]!)
      expect(Resources.rangesOf(task.resources, "ports")).toEqual([{ begin: 31000, end: 31000 }, { begin: 31050, end: 31050 }])
      const env = Object.fromEntries(task.command!.environment.map((e) => [e.name, e.value]))
      expect(env).toMatchObject({ PORT0: "31000", PORT1: "31050", PORT_FIXED: "31050", PORTS: "31000,31050" })
      expect([...core.instances.values()][0]!.ports).toEqual([31000, 31050])
      // Without requirePorts the definition's number is a service port, and the host port is chosen.
      const loose = Result.getOrThrow(AppDefinition.decode({ id: "/loose", cmd: "x", cpus: 0.1, mem: 16, portDefinitions: [{ port: 31050 }] }, new Date().toISOString()))
      yield* core.deploy("/loose", loose, "StartApplication", false)
      yield* core.converge
      yield* core.handleOffers([v1.Offer.create({ offerId: "o2", agentId: "a2", hostname: "h2", resources: [Resources.scalar("cpus", 4), Resources.scalar("mem", 4096), Resources.ranges("ports", [[31000, 31100]])] })])
      expect(Resources.rangesOf(launched(accepted[1]!).resources, "ports")).toEqual([{ begin: 31000, end: 31000 }])
    }))

  it("two port definitions requiring the same host port are a 422 naming the second", () => {
    const decoded = AppDefinition.decode({ id: "/dup", cmd: "x", requirePorts: true, portDefinitions: [{ port: 8080 }, { port: 8080 }] }, new Date().toISOString())
    expect(Result.isFailure(decoded)).toBe(true)
    if (Result.isFailure(decoded)) expect(decoded.failure.details).toEqual([{ path: "/portDefinitions(1)/port", errors: ["host port 8080 is required twice"] }])
  })

  it.live("on a cluster: the task listens on the required port; a second instance waits for it, and /v2/queue says why", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      const port = 31777
      const created = yield* api.post("/v2/apps", {
        id: "/pinned", cpus: 0.1, mem: 32, instances: 2, requirePorts: true,
        cmd: `exec ${process.execPath} -e "require('http').createServer((q, s) => s.end(process.env.PORT0)).listen(Number(process.env.PORT0), '127.0.0.1')"`,
        portDefinitions: [{ port, name: "http" }]
      })
      expect(created.status, created.text).toBe(201)
      const app = yield* eventually(Effect.map(api.get("/v2/apps/pinned"), (r) => (r.body.app.tasksRunning === 1 ? r.body.app : undefined)), 60_000, "one running")
      expect(app.tasks[0].ports).toEqual([port])
      const answer = yield* eventually(Effect.promise(() =>
        new Promise<string | undefined>((resolve) => {
          http.get(`http://127.0.0.1:${port}/`, (res) => {
            let body = ""
            res.on("data", (c) => (body += c))
            res.on("end", () => resolve(body))
          }).on("error", () => resolve(undefined))
        })
      ), 30_000, "the task answers on its fixed port")
      expect(answer).toBe(String(port))
      const queue = yield* eventually(Effect.map(api.get("/v2/queue?embed=lastUnusedOffers"), (r) => {
        const e = r.body.queue.find((q: any) => q.app.id === "/pinned")
        return e !== undefined && e.lastUnusedOffers.length > 0 ? e : undefined
      }), 30_000, "the queue explains")
      expect(queue.count).toBe(1)
      expect(queue.lastUnusedOffers[0].reason).toEqual(["InsufficientPorts"])
      expect(queue.lastUnusedOffers[0].details[0]).toContain(`needs port ${port} (port0)`)
      yield* Effect.sleep("1 second")
      expect((yield* api.get("/v2/apps/pinned")).body.app.tasksRunning).toBe(1)
    }), 120_000)
})
