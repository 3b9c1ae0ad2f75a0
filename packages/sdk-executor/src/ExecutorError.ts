/**
 * Errors of executors.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * A task's process could not be started: its sandbox output files could not be opened or the
 * command could not be spawned (no such binary, not executable, no sandbox directory). The
 * command executor reports it as TASK_FAILED with REASON_CONTAINER_LAUNCH_FAILED.
 *
 * @example
 * ```ts
 * import { ExecutorError } from "@berth/sdk-executor"
 *
 * const error = new ExecutorError.LaunchError({ taskId: "t1", message: "spawn ./server ENOENT" })
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class LaunchError extends Schema.TaggedError<LaunchError>()("LaunchError", {
  taskId: Schema.String,
  message: Schema.String
}) {}
