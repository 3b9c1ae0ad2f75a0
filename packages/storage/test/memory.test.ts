import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { StateStore } from "@berth/storage"
import { stateStoreSuite } from "./stateStoreSuite.ts"

stateStoreSuite("memory", () => StateStore.layerMemory)

describe("StateStore.layerFromUrl", () => {
  it.effect("memory: gives an in-memory store", () =>
    Effect.gen(function*() {
      const entry = yield* StateStore.StateStore.use((s) => s.put("k", new Uint8Array([1]))).pipe(
        Effect.provide(StateStore.layerFromUrl("memory:"))
      )
      expect(entry.version).toBe(1)
    }))

  it.effect.each(["", "memory", "sqlite:", "sqlite://state.db", "etcd://127.0.0.1:2379", "postgres:x"])(
    "refuses %j, naming the accepted forms",
    (url) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          StateStore.StateStore.use((s) => s.get("k")).pipe(Effect.provide(StateStore.layerFromUrl(url)))
        )
        expect(error._tag).toBe("InvalidStoreUrl")
        expect(error.message).toContain(JSON.stringify(url))
        expect(error.message).toContain(`expected "memory:" or "sqlite:<path>"`)
      })
  )
})
