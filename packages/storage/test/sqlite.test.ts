import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"
import { promisify } from "node:util"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Option, Schedule, Stream } from "effect"
import { TestClock } from "effect/testing"
import { StateStore, Txn } from "@berth/storage"
import { eventually, stateStoreSuite } from "./stateStoreSuite.ts"
import { tempDir } from "./tempDir.ts"

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
const text = (value: Uint8Array): string => new TextDecoder().decode(value)

stateStoreSuite({
  name: "sqlite",
  layer: () => Layer.unwrap(Effect.map(tempDir, (dir) => StateStore.layerSqlite({ path: path.join(dir, "state.db") }))),
  time: "virtual"
})

/** Builds a store on `file` in the current scope; each call is a separate connection, as another process would have. */
const open = (file: string, options?: Omit<StateStore.SqliteOptions, "path">) =>
  Effect.map(
    Layer.build(StateStore.layerSqlite({ path: file, ...options })),
    (context) => Context.get(context, StateStore.StateStore)
  )

describe("StateStore.layerSqlite", () => {
  it.effect("keeps data across closing and reopening, and closes the file with its scope", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "state.db")
      const written = yield* Effect.scoped(
        Effect.gen(function*() {
          const store = yield* open(file)
          yield* store.put("a", bytes("1"))
          return yield* store.put("b", bytes("2"))
        })
      )
      // SQLite removes the WAL file when the last connection closes cleanly.
      expect(fs.existsSync(`${file}-wal`)).toBe(false)
      const reopened = yield* open(file)
      expect(Option.getOrThrow(yield* reopened.get("b"))).toEqual(written)
      expect((yield* reopened.list("")).map((e) => e.key)).toEqual(["a", "b"])
      const next = yield* reopened.put("c", bytes("3"))
      expect(next.revision).toBe(written.revision + 1)
    }))

  it.effect("creates the parent directory", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "nested", "deeper", "state.db")
      const store = yield* open(file)
      yield* store.put("k", bytes("v"))
      expect(fs.existsSync(file)).toBe(true)
    }))

  it.effect("two connections on one file see each other's writes and conflicts", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "state.db")
      const a = yield* open(file)
      const b = yield* open(file)
      const created = yield* a.compareAndSet("leader", 0, bytes("a"))
      expect(text(Option.getOrThrow(yield* b.get("leader")).value)).toBe("a")
      const claimedTwice = yield* Effect.flip(b.compareAndSet("leader", 0, bytes("b")))
      expect(claimedTwice).toMatchObject({ _tag: "VersionConflict", key: "leader", expected: 0, actual: 1 })
      const updated = yield* b.compareAndSet("leader", created.version, bytes("b"))
      const stale = yield* Effect.flip(a.compareAndSet("leader", created.version, bytes("a again")))
      expect(stale).toMatchObject({ _tag: "VersionConflict", expected: 1, actual: 2 })
      const other = yield* a.put("other", bytes("x"))
      expect(other.revision).toBe(updated.revision + 1)
      expect(yield* a.delete("leader", { expectedVersion: 2 })).toBe(true)
      expect(yield* b.get("leader")).toEqual(Option.none())
    }))

  // Real processes and real time: the workers poll for the start signal with Effect.sleep.
  it.live(
    "compare-and-set stays exact with several processes contending for one key",
    () =>
      Effect.gen(function*() {
        const file = path.join(yield* tempDir, "state.db")
        const workers = 4
        const increments = 100
        const store = yield* open(file)
        const worker = path.join(import.meta.dirname, "counterWorker.ts")
        const running = yield* Effect.forkChild(Effect.forEach(
          Array.from({ length: workers }),
          () =>
            Effect.promise(() =>
              promisify(execFile)(process.execPath, [worker], {
                env: { ...process.env, BERTH_DB: file, BERTH_INCREMENTS: String(increments) }
              })
            ),
          { concurrency: "unbounded" }
        ))
        yield* store.list("ready/").pipe(
          Effect.repeat({ until: (ready) => ready.length === workers, schedule: Schedule.spaced("10 millis") })
        )
        yield* store.put("go", new Uint8Array(0))
        const outputs = yield* Fiber.join(running)
        const conflicts = outputs.reduce((sum, { stdout }) => sum + Number(stdout.trim()), 0)
        const counter = Option.getOrThrow(yield* store.get("counter"))
        expect(text(counter.value)).toBe(String(workers * increments))
        expect(counter.version).toBe(workers * increments)
        // the test proves nothing unless the workers really raced
        expect(conflicts).toBeGreaterThan(0)
      }),
    60_000
  )

  it.effect("a file that is not a database fails with a StoreError naming the path", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "garbage.db")
      fs.writeFileSync(file, "this is not a database\n".repeat(512))
      const error = yield* Effect.flip(open(file))
      expect(error).toMatchObject({ _tag: "StoreError", backend: "sqlite", operation: "open" })
      expect(error.message).toContain(file)
      expect(error.message).toContain("not a SQLite database")
    }))

  it.effect("a path that cannot be a database file fails with a StoreError naming the path", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const error = yield* Effect.flip(open(dir))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "open" })
      expect(error.message).toContain(dir)
    }))

  it.effect("an empty path is refused instead of opening a throwaway database", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(open(""))
      expect(error.message).toContain("the path must be a file path")
    }))

  it.effect("layerFromUrl accepts sqlite:<path>", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "from-url.db")
      const put = StateStore.StateStore.use((s) => s.put("k", bytes("v")))
      yield* put.pipe(Effect.provide(StateStore.layerFromUrl(`sqlite:${file}`)))
      const again = yield* put.pipe(Effect.provide(StateStore.layerFromUrl(`sqlite:${file}`)))
      expect(again.version).toBe(2)
    }))

  it.effect("a write lock held past the busy timeout fails with a StoreError, then writes resume", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "state.db")
      const store = yield* open(file, { busyTimeout: "50 millis" })
      yield* store.put("k", bytes("1"))
      const other = new DatabaseSync(file)
      yield* Effect.addFinalizer(() => Effect.sync(() => other.close()))
      other.exec("BEGIN IMMEDIATE")
      const error = yield* Effect.flip(store.put("k", bytes("2")))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "put", key: "k" })
      expect(error.message).toContain(file)
      expect(error.message).toContain("locked")
      // readers are not blocked by a writer in WAL mode
      expect(text(Option.getOrThrow(yield* store.get("k")).value)).toBe("1")
      other.exec("COMMIT")
      expect((yield* store.put("k", bytes("2"))).version).toBe(2)
    }))

  it.effect("a file from a newer schema version is refused", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "state.db")
      const raw = new DatabaseSync(file)
      raw.exec("PRAGMA user_version = 99")
      raw.close()
      const error = yield* Effect.flip(open(file))
      expect(error.message).toContain("schema version 99")
      expect(error.message).toContain(file)
    }))

  it.effect("watch sees the commits of another connection (another process), polling the change log", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "state.db")
      const watcher = yield* open(file, { pollInterval: "10 millis" })
      const writer = yield* open(file)
      const start = (yield* watcher.revision) + 1
      const events = yield* Effect.forkChild(watcher.watch("jobs/", { fromRevision: start }).pipe(Stream.take(3), Stream.runCollect))
      yield* writer.put("jobs/1", bytes("a"))
      yield* writer.transaction([Txn.put("jobs/2", bytes("b")), Txn.delete("jobs/1")])
      const seen = yield* Fiber.join(events).pipe(Effect.timeout("10 seconds"))
      expect(seen.map((e) => (e._tag === "Put" ? `put ${e.entry.key}` : `delete ${e.key}`))).toEqual([
        "put jobs/1",
        "put jobs/2",
        "delete jobs/1"
      ])
    }))

  it.effect("a lease granted by one connection is swept by another once it expires on the Clock", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "state.db")
      // The owner closes without revoking its lease, as a crashed process would.
      const lease = yield* Effect.scoped(Effect.gen(function*() {
        const owner = yield* open(file)
        const lease = yield* owner.grantLease("5 seconds")
        yield* owner.put("agents/a1", bytes("up"), { lease })
        return lease
      }))
      const other = yield* open(file)
      expect(Option.isSome(yield* other.get("agents/a1"))).toBe(true)
      yield* TestClock.adjust("6 seconds")
      yield* eventually(Effect.gen(function*() {
        expect(yield* other.get("agents/a1")).toEqual(Option.none())
      }))
      expect((yield* Effect.flip(other.keepAlive(lease)))._tag).toBe("LeaseExpired")
    }))

  it.effect("concurrent writes are committed together, each with its own revision and outcome", () =>
    Effect.gen(function*() {
      const store = yield* open(path.join(yield* tempDir, "state.db"))
      yield* store.put("taken", bytes("x"))
      const before = yield* store.revision
      const results = yield* Effect.forEach(
        Array.from({ length: 50 }, (_, i) => i),
        (i) => i % 10 === 0 ? Effect.result(store.compareAndSet("taken", 0, bytes("y"))) : Effect.result(store.put(`k${i}`, bytes(String(i)))),
        { concurrency: "unbounded" }
      )
      const ok = results.filter((r) => r._tag === "Success").map((r) => (r as { success: StateStore.Entry }).success.revision)
      expect(ok.length).toBe(45)
      expect(new Set(ok).size).toBe(45)
      expect(Math.min(...ok)).toBe(before + 1)
      expect(Math.max(...ok)).toBe(before + 45)
      expect(results.filter((r) => r._tag === "Failure").every((r) => (r as { failure: { _tag: string } }).failure._tag === "VersionConflict")).toBe(true)
    }))

  it.effect("read-only: reads an existing file, refuses writes, and never creates a file", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "state.db")
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* open(file)
        yield* store.put("k", bytes("v"))
      }))
      const reader = yield* StateStore.make(StateStore.layerSqlite({ path: file, readOnly: true }))
      expect(Option.getOrThrow(yield* reader.get("k")).value).toEqual(bytes("v"))
      const write = yield* Effect.flip(reader.put("k", bytes("w")))
      expect(write.message).toContain("the store was opened read-only")
      const missing = path.join(dir, "missing.db")
      const error = yield* Effect.flip(StateStore.make(StateStore.layerSqlite({ path: missing, readOnly: true })))
      expect(error.message).toContain(`no such file: ${missing}`)
      expect(fs.existsSync(missing)).toBe(false)
    }))

  it.effect("a version 1 file is upgraded in place: keys, versions and revisions carry over", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "state.db")
      const raw = new DatabaseSync(file)
      raw.exec(`
        CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, version INTEGER NOT NULL, revision INTEGER NOT NULL);
        CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('revision', 7);
        INSERT INTO kv VALUES ('frameworks/f1', X'7b7d', 3, 7);
        PRAGMA user_version = 1;
      `)
      raw.close()
      // read-only opening of a version 1 file reads it as it is
      const reader = yield* StateStore.make(StateStore.layerSqlite({ path: file, readOnly: true }))
      expect(Option.getOrThrow(yield* reader.get("frameworks/f1")).version).toBe(3)
      const store = yield* open(file)
      const entry = Option.getOrThrow(yield* store.get("frameworks/f1"))
      expect(entry).toEqual({ key: "frameworks/f1", value: bytes("{}"), version: 3, revision: 7, lease: undefined })
      const next = yield* store.put("frameworks/f1", bytes("{}"))
      expect([next.version, next.revision]).toEqual([4, 8])
      // history from before the upgrade was never recorded
      const compacted = yield* Effect.flip(Stream.runDrain(store.watch("", { fromRevision: 5 })))
      expect(compacted._tag).toBe("RevisionCompacted")
      const check = new DatabaseSync(file, { readOnly: true })
      expect(check.prepare("PRAGMA user_version").get()?.user_version).toBe(2)
      check.close()
    }))
})
