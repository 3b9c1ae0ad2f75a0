import { Effect, Option, Stream } from "effect"
import type { Entry, StateStore, TxnOp, WatchEvent } from "../StateStore.ts"
import { VersionConflict } from "../StoreError.ts"
import type { StoreError } from "../StoreError.ts"
import { keyProblem, makeFailures } from "./keys.ts"

const failures = makeFailures("namespace", "namespaced store")

export const checkPrefix = (prefix: string): Effect.Effect<void, StoreError> => {
  const problem = keyProblem(prefix, "a namespace prefix", false)
  return problem === undefined ? Effect.void : Effect.fail(failures.error("namespace", undefined, problem))
}

export const make = (store: StateStore["Service"], prefix: string): StateStore["Service"] => {
  const strip = (key: string) => key.slice(prefix.length)
  const stripEntry = (entry: Entry): Entry => ({ ...entry, key: strip(entry.key) })
  // The relative key must be a key on its own: "" would otherwise name the prefix itself.
  const full = (operation: string, key: string) =>
    typeof key === "string" && key.length > 0
      ? Effect.succeed(prefix + key)
      : Effect.fail(failures.error(operation, typeof key === "string" ? key : undefined, "a key must be a non-empty string"))
  const relativeConflict = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.mapError(effect, (error) =>
      error instanceof VersionConflict && error.key.startsWith(prefix)
        ? new VersionConflict({ key: strip(error.key), expected: error.expected, actual: error.actual }) as E
        : error)

  return {
    get: (key) => Effect.flatMap(full("get", key), (k) => Effect.map(store.get(k), Option.map(stripEntry))),
    getMany: (keys) =>
      Effect.flatMap(
        Effect.forEach(keys, (key) => full("getMany", key)),
        (full) => Effect.map(store.getMany(full), (entries) => entries.map(Option.map(stripEntry)))
      ),
    list: (listPrefix, options) =>
      Effect.map(
        store.list(prefix + listPrefix, {
          ...options,
          after: options?.after === undefined ? undefined : prefix + options.after
        }),
        (entries) => entries.map(stripEntry)
      ),
    put: (key, value, options) => Effect.flatMap(full("put", key), (k) => Effect.map(store.put(k, value, options), stripEntry)),
    compareAndSet: (key, expectedVersion, value, options) =>
      Effect.flatMap(
        full("compareAndSet", key),
        (k) => relativeConflict(Effect.map(store.compareAndSet(k, expectedVersion, value, options), stripEntry))
      ),
    delete: (key, options) => Effect.flatMap(full("delete", key), (k) => relativeConflict(store.delete(k, options))),
    transaction: (ops) =>
      Effect.flatMap(
        Effect.forEach(ops, (op) => Effect.map(full("transaction", op?.key), (key): TxnOp => ({ ...op, key }))),
        (prefixed) =>
          relativeConflict(Effect.map(store.transaction(prefixed), (result) => ({
            revision: result.revision,
            entries: result.entries.map(stripEntry),
            deleted: result.deleted.map(strip)
          })))
      ),
    watch: (watchPrefix, options) =>
      Stream.map(store.watch(prefix + watchPrefix, options), (event): WatchEvent =>
        event._tag === "Put"
          ? { _tag: "Put", entry: stripEntry(event.entry) }
          : { _tag: "Delete", key: strip(event.key), revision: event.revision }),
    revision: store.revision,
    grantLease: store.grantLease,
    keepAlive: store.keepAlive,
    revokeLease: store.revokeLease
  }
}
