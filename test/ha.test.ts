import { describe, expect, it } from "@effect/vitest"
import { Agent, Master } from "@berth/cluster-core"
import { Resources, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Effect, Exit, Layer, References, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"
import * as TempDir from "./support/tempDir.ts"

describe("high availability", () => {
  it.live("three masters on one registry: the leader is killed, a standby leads, agents and schedulers follow, no task is lost", () =>
    Effect.gen(function*() {
      const dir = yield* TempDir.make("berth-ha-")
      const registry = path.join(dir, "registry.db")
      const startMaster = Effect.gen(function*() {
        const scope = yield* Scope.make()
        const services = yield* Layer.build(Layer.fresh(StateStore.layerSqlite({ path: registry }))).pipe(Scope.provide(scope))
        const master = yield* Master.start({ port: 0, leaderLeaseSeconds: 1 }).pipe(Effect.provide(services), Scope.provide(scope))
        return { master, scope }
      })
      const masters = [yield* startMaster, yield* startMaster, yield* startMaster]
      yield* Effect.addFinalizer(() => Effect.forEach(masters, (m) => Scope.close(m.scope, Exit.void), { discard: true }))
      expect(masters.map((m) => m.master.info.leading)).toEqual([true, false, false])
      const endpoints = masters.map((m) => m.master.endpoint)

      // A standby answers with the leader; the SDK follows it.
      const agent = yield* Agent.start({ master: endpoints.join(","), workDir: path.join(dir, "agent"), resources: "cpus:1;mem:256" })
      const agentId = yield* agent.registered
      const framework = yield* Framework.open(endpoints[1]!, "ha")
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        Framework.launch([v1.TaskInfo.create({
          taskId: "steady",
          resources: [Resources.scalar("cpus", 0.5)],
          command: { shell: true, value: "exec sleep 120" }
        })])
      ])
      yield* framework.awaitState("steady", v1.TaskState.RUNNING)

      // The leader dies.
      yield* Scope.close(masters[0]!.scope, Exit.void)
      const newLeader = yield* Effect.gen(function*() {
        while (true) {
          const leading = masters.slice(1).find((m) => m.master.info.leading)
          if (leading !== undefined) return leading
          yield* Effect.sleep("50 millis")
        }
      }).pipe(Effect.timeout("15 seconds"))

      // The agent re-registers with its running task; the scheduler re-subscribes with its id.
      let state = yield* Framework.operatorState(newLeader.master.endpoint)
      while (!(state.agents.length === 1 && state.frameworks.some((f) => f.connected))) {
        yield* Effect.sleep("50 millis")
        state = yield* Framework.operatorState(newLeader.master.endpoint)
      }
      expect(state.agents.map((a) => a.info?.agentId)).toEqual([agentId])
      expect(state.frameworks.map((f) => f.info?.frameworkId)).toEqual([framework.frameworkId])
      expect(state.tasks.map((t) => [t.info?.taskId, t.state])).toEqual([["steady", v1.TaskState.RUNNING]])

      // And the new leader commands it: a kill goes through.
      yield* framework.session.kill("steady")
      yield* framework.awaitState("steady", v1.TaskState.KILLED)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 60_000)
})
