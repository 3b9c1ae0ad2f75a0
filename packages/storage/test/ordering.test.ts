import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, Context, Effect, Layer, Schema } from "effect"
import { StateStore } from "@berth/storage"

// Independent of the implementation: compare code point by code point.
const byCodePoint = (a: string, b: string): number => {
  const x = Array.from(a, (c) => c.codePointAt(0)!)
  const y = Array.from(b, (c) => c.codePointAt(0)!)
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i]! - y[i]!
  }
  return x.length - y.length
}

// The characters where UTF-16 order, code point order and prefix bounds disagree or overflow.
const alphabet = ["a", "b", "/", "\u00E9", "\uD7FF", "\uE000", "\uFFFD", "\u{1F600}", "\u{10000}", "\u{10FFFF}"]
const Key = Arbitrary.map(
  Arbitrary.array(Arbitrary.schema(Schema.Literals(alphabet)), { minLength: 1, maxLength: 4 }),
  (chars) => chars.join("")
)

const store = (layer: Layer.Layer<StateStore.StateStore, unknown>) =>
  Effect.map(Layer.build(layer), (context) => Context.get(context, StateStore.StateStore))

const pages = (s: StateStore.StateStore["Service"], prefix: string, limit: number) =>
  Effect.gen(function*() {
    const keys: Array<string> = []
    let after: string | undefined = undefined
    while (true) {
      const page: ReadonlyArray<StateStore.Entry> = yield* s.list(prefix, { limit, after })
      if (page.length === 0) return keys
      keys.push(...page.map((e) => e.key))
      after = page[page.length - 1]!.key
    }
  })

describe("list order", () => {
  it.effect.prop(
    "memory and SQLite list and page any keys in the same code point order",
    [Arbitrary.array(Key, { maxLength: 24 }), Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 4 }))],
    ([generated, limit]) =>
      Effect.gen(function*() {
        const keys = [...new Set(generated)]
        const prefixes = ["", ...keys.map((k) => Array.from(k).slice(0, 2).join(""))]
        const stores = [
          yield* store(StateStore.layerMemory),
          yield* store(StateStore.layerSqlite({ path: ":memory:" }))
        ]
        for (const s of stores) {
          for (const key of keys) yield* s.put(key, new Uint8Array(0))
        }
        for (const prefix of prefixes) {
          const expected = keys.filter((k) => k.startsWith(prefix)).sort(byCodePoint)
          for (const s of stores) {
            expect((yield* s.list(prefix)).map((e) => e.key)).toEqual(expected)
            expect(yield* pages(s, prefix, limit)).toEqual(expected)
          }
        }
      })
  )
})
