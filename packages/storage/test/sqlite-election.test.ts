import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { StateStore } from "@berth/storage"
import { eventually, liveSleep } from "./stateStoreSuite.ts"
import { tempDir } from "./tempDir.ts"

const TTL_MS = 1500

/** A campaigning process; killed by pid when the test's scope closes. */
const candidate = (db: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, [path.join(import.meta.dirname, "electionWorker.ts")], {
        env: { ...process.env, BERTH_DB: db, BERTH_TTL_MS: String(TTL_MS) },
        stdio: ["ignore", "pipe", "inherit"]
      })
      const output = { text: "" }
      child.stdout!.on("data", (chunk: Buffer) => (output.text += chunk.toString()))
      return { child, output }
    }),
    ({ child }) => Effect.sync(() => killHard(child))
  )

const killHard = (child: ChildProcess) => {
  if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGKILL")
}

describe("leader election across processes on one SQLite file", () => {
  it.live("when the leader is SIGKILLed, the other process takes over once the lease TTL has passed", () =>
    Effect.gen(function*() {
      const db = path.join(yield* tempDir, "state.db")
      const store = yield* StateStore.make(StateStore.layerSqlite({ path: db }))
      const leaderPid = Effect.map(store.get("leader"), Option.map((e) => Number(new TextDecoder().decode(e.value))))

      const a = yield* candidate(db)
      yield* eventually(Effect.sync(() => expect(a.output.text).toContain("leader")), 20_000)
      expect(yield* leaderPid).toEqual(Option.some(a.child.pid))

      const b = yield* candidate(db)
      yield* eventually(Effect.sync(() => expect(b.output.text).toContain("campaigning")), 20_000)
      // a keeps its lease alive: b waits, well past one TTL
      yield* liveSleep(TTL_MS * 2)
      expect(b.output.text).not.toContain("leader")
      expect(yield* leaderPid).toEqual(Option.some(a.child.pid))

      const killedAt = performance.now()
      killHard(a.child)
      yield* eventually(Effect.sync(() => expect(b.output.text).toContain("leader")), 20_000)
      const takeover = performance.now() - killedAt
      expect(yield* leaderPid).toEqual(Option.some(b.child.pid))
      // a renewed its lease every third of the TTL, so b had to wait for most of a TTL after the kill
      expect(takeover).toBeGreaterThanOrEqual(TTL_MS / 3)
      expect(takeover).toBeLessThan(TTL_MS + 2_000)
    }), 60_000)
})
