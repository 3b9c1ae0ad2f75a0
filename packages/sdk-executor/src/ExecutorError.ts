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

/**
 * An artifact of the task (one of `command.uris`) could not be fetched into the sandbox: the
 * source is unreachable or answered with an error, the download stalled, took too long or was too
 * large, the checksum did not match, or an archive could not be extracted safely (for example an
 * entry that would land outside the sandbox). The command executor reports it as TASK_FAILED
 * with REASON_FETCHER_FAILED and spawns nothing.
 *
 * @example
 * ```ts
 * import { ExecutorError } from "@berth/sdk-executor"
 *
 * const error = new ExecutorError.FetchError({
 *   uri: "https://example.org/app.tgz",
 *   message: "HTTP 404 Not Found"
 * })
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class FetchError extends Schema.TaggedError<FetchError>()("FetchError", {
  uri: Schema.String,
  message: Schema.String
}) {}

/**
 * A custom executor program cannot reach its agent because the environment the agent sets when
 * it launches the program is missing or wrong (for example `BERTH_AGENT_ENDPOINT` is unset: the
 * program was started by hand). `message` names the variable and the rule.
 *
 * @example
 * ```ts
 * import { ExecutorError } from "@berth/sdk-executor"
 *
 * const error = new ExecutorError.EnvironmentError({
 *   message: "BERTH_AGENT_ENDPOINT: must be set (the agent sets it when it launches a custom executor)"
 * })
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class EnvironmentError extends Schema.TaggedError<EnvironmentError>()("EnvironmentError", {
  message: Schema.String
}) {}
