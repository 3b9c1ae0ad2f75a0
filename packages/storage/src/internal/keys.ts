import { Effect } from "effect"
import { StoreError } from "../StoreError.ts"
import type { ListOptions } from "../StateStore.ts"

// In unicode mode a surrogate *pair* is one code point, so this matches lone surrogates only.
const loneSurrogate = /[\uD800-\uDFFF]/u

const keyProblem = (key: unknown, what: string, allowEmpty: boolean): string | undefined => {
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
    checkValue: (operation, key, value) =>
      check(operation, key, value instanceof Uint8Array ? undefined : "the value must be a Uint8Array"),
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
      )
  }
}
