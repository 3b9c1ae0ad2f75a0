/**
 * The built-in command executor: runs one task's command as a process group in its sandbox and
 * reports STARTING, RUNNING, (KILLING,) then one terminal status. Before the command starts it
 * fetches the task's artifacts (`command.uris`) into the sandbox; while it runs, it performs the
 * task's health check and readiness check. The agent runs it as a fiber in its own process over
 * an in-process session, so a task costs no executor process.
 *
 * @since 0.1.0
 */
import type { Duration, Effect } from "effect"
import type { v1 } from "@berth/proto"
import type { ExecutorSession } from "./ExecutorSession.ts"
import * as internal from "./internal/commandExecutor.ts"
import * as processes from "./internal/process.ts"

/**
 * How the fetcher gets a task's artifacts (`command.uris`) into its sandbox. Every field has a
 * default; the agent passes `cacheDir`.
 *
 * @example
 * ```ts
 * import type { CommandExecutor } from "@berth/sdk-executor"
 *
 * const fetcher: CommandExecutor.FetcherOptions = {
 *   cacheDir: "/var/lib/berth/cache",
 *   timeout: "2 minutes",
 *   maxBytes: 512 * 1024 * 1024
 * }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface FetcherOptions {
  /**
   * The fetcher cache. Artifacts of URIs with `cache` set are kept here, keyed by URI and
   * checksum, and later launches copy them from here instead of downloading again. Without a
   * cache directory `cache` has no effect: every launch fetches.
   */
  readonly cacheDir?: string | undefined
  /**
   * The most the cache may hold, in bytes; the least recently used artifacts are evicted beyond
   * it, and an artifact larger than the whole cache goes straight to the sandbox. Default 2 GiB
   * (Mesos' `--fetcher_cache_size`).
   */
  readonly cacheSizeBytes?: number | undefined
  /** The most time one artifact's download (or copy) may take. Default 10 minutes. */
  readonly timeout?: Duration.Input | undefined
  /**
   * A download that receives no data for this long fails. Default 1 minute (Mesos'
   * `--fetcher_stall_timeout`).
   */
  readonly stallTimeout?: Duration.Input | undefined
  /** The largest artifact accepted, in bytes. Default 2 GiB. */
  readonly maxBytes?: number | undefined
  /**
   * The most one archive may extract to, in bytes, counted from its entries' sizes before
   * anything is written (a guard against archive bombs). Default 8 GiB.
   */
  readonly maxExtractedBytes?: number | undefined
}

/**
 * A task's process as a checkpoint records it: enough for a later executor (after an agent
 * restart) to find it again and to tell it from an unrelated process that got the same pid since.
 *
 * @since 0.1.0
 * @category models
 */
export interface TaskProcess {
  /** The pid of the task's group leader (its wrapper shell), which is also the process group id. */
  readonly pid: number
  /** When that process started, in clock ticks since boot (`/proc/<pid>/stat` field 22). */
  readonly startTime: number
  /** The boot it belongs to (`/proc/sys/kernel/random/boot_id`; "" where unknown). */
  readonly bootId: string
}

/**
 * Makes the task's process outlive the executor (and the agent running it), so that a later
 * executor can take it over with {@link RunOptions.recover}.
 *
 * The command then runs behind a small POSIX shell wrapper (`/bin/sh`, about 1.7 MB RSS and
 * 0.3 MB PSS with dash): the wrapper leads the task's process group, runs the command, and writes
 * the command's exit status to `exitStatusFile` before it exits, so the status survives the death
 * of the process that spawned it (which alone could have wait()ed for it). The wrapper traps the
 * signals a kill sends to the group; the command gets the default handlers. Two consequences:
 * a command that dies of signal N is seen through the shell's `$?` (128 + N), so a status above
 * 128 is reported as that signal; and `arguments[0]` of an argv command is not passed as argv[0]
 * (a POSIX shell cannot set it), the program sees `value` instead.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import type { CommandExecutor } from "@berth/sdk-executor"
 *
 * const checkpoint: CommandExecutor.CheckpointOptions = {
 *   exitStatusFile: "/var/lib/berth/meta/runs/r1/exit_status",
 *   onStarted: (process) => Effect.log("record it", process.pid, process.startTime),
 *   onInterrupt: "leave"
 * }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckpointOptions {
  /**
   * Where the wrapper writes the command's exit status (one line, the shell's `$?`). Keep it out
   * of the sandbox, where the task could tamper with it; its directory must exist.
   */
  readonly exitStatusFile: string
  /**
   * Called once the task's process runs and before RUNNING is reported: record it (durably) to
   * find the task again after a restart. Not called for a task that ended before it could be
   * looked at (its exit status is in the file by then).
   */
  readonly onStarted?: ((process: TaskProcess) => Effect.Effect<void>) | undefined
  /**
   * What interrupting `run` does to a task still running: "leave" it running (a later `recover`
   * takes it over; the default with a checkpoint) or "kill" its process group (SIGKILL).
   * KILL and SHUTDOWN events always kill.
   */
  readonly onInterrupt?: "kill" | "leave" | undefined
  /** How often a re-attached task is polled for its end (it is nobody's child here). Default 1 second. */
  readonly pollInterval?: Duration.Input | undefined
}

/**
 * A task started by an earlier executor, to take over instead of waiting for a launch.
 *
 * @since 0.1.0
 * @category models
 */
export interface Recovered {
  readonly task: v1.TaskInfo
  /**
   * Its process as `CheckpointOptions.onStarted` received it. Absent when it was never recorded
   * (the previous executor stopped between the spawn and the record): the executor then looks for
   * the wrapper by its command line, which names `exitStatusFile`.
   */
  readonly process?: TaskProcess | undefined
  /** The latest health and readiness results, carried on later RUNNING updates. */
  readonly healthy?: boolean | undefined
  readonly ready?: boolean | undefined
  /**
   * Set when the task was being killed (its latest status is KILLING): the kill is finished with
   * the task's grace period, and the task ends KILLED with this reason.
   */
  readonly killReason?: v1.TaskStatus_Reason | undefined
}

/**
 * Resource limits for a task, from whoever runs the executor (the agent uses Linux cgroups):
 * `prepare` makes the task's container before its spawn (or finds it again, `recovered`, when the
 * task is taken over after a restart) and names the `cgroup.procs` files the task joins before its
 * command runs. After the task ends, a `limitation` it hit (memory) makes its status FAILED with
 * that reason, whatever its exit status; `release` then removes the container. A `prepare` that
 * fails ends the task FAILED with REASON_CONTAINER_LAUNCH_FAILED; nothing is spawned.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import type { CommandExecutor } from "@berth/sdk-executor"
 *
 * const none: CommandExecutor.Isolation = {
 *   prepare: () => Effect.succeed({ procsFiles: [], limitation: () => undefined, release: Effect.void })
 * }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Isolation {
  readonly prepare: (task: v1.TaskInfo, recovered: boolean) => Effect.Effect<Isolated, Error>
}

/**
 * A task's container, as {@link Isolation.prepare} made it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Isolated {
  readonly procsFiles: ReadonlyArray<string>
  readonly limitation: () => { readonly reason: v1.TaskStatus_Reason; readonly message: string } | undefined
  readonly release: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** The task's working directory; its output goes to the files `stdout` and `stderr` in it. */
  readonly sandbox: string
  /**
   * Where the files `stdout` and `stderr` go instead of the sandbox (it must exist). The default
   * executor gives each task of a group `tasks/<taskId>` inside the group's shared sandbox.
   */
  readonly outputDir?: string | undefined
  /** Environment for the command, before the task's own variables and the BERTH_* ones. */
  readonly env?: Record<string, string> | undefined
  /** SIGTERM → SIGKILL grace when neither the kill nor the task gives one. Default 3 seconds. */
  readonly defaultGracePeriodSeconds?: number | undefined
  /** How artifacts are fetched: cache directory, timeouts, size limits. All optional. */
  readonly fetcher?: FetcherOptions | undefined
  /**
   * The user to run the task as when its `command.user` is empty (the framework's user). A task
   * with a user other than the executor's own needs the executor to run as root: its command
   * then runs with that user's uid, gid and groups (through `setpriv` behind the checkpoint
   * wrapper), with `USER`, `LOGNAME` and `HOME` set, and its sandbox directory and output files
   * are handed to the user. A user that does not exist, or an executor not running as root, ends
   * the task FAILED with REASON_CONTAINER_LAUNCH_FAILED and a message naming `command.user` or
   * `framework.user`; nothing is fetched or spawned.
   */
  readonly user?: string | undefined
  /** Resource limits for the task (see {@link Isolation}); none by default. */
  readonly isolation?: Isolation | undefined
  /** Run the task so that it can outlive this executor (see {@link CheckpointOptions}). */
  readonly checkpoint?: CheckpointOptions | undefined
  /**
   * Take over a task an earlier executor started (needs `checkpoint`, with the same exit status
   * file). If it still runs, the executor re-attaches: no STARTING or RUNNING again, its checks
   * restart, its end is noticed by polling, KILL and SHUTDOWN work as usual (SIGTERM to the group,
   * SIGKILL after the grace period). If it ended meanwhile, its terminal status is reported at once
   * from the exit status file: FINISHED, or FAILED with the exit code or the signal; FAILED with
   * REASON_EXECUTOR_TERMINATED when there is no status (its group was SIGKILLed from outside).
   * If its command was never started (the earlier executor stopped between STARTING and the
   * spawn), it is launched now (STARTING again, then as any launch); KILLED instead when it was
   * being killed.
   */
  readonly recover?: Recovered | undefined
}

/**
 * Whether a recorded task process still runs: same boot, same start time (so not a recycled
 * pid), not a zombie.
 *
 * @example
 * ```ts
 * import { CommandExecutor } from "@berth/sdk-executor"
 *
 * const alive = CommandExecutor.isRunning({ pid: 4242, startTime: 1234567, bootId: "" })
 * ```
 *
 * @since 0.1.0
 * @category processes
 */
export const isRunning: (process: TaskProcess) => boolean = processes.isRunning

/**
 * SIGKILLs the process group of a recorded task process if it still runs (checked as in
 * {@link isRunning}), and what its group left behind if its leader is gone. For an agent that
 * starts clean instead of re-attaching (`berth agent --recover=cleanup`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandExecutor } from "@berth/sdk-executor"
 *
 * const cleanup = CommandExecutor.kill({ pid: 4242, startTime: 1234567, bootId: "" })
 * ```
 *
 * @since 0.1.0
 * @category processes
 */
export const kill: (process: TaskProcess) => Effect.Effect<void> = processes.killGroup

/**
 * The wrapper process of a checkpointed task, found by its command line (which names the run's
 * `exitStatusFile`): for a task whose process was never recorded because the executor stopped
 * right after spawning it. Scans /proc.
 *
 * @example
 * ```ts
 * import { CommandExecutor } from "@berth/sdk-executor"
 *
 * const process = CommandExecutor.find("/var/lib/berth/meta/runs/r1/exit_status")
 * ```
 *
 * @since 0.1.0
 * @category processes
 */
export const find: (exitStatusFile: string) => TaskProcess | undefined = processes.findWrapper

/**
 * Runs the command executor over the session's events until its task has a terminal status
 * (or a shutdown arrives with nothing running, or the events end).
 *
 * - launch: validates the task (command, artifact URIs, checks; a problem is ERROR with
 *   REASON_TASK_INVALID and a message naming the field), then STARTING, fetch the artifacts,
 *   spawn, RUNNING. A spawn failure is FAILED with REASON_CONTAINER_LAUNCH_FAILED.
 * - artifacts: each of `command.uris` (`file://`, `http://`, `https://`) is fetched into the
 *   sandbox, as `output_file` or the URI's file name; `checksum` ("sha256:<hex>") is verified;
 *   `executable` sets mode 0755; otherwise with `extract`, `.tar`, `.tar.gz`, `.tgz` and `.zip`
 *   are extracted next to the file (entries that would land outside the sandbox make the fetch
 *   fail); `cache` uses the fetcher cache (see `FetcherOptions`). A failure is FAILED with
 *   REASON_FETCHER_FAILED and a message naming the URI and the cause; nothing is spawned.
 * - health check (`task.healthCheck`: COMMAND in the sandbox with the task's environment, HTTP
 *   GET or TCP connect to 127.0.0.1:port), with Mesos' semantics and defaults for fields left at
 *   0 (delay 15 s, interval 10 s, timeout 20 s, grace period 10 s, 3 consecutive failures): the
 *   first result and every change is a RUNNING update with `healthy` and
 *   REASON_TASK_HEALTH_CHECK_STATUS_UPDATED; failures within the grace period are ignored until
 *   the check has passed once; after `consecutive_failures` failures in a row the task is killed
 *   with its kill policy, and KILLING and KILLED carry `healthy: false`,
 *   REASON_TASK_HEALTH_CHECK_STATUS_UPDATED and a message naming the check and the last failure.
 * - readiness check (`task.check`, same shape): the first result and every change is a RUNNING
 *   update with `ready` and REASON_TASK_CHECK_STATUS_UPDATED; it never kills.
 * - exit: FINISHED on status 0, FAILED (REASON_COMMAND_EXECUTOR_FAILED, `exitCode`) otherwise;
 *   KILLED (the kill's reason, else REASON_KILLED_BY_SCHEDULER) when a kill was requested. The
 *   rest of the process group is SIGKILLed so nothing is orphaned.
 * - kill: KILLING, SIGTERM to the group, SIGKILL after the grace period (kill's policy, else the
 *   task's, else `defaultGracePeriodSeconds`). A kill while the artifacts are being fetched stops
 *   the fetch and ends the task KILLED without spawning it. A kill for another task, or before the
 *   launch, is answered with KILLED without spawning anything.
 * - shutdown, or the events ending, while the task runs: as a kill, with
 *   REASON_EXECUTOR_TERMINATED.
 *
 * - recover (`options.recover`): takes over a task an earlier executor started (see
 *   {@link RunOptions.recover}).
 *
 * All timing (check delays, intervals, timeouts, grace periods, kill grace, fetch timeouts) runs
 * on the Effect clock, so `TestClock` can drive it. Interrupting `run` stops any fetch and check
 * and SIGKILLs the process group: nothing outlives it, unless the task is checkpointed with
 * `onInterrupt: "leave"` (the default with `checkpoint`), which leaves it running for a later
 * `recover`.
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
 *   const task = v1.TaskInfo.create({
 *     taskId: "t1",
 *     command: {
 *       shell: true,
 *       value: "./server --port 8080",
 *       uris: [{ value: "https://example.org/server", executable: true, cache: true }]
 *     },
 *     // Fields left at 0 take Mesos' defaults: interval 10 s, timeout 20 s, 3 failures in a row.
 *     healthCheck: {
 *       type: v1.HealthCheck_Type.HTTP,
 *       http: { port: 8080, path: "/health" },
 *       delaySeconds: 5,
 *       gracePeriodSeconds: 30
 *     }
 *   })
 *   yield* inProcess.send({ $case: "launch", value: { task } })
 * })
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const run: (options: RunOptions) => Effect.Effect<void, never, ExecutorSession> = internal.run
