import { describe, expect, it } from "@effect/vitest"
import { ServiceScheduler } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { Effect, Layer } from "effect"

// The runtime itself is exercised on real clusters by examples/kv-store and examples/hello-world;
// here: a bad spec fails the layer before anything connects or launches (the master below does
// not exist: reaching it would hang, not fail), naming the path and the rule.
const build = (spec: unknown) =>
  Layer.build(ServiceScheduler.layerStack({ spec, master: "127.0.0.1:1" }).pipe(Layer.provide(StateStore.layerMemory))).pipe(
    Effect.flip,
    Effect.timeout("10 seconds")
  )

describe("ServiceScheduler bad input", () => {
  const cases: Array<[string, unknown, string]> = [
    ["count 0", { name: "kv", pods: { kv: { count: 0, tasks: { t: { goal: "RUNNING", cmd: "x", cpus: 1, mem: 1 } } } } }, "pods.kv.count: must be ≥ 1"],
    ["no pods", { name: "kv", pods: {} }, "pods: must declare at least one pod"],
    ["not an object", "kv", "(root)"],
    [
      "a task naming an unknown resource set",
      { name: "kv", pods: { kv: { count: 1, tasks: { a: { goal: "RUNNING", cmd: "x", resourceSet: "big" } } } } },
      'pods.kv.tasks.a.resourceSet: no resource set "big" in pods.kv.resourceSets'
    ]
  ]
  it.effect.each(cases)("refuses %s before connecting", ([_label, spec, expected]) =>
    Effect.gen(function*() {
      const error = yield* build(spec)
      expect(error._tag).toBe("ServiceSpecError")
      expect(error.message).toContain(expected)
    }))
})
