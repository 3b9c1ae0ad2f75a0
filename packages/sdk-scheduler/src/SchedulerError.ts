/**
 * The errors of a scheduler session, and the one place where gRPC statuses from the master
 * become them.
 *
 * @since 0.1.0
 */
import { status as GrpcStatus } from "@grpc/grpc-js"
import type { ServiceError } from "@grpc/grpc-js"
import { Schema } from "effect"

/**
 * The master refused a call's argument (`INVALID_ARGUMENT`) and changed nothing. `field` is the
 * field path the master named (for example `operations[0].launch.task_infos[1].task_id`), `rule`
 * what it requires.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { SchedulerSession } from "@berth/sdk-scheduler"
 *
 * const program = SchedulerSession.SchedulerSession.use((s) => s.decline(["o1"])).pipe(
 *   Effect.catchTag("InvalidArgument", (e) => Effect.logWarning(`${e.field} ${e.rule}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidArgument extends Schema.TaggedError<InvalidArgument>()("InvalidArgument", {
  call: Schema.String,
  field: Schema.String,
  rule: Schema.String,
  message: Schema.String
}) {}

/**
 * The master that answered does not lead (`UNAVAILABLE` with a `berth-leader` trailer). The
 * session re-subscribes to `leader` by itself; a call that got this can be retried once the
 * session is subscribed again.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotLeader extends Schema.TaggedError<NotLeader>()("NotLeader", {
  call: Schema.String,
  leader: Schema.String
}) {
  override get message(): string {
    return `${this.call}: this master does not lead; the leader is ${this.leader}`
  }
}

/**
 * The call carried a stream id or framework id the master does not accept any more
 * (`FAILED_PRECONDITION`, `NOT_FOUND`): the session it belonged to is gone. Offers received
 * before the next SUBSCRIBED are void.
 *
 * @since 0.1.0
 * @category errors
 */
export class SessionLost extends Schema.TaggedError<SessionLost>()("SessionLost", {
  call: Schema.String,
  message: Schema.String
}) {}

/**
 * The master removed the framework (torn down, or its failover timeout expired), or refused it
 * (`PERMISSION_DENIED`, an ERROR event). Its id can never subscribe again, so the session stops
 * instead of registering a new framework behind the user's back: whoever stored the id must
 * decide what to do.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { SchedulerSession } from "@berth/sdk-scheduler"
 *
 * const program = SchedulerSession.SchedulerSession.use((s) => Stream.runDrain(s.events)).pipe(
 *   Effect.catchTag("FrameworkRemoved", (e) => Effect.logError(`framework ${e.frameworkId} is gone: ${e.message}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class FrameworkRemoved extends Schema.TaggedError<FrameworkRemoved>()("FrameworkRemoved", {
  frameworkId: Schema.String,
  message: Schema.String
}) {}

/**
 * The master refused the call's credentials (`UNAUTHENTICATED`): none were sent where the master
 * requires them, or they are wrong (unknown principal, wrong secret, unknown token). The session
 * stops: retrying with the same credentials cannot help.
 *
 * @since 0.1.0
 * @category errors
 */
export class Unauthenticated extends Schema.TaggedError<Unauthenticated>()("Unauthenticated", {
  call: Schema.String,
  message: Schema.String
}) {}

/**
 * The caller's principal may not do this (`PERMISSION_DENIED` with the trailer
 * `berth-reason: unauthorized`): a role its principal is not authorised for
 * (`field` = `frameworkInfo.roles[1]`), a reservation for a foreign role, another principal's
 * framework. Nothing changed. The session stops when Subscribe is refused.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { SchedulerSession } from "@berth/sdk-scheduler"
 *
 * const program = SchedulerSession.SchedulerSession.use((s) => Stream.runDrain(s.events)).pipe(
 *   Effect.catchTag("PermissionDenied", (e) => Effect.logError(`not authorised: ${e.field}: ${e.rule}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class PermissionDenied extends Schema.TaggedError<PermissionDenied>()("PermissionDenied", {
  call: Schema.String,
  field: Schema.String,
  rule: Schema.String,
  message: Schema.String
}) {}

/**
 * Too many calls (`RESOURCE_EXHAUSTED` with `berth-retry-after-ms`): the master rate-limits
 * Subscribe and Revive per principal. Retry after `retryAfterMs`; the session waits at least that
 * long before it re-subscribes.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  call: Schema.String,
  retryAfterMs: Schema.Number,
  message: Schema.String
}) {}

/**
 * No master could be reached or none answered in time (`UNAVAILABLE` without a leader,
 * `DEADLINE_EXCEEDED`, connection failures, no SUBSCRIBED within the call timeout). Transient:
 * retrying later may succeed.
 *
 * @since 0.1.0
 * @category errors
 */
export class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", {
  call: Schema.String,
  message: Schema.String
}) {}

/**
 * Any other gRPC failure. `code` is the status name (`INTERNAL`, `UNIMPLEMENTED`, ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class CallFailed extends Schema.TaggedError<CallFailed>()("CallFailed", {
  call: Schema.String,
  code: Schema.String,
  message: Schema.String
}) {}

/**
 * `SchedulerSession.layer` was given options it cannot work with. `field` is the option's path
 * (`framework.roles[1]`), `rule` what it must satisfy; nothing was opened.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptions extends Schema.TaggedError<InvalidOptions>()("InvalidOptions", {
  field: Schema.String,
  rule: Schema.String,
  message: Schema.String
}) {}

/**
 * Every error a call or the event stream of a session can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type SchedulerError =
  | InvalidArgument
  | NotLeader
  | SessionLost
  | FrameworkRemoved
  | Unavailable
  | CallFailed
  | Unauthenticated
  | PermissionDenied
  | RateLimited

/**
 * Trailers the master sets next to the status, so the client does not parse messages.
 *
 * @since 0.1.0
 * @category trailers
 */
export const Trailers = {
  /** The leading master's "host:port", on `UNAVAILABLE` from a master that does not lead. */
  leader: "berth-leader",
  /** The offending field path, on `INVALID_ARGUMENT`. */
  field: "berth-field",
  /** The rule the field broke, on `INVALID_ARGUMENT` and `PERMISSION_DENIED`. */
  rule: "berth-rule",
  /**
   * Why, where one status means several things: `unauthorized` or `framework-removed` on
   * `PERMISSION_DENIED`, `rate-limited` on `RESOURCE_EXHAUSTED`, `unauthenticated`.
   */
  reason: "berth-reason",
  /** Milliseconds to wait before retrying, on a rate-limited `RESOURCE_EXHAUSTED`. */
  retryAfterMs: "berth-retry-after-ms"
} as const

const statusNames: ReadonlyMap<number, string> = new Map(
  Object.entries(GrpcStatus).filter(([, code]) => typeof code === "number").map(([name, code]) => [code as number, name])
)

const trailer = (metadata: unknown, key: string): string | undefined => {
  // Duck-typed: a second copy of grpc-js in the tree would defeat `instanceof Metadata`.
  const get = (metadata as { get?: unknown } | null | undefined)?.get
  if (typeof get !== "function") return undefined
  const value: unknown = (get.call(metadata, key) as ReadonlyArray<unknown>)[0]
  if (value === undefined) return undefined
  const text = typeof value === "string" ? value : Buffer.isBuffer(value) ? value.toString("utf8") : String(value)
  return text === "" ? undefined : text
}

const isServiceError = (u: unknown): u is ServiceError =>
  typeof u === "object" && u !== null && typeof (u as { code?: unknown }).code === "number"

/**
 * Maps a failure of a gRPC call to the master onto a session error. `call` names the RPC
 * (`"Accept"`); `frameworkId` is reported by `FrameworkRemoved`. Anything that is not a gRPC
 * `ServiceError` (a serialisation failure, say) becomes `CallFailed` with code `UNKNOWN`.
 *
 * @example
 * ```ts
 * import { Metadata, status } from "@grpc/grpc-js"
 * import { SchedulerError } from "@berth/sdk-scheduler"
 *
 * const metadata = new Metadata()
 * metadata.set("berth-leader", "10.0.0.2:5050")
 * const error = Object.assign(new Error("14 UNAVAILABLE: not leading"), {
 *   code: status.UNAVAILABLE, details: "not leading", metadata
 * })
 * SchedulerError.fromGrpc(error, "Accept") // NotLeader { call: "Accept", leader: "10.0.0.2:5050" }
 * ```
 *
 * @since 0.1.0
 * @category mapping
 */
export const fromGrpc = (error: unknown, call: string, frameworkId = ""): SchedulerError => {
  if (!isServiceError(error)) {
    return new CallFailed({ call, code: "UNKNOWN", message: error instanceof Error ? error.message : String(error) })
  }
  const details = typeof error.details === "string" && error.details !== "" ? error.details : error.message
  switch (error.code) {
    case GrpcStatus.INVALID_ARGUMENT: {
      const separator = details.indexOf(": ")
      const field = trailer(error.metadata, Trailers.field) ?? (separator < 0 ? "" : details.slice(0, separator))
      const rule = trailer(error.metadata, Trailers.rule) ?? (separator < 0 ? details : details.slice(separator + 2))
      return new InvalidArgument({ call, field, rule, message: details })
    }
    case GrpcStatus.UNAVAILABLE: {
      const leader = trailer(error.metadata, Trailers.leader)
      return leader === undefined ? new Unavailable({ call, message: details }) : new NotLeader({ call, leader })
    }
    case GrpcStatus.DEADLINE_EXCEEDED:
      return new Unavailable({ call, message: details })
    case GrpcStatus.FAILED_PRECONDITION:
    case GrpcStatus.NOT_FOUND:
      return new SessionLost({ call, message: details })
    case GrpcStatus.PERMISSION_DENIED: {
      // Without the trailer (an older master) PERMISSION_DENIED only ever meant a removed framework.
      if (trailer(error.metadata, Trailers.reason) !== "unauthorized") return new FrameworkRemoved({ frameworkId, message: details })
      const separator = details.indexOf(": ")
      const field = trailer(error.metadata, Trailers.field) ?? (separator < 0 ? "" : details.slice(0, separator))
      const rule = trailer(error.metadata, Trailers.rule) ?? (separator < 0 ? details : details.slice(separator + 2))
      return new PermissionDenied({ call, field, rule, message: details })
    }
    case GrpcStatus.UNAUTHENTICATED:
      return new Unauthenticated({ call, message: details })
    case GrpcStatus.RESOURCE_EXHAUSTED: {
      const retryAfter = Number(trailer(error.metadata, Trailers.retryAfterMs))
      if (trailer(error.metadata, Trailers.reason) === "rate-limited" && Number.isFinite(retryAfter) && retryAfter >= 0) {
        return new RateLimited({ call, retryAfterMs: retryAfter, message: details })
      }
      return new CallFailed({ call, code: "RESOURCE_EXHAUSTED", message: details })
    }
    default:
      return new CallFailed({ call, code: statusNames.get(error.code) ?? String(error.code), message: details })
  }
}
