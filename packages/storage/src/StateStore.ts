/**
 * A versioned key-value store: every key carries a per-key `version` for
 * compare-and-set, every write gets a store-wide `revision`.
 *
 * @since 0.1.0
 */
import type { Duration, Option } from "effect"
import { Context, Effect, Layer } from "effect"
import * as memory from "./internal/memory.ts"
import * as sqlite from "./internal/sqlite.ts"
import { InvalidStoreUrl } from "./StoreError.ts"
import type { StoreError, VersionConflict } from "./StoreError.ts"

/**
 * One stored key. `version` counts the writes to this key since it was last
 * created (1 for a new key); `revision` is the store-wide modification
 * revision of the write that produced this entry, increasing across all keys.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly key: string
  readonly value: Uint8Array
  readonly version: number
  readonly revision: number
}

/**
 * Paging for `list`: at most `limit` entries, starting after the key `after`
 * (exclusive), so the last key of a page is the cursor for the next one.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListOptions {
  readonly limit?: number | undefined
  readonly after?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DeleteOptions {
  /** Delete only if the key is at this version (0: only if absent, which deletes nothing). */
  readonly expectedVersion?: number | undefined
}

/**
 * The state store service.
 *
 * Keys are non-empty, well-formed Unicode strings without NUL; `list` orders
 * them by code point (the byte order of their UTF-8 form) in every backend.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const program = Effect.gen(function*() {
 *   const store = yield* StateStore.StateStore
 *   const created = yield* store.compareAndSet("tasks/t1", 0, new TextEncoder().encode("staging"))
 *   yield* store.compareAndSet("tasks/t1", created.version, new TextEncoder().encode("running"))
 *   return yield* store.list("tasks/", { limit: 100 })
 * }).pipe(Effect.provide(StateStore.layerSqlite({ path: ".berth/state.db" })))
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class StateStore extends Context.Service<StateStore, {
  /** The entry at `key`, if any. */
  readonly get: (key: string) => Effect.Effect<Option.Option<Entry>, StoreError>
  /** Entries whose key starts with `prefix`, sorted by key; see `ListOptions` for paging. */
  readonly list: (prefix: string, options?: ListOptions) => Effect.Effect<ReadonlyArray<Entry>, StoreError>
  /** Writes `value` whatever the current version is. */
  readonly put: (key: string, value: Uint8Array) => Effect.Effect<Entry, StoreError>
  /** Writes `value` only if the key is at `expectedVersion` (0: only if absent). */
  readonly compareAndSet: (
    key: string,
    expectedVersion: number,
    value: Uint8Array
  ) => Effect.Effect<Entry, StoreError | VersionConflict>
  /** Removes the key; succeeds with whether it existed. */
  readonly delete: (key: string, options?: DeleteOptions) => Effect.Effect<boolean, StoreError | VersionConflict>
}>()("@berth/storage/StateStore") {}

/**
 * A store held in memory, empty each time the layer is built. For tests and
 * single-process tools.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const program = StateStore.StateStore.use((store) => store.put("k", new Uint8Array([1])))
 * Effect.runPromise(program.pipe(Effect.provide(StateStore.layerMemory)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<StateStore> = Layer.effect(StateStore, memory.make)

/**
 * @since 0.1.0
 * @category models
 */
export interface SqliteOptions {
  /** The database file; its parent directory is created if missing. */
  readonly path: string
  /**
   * How long a write waits for another connection's write lock before failing
   * with a `StoreError` (SQLite's busy timeout). Defaults to 5 seconds.
   */
  readonly busyTimeout?: Duration.Input | undefined
}

/**
 * A store in one SQLite file (WAL journal, `synchronous=FULL`). Every write is
 * its own `BEGIN IMMEDIATE` transaction, so several processes may share the
 * file and compare-and-set stays correct across them. The database is closed
 * when the layer's scope closes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const program = StateStore.StateStore.use((store) => store.get("framework/id"))
 * Effect.runPromise(program.pipe(Effect.provide(StateStore.layerSqlite({ path: ".berth/state.db" }))))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerSqlite = (options: SqliteOptions): Layer.Layer<StateStore, StoreError> =>
  Layer.effect(StateStore, sqlite.make(options))

/**
 * Chooses a backend from a URL, as found in a flag or an environment variable:
 * `memory:` or `sqlite:<path>` (`sqlite:.berth/state.db`, `sqlite:/var/lib/berth/state.db`).
 * Anything else fails with `InvalidStoreUrl`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const layer = StateStore.layerFromUrl(process.env.BERTH_STORE ?? "sqlite:.berth/state.db")
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromUrl = (url: string): Layer.Layer<StateStore, StoreError | InvalidStoreUrl> =>
  Layer.unwrap(Effect.suspend(() => {
    if (url === "memory:") return Effect.succeed(layerMemory)
    if (url.startsWith("sqlite:")) {
      const path = url.slice("sqlite:".length)
      if (path.length > 0 && !path.startsWith("//")) return Effect.succeed(layerSqlite({ path }))
    }
    return Effect.fail(
      new InvalidStoreUrl({
        url,
        message: `invalid store URL ${JSON.stringify(url)}: expected "memory:" or "sqlite:<path>" ` +
          `(a file path right after the colon, e.g. "sqlite:.berth/state.db" or "sqlite:/var/lib/berth/state.db"; ` +
          `the "sqlite://" form is not accepted because it is ambiguous)`
      })
    )
  }))
