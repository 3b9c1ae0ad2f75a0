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
