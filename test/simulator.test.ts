import { describe, expect, it } from "@effect/vitest"
import { Simulator } from "@berth/cluster-core"
import { Resources, v1 } from "@berth/proto"
import { Effect, References } from "effect"
import * as Framework from "./support/framework.ts"
import * as MasterSupport from "./support/master.ts"

describe("simulated agents", () => {
  it.live("register with a real master, run tasks through the real protocol, and report kills and exits", () =>
    Effect.gen(function*() {
      const master = yield* MasterSupport.start()
      const simulator = yield* Simulator.start({ masters: [master.endpoint], agents: 50, resources: "cpus:4;mem:4096", taskSeconds: 0.3 })
      yield* simulator.registered
      const state = yield* Framework.operatorState(master.endpoint)
      expect(state.agents).toHaveLength(50)
      expect(new Set(state.agents.map((a) => a.info?.hostname)).size).toBe(50)

      const framework = yield* Framework.open(master.endpoint)
      const ids: Array<string> = []
      while (ids.length < 100) {
        const offer = yield* framework.nextOffer
        const batch = [`sim-${ids.length}`, `sim-${ids.length + 1}`]
        ids.push(...batch)
        yield* framework.session.accept([offer.offerId], [
          Framework.launch(batch.map((taskId) =>
            v1.TaskInfo.create({
              taskId,
              resources: [Resources.scalar("cpus", 0.1)],
              command: { shell: true, value: taskId === "sim-7" ? "exit 3" : "true" }
            })
          ))
        ])
      }
      yield* framework.awaitTerminal(ids)
      const finals = ids.map((id) => framework.updates.findLast((s) => s.taskId === id)!)
      expect(finals.filter((s) => s.state === v1.TaskState.FINISHED)).toHaveLength(99)
      expect(finals.find((s) => s.taskId === "sim-7")).toMatchObject({ state: v1.TaskState.FAILED, exitCode: 3 })
      // Every update went through the agent protocol's acknowledgements.
      yield* Effect.gen(function*() {
        while (simulator.pendingUpdates() > 0) yield* Effect.sleep("20 millis")
      }).pipe(Effect.timeout("5 seconds"))
      expect(simulator.pendingUpdates()).toBe(0)
      // Acknowledged terminal tasks are forgotten by the agents, as on real agents.
      expect(simulator.tasks()).toEqual({ running: 0, finished: 0, killed: 0, failed: 0 })
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 30_000)
})
