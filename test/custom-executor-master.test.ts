// Custom executors through the real master: a framework launches tasks on its own executor
// program (test/fixtures/customExecutor.ts, written with @berth/sdk-executor), exchanges framework
// messages with it, and gets the executor's resources back when it exits. The agent side alone
// (registration timeout, reconnection after an agent restart) is covered by custom-executor.test.ts.
import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Framework from "./support/framework.ts"

const fixture = fileURLToPath(new URL("./fixtures/customExecutor.ts", import.meta.url))
const { TaskState } = v1

const executor = (executorId: string, cpus = 0.5) =>
  v1.ExecutorInfo.create({
    type: v1.ExecutorInfo_Type.CUSTOM,
    executorId,
    resources: [Resources.scalar("cpus", cpus), Resources.scalar("mem", 256)],
    command: v1.CommandInfo.create({ shell: false, value: process.execPath, arguments: [process.execPath, fixture] })
  })
const task = (taskId: string, info: v1.ExecutorInfo, data = "") =>
  v1.TaskInfo.create({ taskId, name: taskId, resources: [Resources.scalar("cpus", 0.25), Resources.scalar("mem", 32)], executor: info, data: Buffer.from(data) })

const waitFor = <A>(what: string, probe: () => A | undefined) =>
  Effect.gen(function*() {
    for (let i = 0; i < 600; i++) {
      const value = probe()
      if (value !== undefined) return value
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.die(new Error(`timed out waiting for ${what}`))
  })

describe("custom executors through the master", () => {
  it.live("two tasks share one executor; messages go both ways; its resources come back when it exits", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master, "custom-executors")
      const info = executor("exec-1")
      const offer = yield* framework.nextOffer
      const agentId = offer.agentId
      yield* framework.session.accept([offer.offerId], [Framework.launch([task("t1", info), task("t2", info)])])
      yield* framework.awaitState("t1", TaskState.RUNNING)
      yield* framework.awaitState("t2", TaskState.RUNNING)

      // The executor's own share (0.5 cpus) and both tasks' (2 × 0.25) are held: 1 cpu of 2 is left.
      const held = yield* framework.nextOffer
      expect(Resources.sumScalar(held.resources, "cpus")).toBeCloseTo(1, 5)
      yield* framework.session.decline([held.offerId], { refuseSeconds: 0.1 })

      // A third task joins the running executor: only its own resources are taken.
      const joinOffer = yield* framework.nextOffer
      yield* framework.session.accept([joinOffer.offerId], [Framework.launch([task("t3", info, "finish")])])
      yield* framework.awaitState("t3", TaskState.FINISHED)

      // A different program under the same executor id is refused, naming the field.
      const clash = yield* framework.nextOffer
      const refused = yield* framework.session.accept([clash.offerId], [Framework.launch([task("t4", executor("exec-1", 0.75))])]).pipe(Effect.flip)
      expect(String((refused as { message?: string }).message ?? refused)).toMatch(/executor "exec-1" already runs .* with another command/)
      // A refused Accept changes nothing: the offer is still the framework's until declined.
      yield* framework.session.decline([clash.offerId], { refuseSeconds: 0.05 })

      // Scheduler → executor → scheduler.
      yield* framework.session.message(agentId, "exec-1", Buffer.from("ping:42"))
      const pong = yield* waitFor("the executor's answer", () => framework.messages.find((m) => Buffer.from(m.data).toString() === "pong:42"))
      expect(pong.executorId).toBe("exec-1")
      expect(pong.agentId).toBe(agentId)

      // A message for an executor that does not run is refused.
      const unknown = yield* framework.session.message(agentId, "nope", Buffer.from("x")).pipe(Effect.flip)
      expect(String((unknown as { message?: string }).message ?? unknown)).toMatch(/executorId/)

      // The executor process dies: its tasks end, the scheduler hears of the exit, and the
      // executor's own share is offered again with the tasks' (the whole agent).
      const pidFile = path.join(cluster.agents[0]!.workDir, "frameworks", framework.frameworkId, "executors", "exec-1", "runs", "latest", "executor.pid")
      process.kill(Number(fs.readFileSync(pidFile, "utf8")), "SIGKILL")
      yield* framework.awaitTerminal(["t1", "t2"])
      const failure = yield* waitFor("the executor's exit", () => framework.failures.find((f) => f.executorId === "exec-1"))
      expect(failure.agentId).toBe(agentId)
      let whole = 0
      for (let i = 0; i < 100 && whole < 2 - 1e-9; i++) {
        const next = yield* framework.nextOffer
        whole = Resources.sumScalar(next.resources, "cpus")
        yield* framework.session.decline([next.offerId], { refuseSeconds: 0.05 })
      }
      expect(whole).toBeCloseTo(2, 5)
    }), 120_000)
})
