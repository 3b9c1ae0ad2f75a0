// API conformance: request and response shapes, defaults, status codes and headers as Marathon
// documents them, against a server on a real testkit cluster.
import { describe, expect, it } from "@effect/vitest"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import { client, eventually, request, serve } from "./support/harness.ts"

const setup = Effect.gen(function*() {
  const cluster = yield* TestCluster.make({ agents: 2 })
  const server = yield* serve(cluster.master, { maxBodyBytes: 64 * 1024 })
  return { cluster, server, api: client(server.url) }
})

const running = (api: ReturnType<typeof client>, id: string, n: number) =>
  eventually(Effect.map(api.get(`/v2/apps${id}`), (r) => (r.body?.app?.tasksRunning === n && r.body.app.deployments.length === 0 ? r.body.app : undefined)), 60_000, `${id} ${n} running`)

describe("REST API v2", () => {
  it.live("/v2/apps: create with defaults, get, list with filters and embed, versions, 404, 409 duplicate", () =>
    Effect.gen(function*() {
      const { api, server } = yield* setup
      const created = yield* api.post("/v2/apps", { id: "/prod/web", cmd: "sleep 1000", cpus: 0.1, mem: 16, labels: { tier: "front", team: "a" } })
      expect(created.status).toBe(201)
      expect(created.headers.get("Marathon-Deployment-Id")).toMatch(/^[0-9a-f-]{36}$/)
      expect(created.headers.get("Location")).toBe("/v2/apps/prod/web")
      expect(created.body).toMatchObject({
        id: "/prod/web", cmd: "sleep 1000", cpus: 0.1, mem: 16, disk: 0, instances: 1, backoffSeconds: 1, backoffFactor: 1.15,
        maxLaunchDelaySeconds: 300, upgradeStrategy: { minimumHealthCapacity: 1, maximumOverCapacity: 1 }, killSelection: "YOUNGEST_FIRST",
        deployments: [{ id: created.headers.get("Marathon-Deployment-Id") }], tasksRunning: 0
      })
      expect(typeof created.body.version).toBe("string")
      yield* api.post("/v2/apps", { id: "/prod/db", cmd: "sleep 2000", cpus: 0.1, mem: 16, labels: { tier: "back" } })
      yield* api.post("/v2/apps", { id: "/dev/tool", args: ["sleep", "1000"], cpus: 0.1, mem: 16 })
      const dup = yield* api.post("/v2/apps", { id: "/prod/web", cmd: "x" })
      expect(dup.status).toBe(409)
      expect(dup.body.message).toMatch(/already exists/)

      const app = yield* running(api, "/prod/web", 1)
      expect(app.tasks).toHaveLength(1)
      expect(app.tasks[0]).toMatchObject({ appId: "/prod/web", state: "TASK_RUNNING", host: expect.any(String), ports: [expect.any(Number)] })
      expect(app.tasks[0].id).toMatch(/^prod_web\.instance-[0-9a-f-]+\._app\.1$/)

      const list = yield* api.get("/v2/apps")
      expect(list.status).toBe(200)
      expect(list.body.apps.map((a: any) => a.id).sort()).toEqual(["/dev/tool", "/prod/db", "/prod/web"])
      expect(list.body.apps[0].tasks).toBeUndefined()
      expect((yield* api.get("/v2/apps?cmd=2000")).body.apps.map((a: any) => a.id)).toEqual(["/prod/db"])
      expect((yield* api.get("/v2/apps?id=prod")).body.apps.map((a: any) => a.id).sort()).toEqual(["/prod/db", "/prod/web"])
      expect((yield* api.get("/v2/apps?label=tier==front")).body.apps.map((a: any) => a.id)).toEqual(["/prod/web"])
      expect((yield* api.get("/v2/apps?label=tier")).body.apps.map((a: any) => a.id).sort()).toEqual(["/prod/db", "/prod/web"])
      expect((yield* api.get("/v2/apps?label=tier in (back, x)")).body.apps.map((a: any) => a.id)).toEqual(["/prod/db"])
      expect((yield* api.get("/v2/apps?label=tier!=front,team")).body.apps).toEqual([])
      expect((yield* api.get("/v2/apps?label=%3D%3Dbad")).status).toBe(400)
      const embedded = yield* api.get("/v2/apps?embed=apps.tasks&id=web")
      expect(embedded.body.apps[0].tasks).toHaveLength(1)

      expect((yield* api.get("/v2/apps/nope")).status).toBe(404)
      expect((yield* api.get("/v2/apps/nope")).body.message).toMatch(/does not exist/)

      const versions = yield* api.get("/v2/apps/prod/web/versions")
      expect(versions.body.versions).toEqual([created.body.version])
      const v = yield* api.get(`/v2/apps/prod/web/versions/${created.body.version}`)
      expect(v.body).toMatchObject({ id: "/prod/web", cmd: "sleep 1000" })
      const tasks = yield* api.get("/v2/apps/prod/web/tasks")
      expect(tasks.body.tasks).toHaveLength(1)
      const all = yield* api.get("/v2/tasks")
      expect(all.body.tasks.length).toBeGreaterThanOrEqual(1)
      expect((yield* api.get("/v2/tasks?status=running")).body.tasks.every((t: any) => t.state === "TASK_RUNNING")).toBe(true)
      const plain = yield* request(server.url, "GET", "/v2/tasks", undefined, { Accept: "text/plain" })
      expect(plain.headers.get("content-type")).toMatch(/text\/plain/)
      const web = plain.text.split("\n").find((l) => l.startsWith("prod_web_0\t"))!
      expect(web.split("\t").slice(2)).toEqual([`${app.tasks[0].host}:${app.tasks[0].ports[0]}`])
    }), 120_000)

  it.live("validation: 422 with details[].path, malformed JSON 400, oversized body 413; none of them change state", () =>
    Effect.gen(function*() {
      const { api, server } = yield* setup
      const bad = yield* api.post("/v2/apps", { id: "/Bad", cmd: "x", cpus: "one", instances: -1 })
      expect(bad.status).toBe(422)
      expect(bad.body.message).toBe("Object is not valid")
      expect(bad.body.details.map((d: any) => d.path).sort()).toEqual(["/cpus", "/id", "/instances"])
      expect(bad.body.details.every((d: any) => Array.isArray(d.errors) && d.errors.length > 0)).toBe(true)
      const malformed = yield* request(server.url, "POST", "/v2/apps", "{\"id\": \"/a\", ")
      expect(malformed.status).toBe(400)
      expect(malformed.body.message).toBe("Invalid JSON")
      const huge = yield* request(server.url, "POST", "/v2/apps", JSON.stringify({ id: "/big", cmd: "x".repeat(100 * 1024) }))
      expect(huge.status).toBe(413)
      expect((yield* api.get("/v2/apps")).body.apps).toEqual([])
      expect((yield* api.get("/v2/deployments")).body).toEqual([])
      const badPut = yield* api.put("/v2/apps/a", { cmd: "x", mem: -5 })
      expect(badPut.status).toBe(422)
      expect(badPut.body.details[0].path).toBe("/mem")
      expect((yield* api.get("/v2/apps/a")).status).toBe(404)
    }), 120_000)

  it.live("deployments: 409 while one is in flight, force=true overrides, DELETE rolls back or (force) cancels", () =>
    Effect.gen(function*() {
      const { api } = yield* setup
      // Never placeable: the deployment stays in flight.
      const created = yield* api.post("/v2/apps", { id: "/stuck", cmd: "sleep 1000", cpus: 0.1, mem: 16, constraints: [["hostname", "LIKE", "nowhere"]] })
      const deploymentId = created.headers.get("Marathon-Deployment-Id")!
      const deployments = yield* api.get("/v2/deployments")
      expect(deployments.body).toEqual([{
        id: deploymentId, version: created.body.version, affectedApps: ["/stuck"], affectedPods: [],
        steps: [{ actions: [{ action: "StartApplication", app: "/stuck" }] }, { actions: [{ action: "ScaleApplication", app: "/stuck" }] }],
        currentActions: [{ action: "StartApplication", app: "/stuck", readinessCheckResults: [] }], currentStep: 1, totalSteps: 2
      }])
      const locked = yield* api.put("/v2/apps/stuck", { instances: 2 })
      expect(locked.status).toBe(409)
      expect(locked.body.message).toMatch(/locked by one or more deployments.*force=true/)
      expect((yield* api.get("/v2/apps/stuck")).body.app.instances).toBe(1)
      const forced = yield* api.put("/v2/apps/stuck?force=true", { instances: 2 })
      expect(forced.status).toBe(200)
      expect(forced.headers.get("Marathon-Deployment-Id")).toBe(forced.body.deploymentId)
      expect((yield* api.get("/v2/apps/stuck")).body.app.instances).toBe(2)
      expect((yield* api.get("/v2/deployments")).body.map((d: any) => d.id)).toEqual([forced.body.deploymentId])
      // Rollback: a new deployment back to instances 1.
      const rollback = yield* api.del(`/v2/deployments/${forced.body.deploymentId}`)
      expect(rollback.status).toBe(200)
      expect(rollback.body.deploymentId).not.toBe(forced.body.deploymentId)
      expect((yield* api.get("/v2/apps/stuck")).body.app.instances).toBe(1)
      // Force: just forgotten, the app keeps its definition.
      const cancelled = yield* api.del(`/v2/deployments/${rollback.body.deploymentId}?force=true`)
      expect(cancelled.status).toBe(202)
      expect((yield* api.get("/v2/deployments")).body).toEqual([])
      expect((yield* api.del("/v2/deployments/unknown")).status).toBe(404)
      // Rolling back the creation removes the app.
      const other = yield* api.post("/v2/apps", { id: "/stuck2", cmd: "sleep 1000", cpus: 0.1, mem: 16, constraints: [["hostname", "LIKE", "nowhere"]] })
      yield* api.del(`/v2/deployments/${other.headers.get("Marathon-Deployment-Id")}`)
      yield* eventually(Effect.map(api.get("/v2/apps/stuck2"), (r) => (r.status === 404 ? r : undefined)), 30_000, "stuck2 removed")
    }), 120_000)

  it.live("restart, PATCH, task kill with scale, /v2/tasks/delete, DELETE app", () =>
    Effect.gen(function*() {
      const { api } = yield* setup
      yield* api.post("/v2/apps", { id: "/svc", cmd: "sleep 1000", cpus: 0.1, mem: 16, instances: 2 })
      const before = yield* running(api, "/svc", 2)
      const restarted = yield* api.post("/v2/apps/svc/restart")
      expect(restarted.status).toBe(200)
      expect(restarted.headers.get("Marathon-Deployment-Id")).toBe(restarted.body.deploymentId)
      const after = yield* eventually(Effect.map(api.get("/v2/apps/svc"), (r) => {
        const app = r.body.app
        const oldIds = before.tasks.map((t: any) => t.id)
        return app.deployments.length === 0 && app.tasksRunning === 2 && app.tasks.every((t: any) => !oldIds.includes(t.id)) ? app : undefined
      }), 60_000, "restarted")
      expect(after.version).toBe(restarted.body.version)
      const patched = yield* api.patch("/v2/apps/svc", { instances: 3 })
      expect(patched.status).toBe(200)
      const three = yield* running(api, "/svc", 3)
      expect(three.cmd).toBe("sleep 1000")
      // Scaling keeps the running tasks (no config change).
      expect(three.tasks.map((t: any) => t.id)).toEqual(expect.arrayContaining(after.tasks.map((t: any) => t.id)))
      const victim = three.tasks[0].id
      const killed = yield* api.del(`/v2/apps/svc/tasks/${victim}?scale=true`)
      expect(killed.status).toBe(200)
      expect(killed.headers.get("Marathon-Deployment-Id")).toBeTruthy()
      const two = yield* running(api, "/svc", 2)
      expect(two.instances).toBe(2)
      expect(two.tasks.map((t: any) => t.id)).not.toContain(victim)
      const other = two.tasks[0].id
      const deleted = yield* api.post("/v2/tasks/delete", { ids: [other] })
      expect(deleted.status).toBe(200)
      expect(deleted.body.tasks.map((t: any) => t.id)).toEqual([other])
      // Without scale the task is replaced.
      const replaced = yield* eventually(Effect.map(api.get("/v2/apps/svc"), (r) =>
        r.body.app.tasksRunning === 2 && !r.body.app.tasks.some((t: any) => t.id === other) ? r.body.app : undefined), 60_000, "replaced")
      expect(replaced.instances).toBe(2)
      expect((yield* api.post("/v2/tasks/delete", { nope: 1 })).status).toBe(422)
      const destroyed = yield* api.del("/v2/apps/svc")
      expect(destroyed.status).toBe(200)
      expect(destroyed.headers.get("Marathon-Deployment-Id")).toBe(destroyed.body.deploymentId)
      yield* eventually(Effect.map(api.get("/v2/apps/svc"), (r) => (r.status === 404 ? r : undefined)), 60_000, "destroyed")
      // The app is gone at once; its tasks are killed, then forgotten.
      yield* eventually(Effect.map(api.get("/v2/tasks"), (r) => (r.body.tasks.length === 0 ? r : undefined)), 60_000, "tasks gone")
      expect((yield* api.del("/v2/apps/svc")).status).toBe(404)
    }), 120_000)

  it.live("/v2/groups, /v2/info, /v2/leader, /ping, /metrics, /v2/queue delay reset, / redirects to the UI", () =>
    Effect.gen(function*() {
      const { api, server } = yield* setup
      yield* api.post("/v2/apps", { id: "/prod/web/front", cmd: "sleep 1000", cpus: 0.1, mem: 16 })
      yield* api.post("/v2/apps", { id: "/prod/db", cmd: "sleep 1000", cpus: 0.1, mem: 16 })
      const root = yield* api.get("/v2/groups")
      expect(root.status).toBe(200)
      expect(root.body.id).toBe("/")
      expect(root.body.apps).toEqual([])
      expect(root.body.groups.map((g: any) => g.id)).toEqual(["/prod"])
      expect(root.body.groups[0].apps.map((a: any) => a.id)).toEqual(["/prod/db"])
      expect(root.body.groups[0].groups[0]).toMatchObject({ id: "/prod/web", apps: [expect.objectContaining({ id: "/prod/web/front" })] })
      expect((yield* api.get("/v2/groups/prod/web")).body.apps.map((a: any) => a.id)).toEqual(["/prod/web/front"])
      expect((yield* api.get("/v2/groups/nope")).status).toBe(404)

      const info = yield* api.get("/v2/info")
      expect(info.body).toMatchObject({ name: "marathon-like", elected: true, leader: server.url.replace("http://", "") })
      yield* eventually(Effect.map(api.get("/v2/info"), (r) => (typeof r.body.frameworkId === "string" ? r : undefined)), 30_000, "framework id")
      expect((yield* api.get("/v2/leader")).body).toEqual({ leader: server.url.replace("http://", "") })
      const ping = yield* api.get("/ping")
      expect(ping.status).toBe(200)
      expect(ping.text).toBe("pong")
      yield* running(api, "/prod/db", 1)
      const metrics = yield* api.get("/metrics")
      expect(metrics.text).toMatch(/marathon_apps_active_gauge 2/)
      expect(metrics.text).toMatch(/marathon_instances_running_gauge \d/)
      const q = yield* api.get("/v2/queue")
      expect(q.body).toEqual({ queue: [] })
      expect((yield* api.del("/v2/queue/nope/delay")).status).toBe(404)
      expect((yield* api.del("/v2/queue/prod/db/delay")).status).toBe(204)
      const redirect = yield* Effect.promise(() => fetch(server.url + "/", { redirect: "manual" }))
      expect(redirect.status).toBe(302)
      expect(redirect.headers.get("location")).toBe("/ui/")
      expect((yield* api.get("/v2/nothing")).status).toBe(404)
      const events = yield* api.get("/v2/events")
      expect(events.status).toBe(406)
    }), 120_000)

  it.live("/v2/groups writes: POST a group of apps, PUT scaleBy, DELETE the group", () =>
    Effect.gen(function*() {
      const { api } = yield* setup
      const created = yield* api.post("/v2/groups", {
        id: "/shop",
        apps: [{ id: "web", cmd: "sleep 1000", cpus: 0.1, mem: 16 }],
        groups: [{ id: "back", apps: [{ id: "db", cmd: "sleep 1000", cpus: 0.1, mem: 16 }] }]
      })
      expect(created.status, created.text).toBe(201)
      expect(created.headers.get("Marathon-Deployment-Id")).toBeTruthy()
      expect((yield* api.get("/v2/apps?id=shop")).body.apps.map((a: any) => a.id).sort()).toEqual(["/shop/back/db", "/shop/web"])
      const bad = yield* api.post("/v2/groups", { id: "/other", apps: [{ id: "x", cmd: "y", mem: -1 }] })
      expect(bad.status).toBe(422)
      expect(bad.body.details[0].path).toBe("(0)/mem")
      expect((yield* api.get("/v2/groups/other")).status).toBe(404)
      yield* running(api, "/shop/web", 1)
      yield* running(api, "/shop/back/db", 1)
      const scaled = yield* api.put("/v2/groups/shop", { scaleBy: 2 })
      expect(scaled.status).toBe(200)
      yield* running(api, "/shop/web", 2)
      yield* running(api, "/shop/back/db", 2)
      const deleted = yield* api.del("/v2/groups/shop")
      expect(deleted.status).toBe(200)
      expect((yield* api.get("/v2/apps")).body.apps).toEqual([])
      expect((yield* api.del("/v2/groups/shop")).status).toBe(404)
    }), 120_000)
})
