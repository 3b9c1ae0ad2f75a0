/**
 * A versioned key-value store: every key carries a per-key `version` for
 * compare-and-set, every change gets a store-wide `revision`. On top of that:
 * multi-key transactions, a resumable watch, leases that delete their keys
 * when they expire, and (in `Election`, `Mutex`) leader election and locks.
 *
 * Three backends give the same behaviour (one conformance suite proves it):
 * `layerMemory` for tests, `layerSqlite` (the embedded default, one file,
 * several processes) and `layerEtcd` (a distributed cluster).
 *
 * @since 0.1.0
 */
import type { Duration, Option, Redacted, Schedule, Scope, Stream } from "effect"
import { Context, Effect, Layer } from "effect"
import * as etcd from "./internal/etcd.ts"
import * as local from "./internal/local.ts"
import * as namespace from "./internal/namespace.ts"
import * as paging from "./internal/paging.ts"
import * as url from "./internal/url.ts"
import type { InvalidStoreUrl, LeaseExpired, RevisionCompacted, StoreError, VersionConflict } from "./StoreError.ts"

/**
 * One stored key. `version` counts the writes to this key since it was last
 * created (1 for a new key); `revision` is the store-wide revision of the
 * change that produced this entry, increasing across all keys. `lease` is the
 * id of the lease the key is bound to, if any.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly key: string
  readonly value: Uint8Array
  readonly version: number
  readonly revision: number
  readonly lease?: string | undefined
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
 * @since 0.1.0
 * @category models
 */
export interface PutOptions {
  /**
   * Binds the key to a lease: the key is deleted when the lease expires or is
   * revoked. A write without `lease` unbinds the key from any lease it had.
   */
  readonly lease?: Lease | undefined
}

/**
 * A lease granted by the store. Keys written with it are deleted when it
 * expires (no keep-alive for `ttlMillis`) or is revoked. `ttlMillis` is the
 * TTL the backend granted: etcd rounds up to whole seconds and to its minimum
 * (2 s with default settings).
 *
 * @since 0.1.0
 * @category models
 */
export interface Lease {
  readonly id: string
  readonly ttlMillis: number
}

/**
 * One operation of a `transaction`; build them with the `Txn` module.
 * `expectedVersion` on a put or delete is a guard like a `Check`.
 *
 * @since 0.1.0
 * @category models
 */
export type TxnOp =
  | {
    readonly _tag: "Put"
    readonly key: string
    readonly value: Uint8Array
    readonly expectedVersion?: number | undefined
    readonly lease?: Lease | undefined
  }
  | { readonly _tag: "Delete"; readonly key: string; readonly expectedVersion?: number | undefined }
  | { readonly _tag: "Check"; readonly key: string; readonly expectedVersion: number }

/**
 * What a committed transaction did. Every change in it carries the same
 * `revision`. `entries` are the written entries in the order of the puts;
 * `deleted` the keys that existed and were deleted.
 *
 * @since 0.1.0
 * @category models
 */
export interface TxnResult {
  readonly revision: number
  readonly entries: ReadonlyArray<Entry>
  readonly deleted: ReadonlyArray<string>
}

/**
 * A change seen by `watch`. Changes arrive in revision order; the changes of
 * one transaction share a revision and arrive in the order of its operations.
 * Keys deleted because their lease ended arrive as `Delete`s.
 *
 * @since 0.1.0
 * @category models
 */
export type WatchEvent =
  | { readonly _tag: "Put"; readonly entry: Entry }
  | { readonly _tag: "Delete"; readonly key: string; readonly revision: number }

/**
 * @since 0.1.0
 * @category models
 */
export interface WatchOptions {
  /**
   * Deliver every change with a revision >= `fromRevision` first (the history
   * the backend still keeps), then live changes. Without it, only changes
   * made after the watch starts. To resume after a disconnect, pass the last
   * revision you processed + 1.
   */
  readonly fromRevision?: number | undefined
}

/**
 * The state store service. Values are bytes; `TypedStore` adds Schema codecs.
 *
 * Keys are non-empty, well-formed Unicode strings without NUL; `list` orders
 * them by code point (the byte order of their UTF-8 form) in every backend.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore, Txn } from "@berth/storage"
 *
 * const bytes = (s: string) => new TextEncoder().encode(s)
 * const program = Effect.gen(function*() {
 *   const store = yield* StateStore.StateStore
 *   const created = yield* store.compareAndSet("tasks/t1", 0, bytes("staging"))
 *   // all or nothing: the status moves only if t1 is still where we left it
 *   yield* store.transaction([
 *     Txn.put("tasks/t1", bytes("running"), { expectedVersion: created.version }),
 *     Txn.put("events/1", bytes("t1 running"))
 *   ])
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
  /** The entries at `keys`, in the same order, read at one revision. */
  readonly getMany: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Option.Option<Entry>>, StoreError>
  /** Entries whose key starts with `prefix`, sorted by key; see `ListOptions` for paging. */
  readonly list: (prefix: string, options?: ListOptions) => Effect.Effect<ReadonlyArray<Entry>, StoreError>
  /** Writes `value` whatever the current version is. */
  readonly put: (key: string, value: Uint8Array, options?: PutOptions) => Effect.Effect<Entry, StoreError | LeaseExpired>
  /** Writes `value` only if the key is at `expectedVersion` (0: only if absent). */
  readonly compareAndSet: (
    key: string,
    expectedVersion: number,
    value: Uint8Array,
    options?: PutOptions
  ) => Effect.Effect<Entry, StoreError | VersionConflict | LeaseExpired>
  /** Removes the key; succeeds with whether it existed. */
  readonly delete: (key: string, options?: DeleteOptions) => Effect.Effect<boolean, StoreError | VersionConflict>
  /**
   * Applies every operation or none: if any guard (a `Check`, or an
   * `expectedVersion`) fails, nothing changes and the first failing guard is
   * reported as a `VersionConflict`. A key may be written (put or deleted) at
   * most once per transaction.
   */
  readonly transaction: (
    ops: ReadonlyArray<TxnOp>
  ) => Effect.Effect<TxnResult, StoreError | VersionConflict | LeaseExpired>
  /** The changes to keys starting with `prefix`, in revision order; see `WatchOptions` to resume. */
  readonly watch: (prefix: string, options?: WatchOptions) => Stream.Stream<WatchEvent, StoreError | RevisionCompacted>
  /** The store's current revision (that of its latest change). */
  readonly revision: Effect.Effect<number, StoreError>
  /** Grants a lease that lives `ttl` unless kept alive. See also `Lease.make`, which keeps it alive for a scope. */
  readonly grantLease: (ttl: Duration.Input) => Effect.Effect<Lease, StoreError>
  /** Restarts the lease's TTL; fails with `LeaseExpired` if it has already ended. */
  readonly keepAlive: (lease: Lease) => Effect.Effect<void, StoreError | LeaseExpired>
  /** Ends the lease now, deleting its keys. Revoking an ended lease succeeds. */
  readonly revokeLease: (lease: Lease) => Effect.Effect<void, StoreError>
}>()("@berth/storage/StateStore") {}

/**
 * @since 0.1.0
 * @category models
 */
export interface MemoryOptions {
  /** How many revisions of change history `watch` can resume from. Defaults to 10,000. */
  readonly history?: number | undefined
}

/**
 * A store held in memory, empty each time the layer is built. For tests and
 * single-process tools. It is the SQLite engine on a private in-memory
 * database, so it behaves exactly like `layerSqlite`; leases expire on the
 * `Clock`, so `TestClock` drives them.
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
export const layerMemory: Layer.Layer<StateStore> = Layer.effect(StateStore, Effect.orDie(local.makeMemory({})))

/**
 * `layerMemory` with options.
 *
 * @example
 * ```ts
 * import { StateStore } from "@berth/storage"
 *
 * const layer = StateStore.layerMemoryWith({ history: 100 })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemoryWith = (options: MemoryOptions): Layer.Layer<StateStore> =>
  Layer.effect(StateStore, Effect.orDie(local.makeMemory(options)))

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
  /** Open an existing file for reading only (for inspection tools): writes fail, nothing is created. */
  readonly readOnly?: boolean | undefined
  /**
   * How often `watch` looks for changes committed by other processes (its own
   * are seen at once). Real time, not `Clock` time: it paces I/O. Defaults to 20 ms.
   */
  readonly pollInterval?: Duration.Input | undefined
  /** How many revisions of change history `watch` can resume from. Defaults to 10,000. */
  readonly history?: number | undefined
}

/**
 * A store in one SQLite file (WAL journal, `synchronous=FULL`: a write is on
 * disk when it succeeds). Writes issued together are committed together in
 * one transaction (group commit), each with its own revision, and every
 * commit takes SQLite's write lock, so several processes may share the file
 * and compare-and-set stays exact across them. Leases are rows with an expiry
 * time from the `Clock`; expired ones are swept (their keys deleted) by every
 * process that has the file open. The database is closed when the layer's
 * scope closes.
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
  Layer.effect(StateStore, local.makeSqlite(options))

/**
 * @since 0.1.0
 * @category models
 */
export interface EtcdOptions {
  /** Client URLs, e.g. `["https://10.0.0.1:2379", "https://10.0.0.2:2379"]`; `host:port` means `http://host:port`. */
  readonly endpoints: ReadonlyArray<string>
  /**
   * Every key is stored under this etcd key prefix, so that Berth can share an
   * etcd cluster with other users. Defaults to `"berth/"`.
   */
  readonly prefix?: string | undefined
  /** TLS: PEM contents (not paths). `ca` alone verifies the server; add `cert` and `key` for mutual TLS. */
  readonly tls?: {
    readonly ca?: string | Uint8Array | undefined
    readonly cert?: string | Uint8Array | undefined
    readonly key?: string | Uint8Array | undefined
  } | undefined
  /** etcd user authentication. */
  readonly auth?: { readonly username: string; readonly password: Redacted.Redacted<string> } | undefined
  /** Deadline of each request to etcd. Defaults to 5 seconds. */
  readonly requestTimeout?: Duration.Input | undefined
  /**
   * The server's `--max-request-bytes` (etcd's default is 1.5 MiB). Values and
   * transactions larger than about two thirds of it are written in chunks.
   */
  readonly maxRequestBytes?: number | undefined
  /**
   * How reads (and watches) are retried while etcd is unreachable. Defaults to
   * exponential backoff from 50 ms, 4 retries. Writes are not retried: after
   * a lost reply nobody knows whether they applied.
   */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
}

/**
 * A store in an etcd (v3 API) cluster, through the `etcd3` client. Versions,
 * revisions, transactions, watches and leases are etcd's own; values larger
 * than etcd's request limit are written as chunks and committed by one
 * transaction, so a reader never sees a partial value. The client is closed
 * when the layer's scope closes.
 *
 * @example
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const layer = StateStore.layerEtcd({
 *   endpoints: ["https://etcd-0:2379", "https://etcd-1:2379", "https://etcd-2:2379"],
 *   prefix: "berth/prod/",
 *   tls: { ca: caPem },
 *   auth: { username: "berth", password: Redacted.make(process.env.ETCD_PASSWORD!) }
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEtcd = (options: EtcdOptions): Layer.Layer<StateStore, StoreError> =>
  Layer.effect(StateStore, etcd.make(options))

/**
 * Chooses a backend from a URL, as found in a flag or an environment variable:
 *
 * - `memory:`
 * - `sqlite:<path>` (`sqlite:.berth/state.db`, `sqlite:/var/lib/berth/state.db`)
 * - `etcd:<endpoint>[,<endpoint>...][?prefix=<p>&ca=<file>&cert=<file>&key=<file>&username=<u>]`,
 *   e.g. `etcd:127.0.0.1:2379` or `etcd:https://10.0.0.1:2379,https://10.0.0.2:2379?ca=/etc/berth/ca.pem`.
 *   The password is read from the `BERTH_ETCD_PASSWORD` environment variable, never from the URL.
 *
 * Anything else fails with `InvalidStoreUrl`.
 *
 * @example
 * ```ts
 * import { StateStore } from "@berth/storage"
 *
 * const layer = StateStore.layerFromUrl(process.env.BERTH_STORE ?? "sqlite:.berth/state.db")
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromUrl = (
  storeUrl: string,
  options?: { readonly readOnly?: boolean | undefined }
): Layer.Layer<StateStore, StoreError | InvalidStoreUrl> =>
  Layer.unwrap(Effect.map(url.parse(storeUrl), (parsed): Layer.Layer<StateStore, StoreError> => {
    switch (parsed._tag) {
      case "memory":
        return layerMemory
      case "sqlite":
        return layerSqlite({ path: parsed.path, readOnly: options?.readOnly })
      case "etcd":
        return layerEtcd(parsed.options)
    }
  }))

/**
 * Checks a store URL (see `layerFromUrl`) without opening anything, e.g. to
 * validate a flag before starting.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * Effect.runSync(Effect.flip(StateStore.parseUrl("postgres://db"))).message
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const parseUrl = (storeUrl: string): Effect.Effect<void, InvalidStoreUrl> =>
  Effect.suspend(() => {
    const parsed = url.parseSync(storeUrl)
    return parsed._tag === "InvalidStoreUrl" ? Effect.fail(parsed) : Effect.void
  })

/**
 * A view of `store` in which every key is relative to `prefix`: the view
 * reads, lists, watches and writes only keys under `prefix`, and its keys have
 * the prefix stripped. Leases are shared with the underlying store.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const program = Effect.gen(function*() {
 *   const store = yield* StateStore.StateStore
 *   const hello = StateStore.namespaced(store, "frameworks/hello/")
 *   yield* hello.put("framework-id", new TextEncoder().encode("f-1")) // stored at frameworks/hello/framework-id
 * })
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const namespaced = (store: StateStore["Service"], prefix: string): StateStore["Service"] =>
  namespace.make(store, prefix)

/**
 * Replaces the `StateStore` with a namespaced view of itself (see
 * `namespaced`), e.g. to give each framework its own part of one store.
 * A prefix that is not a valid key fails with a `StoreError`.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const layer = StateStore.layerNamespace("frameworks/hello/").pipe(
 *   Layer.provide(StateStore.layerSqlite({ path: ".berth/state.db" }))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNamespace = (prefix: string): Layer.Layer<StateStore, StoreError, StateStore> =>
  Layer.effect(
    StateStore,
    Effect.gen(function*() {
      yield* namespace.checkPrefix(prefix)
      return namespace.make(yield* StateStore, prefix)
    })
  )

/**
 * Every entry under `prefix`, read page by page (`pageSize` entries per
 * request), for prefixes too large to read at once. Pages are read at
 * different revisions: use `watch` to follow changes made meanwhile.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const countTasks = StateStore.listAll("tasks/").pipe(Stream.runCount)
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const listAll = (
  prefix: string,
  options?: { readonly pageSize?: number | undefined }
): Stream.Stream<Entry, StoreError, StateStore> => paging.listAll(prefix, options?.pageSize ?? 500)

/**
 * Builds a `StateStore` service value in the current scope, e.g. to hold two
 * connections to one SQLite file, or to hand a store to code that does not
 * use layers.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StateStore } from "@berth/storage"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const store = yield* StateStore.make(StateStore.layerSqlite({ path: "/tmp/x.db" }))
 *   return yield* store.revision
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <E, R>(
  layer: Layer.Layer<StateStore, E, R>
): Effect.Effect<StateStore["Service"], E, R | Scope.Scope> =>
  Effect.map(Layer.build(layer), (context) => Context.get(context, StateStore))
