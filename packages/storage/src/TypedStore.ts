/**
 * A schema-typed view of one key prefix of the `StateStore`: values are
 * stored as the JSON form of a `Schema` (`Schema.toCodecJson`), so that
 * `Uint8Array`s, dates and the like survive the round trip, and stay
 * readable with `berth state`.
 *
 * @since 0.1.0
 */
import { Effect, Option, Schedule, Schema, Stream } from "effect"
import type { DeleteOptions, Entry, ListOptions, PutOptions, TxnOp, WatchOptions } from "./StateStore.ts"
import { StateStore } from "./StateStore.ts"
import { StoreError } from "./StoreError.ts"
import type { LeaseExpired, RevisionCompacted, VersionConflict } from "./StoreError.ts"
import * as Txn from "./Txn.ts"

/**
 * A decoded entry; `key` is relative to the store's prefix.
 *
 * @since 0.1.0
 * @category models
 */
export interface TypedEntry<A> {
  readonly key: string
  readonly value: A
  readonly version: number
  readonly revision: number
  readonly lease?: string | undefined
}

/**
 * A decoded change; `key` is relative to the store's prefix.
 *
 * @since 0.1.0
 * @category models
 */
export type TypedWatchEvent<A> =
  | { readonly _tag: "Put"; readonly entry: TypedEntry<A> }
  | { readonly _tag: "Delete"; readonly key: string; readonly revision: number }

/**
 * The operations of `StateStore`, on keys relative to `prefix` and values of
 * type `A`. A value that does not encode with the schema fails with
 * `Schema.SchemaError` and writes nothing; a stored value that does not decode
 * fails with a `StoreError` naming the key.
 *
 * @since 0.1.0
 * @category models
 */
export interface TypedStore<A> {
  readonly prefix: string
  readonly get: (key: string) => Effect.Effect<Option.Option<TypedEntry<A>>, StoreError>
  /** The entries at `keys`, in the same order, read at one revision. */
  readonly getMany: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Option.Option<TypedEntry<A>>>, StoreError>
  readonly list: (options?: ListOptions) => Effect.Effect<ReadonlyArray<TypedEntry<A>>, StoreError>
  /** Every entry, read page by page. */
  readonly listAll: Stream.Stream<TypedEntry<A>, StoreError>
  readonly put: (
    key: string,
    value: A,
    options?: PutOptions
  ) => Effect.Effect<TypedEntry<A>, StoreError | LeaseExpired | Schema.SchemaError>
  readonly compareAndSet: (
    key: string,
    expectedVersion: number,
    value: A,
    options?: PutOptions
  ) => Effect.Effect<TypedEntry<A>, StoreError | VersionConflict | LeaseExpired | Schema.SchemaError>
  /**
   * Read-modify-write: applies `f` to the current value (None if absent) and
   * writes the result with compare-and-set, retrying from a fresh read when
   * another writer got there first. `f` may run more than once, so keep it pure.
   */
  readonly modify: (
    key: string,
    f: (current: Option.Option<A>) => A
  ) => Effect.Effect<TypedEntry<A>, StoreError | LeaseExpired | Schema.SchemaError>
  readonly delete: (key: string, options?: DeleteOptions) => Effect.Effect<boolean, StoreError | VersionConflict>
  /** The changes under the prefix, decoded; see `StateStore.watch`. */
  readonly watch: (options?: WatchOptions) => Stream.Stream<TypedWatchEvent<A>, StoreError | RevisionCompacted>
  /** A transaction put of an encoded value, for `StateStore.transaction` (possibly mixed with other stores' ops). */
  readonly putOp: (
    key: string,
    value: A,
    options?: { readonly expectedVersion?: number | undefined } & PutOptions
  ) => Effect.Effect<TxnOp, Schema.SchemaError>
  /** A transaction delete, for `StateStore.transaction`. */
  readonly deleteOp: (key: string, options?: { readonly expectedVersion?: number | undefined }) => TxnOp
  /** A transaction guard, for `StateStore.transaction`. */
  readonly checkOp: (key: string, expectedVersion: number) => TxnOp
}

/**
 * Makes a typed view of the keys under `prefix` (include the separator, e.g. `"tasks/"`).
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { StateStore, TypedStore } from "@berth/storage"
 *
 * const Task = Schema.Struct({ name: Schema.String, state: Schema.Literals(["STAGING", "RUNNING"]) })
 *
 * const program = Effect.gen(function*() {
 *   const tasks = yield* TypedStore.make(Task, "tasks/")
 *   const created = yield* tasks.compareAndSet("t1", 0, { name: "web", state: "STAGING" })
 *   yield* tasks.compareAndSet("t1", created.version, { name: "web", state: "RUNNING" })
 *   return yield* tasks.list()
 * }).pipe(Effect.provide(StateStore.layerMemory))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <A, I>(
  schema: Schema.Codec<A, I>,
  prefix: string
): Effect.Effect<TypedStore<A>, never, StateStore> =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const json = Schema.fromJsonString(Schema.toCodecJson(schema))
    const encodeJson = Schema.encodeEffect(json)
    const decodeJson = Schema.decodeUnknownEffect(json)
    const encoder = new TextEncoder()
    const decoder = new TextDecoder("utf-8", { fatal: true })

    const encode = (value: A) => Effect.map(encodeJson(value), (text) => encoder.encode(text))

    const decodeValue = (operation: string, key: string, bytes: Uint8Array): Effect.Effect<A, StoreError> => {
      const corrupt = (detail: string, cause: unknown) =>
        new StoreError({
          backend: "TypedStore",
          operation,
          key,
          message: `TypedStore ${JSON.stringify(prefix)}: ${operation} of key ${JSON.stringify(key)} failed: ` +
            `the stored value ${detail}`,
          cause
        })
      return Effect.try({
        try: () => decoder.decode(bytes),
        catch: (cause) => corrupt("is not UTF-8 text", cause)
      }).pipe(
        Effect.flatMap(decodeJson),
        Effect.mapError((error) =>
          error instanceof StoreError ? error : corrupt(`does not match the schema: ${error.message}`, error)
        )
      )
    }

    const decode = (operation: string, entry: Entry): Effect.Effect<TypedEntry<A>, StoreError> =>
      Effect.map(decodeValue(operation, entry.key, entry.value), (value) => ({
        key: entry.key.slice(prefix.length),
        value,
        version: entry.version,
        revision: entry.revision,
        lease: entry.lease
      }))

    const written = (key: string, value: A) => (entry: Entry): TypedEntry<A> => ({
      key,
      value,
      version: entry.version,
      revision: entry.revision,
      lease: entry.lease
    })

    const get = Effect.fn("TypedStore.get")(function*(key: string) {
      const entry = yield* store.get(prefix + key)
      if (Option.isNone(entry)) return Option.none()
      return Option.some(yield* decode("get", entry.value))
    })

    const compareAndSet = Effect.fn("TypedStore.compareAndSet")(
      function*(key: string, expectedVersion: number, value: A, options?: PutOptions) {
        const bytes = yield* encode(value)
        return written(key, value)(yield* store.compareAndSet(prefix + key, expectedVersion, bytes, options))
      }
    )

    return {
      prefix,
      get,
      getMany: Effect.fn("TypedStore.getMany")(function*(keys: ReadonlyArray<string>) {
        const entries = yield* store.getMany(keys.map((key) => prefix + key))
        return yield* Effect.forEach(entries, (entry) =>
          Option.isNone(entry) ? Effect.succeed(Option.none()) : Effect.map(decode("getMany", entry.value), Option.some))
      }),
      list: Effect.fn("TypedStore.list")(function*(options?: ListOptions) {
        const entries = yield* store.list(prefix, {
          ...options,
          ...(options?.after === undefined ? {} : { after: prefix + options.after })
        })
        return yield* Effect.forEach(entries, (entry) => decode("list", entry))
      }),
      listAll: Stream.paginate(Option.none<string>(), (after) =>
        Effect.gen(function*() {
          const page = yield* store.list(prefix, { limit: 500, after: Option.getOrUndefined(after) })
          const decoded = yield* Effect.forEach(page, (entry) => decode("list", entry))
          return [decoded, page.length < 500 ? Option.none() : Option.some(Option.some(page[page.length - 1]!.key))] as const
        })),
      put: Effect.fn("TypedStore.put")(function*(key: string, value: A, options?: PutOptions) {
        const bytes = yield* encode(value)
        return written(key, value)(yield* store.put(prefix + key, bytes, options))
      }),
      compareAndSet,
      modify: (key: string, f: (current: Option.Option<A>) => A) =>
        Effect.gen(function*() {
          const current = yield* get(key)
          const next = f(Option.map(current, (entry) => entry.value))
          return yield* compareAndSet(key, Option.match(current, { onNone: () => 0, onSome: (e) => e.version }), next)
        }).pipe(
          // A conflict means another writer succeeded, so retrying at once always makes progress; no delay
          // also means no sleeping on the Clock, which would stall tests running on a TestClock.
          Effect.retry({ while: (error) => error._tag === "VersionConflict", schedule: Schedule.forever }),
          Effect.catchTag("VersionConflict", (error) => Effect.die(error)),
          Effect.withSpan("TypedStore.modify")
        ),
      delete: (key: string, options?: DeleteOptions) => store.delete(prefix + key, options),
      watch: (options?: WatchOptions) =>
        Stream.mapEffect(store.watch(prefix, options), (event): Effect.Effect<TypedWatchEvent<A>, StoreError> =>
          event._tag === "Delete"
            ? Effect.succeed({ _tag: "Delete", key: event.key.slice(prefix.length), revision: event.revision })
            : Effect.map(decode("watch", event.entry), (entry) => ({ _tag: "Put", entry }))),
      putOp: (key, value, options) =>
        Effect.map(encode(value), (bytes) => Txn.put(prefix + key, bytes, options)),
      deleteOp: (key, options) => Txn.delete(prefix + key, options),
      checkOp: (key, expectedVersion) => Txn.check(prefix + key, expectedVersion)
    }
  })
