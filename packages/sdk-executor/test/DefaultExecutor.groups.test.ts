import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { v1 } from "@berth/proto"
import { CommandExecutor, DefaultExecutor, ExecutorSession } from "@berth/sdk-executor"
import { groupMembers, ids, shellTask, startDefaultExecutor, tempDir, waitFor } from "./harness.ts"

/**
 * Several task groups under one default executor (Mesos semantics): later groups join the running
 * executor's sandbox, and the group policy (a failure or a kill takes the rest of the group down)
 * applies to each group on its own.
 */

const { TaskState, TaskStatus_Reason: Reason } = v1

/** Waits (at most ~10 s) for `file` in the sandbox, then runs `then`; exits 9 if it never comes. */
const after = (file: string, then: string) =>
  `i=0; until [ -f ${file} ]; do i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.05; done; ${then}`

describe("DefaultExecutor.run with several task groups", () => {
  it.live("a second group joins the running executor's sandbox and finishes while the first keeps running", () =>
    Effect.gen(function*() {
      const executor = yield* startDefaultExecutor({ defaultGracePeriodSeconds: 1 })
      yield* executor.launch([shellTask("server", "echo payload-42 > data.txt; echo $$ > server.pid; exec sleep 60")])
      yield* executor.reached("server", TaskState.RUNNING)
      const server = yield* executor.pidOf("server.pid")
      yield* executor.launch([shellTask("backup", `test "$(cat data.txt)" = payload-42 && echo "$BERTH_EXECUTOR_ID" > backup.out`)])
      yield* executor.reached("backup", TaskState.FINISHED)
      expect(executor.of("backup")).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(fs.readFileSync(path.join(executor.sandbox, "backup.out"), "utf8")).toBe(`${ids.executorId}\n`)
      expect(fs.existsSync(path.join(executor.sandbox, "tasks", "backup", "stdout"))).toBe(true)
      // The first group is untouched and the executor still runs for it.
      expect(executor.of("server")).toEqual(["STARTING", "RUNNING"])
      expect(groupMembers(server)).not.toEqual([])
      expect(executor.running()).toBe(true)
      // A resent second group starts nothing again.
      yield* executor.launch([shellTask("backup", "touch resent")])
      yield* executor.kill("server")
      expect(Exit.isSuccess(yield* executor.done())).toBe(true)
      expect(executor.of("server")).toEqual(["STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(executor.of("backup")).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(fs.existsSync(path.join(executor.sandbox, "resent"))).toBe(false)
    }))

  it.live("a failure in the second group kills its own siblings only; the first group runs on", () =>
    Effect.gen(function*() {
      const executor = yield* startDefaultExecutor({ defaultGracePeriodSeconds: 1 })
      yield* executor.launch([shellTask("web", "echo $$ > web.pid; exec sleep 60")])
      yield* executor.reached("web", TaskState.RUNNING)
      yield* executor.launch([
        shellTask("side", "echo $$ > side.pid; exec sleep 60"),
        shellTask("broken", after("side.pid", "exit 4"))
      ])
      yield* executor.reached("broken", TaskState.FAILED)
      yield* executor.reached("side", TaskState.KILLED)
      expect(executor.last("side").reason).toBe(Reason.EXECUTOR_TERMINATED)
      expect(executor.last("side").message).toMatch(/^Killed with its task group: task broken failed \(Command exited with status 4\)/)
      const web = yield* executor.pidOf("web.pid")
      expect(executor.of("web")).toEqual(["STARTING", "RUNNING"])
      expect(groupMembers(web)).not.toEqual([])
      expect(executor.running()).toBe(true)
      yield* executor.kill("web")
      expect(Exit.isSuccess(yield* executor.done())).toBe(true)
      expect(executor.last("web").reason).toBe(Reason.KILLED_BY_SCHEDULER)
    }))

  it.live("a kill of a task of the first group kills that group only; the second group runs on", () =>
    Effect.gen(function*() {
      const executor = yield* startDefaultExecutor({ defaultGracePeriodSeconds: 1 })
      yield* executor.launch([shellTask("a1", "echo $$ > a1.pid; exec sleep 60"), shellTask("a2", "exec sleep 60")])
      yield* executor.reached("a1", TaskState.RUNNING)
      yield* executor.reached("a2", TaskState.RUNNING)
      yield* executor.launch([shellTask("b1", "echo $$ > b1.pid; exec sleep 60")])
      yield* executor.reached("b1", TaskState.RUNNING)
      const b1 = yield* executor.pidOf("b1.pid")
      yield* executor.kill("a1")
      yield* executor.reached("a1", TaskState.KILLED)
      yield* executor.reached("a2", TaskState.KILLED)
      expect(executor.last("a2").message).toMatch(/^Killed with its task group: task a1 was killed/)
      expect(executor.of("b1")).toEqual(["STARTING", "RUNNING"])
      expect(groupMembers(b1)).not.toEqual([])
      expect(executor.running()).toBe(true)
      // A shutdown still kills every task of every group.
      yield* executor.inProcess.send({ $case: "shutdown", value: { gracePeriodSeconds: 1 } })
      expect(Exit.isSuccess(yield* executor.done())).toBe(true)
      expect(executor.last("b1").state).toBe(TaskState.KILLED)
      expect(executor.last("b1").reason).toBe(Reason.EXECUTOR_TERMINATED)
      expect(groupMembers(b1)).toEqual([])
    }))

  it.live("an invalid second group is ERROR all or nothing and leaves the running group alone; a reused task id is refused", () =>
    Effect.gen(function*() {
      const executor = yield* startDefaultExecutor({ defaultGracePeriodSeconds: 1 })
      yield* executor.launch([shellTask("main", "exec sleep 60")])
      yield* executor.reached("main", TaskState.RUNNING)
      yield* executor.launch([shellTask("ok", "touch spawned"), v1.TaskInfo.create({ taskId: "bad", command: { shell: true, value: "" } })])
      yield* executor.reached("bad", TaskState.ERROR)
      yield* executor.reached("ok", TaskState.ERROR)
      expect(executor.last("bad").message).toMatch(/^task_group\.tasks\[1\] \(bad\): command\.value/)
      expect(executor.last("ok").message).toMatch(/no task of it was started/)
      // "main" is a task of this executor already: a group naming it beside a new task is refused,
      // and "main" itself gets no status from it.
      yield* executor.launch([shellTask("fresh", "touch fresh"), shellTask("main", "true")])
      yield* executor.reached("fresh", TaskState.ERROR)
      expect(executor.last("fresh").message).toMatch(/task_group\.tasks\[1\]\.task_id: "main" is already a task of this executor/)
      expect(executor.of("main")).toEqual(["STARTING", "RUNNING"])
      expect(fs.existsSync(path.join(executor.sandbox, "spawned"))).toBe(false)
      expect(fs.existsSync(path.join(executor.sandbox, "fresh"))).toBe(false)
      expect(executor.running()).toBe(true)
      yield* executor.kill("main")
      expect(Exit.isSuccess(yield* executor.done())).toBe(true)
    }))

  it.live("a group that arrives while the executor shuts down is DROPPED, nothing of it started", () =>
    Effect.gen(function*() {
      const executor = yield* startDefaultExecutor()
      // Traps SIGTERM so that the shutdown takes its grace period: the executor is still running.
      yield* executor.launch([shellTask("slow", "trap 'sleep 0.3; exit 0' TERM; echo $$ > slow.pid; while true; do sleep 0.05; done")])
      yield* executor.reached("slow", TaskState.RUNNING)
      yield* executor.pidOf("slow.pid")
      yield* executor.inProcess.send({ $case: "shutdown", value: { gracePeriodSeconds: 5 } })
      yield* executor.launch([shellTask("late", "touch late")])
      yield* executor.reached("late", TaskState.DROPPED)
      expect(executor.of("late")).toEqual(["DROPPED"])
      expect(executor.last("late").reason).toBe(Reason.EXECUTOR_TERMINATED)
      expect(executor.last("late").message).toMatch(/shutting down/)
      expect(Exit.isSuccess(yield* executor.done())).toBe(true)
      expect(fs.existsSync(path.join(executor.sandbox, "late"))).toBe(false)
    }))

  it.live("the executor returns only once every task of every group ended", () =>
    Effect.gen(function*() {
      const executor = yield* startDefaultExecutor()
      yield* executor.launch([shellTask("first", after("release-first", "true"))])
      yield* executor.reached("first", TaskState.RUNNING)
      yield* executor.launch([shellTask("second", after("release-second", "true"))])
      yield* executor.reached("second", TaskState.RUNNING)
      fs.writeFileSync(path.join(executor.sandbox, "release-first"), "")
      yield* executor.reached("first", TaskState.FINISHED)
      // The first group is over; the second still holds the executor.
      expect(executor.running()).toBe(true)
      fs.writeFileSync(path.join(executor.sandbox, "release-second"), "")
      expect(Exit.isSuccess(yield* executor.done())).toBe(true)
      expect(executor.of("second")).toEqual(["STARTING", "RUNNING", "FINISHED"])
    }))

  it.live("an executor taking over two groups keeps the group policy per group", () =>
    Effect.gen(function*() {
      // Every process group started here is SIGKILLed when the test ends, whatever happened.
      const started = yield* Effect.acquireRelease(Effect.sync(() => new Map<string, CommandExecutor.TaskProcess>()), (all) =>
        Effect.sync(() => {
          for (const p of all.values()) {
            try {
              process.kill(-p.pid, "SIGKILL")
            } catch {
              // Already gone.
            }
          }
        }))
      const meta = yield* tempDir
      const checkpoint = (info: v1.TaskInfo): CommandExecutor.CheckpointOptions => {
        fs.mkdirSync(path.join(meta, info.taskId), { recursive: true })
        return {
          exitStatusFile: path.join(meta, info.taskId, "exit_status"),
          onStarted: (p) => Effect.sync(() => void started.set(info.taskId, p)),
          onInterrupt: "leave",
          pollInterval: "50 millis"
        }
      }
      const groupA = [shellTask("a1", "exec sleep 60"), shellTask("a2", "exec sleep 60")]
      const groupB = [shellTask("b1", "exec sleep 60")]
      const first = yield* startDefaultExecutor({ checkpoint, defaultGracePeriodSeconds: 1 })
      yield* first.launch(groupA)
      yield* first.launch(groupB)
      for (const id of ["a1", "a2", "b1"]) yield* first.reached(id, TaskState.RUNNING)
      yield* Fiber.interrupt(first.fiber)
      for (const id of ["a1", "a2", "b1"]) expect(CommandExecutor.isRunning(started.get(id)!), id).toBe(true)

      // A second executor (a restarted agent) takes over both groups, each as its own group.
      const statuses: Array<v1.TaskStatus> = []
      const inProcess = yield* ExecutorSession.makeInProcess({ ...ids, onUpdate: (s) => Effect.sync(() => void statuses.push(s)) })
      const recovered = (tasks: ReadonlyArray<v1.TaskInfo>): DefaultExecutor.RecoveredGroup => ({
        tasks: tasks.map((task) => ({ task, process: started.get(task.taskId)! }))
      })
      const fiber = yield* DefaultExecutor.run({
        sandbox: first.sandbox,
        checkpoint,
        defaultGracePeriodSeconds: 1,
        recover: [recovered(groupA), recovered(groupB)]
      }).pipe(Effect.provide(ExecutorSession.layerInProcess(inProcess)), Effect.forkChild)
      const stateOf = (taskId: string) => statuses.findLast((s) => s.taskId === taskId)?.state
      yield* inProcess.send({ $case: "kill", value: { taskId: "a1", reason: Reason.KILLED_BY_SCHEDULER } })
      yield* waitFor("a1 and a2 KILLED", () => stateOf("a1") === TaskState.KILLED && stateOf("a2") === TaskState.KILLED, 15_000)
      expect(statuses.findLast((s) => s.taskId === "a2")!.message).toMatch(/^Killed with its task group: task a1 was killed/)
      expect(stateOf("b1")).toBeUndefined()
      expect(CommandExecutor.isRunning(started.get("b1")!)).toBe(true)
      expect(fiber.pollUnsafe()).toBeUndefined()
      yield* inProcess.send({ $case: "kill", value: { taskId: "b1", reason: Reason.KILLED_BY_SCHEDULER } })
      yield* waitFor("run to return", () => fiber.pollUnsafe() !== undefined, 15_000)
      expect(stateOf("b1")).toBe(TaskState.KILLED)
      expect(CommandExecutor.isRunning(started.get("b1")!)).toBe(false)
    }))
})
