/**
 * The built-in default executor for task groups (LAUNCH_GROUP), as in Mesos: the tasks of a
 * group start together in one shared sandbox (and so share its volumes), each as a process group
 * of its own, with its output in `tasks/<taskId>/stdout` and `stderr` inside the sandbox. Every
 * task is run by the command executor's machinery (artifacts, health and readiness checks, kill
 * policy, checkpoint and recovery), so a task of a group behaves like a single task, plus the
 * group policy.
 *
 * One executor runs several groups: a LAUNCH_GROUP that arrives while it runs (the scheduler
 * named the same executor again) starts its tasks beside the running ones, in the same sandbox,
 * so a sidecar such as a backup reads the pod's volumes while the pod keeps running. The group
 * policy applies to each group on its own:
 *
 * - all or nothing: each group is validated as a whole before anything of it starts; one invalid
 *   task makes every task of that group ERROR (REASON_TASK_INVALID, the message naming the task
 *   and field) and nothing of it is spawned (groups already running are not touched). A task id
 *   the executor already has (in another group) makes the new group invalid;
 * - a task that ends other than FINISHED (FAILED, or KILLED by its health check) kills the rest
 *   of its own group: they report KILLING and KILLED with REASON_EXECUTOR_TERMINATED and a
 *   message such as `Killed with its task group: task web failed (Command exited with status 3)`;
 * - a kill of any task kills its group (Mesos' semantics): the task named by the kill, then its
 *   siblings, all KILLED with the kill's reason (siblings' messages name the killed task);
 * - tasks of the executor's other groups are never killed by another group's policy;
 * - a task that FINISHES leaves the others running; the executor returns once every task of
 *   every group ended, and a shutdown kills every task of every group (a group that arrives
 *   while it shuts down is DROPPED with REASON_EXECUTOR_TERMINATED, nothing of it started);
 * - a group resent with the same task ids starts nothing again.
 *
 * @since 0.1.0
 */
import type { Effect } from "effect"
import type { v1 } from "@berth/proto"
import type { CheckpointOptions, FetcherOptions, Isolation, Recovered } from "./CommandExecutor.ts"
import type { ExecutorSession } from "./ExecutorSession.ts"
import * as internal from "./internal/defaultExecutor.ts"

/**
 * The tasks of a group an earlier executor started (before an agent restart), to take over.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecoveredGroup {
  /** The group's tasks that had not ended yet, each as `CommandExecutor.Recovered`. */
  readonly tasks: ReadonlyArray<Recovered>
  /**
   * The latest (terminal) statuses of the group's tasks that had ended. One that is not FINISHED
   * means the group policy may not have run to its end: the recovered tasks are killed.
   */
  readonly ended?: ReadonlyArray<v1.TaskStatus> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** The group's shared sandbox: every task's working directory. */
  readonly sandbox: string
  /** Environment for every task, before the task's own variables and the BERTH_* ones. */
  readonly env?: Record<string, string> | undefined
  /** SIGTERM → SIGKILL grace when neither the kill nor the task gives one. Default 3 seconds. */
  readonly defaultGracePeriodSeconds?: number | undefined
  /** How artifacts are fetched (shared by the group's tasks). */
  readonly fetcher?: FetcherOptions | undefined
  /** Per task: run it so that it can outlive this executor (see `CommandExecutor.CheckpointOptions`). */
  readonly checkpoint?: ((task: v1.TaskInfo) => CheckpointOptions) | undefined
  /**
   * Take over what an earlier executor started (needs `checkpoint`): one group, or each group it
   * ran (the group policy then applies to each on its own).
   */
  readonly recover?: RecoveredGroup | ReadonlyArray<RecoveredGroup> | undefined
  /** The user tasks without a `command.user` run as (see `CommandExecutor.RunOptions.user`). */
  readonly user?: string | undefined
  /** Resource limits for each task (see `CommandExecutor.Isolation`). */
  readonly isolation?: Isolation | undefined
}

/**
 * Runs the default executor over the session's events until every task of every group it was
 * given has a terminal status (or a shutdown arrives with no group, or the events end). It
 * handles `launchGroup` (the first group, and any further one while it runs: each joins the
 * shared sandbox), `kill` (kills the task's own group), `shutdown` (kills every task with
 * REASON_EXECUTOR_TERMINATED) and a single `launch` (refused with ERROR).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { v1 } from "@berth/proto"
 * import { DefaultExecutor, ExecutorSession } from "@berth/sdk-executor"
 *
 * const program = Effect.gen(function*() {
 *   const inProcess = yield* ExecutorSession.makeInProcess({
 *     frameworkId: "f1", executorId: "pod-1", agentId: "a1",
 *     onUpdate: (status) => Effect.log(status.taskId, v1.TaskState[status.state])
 *   })
 *   yield* DefaultExecutor.run({ sandbox: "/tmp/pod-1" }).pipe(
 *     Effect.provide(ExecutorSession.layerInProcess(inProcess)),
 *     Effect.forkScoped
 *   )
 *   const tasks = ["init", "server"].map((taskId) =>
 *     v1.TaskInfo.create({ taskId, command: { shell: true, value: `./${taskId}.sh` } })
 *   )
 *   yield* inProcess.send({ $case: "launchGroup", value: { taskGroup: { tasks } } })
 *   // Later, a second group joins the running one (same sandbox; its own group policy).
 *   const backup = v1.TaskInfo.create({ taskId: "backup", command: { shell: true, value: "tar czf b.tgz data" } })
 *   yield* inProcess.send({ $case: "launchGroup", value: { taskGroup: { tasks: [backup] } } })
 * })
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const run: (options: RunOptions) => Effect.Effect<void, never, ExecutorSession> = internal.run

/**
 * Why a task group cannot be run by the default executor (naming the task and the field), or
 * undefined when it can: the check `run` makes before starting anything.
 *
 * @example
 * ```ts
 * import { v1 } from "@berth/proto"
 * import { DefaultExecutor } from "@berth/sdk-executor"
 *
 * const problem = DefaultExecutor.groupProblem([v1.TaskInfo.create({ taskId: "a" })])
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const groupProblem: (
  tasks: ReadonlyArray<v1.TaskInfo>
) => { readonly taskId: string | undefined; readonly message: string } | undefined = internal.groupProblem
