import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { StateStore } from "@berth/storage"
import { stateStoreSuite } from "./stateStoreSuite.ts"

stateStoreSuite({ name: "memory", layer: () => StateStore.layerMemory, time: "virtual" })

describe("StateStore.layerMemory", () => {
  it.effect("a watch from a revision older than the kept history fails with RevisionCompacted", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      for (let i = 0; i < 200; i++) yield* store.put(`k${i % 3}`, new Uint8Array([i]))
      const error = yield* Effect.flip(Stream.runDrain(store.watch("", { fromRevision: 2 })))
      expect(error).toMatchObject({ _tag: "RevisionCompacted", requested: 2 })
      expect(error.message).toContain("has been compacted")
      // within the history it still works
      const recent = yield* store.watch("", { fromRevision: 195 }).pipe(Stream.take(6), Stream.runCollect)
      expect(recent.map((e) => (e._tag === "Put" ? e.entry.revision : e.revision))).toEqual([195, 196, 197, 198, 199, 200])
    }).pipe(Effect.provide(StateStore.layerMemoryWith({ history: 50 }))))
})

describe("StateStore.layerFromUrl", () => {
  it.effect("memory: gives an in-memory store", () =>
    Effect.gen(function*() {
      const entry = yield* StateStore.StateStore.use((s) => s.put("k", new Uint8Array([1]))).pipe(
        Effect.provide(StateStore.layerFromUrl("memory:"))
      )
      expect(entry.version).toBe(1)
    }))

  it.effect.each([
    ["", "unknown scheme"],
    ["memory", "unknown scheme"],
    ["sqlite:", "the path after \"sqlite:\" is missing"],
    ["sqlite://state.db", "ambiguous"],
    ["etcd://127.0.0.1:2379", "write the endpoints right after \"etcd:\""],
    ["etcd:", "at least one endpoint"],
    ["etcd:127.0.0.1:2379,", "at least one endpoint"],
    ["etcd:127.0.0.1", "must be host:port"],
    ["etcd:127.0.0.1:99999", "must be host:port"],
    ["etcd:127.0.0.1:2379?colour=blue", "unknown option \"colour\""],
    ["etcd:127.0.0.1:2379?password=x", "BERTH_ETCD_PASSWORD"],
    ["etcd:127.0.0.1:2379?cert=/a.pem", "cert and key go together"],
    ["postgres:x", "unknown scheme"]
  ])("refuses %j, naming the rule and the accepted forms", ([url, rule]) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        StateStore.StateStore.use((s) => s.get("k")).pipe(Effect.provide(StateStore.layerFromUrl(url!)))
      )
      expect(error._tag).toBe("InvalidStoreUrl")
      expect(error.message).toContain(JSON.stringify(url))
      expect(error.message).toContain(rule)
      expect(error.message).toContain(`expected "memory:", "sqlite:<path>" or "etcd:`)
      expect(yield* Effect.flip(StateStore.parseUrl(url!))).toMatchObject({ _tag: "InvalidStoreUrl" })
    }))

  it.effect("parseUrl accepts the documented forms without opening anything", () =>
    Effect.gen(function*() {
      for (const url of ["memory:", "sqlite:/nonexistent/dir/x.db", "etcd:127.0.0.1:2379", "etcd:https://a:1,http://[::1]:2?prefix=x/&username=u"]) {
        yield* StateStore.parseUrl(url)
      }
    }))

  it.effect("an etcd URL with a CA file that cannot be read says which file", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        StateStore.StateStore.use((s) => s.get("k")).pipe(
          Effect.provide(StateStore.layerFromUrl("etcd:127.0.0.1:2379?ca=/nonexistent/ca.pem"))
        )
      )
      expect(error.message).toContain("cannot read the ca file /nonexistent/ca.pem")
    }))
})
