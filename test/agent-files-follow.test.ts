import { describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { Resources, v1 } from "@berth/proto"
import { Agent } from "@berth/cluster-core"
import { Sandbox } from "@berth/sdk-scheduler"
import { Effect, References, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"
import * as MasterSupport from "./support/master.ts"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-follow-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

describe("ReadFile with follow (tail -f)", () => {
  it.live("streams the bytes appended to a task's stdout as they come, and ends once its sandbox is gone", () =>
    Effect.gen(function*() {
      const master = yield* MasterSupport.start()
      // No GC delay: the sandbox goes as soon as the task's terminal update is acknowledged.
      const agent = yield* Agent.start({ master: master.endpoint, workDir: yield* tempDir, resources: "cpus:2;mem:1024;disk:1024", gcDelaySeconds: 0 })
      yield* agent.registered
      const framework = yield* Framework.open(master.endpoint)
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        Framework.launch([v1.TaskInfo.create({
          name: "ticker",
          taskId: "ticker",
          resources: [Resources.scalar("cpus", 0.1)],
          command: { shell: true, value: "for i in 1 2 3 4 5 6; do echo line$i; sleep 0.4; done" }
        })])
      ])
      const running = yield* framework.awaitState("ticker", v1.TaskState.RUNNING)
      const chunks = yield* Sandbox.followFile({ master: master.endpoint, agentId: running.agentId, frameworkId: framework.frameworkId, executorId: "ticker" }).pipe(
        Stream.runCollect,
        Effect.timeout("30 seconds")
      )
      const all = Array.from(chunks)
      expect(Buffer.concat(all).toString("utf8")).toBe("line1\nline2\nline3\nline4\nline5\nline6\n")
      // Followed, not read once at the end: the lines came in several messages.
      expect(all.length).toBeGreaterThan(1)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")), 60_000)

  it.live("a client that cancels stops the stream; following still cannot leave the sandboxes", () =>
    Effect.gen(function*() {
      const master = yield* MasterSupport.start()
      const agent = yield* Agent.start({ master: master.endpoint, workDir: yield* tempDir, resources: "cpus:2;mem:1024;disk:1024" })
      yield* agent.registered
      const framework = yield* Framework.open(master.endpoint)
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        Framework.launch([v1.TaskInfo.create({
          name: "talker",
          taskId: "talker",
          resources: [Resources.scalar("cpus", 0.1)],
          command: { shell: true, value: "echo first; while true; do echo more; sleep 0.2; done" }
        })])
      ])
      const running = yield* framework.awaitState("talker", v1.TaskState.RUNNING)
      // Taking two messages and stopping cancels the call; the task keeps running.
      const taken = yield* Sandbox.followFile({ master: master.endpoint, agentId: running.agentId, frameworkId: framework.frameworkId, executorId: "talker" }).pipe(
        Stream.take(2),
        Stream.runCollect,
        Effect.timeout("30 seconds")
      )
      expect(Buffer.concat(Array.from(taken)).toString("utf8")).toMatch(/^first\n(more\n)+$/)

      const endpoint = yield* Sandbox.agentEndpoint(master.endpoint, running.agentId)
      const client = new v1.AgentOperatorServiceClient(endpoint, grpc.credentials.createInsecure())
      const follow = (file: string) =>
        Effect.callback<grpc.ServiceError>((resume) => {
          const call = client.readFile({ path: file, offset: 0, length: 0, follow: true })
          call.on("data", () => {})
          call.on("error", (error: grpc.ServiceError) => resume(Effect.succeed(error)))
        })
      const sandbox = `frameworks/${framework.frameworkId}/executors/talker/runs/latest`
      for (const file of ["/etc/hostname", `${sandbox}/../../../../../../etc/hostname`, sandbox]) {
        const error = yield* follow(file).pipe(Effect.timeout("10 seconds"))
        expect(error.code, file).toBe(grpc.status.INVALID_ARGUMENT)
      }
      client.close()
      yield* framework.session.kill("talker")
      yield* framework.awaitState("talker", v1.TaskState.KILLED)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")), 60_000)
})
