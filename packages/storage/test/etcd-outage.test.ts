import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, Schedule, Stream } from "effect"
import { StateStore } from "@berth/storage"
import { etcdLayer, useEtcd } from "./etcdHarness.ts"

const etcd = useEtcd()

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
const text = (value: Uint8Array): string => new TextDecoder().decode(value)

describe("etcd outage", () => {
  it.live("while etcd is down calls fail with a StoreError; when it returns they recover and nothing committed is lost", () =>
    Effect.gen(function*() {
      const server = etcd()
      const store = yield* StateStore.make(etcdLayer(etcd, { requestTimeout: "1 second" }))
      const start = (yield* store.revision) + 1
      // A watcher that lives through the outage: it must deliver every change exactly once.
      const watcher = yield* Effect.forkChild(
        store.watch("k/", { fromRevision: start }).pipe(Stream.take(15), Stream.runCollect)
      )
      for (let i = 0; i < 10; i++) yield* store.put(`k/${i}`, bytes(`v${i}`))
      const counter = yield* store.compareAndSet("counter", 0, bytes("1"))

      yield* server.kill
      expect(yield* server.pid).toBeUndefined()

      const read = yield* Effect.flip(store.get("k/1"))
      expect(read).toMatchObject({ _tag: "StoreError", backend: "etcd", operation: "get", key: "k/1" })
      expect(read.message).toContain("etcd is unreachable")
      expect(read.message).toContain(server.endpoint)
      const write = yield* Effect.flip(store.put("k/lost", bytes("x")))
      expect(write).toMatchObject({ _tag: "StoreError", operation: "put" })
      const cas = yield* Effect.flip(store.compareAndSet("counter", counter.version, bytes("2")))
      expect(cas._tag).toBe("StoreError")
      const txn = yield* Effect.flip(store.list("k/"))
      expect(txn._tag).toBe("StoreError")

      yield* server.restart
      // The first calls after the restart may still meet the reconnecting channel: retry them.
      const recovered = yield* store.list("k/").pipe(
        Effect.retry(Schedule.max([Schedule.spaced("200 millis"), Schedule.recurs(50)]))
      )
      expect(recovered.map((e) => [e.key, text(e.value)])).toEqual(
        Array.from({ length: 10 }, (_, i) => [`k/${i}`, `v${i}`])
      )
      // The failed writes did not happen, and the counter is where we left it.
      expect(yield* store.get("k/lost")).toEqual(Option.none())
      expect(Option.getOrThrow(yield* store.get("counter")).version).toBe(counter.version)
      yield* store.compareAndSet("counter", counter.version, bytes("2"))
      for (let i = 10; i < 15; i++) yield* store.put(`k/${i}`, bytes(`v${i}`))

      const events = yield* Fiber.join(watcher).pipe(Effect.timeout("20 seconds"))
      expect(events.map((e) => (e._tag === "Put" ? e.entry.key : `-${e.key}`))).toEqual(
        Array.from({ length: 15 }, (_, i) => `k/${i}`)
      )
    }), 60_000)
})
