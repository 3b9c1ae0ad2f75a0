/**
 * The errors of the storage domain.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * A storage operation could not be carried out: an invalid argument, or a
 * backend failure (an unreadable or locked SQLite file, an unreachable etcd,
 * a full disk, ...). `backend` names the component that failed (`memory`,
 * `sqlite`, `etcd`, `TypedStore`, ...) and `message` names the key, the path
 * or endpoints where there are some, and the rule or cause.
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
 * A conditional write (`compareAndSet`, `delete` with `expectedVersion`, or a
 * transaction guard) found the key at another version than expected, so it
 * changed nothing. `expected` and `actual` use 0 for "absent".
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
 * A lease was used (to bind a key, or to be kept alive) after it expired or
 * was revoked, or was never granted by this store. Nothing was written.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const refresh = (lease: StateStore.Lease) =>
 *   StateStore.StateStore.use((store) => store.keepAlive(lease)).pipe(
 *     Effect.catchTag("LeaseExpired", () => Effect.logWarning(`lease ${lease.id} is gone; stepping down`))
 *   )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseExpired extends Schema.TaggedError<LeaseExpired>()("LeaseExpired", {
  lease: Schema.String,
  operation: Schema.String
}) {
  override get message(): string {
    return `${this.operation} failed: lease ${this.lease} has expired, was revoked, or was never granted by this ` +
      `store (keys bound to a lease are deleted when it ends; grant a new lease)`
  }
}

/**
 * A watch asked for changes from a revision whose history the store no
 * longer keeps (SQLite and memory keep a bounded change log; etcd forgets
 * history when it is compacted). Re-read the current state with `list` and
 * watch again from `revision + 1`.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const events = (from: number) =>
 *   Stream.unwrap(StateStore.StateStore.use((store) =>
 *     Effect.succeed(store.watch("tasks/", { fromRevision: from }))
 *   )).pipe(Stream.catchTag("RevisionCompacted", (e) => Stream.die(e)))
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class RevisionCompacted extends Schema.TaggedError<RevisionCompacted>()("RevisionCompacted", {
  requested: Schema.Number,
  compactRevision: Schema.Number
}) {
  override get message(): string {
    return `watch from revision ${this.requested} is not possible: the change history up to revision ` +
      `${this.compactRevision} has been compacted; list the current state and watch from its revision + 1`
  }
}

/**
 * `StateStore.layerFromUrl` (or `parseUrl`) was given a URL it does not
 * understand. The message names the rule that failed and the accepted forms.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const check = StateStore.parseUrl("postgres://db").pipe(
 *   Effect.catchTag("InvalidStoreUrl", (e) => Effect.logError(e.message))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidStoreUrl extends Schema.TaggedError<InvalidStoreUrl>()("InvalidStoreUrl", {
  url: Schema.String,
  message: Schema.String
}) {}
