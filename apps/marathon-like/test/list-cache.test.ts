// GET /v2/apps is answered from a cache per query while no app changed: it must still never be
// stale (every change shows at once, in every query form), ETags must change with the content,
// and the gzip form must be the same JSON. Also the event bus's bounded replay buffer.
import { describe, expect, it } from "@effect/vitest"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import * as http from "node:http"
import * as zlib from "node:zlib"
import { EventBus } from "../src/internal/events.ts"
import { client, eventually, serve } from "./support/harness.ts"

/** A raw GET (node:http sends no Accept-Encoding unless asked, unlike fetch). */
const get = (url: string, headers: Record<string, string> = {}) =>
  Effect.promise(() =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      http.get(url, { headers }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      }).on("error", reject)
    })
  )

describe("GET /v2/apps cache", () => {
  it.live("answers stay current across changes in every query form; ETag, 304 and gzip", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      for (let i = 0; i < 40; i++) {
        expect((yield* api.post("/v2/apps", { id: `/c/app-${i}`, cmd: `sleep ${i}`, cpus: 0.1, mem: 16, instances: 0, labels: { n: String(i % 2) } })).status).toBe(201)
      }
      const list = (q = "") => Effect.map(get(`${server.url}/v2/apps${q}`), (r) => ({ ...r, json: JSON.parse(r.body.toString("utf8")) }))
      // The apps' deployments finish on their own (each app shows its deployments): only once
      // they are done does nothing change, which is what "unchanged" below compares against.
      yield* eventually(Effect.map(api.get("/v2/deployments"), (r) => (r.status === 200 && (r.body as Array<unknown>).length === 0 ? true : undefined)), 60_000, "no deployment left")
      const first = yield* list()
      expect(first.json.apps).toHaveLength(40)
      const etag = first.headers.etag!
      expect(etag).toMatch(/^"[^"]+"$/)
      // Unchanged: the same bytes, and a conditional GET is a 304 without a body.
      expect((yield* list()).body.equals(first.body)).toBe(true)
      const notModified = yield* get(`${server.url}/v2/apps`, { "If-None-Match": etag })
      expect(notModified.status).toBe(304)
      expect(notModified.body.length).toBe(0)
      // gzip: the same JSON, fewer bytes.
      const zipped = yield* get(`${server.url}/v2/apps`, { "Accept-Encoding": "gzip" })
      expect(zipped.headers["content-encoding"]).toBe("gzip")
      expect(zipped.body.length).toBeLessThan(first.body.length / 3)
      expect(JSON.parse(zlib.gunzipSync(zipped.body).toString("utf8"))).toEqual(first.json)
      expect((yield* get(`${server.url}/v2/apps`, { "Accept-Encoding": "gzip;q=0" })).headers["content-encoding"]).toBeUndefined()

      // Filtered and embedded forms are cached too, and see a change at once.
      const odd = yield* list("?label=n==1&embed=apps.tasks")
      expect(odd.json.apps).toHaveLength(20)
      expect(odd.json.apps.every((a: any) => Array.isArray(a.tasks))).toBe(true)
      expect((yield* api.patch("/v2/apps/c/app-1?force=true", { labels: { n: "0" }, instances: 1 })).status).toBe(200)
      const after = yield* list("?label=n==1&embed=apps.tasks")
      expect(after.json.apps).toHaveLength(19)
      const whole = yield* list()
      expect(whole.headers.etag).not.toBe(etag)
      expect(whole.json.apps.find((a: any) => a.id === "/c/app-1").instances).toBe(1)
      expect((yield* get(`${server.url}/v2/apps`, { "If-None-Match": etag })).status).toBe(200)
      // Task counts move with status updates, without any write through the API.
      const running = yield* eventually(Effect.map(list("?id=app-1"), (r) => {
        const app = r.json.apps.find((a: any) => a.id === "/c/app-1")
        return app?.tasksRunning === 1 ? app : undefined
      }), 60_000, "app-1 running in the filtered list")
      expect(running.labels).toEqual({ n: "0" })
      expect((yield* list("?id=app-1&embed=apps.tasks")).json.apps.find((a: any) => a.id === "/c/app-1").tasks).toHaveLength(1)
      // Bad selectors are still a 400, cached or not.
      expect((yield* api.get("/v2/apps?label=a%20in%20b")).status).toBe(400)
    }), 120_000)
})

describe("EventBus", () => {
  it("keeps at least the last `capacity` events for replay, in order, and trims in chunks", () => {
    const bus = new EventBus(100, () => 0)
    for (let i = 0; i < 1000; i++) bus.publish("e", { i })
    const all = bus.since(0)
    expect(all).toHaveLength(100)
    expect(all.map((e) => e.id)).toEqual(Array.from({ length: 100 }, (_, k) => 901 + k))
    expect(bus.since(990).map((e) => e.data.i)).toEqual([990, 991, 992, 993, 994, 995, 996, 997, 998, 999])
    expect(bus.since(1000)).toEqual([])
  })
})
