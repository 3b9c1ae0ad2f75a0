import { Effect, Option, Result } from "effect"
import type { DeleteOptions, Entry, ListOptions, StateStore } from "../StateStore.ts"
import { VersionConflict } from "../StoreError.ts"
import { compareKeys, makeFailures } from "./keys.ts"

// Values are copied in and out so that a caller mutating its buffer can never
// change what the store holds, the same guarantee the SQLite backend gives.
const snapshot = (entry: Entry): Entry => ({ ...entry, value: entry.value.slice() })

export const make: Effect.Effect<StateStore["Service"]> = Effect.sync(() => {
  const failures = makeFailures("memory", "memory store")
  const entries = new Map<string, Entry>()
  let revision = 0

  const versionOf = (key: string): number => entries.get(key)?.version ?? 0

  const write = (key: string, value: Uint8Array): Entry => {
    revision += 1
    const entry: Entry = { key, value: new Uint8Array(value), version: versionOf(key) + 1, revision }
    entries.set(key, entry)
    return snapshot(entry)
  }

  const expect = (key: string, expected: number): Result.Result<void, VersionConflict> => {
    const actual = versionOf(key)
    return actual === expected ? Result.void : Result.fail(new VersionConflict({ key, expected, actual }))
  }

  const get = Effect.fn("StateStore.get")(function*(key: string) {
    yield* failures.checkKey("get", key)
    return Option.map(Option.fromNullishOr(entries.get(key)), snapshot)
  })

  const list = Effect.fn("StateStore.list")(function*(prefix: string, options?: ListOptions) {
    yield* failures.checkList(prefix, options)
    const after = options?.after
    const keys = Array.from(entries.keys())
      .filter((key) => key.startsWith(prefix) && (after === undefined || compareKeys(key, after) > 0))
      .sort(compareKeys)
    const page = options?.limit === undefined ? keys : keys.slice(0, options.limit)
    return page.map((key) => snapshot(entries.get(key)!))
  })

  const put = Effect.fn("StateStore.put")(function*(key: string, value: Uint8Array) {
    yield* failures.checkKey("put", key)
    yield* failures.checkValue("put", key, value)
    return write(key, value)
  })

  const compareAndSet = Effect.fn("StateStore.compareAndSet")(
    function*(key: string, expectedVersion: number, value: Uint8Array) {
      yield* failures.checkKey("compareAndSet", key)
      yield* failures.checkVersion("compareAndSet", key, expectedVersion)
      yield* failures.checkValue("compareAndSet", key, value)
      yield* Effect.fromResult(expect(key, expectedVersion))
      return write(key, value)
    }
  )

  const delete_ = Effect.fn("StateStore.delete")(function*(key: string, options?: DeleteOptions) {
    yield* failures.checkKey("delete", key)
    if (options?.expectedVersion !== undefined) {
      yield* failures.checkVersion("delete", key, options.expectedVersion)
      yield* Effect.fromResult(expect(key, options.expectedVersion))
    }
    if (!entries.has(key)) return false
    // Deletions take a revision too, so that revision order is the order of all changes.
    revision += 1
    entries.delete(key)
    return true
  })

  return { get, list, put, compareAndSet, delete: delete_ }
})
