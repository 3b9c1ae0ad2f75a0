import { describe, expect, it } from "@effect/vitest"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const main = fileURLToPath(new URL("../dist/main.js", import.meta.url))

const runHello = (master: string, tasks: number) =>
  Effect.callback<{ code: number | null; stdout: string; stderr: string }>((resume) => {
    const child = spawn(process.execPath, [main, "--master", master, "--tasks", String(tasks)], { stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (c) => (stdout += c))
    child.stderr.on("data", (c) => (stderr += c))
    child.on("exit", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

describe("examples/hello-framework", () => {
  it.live("launches 30 echo tasks across 3 agents, prints every output and exits 0", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:1024" })
      const result = yield* runHello(cluster.master, 30)
      expect(result.code, result.stderr).toBe(0)
      const lines = result.stdout.split("\n").filter((l) => l.startsWith("hello-"))
      expect(lines).toEqual(
        Array.from({ length: 30 }, (_, i) => expect.stringMatching(new RegExp(`^hello-${i} FINISHED: Hello from task ${i} on \\S+$`)))
      )
      // The outputs it printed are the real stdout files in the agents' sandboxes, spread over
      // all three agents (each holds at most 10 tasks of 0.1 cpus).
      const used = cluster.agents.filter((agent) => {
        const frameworks = path.join(agent.workDir, "frameworks")
        return fs.existsSync(frameworks) && fs.readdirSync(frameworks).length > 0
      })
      expect(used).toHaveLength(3)
      let files = 0
      for (const agent of cluster.agents) {
        for (const fw of fs.readdirSync(path.join(agent.workDir, "frameworks"))) {
          const executors = path.join(agent.workDir, "frameworks", fw, "executors")
          for (const task of fs.readdirSync(executors)) {
            const stdout = fs.readFileSync(path.join(executors, task, "runs", "latest", "stdout"), "utf8")
            expect(stdout).toMatch(new RegExp(`^Hello from task ${task.slice("hello-".length)} on \\S+\\n$`))
            files++
          }
        }
      }
      expect(files).toBe(30)
      // It tore itself down: the master no longer keeps it or its tasks.
      const state = yield* cluster.operator.state
      expect(state.frameworks).toEqual([])
    }), 60_000)
})

describe("the README's 20-line framework", () => {
  it.live("launches three tasks and exits once all three finished", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const tiny = fileURLToPath(new URL("../dist/tiny.js", import.meta.url))
      const result = yield* Effect.callback<{ code: number | null; stdout: string }>((resume) => {
        const child = spawn(process.execPath, [tiny, cluster.master], { stdio: ["ignore", "pipe", "inherit"] })
        let stdout = ""
        child.stdout.on("data", (c) => (stdout += c))
        child.on("exit", (code) => resume(Effect.succeed({ code, stdout })))
        return Effect.sync(() => child.kill("SIGKILL"))
      })
      expect(result.code).toBe(0)
      expect(result.stdout.split("\n").filter((l) => l.startsWith("tiny-")).map((l) => l.split(" ").slice(0, 2).join(" ")).sort())
        .toEqual(["tiny-0 FINISHED", "tiny-1 FINISHED", "tiny-2 FINISHED"])
    }), 60_000)
})
