import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { v1 } from "@berth/proto"
import { expectWellFormed, groupMembers, ids, shellTask, startExecutor, states, taskPid, waitFor } from "./harness.ts"

const { TaskState, TaskStatus_Reason: Reason } = v1
const read = (sandbox: string, file: string) => fs.readFileSync(path.join(sandbox, file), "utf8")

describe("CommandExecutor.run", () => {
  it.live("runs a shell command to FINISHED with its output in the sandbox and its environment set", () =>
    Effect.gen(function*() {
      const from = yield* Clock.currentTimeMillis
      const executor = yield* startExecutor({ env: { FROM_AGENT: "agent-value", GREETING: "overridden" } })
      const task = v1.TaskInfo.create({
        taskId: "echo-1",
        command: {
          shell: true,
          environment: [{ name: "GREETING", value: "hi" }],
          value: "echo hello; echo oops >&2; pwd; " +
            "echo \"$BERTH_TASK_ID $BERTH_FRAMEWORK_ID $BERTH_EXECUTOR_ID $BERTH_AGENT_ID\"; " +
            "echo \"$GREETING $FROM_AGENT $BERTH_SANDBOX\"; echo \"$PATH\""
        }
      })
      yield* executor.launch(task)
      expect(Exit.isSuccess(yield* executor.done())).toBe(true)
      const to = yield* Clock.currentTimeMillis

      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      const finished = executor.statuses[2]!
      expect(finished.message).toBe("Command exited with status 0")
      expect(finished.exitCode).toBe(0)
      expectWellFormed(executor.statuses, "echo-1", from, to)

      const sandbox = fs.realpathSync(executor.sandbox)
      expect(read(executor.sandbox, "stdout")).toBe(
        `hello\n${sandbox}\necho-1 ${ids.frameworkId} ${ids.executorId} ${ids.agentId}\n` +
          `hi agent-value ${executor.sandbox}\n${process.env.PATH}\n`
      )
      expect(read(executor.sandbox, "stderr")).toBe("oops\n")
    }))

  it.live("runs an argv command without a shell, passing arguments[0] as argv0", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(v1.TaskInfo.create({
        taskId: "argv-1",
        command: {
          shell: false,
          value: "/bin/sh",
          arguments: ["my-shell", "-c", "echo \"$0|$1\"; head -c 8 /proc/$$/cmdline; echo", "zero", "one two; not run"]
        }
      }))
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(read(executor.sandbox, "stdout")).toBe("zero|one two; not run\nmy-shell\n")
    }))

  it.live("reports FAILED with the exit code when the command exits non-zero", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(shellTask("exit-3", "exit 3"))
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FAILED"])
      const failed = executor.statuses[2]!
      expect(failed.exitCode).toBe(3)
      expect(failed.reason).toBe(Reason.COMMAND_EXECUTOR_FAILED)
      expect(failed.message).toBe("Command exited with status 3")
    }))

  it.live("reports FAILED with CONTAINER_LAUNCH_FAILED when the binary does not exist", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(v1.TaskInfo.create({
        taskId: "missing-1",
        command: { shell: false, value: "/nonexistent/berth-no-such-binary", arguments: ["berth-no-such-binary"] }
      }))
      expect(Exit.isSuccess(yield* executor.done())).toBe(true)
      expect(states(executor.statuses)).toEqual(["STARTING", "FAILED"])
      const failed = executor.statuses[1]!
      expect(failed.reason).toBe(Reason.CONTAINER_LAUNCH_FAILED)
      expect(failed.message).toContain("ENOENT")
      expect(failed.exitCode).toBeUndefined()
    }))

  it.live("reports ERROR for a task without a command and spawns nothing", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(v1.TaskInfo.create({ taskId: "empty-1", command: { shell: true, value: "" } }))
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["ERROR"])
      expect(executor.statuses[0]!.reason).toBe(Reason.TASK_INVALID)
      expect(fs.existsSync(path.join(executor.sandbox, "stdout"))).toBe(false)
    }))

  it.live("kill: KILLING, SIGTERM to the whole process group, then KILLED", () =>
    Effect.gen(function*() {
      const from = yield* Clock.currentTimeMillis
      const executor = yield* startExecutor()
      yield* executor.launch(shellTask("sleep-1", "sleep 60 & echo $$ > pid; sleep 60"))
      const pgid = yield* taskPid(executor.sandbox)
      // The background sleep and the shell (or the foreground sleep) are both in the group.
      yield* waitFor("two processes in the task's group", () => groupMembers(pgid).length >= 2)

      yield* executor.kill("sleep-1", 10)
      yield* executor.done()
      const to = yield* Clock.currentTimeMillis
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "KILLING", "KILLED"])
      const killed = executor.statuses[3]!
      expect(killed.reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(killed.message).toBe("Command terminated with signal SIGTERM")
      expectWellFormed(executor.statuses, "sleep-1", from, to)
      // SIGKILLed processes leave /proc a moment after the terminal status: allow that moment.
      yield* waitFor("the task's group to be gone", () => groupMembers(pgid).length === 0, 1_000)
    }))

  it.live("kill: SIGKILLs a task that ignores SIGTERM once the grace period is over", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(shellTask("stubborn-1", "trap '' TERM; sleep 60 & echo $$ > pid; sleep 60"))
      // The pid is written after the trap is set, so the SIGTERM cannot beat it.
      const pgid = yield* taskPid(executor.sandbox)
      const sentAt = performance.now()
      yield* executor.kill("stubborn-1", 0.5)
      yield* executor.done(2_500)
      const elapsed = performance.now() - sentAt
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(executor.statuses[3]!.message).toBe("Command terminated with signal SIGKILL")
      expect(elapsed).toBeGreaterThanOrEqual(450)
      expect(elapsed).toBeLessThan(2_500)
      // SIGKILLed processes leave /proc a moment after the terminal status: allow that moment.
      yield* waitFor("the task's group to be gone", () => groupMembers(pgid).length === 0, 1_000)
    }))

  it.effect("kill: the grace period runs on the Effect clock", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(shellTask("stubborn-2", "trap '' TERM; echo $$ > pid; sleep 60"))
      const pgid = yield* taskPid(executor.sandbox)
      yield* executor.kill("stubborn-2", 3600)
      expect(stateOf(yield* executor.next())).toEqual(["STARTING"])
      expect(stateOf(yield* executor.next())).toEqual(["RUNNING"])
      expect(stateOf(yield* executor.next())).toEqual(["KILLING"])
      // SIGTERM is ignored; an hour of test time later the group is SIGKILLed.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
      expect(groupMembers(pgid).length).toBeGreaterThan(0)
      yield* TestClock.adjust("1 hour")
      const killed = yield* executor.next()
      expect(stateOf(killed)).toEqual(["KILLED"])
      expect(killed.message).toBe("Command terminated with signal SIGKILL")
    }))

  it.live("kill of a task that was never launched: KILLED without spawning", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.kill("never-1")
      expect(Exit.isSuccess(yield* executor.done())).toBe(true)
      expect(states(executor.statuses)).toEqual(["KILLED"])
      expect(executor.statuses[0]!.taskId).toBe("never-1")
      expect(fs.existsSync(path.join(executor.sandbox, "stdout"))).toBe(false)
    }))

  it.live("a second launch gets ERROR and the first task carries on", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(shellTask("first", "echo $$ > pid; sleep 60"))
      yield* taskPid(executor.sandbox)
      yield* executor.launch(shellTask("second", "echo second > second"))
      yield* executor.kill("unknown-task")
      yield* executor.kill("first", 5)
      yield* executor.done()
      expect(executor.statuses.map((s) => `${s.taskId}:${states([s])[0]}`)).toEqual([
        "first:STARTING",
        "first:RUNNING",
        "second:ERROR",
        "unknown-task:KILLED",
        "first:KILLING",
        "first:KILLED"
      ])
      expect(executor.statuses[2]!.message).toBe("command executor runs one task")
      expect(fs.existsSync(path.join(executor.sandbox, "second"))).toBe(false)
    }))

  it.live("after the command exits, the rest of its process group is killed", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(shellTask("orphans", "sleep 60 & echo $! > bgpid; echo $$ > pid; exit 0"))
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      const pgid = Number(fs.readFileSync(path.join(executor.sandbox, "pid"), "utf8"))
      const background = Number(fs.readFileSync(path.join(executor.sandbox, "bgpid"), "utf8"))
      yield* waitFor("the background sleep to die", () => groupMembers(pgid).length === 0, 1_000)
      expect(groupMembers(pgid)).not.toContain(background)
    }))

  it.live("shutdown kills the running task (EXECUTOR_TERMINATED) and returns", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(shellTask("svc", "echo $$ > pid; sleep 60"))
      const pgid = yield* taskPid(executor.sandbox)
      yield* executor.inProcess.send({ $case: "shutdown", value: { gracePeriodSeconds: 5 } })
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(executor.statuses[3]!.reason).toBe(Reason.EXECUTOR_TERMINATED)
      // SIGKILLed processes leave /proc a moment after the terminal status: allow that moment.
      yield* waitFor("the task's group to be gone", () => groupMembers(pgid).length === 0, 1_000)
    }))

  it.live("shutdown or the end of the events with nothing running returns at once", () =>
    Effect.gen(function*() {
      const first = yield* startExecutor()
      yield* first.inProcess.send({ $case: "shutdown", value: { gracePeriodSeconds: 1 } })
      expect(Exit.isSuccess(yield* first.done(1_000))).toBe(true)
      const second = yield* startExecutor()
      yield* second.inProcess.end
      expect(Exit.isSuccess(yield* second.done(1_000))).toBe(true)
      expect([...first.statuses, ...second.statuses]).toEqual([])
    }))

  it.live("interrupting run leaves no process of the task's group alive", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(shellTask("interrupted", "sleep 60 & echo $$ > pid; sleep 60"))
      const pgid = yield* taskPid(executor.sandbox)
      yield* waitFor("two processes in the task's group", () => groupMembers(pgid).length >= 2)
      yield* Fiber.interrupt(executor.fiber)
      yield* waitFor("the task's group to be gone", () => groupMembers(pgid).length === 0, 1_000)
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING"])
    }))
})

const stateOf = (status: v1.TaskStatus) => states([status])
