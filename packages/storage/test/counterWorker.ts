/**
 * Run as a separate process by sqlite.test.ts: announces itself under
 * `ready/`, waits for the key `go` so that all workers contend at once, then
 * increments a shared counter `BERTH_INCREMENTS` times with compare-and-set,
 * retrying on conflicts. Prints how many conflicts it met.
 */
import { Effect, Option, Schedule } from "effect"
import { StateStore } from "@berth/storage"

const program = Effect.gen(function*() {
  const store = yield* StateStore.StateStore
  let conflicts = 0
  const increment = Effect.gen(function*() {
    const current = yield* store.get("counter")
    const version = Option.match(current, { onNone: () => 0, onSome: (e) => e.version })
    const count = Option.match(current, { onNone: () => 0, onSome: (e) => Number(new TextDecoder().decode(e.value)) })
    yield* store.compareAndSet("counter", version, new TextEncoder().encode(String(count + 1)))
  }).pipe(
    Effect.tapError(() => Effect.sync(() => conflicts++)),
    Effect.retry({ while: (e) => e._tag === "VersionConflict" })
  )
  yield* store.put(`ready/${process.pid}`, new Uint8Array(0))
  yield* store.get("go").pipe(Effect.repeat({ until: Option.isSome, schedule: Schedule.spaced("5 millis") }))
  yield* Effect.repeat(increment, { times: Number(process.env["BERTH_INCREMENTS"]) - 1 })
  return conflicts
})

Effect.runPromise(program.pipe(Effect.provide(StateStore.layerSqlite({ path: process.env["BERTH_DB"]! })))).then(
  (conflicts) => {
    process.stdout.write(`${conflicts}\n`)
  },
  (error: unknown) => {
    console.error(error)
    process.exitCode = 1
  }
)
