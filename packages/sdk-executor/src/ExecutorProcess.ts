/**
 * The process of a custom executor program, as its agent starts and watches it: a process group
 * of its own in the sandbox, behind the same exit-status wrapper as checkpointed tasks (see
 * `CommandExecutor.CheckpointOptions`), so that it outlives the agent and a restarted agent can
 * find it again and learn how it ended.
 *
 * @since 0.1.0
 */
import type { v1 } from "@berth/proto"
import { type Duration, Effect } from "effect"
import type { FetchError, LaunchError } from "./ExecutorError.ts"
import * as fetcher from "./internal/fetcher.ts"
import * as processes from "./internal/process.ts"
import type { FetcherOptions, TaskProcess } from "./CommandExecutor.ts"

/**
 * How a process ended: an exit `code` or a `signal`, or neither when nobody could tell (its group
 * was SIGKILLed while no agent watched it, so its wrapper wrote no status).
 *
 * @since 0.1.0
 * @category models
 */
export interface Termination {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/**
 * A running executor process.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handle {
  /** The group leader's pid (its wrapper shell), which is also the process group id. */
  readonly pid: number
  /** What to checkpoint to find it again; undefined if it ended before it could be looked at. */
  readonly process: TaskProcess | undefined
  readonly hasExited: () => boolean
  /** Waits for the group leader to end. */
  readonly awaitExit: Effect.Effect<Termination>
}

/**
 * Starts `command` in `sandbox` (output appended to its `stdout` and `stderr`) as the leader of a
 * new process group, with exactly the environment `env`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ExecutorProcess } from "@berth/sdk-executor"
 *
 * const started = ExecutorProcess.start({
 *   executorId: "e1",
 *   sandbox: "/var/lib/berth/frameworks/f1/executors/e1/runs/r1",
 *   command: { shell: true, value: "./my-executor", arguments: [], environment: [], uris: [] },
 *   env: { PATH: "/usr/bin:/bin" },
 *   exitStatusFile: "/var/lib/berth/meta/frameworks/f1/executors/e1/runs/r1/exit_status"
 * }).pipe(Effect.flatMap((handle) => handle.awaitExit))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = (options: {
  readonly executorId: string
  readonly sandbox: string
  readonly command: v1.CommandInfo
  readonly env: Record<string, string>
  /** Where the wrapper writes the exit status; keep it out of the sandbox. */
  readonly exitStatusFile: string
  /** `cgroup.procs` files the program joins before it starts (see `CommandExecutor.Isolation`). */
  readonly joinFiles?: ReadonlyArray<string> | undefined
}): Effect.Effect<Handle, LaunchError> =>
  Effect.map(
    processes.start({
      taskId: options.executorId,
      sandbox: options.sandbox,
      command: options.command,
      env: options.env,
      exitStatusFile: options.exitStatusFile,
      joinFiles: options.joinFiles
    }),
    // /proc is read right away: the start time tells this process from a later one with its pid.
    ({ handle }) => toHandle(handle, processes.taskProcessOf(handle.pid))
  )

const toHandle = (handle: processes.TaskHandle, process: TaskProcess | undefined): Handle => ({
  pid: handle.pid,
  process,
  hasExited: handle.hasExited,
  awaitExit: handle.awaitExit
})

/**
 * A handle on an executor process started before an agent restart: its end is noticed by polling
 * `/proc` every `pollInterval`, and how it ended is read from `exitStatusFile`.
 *
 * @example
 * ```ts
 * import { ExecutorProcess } from "@berth/sdk-executor"
 *
 * const handle = ExecutorProcess.attach({ pid: 4242, startTime: 1234567, bootId: "" }, "/var/lib/berth/meta/.../exit_status", "1 second")
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const attach = (process: TaskProcess, exitStatusFile: string, pollInterval: Duration.Input): Handle =>
  toHandle(processes.attach(process, exitStatusFile, pollInterval, () => false), process)

/**
 * Kills the process group (SIGKILL), and what it left behind once its leader is gone.
 *
 * @example
 * ```ts
 * import { ExecutorProcess } from "@berth/sdk-executor"
 *
 * const kill = ExecutorProcess.kill({ pid: 4242, startTime: 1234567, bootId: "" })
 * ```
 *
 * @since 0.1.0
 * @category processes
 */
export const kill: (process: TaskProcess) => Effect.Effect<void> = processes.killGroup

/**
 * The executor's wrapper found by its command line (which names `exitStatusFile`), for one whose
 * pid never reached the checkpoint.
 *
 * @example
 * ```ts
 * import { ExecutorProcess } from "@berth/sdk-executor"
 *
 * const found = ExecutorProcess.find("/var/lib/berth/meta/.../exit_status")
 * ```
 *
 * @since 0.1.0
 * @category processes
 */
export const find: (exitStatusFile: string) => TaskProcess | undefined = processes.findWrapper

/**
 * "exited with status 3", "terminated with signal SIGKILL", ...
 *
 * @example
 * ```ts
 * import { ExecutorProcess } from "@berth/sdk-executor"
 *
 * ExecutorProcess.describe({ code: 3, signal: null }) // "Command exited with status 3"
 * ```
 *
 * @since 0.1.0
 * @category processes
 */
export const describe: (termination: Termination) => string = processes.describeTermination

/**
 * Fetches an executor's artifacts (its `command.uris`) into its sandbox before the program
 * starts, with the fetcher command tasks use: `file://`, `http(s)://`, the fetcher cache,
 * `sha256:` checksums, archive extraction and the executable bit. Stops at the first failure.
 *
 * @example
 * ```ts
 * import { ExecutorProcess } from "@berth/sdk-executor"
 *
 * ExecutorProcess.fetchArtifacts("/var/lib/berth/.../runs/r1", executor.command!.uris, { cacheDir: "/var/lib/berth/cache" })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const fetchArtifacts = (
  sandbox: string,
  uris: ReadonlyArray<v1.CommandUri>,
  options?: FetcherOptions
): Effect.Effect<void, FetchError> => fetcher.fetchAll(sandbox, uris, fetcher.resolveConfig(options))

/**
 * Why `uri` (`command.uris[index]`) cannot be fetched, naming the field (relative to the command)
 * and the rule; undefined when it can.
 *
 * @since 0.1.0
 * @category validation
 */
export const artifactProblem: (uri: v1.CommandUri, index: number) => string | undefined = fetcher.uriProblem
