/**
 * Docker tasks outlive the agent too: after `berth agent` is SIGKILLed and restarted, it finds
 * its containers again by their labels. Needs a Docker engine and the image berth-base:bookworm
 * (scripts/ci/docker.sh), like test/docker.test.ts: without them this suite fails loudly, unless
 * BERTH_SKIP_DOCKER_TESTS=1 opts out (with a warning).
 */
import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { Effect, References } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as MasterSupport from "./support/master.ts"
import { killAgent, launch, openFramework, sandbox, startAgent, waitUntil, workDir } from "./support/agentProcess.ts"

const IMAGE = process.env.BERTH_DOCKER_IMAGE ?? "berth-base:bookworm"
const { TaskState, TaskStatus_Reason: Reason } = v1

const docker = (...args: Array<string>): string =>
  execFileSync("docker", args, { encoding: "utf8", timeout: 30_000, stdio: ["ignore", "pipe", "pipe"] }).trim()

const unavailable = (): string | undefined => {
  try {
    docker("image", "inspect", "--format", "{{.Id}}", IMAGE)
    return undefined
  } catch (error) {
    return `no Docker engine with the image ${IMAGE} (${((error as { stderr?: string }).stderr ?? String(error)).split("\n")[0]})`
  }
}

/** Container ids of one task (running or not), by the label the Docker executor sets. */
const containersOf = (frameworkId: string, taskId: string): Array<string> =>
  docker("ps", "-aq", "--no-trunc", "--filter", `label=berth.framework-id=${frameworkId}`, "--filter", `label=berth.task-id=${taskId}`)
    .split("\n")
    .filter((id) => id !== "")

const running = (id: string): boolean => {
  try {
    return docker("inspect", "--format", "{{.State.Running}}", id) === "true"
  } catch {
    return false
  }
}

const dockerTask = (taskId: string, command: string) =>
  v1.TaskInfo.create({
    taskId,
    name: taskId,
    resources: [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 64)],
    command: { shell: true, value: command },
    killPolicy: { gracePeriodSeconds: 1 },
    container: { type: v1.ContainerInfo_Type.DOCKER, docker: v1.ContainerInfo_DockerInfo.create({ image: IMAGE }) }
  })

// Like the other Docker suites: opting out is for a laptop without an engine, never for CI.
const skip = process.env.BERTH_SKIP_DOCKER_TESTS === "1" && process.env.CI !== "true"
if (skip) process.stderr.write("WARNING: BERTH_SKIP_DOCKER_TESTS=1: the Docker agent recovery suite is skipped\n")

describe.skipIf(skip)("agent recovery with Docker tasks", () => {
  it.live("SIGKILLed and restarted, the agent re-attaches to a running container and reports one that exited meanwhile", () =>
    Effect.gen(function*() {
      const problem = unavailable()
      if (problem !== undefined) return yield* Effect.die(new Error(`${problem}: run scripts/ci/docker.sh, or set BERTH_SKIP_DOCKER_TESTS=1`))
      const dir = yield* workDir("berth-recover-docker-")
      const master = yield* MasterSupport.start()
      const framework = yield* openFramework(master.endpoint)
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          for (const id of [...containersOf(framework.frameworkId, "web"), ...containersOf(framework.frameworkId, "ends")]) {
            docker("rm", "-f", id)
          }
        })
      )
      const first = yield* startAgent(master.endpoint, dir)
      const agentId = yield* first.registered
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        launch([
          dockerTask("web", "echo started; exec sleep 300"),
          dockerTask("ends", "while [ ! -f /mnt/sandbox/go ]; do sleep 0.1; done; echo ending; exit 4")
        ])
      ])
      for (const id of ["web", "ends"]) yield* framework.await(`${id} RUNNING`, (s) => s.taskId === id && s.state === TaskState.RUNNING)
      const [web] = containersOf(framework.frameworkId, "web")
      const [ends] = containersOf(framework.frameworkId, "ends")
      expect(web).toBeDefined()
      expect(ends).toBeDefined()

      yield* killAgent(first)
      expect(running(web!)).toBe(true)
      fs.writeFileSync(path.join(sandbox(dir, framework.frameworkId, "ends"), "go"), "")
      yield* waitUntil("the container of 'ends' to exit", () => !running(ends!))

      const second = yield* startAgent(master.endpoint, dir)
      expect(yield* second.registered).toBe(agentId)
      const failed = yield* framework.await("ends FAILED", (s) => s.taskId === "ends" && s.state === TaskState.FAILED)
      expect(failed.exitCode).toBe(4)
      expect(failed.message).toBe("Container exited with status 4")
      expect(containersOf(framework.frameworkId, "ends")).toEqual([])

      // Still the same container, still running, still the agent's to kill.
      expect(containersOf(framework.frameworkId, "web")).toEqual([web])
      expect(running(web!)).toBe(true)
      expect(framework.states("web")).toEqual(["STAGING", "STARTING", "RUNNING"])
      yield* framework.session.kill("web")
      const killed = yield* framework.await("web KILLED", (s) => s.taskId === "web" && s.state === TaskState.KILLED)
      expect(killed.reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(containersOf(framework.frameworkId, "web")).toEqual([])
      expect(fs.readFileSync(path.join(sandbox(dir, framework.frameworkId, "web"), "stdout"), "utf8")).toBe("started\n")
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 60_000)
})
