import * as fs from "node:fs"
import * as nodePath from "node:path"
import { DatabaseSync } from "node:sqlite"
import type { SQLOutputValue, StatementSync } from "node:sqlite"
import { Duration, Effect, Option, Result } from "effect"
import type { Scope } from "effect"
import type { DeleteOptions, Entry, ListOptions, SqliteOptions, StateStore } from "../StateStore.ts"
import type { StoreError } from "../StoreError.ts"
import { VersionConflict } from "../StoreError.ts"
import { compareKeys, makeFailures, prefixUpperBound } from "./keys.ts"

/** Bumped when the table layout changes; a newer file is refused rather than misread. */
const SCHEMA_VERSION = 1

// SQLite primary result codes (the low byte of an extended code).
const SQLITE_CORRUPT = 11
const SQLITE_BUSY = 5
const SQLITE_LOCKED = 6
const SQLITE_CANTOPEN = 14
const SQLITE_FULL = 13
const SQLITE_NOTADB = 26

/** A failure found by our own checks inside a transaction, as opposed to one thrown by SQLite. */
class Refused extends Error {}

const describe = (cause: unknown, busyTimeoutMs: number): string => {
  const text = cause instanceof Error ? cause.message : String(cause)
  if (cause instanceof Refused) return text
  const errcode = typeof cause === "object" && cause !== null && "errcode" in cause ? Number(cause.errcode) : NaN
  switch (errcode & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return `the database is locked by another connection and stayed locked for the whole busy timeout ` +
        `(${busyTimeoutMs} ms) (${text})`
    case SQLITE_NOTADB:
      return `the file is not a SQLite database (${text}); point the store at a new path or at a Berth state file`
    case SQLITE_CORRUPT:
      return `the database file is corrupt (${text}); restore it from a backup`
    case SQLITE_CANTOPEN:
      return `the file cannot be opened (${text}); check that the path is a file and is readable and writable`
    case SQLITE_FULL:
      return `the disk is full (${text})`
    default:
      return text
  }
}

const toEntry = (row: Record<string, SQLOutputValue>): Entry => {
  const { key, revision, value, version } = row
  if (
    typeof key !== "string" || !(value instanceof Uint8Array) ||
    typeof version !== "number" || typeof revision !== "number"
  ) {
    throw new Refused(`the kv row for ${JSON.stringify(key)} does not have the expected column types`)
  }
  return { key, value, version, revision }
}

export const make = (
  options: SqliteOptions
): Effect.Effect<StateStore["Service"], StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const path = options.path
    const busyTimeoutMs = Duration.toMillis(Duration.fromInputUnsafe(options.busyTimeout ?? "5 seconds"))
    const failures = makeFailures("sqlite", `SQLite store at ${path}`)

    const attempt = <A>(operation: string, key: string | undefined, body: () => A): Effect.Effect<A, StoreError> =>
      Effect.try({ try: body, catch: (cause) => failures.error(operation, key, describe(cause, busyTimeoutMs), cause) })

    const db = yield* Effect.acquireRelease(
      attempt("open", undefined, () => {
        // SQLite would quietly open a private temporary database for "", losing every write.
        if (path.length === 0) throw new Refused(`the path must be a file path (or ":memory:"), got ""`)
        if (path !== ":memory:") fs.mkdirSync(nodePath.dirname(path), { recursive: true })
        return new DatabaseSync(path)
      }),
      (db) =>
        Effect.sync(() => {
          if (db.isOpen) db.close()
        })
    )

    // Writes take the write lock up front (IMMEDIATE) so that a read-then-write
    // such as compare-and-set can never interleave with another process's write.
    const immediate = <A>(body: () => A): A => {
      db.exec("BEGIN IMMEDIATE")
      try {
        const result = body()
        db.exec("COMMIT")
        return result
      } catch (cause) {
        try {
          if (db.isTransaction) db.exec("ROLLBACK")
        } catch {
          // The original failure is the one worth reporting.
        }
        throw cause
      }
    }

    const statements = yield* attempt("open", undefined, () => {
      // busy_timeout first: switching to WAL itself may have to wait for another process.
      db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`)
      db.exec("PRAGMA journal_mode = WAL")
      db.exec("PRAGMA synchronous = FULL")
      immediate(() => {
        const found = Number(db.prepare("PRAGMA user_version").get()?.user_version ?? 0)
        if (found > SCHEMA_VERSION) {
          throw new Refused(
            `the file has schema version ${found} but this build of @berth/storage reads up to ${SCHEMA_VERSION}; ` +
              `upgrade @berth/storage`
          )
        }
        db.exec(`
          CREATE TABLE IF NOT EXISTS kv (
            key TEXT PRIMARY KEY NOT NULL,
            value BLOB NOT NULL,
            version INTEGER NOT NULL,
            revision INTEGER NOT NULL
          );
          CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
          INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
          PRAGMA user_version = ${SCHEMA_VERSION};
        `)
      })
      return {
        get: db.prepare("SELECT key, value, version, revision FROM kv WHERE key = ?"),
        version: db.prepare("SELECT version FROM kv WHERE key = ?"),
        nextRevision: db.prepare("UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value"),
        upsert: db.prepare(
          `INSERT INTO kv (key, value, version, revision) VALUES (?, ?, ?, ?)
           ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, revision = excluded.revision`
        ),
        remove: db.prepare("DELETE FROM kv WHERE key = ?")
      }
    })

    // One statement per query shape, so that every list is an index range scan
    // that stops at the end of the prefix instead of filtering the whole table.
    const listStatements = new Map<string, StatementSync>()
    const listStatement = (exclusiveLower: boolean, bounded: boolean): StatementSync => {
      const shape = `${exclusiveLower}:${bounded}`
      let statement = listStatements.get(shape)
      if (statement === undefined) {
        statement = db.prepare(
          `SELECT key, value, version, revision FROM kv WHERE key ${exclusiveLower ? ">" : ">="} $lower` +
            (bounded ? " AND key < $upper" : "") + " ORDER BY key LIMIT $limit"
        )
        listStatements.set(shape, statement)
      }
      return statement
    }

    const versionOf = (key: string): number => Number(statements.version.get(key)?.version ?? 0)

    const expect = (key: string, expected: number): Result.Result<void, VersionConflict> => {
      const actual = versionOf(key)
      return actual === expected ? Result.void : Result.fail(new VersionConflict({ key, expected, actual }))
    }

    const write = (key: string, value: Uint8Array, version: number): Entry => {
      const next = statements.nextRevision.get()?.value
      if (typeof next !== "number") throw new Refused("the meta table has no revision row")
      statements.upsert.run(key, value, version, next)
      return { key, value: new Uint8Array(value), version, revision: next }
    }

    const get = Effect.fn("StateStore.get")(function*(key: string) {
      yield* failures.checkKey("get", key)
      return yield* attempt("get", key, () => Option.map(Option.fromNullishOr(statements.get.get(key)), toEntry))
    })

    const list = Effect.fn("StateStore.list")(function*(prefix: string, options?: ListOptions) {
      yield* failures.checkList(prefix, options)
      const after = options?.after
      const exclusiveLower = after !== undefined && compareKeys(after, prefix) >= 0
      const upper = prefixUpperBound(prefix)
      return yield* attempt("list", undefined, () =>
        listStatement(exclusiveLower, upper !== undefined).all({
          lower: exclusiveLower ? after : prefix,
          ...(upper === undefined ? {} : { upper }),
          limit: options?.limit ?? -1
        }).map(toEntry))
    })

    const put = Effect.fn("StateStore.put")(function*(key: string, value: Uint8Array) {
      yield* failures.checkKey("put", key)
      yield* failures.checkValue("put", key, value)
      return yield* attempt("put", key, () => immediate(() => write(key, value, versionOf(key) + 1)))
    })

    const compareAndSet = Effect.fn("StateStore.compareAndSet")(
      function*(key: string, expectedVersion: number, value: Uint8Array) {
        yield* failures.checkKey("compareAndSet", key)
        yield* failures.checkVersion("compareAndSet", key, expectedVersion)
        yield* failures.checkValue("compareAndSet", key, value)
        const outcome = yield* attempt("compareAndSet", key, () =>
          immediate(() =>
            Result.map(expect(key, expectedVersion), () => write(key, value, expectedVersion + 1))
          ))
        return yield* Effect.fromResult(outcome)
      }
    )

    const delete_ = Effect.fn("StateStore.delete")(function*(key: string, options?: DeleteOptions) {
      yield* failures.checkKey("delete", key)
      const expected = options?.expectedVersion
      if (expected !== undefined) yield* failures.checkVersion("delete", key, expected)
      const outcome = yield* attempt("delete", key, () =>
        immediate(() =>
          Result.map(expected === undefined ? Result.void : expect(key, expected), () => {
            if (statements.remove.run(key).changes === 0) return false
            // Deletions take a revision too, so that revision order is the order of all changes.
            statements.nextRevision.get()
            return true
          })
        ))
      return yield* Effect.fromResult(outcome)
    })

    return { get, list, put, compareAndSet, delete: delete_ }
  })
