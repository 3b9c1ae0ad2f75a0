import { describe, expect, it } from "@effect/vitest"
import { TaskStates } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import { client, eventually, serve } from "./support/harness.ts"

describe("marathon-like on a testkit cluster", () => {
  it.live("runs an app, scales it and destroys it", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      const created = yield* api.post("/v2/apps", { id: "/web", cmd: "sleep 1000", cpus: 0.1, mem: 16, instances: 2 })
      expect(created.status, created.text).toBe(201)
      yield* eventually(Effect.map(api.get("/v2/apps/web"), (r) => (r.body?.app?.tasksRunning === 2 && r.body.app.deployments.length === 0 ? r : undefined)), 60_000, "2 running, deployed")
      const scaled = yield* api.put("/v2/apps/web", { instances: 3 })
      expect(scaled.status, scaled.text).toBe(200)
      yield* eventually(Effect.map(api.get("/v2/apps/web"), (r) => (r.body?.app?.tasksRunning === 3 ? r : undefined)), 60_000, "3 running")
      yield* eventually(Effect.map(api.get("/v2/deployments"), (r) => (r.body.length === 0 ? r : undefined)), 60_000, "no deployments")
      const deleted = yield* api.del("/v2/apps/web")
      expect(deleted.status).toBe(200)
      yield* eventually(Effect.map(api.get("/v2/apps/web"), (r) => (r.status === 404 ? r : undefined)), 60_000, "app gone")
      // The master no longer runs any of its tasks.
      yield* eventually(Effect.map(cluster.operator.state, (s) => (s.tasks.every((t) => TaskStates.isTerminal(t.state)) ? s : undefined)), 30_000, "tasks gone")
    }), 120_000)
})
