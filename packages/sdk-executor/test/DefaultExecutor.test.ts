import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { TaskStates, v1 } from "@berth/proto"
import type { DefaultExecutor } from "@berth/sdk-executor"
import { groupMembers, ids, shellTask, startDefaultExecutor, waitFor } from "./harness.ts"

const { TaskState, TaskStatus_Reason: Reason } = v1

const startGroup = startDefaultExecutor

const pidOf = (sandbox: string, name: string) =>
  Effect.gen(function*() {
    const file = path.join(sandbox, name)
    yield* waitFor(`${name}`, () => fs.existsSync(file) && fs.readFileSync(file, "utf8").endsWith("\n"))
    return Number(fs.readFileSync(file, "utf8").trim())
  })

describe("DefaultExecutor.run", () => {
  it.live("starts every task of the group in the shared sandbox, each with its own output files", () =>
    Effect.gen(function*() {
      const group = yield* startGroup()
      yield* group.launch([
        // Each waits for the other's file: they only both finish if they run at the same time.
        shellTask("ping", "touch ping; i=0; until [ -f pong ]; do i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.05; done; echo ping saw pong; echo err-ping >&2"),
        shellTask("pong", "touch pong; i=0; until [ -f ping ]; do i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.05; done; echo \"$BERTH_TASK_ID $BERTH_EXECUTOR_ID $BERTH_SANDBOX\"")
      ])
      expect(Exit.isSuccess(yield* group.done())).toBe(true)
      expect(group.of("ping")).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(group.of("pong")).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(group.statuses.every((s) => s.executorId === ids.executorId && s.source === v1.TaskStatus_Source.EXECUTOR)).toBe(true)
      const read = (...parts: Array<string>) => fs.readFileSync(path.join(group.sandbox, ...parts), "utf8")
      expect(read("tasks", "ping", "stdout")).toBe("ping saw pong\n")
      expect(read("tasks", "ping", "stderr")).toBe("err-ping\n")
      expect(read("tasks", "pong", "stdout")).toBe(`pong ${ids.executorId} ${group.sandbox}\n`)
      expect(fs.existsSync(path.join(group.sandbox, "stdout"))).toBe(false)
    }))

  it.live("an invalid group is ERROR for every task and nothing is spawned", () =>
    Effect.gen(function*() {
      const group = yield* startGroup()
      yield* group.launch([
        shellTask("good", "touch spawned"),
        v1.TaskInfo.create({ taskId: "bad", command: { shell: true, value: "" } })
      ])
      expect(Exit.isSuccess(yield* group.done())).toBe(true)
      expect(group.of("good")).toEqual(["ERROR"])
      expect(group.of("bad")).toEqual(["ERROR"])
      expect(group.last("bad").reason).toBe(Reason.TASK_INVALID)
      expect(group.last("bad").message).toMatch(/^task_group\.tasks\[1\] \(bad\): command\.value/)
      expect(group.last("good").message).toMatch(/no task of it was started: task_group\.tasks\[1\]/)
      expect(fs.existsSync(path.join(group.sandbox, "spawned"))).toBe(false)
      expect(fs.existsSync(path.join(group.sandbox, "tasks"))).toBe(false)
    }))

  it.live("duplicate task ids make the group invalid", () =>
    Effect.gen(function*() {
      const group = yield* startGroup()
      yield* group.launch([shellTask("twice", "true"), shellTask("twice", "true")])
      yield* group.done()
      expect(group.statuses.map((s) => [TaskStates.name(s.state), s.message])).toEqual([
        ["ERROR", "task_group.tasks[1].task_id: \"twice\" is listed twice"],
        ["ERROR", "task_group.tasks[1].task_id: \"twice\" is listed twice"]
      ])
    }))

  it.live("a task that fails kills its siblings, which report KILLED with the reason", () =>
    Effect.gen(function*() {
      const group = yield* startGroup({ defaultGracePeriodSeconds: 1 })
      yield* group.launch([
        shellTask("sleeper", "echo $$ > sleeper.pid; exec sleep 30"),
        shellTask("failing", "until [ -f sleeper.pid ]; do sleep 0.05; done; exit 3")
      ])
      const pid = yield* pidOf(group.sandbox, "sleeper.pid")
      expect(Exit.isSuccess(yield* group.done())).toBe(true)
      expect(group.of("failing")).toEqual(["STARTING", "RUNNING", "FAILED"])
      expect(group.last("failing").exitCode).toBe(3)
      expect(group.of("sleeper")).toEqual(["STARTING", "RUNNING", "KILLING", "KILLED"])
      const killed = group.last("sleeper")
      expect(killed.reason).toBe(Reason.EXECUTOR_TERMINATED)
      expect(killed.message).toBe(
        "Killed with its task group: task failing failed (Command exited with status 3). Command terminated with signal SIGTERM"
      )
      // The failure went out before the siblings' kill.
      const order = group.statuses.map((s) => `${s.taskId}:${TaskStates.name(s.state)}`)
      expect(order.indexOf("failing:FAILED")).toBeLessThan(order.indexOf("sleeper:KILLING"))
      expect(groupMembers(pid)).toEqual([])
    }))

  it.live("a task that finishes leaves the others running", () =>
    Effect.gen(function*() {
      const group = yield* startGroup()
      yield* group.launch([shellTask("quick", "true"), shellTask("slow", "sleep 0.5")])
      yield* group.done()
      expect(group.of("quick")).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(group.of("slow")).toEqual(["STARTING", "RUNNING", "FINISHED"])
    }))

  it.live("a kill of one task kills the whole group, with the kill's reason", () =>
    Effect.gen(function*() {
      const group = yield* startGroup()
      yield* group.launch([shellTask("a", "echo $$ > a.pid; exec sleep 30"), shellTask("b", "echo $$ > b.pid; exec sleep 30")])
      yield* group.reached("a", TaskState.RUNNING)
      yield* group.reached("b", TaskState.RUNNING)
      const pids = [yield* pidOf(group.sandbox, "a.pid"), yield* pidOf(group.sandbox, "b.pid")]
      yield* group.inProcess.send({ $case: "kill", value: { taskId: "a", reason: Reason.KILLED_BY_SCHEDULER, killPolicy: { gracePeriodSeconds: 1 } } })
      expect(Exit.isSuccess(yield* group.done())).toBe(true)
      expect(group.of("a")).toEqual(["STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(group.of("b")).toEqual(["STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(group.last("a").reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(group.last("a").message).toBe("Command terminated with signal SIGTERM")
      expect(group.last("b").reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(group.last("b").message).toMatch(/^Killed with its task group: task a was killed\. Command terminated/)
      for (const pid of pids) expect(groupMembers(pid)).toEqual([])
    }))

  it.live("a task killed by its health check takes its group with it", () =>
    Effect.gen(function*() {
      const group = yield* startGroup({ defaultGracePeriodSeconds: 1 })
      yield* group.launch([
        shellTask("sick", "exec sleep 30", {
          healthCheck: {
            type: v1.HealthCheck_Type.COMMAND,
            command: v1.CommandInfo.create({ shell: true, value: "exit 1" }),
            delaySeconds: 0.001,
            intervalSeconds: 0.05,
            timeoutSeconds: 2,
            gracePeriodSeconds: 0.001,
            consecutiveFailures: 1
          }
        }),
        shellTask("buddy", "exec sleep 30")
      ])
      expect(Exit.isSuccess(yield* group.done(15_000))).toBe(true)
      expect(TaskStates.name(group.last("sick").state)).toBe("KILLED")
      expect(group.last("sick").reason).toBe(Reason.TASK_HEALTH_CHECK_STATUS_UPDATED)
      expect(TaskStates.name(group.last("buddy").state)).toBe("KILLED")
      expect(group.last("buddy").reason).toBe(Reason.EXECUTOR_TERMINATED)
      expect(group.last("buddy").message).toMatch(/^Killed with its task group: task sick was killed \(Task killed after 1 consecutive failed health check/)
    }))

  it.live("shutdown kills every task; a single launch is refused", () =>
    Effect.gen(function*() {
      const group = yield* startGroup()
      yield* group.inProcess.send({ $case: "launch", value: { task: shellTask("single", "true") } })
      yield* group.launch([shellTask("x", "exec sleep 30"), shellTask("y", "exec sleep 30")])
      yield* group.reached("x", TaskState.RUNNING)
      yield* group.reached("y", TaskState.RUNNING)
      yield* group.inProcess.send({ $case: "shutdown", value: { gracePeriodSeconds: 1 } })
      expect(Exit.isSuccess(yield* group.done())).toBe(true)
      expect(group.of("single")).toEqual(["ERROR"])
      for (const id of ["x", "y"]) {
        expect(TaskStates.name(group.last(id).state)).toBe("KILLED")
        expect(group.last(id).reason).toBe(Reason.EXECUTOR_TERMINATED)
      }
    }))
})

