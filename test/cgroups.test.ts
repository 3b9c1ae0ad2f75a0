import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { Agent } from "@berth/cluster-core"
import { Effect, References } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"
import * as MasterSupport from "./support/master.ts"
import { fileURLToPath } from "node:url"
import { startAgent, waitUntil, workDir } from "./support/agentProcess.ts"
import * as ScriptedMaster from "./support/scriptedMaster.ts"

/** What the agent will find (the same rules as its startup check, seen from the test). */
const available = ((): { readonly version: "v2" | "v1" } | { readonly reason: string } => {
  if (process.getuid?.() !== 0) return { reason: "the tests do not run as root" }
  const controllers = (() => {
    try {
      return fs.readFileSync("/sys/fs/cgroup/cgroup.controllers", "utf8")
    } catch {
      return undefined
    }
  })()
  if (controllers !== undefined && /\bcpu\b/.test(controllers) && /\bmemory\b/.test(controllers)) return { version: "v2" }
  if (fs.existsSync("/sys/fs/cgroup/memory/memory.limit_in_bytes") && fs.existsSync("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")) return { version: "v1" }
  return { reason: "neither cgroup v2 with cpu and memory nor cgroup v1 memory and cpu hierarchies" }
})()
console.log("version" in available ? `cgroups: available (${available.version}); the limits are tested` : `cgroups: unavailable (${available.reason}); the limit tests are skipped`)

const setup = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-cgroups-"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )
  const master = yield* MasterSupport.start()
  const agent = yield* Agent.start({ master: master.endpoint, workDir: dir, resources: "cpus:2;mem:2048;disk:1024" })
  yield* agent.registered
  const framework = yield* Framework.open(master.endpoint)
  return { framework, sandbox: (taskId: string) => path.join(dir, "frameworks", framework.frameworkId, "executors", taskId, "runs", "latest") }
})

const task = (taskId: string, value: string, cpus: number, mem: number) =>
  v1.TaskInfo.create({
    name: taskId,
    taskId,
    resources: [Resources.scalar("cpus", cpus), Resources.scalar("mem", mem)],
    command: { shell: true, value }
  })

const quiet = Effect.provideService(References.MinimumLogLevel, "Warn")

describe("cgroup limits for process tasks", () => {
  it.live.skipIf(!("version" in available))("a task that allocates beyond its memory is stopped with REASON_CONTAINER_LIMITATION_MEMORY; one within its limits finishes", () =>
    Effect.gen(function*() {
      const { framework } = yield* setup
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        Framework.launch([
          // Doubles a string 28 times: 256 MB, far beyond 32 MB.
          task("hog", "awk 'BEGIN { s = \"x\"; for (i = 0; i < 28; i++) s = s s; print length(s) }'", 0.5, 32),
          task("modest", "echo ok", 0.1, 64)
        ])
      ])
      const failed = yield* framework.awaitState("hog", v1.TaskState.FAILED)
      expect(failed.reason).toBe(v1.TaskStatus_Reason.CONTAINER_LIMITATION_MEMORY)
      expect(failed.message).toContain("more than its 32 MB of memory")
      yield* framework.awaitState("modest", v1.TaskState.FINISHED)
    }).pipe(quiet), 60_000)

  it.live.skipIf(!("version" in available))("the task's cgroup carries cpu.max/cfs quota and memory limit from its resources, and is removed after the task", () =>
    Effect.gen(function*() {
      const { framework, sandbox } = yield* setup
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        Framework.launch([task("limited", "cat /proc/self/cgroup > cgroups; exec sleep 60", 0.25, 100)])
      ])
      yield* framework.awaitState("limited", v1.TaskState.RUNNING)
      const file = path.join(sandbox("limited"), "cgroups")
      yield* waitUntil("the task's cgroup file", () => fs.existsSync(file) && fs.readFileSync(file, "utf8").includes("\n"))
      const lines = fs.readFileSync(file, "utf8").trim().split("\n").map((line) => line.split(":"))
      const of = (controller: string) => lines.find(([, names]) => names!.split(",").includes(controller))?.[2]
      let dirs: Array<string>
      if ("version" in available && available.version === "v2") {
        const dir = path.join("/sys/fs/cgroup", lines.find(([id]) => id === "0")![2]!)
        expect(fs.readFileSync(path.join(dir, "cpu.max"), "utf8").trim()).toBe("25000 100000")
        expect(Number(fs.readFileSync(path.join(dir, "memory.max"), "utf8"))).toBe(100 * 1024 * 1024)
        dirs = [dir]
      } else {
        const memory = path.join("/sys/fs/cgroup/memory", of("memory")!)
        const cpu = path.join("/sys/fs/cgroup/cpu", of("cpu")!)
        expect(Number(fs.readFileSync(path.join(memory, "memory.limit_in_bytes"), "utf8"))).toBe(100 * 1024 * 1024)
        expect(Number(fs.readFileSync(path.join(cpu, "cpu.cfs_quota_us"), "utf8"))).toBe(25000)
        dirs = [memory, cpu]
      }
      expect(dirs.every((dir) => dir.includes("/berth-"))).toBe(true)
      yield* framework.session.kill("limited")
      yield* framework.awaitState("limited", v1.TaskState.KILLED)
      yield* waitUntil("the task's cgroups to be removed", () => dirs.every((dir) => !fs.existsSync(dir)), 10_000)
    }).pipe(quiet), 60_000)

  it.live.skipIf(!("version" in available))("a custom executor outgrowing its memory (its resources and its task's) is killed; its task fails with REASON_CONTAINER_LIMITATION_MEMORY", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-cgroups-")
      const master = yield* ScriptedMaster.start()
      const agent = yield* startAgent(master.endpoint, dir)
      yield* agent.registered
      const fixture = fileURLToPath(new URL("./fixtures/customExecutor.ts", import.meta.url))
      const executor = v1.ExecutorInfo.create({
        type: v1.ExecutorInfo_Type.CUSTOM,
        executorId: "hungry",
        resources: [Resources.scalar("cpus", 0.5), Resources.scalar("mem", 160)],
        command: v1.CommandInfo.create({ shell: false, value: process.execPath, arguments: [process.execPath, fixture] })
      })
      const framework = v1.FrameworkInfo.create({ frameworkId: "f1", name: "cgroups" })
      master.send({
        $case: "run",
        value: { tasks: [{ framework, task: v1.TaskInfo.create({ taskId: "h1", name: "h1", resources: [Resources.scalar("mem", 32)], executor }) }], taskGroups: [] }
      })
      yield* master.waitFor("h1 RUNNING", () => master.updates.find((s) => s.taskId === "h1" && s.state === v1.TaskState.RUNNING))
      master.send({ $case: "frameworkMessage", value: { frameworkId: "f1", executorId: "hungry", data: Buffer.from("hog") } })
      const failed = yield* master.waitFor("h1 FAILED", () => master.updates.find((s) => s.taskId === "h1" && s.state === v1.TaskState.FAILED))
      expect(failed.reason).toBe(v1.TaskStatus_Reason.CONTAINER_LIMITATION_MEMORY)
      expect(failed.message).toContain("the executor used more than its 192 MB of memory")
    }).pipe(quiet), 60_000)
})
