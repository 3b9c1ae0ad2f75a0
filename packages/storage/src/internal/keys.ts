import { Duration, Effect } from "effect"
import { StoreError } from "../StoreError.ts"
import type { Lease, ListOptions, TxnOp } from "../StateStore.ts"

/**
 * The largest value any backend accepts. SQLite's own limit is 1 GB and etcd
 * values are chunked, so this is a policy: state stores hold descriptors, and
 * a value this big is almost certainly a bug that would otherwise fill a disk.
 */
export const MAX_VALUE_BYTES = 128 * 1024 * 1024

/** Keys per `getMany`: etcd's default `--max-txn-ops` is 128 and each key is one read. */
export const MAX_GET_MANY = 128

/**
 * Operations per `transaction`. etcd's default `--max-txn-ops` is 128 and the
 * etcd backend spends up to four etcd operations on one put (the write, two
 * deletions of stale chunks, and a read of the new version), so 32 is what
 * every backend can honour.
 */
export const MAX_TXN_OPS = 32

// In unicode mode a surrogate *pair* is one code point, so this matches lone surrogates only.
const loneSurrogate = /[\uD800-\uDFFF]/u

export const keyProblem = (key: unknown, what: string, allowEmpty: boolean): string | undefined => {
  if (typeof key !== "string") return `${what} must be a string`
  if (!allowEmpty && key.length === 0) return `${what} must be a non-empty string`
  // NUL is refused because SQLite's C string functions and most tools truncate at it;
  // lone surrogates because they have no UTF-8 form, so SQLite would silently replace them.
  if (key.includes("\u0000")) return `${what} must not contain NUL characters`
  if (loneSurrogate.test(key)) return `${what} must be well-formed Unicode (no lone surrogates)`
  return undefined
}

/**
 * Compares keys by Unicode code point, which is the order SQLite's BINARY
 * collation gives UTF-8 text. Plain `<` compares UTF-16 code units and would
 * put U+E000..U+FFFF after astral characters, so the backends would disagree.
 */
export const compareKeys = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x !== y) return codePointRank(x) - codePointRank(y)
  }
  return a.length - b.length
}

const codePointRank = (unit: number): number =>
  unit < 0xd800 ? unit : unit < 0xe000 ? unit + 0x2000 : unit - 0x800

/**
 * The smallest string greater than every string that starts with `prefix`,
 * or `undefined` when there is none (empty prefix, or only U+10FFFF).
 * It lets SQLite answer a prefix query with an index range scan.
 */
export const prefixUpperBound = (prefix: string): string | undefined => {
  const codePoints = Array.from(prefix, (c) => c.codePointAt(0)!)
  while (codePoints.length > 0) {
    const last = codePoints.pop()!
    if (last < 0x10ffff) {
      codePoints.push(last + 1 === 0xd800 ? 0xe000 : last + 1)
      return String.fromCodePoint(...codePoints)
    }
  }
  return undefined
}

/** Builds the `StoreError`s of one backend, all phrased the same way. */
export interface Failures {
  readonly backend: string
  readonly error: (operation: string, key: string | undefined, detail: string, cause?: unknown) => StoreError
  readonly checkKey: (operation: string, key: string) => Effect.Effect<void, StoreError>
  readonly checkValue: (operation: string, key: string, value: Uint8Array) => Effect.Effect<void, StoreError>
  readonly checkVersion: (operation: string, key: string, version: number) => Effect.Effect<void, StoreError>
  readonly checkList: (prefix: string, options: ListOptions | undefined) => Effect.Effect<void, StoreError>
  readonly checkPrefix: (operation: string, prefix: string) => Effect.Effect<void, StoreError>
  readonly checkKeys: (operation: string, keys: ReadonlyArray<string>) => Effect.Effect<void, StoreError>
  readonly checkLease: (operation: string, key: string | undefined, lease: Lease | undefined) => Effect.Effect<void, StoreError>
  readonly checkTxn: (ops: ReadonlyArray<TxnOp>) => Effect.Effect<void, StoreError>
  /** The TTL in milliseconds, or a failure if it is not a positive duration. */
  readonly checkTtl: (ttl: Duration.Input) => Effect.Effect<number, StoreError>
  readonly checkRevision: (revision: number | undefined) => Effect.Effect<void, StoreError>
}

export const makeFailures = (backend: string, subject: string): Failures => {
  const error = (operation: string, key: string | undefined, detail: string, cause?: unknown): StoreError => {
    const target = key === undefined ? "" : ` of key ${JSON.stringify(key)}`
    return new StoreError({
      backend,
      operation,
      ...(key === undefined ? {} : { key }),
      message: `${subject}: ${operation}${target} failed: ${detail}`,
      ...(cause === undefined ? {} : { cause })
    })
  }
  const check = (operation: string, key: string | undefined, problem: string | undefined) =>
    problem === undefined ? Effect.void : Effect.fail(error(operation, key, problem))
  return {
    backend,
    error,
    checkKey: (operation, key) =>
      check(operation, typeof key === "string" ? key : undefined, keyProblem(key, "a key", false)),
    checkValue: (operation, key, value) => check(operation, key, valueProblem(value)),
    checkVersion: (operation, key, version) =>
      check(
        operation,
        key,
        Number.isSafeInteger(version) && version >= 0
          ? undefined
          : `expectedVersion must be a non-negative integer (0 = key must not exist), got ${version}`
      ),
    checkList: (prefix, options) =>
      check(
        "list",
        undefined,
        keyProblem(prefix, "the prefix", true) ??
          (options?.after === undefined ? undefined : keyProblem(options.after, "the `after` key", true)) ??
          (options?.limit === undefined || (Number.isSafeInteger(options.limit) && options.limit > 0)
            ? undefined
            : `limit must be a positive integer, got ${options.limit}`)
      ),
    checkPrefix: (operation, prefix) => check(operation, undefined, keyProblem(prefix, "the prefix", true)),
    checkKeys: (operation, keys) =>
      !Array.isArray(keys)
        ? check(operation, undefined, "keys must be an array of strings")
        : keys.length > MAX_GET_MANY
        ? check(operation, undefined, `at most ${MAX_GET_MANY} keys may be read at once, got ${keys.length}`)
        : Effect.forEach(keys, (key) => check(operation, typeof key === "string" ? key : undefined, keyProblem(key, "a key", false)), { discard: true }),
    checkLease: (operation, key, lease) =>
      check(
        operation,
        key,
        lease === undefined || (typeof lease === "object" && lease !== null && typeof lease.id === "string" && lease.id.length > 0)
          ? undefined
          : "lease must be a Lease granted by the store (an object with a non-empty string id)"
      ),
    checkTxn: (ops) => {
      if (!Array.isArray(ops)) return check("transaction", undefined, "the operations must be an array")
      if (ops.length > MAX_TXN_OPS) {
        return check("transaction", undefined, `at most ${MAX_TXN_OPS} operations per transaction, got ${ops.length} ` +
          `(split it, or group related keys into one value)`)
      }
      const written = new Set<string>()
      for (const [index, op] of ops.entries()) {
        const at = `operation ${index}`
        const key = typeof op?.key === "string" ? op.key : undefined
        const problem = op === null || typeof op !== "object" || !["Put", "Delete", "Check"].includes(op._tag)
          ? `${at} must be built with Txn.put, Txn.delete or Txn.check`
          : prefixed(at, keyProblem(op.key, "a key", false)) ??
            prefixed(at, versionProblem(op.expectedVersion, op._tag !== "Check")) ??
            (op._tag === "Put" ? prefixed(at, valueProblem(op.value)) : undefined) ??
            (op._tag !== "Check" && written.has(op.key)
              ? `${at} writes key ${JSON.stringify(op.key)} a second time (a key may be written once per transaction)`
              : undefined)
        if (problem !== undefined) return check("transaction", key, problem)
        if (op._tag !== "Check") written.add(op.key)
        if (op._tag === "Put" && op.lease !== undefined && (typeof op.lease?.id !== "string" || op.lease.id === "")) {
          return check("transaction", key, `${at}: lease must be a Lease granted by the store`)
        }
      }
      return Effect.void
    },
    checkTtl: (ttl) => {
      const duration = Duration.fromInput(ttl)
      if (duration._tag === "None" || !Duration.isFinite(duration.value) || Duration.toMillis(duration.value) < 1) {
        return Effect.fail(error("grantLease", undefined, `the TTL must be a finite duration of at least 1 ms, got ${String(ttl)}`))
      }
      return Effect.succeed(Math.ceil(Duration.toMillis(duration.value)))
    },
    checkRevision: (revision) =>
      check(
        "watch",
        undefined,
        revision === undefined || (Number.isSafeInteger(revision) && revision >= 1)
          ? undefined
          : `fromRevision must be a positive integer, got ${revision}`
      )
  }
}

const prefixed = (at: string, problem: string | undefined): string | undefined =>
  problem === undefined ? undefined : `${at}: ${problem}`

const versionProblem = (version: unknown, optional: boolean): string | undefined =>
  (version === undefined && optional) || (typeof version === "number" && Number.isSafeInteger(version) && version >= 0)
    ? undefined
    : `expectedVersion must be a non-negative integer (0 = key must not exist), got ${String(version)}`

const valueProblem = (value: unknown): string | undefined =>
  !(value instanceof Uint8Array)
    ? "the value must be a Uint8Array"
    : value.byteLength > MAX_VALUE_BYTES
    ? `the value is ${value.byteLength} bytes, over the limit of ${MAX_VALUE_BYTES} bytes (128 MiB) that every ` +
      `backend enforces; store large blobs elsewhere and keep a reference here`
    : undefined
