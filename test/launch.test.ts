import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Clock, Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"
import { alive } from "./support/processes.ts"

const echo = (i: number): v1.TaskInfo =>
  v1.TaskInfo.create({
    name: `echo-${i}`,
    taskId: `echo-${i}`,
    resources: [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 16)],
    command: { shell: true, value: `echo "output of task ${i}"; echo "err ${i}" >&2` }
  })

/** The sandbox of the latest run of a task, found on whichever agent ran it. */
const sandboxOf = (cluster: TestCluster.TestCluster, frameworkId: string, taskId: string) => {
  for (const agent of cluster.agents) {
    const dir = path.join(agent.workDir, "frameworks", frameworkId, "executors", taskId, "runs", "latest")
    if (fs.existsSync(dir)) return { agent, dir }
  }
  return undefined
}

describe("launching real tasks on an in-process cluster", () => {
  it.live("runs 30 tasks across 3 agents: all FINISHED, outputs in the sandboxes, every update acknowledged", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master)
      const all = Array.from({ length: 30 }, (_, i) => echo(i))
      const waiting = [...all]
      // Each agent holds 10 tasks of 0.1 cpus, so the 30 tasks need all three agents.
      while (waiting.length > 0) {
        const offer = yield* framework.nextOffer
        const batch: Array<v1.TaskInfo> = []
        let left = offer.resources
        while (waiting.length > 0 && Resources.contains(left, waiting[0]!.resources)) {
          left = Resources.subtract(left, waiting[0]!.resources)
          batch.push(waiting.shift()!)
        }
        if (batch.length === 0) {
          yield* framework.session.decline([offer.offerId], { refuseSeconds: 0 })
          continue
        }
        const response = yield* framework.session.accept([offer.offerId], [Framework.launch(batch)])
        expect(response.launchedTaskIds).toEqual(batch.map((t) => t.taskId))
      }
      yield* framework.awaitTerminal(all.map((t) => t.taskId))

      const finals = all.map((t) => framework.updates.findLast((s) => s.taskId === t.taskId)!)
      expect(finals.map((s) => TaskStates.name(s.state))).toEqual(all.map(() => "FINISHED"))
      expect(new Set(finals.map((s) => s.agentId)).size).toBe(3)
      for (const task of all) {
        const states = framework.updates.filter((s) => s.taskId === task.taskId).map((s) => TaskStates.name(s.state))
        expect(states).toEqual(["STAGING", "STARTING", "RUNNING", "FINISHED"])
        const sandbox = sandboxOf(cluster, framework.frameworkId, task.taskId)
        expect(sandbox).toBeDefined()
        const i = task.taskId.slice("echo-".length)
        expect(fs.readFileSync(path.join(sandbox!.dir, "stdout"), "utf8")).toBe(`output of task ${i}\n`)
        expect(fs.readFileSync(path.join(sandbox!.dir, "stderr"), "utf8")).toBe(`err ${i}\n`)
      }
      // STAGING comes from the master and needs no acknowledgement; everything else carries a
      // uuid, was acknowledged, and the agents hold nothing unacknowledged any more.
      expect(framework.received.size).toBe(30 * 3)
      expect([...framework.received].filter((u) => !framework.acknowledged.has(u))).toEqual([])
      yield* Effect.gen(function*() {
        while (cluster.agents.some((a) => a.pendingUpdates() > 0)) yield* Effect.sleep("20 millis")
      }).pipe(Effect.timeout("10 seconds"))
      expect(cluster.agents.map((a) => a.pendingUpdates())).toEqual([0, 0, 0])
      const state = yield* cluster.operator.state
      expect(state.tasks.filter((t) => t.state === v1.TaskState.FINISHED)).toHaveLength(30)
      // Every task's resources went back to its agent.
      for (const agent of state.agents) expect(Resources.sumScalar(agent.allocated, "cpus")).toBe(0)
    }))

  it.live("kills a long-running task that ignores SIGTERM: KILLED within its grace period plus one second", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      const task = v1.TaskInfo.create({
        name: "stubborn",
        taskId: "stubborn",
        resources: [Resources.scalar("cpus", 0.5), Resources.scalar("mem", 32)],
        command: { shell: true, value: `trap "" TERM; echo $$ > pid; sleep 60 & echo $! > child; wait` },
        killPolicy: { gracePeriodSeconds: 1 }
      })
      yield* framework.session.accept([offer.offerId], [Framework.launch([task])])
      yield* framework.awaitState("stubborn", v1.TaskState.RUNNING)
      const sandbox = sandboxOf(cluster, framework.frameworkId, "stubborn")!
      while (!fs.existsSync(path.join(sandbox.dir, "child"))) yield* Effect.sleep("20 millis")
      const pids = ["pid", "child"].map((f) => Number(fs.readFileSync(path.join(sandbox.dir, f), "utf8")))

      const killedAt = yield* Clock.currentTimeMillis
      yield* framework.session.kill("stubborn")
      const killing = yield* framework.awaitState("stubborn", v1.TaskState.KILLING)
      const killed = yield* framework.awaitState("stubborn", v1.TaskState.KILLED)
      const elapsed = (yield* Clock.currentTimeMillis) - killedAt
      expect(killing.timestampMs).toBeLessThanOrEqual(killed.timestampMs)
      // It ignored SIGTERM, so only the SIGKILL after the 1 s grace period could end it.
      expect(elapsed).toBeGreaterThanOrEqual(1000)
      expect(elapsed).toBeLessThanOrEqual(2000)
      expect(killed.message).toMatch(/SIGKILL/)
      // The whole process group is gone, the background `sleep` included.
      expect(pids.filter(alive)).toEqual([])
    }))

  it.live("kills a task that honours SIGTERM at once, long before its grace period", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      const task = v1.TaskInfo.create({
        name: "sleeper",
        taskId: "sleeper",
        resources: [Resources.scalar("cpus", 0.5), Resources.scalar("mem", 32)],
        command: { shell: true, value: "exec sleep 60" },
        killPolicy: { gracePeriodSeconds: 30 }
      })
      yield* framework.session.accept([offer.offerId], [Framework.launch([task])])
      yield* framework.awaitState("sleeper", v1.TaskState.RUNNING)
      const killedAt = yield* Clock.currentTimeMillis
      yield* framework.session.kill("sleeper")
      const killed = yield* framework.awaitState("sleeper", v1.TaskState.KILLED)
      expect((yield* Clock.currentTimeMillis) - killedAt).toBeLessThan(30_000)
      expect(killed.message).toMatch(/SIGTERM/)
      const state = yield* cluster.operator.state
      expect(state.tasks.find((t) => t.info?.taskId === "sleeper")?.state).toBe(v1.TaskState.KILLED)
    }))

  it.live("reports a failing command as FAILED with its exit code", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        Framework.launch([v1.TaskInfo.create({
          name: "fails",
          taskId: "fails",
          resources: [Resources.scalar("cpus", 0.1)],
          command: { shell: true, value: "exit 7" }
        })])
      ])
      const failed = yield* framework.awaitState("fails", v1.TaskState.FAILED)
      expect(failed.exitCode).toBe(7)
      expect(failed.message).toContain("7")
    }))
})
