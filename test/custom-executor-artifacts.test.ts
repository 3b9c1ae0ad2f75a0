// A custom executor's artifacts (ExecutorInfo.command.uris) are fetched into its sandbox before
// its program starts, with the fetcher command tasks use; the program may itself be one of them.
// A failed fetch fails the launching tasks with REASON_FETCHER_FAILED, and no program starts.
import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import * as Framework from "./support/framework.ts"

const fixture = fileURLToPath(new URL("./fixtures/customExecutor.ts", import.meta.url))
const { TaskState } = v1

/** A directory of artifacts, removed with the scope. */
const artifacts = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-executor-artifacts-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/**
 * `executor.tar.gz` holding `bin/run-executor` (mode 755), a script that starts the fixture
 * executor: the program the agent runs comes out of the archive, not from the repository.
 */
const packExecutor = (dir: string) => {
  const staging = path.join(dir, "staging")
  fs.mkdirSync(path.join(staging, "bin"), { recursive: true })
  fs.writeFileSync(path.join(staging, "bin", "run-executor"), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(fixture)}\n`, { mode: 0o755 })
  const archive = path.join(dir, "executor.tar.gz")
  execFileSync("tar", ["-czf", archive, "-C", staging, "bin"])
  fs.writeFileSync(path.join(dir, "settings.txt"), "colour=blue\n")
  return archive
}

const executor = (executorId: string, uris: ReadonlyArray<Partial<v1.CommandUri>>, value = "./bin/run-executor") =>
  v1.ExecutorInfo.create({
    type: v1.ExecutorInfo_Type.CUSTOM,
    executorId,
    resources: [Resources.scalar("cpus", 0.25), Resources.scalar("mem", 128)],
    command: v1.CommandInfo.create({ shell: true, value, uris: uris.map((u) => v1.CommandUri.create(u)) })
  })
const task = (taskId: string, info: v1.ExecutorInfo, data = "") =>
  v1.TaskInfo.create({ taskId, name: taskId, resources: [Resources.scalar("cpus", 0.25), Resources.scalar("mem", 32)], executor: info, data: Buffer.from(data) })

const sandboxOf = (cluster: TestCluster.TestCluster, frameworkId: string, executorId: string) =>
  path.join(cluster.agents[0]!.workDir, "frameworks", frameworkId, "executors", executorId, "runs", "latest")

describe("custom executor artifacts", () => {
  it.live("the program comes from a fetched .tar.gz (extracted, executable) and runs in its sandbox beside the other URIs", () =>
    Effect.gen(function*() {
      const dir = yield* artifacts
      const archive = packExecutor(dir)
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master, "executor-artifacts")
      const info = executor("packed", [
        { value: pathToFileURL(archive).href, extract: true, cache: true },
        { value: pathToFileURL(path.join(dir, "settings.txt")).href, outputFile: "conf/settings.txt" }
      ])
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [Framework.launch([task("a1", info), task("a2", info, "finish")])])
      yield* framework.awaitState("a1", TaskState.RUNNING)
      yield* framework.awaitState("a2", TaskState.FINISHED)

      const sandbox = sandboxOf(cluster, framework.frameworkId, "packed")
      // The program ran from the sandbox: it wrote its pid and environment there.
      expect(fs.statSync(path.join(sandbox, "bin", "run-executor")).mode & 0o111).not.toBe(0)
      expect(fs.readFileSync(path.join(sandbox, "conf", "settings.txt"), "utf8")).toBe("colour=blue\n")
      expect(Number(fs.readFileSync(path.join(sandbox, "executor.pid"), "utf8"))).toBeGreaterThan(0)
      const env = JSON.parse(fs.readFileSync(path.join(sandbox, "env.json"), "utf8")) as Record<string, string>
      expect(fs.realpathSync(env.BERTH_SANDBOX!)).toBe(fs.realpathSync(sandbox))
      // The archive was kept in the agent's fetcher cache (cache: true).
      expect(fs.readdirSync(path.join(cluster.agents[0]!.workDir, "cache")).length).toBeGreaterThan(0)
    }), 120_000)

  it.live("a failed fetch fails the launching tasks with REASON_FETCHER_FAILED; no program starts; the executor's share comes back", () =>
    Effect.gen(function*() {
      const dir = yield* artifacts
      const missing = pathToFileURL(path.join(dir, "no-such-executor.tar.gz")).href
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master, "executor-artifacts-missing")
      const info = executor("unfetchable", [{ value: missing, extract: true }])
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [Framework.launch([task("m1", info), task("m2", info)])])
      yield* framework.awaitTerminal(["m1", "m2"])
      for (const taskId of ["m1", "m2"]) {
        const last = framework.updates.filter((u) => u.taskId === taskId).at(-1)!
        expect(last.state).toBe(TaskState.FAILED)
        expect(last.reason).toBe(v1.TaskStatus_Reason.FETCHER_FAILED)
        expect(last.message).toContain(`Failed to fetch '${missing}'`)
        expect(framework.updates.some((u) => u.taskId === taskId && u.state === TaskState.RUNNING)).toBe(false)
      }
      const sandbox = sandboxOf(cluster, framework.frameworkId, "unfetchable")
      expect(fs.existsSync(path.join(sandbox, "executor.pid"))).toBe(false)
      // The master heard the executor is gone: the whole agent is offered again.
      let whole = 0
      for (let i = 0; i < 100 && whole < 2 - 1e-9; i++) {
        const next = yield* framework.nextOffer
        whole = Resources.sumScalar(next.resources, "cpus")
        yield* framework.session.decline([next.offerId], { refuseSeconds: 0.05 })
      }
      expect(whole).toBeCloseTo(2, 5)
    }), 120_000)

  it.live("an executor URI that breaks a rule fails its task naming the field, and fetches nothing", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master, "executor-artifacts-invalid")
      const info = executor("bad-uri", [{ value: "ftp://example.invalid/executor.tar.gz" }])
      const offer = yield* framework.nextOffer
      const accepted = yield* framework.session.accept([offer.offerId], [Framework.launch([task("b1", info)])]).pipe(Effect.flip, Effect.option)
      if (accepted._tag === "Some") {
        // The master refused the Accept itself.
        expect(String((accepted.value as { message?: string }).message ?? accepted.value)).toMatch(/executor\.command\.uris\[0\]\.value: the scheme must be file, http or https/)
        return
      }
      yield* framework.awaitTerminal(["b1"])
      const last = framework.updates.filter((u) => u.taskId === "b1").at(-1)!
      expect(last.message).toMatch(/task\.executor\.command\.uris\[0\]\.value: the scheme must be file, http or https, not 'ftp'/)
    }), 120_000)
})
