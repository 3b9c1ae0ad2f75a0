/**
 * The simulation's per-step "no task vanishes" check (issue 7, scope 5): a task RUNNING before a
 * step must still be accounted for by the master once the step settled. Planted here: a
 * framework whose durable record claims a RUNNING task the master never heard of, so the check
 * must fire at the first step (not only in the final settled check).
 */
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { Simulation } from "@berth/testkit"
import { Effect } from "effect"

const ghost: Simulation.Framework = {
  name: "ghost",
  run: (ctx) => ctx.store.putTask("ghost-1", v1.TaskState.RUNNING),
  done: () => true
}

describe("Simulation.simulate, per-step checks", () => {
  it.live("a task RUNNING before a step that the master does not know afterwards is reported at that step", () =>
    Effect.gen(function*() {
      const report = yield* Effect.scoped(Simulation.simulate({ seed: 5, steps: 2, faults: ["duplicate-updates"], framework: ghost, cluster: { agents: 1 } }))
      expect(report.ok).toBe(false)
      const first = report.steps[0]!
      expect(first.violations).toEqual([
        `task lost: ghost-1 was RUNNING before step 1 (${first.action}) and the master no longer knows it`
      ])
      // Reported once (violations are deduplicated), and in the hashed events at step 1.
      expect(report.violations.filter((v) => v.startsWith("task lost: ghost-1 was RUNNING before step"))).toHaveLength(1)
      expect(report.events).toContain(`step 1: violation: ${first.violations[0]}`)
      // The settled check agrees at the end.
      expect(report.violations).toContain("task lost: ghost-1 is RUNNING in the framework's record, unknown to the master")
    }), 120_000)
})
