/**
 * The errors the cluster core reports to its callers. Each maps to one gRPC status code in one
 * place (`internal/grpc.ts`), so a scheduler sees the same error whichever handler raised it.
 */
import { Schema } from "effect"

/** A request field broke a rule. `field` is a path such as `operations[0].launch.taskInfos[1].command`. */
export class InvalidArgument extends Schema.TaggedError<InvalidArgument>()("InvalidArgument", {
  field: Schema.String,
  rule: Schema.String
}) {
  override get message(): string {
    return `${this.field}: ${this.rule}`
  }
}

/** The call's session (framework id and stream id) is unknown or was replaced by a newer one. */
export class StaleSession extends Schema.TaggedError<StaleSession>()("StaleSession", {
  frameworkId: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `framework ${this.frameworkId}: ${this.reason}`
  }
}

/** The thing asked for does not exist. */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  field: Schema.String,
  rule: Schema.String
}) {
  override get message(): string {
    return `${this.field}: ${this.rule}`
  }
}

/** The operation is declared in the API but not implemented by this version of the core. */
export class Unimplemented extends Schema.TaggedError<Unimplemented>()("Unimplemented", {
  field: Schema.String,
  feature: Schema.String
}) {
  override get message(): string {
    return `${this.field}: ${this.feature} is not supported by this master yet`
  }
}

/** A daemon could not start: a bad flag, a port in use, unreadable state. */
export class StartupError extends Schema.TaggedError<StartupError>()("StartupError", {
  component: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.component}: ${this.reason}`
  }
}

/** The framework was torn down; its id can never subscribe again. */
export class FrameworkRemoved extends Schema.TaggedError<FrameworkRemoved>()("FrameworkRemoved", {
  frameworkId: Schema.String
}) {
  override get message(): string {
    return `framework ${this.frameworkId} was torn down and cannot subscribe again; subscribe without a framework id to register a new framework`
  }
}

/** This master does not lead; `leader` is the leading master's endpoint ("" when none is known). */
export class NotLeader extends Schema.TaggedError<NotLeader>()("NotLeader", {
  leader: Schema.String
}) {
  override get message(): string {
    return this.leader === "" ? "this master is a standby and no leader is elected yet" : `this master is a standby; the leader is ${this.leader}`
  }
}

/** The call carried no credentials where they are required, or credentials that are not valid. */
export class Unauthenticated extends Schema.TaggedError<Unauthenticated>()("Unauthenticated", {
  reason: Schema.String
}) {
  override get message(): string {
    return this.reason
  }
}

/**
 * The caller is authenticated (or named a principal) but may not do this. `field` is the request
 * field that asked for it (`frameworkInfo.roles[1]`) or the call's name (`DrainAgent`), `rule`
 * the rule it broke.
 */
export class PermissionDenied extends Schema.TaggedError<PermissionDenied>()("PermissionDenied", {
  principal: Schema.String,
  field: Schema.String,
  rule: Schema.String
}) {
  override get message(): string {
    return `${this.field}: ${this.rule}`
  }
}

/** Too many calls of one kind from one principal (or address): retry after `retryAfterMs`. */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  call: Schema.String,
  key: Schema.String,
  limit: Schema.String,
  retryAfterMs: Schema.Number
}) {
  override get message(): string {
    return `${this.call}: rate limit of ${this.limit} for ${this.key} exceeded; retry in ${this.retryAfterMs} ms`
  }
}

export type RequestError =
  | InvalidArgument
  | StaleSession
  | NotFound
  | Unimplemented
  | FrameworkRemoved
  | NotLeader
  | Unauthenticated
  | PermissionDenied
  | RateLimited
