/**
 * The behaviour every StateStore backend must have, run once per backend.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Option } from "effect"
import { StateStore, StoreError } from "@berth/storage"

export type StoreLayer = Layer.Layer<StateStore.StateStore, StoreError.StoreError>

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
const text = (value: Uint8Array): string => new TextDecoder().decode(value)

export const stateStoreSuite = (backend: string, makeLayer: () => StoreLayer): void => {
  describe(`StateStore (${backend})`, () => {
    const test = <A, E>(name: string, body: (store: StateStore.StateStore["Service"]) => Effect.Effect<A, E>) =>
      it.effect(name, () => Effect.flatMap(StateStore.StateStore, body).pipe(Effect.provide(makeLayer())))

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
        expect(text(current.value)).toBe("3")
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
        expect(emptyKey).toMatchObject({ _tag: "StoreError", backend, operation: "put", key: "" })
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
        expect(yield* store.list("")).toEqual([])
      }))

    it.effect("each build of the layer is independent", () =>
      Effect.gen(function*() {
        const write = Effect.exit(StateStore.StateStore.use((s) => s.compareAndSet("once", 0, bytes("x"))))
        expect(Exit.isSuccess(yield* write.pipe(Effect.provide(makeLayer())))).toBe(true)
        expect(Exit.isSuccess(yield* write.pipe(Effect.provide(makeLayer())))).toBe(true)
      }))
  })
}
