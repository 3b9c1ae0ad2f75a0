// Scheduling scenarios on real testkit clusters: constraints and the queue's why-not, rolling
// restarts under minimumHealthCapacity, failing health checks, resident apps.
import { describe, expect, it } from "@effect/vitest"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { client, eventually, serve } from "./support/harness.ts"

describe("scheduling", () => {
  it.live("10 instances with [hostname, UNIQUE] on 5 agents: 5 run, 5 wait, and /v2/queue says why", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 5 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      yield* api.post("/v2/apps", { id: "/uniq", cmd: "sleep 1000", cpus: 0.1, mem: 16, instances: 10, constraints: [["hostname", "UNIQUE"]] })
      const app = yield* eventually(Effect.map(api.get("/v2/apps/uniq"), (r) => (r.body.app.tasksRunning === 5 ? r.body.app : undefined)), 60_000, "5 running")
      expect(new Set(app.tasks.map((t: any) => t.host)).size).toBe(5)
      const queue = yield* eventually(Effect.map(api.get("/v2/queue?embed=lastUnusedOffers"), (r) => {
        const entry = r.body.queue[0]
        return entry !== undefined && entry.processedOffersSummary.rejectSummaryLastOffers.length > 0 ? entry : undefined
      }), 30_000, "queue summary")
      expect(queue.app.id).toBe("/uniq")
      expect(queue.count).toBe(5)
      expect(queue.delay).toEqual({ timeLeftSeconds: 0, overdue: true })
      expect(queue.processedOffersSummary.processedOffersCount).toBeGreaterThan(0)
      expect(queue.processedOffersSummary.unusedOffersCount).toBeGreaterThan(0)
      expect(queue.processedOffersSummary.rejectSummaryLastOffers).toEqual([{ reason: "UnfulfilledConstraint", declined: expect.any(Number), processed: expect.any(Number) }])
      expect(queue.lastUnusedOffers.length).toBeGreaterThan(0)
      for (const o of queue.lastUnusedOffers) {
        expect(o.reason).toEqual(["UnfulfilledConstraint"])
        expect(o.details[0]).toMatch(/hostname/)
        expect(o.offer.hostname).toMatch(/\S/)
      }
      // Still 5 a while later: the constraint holds.
      yield* Effect.sleep("1 second")
      expect((yield* api.get("/v2/apps/uniq")).body.app.tasksRunning).toBe(5)
    }), 120_000)

  it.live("a rolling restart keeps at least ⌈minimumHealthCapacity × instances⌉ healthy at every sample", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      const healthCheck = { protocol: "COMMAND", command: { value: "true" }, gracePeriodSeconds: 5, intervalSeconds: 0.3, timeoutSeconds: 2, delaySeconds: 0.2, maxConsecutiveFailures: 3 }
      yield* api.post("/v2/apps", {
        id: "/roll", cmd: "sleep 1000", cpus: 0.1, mem: 16, instances: 4,
        healthChecks: [healthCheck], upgradeStrategy: { minimumHealthCapacity: 0.5, maximumOverCapacity: 0.25 }
      })
      const before = yield* eventually(Effect.map(api.get("/v2/apps/roll"), (r) => (r.body.app.tasksHealthy === 4 && r.body.app.deployments.length === 0 ? r.body.app : undefined)), 60_000, "4 healthy")
      const restarted = yield* api.post("/v2/apps/roll/restart")
      expect(restarted.status).toBe(200)
      const samples: Array<{ healthy: number; total: number }> = []
      const oldIds = before.tasks.map((t: any) => t.id)
      yield* eventually(Effect.gen(function*() {
        const r = yield* api.get("/v2/apps/roll")
        const app = r.body.app
        const live = app.tasks.filter((t: any) => t.state === "TASK_RUNNING" || t.state === "TASK_STAGING" || t.state === "TASK_STARTING")
        samples.push({ healthy: app.tasks.filter((t: any) => t.state === "TASK_RUNNING" && t.healthCheckResults[0]?.alive === true).length, total: live.length })
        return app.deployments.length === 0 && app.tasksHealthy === 4 && app.tasks.every((t: any) => !oldIds.includes(t.id)) ? app : undefined
      }), 90_000, "restart finished")
      expect(samples.length).toBeGreaterThan(3)
      // ⌈0.5 × 4⌉ = 2 healthy at every sample; never more than ⌊4 × 1.25⌋ = 5 tasks (sampled tasks include ones being killed, so allow those).
      for (const s of samples) expect(s.healthy).toBeGreaterThanOrEqual(2)
      expect(samples.some((s) => s.healthy < 4)).toBe(true)
    }), 150_000)

  it.live("a failing health check gets the task killed and replaced, with backoff", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      yield* api.post("/v2/apps", {
        id: "/sick", cmd: "sleep 1000", cpus: 0.1, mem: 16, backoffSeconds: 2, backoffFactor: 2,
        healthChecks: [{ protocol: "COMMAND", command: { value: "false" }, gracePeriodSeconds: 0, intervalSeconds: 0.3, timeoutSeconds: 2, delaySeconds: 0.2, maxConsecutiveFailures: 2 }]
      })
      const first = yield* eventually(Effect.map(api.get("/v2/apps/sick"), (r) => r.body.app.tasks[0]?.id), 60_000, "first task")
      // Killed by the agent after 2 failed checks, then replaced by a new task.
      const failure = yield* eventually(Effect.map(api.get("/v2/apps/sick"), (r) => r.body.app.lastTaskFailure), 60_000, "lastTaskFailure")
      expect(failure.taskId).toBe(first)
      expect(failure.message).toMatch(/health check/i)
      const queued = yield* eventually(Effect.map(api.get("/v2/queue"), (r) => {
        const e = r.body.queue.find((q: any) => q.app.id === "/sick")
        return e !== undefined && e.delay.overdue === false ? e : undefined
      }), 30_000, "backoff delay in the queue")
      expect(queued.delay.timeLeftSeconds).toBeGreaterThan(0)
      const second = yield* eventually(Effect.map(api.get("/v2/apps/sick"), (r) => {
        const t = r.body.app.tasks[0]
        return t !== undefined && t.id !== first ? t.id : undefined
      }), 60_000, "replacement")
      expect(second).not.toBe(first)
    }), 150_000)

  it.live("a resident app restarted in place keeps its volume data", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      // Each start appends a line to data/starts, in the persistent volume.
      const created = yield* api.post("/v2/apps", {
        id: "/db", cmd: "echo start >> data/starts && sleep 1000", cpus: 0.1, mem: 16,
        container: { type: "MESOS", volumes: [{ containerPath: "data", mode: "RW", persistent: { size: 16 } }] }
      })
      expect(created.status, created.text).toBe(201)
      expect(created.body.upgradeStrategy).toEqual({ minimumHealthCapacity: 0.5, maximumOverCapacity: 0 })
      const first = yield* eventually(Effect.map(api.get("/v2/apps/db"), (r) => (r.body.app.tasksRunning === 1 ? r.body.app.tasks[0] : undefined)), 60_000, "resident running")
      expect(first.localVolumes).toHaveLength(1)
      const volumeFile = () => {
        const found: Array<string> = []
        const walk = (dir: string) => {
          for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
            const p = path.join(dir, e.name)
            if (e.isDirectory()) walk(p)
            else if (e.name === "starts" && p.includes(`${path.sep}volumes${path.sep}`)) found.push(p)
          }
        }
        walk(cluster.agents[0]!.workDir)
        return found
      }
      yield* eventually(Effect.sync(() => (volumeFile().length === 1 && fs.readFileSync(volumeFile()[0]!, "utf8") === "start\n" ? true : undefined)), 30_000, "first write")
      yield* api.post("/v2/apps/db/restart")
      const second = yield* eventually(Effect.map(api.get("/v2/apps/db"), (r) => {
        const t = r.body.app.tasks[0]
        return t !== undefined && r.body.app.tasksRunning === 1 && t.id !== first.id && r.body.app.deployments.length === 0 ? t : undefined
      }), 60_000, "restarted in place")
      expect(second.agentId).toBe(first.agentId)
      expect(second.localVolumes).toEqual(first.localVolumes)
      // Same volume, both starts recorded.
      yield* eventually(Effect.sync(() => (volumeFile().length === 1 && fs.readFileSync(volumeFile()[0]!, "utf8") === "start\nstart\n" ? true : undefined)), 30_000, "second write on the same volume")
    }), 150_000)
})

describe("readiness", () => {
  it.live("a deployment finishes only once the new task passes its readiness check", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      // Serves HTTP on its port only after 3 s: RUNNING at once, ready later.
      const created = yield* api.post("/v2/apps", {
        id: "/ready",
        cmd: `exec ${process.execPath} -e "setTimeout(() => require('http').createServer((q, s) => s.end('ok')).listen(process.env.PORT0, '127.0.0.1'), 3000)"`,
        cpus: 0.1, mem: 32,
        portDefinitions: [{ port: 0, name: "http-api" }],
        readinessChecks: [{ protocol: "HTTP", path: "/", portName: "http-api", intervalSeconds: 0.5, timeoutSeconds: 0.4 }]
      })
      expect(created.status, created.text).toBe(201)
      const runningNotReady = yield* eventually(Effect.map(api.get("/v2/apps/ready"), (r) => (r.body.app.tasksRunning === 1 ? r.body.app : undefined)), 30_000, "running")
      expect(runningNotReady.tasks[0].ready).not.toBe(true)
      expect((yield* api.get("/v2/deployments")).body.map((d: any) => d.id)).toEqual([created.headers.get("Marathon-Deployment-Id")])
      const done = yield* eventually(Effect.map(api.get("/v2/apps/ready"), (r) => (r.body.app.deployments.length === 0 ? r.body.app : undefined)), 60_000, "deployment done")
      expect(done.tasks[0].ready).toBe(true)
    }), 120_000)
})

describe("dependencies", () => {
  it.live("an app starts only once the apps it depends on run all their instances", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      // The database cannot be placed yet, so the web app waits for it.
      yield* api.post("/v2/apps", { id: "/shop/db", cmd: "sleep 1000", cpus: 0.1, mem: 16, constraints: [["hostname", "LIKE", "nowhere"]] })
      yield* api.post("/v2/apps", { id: "/shop/web", cmd: "sleep 1000", cpus: 0.1, mem: 16, instances: 2, dependencies: ["/shop/db"] })
      yield* Effect.sleep("2 seconds")
      expect((yield* api.get("/v2/apps/shop/web")).body.app.tasks).toEqual([])
      expect((yield* api.put("/v2/apps/shop/db?force=true", { constraints: [] })).status).toBe(200)
      const db = yield* eventually(Effect.map(api.get("/v2/apps/shop/db"), (r) => (r.body.app.tasksRunning === 1 ? r.body.app : undefined)), 30_000, "db running")
      const web = yield* eventually(Effect.map(api.get("/v2/apps/shop/web"), (r) => (r.body.app.tasksRunning === 2 ? r.body.app : undefined)), 30_000, "web running")
      // Every web task was staged after the database task started.
      for (const t of web.tasks) expect(Date.parse(t.stagedAt)).toBeGreaterThanOrEqual(Date.parse(db.tasks[0].startedAt))
    }), 120_000)
})
