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

/** A fault the cluster's backend cannot inject (a SIGSTOP needs a process of its own). */
export class UnsupportedFault extends Schema.TaggedError<UnsupportedFault>()("UnsupportedFault", {
  fault: Schema.String,
  backend: Schema.String
}) {
  override get message(): string {
    return `${this.fault} is not supported by the ${this.backend} backend; use TestCluster.make({ backend: "processes" })`
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
