import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, Schema, Stream } from "effect"
import { ConfigStore, FrameworkStore, Migrations, PlanStore, StateStore, TaskStore, TypedStore } from "@berth/storage"

const Info = Schema.Struct({ name: Schema.String, cmd: Schema.String, checksum: Schema.Uint8Array })
const Status = Schema.Struct({ state: Schema.Literals(["STAGING", "RUNNING", "FINISHED"]), uuid: Schema.String })

// Every framework keeps its state under its own namespace of one store.
const framework = StateStore.layerNamespace("frameworks/hello/").pipe(Layer.provideMerge(StateStore.layerMemory))

describe("FrameworkStore", () => {
  it.effect("stores the framework id once and refuses to replace it", () =>
    Effect.gen(function*() {
      const fw = yield* FrameworkStore.make
      expect(yield* fw.frameworkId).toEqual(Option.none())
      const stored = yield* fw.storeFrameworkId("f-1")
      expect(stored.frameworkId).toBe("f-1")
      // storing the same id again (a restarted scheduler) is fine
      expect((yield* fw.storeFrameworkId("f-1")).storedAt).toBe(stored.storedAt)
      const mismatch = yield* Effect.flip(fw.storeFrameworkId("f-2"))
      expect(mismatch).toMatchObject({ _tag: "FrameworkIdMismatch", stored: "f-1", offered: "f-2" })
      expect(mismatch.message).toContain(`refusing to replace it with "f-2"`)
      expect(yield* fw.frameworkId).toEqual(Option.some("f-1"))
      expect(yield* fw.clearFrameworkId).toBe(true)
      expect(yield* fw.frameworkId).toEqual(Option.none())
    }).pipe(Effect.provide(framework)))

  it.effect("two schedulers racing to store different ids: exactly one wins", () =>
    Effect.gen(function*() {
      const fw = yield* FrameworkStore.make
      const results = yield* Effect.forEach(["a", "b", "c"], (id) => Effect.result(fw.storeFrameworkId(id)), {
        concurrency: "unbounded"
      })
      expect(results.filter((r) => r._tag === "Success").length).toBe(1)
      expect(results.filter((r) => r._tag === "Failure").length).toBe(2)
    }).pipe(Effect.provide(framework)))
})

describe("TaskStore", () => {
  it.effect("keeps task info and the last status per task, under the framework's namespace", () =>
    Effect.gen(function*() {
      const tasks = yield* TaskStore.make({ info: Info, status: Status })
      const info = (name: string) => ({ name, cmd: `./${name}`, checksum: new Uint8Array([1, 2, 3]) })
      yield* tasks.putInfo("web-0", info("web"))
      yield* tasks.putInfos(Array.from({ length: 40 }, (_, i) => [`db-${String(i).padStart(2, "0")}`, info("db")] as const))
      yield* tasks.putStatus("web-0", { state: "STAGING", uuid: "u1" })
      yield* tasks.putStatus("web-0", { state: "RUNNING", uuid: "u2" })
      yield* tasks.putStatus("ghost", { state: "RUNNING", uuid: "u3" })
      const web = Option.getOrThrow(yield* tasks.get("web-0"))
      expect(web.info).toEqual(info("web"))
      expect(web.status).toEqual(Option.some({ state: "RUNNING", uuid: "u2" }))
      const all = yield* tasks.list
      expect(all.length).toBe(41)
      expect(all[0]!.taskId).toBe("db-00")
      expect(all[0]!.status).toEqual(Option.none())
      expect(yield* tasks.orphanStatuses).toEqual([["ghost", { state: "RUNNING", uuid: "u3" }]])
      expect(yield* tasks.remove("web-0")).toBe(true)
      expect(yield* tasks.get("web-0")).toEqual(Option.none())
      expect(yield* tasks.remove("web-0")).toBe(false)
      // the raw keys live under the namespace
      const raw = yield* StateStore.StateStore.use((s) => s.list("tasks/status/"))
      expect(raw.map((e) => e.key)).toEqual(["tasks/status/ghost"])
    }).pipe(Effect.provide(framework)))

  it.effect("a value that does not match the schema writes nothing", () =>
    Effect.gen(function*() {
      const tasks = yield* TaskStore.make({ info: Info, status: Status })
      const error = yield* Effect.flip(tasks.putStatus("t", { state: "LOST" as never, uuid: "u" }))
      expect(error._tag).toBe("SchemaError")
      expect(yield* tasks.orphanStatuses).toEqual([])
    }).pipe(Effect.provide(framework)))
})

describe("ConfigStore", () => {
  const Config = Schema.Struct({ count: Schema.Int, image: Schema.String })

  it.effect("keeps configurations by id and a target that always names a stored one", () =>
    Effect.gen(function*() {
      const configs = yield* ConfigStore.make(Config)
      expect(yield* configs.target).toEqual(Option.none())
      yield* configs.put("v1", { count: 1, image: "kv:1" })
      yield* configs.put("v2", { count: 3, image: "kv:2" })
      yield* configs.put("v3", { count: 3, image: "kv:3" })
      const missing = yield* Effect.flip(configs.setTarget("v9"))
      expect(missing).toMatchObject({ _tag: "ConfigNotFound", id: "v9" })
      expect(missing.message).toContain(`configuration "v9" is not stored`)
      yield* configs.setTarget("v2")
      expect(yield* configs.target).toEqual(Option.some(["v2", { count: 3, image: "kv:2" }]))
      expect((yield* configs.list).map(([id]) => id)).toEqual(["v1", "v2", "v3"])
      // prune keeps the target and what tasks still use
      expect(yield* configs.prune(["v1"])).toEqual(["v3"])
      expect((yield* configs.list).map(([id]) => id)).toEqual(["v1", "v2"])
      expect(yield* configs.get("v3")).toEqual(Option.none())
    }).pipe(Effect.provide(framework)))
})

describe("PlanStore", () => {
  it.effect("records step statuses and operator overrides per plan", () =>
    Effect.gen(function*() {
      const plans = yield* PlanStore.make
      yield* plans.setStepStatus("deploy", "nodes", "node-0", "COMPLETE")
      yield* plans.setStepStatus("deploy", "nodes", "node-1", "STARTING", "launching")
      yield* plans.setStepStatus("deploy", "seeds/primary", "seed 0", "PENDING")
      yield* plans.setStepStatus("recovery", "replace", "node-1", "PENDING")
      const steps = yield* plans.steps("deploy")
      expect(steps.map((s) => [s.phase, s.step, s.status, s.message])).toEqual([
        ["nodes", "node-0", "COMPLETE", undefined],
        ["nodes", "node-1", "STARTING", "launching"],
        ["seeds/primary", "seed 0", "PENDING", undefined]
      ])
      expect(Option.getOrThrow(yield* plans.step("deploy", "seeds/primary", "seed 0")).status).toBe("PENDING")
      yield* plans.setOverride({ plan: "deploy", phase: "nodes" }, { interrupted: true })
      yield* plans.setOverride({ plan: "deploy", phase: "nodes", step: "node-1" }, { forceComplete: true })
      yield* plans.setOverride({ plan: "deploy" }, { interrupted: true })
      let overrides = yield* plans.overrides("deploy")
      expect(Option.getOrThrow(overrides.plan).interrupted).toBe(true)
      expect(overrides.phases.get("nodes")).toMatchObject({ interrupted: true, forceComplete: false })
      expect(overrides.steps.get("nodes")?.get("node-1")).toMatchObject({ interrupted: false, forceComplete: true })
      yield* plans.clearOverride({ plan: "deploy", phase: "nodes" })
      yield* plans.setOverride({ plan: "deploy" }, { interrupted: false })
      overrides = yield* plans.overrides("deploy")
      expect(overrides.phases.size).toBe(0)
      expect(Option.getOrThrow(overrides.plan).interrupted).toBe(false)
      expect(yield* plans.plans).toEqual(["deploy", "recovery"])
      yield* plans.removePlan("deploy")
      expect(yield* plans.steps("deploy")).toEqual([])
      expect(yield* plans.plans).toEqual(["recovery"])
    }).pipe(Effect.provide(framework)))

  it.effect("concurrent override changes are all kept", () =>
    Effect.gen(function*() {
      const plans = yield* PlanStore.make
      yield* Effect.forEach(
        Array.from({ length: 10 }, (_, i) => `step-${i}`),
        (step) => plans.setOverride({ plan: "deploy", phase: "p", step }, { interrupted: true }),
        { concurrency: "unbounded" }
      )
      expect((yield* plans.overrides("deploy")).steps.get("p")?.size).toBe(10)
    }).pipe(Effect.provide(framework)))
})

describe("Migrations", () => {
  const V1 = Schema.Struct({ host: Schema.String })
  const V2 = Schema.Struct({ agentHost: Schema.String })

  it.effect("applies the missing migrations once, in order, and records the version", () =>
    Effect.gen(function*() {
      expect(yield* Migrations.current()).toBe(0)
      const first = yield* Migrations.run({ migrations: Migrations.frameworkState })
      expect(first).toEqual({ from: 0, to: 1, applied: [1] })
      const old = yield* TypedStore.make(V1, "app/")
      yield* old.put("a", { host: "h1" })
      yield* old.put("b", { host: "h2" })
      let runs = 0
      const rename: Migrations.Migration<unknown, StateStore.StateStore> = {
        version: 2,
        description: "app: host becomes agentHost",
        migrate: Effect.gen(function*() {
          runs++
          const raw = yield* TypedStore.make(Schema.Struct({ host: Schema.optional(Schema.String), agentHost: Schema.optional(Schema.String) }), "app/")
          for (const entry of yield* raw.list()) {
            yield* raw.put(entry.key, { agentHost: entry.value.agentHost ?? entry.value.host! })
          }
        })
      }
      const migrations = [...Migrations.frameworkState, rename]
      // several processes start together: one migrates, the others find nothing to do
      const reports = yield* Effect.forEach([1, 2, 3], () => Migrations.run({ migrations }), { concurrency: "unbounded" })
      expect(reports.map((r) => r.applied)).toContainEqual([2])
      expect(reports.flatMap((r) => r.applied)).toEqual([2])
      expect(runs).toBe(1)
      expect(yield* Migrations.current()).toBe(2)
      const migrated = yield* TypedStore.make(V2, "app/")
      expect((yield* migrated.list()).map((e) => e.value.agentHost)).toEqual(["h1", "h2"])
      // an older build refuses data from a newer one
      const tooNew = yield* Effect.flip(Migrations.run({ migrations: Migrations.frameworkState }))
      expect(tooNew).toMatchObject({ _tag: "SchemaVersionTooNew", found: 2, supported: 1 })
      expect(tooNew.message).toContain("written by a newer release")
    }).pipe(Effect.provide(framework)))

  it.effect("a failing migration stops there and names itself; the version stays put", () =>
    Effect.gen(function*() {
      const failing: Migrations.Migration<Error> = { version: 2, description: "breaks", migrate: Effect.fail(new Error("disk on fire")) }
      const error = yield* Effect.flip(Migrations.run({ migrations: [...Migrations.frameworkState, failing] }))
      expect(error).toMatchObject({ _tag: "MigrationFailed", version: 2 })
      expect(error.message).toContain("migration 2 (breaks) failed: disk on fire")
      expect(yield* Migrations.current()).toBe(1)
      const gap = yield* Effect.flip(Migrations.run({ migrations: [{ ...failing, version: 3 }] }))
      expect(gap.message).toContain("must be numbered 1, 2, 3")
    }).pipe(Effect.provide(framework)))
})

describe("TypedStore", () => {
  it.effect("watches decoded changes, and builds transaction operations", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      const tasks = yield* TypedStore.make(Status, "tasks/")
      const start = (yield* store.revision) + 1
      const events = yield* Effect.forkChild(tasks.watch({ fromRevision: start }).pipe(Stream.take(3), Stream.runCollect))
      const a = yield* tasks.put("a", { state: "STAGING", uuid: "1" })
      yield* store.transaction([yield* tasks.putOp("a", { state: "RUNNING", uuid: "2" }, { expectedVersion: a.version })])
      yield* store.transaction([tasks.checkOp("a", 2), tasks.deleteOp("a")])
      const seen = yield* Fiber.join(events)
      expect(seen).toMatchObject([
        { _tag: "Put", entry: { key: "a", value: { state: "STAGING" }, version: 1 } },
        { _tag: "Put", entry: { key: "a", value: { state: "RUNNING" }, version: 2 } },
        { _tag: "Delete", key: "a" }
      ])
      const many = yield* tasks.getMany(["a", "b"])
      expect(many).toEqual([Option.none(), Option.none()])
      const modified = yield* Effect.forEach(Array.from({ length: 8 }), () =>
        tasks.modify("counter", (current) => ({ state: "RUNNING", uuid: String(Number(Option.getOrElse(Option.map(current, (c) => c.uuid), () => "0")) + 1) })), { concurrency: "unbounded" })
      expect(modified.length).toBe(8)
      expect(Option.getOrThrow(yield* tasks.get("counter")).value.uuid).toBe("8")
    }).pipe(Effect.provide(StateStore.layerMemory)))
})
