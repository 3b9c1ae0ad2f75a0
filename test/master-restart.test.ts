import { describe, expect, it } from "@effect/vitest"
import { Agent, Master } from "@berth/cluster-core"
import { Resources, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Operator } from "@berth/testkit"
import { Effect, Exit, Layer, References, Scope } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"
import * as TempDir from "./support/tempDir.ts"

const freePort = Effect.promise(
  () =>
    new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, "127.0.0.1", () => {
        const port = (server.address() as net.AddressInfo).port
        server.close(() => resolve(port))
      })
    })
)

describe("master restart", () => {
  it.live("kills no task: the agent re-registers with it, the scheduler re-subscribes with its framework id, updates still arrive", () =>
    Effect.gen(function*() {
      const dir = yield* TempDir.make("berth-restart-")
      const port = yield* freePort
      // A fresh layer per master: the registry file is the only thing the two masters share.
      const store = () => Layer.fresh(StateStore.layerSqlite({ path: path.join(dir, "master.db") }))
      const startMaster = (scope: Scope.Scope) =>
        Effect.gen(function*() {
          const services = yield* Layer.build(store())
          return yield* Master.start({ port }).pipe(Effect.provide(services))
        }).pipe(Scope.provide(scope))
      const first = yield* Scope.make()
      const master = yield* startMaster(first)
      const agent = yield* Agent.start({
        master: master.endpoint,
        workDir: path.join(dir, "agent"),
        resources: "cpus:1;mem:512;disk:512"
      })
      yield* agent.registered
      const framework = yield* Framework.open(master.endpoint)
      const offer = yield* framework.nextOffer
      const gate = path.join(dir, "go")
      yield* framework.session.accept([offer.offerId], [
        Framework.launch([v1.TaskInfo.create({
          name: "survivor",
          taskId: "survivor",
          resources: [Resources.scalar("cpus", 0.5), Resources.scalar("mem", 64)],
          command: { shell: true, value: `while [ ! -f ${gate} ]; do sleep 0.05; done; echo survived` }
        })])
      ])
      yield* framework.awaitState("survivor", v1.TaskState.RUNNING)

      yield* Scope.close(first, Exit.void)
      const second = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(second, Exit.void))
      const restarted = yield* startMaster(second)
      expect(restarted.info.masterId).not.toBe(master.info.masterId)
      const operator = yield* Operator.make(restarted.endpoint)

      // Both sides come back on their own: the agent with its running task, the scheduler with
      // the framework id the first master gave it.
      let state = yield* operator.state
      while (!(state.frameworks.some((f) => f.connected) && state.tasks.some((t) => t.state === v1.TaskState.RUNNING))) {
        yield* Effect.sleep("50 millis")
        state = yield* operator.state
      }
      expect(state.frameworks.map((f) => f.info?.frameworkId)).toEqual([framework.frameworkId])
      expect(state.tasks.map((t) => [t.info?.taskId, t.state])).toEqual([["survivor", v1.TaskState.RUNNING]])
      expect(Resources.sumScalar(state.agents[0]!.allocated, "cpus")).toBe(0.5)

      fs.writeFileSync(gate, "")
      const finished = yield* framework.awaitState("survivor", v1.TaskState.FINISHED)
      expect(finished.agentId).toBe(yield* agent.registered)
      const stdout = fs.readFileSync(
        path.join(dir, "agent", "frameworks", framework.frameworkId, "executors", "survivor", "runs", "latest", "stdout"),
        "utf8"
      )
      expect(stdout).toBe("survived\n")
      // Offers resume on the new master.
      const again = yield* framework.nextOffer
      expect(again.agentId).toBe(finished.agentId)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")), 30_000)
})
