/**
 * The local engine behind the memory and SQLite backends: one SQLite
 * database (a file, or a private in-memory one) holding the keys, the leases
 * and a log of changes for `watch`.
 *
 * Writes go through one writer fiber per connection, which commits every
 * write queued meanwhile in one transaction (group commit): one fsync for
 * many compare-and-sets, each still with its own revision and outcome.
 */
import * as fs from "node:fs"
import * as nodePath from "node:path"
import { DatabaseSync } from "node:sqlite"
import type { SQLInputValue, SQLOutputValue, StatementSync } from "node:sqlite"
import { Clock, Deferred, Duration, Effect, Exit, Option, Queue, Result, Schedule, Stream } from "effect"
import type { Scope } from "effect"
import type {
  DeleteOptions,
  Entry,
  Lease,
  ListOptions,
  MemoryOptions,
  PutOptions,
  SqliteOptions,
  StateStore,
  TxnOp,
  TxnResult,
  WatchEvent,
  WatchOptions
} from "../StateStore.ts"
import type { StoreError } from "../StoreError.ts"
import { LeaseExpired, RevisionCompacted, VersionConflict } from "../StoreError.ts"
import { compareKeys, makeFailures, prefixUpperBound } from "./keys.ts"
import type { Failures } from "./keys.ts"

/** Bumped when the table layout changes; a newer file is refused rather than misread. */
const SCHEMA_VERSION = 2

// SQLite primary result codes (the low byte of an extended code).
const SQLITE_CORRUPT = 11
const SQLITE_BUSY = 5
const SQLITE_LOCKED = 6
const SQLITE_READONLY = 8
const SQLITE_CANTOPEN = 14
const SQLITE_FULL = 13
const SQLITE_NOTADB = 26

/** Revisions scanned per watch poll, so a watcher far behind catches up in bounded steps. */
const WATCH_WINDOW = 512

/**
 * Sweeps of a file database look at least this often for leases granted by
 * other processes, which this connection is not told about.
 */
const FOREIGN_LEASE_CHECK_MS = 1_000

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
      return `the file cannot be opened (${text}); check that the path exists, is a file, and is readable ` +
        `(and writable unless read-only)`
    case SQLITE_READONLY:
      return `the database is read-only (${text})`
    case SQLITE_FULL:
      return `the disk is full (${text})`
    default:
      return text
  }
}

type Row = Record<string, SQLOutputValue>

const toEntry = (row: Row): Entry => {
  const { key, lease, revision, value, version } = row
  if (
    typeof key !== "string" || !(value instanceof Uint8Array) ||
    typeof version !== "number" || typeof revision !== "number"
  ) {
    throw new Refused(`the kv row for ${JSON.stringify(key)} does not have the expected column types`)
  }
  return { key, value, version, revision, lease: lease === null || lease === undefined ? undefined : String(lease) }
}

/** Lease ids of this engine are positive integers; anything else was never granted here. */
const leaseNumber = (lease: Lease): number | undefined => {
  if (!/^[1-9]\d{0,15}$/.test(lease.id)) return undefined
  return Number(lease.id)
}

/** What a write job sees of its batch: the time, and the next revision (taken only if used). */
interface Batch {
  readonly now: number
  readonly revision: () => number
}

type Outcome<A> = Result.Result<A, VersionConflict | LeaseExpired>

interface Job {
  readonly operation: string
  readonly key: string | undefined
  readonly run: (batch: Batch) => Outcome<unknown>
  readonly done: Deferred.Deferred<unknown, StoreError | VersionConflict | LeaseExpired>
}

interface EngineOptions {
  readonly backend: "memory" | "sqlite"
  readonly subject: string
  readonly path: string
  readonly busyTimeoutMs: number
  readonly readOnly: boolean
  /** `undefined`: no other connection can write (memory), so watchers only wait for our own commits. */
  readonly pollIntervalMs: number | undefined
  readonly history: number
}

const checkHistory = (failures: Failures, history: number | undefined): Effect.Effect<number, StoreError> =>
  history === undefined
    ? Effect.succeed(10_000)
    : Number.isSafeInteger(history) && history >= 1
    ? Effect.succeed(history)
    : Effect.fail(failures.error("open", undefined, `history must be a positive integer, got ${history}`))

export const makeMemory = (options: MemoryOptions): Effect.Effect<StateStore["Service"], StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const failures = makeFailures("memory", "memory store")
    return yield* make({
      backend: "memory",
      subject: "memory store",
      path: ":memory:",
      busyTimeoutMs: 0,
      readOnly: false,
      pollIntervalMs: undefined,
      history: yield* checkHistory(failures, options.history)
    })
  })

export const makeSqlite = (options: SqliteOptions): Effect.Effect<StateStore["Service"], StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const failures = makeFailures("sqlite", `SQLite store at ${options.path}`)
    const millis = (input: Duration.Input | undefined, fallback: number, name: string) => {
      if (input === undefined) return Effect.succeed(fallback)
      const duration = Duration.fromInput(input)
      return Option.isSome(duration) && Duration.isFinite(duration.value)
        ? Effect.succeed(Duration.toMillis(duration.value))
        : Effect.fail(failures.error("open", undefined, `${name} must be a finite duration, got ${String(input)}`))
    }
    return yield* make({
      backend: "sqlite",
      subject: `SQLite store at ${options.path}`,
      path: options.path,
      busyTimeoutMs: yield* millis(options.busyTimeout, 5_000, "busyTimeout"),
      readOnly: options.readOnly === true,
      pollIntervalMs: Math.max(1, yield* millis(options.pollInterval, 20, "pollInterval")),
      history: yield* checkHistory(failures, options.history)
    })
  })

// The poller paces I/O to notice other processes' commits; it is not logic
// time, so it must keep running when a TestClock freezes `Clock` in tests.
const liveClock = Clock.Clock.defaultValue()
const liveSleep = (millis: number) => liveClock.sleep(Duration.millis(millis))

const make = (options: EngineOptions): Effect.Effect<StateStore["Service"], StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const { busyTimeoutMs, path } = options
    const failures = makeFailures(options.backend, options.subject)

    const attempt = <A>(operation: string, key: string | undefined, body: () => A): Effect.Effect<A, StoreError> =>
      Effect.try({ try: body, catch: (cause) => failures.error(operation, key, describe(cause, busyTimeoutMs), cause) })

    const db = yield* Effect.acquireRelease(
      attempt("open", undefined, () => {
        // SQLite would quietly open a private temporary database for "", losing every write.
        if (path.length === 0) throw new Refused(`the path must be a file path (or ":memory:"), got ""`)
        if (options.readOnly) {
          // A missing file would otherwise be reported as a bare "unable to open database file".
          if (path !== ":memory:" && !fs.existsSync(path)) throw new Refused(`no such file: ${path}`)
          return new DatabaseSync(path, { readOnly: true })
        }
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
        rollback()
        throw cause
      }
    }
    const rollback = () => {
      try {
        if (db.isTransaction) db.exec("ROLLBACK")
      } catch {
        // The original failure is the one worth reporting.
      }
    }

    const layoutVersion = yield* attempt("open", undefined, () => {
      // busy_timeout first: switching to WAL itself may have to wait for another process.
      db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`)
      const found = () => Number(db.prepare("PRAGMA user_version").get()?.user_version ?? 0)
      if (options.readOnly) {
        const version = found()
        if (version === 0) throw new Refused(`the file is not a Berth state file (it has no Berth tables)`)
        if (version > SCHEMA_VERSION) throw tooNew(version)
        return version
      }
      if (path !== ":memory:") {
        db.exec("PRAGMA journal_mode = WAL")
        db.exec("PRAGMA synchronous = FULL")
      }
      return immediate(() => {
        const version = found()
        if (version > SCHEMA_VERSION) throw tooNew(version)
        if (version === 1) {
          // Version 1 had no leases and no change log; its keys and revisions carry over as they are.
          db.exec("ALTER TABLE kv ADD COLUMN lease INTEGER")
        }
        db.exec(`
          CREATE TABLE IF NOT EXISTS kv (
            key TEXT PRIMARY KEY NOT NULL,
            value BLOB NOT NULL,
            version INTEGER NOT NULL,
            revision INTEGER NOT NULL,
            lease INTEGER
          );
          CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL;
          CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
          INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
          CREATE TABLE IF NOT EXISTS leases (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ttl_ms INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
          );
          CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at);
          CREATE TABLE IF NOT EXISTS changes (
            seq INTEGER PRIMARY KEY,
            revision INTEGER NOT NULL,
            key TEXT NOT NULL,
            value BLOB,
            version INTEGER NOT NULL,
            lease INTEGER
          );
          CREATE INDEX IF NOT EXISTS changes_revision ON changes (revision);
          PRAGMA user_version = ${SCHEMA_VERSION};
        `)
        if (version === 1) {
          // History before the upgrade was never logged: a watch cannot resume from before it.
          db.exec("UPDATE meta SET value = (SELECT value FROM meta WHERE name = 'revision') WHERE name = 'compacted'")
        }
        return SCHEMA_VERSION
      })
    })

    const leaseColumn = layoutVersion >= 2 ? "lease" : "NULL AS lease"
    const statements = yield* attempt("open", undefined, () => ({
      get: db.prepare(`SELECT key, value, version, revision, ${leaseColumn} FROM kv WHERE key = ?`),
      meta: db.prepare("SELECT value FROM meta WHERE name = ?")
    }))
    // Write statements cannot be prepared on a read-only connection to a version 1 file.
    const writes = options.readOnly ? undefined : yield* attempt("open", undefined, () => ({
      version: db.prepare("SELECT version FROM kv WHERE key = ?"),
      setMeta: db.prepare("UPDATE meta SET value = ? WHERE name = ?"),
      upsert: db.prepare(
        `INSERT INTO kv (key, value, version, revision, lease) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version,
           revision = excluded.revision, lease = excluded.lease`
      ),
      remove: db.prepare("DELETE FROM kv WHERE key = ?"),
      log: db.prepare("INSERT INTO changes (revision, key, value, version, lease) VALUES (?, ?, ?, ?, ?)"),
      leaseAlive: db.prepare("SELECT 1 AS alive FROM leases WHERE id = ? AND expires_at > ?"),
      leaseInsert: db.prepare("INSERT INTO leases (ttl_ms, expires_at) VALUES (?, ?) RETURNING id"),
      leaseTouch: db.prepare("UPDATE leases SET expires_at = ? + ttl_ms WHERE id = ? AND expires_at > ?"),
      leaseDelete: db.prepare("DELETE FROM leases WHERE id = ?"),
      leaseKeys: db.prepare("DELETE FROM kv WHERE lease = ? RETURNING key"),
      expired: db.prepare("SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at"),
      nextExpiry: db.prepare("SELECT MIN(expires_at) AS at FROM leases"),
      compact: db.prepare("DELETE FROM changes WHERE revision <= ?")
    }))

    // One statement per query shape, so that every list is an index range scan
    // that stops at the end of the prefix instead of filtering the whole table.
    const listStatements = new Map<string, StatementSync>()
    const listStatement = (exclusiveLower: boolean, bounded: boolean): StatementSync => {
      const shape = `${exclusiveLower}:${bounded}`
      let statement = listStatements.get(shape)
      if (statement === undefined) {
        statement = db.prepare(
          `SELECT key, value, version, revision, ${leaseColumn} FROM kv WHERE key ${exclusiveLower ? ">" : ">="} $lower` +
            (bounded ? " AND key < $upper" : "") + " ORDER BY key LIMIT $limit"
        )
        listStatements.set(shape, statement)
      }
      return statement
    }
    const changeStatements = new Map<boolean, StatementSync>()
    const changeStatement = (bounded: boolean): StatementSync => {
      let statement = changeStatements.get(bounded)
      if (statement === undefined) {
        statement = db.prepare(
          `SELECT revision, key, value, version, lease FROM changes
           WHERE revision > $after AND revision <= $upTo AND key >= $lower` + (bounded ? " AND key < $upper" : "") +
            " ORDER BY seq"
        )
        changeStatements.set(bounded, statement)
      }
      return statement
    }

    const metaValue = (name: string): number => {
      const value = statements.meta.get(name)?.value
      if (typeof value !== "number") throw new Refused(`the meta table has no ${name} row`)
      return value
    }

    const writable = (operation: string, key: string | undefined) => {
      if (writes === undefined) {
        return Effect.fail(failures.error(operation, key, "the store was opened read-only"))
      }
      return Effect.succeed(writes)
    }

    // ---------------------------------------------------------------------------------------------
    // The writer: one fiber, one transaction per batch of queued writes.

    const jobs = yield* Queue.unbounded<Job>()
    // Watchers wait on this to hear about our own commits at once.
    let committed = Deferred.makeUnsafe<void>()
    // The sweeper waits on this to hear about new leases, which may expire before it would wake.
    let leasesChanged = Deferred.makeUnsafe<void>()
    let lastCompaction = 0
    let closed = false

    const versionOf = (key: string): number => Number(writes!.version.get(key)?.version ?? 0)

    const expect = (key: string, expected: number): Result.Result<void, VersionConflict> => {
      const actual = versionOf(key)
      return actual === expected ? Result.void : Result.fail(new VersionConflict({ key, expected, actual }))
    }

    const leaseAlive = (lease: Lease | undefined, now: number, operation: string): Result.Result<number | null, LeaseExpired> => {
      if (lease === undefined) return Result.succeed(null)
      const id = leaseNumber(lease)
      if (id === undefined || writes!.leaseAlive.get(id, now) === undefined) {
        return Result.fail(new LeaseExpired({ lease: lease.id, operation }))
      }
      return Result.succeed(id)
    }

    const write = (key: string, value: Uint8Array, version: number, revision: number, lease: number | null): Entry => {
      writes!.upsert.run(key, value, version, revision, lease)
      writes!.log.run(revision, key, value, version, lease)
      return { key, value: new Uint8Array(value), version, revision, lease: lease === null ? undefined : String(lease) }
    }

    const remove = (key: string, revision: number): boolean => {
      if (writes!.remove.run(key).changes === 0) return false
      writes!.log.run(revision, key, null, 0, null)
      return true
    }

    /** Deletes the lease and its keys; `revision` is taken only if it had keys. */
    const endLease = (id: number | bigint, revision: () => number) => {
      const keys = writes!.leaseKeys.all(id)
      writes!.leaseDelete.run(id)
      if (keys.length === 0) return
      const at = revision()
      for (const row of keys) writes!.log.run(at, row.key as string, null, 0, null)
    }

    const runBatch = (batch: ReadonlyArray<Job>, now: number): Array<Exit.Exit<unknown, StoreError | VersionConflict | LeaseExpired>> => {
      const w = writes!
      const results: Array<Exit.Exit<unknown, StoreError | VersionConflict | LeaseExpired>> = []
      try {
        db.exec("BEGIN IMMEDIATE")
      } catch (cause) {
        return batch.map((job) => Exit.fail(failures.error(job.operation, job.key, describe(cause, busyTimeoutMs), cause)))
      }
      try {
        let revision = metaValue("revision")
        const startRevision = revision
        let taken = false
        const context: Batch = {
          now,
          revision: () => {
            taken = true
            return revision + 1
          }
        }
        const settle = () => {
          if (taken) revision += 1
          taken = false
        }
        // Expired leases go first, so that no job in the batch can see or extend them.
        for (const row of w.expired.all(now)) {
          endLease(row.id as number, context.revision)
          settle()
        }
        for (const [index, job] of batch.entries()) {
          const savepoint = `job${index}`
          db.exec(`SAVEPOINT ${savepoint}`)
          try {
            const outcome = job.run(context)
            db.exec(`RELEASE ${savepoint}`)
            if (Result.isSuccess(outcome)) settle()
            taken = false
            results.push(Result.isSuccess(outcome) ? Exit.succeed(outcome.success) : Exit.fail(outcome.failure))
          } catch (cause) {
            db.exec(`ROLLBACK TO ${savepoint}`)
            db.exec(`RELEASE ${savepoint}`)
            taken = false
            results.push(Exit.fail(failures.error(job.operation, job.key, describe(cause, busyTimeoutMs), cause)))
          }
        }
        if (revision !== startRevision) w.setMeta.run(revision, "revision")
        // Compacting now and then keeps the change log short without a delete per write.
        if (revision - lastCompaction >= 64 && revision > options.history) {
          const horizon = revision - options.history
          if (horizon > metaValue("compacted")) {
            w.compact.run(horizon)
            w.setMeta.run(horizon, "compacted")
          }
          lastCompaction = revision
        }
        db.exec("COMMIT")
        return results
      } catch (cause) {
        rollback()
        return batch.map((job) => Exit.fail(failures.error(job.operation, job.key, describe(cause, busyTimeoutMs), cause)))
      }
    }

    const writer = Effect.gen(function*() {
      while (true) {
        const batch = yield* Queue.takeAll(jobs)
        const now = yield* Clock.currentTimeMillis
        const results = runBatch(batch, now)
        for (const [index, job] of batch.entries()) Deferred.doneUnsafe(job.done, results[index]!)
        const wake = committed
        committed = Deferred.makeUnsafe<void>()
        Deferred.doneUnsafe(wake, Exit.void)
      }
    })

    const submit = <A, E extends VersionConflict | LeaseExpired = never>(
      operation: string,
      key: string | undefined,
      run: (batch: Batch) => Result.Result<A, E>
    ): Effect.Effect<A, StoreError | E> =>
      Effect.gen(function*() {
        yield* writable(operation, key)
        if (closed) return yield* failures.error(operation, key, "the store was closed")
        const done = yield* Deferred.make<unknown, StoreError | VersionConflict | LeaseExpired>()
        yield* Queue.offer(jobs, { operation, key, run, done })
        return (yield* Deferred.await(done)) as A
      }) as Effect.Effect<A, StoreError | E>

    if (writes !== undefined) {
      yield* Effect.forkScoped(writer)
      // A job queued while the store closes would otherwise wait forever.
      yield* Effect.addFinalizer(() =>
        Effect.gen(function*() {
          closed = true
          const left = yield* Queue.clear(jobs)
          for (const job of left) {
            Deferred.doneUnsafe(job.done, Exit.fail(failures.error(job.operation, job.key, "the store was closed")))
          }
        })
      )
    }

    // ---------------------------------------------------------------------------------------------
    // Lease sweeper: ends expired leases even when nobody writes, so their keys
    // vanish (and watchers hear of it) on time.

    const sweeper = Effect.gen(function*() {
      while (true) {
        const wake = leasesChanged
        const now = yield* Clock.currentTimeMillis
        const next = yield* attempt("sweep", undefined, () => writes!.nextExpiry.get()?.at)
        if (typeof next === "number" && next <= now) {
          // An empty job: the batch itself ends every expired lease.
          yield* submit("sweep", undefined, () => Result.void)
          continue
        }
        const until = typeof next === "number" ? next - now : Infinity
        const wait = options.pollIntervalMs === undefined ? until : Math.min(until, FOREIGN_LEASE_CHECK_MS)
        yield* Effect.raceFirst(
          Number.isFinite(wait) ? Effect.sleep(Duration.millis(wait)) : Effect.never,
          Deferred.await(wake)
        )
      }
    }).pipe(
      // A failing sweep (a locked file, say) is retried; the writes themselves report such errors.
      Effect.tapError((error) => Effect.logWarning(`lease sweep failed: ${error.message}`)),
      Effect.retry(Schedule.spaced("1 second"))
    )
    if (writes !== undefined) yield* Effect.forkScoped(sweeper)

    const leasesTouched = () => {
      const wake = leasesChanged
      leasesChanged = Deferred.makeUnsafe<void>()
      Deferred.doneUnsafe(wake, Exit.void)
    }

    // ---------------------------------------------------------------------------------------------
    // The service.

    const get = Effect.fn("StateStore.get")(function*(key: string) {
      yield* failures.checkKey("get", key)
      return yield* attempt("get", key, () => Option.map(Option.fromNullishOr(statements.get.get(key)), toEntry))
    })

    const getMany = Effect.fn("StateStore.getMany")(function*(keys: ReadonlyArray<string>) {
      yield* failures.checkKeys("getMany", keys)
      return yield* attempt("getMany", undefined, () => {
        // One read transaction: every key is read at the same revision.
        db.exec("BEGIN")
        try {
          return keys.map((key) => Option.map(Option.fromNullishOr(statements.get.get(key)), toEntry))
        } finally {
          db.exec("COMMIT")
        }
      })
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

    const put = Effect.fn("StateStore.put")(function*(key: string, value: Uint8Array, options?: PutOptions) {
      yield* failures.checkKey("put", key)
      yield* failures.checkValue("put", key, value)
      yield* failures.checkLease("put", key, options?.lease)
      return yield* submit("put", key, (batch) =>
        Result.map(
          leaseAlive(options?.lease, batch.now, "put"),
          (lease) => write(key, value, versionOf(key) + 1, batch.revision(), lease)
        ))
    })

    const compareAndSet = Effect.fn("StateStore.compareAndSet")(
      function*(key: string, expectedVersion: number, value: Uint8Array, options?: PutOptions) {
        yield* failures.checkKey("compareAndSet", key)
        yield* failures.checkVersion("compareAndSet", key, expectedVersion)
        yield* failures.checkValue("compareAndSet", key, value)
        yield* failures.checkLease("compareAndSet", key, options?.lease)
        return yield* submit("compareAndSet", key, (batch): Outcome<Entry> =>
          Result.flatMap(
            expect(key, expectedVersion),
            () =>
              Result.map(
                leaseAlive(options?.lease, batch.now, "compareAndSet"),
                (lease) => write(key, value, expectedVersion + 1, batch.revision(), lease)
              )
          ))
      }
    )

    const delete_ = Effect.fn("StateStore.delete")(function*(key: string, options?: DeleteOptions) {
      yield* failures.checkKey("delete", key)
      const expected = options?.expectedVersion
      if (expected !== undefined) yield* failures.checkVersion("delete", key, expected)
      return yield* submit("delete", key, (batch) =>
        Result.map(
          expected === undefined ? Result.void : expect(key, expected),
          // Deletions take a revision too, so that revision order is the order of all changes.
          () => versionOf(key) === 0 ? false : remove(key, batch.revision())
        ))
    })

    const transaction = Effect.fn("StateStore.transaction")(function*(ops: ReadonlyArray<TxnOp>) {
      yield* failures.checkTxn(ops)
      return yield* submit("transaction", undefined, (batch): Outcome<TxnResult> => {
        for (const op of ops) {
          if (op.expectedVersion === undefined) continue
          const guard = expect(op.key, op.expectedVersion)
          if (Result.isFailure(guard)) return Result.fail(guard.failure)
        }
        const leases = new Map<TxnOp, number | null>()
        for (const op of ops) {
          if (op._tag !== "Put") continue
          const lease = leaseAlive(op.lease, batch.now, "transaction")
          if (Result.isFailure(lease)) return Result.fail(lease.failure)
          leases.set(op, lease.success)
        }
        if (!ops.some((op) => op._tag !== "Check")) {
          return Result.succeed({ revision: metaValue("revision"), entries: [], deleted: [] })
        }
        const revision = batch.revision()
        const entries: Array<Entry> = []
        const deleted: Array<string> = []
        for (const op of ops) {
          if (op._tag === "Put") entries.push(write(op.key, op.value, versionOf(op.key) + 1, revision, leases.get(op)!))
          if (op._tag === "Delete" && remove(op.key, revision)) deleted.push(op.key)
        }
        return Result.succeed({ revision, entries, deleted })
      })
    })

    const revision = Effect.suspend(() => attempt("revision", undefined, () => metaValue("revision"))).pipe(
      Effect.withSpan("StateStore.revision")
    )

    const grantLease = Effect.fn("StateStore.grantLease")(function*(ttl: Duration.Input) {
      const ttlMillis = yield* failures.checkTtl(ttl)
      const lease = yield* submit("grantLease", undefined, (batch) => {
        const id = writes!.leaseInsert.get(ttlMillis, batch.now + ttlMillis)?.id
        if (typeof id !== "number") throw new Refused("inserting the lease returned no id")
        return Result.succeed<Lease>({ id: String(id), ttlMillis })
      })
      leasesTouched()
      return lease
    })

    const keepAlive = Effect.fn("StateStore.keepAlive")(function*(lease: Lease) {
      yield* failures.checkLease("keepAlive", undefined, lease)
      yield* submit("keepAlive", undefined, (batch) => {
        const id = leaseNumber(lease)
        const touched = id === undefined ? 0 : writes!.leaseTouch.run(batch.now, id, batch.now).changes
        return touched === 0 ? Result.fail(new LeaseExpired({ lease: lease.id, operation: "keepAlive" })) : Result.void
      })
      leasesTouched()
    })

    const revokeLease = Effect.fn("StateStore.revokeLease")(function*(lease: Lease) {
      yield* failures.checkLease("revokeLease", undefined, lease)
      yield* submit("revokeLease", undefined, (batch) => {
        const id = leaseNumber(lease)
        if (id !== undefined) endLease(id, batch.revision)
        return Result.void
      })
    })

    const watch = (prefix: string, watchOptions?: WatchOptions): Stream.Stream<WatchEvent, StoreError | RevisionCompacted> =>
      Stream.callback<WatchEvent, StoreError | RevisionCompacted>((queue) =>
        Effect.gen(function*() {
          yield* failures.checkPrefix("watch", prefix)
          yield* failures.checkRevision(watchOptions?.fromRevision)
          if (layoutVersion < 2) {
            return yield* failures.error("watch", undefined, "the file predates the change log (open it read-write once to upgrade it)")
          }
          const upper = prefixUpperBound(prefix)
          const statement = changeStatement(upper !== undefined)
          // `after`: every change up to this revision has been delivered (or did not match).
          let after = watchOptions?.fromRevision === undefined
            ? yield* attempt("watch", undefined, () => metaValue("revision"))
            : watchOptions.fromRevision - 1
          while (true) {
            const wake = committed
            const page = yield* attempt("watch", undefined, () => {
              db.exec("BEGIN")
              try {
                const compacted = metaValue("compacted")
                if (compacted > after) return Result.fail(new RevisionCompacted({ requested: after + 1, compactRevision: compacted }))
                const current = metaValue("revision")
                const upTo = Math.min(current, after + WATCH_WINDOW)
                const rows = upTo > after
                  ? statement.all({ after, upTo, lower: prefix, ...(upper === undefined ? {} : { upper }) } as Record<string, SQLInputValue>)
                  : []
                return Result.succeed({ rows, upTo, caughtUp: upTo === current })
              } finally {
                db.exec("COMMIT")
              }
            })
            if (Result.isFailure(page)) return yield* page.failure
            const { caughtUp, rows, upTo } = page.success
            if (rows.length > 0) yield* Queue.offerAll(queue, rows.map(toEvent))
            after = Math.max(after, upTo)
            if (caughtUp) {
              yield* options.pollIntervalMs === undefined
                ? Deferred.await(wake)
                : Effect.raceFirst(Deferred.await(wake), liveSleep(options.pollIntervalMs))
            }
          }
        }), { bufferSize: 1024, strategy: "suspend" })

    return {
      get,
      getMany,
      list,
      put,
      compareAndSet,
      delete: delete_,
      transaction,
      watch,
      revision,
      grantLease,
      keepAlive,
      revokeLease
    }
  })

const tooNew = (version: number) =>
  new Refused(
    `the file has schema version ${version} but this build of @berth/storage reads up to ${SCHEMA_VERSION}; ` +
      `upgrade @berth/storage`
  )

const toEvent = (row: Row): WatchEvent => {
  const { key, lease, revision, value, version } = row
  if (value === null) return { _tag: "Delete", key: key as string, revision: revision as number }
  return {
    _tag: "Put",
    entry: {
      key: key as string,
      value: value as Uint8Array,
      version: version as number,
      revision: revision as number,
      lease: lease === null ? undefined : String(lease)
    }
  }
}
