import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { TaskStates, v1 } from "@berth/proto"
import { DockerExecutor, ExecutorSession } from "@berth/sdk-executor"
import { docker, engineProblem, IMAGE, optedOut } from "./dockerSupport.ts"

// `recover` of the Docker executor, against the real engine: what a restarted agent's executor does
// with a task an earlier executor was given, whatever state its container is in (or none at all).

const { ContainerInfo_Type, TaskState, TaskStatus_Reason: Reason } = v1
const FRAMEWORK = "fw-recover"

if (optedOut) console.warn(`BERTH_SKIP_DOCKER_TESTS=1: skipping the Docker recover suite (${engineProblem})`)

/** Containers (running or not) made for this file's executor `executorId`. */
const ours = (executorId: string): Array<string> =>
  docker("ps", "-a", "--filter", `label=berth.framework-id=${FRAMEWORK}`, "--filter", `label=berth.executor-id=${executorId}`, "--format", "{{.ID}}")
    .split("\n")
    .filter((s) => s !== "")

const pause = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

/** Real-time wait for `predicate`, bounded, so a broken behaviour fails instead of hanging. */
const waitFor = (what: string, predicate: () => boolean, ms = 30_000) =>
  Effect.gen(function*() {
    const deadline = performance.now() + ms
    while (!predicate()) {
      if (performance.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* pause(20)
    }
  })

const task = (taskId: string, script: string): v1.TaskInfo =>
  v1.TaskInfo.create({
    taskId,
    command: { shell: true, value: script },
    container: { type: ContainerInfo_Type.DOCKER, docker: { image: IMAGE } }
  })

/** A fresh sandbox and checkpoint directory (the agent keeps the exit status file outside the sandbox). */
const makeDirs = Effect.acquireRelease(
  Effect.sync(() => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "berth-docker-recover-"))
    fs.mkdirSync(path.join(root, "sandbox"))
    fs.mkdirSync(path.join(root, "checkpoint"))
    return { root, sandbox: path.join(root, "sandbox"), exitStatusFile: path.join(root, "checkpoint", "exit_status") }
  }),
  ({ root }) => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true }))
)

type Dirs = Effect.Success<typeof makeDirs>

/** A Docker executor as the agent runs it (checkpointed), optionally taking over a task, with every status it reports. */
const startExecutor = (executorId: string, dirs: Dirs, recover?: DockerExecutor.Recovered) =>
  Effect.gen(function*() {
    const statuses: Array<v1.TaskStatus> = []
    const inProcess = yield* ExecutorSession.makeInProcess({
      frameworkId: FRAMEWORK,
      executorId,
      agentId: "agent-recover",
      onUpdate: (status) => Effect.sync(() => void statuses.push(status))
    })
    const fiber = yield* DockerExecutor.run({
      sandbox: dirs.sandbox,
      defaultGracePeriodSeconds: 1,
      checkpoint: { onInterrupt: "leave", exitStatusFile: dirs.exitStatusFile },
      ...(recover === undefined ? {} : { recover })
    }).pipe(Effect.provide(ExecutorSession.layerInProcess(inProcess)), Effect.forkScoped)
    const states = () => statuses.map((s) => TaskStates.name(s.state))
    const done = Effect.gen(function*() {
      yield* waitFor(`run to return (have ${states().join(", ")})`, () => fiber.pollUnsafe() !== undefined)
      return yield* Fiber.await(fiber)
    })
    const reached = (state: string) => waitFor(`${state} (have ${states().join(", ")})`, () => states().includes(state))
    return { statuses, states, inProcess, fiber, done, reached }
  })

const executorIds = ["unit-recover-never", "unit-recover-kill", "unit-recover-recorded", "unit-recover-running", "unit-recover-exited", "unit-recover-created"]

describe.skipIf(optedOut)("DockerExecutor.run with recover, against the Docker engine", () => {
  if (engineProblem !== undefined) {
    it("has a Docker engine and the base image", () => {
      throw new Error(
        `No Docker engine with ${IMAGE}: ${engineProblem}. Run 'bash scripts/ci/docker.sh' as root ` +
          "(outside CI, BERTH_SKIP_DOCKER_TESTS=1 skips this suite with a warning)."
      )
    })
    return
  }

  afterAll(() => {
    // Each test asserts it left nothing; this only keeps a failed one from leaking containers.
    const left = executorIds.flatMap(ours)
    if (left.length > 0) docker("rm", "-f", ...left)
  })

  it.live("a task whose container was never created is launched now: STARTING, RUNNING, FINISHED with its output", () =>
    Effect.gen(function*() {
      const dirs = yield* makeDirs
      // The agent restarted between the launch and the container's creation: no container, no exit, no kill.
      expect(ours("unit-recover-never")).toEqual([])
      const executor = yield* startExecutor("unit-recover-never", dirs, {
        task: task("r1", "echo \"ran $BERTH_TASK_ID in $(pwd)\"")
      })
      expect(Exit.isSuccess(yield* executor.done)).toBe(true)
      expect(executor.states()).toEqual(["STARTING", "RUNNING", "FINISHED"])
      const finished = executor.statuses.at(-1)!
      expect(finished.state).toBe(TaskState.FINISHED)
      expect(finished.exitCode).toBe(0)
      expect(fs.readFileSync(path.join(dirs.sandbox, "stdout"), "utf8")).toBe("ran r1 in /mnt/sandbox\n")
      // It ran as a launched task does: recorded before its container was removed, and nothing left.
      expect(JSON.parse(fs.readFileSync(dirs.exitStatusFile, "utf8"))).toEqual({ exitCode: 0, oomKilled: false })
      expect(ours("unit-recover-never")).toEqual([])
    }))

  it.live("with a kill pending it ends KILLED with the kill's reason, and no container is created", () =>
    Effect.gen(function*() {
      const dirs = yield* makeDirs
      const executor = yield* startExecutor("unit-recover-kill", dirs, {
        task: task("r2", "exec sleep 600"),
        killReason: Reason.KILLED_BY_SCHEDULER
      })
      expect(Exit.isSuccess(yield* executor.done)).toBe(true)
      expect(executor.states()).toEqual(["KILLED"])
      expect(executor.statuses[0]!.reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(executor.statuses[0]!.message).toMatch(/never ran/)
      // No launch was attempted: a launch opens the sandbox's output files before it creates anything.
      expect(fs.readdirSync(dirs.sandbox)).toEqual([])
      expect(ours("unit-recover-kill")).toEqual([])
    }))

  it.live("a container created but never started (the agent stopped between create and start) is removed and the task launched", () =>
    Effect.gen(function*() {
      const dirs = yield* makeDirs
      const stale = docker(
        "create",
        "--label", `berth.framework-id=${FRAMEWORK}`,
        "--label", "berth.executor-id=unit-recover-created",
        "--label", "berth.agent-id=agent-recover",
        IMAGE,
        "sh", "-c", "echo stale"
      )
      expect(ours("unit-recover-created")).toEqual([stale.slice(0, 12)])
      const executor = yield* startExecutor("unit-recover-created", dirs, { task: task("r6", "echo fresh") })
      expect(Exit.isSuccess(yield* executor.done)).toBe(true)
      // Not FINISHED from the never-started container's exit code 0: it ran, once, now.
      expect(executor.states()).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(fs.readFileSync(path.join(dirs.sandbox, "stdout"), "utf8")).toBe("fresh\n")
      expect(ours("unit-recover-created")).toEqual([])
    }))

  it.live("no container but an exit recorded (removed before its terminal status got out): reported from it, not run again", () =>
    Effect.gen(function*() {
      const dirs = yield* makeDirs
      fs.writeFileSync(dirs.exitStatusFile, `${JSON.stringify({ exitCode: 3, oomKilled: false })}\n`)
      const executor = yield* startExecutor("unit-recover-recorded", dirs, { task: task("r3", "echo ran again") })
      expect(Exit.isSuccess(yield* executor.done)).toBe(true)
      expect(executor.states()).toEqual(["FAILED"])
      const failed = executor.statuses[0]!
      expect(failed.reason).toBe(Reason.COMMAND_EXECUTOR_FAILED)
      expect(failed.exitCode).toBe(3)
      expect(failed.message).toBe("Container exited with status 3")
      expect(fs.readdirSync(dirs.sandbox)).toEqual([])
      expect(ours("unit-recover-recorded")).toEqual([])
    }))

  it.live("a container still running is re-attached (no new STARTING or RUNNING), and a kill stops it", () =>
    Effect.gen(function*() {
      const dirs = yield* makeDirs
      const info = task("r4", "echo before; trap 'echo stopping; exit 0' TERM; while true; do sleep 0.2; done")
      const first = yield* startExecutor("unit-recover-running", dirs)
      yield* first.inProcess.send({ $case: "launch", value: { task: info } })
      yield* first.reached("RUNNING")
      // The agent stops: its executor is interrupted and leaves the container running.
      yield* Fiber.interrupt(first.fiber)
      const [id] = ours("unit-recover-running")
      expect(id).toBeDefined()
      expect(docker("inspect", "--format", "{{.State.Running}}", id!)).toBe("true")

      const second = yield* startExecutor("unit-recover-running", dirs, { task: info })
      yield* pause(500)
      expect(second.fiber.pollUnsafe()).toBeUndefined()
      expect(second.states()).toEqual([])
      expect(ours("unit-recover-running")).toEqual([id])
      yield* second.inProcess.send({ $case: "kill", value: { taskId: "r4", reason: Reason.KILLED_BY_SCHEDULER } })
      expect(Exit.isSuccess(yield* second.done)).toBe(true)
      expect(second.states()).toEqual(["KILLING", "KILLED"])
      expect(second.statuses.at(-1)!.exitCode).toBe(0)
      // The output it wrote after the re-attach reaches the sandbox too.
      expect(fs.readFileSync(path.join(dirs.sandbox, "stdout"), "utf8")).toBe("before\nstopping\n")
      expect(ours("unit-recover-running")).toEqual([])
    }))

  it.live("a container that exited while nobody watched is reported from its exit status and removed", () =>
    Effect.gen(function*() {
      const dirs = yield* makeDirs
      const info = task("r5", "sleep 1; exit 3")
      const first = yield* startExecutor("unit-recover-exited", dirs)
      yield* first.inProcess.send({ $case: "launch", value: { task: info } })
      yield* first.reached("RUNNING")
      yield* Fiber.interrupt(first.fiber)
      const [id] = ours("unit-recover-exited")
      expect(id).toBeDefined()
      expect(docker("wait", id!)).toBe("3")

      const second = yield* startExecutor("unit-recover-exited", dirs, { task: info })
      expect(Exit.isSuccess(yield* second.done)).toBe(true)
      expect(second.states()).toEqual(["FAILED"])
      expect(second.statuses[0]!.reason).toBe(Reason.COMMAND_EXECUTOR_FAILED)
      expect(second.statuses[0]!.exitCode).toBe(3)
      expect(JSON.parse(fs.readFileSync(dirs.exitStatusFile, "utf8"))).toEqual({ exitCode: 3, oomKilled: false })
      expect(ours("unit-recover-exited")).toEqual([])
    }))
})
