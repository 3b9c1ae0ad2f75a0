// The event stream (order, ids, Last-Event-ID resume) and leader failover between two instances.
import { describe, expect, it } from "@effect/vitest"
import { TestCluster } from "@berth/testkit"
import { Effect, Exit, Fiber, Scope } from "effect"
import * as os from "node:os"
import * as fs from "node:fs"
import * as path from "node:path"
import { client, eventually, serve } from "./support/harness.ts"

interface SseEvent { id: number; event: string; data: any }

/** Reads SSE events from /v2/events until `until` holds or the time is up; then closes the stream. */
const readEvents = (url: string, until: (events: ReadonlyArray<SseEvent>) => boolean, headers: Record<string, string> = {}) =>
  Effect.promise(async () => {
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(), 30_000)
    const events: Array<SseEvent> = []
    try {
      const res = await fetch(url + "/v2/events", { headers: { Accept: "text/event-stream", ...headers }, signal: controller.signal })
      const reader = res.body!.getReader()
      let buffer = ""
      while (!until(events)) {
        const { value, done } = await reader.read()
        if (done) break
        buffer += new TextDecoder().decode(value)
        let cut: number
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut)
          buffer = buffer.slice(cut + 2)
          const fields = Object.fromEntries(block.split("\n").filter((l) => !l.startsWith(":") && l.includes(": ")).map((l) => [l.slice(0, l.indexOf(": ")), l.slice(l.indexOf(": ") + 2)]))
          if (fields.data !== undefined) events.push({ id: Number(fields.id), event: fields.event!, data: JSON.parse(fields.data) })
        }
      }
    } catch {
      // aborted: return what arrived
    } finally {
      clearTimeout(timer)
      controller.abort()
    }
    return events
  })

describe("event stream", () => {
  it.live("delivers Marathon events in order with increasing ids, and resumes after Last-Event-ID", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      const reading = yield* Effect.forkChild(readEvents(server.url, (es) => es.some((e) => e.event === "deployment_success")))
      yield* Effect.sleep("300 millis")
      yield* api.post("/v2/apps", { id: "/ev", cmd: "sleep 1000", cpus: 0.1, mem: 16 })
      const events = yield* Fiber.join(reading)
      const types = events.map((e) => e.event)
      expect(types[0]).toBe("event_stream_attached")
      for (const t of ["api_post_event", "group_change_success", "deployment_info", "status_update_event", "deployment_step_success", "deployment_success"]) expect(types).toContain(t)
      // Ordered: the API post before the deployment, the deployment before its success, STAGING/STARTING before RUNNING.
      expect(types.indexOf("api_post_event")).toBeLessThan(types.indexOf("deployment_info"))
      expect(types.indexOf("deployment_info")).toBeLessThan(types.indexOf("deployment_success"))
      const statuses = events.filter((e) => e.event === "status_update_event").map((e) => e.data.taskStatus)
      expect(statuses.at(-1)).toBe("TASK_RUNNING")
      for (let k = 1; k < events.length; k++) expect(events[k]!.id).toBeGreaterThan(events[k - 1]!.id)
      expect(events.every((e) => e.data.eventType === e.event && typeof e.data.timestamp === "string")).toBe(true)
      // Resume: from the api_post_event on, the same events again, in the same order.
      const post = events.find((e) => e.event === "api_post_event")!
      const missed = events.filter((e) => e.id > post.id && e.event !== "event_stream_detached")
      const resumed = yield* readEvents(server.url, (es) => es.some((e) => e.id >= missed.at(-1)!.id), { "Last-Event-ID": String(post.id) })
      expect(resumed.slice(0, missed.length).map((e) => [e.id, e.event])).toEqual(missed.map((e) => [e.id, e.event]))
      // event_type filters.
      const filtered = yield* Effect.promise(async () => {
        const controller = new AbortController()
        const res = await fetch(server.url + "/v2/events?event_type=deployment_success", { headers: { Accept: "text/event-stream", "Last-Event-ID": "0" }, signal: controller.signal })
        const reader = res.body!.getReader()
        const { value } = await reader.read()
        controller.abort()
        return new TextDecoder().decode(value)
      })
      expect(filtered).toMatch(/^id: \d+\nevent: deployment_success\n/)
      expect(filtered).not.toMatch(/event: (?!deployment_success)/)
    }), 120_000)
})

describe("high availability", () => {
  it.live("two instances: the follower proxies to the leader; when the leader stops, the other takes over with apps running and state intact", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2 })
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "marathon-ha-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const store = `sqlite:${path.join(dir, "state.db")}`
      const scopeA = yield* Scope.make()
      const a = yield* serve(cluster.master, { store }).pipe(Scope.provide(scopeA))
      yield* eventually(Effect.sync(() => (a.isLeader() ? true : undefined)), 30_000, "A leads")
      const b = yield* serve(cluster.master, { store })
      expect(b.isLeader()).toBe(false)
      const viaB = client(b.url)
      // Written through the follower, served by the leader.
      const created = yield* viaB.post("/v2/apps", { id: "/ha", cmd: "sleep 1000", cpus: 0.1, mem: 16, instances: 3 })
      expect(created.status, created.text).toBe(201)
      const before = yield* eventually(Effect.map(viaB.get("/v2/apps/ha"), (r) => (r.body?.app?.tasksRunning === 3 && r.body.app.deployments.length === 0 ? r.body.app : undefined)), 60_000, "3 running")
      expect((yield* viaB.get("/v2/leader")).body.leader).toBe(a.url.replace("http://", ""))
      const info = yield* viaB.get("/v2/info")
      // Failover: A goes away.
      yield* Scope.close(scopeA, Exit.void)
      yield* eventually(Effect.sync(() => (b.isLeader() ? true : undefined)), 30_000, "B leads")
      const after = yield* eventually(Effect.map(viaB.get("/v2/apps/ha"), (r) => (r.body?.app?.tasksRunning === 3 ? r.body.app : undefined)), 60_000, "3 running on B")
      // The same tasks: nothing was restarted, the definition and version are the same.
      expect(after.tasks.map((t: any) => t.id).sort()).toEqual(before.tasks.map((t: any) => t.id).sort())
      expect(after.version).toBe(before.version)
      expect(after.cmd).toBe("sleep 1000")
      expect((yield* viaB.get("/v2/info")).body.frameworkId).toBe(info.body.frameworkId)
      expect((yield* viaB.get("/v2/leader")).body.leader).toBe(b.url.replace("http://", ""))
      // The new leader schedules: scale up.
      expect((yield* viaB.put("/v2/apps/ha", { instances: 4 })).status).toBe(200)
      yield* eventually(Effect.map(viaB.get("/v2/apps/ha"), (r) => (r.body?.app?.tasksRunning === 4 ? r : undefined)), 60_000, "4 running on B")
      const state = yield* cluster.operator.state
      expect(state.frameworks).toHaveLength(1)
    }), 150_000)

  it.live("DELETE /v2/leader abdicates: the other instance leads, and the event stream through a follower is proxied", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "marathon-ha-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const store = `sqlite:${path.join(dir, "state.db")}`
      const a = yield* serve(cluster.master, { store })
      yield* eventually(Effect.sync(() => (a.isLeader() ? true : undefined)), 30_000, "A leads")
      const b = yield* serve(cluster.master, { store })
      const abdicated = yield* client(b.url).del("/v2/leader")
      expect(abdicated.status).toBe(200)
      yield* eventually(Effect.sync(() => (b.isLeader() && !a.isLeader() ? true : undefined)), 30_000, "B leads")
      // A is now the follower: its event stream comes from B.
      const reading = yield* Effect.forkChild(readEvents(a.url, (es) => es.some((e) => e.event === "api_post_event")))
      yield* Effect.sleep("300 millis")
      expect((yield* client(a.url).post("/v2/apps", { id: "/after", cmd: "sleep 100", cpus: 0.1, mem: 16 })).status).toBe(201)
      const events = yield* Fiber.join(reading)
      expect(events.map((e) => e.event)).toContain("api_post_event")
      expect((yield* client(a.url).get("/v2/leader")).body.leader).toBe(b.url.replace("http://", ""))
    }), 120_000)
})
