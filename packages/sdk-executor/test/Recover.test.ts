import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { v1 } from "@berth/proto"
import { CommandExecutor } from "@berth/sdk-executor"
import { groupMembers, shellTask, startExecutor, states, taskPid, tempDir, waitFor } from "./harness.ts"

const { TaskState, TaskStatus_Reason: Reason } = v1

/** Every process group a test recorded is SIGKILLed when the test ends, whatever happened. */
const cleanupGroups = Effect.acquireRelease(
  Effect.sync(() => new Set<number>()),
  (groups) =>
    Effect.sync(() => {
      for (const pgid of groups) {
        try {
          process.kill(-pgid, "SIGKILL")
        } catch {
          // Already gone.
        }
      }
    })
)

/**
 * A checkpointed executor whose task is left running when it is interrupted (an agent stopping),
 * and everything needed to take the task over afterwards.
 */
const startCheckpointed = (task: v1.TaskInfo, groups: Set<number>, extra: Partial<CommandExecutor.CheckpointOptions> = {}) =>
  Effect.gen(function*() {
    const meta = yield* tempDir
    const exitStatusFile = path.join(meta, "exit_status")
    const recorded: Array<CommandExecutor.TaskProcess> = []
    const checkpoint: CommandExecutor.CheckpointOptions = {
      exitStatusFile,
      onStarted: (p) => Effect.sync(() => {
        recorded.push(p)
        groups.add(p.pid)
      }),
      pollInterval: "50 millis",
      ...extra
    }
    const executor = yield* startExecutor({ checkpoint })
    yield* executor.launch(task)
    yield* executor.nth(2)
    expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING"])
    return { executor, checkpoint, recorded, exitStatusFile }
  })

describe("CommandExecutor checkpoint and recover", () => {
  it.live("records the task's process before RUNNING; interrupted, it leaves the task running; a new executor re-attaches and kills it", () =>
    Effect.gen(function*() {
      const groups = yield* cleanupGroups
      const first = yield* startCheckpointed(shellTask("long-1", "echo $$ > pid; sleep 60"), groups)
      expect(first.recorded).toHaveLength(1)
      const recorded = first.recorded[0]!
      expect(recorded.startTime).toBeGreaterThan(0)
      expect(CommandExecutor.isRunning(recorded)).toBe(true)
      // The wrapper leads the group; the task's shell is a member of it.
      const shell = yield* taskPid(first.executor.sandbox)
      expect(groupMembers(recorded.pid)).toContain(shell)

      yield* Fiber.interrupt(first.executor.fiber)
      expect(CommandExecutor.isRunning(recorded)).toBe(true)
      expect(groupMembers(recorded.pid)).toContain(shell)

      const second = yield* startExecutor({
        sandbox: first.executor.sandbox,
        checkpoint: first.checkpoint,
        recover: { task: shellTask("long-1", "echo $$ > pid; sleep 60"), process: recorded }
      })
      // A resent launch of the re-attached task changes nothing.
      yield* second.launch(shellTask("long-1", "echo $$ > pid; sleep 60"))
      yield* second.kill("long-1", 5)
      yield* second.done()
      expect(states(second.statuses)).toEqual(["KILLING", "KILLED"])
      expect(second.statuses[1]!.reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(second.statuses[1]!.message).toBe("Command terminated with signal SIGTERM")
      expect(groupMembers(recorded.pid)).toEqual([])
      expect(CommandExecutor.isRunning(recorded)).toBe(false)
    }))

  it.live("a re-attached task that exits is reported with its exit code, noticed by polling", () =>
    Effect.gen(function*() {
      const groups = yield* cleanupGroups
      const first = yield* startCheckpointed(shellTask("exit-7", "while [ ! -f go ]; do sleep 0.05; done; exit 7"), groups)
      yield* Fiber.interrupt(first.executor.fiber)
      const second = yield* startExecutor({
        sandbox: first.executor.sandbox,
        checkpoint: first.checkpoint,
        recover: { task: shellTask("exit-7", ""), process: first.recorded[0]!, healthy: true }
      })
      fs.writeFileSync(path.join(first.executor.sandbox, "go"), "")
      yield* second.done()
      expect(states(second.statuses)).toEqual(["FAILED"])
      expect(second.statuses[0]!.exitCode).toBe(7)
      expect(second.statuses[0]!.reason).toBe(Reason.COMMAND_EXECUTOR_FAILED)
      expect(second.statuses[0]!.message).toBe("Command exited with status 7")
    }))

  it.live("a task that ended while nobody watched is reported at once from its exit status file", () =>
    Effect.gen(function*() {
      const groups = yield* cleanupGroups
      for (const [code, state] of [[0, "FINISHED"], [3, "FAILED"]] as const) {
        const first = yield* startCheckpointed(shellTask(`t-${code}`, `while [ ! -f go ]; do sleep 0.05; done; exit ${code}`), groups)
        yield* Fiber.interrupt(first.executor.fiber)
        fs.writeFileSync(path.join(first.executor.sandbox, "go"), "")
        yield* waitFor("the wrapper to write the exit status", () => fs.existsSync(first.exitStatusFile))
        yield* waitFor("the task to end", () => !CommandExecutor.isRunning(first.recorded[0]!))
        const second = yield* startExecutor({
          sandbox: first.executor.sandbox,
          checkpoint: first.checkpoint,
          recover: { task: shellTask(`t-${code}`, ""), process: first.recorded[0]! }
        })
        expect(Exit.isSuccess(yield* second.done())).toBe(true)
        expect(states(second.statuses)).toEqual([state])
        expect(second.statuses[0]!.exitCode).toBe(code)
      }
    }))

  it.live("a recorded pid now used by another process (start time differs) counts as ended; no status means FAILED", () =>
    Effect.gen(function*() {
      const groups = yield* cleanupGroups
      const first = yield* startCheckpointed(shellTask("reused-1", "sleep 60"), groups)
      const recorded = first.recorded[0]!
      const impostor = { ...recorded, startTime: recorded.startTime - 1 }
      expect(CommandExecutor.isRunning(impostor)).toBe(false)
      const sandbox = yield* tempDir
      const meta = yield* tempDir
      const second = yield* startExecutor({
        sandbox,
        checkpoint: { exitStatusFile: path.join(meta, "exit_status") },
        recover: { task: shellTask("reused-1", ""), process: impostor }
      })
      yield* second.done()
      expect(states(second.statuses)).toEqual(["FAILED"])
      expect(second.statuses[0]!.reason).toBe(Reason.EXECUTOR_TERMINATED)
      expect(second.statuses[0]!.exitCode).toBeUndefined()
      // The process that really has that pid was not touched.
      expect(CommandExecutor.isRunning(recorded)).toBe(true)
    }))

  it.live("an unrecorded task is found by its wrapper's command line, re-attached and reported RUNNING", () =>
    Effect.gen(function*() {
      const groups = yield* cleanupGroups
      const first = yield* startCheckpointed(shellTask("unrecorded-1", "sleep 60"), groups)
      yield* Fiber.interrupt(first.executor.fiber)
      const found: Array<CommandExecutor.TaskProcess> = []
      const second = yield* startExecutor({
        sandbox: first.executor.sandbox,
        checkpoint: { ...first.checkpoint, onStarted: (p) => Effect.sync(() => found.push(p)) },
        recover: { task: shellTask("unrecorded-1", "") }
      })
      yield* second.nth(1)
      expect(found).toEqual(first.recorded)
      yield* second.kill("unrecorded-1", 5)
      yield* second.done()
      expect(states(second.statuses)).toEqual(["RUNNING", "KILLING", "KILLED"])
      expect(groupMembers(first.recorded[0]!.pid)).toEqual([])
    }))

  it.live("a task never started (no process, no status) is started now; one being killed is finished off as KILLED", () =>
    Effect.gen(function*() {
      const groups = yield* cleanupGroups
      const sandbox = yield* tempDir
      const meta = yield* tempDir
      // The earlier executor stopped between STARTING and the spawn (its agent restarted): the
      // task never ran, so it runs now rather than failing for the restart.
      const never = yield* startExecutor({
        sandbox,
        checkpoint: { exitStatusFile: path.join(meta, "exit_status") },
        recover: { task: shellTask("never-1", "echo ran > ran") }
      })
      yield* never.done()
      expect(states(never.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(never.statuses[2]!.exitCode).toBe(0)
      expect(fs.readFileSync(path.join(sandbox, "ran"), "utf8")).toBe("ran\n")
      // Never started and being killed: nothing to start, it is KILLED.
      const neverKilled = yield* startExecutor({
        sandbox: yield* tempDir,
        checkpoint: { exitStatusFile: path.join(yield* tempDir, "exit_status") },
        recover: { task: shellTask("never-2", "true"), killReason: Reason.KILLED_BY_SCHEDULER }
      })
      yield* neverKilled.done()
      expect(states(neverKilled.statuses)).toEqual(["KILLED"])
      expect(neverKilled.statuses[0]!.reason).toBe(Reason.KILLED_BY_SCHEDULER)

      // Ignores SIGTERM: the recovered kill must get to SIGKILL after the grace period.
      const task = shellTask("killing-1", "trap '' TERM; touch trapped; sleep 60", { killPolicy: { gracePeriodSeconds: 0.2 } })
      const first = yield* startCheckpointed(task, groups)
      // Only once the trap is set does SIGTERM go unheard (before it, SIGTERM would end the shell).
      const trapped = path.join(first.executor.sandbox, "trapped")
      for (let i = 0; i < 200 && !fs.existsSync(trapped); i++) yield* Effect.sleep("25 millis")
      expect(fs.existsSync(trapped)).toBe(true)
      yield* Fiber.interrupt(first.executor.fiber)
      const second = yield* startExecutor({
        sandbox: first.executor.sandbox,
        checkpoint: first.checkpoint,
        recover: { task, process: first.recorded[0]!, killReason: Reason.AGENT_DRAINING }
      })
      yield* second.done()
      expect(states(second.statuses)).toEqual(["KILLING", "KILLED"])
      expect(second.statuses[1]!.reason).toBe(Reason.AGENT_DRAINING)
      expect(second.statuses[1]!.message).toBe("Command terminated with signal SIGKILL")
      expect(groupMembers(first.recorded[0]!.pid)).toEqual([])
    }))

  it.live("checkpointed tasks: exit codes and signals come through the wrapper; onInterrupt kill; a missing program fails the launch", () =>
    Effect.gen(function*() {
      const groups = yield* cleanupGroups
      const meta = yield* tempDir
      const recorded = new Map<string, CommandExecutor.TaskProcess>()
      const checkpoint = (name: string, extra: Partial<CommandExecutor.CheckpointOptions> = {}) => ({
        exitStatusFile: path.join(meta, name),
        onStarted: (p: CommandExecutor.TaskProcess) =>
          Effect.sync(() => {
            groups.add(p.pid)
            recorded.set(name, p)
          }),
        ...extra
      })

      const failing = yield* startExecutor({ checkpoint: checkpoint("a") })
      yield* failing.launch(shellTask("exit-3", "exit 3"))
      yield* failing.done()
      expect(states(failing.statuses)).toEqual(["STARTING", "RUNNING", "FAILED"])
      expect(failing.statuses[2]!.exitCode).toBe(3)
      expect(fs.readFileSync(path.join(meta, "a"), "utf8")).toBe("3\n")

      const argv = yield* startExecutor({ checkpoint: checkpoint("b") })
      yield* argv.launch(v1.TaskInfo.create({ taskId: "argv-1", command: { shell: false, value: "sh", arguments: ["sh", "-c", "echo \"$1\"", "x", "one two"] } }))
      yield* argv.done()
      expect(states(argv.statuses)).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(fs.readFileSync(path.join(argv.sandbox, "stdout"), "utf8")).toBe("one two\n")

      const missing = yield* startExecutor({ checkpoint: checkpoint("c") })
      yield* missing.launch(v1.TaskInfo.create({ taskId: "missing-1", command: { shell: false, value: "/nonexistent/berth-no-such-binary" } }))
      yield* missing.done()
      expect(states(missing.statuses)).toEqual(["STARTING", "FAILED"])
      expect(missing.statuses[1]!.reason).toBe(Reason.CONTAINER_LAUNCH_FAILED)
      expect(missing.statuses[1]!.message).toBe("spawn /nonexistent/berth-no-such-binary ENOENT")

      const signalled = yield* startExecutor({ checkpoint: checkpoint("d") })
      yield* signalled.launch(shellTask("self-kill", "kill -USR1 $$; sleep 5"))
      yield* signalled.done()
      expect(states(signalled.statuses)).toEqual(["STARTING", "RUNNING", "FAILED"])
      expect(signalled.statuses[2]!.message).toBe("Command terminated with signal SIGUSR1")

      const killedOnInterrupt = yield* startExecutor({ checkpoint: checkpoint("e", { onInterrupt: "kill" }) })
      yield* killedOnInterrupt.launch(shellTask("sleeper", "echo $$ > pid; sleep 60"))
      yield* taskPid(killedOnInterrupt.sandbox)
      const sleeper = recorded.get("e")!
      expect(groupMembers(sleeper.pid).length).toBeGreaterThanOrEqual(2)
      yield* Fiber.interrupt(killedOnInterrupt.fiber)
      // SIGKILL is sent to the group on interrupt; the kernel takes a moment to end its members
      // on a loaded machine (a check right away flaked in CI), so wait a bounded while.
      yield* waitFor("the task's process group gone", () => groupMembers(sleeper.pid).length === 0, 10_000)
      expect(groupMembers(sleeper.pid)).toEqual([])
    }))
})
