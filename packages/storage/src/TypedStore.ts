/**
 * A schema-typed view of one key prefix of the `StateStore`: values are
 * stored as the JSON form of a `Schema` (`Schema.toCodecJson`), so that
 * `Uint8Array`s, dates and the like survive the round trip.
 *
 * @since 0.1.0
 */
import { Effect, Option, Schema } from "effect"
import type { DeleteOptions, Entry, ListOptions } from "./StateStore.ts"
import { StateStore } from "./StateStore.ts"
import { StoreError } from "./StoreError.ts"
import type { VersionConflict } from "./StoreError.ts"

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
}

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
  readonly list: (options?: ListOptions) => Effect.Effect<ReadonlyArray<TypedEntry<A>>, StoreError>
  readonly put: (key: string, value: A) => Effect.Effect<TypedEntry<A>, StoreError | Schema.SchemaError>
  readonly compareAndSet: (
    key: string,
    expectedVersion: number,
    value: A
  ) => Effect.Effect<TypedEntry<A>, StoreError | VersionConflict | Schema.SchemaError>
  readonly delete: (key: string, options?: DeleteOptions) => Effect.Effect<boolean, StoreError | VersionConflict>
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

    const decode = (operation: string, entry: Entry): Effect.Effect<TypedEntry<A>, StoreError> => {
      const corrupt = (detail: string, cause: unknown) =>
        new StoreError({
          backend: "TypedStore",
          operation,
          key: entry.key,
          message: `TypedStore ${JSON.stringify(prefix)}: ${operation} of key ${JSON.stringify(entry.key)} failed: ` +
            `the stored value ${detail}`,
          cause
        })
      return Effect.try({
        try: () => decoder.decode(entry.value),
        catch: (cause) => corrupt("is not UTF-8 text", cause)
      }).pipe(
        Effect.flatMap(decodeJson),
        Effect.mapError((error) =>
          error instanceof StoreError ? error : corrupt(`does not match the schema: ${error.message}`, error)
        ),
        Effect.map((value) => ({
          key: entry.key.slice(prefix.length),
          value,
          version: entry.version,
          revision: entry.revision
        }))
      )
    }

    const written = (key: string, value: A) => (entry: Entry): TypedEntry<A> => ({
      key,
      value,
      version: entry.version,
      revision: entry.revision
    })

    return {
      prefix,
      get: Effect.fn("TypedStore.get")(function*(key: string) {
        const entry = yield* store.get(prefix + key)
        if (Option.isNone(entry)) return Option.none()
        return Option.some(yield* decode("get", entry.value))
      }),
      list: Effect.fn("TypedStore.list")(function*(options?: ListOptions) {
        const entries = yield* store.list(prefix, {
          ...options,
          ...(options?.after === undefined ? {} : { after: prefix + options.after })
        })
        return yield* Effect.forEach(entries, (entry) => decode("list", entry))
      }),
      put: Effect.fn("TypedStore.put")(function*(key: string, value: A) {
        const bytes = yield* encode(value)
        return written(key, value)(yield* store.put(prefix + key, bytes))
      }),
      compareAndSet: Effect.fn("TypedStore.compareAndSet")(function*(key: string, expectedVersion: number, value: A) {
        const bytes = yield* encode(value)
        return written(key, value)(yield* store.compareAndSet(prefix + key, expectedVersion, bytes))
      }),
      delete: (key: string, options?: DeleteOptions) => store.delete(prefix + key, options)
    }
  })
