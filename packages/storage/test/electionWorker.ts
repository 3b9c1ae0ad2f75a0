/**
 * Run as a separate process by sqlite-election.test.ts: campaigns for the
 * key `leader` in the SQLite file `BERTH_DB` with a lease of `BERTH_TTL_MS`,
 * prints "campaigning" and then "leader" when elected, and leads until it is
 * killed.
 */
import { Effect } from "effect"
import { Election, StateStore } from "@berth/storage"

const program = Effect.gen(function*() {
  process.stdout.write("campaigning\n")
  const leadership = yield* Election.campaign("leader", new TextEncoder().encode(String(process.pid)), {
    ttl: `${Number(process.env["BERTH_TTL_MS"])} millis`
  })
  process.stdout.write("leader\n")
  yield* leadership.lost
  process.stdout.write("lost\n")
}).pipe(Effect.scoped)

Effect.runPromise(program.pipe(Effect.provide(StateStore.layerSqlite({ path: process.env["BERTH_DB"]! })))).catch(
  (error: unknown) => {
    console.error(error)
    process.exitCode = 1
  }
)
