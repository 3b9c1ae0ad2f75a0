import { describe, expect, it } from "@effect/vitest"
import { Master } from "@berth/cluster-core"
import { Resources, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Effect, References } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Framework from "./support/framework.ts"
import * as MasterSupport from "./support/master.ts"
import { alive } from "./support/processes.ts"

const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))

describe("berth agent as a process", () => {
  it.live("stopping the agent with SIGTERM kills the process groups of its running tasks", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-agent-"))),
        (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
      )
      const master = yield* MasterSupport.start()
      const agent = yield* Effect.acquireRelease(
        Effect.sync(() =>
          spawn(process.execPath, [berth, "agent", "--master", master.endpoint, "--work-dir", dir, "--resources", "cpus:1;mem:256"], {
            stdio: "ignore"
          })
        ),
        (child) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
      )
      const framework = yield* Framework.open(master.endpoint)
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        Framework.launch(["a", "b"].map((id) =>
          v1.TaskInfo.create({
            name: id,
            taskId: id,
            resources: [Resources.scalar("cpus", 0.25)],
            command: { shell: true, value: "sleep 300 & echo $! > child; echo $$ > pid; wait" }
          })
        ))
      ])
      yield* framework.awaitState("a", v1.TaskState.RUNNING)
      yield* framework.awaitState("b", v1.TaskState.RUNNING)
      const pids: Array<number> = []
      for (const id of ["a", "b"]) {
        const sandbox = path.join(dir, "frameworks", framework.frameworkId, "executors", id, "runs", "latest")
        while (!fs.existsSync(path.join(sandbox, "child")) || !fs.existsSync(path.join(sandbox, "pid"))) {
          yield* Effect.sleep("20 millis")
        }
        for (const file of ["pid", "child"]) pids.push(Number(fs.readFileSync(path.join(sandbox, file), "utf8")))
      }
      expect(pids.filter(alive)).toHaveLength(4)

      agent.kill("SIGTERM")
      const code = yield* Effect.callback<number | null>((resume) => {
        if (agent.exitCode !== null) return resume(Effect.succeed(agent.exitCode))
        agent.once("exit", (c) => resume(Effect.succeed(c)))
      })
      expect(code).not.toBeNull()
      expect(pids.filter(alive)).toEqual([])
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")), 30_000)
})
