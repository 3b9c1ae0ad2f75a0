/**
 * The built-in command executor: runs one task's command as a process group in its sandbox and
 * reports STARTING, RUNNING, (KILLING,) then one terminal status. The agent runs it as a fiber in
 * its own process over an in-process session, so a task costs no executor process.
 *
 * @since 0.1.0
 */
import type { Effect } from "effect"
import type { ExecutorSession } from "./ExecutorSession.ts"
import * as internal from "./internal/commandExecutor.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** The task's working directory; its output goes to the files `stdout` and `stderr` in it. */
  readonly sandbox: string
  /** Environment for the command, before the task's own variables and the BERTH_* ones. */
  readonly env?: Record<string, string> | undefined
  /** SIGTERM → SIGKILL grace when neither the kill nor the task gives one. Default 3 seconds. */
  readonly defaultGracePeriodSeconds?: number | undefined
}

/**
 * Runs the command executor over the session's events until its task has a terminal status
 * (or a shutdown arrives with nothing running, or the events end).
 *
 * - launch: validates the command, then STARTING, spawn, RUNNING. A spawn failure is FAILED with
 *   REASON_CONTAINER_LAUNCH_FAILED; a task without a command is ERROR with REASON_TASK_INVALID.
 * - exit: FINISHED on status 0, FAILED (REASON_COMMAND_EXECUTOR_FAILED, `exitCode`) otherwise;
 *   KILLED (REASON_KILLED_BY_SCHEDULER) when a kill was requested. The rest of the process group
 *   is SIGKILLed so nothing is orphaned.
 * - kill: KILLING, SIGTERM to the group, SIGKILL after the grace period (kill's policy, else the
 *   task's, else `defaultGracePeriodSeconds`). A kill for another task, or before the launch, is
 *   answered with KILLED without spawning anything.
 * - shutdown, or the events ending, while the task runs: as a kill, with
 *   REASON_EXECUTOR_TERMINATED.
 *
 * Interrupting `run` SIGKILLs the process group: nothing outlives it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { v1 } from "@berth/proto"
 * import { CommandExecutor, ExecutorSession } from "@berth/sdk-executor"
 *
 * const program = Effect.gen(function*() {
 *   const inProcess = yield* ExecutorSession.makeInProcess({
 *     frameworkId: "f1", executorId: "t1", agentId: "a1",
 *     onUpdate: (status) => Effect.log(v1.TaskState[status.state])
 *   })
 *   const executor = yield* CommandExecutor.run({ sandbox: "/tmp/sandbox-t1" }).pipe(
 *     Effect.provide(ExecutorSession.layerInProcess(inProcess)),
 *     Effect.forkScoped // lives as long as the agent's scope for this executor
 *   )
 *   const task = v1.TaskInfo.create({ taskId: "t1", command: { shell: true, value: "echo hello" } })
 *   yield* inProcess.send({ $case: "launch", value: { task } })
 * })
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const run: (options: RunOptions) => Effect.Effect<void, never, ExecutorSession> = internal.run
