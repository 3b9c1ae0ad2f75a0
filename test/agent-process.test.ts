import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { Effect, References } from "effect"
import * as MasterSupport from "./support/master.ts"
import { alive, descendants } from "./support/processes.ts"
import { killAgent, launch, openFramework, startAgent, taskPid, waitUntil, workDir } from "./support/agentProcess.ts"

const { TaskState } = v1

const sleeper = (id: string) =>
  v1.TaskInfo.create({
    name: id,
    taskId: id,
    resources: [Resources.scalar("cpus", 0.25)],
    command: { shell: true, value: "sleep 300 & echo $! > child; echo $$ > pid; wait" }
  })

describe("berth agent as a process", () => {
  it.live("SIGTERM stops the agent and leaves its tasks running (Mesos semantics); the restarted agent re-attaches to them", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-agent-")
      const master = yield* MasterSupport.start()
      const first = yield* startAgent(master.endpoint, dir)
      const agentId = yield* first.registered
      const framework = yield* openFramework(master.endpoint)
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [launch([sleeper("a"), sleeper("b")])])
      const pids: Array<number> = []
      for (const id of ["a", "b"]) {
        yield* framework.await(`${id} RUNNING`, (s) => s.taskId === id && s.state === TaskState.RUNNING)
        const pid = yield* taskPid(dir, framework.frameworkId, id)
        pids.push(pid, ...descendants(pid))
      }
      expect(pids.filter(alive)).toHaveLength(4)

      expect(yield* killAgent(first, "SIGTERM")).toBe(0)
      expect(pids.filter(alive)).toHaveLength(4)

      const second = yield* startAgent(master.endpoint, dir)
      expect(yield* second.registered).toBe(agentId)
      // Re-attached: the master still has both RUNNING, and a kill reaches the task's group.
      yield* framework.session.kill("a")
      yield* framework.await("a KILLED", (s) => s.taskId === "a" && s.state === TaskState.KILLED)
      yield* waitUntil("a's processes to be gone", () => !pids.slice(0, 2).some(alive), 5000)
      expect(pids.slice(2).filter(alive)).toHaveLength(2)
      // b was neither killed nor relaunched.
      expect(framework.states("b")).toEqual(["STAGING", "STARTING", "RUNNING"])
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")), 30_000)

  it.live("with --kill-tasks-on-stop, SIGTERM kills the process groups of its running tasks before the agent exits", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-agent-")
      const master = yield* MasterSupport.start()
      const agent = yield* startAgent(master.endpoint, dir, ["--kill-tasks-on-stop"])
      yield* agent.registered
      const framework = yield* openFramework(master.endpoint)
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [launch([sleeper("a"), sleeper("b")])])
      const pids: Array<number> = []
      for (const id of ["a", "b"]) {
        yield* framework.await(`${id} RUNNING`, (s) => s.taskId === id && s.state === TaskState.RUNNING)
        const pid = yield* taskPid(dir, framework.frameworkId, id)
        pids.push(pid, ...descendants(pid))
      }
      expect(pids.filter(alive)).toHaveLength(4)

      expect(yield* killAgent(agent, "SIGTERM")).toBe(0)
      expect(pids.filter(alive)).toEqual([])
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")), 30_000)
})
