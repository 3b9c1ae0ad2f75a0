/**
 * The conformance suite: the behaviour every StateStore backend must have,
 * with the same assertions for memory, SQLite and etcd. Only time differs:
 * memory and SQLite run on a TestClock (lease expiry on virtual time), etcd
 * on real time (its leases expire on the server's clock).
 */
import { randomBytes } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Ref, Stream } from "effect"
import type { Scope } from "effect"
import { TestClock } from "effect/testing"
import { Election, Mutex, StateStore, StoreError, Txn } from "@berth/storage"

export type StoreLayer = Layer.Layer<StateStore.StateStore, StoreError.StoreError>

export interface Backend {
  readonly name: "memory" | "sqlite" | "etcd"
  /** A fresh, empty store each call. */
  readonly layer: () => StoreLayer
  readonly time: "virtual" | "real"
}

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
const text = (value: Uint8Array): string => new TextDecoder().decode(value)
const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0

/** Real time, whatever clock the test runs on: lets I/O and other fibers make progress. */
export const liveSleep = (millis: number) => Clock.Clock.defaultValue().sleep(Duration.millis(millis))

/** Retries `check` (an assertion) until it passes or `withinMillis` of real time have passed. */
export const eventually = <A, E, R>(check: Effect.Effect<A, E, R>, withinMillis = 6_000): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const deadline = performance.now() + withinMillis
    while (true) {
      const exit = yield* Effect.exit(check)
      if (Exit.isSuccess(exit) || performance.now() > deadline) return yield* exit
      yield* liveSleep(20)
    }
  })

export const stateStoreSuite = (backend: Backend): void => {
  const { name } = backend
  const virtual = backend.time === "virtual"

  /** Lets time pass: TestClock steps for memory and SQLite, real sleep for etcd. */
  const advance = (millis: number) =>
    virtual
      ? Effect.gen(function*() {
        // Small steps, so that keep-alives due on the way run before later expiries are judged.
        for (let left = millis; left > 0; left -= 100) {
          yield* TestClock.adjust(Duration.millis(Math.min(100, left)))
          yield* liveSleep(1)
        }
      })
      : Effect.sleep(Duration.millis(millis))

  describe(`StateStore conformance (${name})`, () => {
    const test = <A, E>(
      title: string,
      body: (store: StateStore.StateStore["Service"]) => Effect.Effect<A, E, StateStore.StateStore | Scope.Scope>,
      timeout?: number
    ) =>
      (virtual ? it.effect : it.live)(
        title,
        // The body's scope closes before the store does, so that what it holds (leases, leaderships) is released.
        () => Effect.flatMap(StateStore.StateStore, (store) => Effect.scoped(body(store))).pipe(Effect.provide(backend.layer())),
        timeout
      )

    // ---------------------------------------------------------------------------------------------
    // CRUD and versions

    test("get of an absent key is None", (store) =>
      Effect.gen(function*() {
        expect(yield* store.get("nope")).toEqual(Option.none())
      }))

    test("versions start at 1 and grow by one per write of a key", (store) =>
      Effect.gen(function*() {
        const first = yield* store.put("a", bytes("1"))
        const second = yield* store.put("a", bytes("2"))
        const third = yield* store.compareAndSet("a", 2, bytes("3"))
        expect([first.version, second.version, third.version]).toEqual([1, 2, 3])
        const current = Option.getOrThrow(yield* store.get("a"))
        expect(current.key).toBe("a")
        expect(current.version).toBe(3)
        expect(current.revision).toBe(third.revision)
        expect(current.lease).toBeUndefined()
        expect(text(current.value)).toBe("3")
        expect(yield* store.revision).toBe(third.revision)
      }))

    test("revision increases across keys and deletions", (store) =>
      Effect.gen(function*() {
        const a = yield* store.put("a", bytes("1"))
        const b = yield* store.put("b", bytes("1"))
        yield* store.delete("a")
        const a2 = yield* store.put("a", bytes("2"))
        const b2 = yield* store.compareAndSet("b", 1, bytes("2"))
        expect(b.revision).toBeGreaterThan(a.revision)
        expect(a2.revision).toBeGreaterThan(b.revision + 1)
        expect(b2.revision).toBeGreaterThan(a2.revision)
        expect(b.version).toBe(1)
        // a recreated key starts a new life at version 1
        expect(a2.version).toBe(1)
        expect(Option.getOrThrow(yield* store.get("b")).revision).toBe(b2.revision)
      }))

    test("compareAndSet with a stale version fails with VersionConflict and changes nothing", (store) =>
      Effect.gen(function*() {
        yield* store.put("k", bytes("v1"))
        const v2 = yield* store.put("k", bytes("v2"))
        const conflict = yield* Effect.flip(store.compareAndSet("k", 1, bytes("lost update")))
        expect(conflict._tag).toBe("VersionConflict")
        if (conflict._tag !== "VersionConflict") return
        expect({ key: conflict.key, expected: conflict.expected, actual: conflict.actual }).toEqual({
          key: "k",
          expected: 1,
          actual: 2
        })
        expect(conflict.message).toContain(`"k"`)
        expect(conflict.message).toContain("expected version 1")
        expect(Option.getOrThrow(yield* store.get("k"))).toEqual(v2)
        // a failed compare-and-set takes no revision
        const next = yield* store.put("other", bytes("x"))
        expect(next.revision).toBe(v2.revision + 1)
      }))

    test("compareAndSet with expected version 0 creates only an absent key", (store) =>
      Effect.gen(function*() {
        const created = yield* store.compareAndSet("leader", 0, bytes("me"))
        expect(created.version).toBe(1)
        const conflict = yield* Effect.flip(store.compareAndSet("leader", 0, bytes("you")))
        expect(conflict).toMatchObject({ _tag: "VersionConflict", key: "leader", expected: 0, actual: 1 })
        expect(conflict.message).toContain("must not exist")
        expect(text(Option.getOrThrow(yield* store.get("leader")).value)).toBe("me")
        const onAbsent = yield* Effect.flip(store.compareAndSet("ghost", 3, bytes("x")))
        expect(onAbsent).toMatchObject({ _tag: "VersionConflict", expected: 3, actual: 0 })
        expect(yield* store.get("ghost")).toEqual(Option.none())
      }))

    test("delete reports whether the key existed and honours expectedVersion", (store) =>
      Effect.gen(function*() {
        expect(yield* store.delete("absent")).toBe(false)
        yield* store.put("k", bytes("1"))
        yield* store.put("k", bytes("2"))
        const conflict = yield* Effect.flip(store.delete("k", { expectedVersion: 1 }))
        expect(conflict).toMatchObject({ _tag: "VersionConflict", key: "k", expected: 1, actual: 2 })
        expect(Option.isSome(yield* store.get("k"))).toBe(true)
        expect(yield* store.delete("k", { expectedVersion: 2 })).toBe(true)
        expect(yield* store.get("k")).toEqual(Option.none())
        expect(yield* store.delete("k")).toBe(false)
        const onAbsent = yield* Effect.flip(store.delete("k", { expectedVersion: 2 }))
        expect(onAbsent).toMatchObject({ _tag: "VersionConflict", expected: 2, actual: 0 })
      }))

    test("getMany reads several keys in order, None for the absent ones", (store) =>
      Effect.gen(function*() {
        const a = yield* store.put("m/a", bytes("A"))
        const c = yield* store.put("m/c", bytes("C"))
        const got = yield* store.getMany(["m/c", "m/b", "m/a"])
        expect(got).toEqual([Option.some(c), Option.none(), Option.some(a)])
        expect(yield* store.getMany([])).toEqual([])
        const tooMany = yield* Effect.flip(store.getMany(Array.from({ length: 129 }, (_, i) => `k${i}`)))
        expect(tooMany.message).toContain("at most 128 keys")
      }))

    // ---------------------------------------------------------------------------------------------
    // Listing

    test("list returns the keys under a prefix, sorted, and nothing else", (store) =>
      Effect.gen(function*() {
        for (const key of ["a/3", "b/1", "a/1", "a", "a0", "ab/1", "a/2/x", "a/10", "a/2"]) {
          yield* store.put(key, bytes(key))
        }
        const listed = yield* store.list("a/")
        expect(listed.map((e) => e.key)).toEqual(["a/1", "a/10", "a/2", "a/2/x", "a/3"])
        expect(listed.map((e) => text(e.value))).toEqual(["a/1", "a/10", "a/2", "a/2/x", "a/3"])
        expect((yield* store.list("")).length).toBe(9)
        expect(yield* store.list("zzz")).toEqual([])
      }))

    test("list orders keys by code point, the same in every backend", (store) =>
      Effect.gen(function*() {
        // UTF-16 order would put the astral emoji before U+FFFD
        for (const key of ["u/\u{1F600}", "u/\uFFFD", "u/z", "u/\u00E9", "u/\u{10FFFF}"]) {
          yield* store.put(key, bytes(key))
        }
        expect((yield* store.list("u/")).map((e) => e.key)).toEqual([
          "u/z",
          "u/\u00E9",
          "u/\uFFFD",
          "u/\u{1F600}",
          "u/\u{10FFFF}"
        ])
        yield* store.put("\u{10FFFF}a", bytes("x"))
        yield* store.put("\u{10FFFF}", bytes("x"))
        expect((yield* store.list("\u{10FFFF}")).map((e) => e.key)).toEqual(["\u{10FFFF}", "\u{10FFFF}a"])
      }))

    test("list pages with limit and an exclusive after key", (store) =>
      Effect.gen(function*() {
        const keys = ["p/a", "p/b", "p/c", "p/d", "p/e"]
        for (const key of [...keys].reverse()) yield* store.put(key, bytes(key))
        yield* store.put("q/a", bytes("other prefix"))
        const pages: Array<Array<string>> = []
        let after: string | undefined = undefined
        while (true) {
          const page: ReadonlyArray<StateStore.Entry> = yield* store.list("p/", { limit: 2, after })
          if (page.length === 0) break
          pages.push(page.map((e) => e.key))
          after = page[page.length - 1]!.key
        }
        expect(pages).toEqual([["p/a", "p/b"], ["p/c", "p/d"], ["p/e"]])
        // an `after` key need not exist, nor lie inside the prefix
        expect((yield* store.list("p/", { after: "p/bb" })).map((e) => e.key)).toEqual(["p/c", "p/d", "p/e"])
        expect((yield* store.list("p/", { after: "a", limit: 1 })).map((e) => e.key)).toEqual(["p/a"])
        expect(yield* store.list("p/", { after: "p/e" })).toEqual([])
        expect(yield* store.list("p/", { after: "z" })).toEqual([])
        // listAll pages through everything
        const all = yield* StateStore.listAll("p/", { pageSize: 2 }).pipe(Stream.runCollect)
        expect(all.map((e) => e.key)).toEqual(keys)
      }))

    test("binary values round-trip exactly and are not aliased", (store) =>
      Effect.gen(function*() {
        const all = Uint8Array.from({ length: 256 }, (_, i) => i)
        yield* store.put("bin/all", all)
        yield* store.put("bin/empty", new Uint8Array(0))
        yield* store.put("bin/view", all.subarray(10, 13))
        all[0] = 42
        expect(Array.from(Option.getOrThrow(yield* store.get("bin/all")).value)).toEqual(
          Array.from({ length: 256 }, (_, i) => i)
        )
        expect(Option.getOrThrow(yield* store.get("bin/empty")).value).toEqual(new Uint8Array(0))
        expect(Array.from(Option.getOrThrow(yield* store.get("bin/view")).value)).toEqual([10, 11, 12])
        const read = Option.getOrThrow(yield* store.get("bin/view"))
        read.value[0] = 99
        expect(Option.getOrThrow(yield* store.get("bin/view")).value[0]).toBe(10)
      }))

    test("invalid arguments fail with a StoreError naming the key and the rule", (store) =>
      Effect.gen(function*() {
        const emptyKey = yield* Effect.flip(store.put("", bytes("x")))
        expect(emptyKey).toMatchObject({ _tag: "StoreError", backend: name, operation: "put", key: "" })
        expect(emptyKey.message).toContain(`put of key "" failed: a key must be a non-empty string`)
        const nul = yield* Effect.flip(store.get("a\u0000b"))
        expect(nul.message).toContain("must not contain NUL")
        const surrogate = yield* Effect.flip(store.put("bad\uD800", bytes("x")))
        expect(surrogate.message).toContain("well-formed Unicode")
        const version = yield* Effect.flip(store.compareAndSet("k", -1, bytes("x")))
        expect(version.message).toContain(`key "k"`)
        expect(version.message).toContain("expectedVersion must be a non-negative integer")
        const limit = yield* Effect.flip(store.list("p/", { limit: 0 }))
        expect(limit.message).toContain("limit must be a positive integer, got 0")
        const ttl = yield* Effect.flip(store.grantLease("0 millis"))
        expect(ttl.message).toContain("the TTL must be a finite duration of at least 1 ms")
        const from = yield* Effect.flip(Stream.runDrain(store.watch("w/", { fromRevision: 0 })))
        expect(from.message).toContain("fromRevision must be a positive integer, got 0")
        expect(yield* store.list("")).toEqual([])
      }))

    it.effect("each build of the layer is independent", () =>
      Effect.gen(function*() {
        const write = Effect.exit(StateStore.StateStore.use((s) => s.compareAndSet("once", 0, bytes("x"))))
        expect(Exit.isSuccess(yield* write.pipe(Effect.provide(backend.layer())))).toBe(true)
        expect(Exit.isSuccess(yield* write.pipe(Effect.provide(backend.layer())))).toBe(true)
      }))

    // ---------------------------------------------------------------------------------------------
    // Compare-and-set races

    test("N concurrent compare-and-set incrementers end at exactly N", (store) =>
      Effect.gen(function*() {
        const writers = 24
        const conflicts = yield* Ref.make(0)
        const increment = Effect.gen(function*() {
          const current = yield* store.get("counter")
          const count = Option.match(current, { onNone: () => 0, onSome: (e) => Number(text(e.value)) })
          // Let the other writers read the same version before anyone writes.
          yield* Effect.yieldNow
          yield* store.compareAndSet(
            "counter",
            Option.match(current, { onNone: () => 0, onSome: (e) => e.version }),
            bytes(String(count + 1))
          )
        }).pipe(
          Effect.tapError((e) => e._tag === "VersionConflict" ? Ref.update(conflicts, (n) => n + 1) : Effect.void),
          Effect.retry({ while: (e) => e._tag === "VersionConflict" })
        )
        yield* Effect.forEach(Array.from({ length: writers }), () => increment, { concurrency: "unbounded" })
        const counter = Option.getOrThrow(yield* store.get("counter"))
        expect(text(counter.value)).toBe(String(writers))
        expect(counter.version).toBe(writers)
        // the test proves nothing unless the writers really raced
        expect(yield* Ref.get(conflicts)).toBeGreaterThan(0)
      }), 30_000)

    // ---------------------------------------------------------------------------------------------
    // Transactions

    test("a transaction applies all of its operations at one revision", (store) =>
      Effect.gen(function*() {
        const a = yield* store.put("t/a", bytes("a1"))
        yield* store.put("t/gone", bytes("x"))
        const result = yield* store.transaction([
          Txn.check("t/a", a.version),
          Txn.put("t/a", bytes("a2"), { expectedVersion: a.version }),
          Txn.put("t/b", bytes("b1"), { expectedVersion: 0 }),
          Txn.delete("t/gone"),
          Txn.delete("t/never")
        ])
        expect(result.revision).toBeGreaterThan(a.revision)
        expect(result.entries.map((e) => [e.key, text(e.value), e.version, e.revision])).toEqual([
          ["t/a", "a2", 2, result.revision],
          ["t/b", "b1", 1, result.revision]
        ])
        expect(result.deleted).toEqual(["t/gone"])
        expect((yield* store.list("t/")).map((e) => [e.key, text(e.value), e.revision])).toEqual([
          ["t/a", "a2", result.revision],
          ["t/b", "b1", result.revision]
        ])
        expect(yield* store.revision).toBe(result.revision)
      }))

    test("a transaction with one stale guard changes nothing and names the key", (store) =>
      Effect.gen(function*() {
        yield* store.put("t/a", bytes("a1"))
        const b = yield* store.put("t/b", bytes("b1"))
        yield* store.put("t/b", bytes("b2"))
        const before = yield* store.list("t/")
        const revision = yield* store.revision
        const conflict = yield* Effect.flip(store.transaction([
          Txn.put("t/a", bytes("a2")),
          Txn.put("t/c", bytes("c1")),
          Txn.delete("t/a/child"),
          Txn.put("t/b", bytes("b3"), { expectedVersion: b.version })
        ]))
        expect(conflict).toMatchObject({ _tag: "VersionConflict", key: "t/b", expected: 1, actual: 2 })
        expect(yield* store.list("t/")).toEqual(before)
        expect(yield* store.revision).toBe(revision)
        const guardOnly = yield* Effect.flip(store.transaction([Txn.check("t/c", 1), Txn.put("t/d", bytes("d"))]))
        expect(guardOnly).toMatchObject({ _tag: "VersionConflict", key: "t/c", expected: 1, actual: 0 })
        expect(yield* store.get("t/d")).toEqual(Option.none())
        // guards alone read and write nothing
        const checked = yield* store.transaction([Txn.check("t/a", 1), Txn.check("t/c", 0)])
        expect(checked).toEqual({ revision, entries: [], deleted: [] })
      }))

    test("a transaction may write a key only once, and has a bounded size", (store) =>
      Effect.gen(function*() {
        const twice = yield* Effect.flip(store.transaction([Txn.put("k", bytes("1")), Txn.delete("k")]))
        expect(twice.message).toContain(`writes key "k" a second time`)
        const big = yield* Effect.flip(store.transaction(Array.from({ length: 33 }, (_, i) => Txn.put(`k${i}`, bytes("x")))))
        expect(big.message).toContain("at most 32 operations per transaction")
        expect(yield* store.list("")).toEqual([])
      }))

    // ---------------------------------------------------------------------------------------------
    // Watch

    test("watch delivers changes in revision order and resumes from a revision", (store) =>
      Effect.gen(function*() {
        const seen = yield* Deferred.make<ReadonlyArray<StateStore.WatchEvent>>()
        // From the next revision, so that no change can slip by before the watch is set up.
        const start = (yield* store.revision) + 1
        const watcher = yield* Effect.forkChild(
          store.watch("w/", { fromRevision: start }).pipe(
            Stream.take(7),
            Stream.runCollect,
            Effect.flatMap((events) => Deferred.succeed(seen, events))
          )
        )
        const a = yield* store.put("w/a", bytes("1"))
        yield* store.put("x/outside", bytes("not watched"))
        const b = yield* store.put("w/b", bytes("1"))
        const txn = yield* store.transaction([Txn.put("w/c", bytes("1")), Txn.delete("w/a"), Txn.put("w/b", bytes("2"))])
        yield* store.delete("w/b")
        const d = yield* store.compareAndSet("w/d", 0, bytes("1"))
        yield* store.delete("w/never")
        yield* store.put("w/a", bytes("again"))
        const events = yield* Deferred.await(seen).pipe(Effect.timeout("10 seconds"))
        yield* Fiber.join(watcher)
        const summary = (event: StateStore.WatchEvent) =>
          event._tag === "Put"
            ? `put ${event.entry.key}=${text(event.entry.value)} v${event.entry.version}`
            : `delete ${event.key}`
        expect(events.map(summary)).toEqual([
          "put w/a=1 v1",
          "put w/b=1 v1",
          "put w/c=1 v1",
          "delete w/a",
          "put w/b=2 v2",
          "delete w/b",
          "put w/d=1 v1"
        ])
        const revisions = events.map((e) => (e._tag === "Put" ? e.entry.revision : e.revision))
        expect(revisions[0]).toBe(a.revision)
        expect(revisions[1]).toBe(b.revision)
        // the transaction's changes share its revision
        expect(revisions.slice(2, 5)).toEqual([txn.revision, txn.revision, txn.revision])
        expect(revisions[6]).toBe(d.revision)
        for (let i = 1; i < revisions.length; i++) expect(revisions[i]!).toBeGreaterThanOrEqual(revisions[i - 1]!)

        // resuming from a revision replays exactly the changes from there on
        const resumed = yield* store.watch("w/", { fromRevision: b.revision }).pipe(
          Stream.take(7),
          Stream.runCollect,
          Effect.timeout("10 seconds")
        )
        expect(resumed.map(summary)).toEqual([...events.slice(1).map(summary), "put w/a=again v1"])
        const fromTxn = yield* store.watch("w/c", { fromRevision: txn.revision }).pipe(
          Stream.take(1),
          Stream.runCollect,
          Effect.timeout("10 seconds")
        )
        expect(fromTxn.map(summary)).toEqual(["put w/c=1 v1"])
      }), 30_000)

    // ---------------------------------------------------------------------------------------------
    // Leases

    test("a lease kept alive keeps its keys; once it lapses they vanish, with a delete event", (store) =>
      Effect.gen(function*() {
        // etcd grants whole seconds, 2 at least; 3 leaves real-time margins for a busy machine.
        const lease = yield* store.grantLease("3 seconds")
        expect(lease.ttlMillis).toBe(3000)
        const bound = yield* store.put("l/bound", bytes("1"), { lease })
        expect(bound.lease).toBe(lease.id)
        yield* store.put("l/free", bytes("1"))
        const deleted = yield* Effect.forkChild(
          store.watch("l/", { fromRevision: bound.revision }).pipe(
            Stream.filter((e) => e._tag === "Delete"),
            Stream.take(1),
            Stream.runCollect
          )
        )
        expect(Option.getOrThrow(yield* store.get("l/bound")).lease).toBe(lease.id)
        yield* advance(1500)
        yield* store.keepAlive(lease)
        // 3.5 s after the grant, but only 2 s after the keep-alive
        yield* advance(2000)
        expect(Option.isSome(yield* store.get("l/bound"))).toBe(true)
        yield* advance(1500)
        yield* eventually(Effect.gen(function*() {
          expect(yield* store.get("l/bound")).toEqual(Option.none())
        }))
        expect(Option.isSome(yield* store.get("l/free"))).toBe(true)
        const events = yield* Fiber.join(deleted).pipe(Effect.timeout("10 seconds"))
        expect(events).toMatchObject([{ _tag: "Delete", key: "l/bound" }])
        // the ended lease can neither be used nor kept alive
        const reuse = yield* Effect.flip(store.put("l/late", bytes("1"), { lease }))
        expect(reuse).toMatchObject({ _tag: "LeaseExpired", lease: lease.id })
        expect(reuse.message).toContain(`lease ${lease.id} has expired`)
        const refresh = yield* Effect.flip(store.keepAlive(lease))
        expect(refresh._tag).toBe("LeaseExpired")
        expect(yield* store.get("l/late")).toEqual(Option.none())
      }), 30_000)

    test("revoking a lease deletes its keys at once; rewriting a key without the lease unbinds it", (store) =>
      Effect.gen(function*() {
        const lease = yield* store.grantLease("60 seconds")
        yield* store.put("r/a", bytes("1"), { lease })
        yield* store.transaction([Txn.put("r/b", bytes("1"), { lease }), Txn.put("r/c", bytes("1"), { lease })])
        yield* store.put("r/c", bytes("2"))
        yield* store.revokeLease(lease)
        expect((yield* store.list("r/")).map((e) => [e.key, e.lease])).toEqual([["r/c", undefined]])
        // revoking again is harmless
        yield* store.revokeLease(lease)
        const txn = yield* Effect.flip(store.transaction([Txn.put("r/d", bytes("1"), { lease })]))
        expect(txn._tag).toBe("LeaseExpired")
        const unknown = yield* Effect.flip(store.put("r/e", bytes("1"), { lease: { id: "12345", ttlMillis: 1000 } }))
        expect(unknown._tag).toBe("LeaseExpired")
      }))

    // ---------------------------------------------------------------------------------------------
    // Election and mutex

    test("election: a follower takes over when the leader's lease lapses", (store) =>
      Effect.gen(function*() {
        const key = "election/leader"
        // The leader's lease is never kept alive: it lapses as a hung leader's would.
        const leaderLease = yield* store.grantLease("2 seconds")
        const a = yield* Election.campaign(key, bytes("a"), { lease: leaderLease })
        expect(yield* a.isLeader).toBe(true)
        expect(text(Option.getOrThrow(yield* Election.leader(key)).value)).toBe("a")
        const observed = yield* Effect.forkChild(
          Election.observe(key).pipe(
            Stream.map(Option.map((e) => text(e.value))),
            Stream.takeUntil((leader) => Option.isSome(leader) && leader.value === "b"),
            Stream.runCollect
          )
        )
        const b = yield* Effect.forkChild(Election.campaign(key, bytes("b"), { ttl: "2 seconds" }))
        yield* liveSleep(100)
        expect(b.pollUnsafe()).toBeUndefined()
        expect(text(Option.getOrThrow(yield* Election.leader(key)).value)).toBe("a")

        yield* advance(3000)
        const leadership = yield* Fiber.join(b).pipe(Effect.timeout("10 seconds"))
        expect(yield* leadership.isLeader).toBe(true)
        expect(text(Option.getOrThrow(yield* Election.leader(key)).value)).toBe("b")
        // the old leader learns that it lost
        yield* a.lost.pipe(Effect.timeout("5 seconds"))
        expect(yield* a.isLeader).toBe(false)
        const leaders = yield* Fiber.join(observed).pipe(Effect.timeout("10 seconds"))
        expect(leaders.filter(Option.isSome).map((l) => l.value)).toEqual(["a", "b"])
        // b keeps its lease alive: it stays leader long after a's lapsed
        yield* advance(3000)
        expect(yield* leadership.isLeader).toBe(true)
        yield* leadership.resign
        expect(yield* Election.leader(key)).toEqual(Option.none())
        expect(yield* leadership.isLeader).toBe(false)
      }), 30_000)

    test("mutex: lock waits for the holder; critical sections never overlap", (store) =>
      Effect.gen(function*() {
        const inside = yield* Ref.make(0)
        const overlaps = yield* Ref.make(0)
        const section = (id: number) =>
          Effect.gen(function*() {
            if ((yield* Ref.updateAndGet(inside, (n) => n + 1)) > 1) yield* Ref.update(overlaps, (n) => n + 1)
            yield* liveSleep(5)
            yield* store.put("mutex/last", bytes(String(id)))
            yield* Ref.update(inside, (n) => n - 1)
          }).pipe(Mutex.withLock("mutex/lock", { ttl: "10 seconds" }))
        yield* Effect.forEach([1, 2, 3, 4], section, { concurrency: "unbounded" })
        expect(yield* Ref.get(overlaps)).toBe(0)
        expect(yield* store.get("mutex/lock")).toEqual(Option.none())

        const held = yield* Effect.scoped(Effect.gen(function*() {
          const first = yield* Mutex.lock("mutex/lock", { ttl: "10 seconds", owner: "first" })
          const second = yield* Mutex.tryLock("mutex/lock", { ttl: "10 seconds" })
          expect(Option.isNone(second)).toBe(true)
          expect(text(Option.getOrThrow(yield* store.get("mutex/lock")).value)).toBe("first")
          return first
        }))
        expect(yield* held.isHeld).toBe(false)
        expect(yield* store.get("mutex/lock")).toEqual(Option.none())
      }), 30_000)

    // ---------------------------------------------------------------------------------------------
    // Size

    test("a 5 MB value round-trips through put, get, list, watch, compare-and-set and transactions", (store) =>
      Effect.gen(function*() {
        const big = new Uint8Array(randomBytes(5 * 1024 * 1024))
        const start = (yield* store.revision) + 1
        const watched = yield* Effect.forkChild(
          store.watch("big/", { fromRevision: start }).pipe(Stream.take(1), Stream.runCollect)
        )
        const written = yield* store.put("big/a", big)
        expect(written.version).toBe(1)
        const read = Option.getOrThrow(yield* store.get("big/a"))
        expect(read.value.byteLength).toBe(big.byteLength)
        expect(sameBytes(read.value, big)).toBe(true)
        const listed = yield* store.list("big/")
        expect(listed.length).toBe(1)
        expect(sameBytes(listed[0]!.value, big)).toBe(true)
        const [event] = yield* Fiber.join(watched).pipe(Effect.timeout("20 seconds"))
        expect(event?._tag === "Put" && sameBytes(event.entry.value, big)).toBe(true)
        // a stale compare-and-set of a big value changes nothing
        const stale = yield* Effect.flip(store.compareAndSet("big/a", 0, big))
        expect(stale._tag).toBe("VersionConflict")
        // a transaction whose values add up to more than one request
        const two = new Uint8Array(randomBytes(1024 * 1024))
        const txn = yield* store.transaction([
          Txn.put("big/a", bytes("small now"), { expectedVersion: 1 }),
          Txn.put("big/b", two),
          Txn.put("big/c", two.subarray(0, 900 * 1024)),
          Txn.put("big/d", bytes("tiny"))
        ])
        expect(txn.entries.map((e) => e.version)).toEqual([2, 1, 1, 1])
        const after = yield* store.getMany(["big/a", "big/b", "big/c", "big/d"])
        expect(text(Option.getOrThrow(after[0]!).value)).toBe("small now")
        expect(sameBytes(Option.getOrThrow(after[1]!).value, two)).toBe(true)
        expect(sameBytes(Option.getOrThrow(after[2]!).value, two.subarray(0, 900 * 1024))).toBe(true)
        expect(text(Option.getOrThrow(after[3]!).value)).toBe("tiny")
        expect(yield* store.delete("big/b")).toBe(true)
        expect((yield* store.list("big/")).map((e) => e.key)).toEqual(["big/a", "big/c", "big/d"])
        // the documented limit
        const tooBig = yield* Effect.flip(store.put("big/huge", new Uint8Array(128 * 1024 * 1024 + 1)))
        expect(tooBig.message).toContain("over the limit of 134217728 bytes (128 MiB)")
      }), 60_000)

    // ---------------------------------------------------------------------------------------------
    // Namespaces

    test("a namespace sees and writes only its own keys, relative to its prefix", (store) =>
      Effect.gen(function*() {
        const fw = StateStore.namespaced(store, "frameworks/hello/")
        yield* store.put("frameworks/other/id", bytes("x"))
        const id = yield* fw.compareAndSet("id", 0, bytes("f-1"))
        expect(id.key).toBe("id")
        expect(text(Option.getOrThrow(yield* store.get("frameworks/hello/id")).value)).toBe("f-1")
        yield* fw.transaction([Txn.put("tasks/t1", bytes("1")), Txn.check("id", 1)])
        expect((yield* fw.list("")).map((e) => e.key)).toEqual(["id", "tasks/t1"])
        expect((yield* fw.list("", { after: "id" })).map((e) => e.key)).toEqual(["tasks/t1"])
        expect((yield* fw.getMany(["id", "nope"])).map(Option.isSome)).toEqual([true, false])
        const conflict = yield* Effect.flip(fw.compareAndSet("id", 0, bytes("f-2")))
        expect(conflict).toMatchObject({ _tag: "VersionConflict", key: "id" })
        const emptyKey = yield* Effect.flip(fw.put("", bytes("x")))
        expect(emptyKey.message).toContain("a key must be a non-empty string")
        const events = yield* fw.watch("tasks/", { fromRevision: id.revision }).pipe(Stream.take(1), Stream.runCollect)
        expect(events).toMatchObject([{ _tag: "Put", entry: { key: "tasks/t1" } }])
        // a namespace of a namespace nests
        const tasks = StateStore.namespaced(fw, "tasks/")
        expect((yield* tasks.list("")).map((e) => e.key)).toEqual(["t1"])
        expect(yield* fw.delete("tasks/t1")).toBe(true)
        expect((yield* store.list("frameworks/")).map((e) => e.key)).toEqual(["frameworks/hello/id", "frameworks/other/id"])
      }))
  })
}
