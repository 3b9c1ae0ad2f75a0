/**
 * The errors of the storage domain.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * A storage operation could not be carried out: an invalid argument, or a
 * backend failure (an unreadable or locked SQLite file, a full disk, ...).
 * `backend` names the component that failed (`memory`, `sqlite`, `TypedStore`)
 * and `message` names the key, the path where there is one, and the rule or
 * cause.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const program = Effect.gen(function*() {
 *   const store = yield* StateStore.StateStore
 *   return yield* store.get("")
 * }).pipe(Effect.catchTag("StoreError", (e) => Effect.succeed(e.message)))
 * // => 'memory store: get of key "" failed: a key must be a non-empty string'
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  backend: Schema.String,
  operation: Schema.String,
  key: Schema.optional(Schema.String),
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

/**
 * A conditional write (`compareAndSet`, or `delete` with `expectedVersion`)
 * found the key at another version than expected, so it changed nothing.
 * `expected` and `actual` use 0 for "absent".
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const claim = Effect.gen(function*() {
 *   const store = yield* StateStore.StateStore
 *   return yield* store.compareAndSet("leader", 0, new TextEncoder().encode("me"))
 * }).pipe(Effect.catchTag("VersionConflict", (e) => Effect.succeed(`taken (version ${e.actual})`)))
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class VersionConflict extends Schema.TaggedError<VersionConflict>()("VersionConflict", {
  key: Schema.String,
  expected: Schema.Number,
  actual: Schema.Number
}) {
  override get message(): string {
    return `version conflict on key ${JSON.stringify(this.key)}: expected ${describeVersion(this.expected)}, ` +
      `found ${describeVersion(this.actual)} (a conditional write applies only when the key's current version ` +
      `equals the expected version; 0 means the key must not exist)`
  }
}

const describeVersion = (version: number): string => version === 0 ? "absent (version 0)" : `version ${version}`

/**
 * `StateStore.layerFromUrl` was given a URL it does not understand.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidStoreUrl extends Schema.TaggedError<InvalidStoreUrl>()("InvalidStoreUrl", {
  url: Schema.String,
  message: Schema.String
}) {}
