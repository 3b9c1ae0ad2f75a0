/**
 * A framework's identity in its store: the framework id the master assigned
 * at its first registration. Losing it means registering as a new framework
 * and orphaning every running task, so it is written durably before the
 * framework acts on it, and never silently replaced.
 *
 * Keys (relative to the framework's namespace): `framework-id`.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Option, Schema } from "effect"
import { StateStore } from "./StateStore.ts"
import type { StoreError } from "./StoreError.ts"
import * as TypedStore from "./TypedStore.ts"

/**
 * The store already holds another framework id: this store belongs to another
 * framework (or the master assigned a new id, which a failing-over framework
 * must never accept). Nothing was changed.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { FrameworkStore } from "@berth/storage"
 *
 * const remember = (id: string) =>
 *   Effect.flatMap(FrameworkStore.make, (fw) => fw.storeFrameworkId(id)).pipe(
 *     Effect.catchTag("FrameworkIdMismatch", (e) => Effect.die(e.message))
 *   )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class FrameworkIdMismatch extends Schema.TaggedError<FrameworkIdMismatch>()("FrameworkIdMismatch", {
  stored: Schema.String,
  offered: Schema.String
}) {
  override get message(): string {
    return `the store already holds framework id ${JSON.stringify(this.stored)}, refusing to replace it with ` +
      `${JSON.stringify(this.offered)} (clear it with clearFrameworkId only after the old framework was torn down)`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export const FrameworkRecord = Schema.Struct({
  frameworkId: Schema.String,
  /** When the id was first stored (ms since the epoch, from the `Clock`). */
  storedAt: Schema.Number
})

/**
 * @since 0.1.0
 * @category models
 */
export type FrameworkRecord = typeof FrameworkRecord.Type

/**
 * @since 0.1.0
 * @category models
 */
export interface FrameworkStore {
  readonly get: Effect.Effect<Option.Option<FrameworkRecord>, StoreError>
  readonly frameworkId: Effect.Effect<Option.Option<string>, StoreError>
  /** Stores the id; storing the same id again succeeds, another one fails with `FrameworkIdMismatch`. */
  readonly storeFrameworkId: (frameworkId: string) => Effect.Effect<FrameworkRecord, StoreError | FrameworkIdMismatch>
  /** Forgets the id (after a teardown), so that the next registration starts a new framework. */
  readonly clearFrameworkId: Effect.Effect<boolean, StoreError>
}

const KEY = "framework-id"

/**
 * The framework store of the current `StateStore` (namespace it per framework).
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { FrameworkStore, StateStore } from "@berth/storage"
 *
 * const subscribeAs = Effect.gen(function*() {
 *   const fw = yield* FrameworkStore.make
 *   return Option.getOrUndefined(yield* fw.frameworkId) // undefined: first registration
 * }).pipe(Effect.provide(StateStore.layerNamespace("frameworks/hello/")))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<FrameworkStore, never, StateStore> = Effect.gen(function*() {
  const records = yield* TypedStore.make(FrameworkRecord, "")
  const get = Effect.map(records.get(KEY), Option.map((entry) => entry.value))
  return {
    get,
    frameworkId: Effect.map(get, Option.map((record) => record.frameworkId)),
    storeFrameworkId: (frameworkId: string) =>
      Effect.gen(function*() {
        const record = { frameworkId, storedAt: yield* Clock.currentTimeMillis }
        // Create-only: of two racing writers one wins, and the other then sees the winner's id.
        const created = yield* records.compareAndSet(KEY, 0, record).pipe(
          Effect.map((entry) => Option.some(entry.value)),
          Effect.catchTag("VersionConflict", () => Effect.succeedNone),
          Effect.catchTags({ SchemaError: (e) => Effect.die(e), LeaseExpired: (e) => Effect.die(e) })
        )
        if (Option.isSome(created)) return created.value
        const stored = yield* get
        if (Option.isSome(stored) && stored.value.frameworkId === frameworkId) return stored.value
        if (Option.isNone(stored)) return yield* Effect.die(new Error("framework-id vanished during storeFrameworkId"))
        return yield* new FrameworkIdMismatch({ stored: stored.value.frameworkId, offered: frameworkId })
      }).pipe(Effect.withSpan("FrameworkStore.storeFrameworkId")),
    clearFrameworkId: Effect.catchTag(records.delete(KEY), "VersionConflict", (e) => Effect.die(e))
  } satisfies FrameworkStore
})
