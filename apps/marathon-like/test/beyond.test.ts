// Beyond Marathon: progress deadlines with automatic rollback, and dry-run plans for apps.
import { describe, expect, it } from "@effect/vitest"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import { client, eventually, serve } from "./support/harness.ts"

describe("beyond Marathon", () => {
  it.live("a deployment past upgradeStrategy.progressDeadlineSeconds is rolled back to the previous version", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      yield* api.post("/v2/apps", { id: "/dl", cmd: "sleep 1000", cpus: 0.1, mem: 16, upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1, progressDeadlineSeconds: 2 } })
      const v1 = yield* eventually(Effect.map(api.get("/v2/apps/dl"), (r) => (r.body.app.tasksRunning === 1 && r.body.app.deployments.length === 0 ? r.body.app : undefined)), 30_000, "v1 running")
      // v2 can never be placed: its deployment stalls, the old task keeps running (MHC 1).
      const bad = yield* api.put("/v2/apps/dl", { constraints: [["hostname", "LIKE", "nowhere"]] })
      expect(bad.status).toBe(200)
      expect((yield* api.get("/v2/apps/dl")).body.app.constraints).toEqual([["hostname", "LIKE", "nowhere"]])
      const reverted = yield* eventually(Effect.map(api.get("/v2/apps/dl"), (r) =>
        r.body.app.constraints.length === 0 && r.body.app.deployments.length === 0 && r.body.app.tasksRunning === 1 ? r.body.app : undefined), 60_000, "rolled back")
      expect(reverted.cmd).toBe(v1.cmd)
      // The rollback is a new version with v1's configuration, so the v1 task was kept, never restarted.
      expect(reverted.tasks.map((t: any) => t.id)).toEqual(v1.tasks.map((t: any) => t.id))
      expect((yield* api.get("/v2/apps/dl/versions")).body.versions.length).toBe(3)
    }), 120_000)

  it.live("dryRun=true answers the plan and changes nothing", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      const plan = yield* api.post("/v2/apps?dryRun=true", { id: "/dry", cmd: "sleep 1000", cpus: 0.1, mem: 16 })
      expect(plan.status).toBe(200)
      expect(plan.body).toMatchObject({ dryRun: true, affectedApps: ["/dry"], totalSteps: 2, original: null, target: { id: "/dry", cpus: 0.1 } })
      expect((yield* api.get("/v2/apps/dry")).status).toBe(404)
      yield* api.post("/v2/apps", { id: "/dry", cmd: "sleep 1000", cpus: 0.1, mem: 16 })
      yield* eventually(Effect.map(api.get("/v2/apps/dry"), (r) => (r.body.app.tasksRunning === 1 && r.body.app.deployments.length === 0 ? r : undefined)), 30_000, "running")
      const restart = yield* api.put("/v2/apps/dry?dryRun=true", { cmd: "sleep 2000" })
      expect(restart.body).toMatchObject({ dryRun: true, steps: [{ actions: [{ action: "RestartApplication", app: "/dry" }] }], instancesToReplace: 1, blockedBy: [] })
      const scale = yield* api.put("/v2/apps/dry?dryRun=true", { instances: 3 })
      expect(scale.body.steps).toEqual([{ actions: [{ action: "ScaleApplication", app: "/dry" }] }])
      const invalid = yield* api.put("/v2/apps/dry?dryRun=true", { cpus: 0 })
      expect(invalid.status).toBe(422)
      const app = (yield* api.get("/v2/apps/dry")).body.app
      expect(app).toMatchObject({ cmd: "sleep 1000", instances: 1 })
      expect((yield* api.get("/v2/deployments")).body).toEqual([])
    }), 120_000)

  it.live("a canary deployment runs canaryInstances new instances next to the old ones until promoted", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      yield* api.post("/v2/apps", { id: "/can", cmd: "sleep 1000", cpus: 0.1, mem: 16, instances: 3, upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1, canaryInstances: 1 } })
      const v1 = yield* eventually(Effect.map(api.get("/v2/apps/can"), (r) => (r.body.app.tasksRunning === 3 && r.body.app.deployments.length === 0 ? r.body.app : undefined)), 30_000, "v1")
      const change = yield* api.put("/v2/apps/can", { cmd: "sleep 2000" })
      const id = change.headers.get("Marathon-Deployment-Id")!
      const versions = (app: any) => app.tasks.filter((t: any) => t.state === "TASK_RUNNING").map((t: any) => t.version)
      const canary = yield* eventually(Effect.map(api.get("/v2/apps/can"), (r) => (r.body.app.tasksRunning === 4 ? r.body.app : undefined)), 30_000, "canary running")
      expect(versions(canary).filter((v: string) => v === v1.version)).toHaveLength(3)
      // It waits there: still 3 old + 1 new a while later, the deployment open and unpromoted.
      yield* Effect.sleep("1500 millis")
      const waiting = (yield* api.get("/v2/apps/can")).body.app
      expect(waiting.tasksRunning).toBe(4)
      expect(versions(waiting).filter((v: string) => v === v1.version)).toHaveLength(3)
      const deployments = (yield* api.get("/v2/deployments")).body
      expect(deployments).toEqual([expect.objectContaining({ id, canary: { instances: 1, promoted: false } })])
      expect((yield* api.post("/v2/deployments/nope/promote")).status).toBe(404)
      const promoted = yield* api.post(`/v2/deployments/${id}/promote`)
      expect(promoted.status).toBe(200)
      expect(promoted.body.canary).toEqual({ instances: 1, promoted: true })
      const done = yield* eventually(Effect.map(api.get("/v2/apps/can"), (r) =>
        r.body.app.deployments.length === 0 && r.body.app.tasksRunning === 3 ? r.body.app : undefined), 60_000, "promoted and done")
      expect(versions(done).every((v: string) => v !== v1.version)).toBe(true)
      // The canary itself was kept.
      expect(done.tasks.map((t: any) => t.id)).toEqual(expect.arrayContaining(canary.tasks.filter((t: any) => t.version !== v1.version).map((t: any) => t.id)))
    }), 120_000)
})
