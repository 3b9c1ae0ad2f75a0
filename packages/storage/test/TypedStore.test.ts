import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Schema } from "effect"
import { StateStore, TypedStore } from "@berth/storage"

const Task = Schema.Struct({
  name: Schema.String,
  state: Schema.Literals(["STAGING", "RUNNING", "FINISHED"]),
  attempts: Schema.Int,
  checksum: Schema.Uint8Array
})
type Task = typeof Task.Type

const task = (name: string, state: Task["state"]): Task => ({
  name,
  state,
  attempts: 1,
  checksum: new Uint8Array([0, 255, name.length])
})

describe("TypedStore", () => {
  it.effect("stores schema values under a prefix with relative keys", () =>
    Effect.gen(function*() {
      const tasks = yield* TypedStore.make(Task, "tasks/")
      const created = yield* tasks.compareAndSet("t1", 0, task("web", "STAGING"))
      expect(created).toMatchObject({ key: "t1", version: 1 })
      yield* tasks.compareAndSet("t1", created.version, task("web", "RUNNING"))
      yield* tasks.put("t2", task("db", "STAGING"))
      const t1 = Option.getOrThrow(yield* tasks.get("t1"))
      expect(t1.value).toEqual(task("web", "RUNNING"))
      expect(t1.version).toBe(2)
      expect((yield* tasks.list()).map((e) => [e.key, e.value.name])).toEqual([["t1", "web"], ["t2", "db"]])
      expect((yield* tasks.list({ after: "t1" })).map((e) => e.key)).toEqual(["t2"])
      const conflict = yield* Effect.flip(tasks.compareAndSet("t1", 1, task("web", "FINISHED")))
      expect(conflict).toMatchObject({ _tag: "VersionConflict", key: "tasks/t1", actual: 2 })
      expect(yield* tasks.delete("t2")).toBe(true)
      expect(yield* tasks.get("t2")).toEqual(Option.none())
      // the raw store holds JSON under the full key
      const raw = yield* StateStore.StateStore.use((s) => s.get("tasks/t1"))
      expect(JSON.parse(new TextDecoder().decode(Option.getOrThrow(raw).value))).toMatchObject({ name: "web" })
    }).pipe(Effect.provide(StateStore.layerMemory)))

  it.effect("refuses a value that does not satisfy the schema, writing nothing", () =>
    Effect.gen(function*() {
      const tasks = yield* TypedStore.make(Task, "tasks/")
      const error = yield* Effect.flip(tasks.put("t1", { ...task("web", "STAGING"), attempts: 1.5 }))
      expect(error._tag).toBe("SchemaError")
      expect(yield* tasks.get("t1")).toEqual(Option.none())
    }).pipe(Effect.provide(StateStore.layerMemory)))

  it.effect("a stored value that does not decode fails with a StoreError naming the key", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      yield* store.put("tasks/bad", new TextEncoder().encode(`{"name":"web"}`))
      yield* store.put("tasks/binary", new Uint8Array([0xff, 0xfe]))
      const tasks = yield* TypedStore.make(Task, "tasks/")
      const error = yield* Effect.flip(tasks.get("bad"))
      expect(error).toMatchObject({ _tag: "StoreError", backend: "TypedStore", operation: "get", key: "tasks/bad" })
      expect(error.message).toContain(`"tasks/bad"`)
      expect(error.message).toContain("does not match the schema")
      const binary = yield* Effect.flip(tasks.get("binary"))
      expect(binary.message).toContain("is not UTF-8 text")
    }).pipe(Effect.provide(StateStore.layerMemory)))
})
