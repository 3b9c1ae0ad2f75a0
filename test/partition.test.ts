import { describe, expect, it } from "@effect/vitest"
import { Agent, Master } from "@berth/cluster-core"
import { Resources, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Effect, References } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as AgentProcess from "./support/agentProcess.ts"
import * as Framework from "./support/framework.ts"
import * as MasterSupport from "./support/master.ts"
import { alive } from "./support/processes.ts"
import * as TempDir from "./support/tempDir.ts"

const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))

describe("a partitioned agent", () => {
  it.live("its tasks turn UNREACHABLE after the ping timeout, then RUNNING again when it comes back; nothing is killed", () =>
    Effect.gen(function*() {
      const dir = yield* TempDir.make("berth-partition-")
      // Pings every 200 ms, unreachable after 5 missed ones (1 s).
      const master = yield* MasterSupport.start({ agentPingSeconds: 0.2, agentPingMisses: 5 })
      const agent = yield* Effect.acquireRelease(
        Effect.sync(() =>
          spawn(process.execPath, [berth, "agent", "--master", master.endpoint, "--work-dir", dir, "--resources", "cpus:1;mem:256", "--kill-tasks-on-stop"], {
            stdio: "ignore"
          })
        ),
        (child) =>
          Effect.sync(() => {
            child.kill("SIGCONT")
            child.kill("SIGTERM")
          })
      )
      const framework = yield* Framework.open(master.endpoint)
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        Framework.launch([v1.TaskInfo.create({
          name: "steady",
          taskId: "steady",
          resources: [Resources.scalar("cpus", 0.5)],
          command: { shell: true, value: "echo $$ > pid; exec sleep 120" }
        })])
      ])
      yield* framework.awaitState("steady", v1.TaskState.RUNNING)
      const running = framework.updates.length

      // A paused agent looks exactly like a partitioned one: silent, but its tasks live on.
      agent.kill("SIGSTOP")
      const unreachable = yield* framework.awaitState("steady", v1.TaskState.UNREACHABLE)
      expect(unreachable.reason).toBe(v1.TaskStatus_Reason.AGENT_DISCONNECTED)
      expect(unreachable.unreachableTimeMs).toBeGreaterThan(0)
      expect((yield* Framework.operatorState(master.endpoint)).agents[0]?.state).toBe(v1.Agent_State.UNREACHABLE)

      agent.kill("SIGCONT")
      yield* Effect.gen(function*() {
        while (!framework.updates.slice(running).some((s) => s.state === v1.TaskState.RUNNING)) yield* Effect.sleep("20 millis")
      }).pipe(Effect.timeout("20 seconds"))
      const pid = Number(fs.readFileSync(path.join(dir, "frameworks", framework.frameworkId, "executors", "steady", "runs", "latest", "pid"), "utf8"))
      expect(() => process.kill(pid, 0)).not.toThrow()

      // Reconciliation agrees.
      const before = framework.updates.length
      yield* framework.session.reconcile([{ taskId: "steady" }])
      yield* Effect.gen(function*() {
        while (framework.updates.length === before) yield* Effect.sleep("20 millis")
      }).pipe(Effect.timeout("10 seconds"))
      const answer = framework.updates.at(-1)!
      expect([answer.state, answer.reason]).toEqual([v1.TaskState.RUNNING, v1.TaskStatus_Reason.RECONCILIATION])
      expect(framework.updates.some((s) => s.taskId === "steady" && s.state === v1.TaskState.KILLED)).toBe(false)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 40_000)
})

describe("a killed agent", () => {
  it.live("its tasks turn UNREACHABLE after the ping timeout; restarted, it re-attaches and they are RUNNING again, as reconciliation reports", () =>
    Effect.gen(function*() {
      const master = yield* MasterSupport.start({ agentPingSeconds: 0.2, agentPingMisses: 5 })
      const dir = yield* AgentProcess.workDir("berth-killed-agent-")
      const first = yield* AgentProcess.startAgent(master.endpoint, dir)
      const agentId = yield* first.registered
      const framework = yield* Framework.open(master.endpoint)
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        Framework.launch([v1.TaskInfo.create({
          taskId: "survivor",
          resources: [Resources.scalar("cpus", 0.5)],
          command: { shell: true, value: "echo $$ > pid; exec sleep 120" }
        })])
      ])
      yield* framework.awaitState("survivor", v1.TaskState.RUNNING)
      const pid = yield* AgentProcess.taskPid(dir, framework.frameworkId, "survivor")
      const seen = framework.updates.length

      yield* AgentProcess.killAgent(first)
      const unreachable = yield* framework.awaitState("survivor", v1.TaskState.UNREACHABLE)
      expect(unreachable.reason).toBe(v1.TaskStatus_Reason.AGENT_DISCONNECTED)
      expect(alive(pid)).toBe(true)

      const second = yield* AgentProcess.startAgent(master.endpoint, dir)
      expect(yield* second.registered).toBe(agentId)
      yield* AgentProcess.waitUntil("RUNNING again", () =>
        framework.updates.slice(seen).some((s) => s.taskId === "survivor" && s.state === v1.TaskState.RUNNING))
      const before = framework.updates.length
      yield* framework.session.reconcile([{ taskId: "survivor" }])
      // The answer is the update with REASON_RECONCILIATION (an agent update it had not seen
      // acknowledged before its kill may be resent around it: delivery is at least once).
      const answer = () => framework.updates.slice(before).find((s) => s.taskId === "survivor" && s.reason === v1.TaskStatus_Reason.RECONCILIATION)
      yield* AgentProcess.waitUntil("the reconciliation answer", () => answer() !== undefined)
      expect(answer()!.state).toBe(v1.TaskState.RUNNING)
      expect(alive(pid)).toBe(true)
      expect(framework.updates.some((s) => s.taskId === "survivor" && s.state === v1.TaskState.KILLED)).toBe(false)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 40_000)
})

describe("scheduler failover timeout", () => {
  it.live("away shorter than its failover timeout: nothing is lost; away longer: torn down, tasks killed", () =>
    Effect.gen(function*() {
      const master = yield* MasterSupport.start()
      const dir = yield* TempDir.make("berth-failover-")
      yield* Agent.start({ master: master.endpoint, workDir: dir, resources: "cpus:1;mem:256" })
      const sleeper = v1.TaskInfo.create({
        name: "sleeper",
        taskId: "sleeper",
        resources: [Resources.scalar("cpus", 0.5)],
        command: { shell: true, value: "echo $$ > pid; exec sleep 120" }
      })

      // First scheduler: launches, then goes away for less than its 2 s failover timeout.
      const frameworkId = yield* Effect.scoped(Effect.gen(function*() {
        const framework = yield* Framework.open(master.endpoint, "failover", { failoverTimeoutSeconds: 2 })
        const offer = yield* framework.nextOffer
        yield* framework.session.accept([offer.offerId], [Framework.launch([sleeper])])
        yield* framework.awaitState("sleeper", v1.TaskState.RUNNING)
        return framework.frameworkId
      }))
      yield* Effect.sleep("1 second")
      let state = yield* Framework.operatorState(master.endpoint)
      expect(state.frameworks.map((f) => [f.info?.frameworkId, f.connected])).toEqual([[frameworkId, false]])
      expect(state.tasks.map((t) => t.state)).toEqual([v1.TaskState.RUNNING])

      // It comes back in time with its id: the task is still its own and still running.
      yield* Effect.scoped(Effect.gen(function*() {
        const framework = yield* Framework.open(master.endpoint, "failover", { failoverTimeoutSeconds: 2, frameworkId })
        expect(framework.frameworkId).toBe(frameworkId)
        yield* framework.session.reconcile()
        const answer = yield* framework.awaitState("sleeper", v1.TaskState.RUNNING)
        expect(answer.reason).toBe(v1.TaskStatus_Reason.RECONCILIATION)
      }))

      // Gone for longer than the timeout: the framework is torn down and its task killed.
      yield* Effect.gen(function*() {
        while ((yield* Framework.operatorState(master.endpoint)).frameworks.length > 0) yield* Effect.sleep("100 millis")
      }).pipe(Effect.timeout("10 seconds"))
      state = yield* Framework.operatorState(master.endpoint)
      expect(state.tasks).toEqual([])
      const sandbox = path.join(dir, "frameworks", frameworkId, "executors", "sleeper", "runs", "latest")
      const pid = Number(fs.readFileSync(path.join(sandbox, "pid"), "utf8"))
      // The task's whole process group is gone.
      yield* Effect.gen(function*() {
        while (alive(pid)) yield* Effect.sleep("50 millis")
      }).pipe(Effect.timeout("10 seconds"))
      expect(alive(pid)).toBe(false)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 40_000)
})
