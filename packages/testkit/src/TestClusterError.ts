/** Errors of the testkit itself (not of the cluster under test). */
import { Schema } from "effect"

/** A condition the test waited for did not hold in time. */
export class TimeoutError extends Schema.TaggedError<TimeoutError>()("TimeoutError", {
  description: Schema.String,
  timeoutMs: Schema.Number
}) {
  override get message(): string {
    return `timed out after ${this.timeoutMs} ms waiting for ${this.description}`
  }
}

/** A master, agent or etcd process of a test cluster did not start, or exited when it should not have. */
export class ProcessError extends Schema.TaggedError<ProcessError>()("ProcessError", {
  process: Schema.String,
  reason: Schema.String,
  /** The last lines of the process's log. */
  log: Schema.String
}) {
  override get message(): string {
    return `${this.process}: ${this.reason}${this.log === "" ? "" : `; its log ends with:\n${this.log}`}`
  }
}

/**
 * A fault this cluster cannot inject. `reason` says why (the backend, or how the cluster was
 * started: `proxy: false`, TLS, the live clock) and `remedy` how to get a cluster that can.
 *
 * @example
 * ```ts
 * // cluster started with { proxy: false }
 * yield* cluster.agents[0].partition
 * // UnsupportedFault: partition is not supported by this in-process cluster: it has no fault
 * // proxy (it was started with proxy: false); start it without proxy: false
 * ```
 */
export class UnsupportedFault extends Schema.TaggedError<UnsupportedFault>()("UnsupportedFault", {
  fault: Schema.String,
  backend: Schema.String,
  /** Why this cluster cannot inject the fault. */
  reason: Schema.optional(Schema.String),
  /** What to do instead (which backend or option can). */
  remedy: Schema.optional(Schema.String)
}) {
  override get message(): string {
    const why = this.reason ?? `the ${this.backend} backend cannot inject it`
    return `${this.fault} is not supported by this ${this.backend} cluster: ${why}${this.remedy === undefined ? "" : `; ${this.remedy}`}`
  }
}

/** A `TestCluster.make` option breaks a rule; nothing was started. */
export class InvalidOptions extends Schema.TaggedError<InvalidOptions>()("InvalidOptions", {
  field: Schema.String,
  rule: Schema.String
}) {
  override get message(): string {
    return `TestCluster options: ${this.field}: ${this.rule}`
  }
}
