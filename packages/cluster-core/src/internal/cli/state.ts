/**
 * `berth state`: lists, gets and dumps the keys of any state store as JSON, for operators
 * debugging a master or a framework. SQLite files are opened read-only, so inspecting a live
 * master's state is safe.
 */
import { Effect, Option, Stream } from "effect"
import { StateStore, StoreError } from "@berth/storage"

export interface Options {
  /** A store URL: `memory:`, `sqlite:<path>` or `etcd:<endpoints>` (see `StateStore.layerFromUrl`). */
  readonly store: string
  /** Only keys starting with this prefix ("" for all). */
  readonly prefix: string
  /** One key to print with its value ("" for none). */
  readonly get: string
  /** Print every entry under the prefix with its value, not only the keys. */
  readonly dump: boolean
}

/** A value as JSON when it is JSON (as every TypedStore value is), else as text, else as base64. */
const render = (value: Uint8Array): Record<string, unknown> => {
  let text: string
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(value)
  } catch {
    return { base64: Buffer.from(value).toString("base64") }
  }
  try {
    return { json: JSON.parse(text) as unknown }
  } catch {
    return { text }
  }
}

const describe = (entry: StateStore.Entry, withValue: boolean): Record<string, unknown> => ({
  key: entry.key,
  version: entry.version,
  revision: entry.revision,
  ...(entry.lease === undefined ? {} : { lease: entry.lease }),
  bytes: entry.value.byteLength,
  ...(withValue ? render(entry.value) : {})
})

/** Usage errors exit 2 (like bad flags), failures to read the store exit 1; both print one line. */
class Usage {
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

class NotFound {
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

const print = (value: unknown) => Effect.sync(() => process.stdout.write(JSON.stringify(value, null, 2) + "\n"))

export const run = (options: Options): Effect.Effect<void> =>
  Effect.gen(function*() {
    if (options.get !== "" && (options.dump || options.prefix !== "")) {
      return yield* Effect.fail(new Usage("--get: reads one key; it cannot be combined with --dump or --prefix"))
    }
    yield* StateStore.parseUrl(options.store).pipe(Effect.mapError((error) => new Usage(`--store: ${error.message}`)))
    yield* Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      if (options.get !== "") {
        const entry = yield* store.get(options.get)
        if (Option.isNone(entry)) return yield* Effect.fail(new NotFound(`key ${JSON.stringify(options.get)} not found in ${options.store}`))
        return yield* print(describe(entry.value, true))
      }
      const revision = yield* store.revision
      const entries = yield* Stream.runCollect(StateStore.listAll(options.prefix))
      yield* print({
        store: options.store,
        revision,
        prefix: options.prefix,
        count: entries.length,
        [options.dump ? "entries" : "keys"]: entries.map((entry) => describe(entry, options.dump))
      })
    }).pipe(
      Effect.provide(StateStore.layerFromUrl(options.store, { readOnly: true })),
      Effect.scoped,
      Effect.mapError((error) => (error instanceof StoreError.InvalidStoreUrl ? new Usage(`--store: ${error.message}`) : error))
    )
  }).pipe(
    Effect.catch((error: { readonly message: string }) =>
      Effect.sync(() => {
        process.stderr.write(`berth state: ${error.message}\n`)
        process.exitCode = error instanceof Usage ? 2 : 1
      })
    )
  )
