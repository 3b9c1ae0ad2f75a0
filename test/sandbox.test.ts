import { describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { Resources, v1 } from "@berth/proto"
import { Sandbox } from "@berth/sdk-scheduler"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import * as Framework from "./support/framework.ts"

describe("sandbox files", () => {
  it.live("serves a task's files and refuses every path that leads outside the sandboxes", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        Framework.launch([v1.TaskInfo.create({
          name: "writer",
          taskId: "writer",
          resources: [Resources.scalar("cpus", 0.1)],
          // A hostile task plants a link to a file outside its sandbox.
          command: { shell: true, value: "echo visible; mkdir sub; echo nested > sub/file; ln -s /etc/hostname leak" }
        })])
      ])
      const finished = yield* framework.awaitState("writer", v1.TaskState.FINISHED)
      const read = (file: string) =>
        Sandbox.readFile({ master: cluster.master, agentId: finished.agentId, frameworkId: framework.frameworkId, executorId: "writer", file })
      expect(new TextDecoder().decode(yield* read("stdout"))).toBe("visible\n")
      expect(new TextDecoder().decode(yield* read("sub/file"))).toBe("nested\n")

      const refused = yield* Effect.forEach(["leak", "../../../../../../../../etc/hostname", "missing"], (file) =>
        read(file).pipe(Effect.flip))
      expect(refused.map((e) => e.reason)).toEqual([
        "path: resolves outside the sandboxes",
        expect.stringMatching(/^path: must be inside a sandbox/),
        expect.stringMatching(/^path: no such file or directory/)
      ])

      // The same rules hold for a raw client that names arbitrary paths.
      const endpoint = yield* Sandbox.agentEndpoint(cluster.master, finished.agentId)
      const client = new v1.AgentOperatorServiceClient(endpoint, grpc.credentials.createInsecure())
      const list = (path: string) =>
        Effect.callback<v1.ListFilesResponse, grpc.ServiceError>((resume) => {
          client.listFiles({ path }, (error, response) => resume(error === null ? Effect.succeed(response) : Effect.fail(error)))
        })
      const sandbox = `frameworks/${framework.frameworkId}/executors/writer/runs/latest`
      expect((yield* list(sandbox)).files.map((f) => f.path.split("/").at(-1))).toEqual(["leak", "stderr", "stdout", "sub"])
      for (const path of ["/etc", "frameworks/../..", "frameworks", `${sandbox}/../../../../..`]) {
        const error = yield* list(path).pipe(Effect.flip)
        expect(error.code, path).toBe(grpc.status.INVALID_ARGUMENT)
      }
      client.close()
    }))
})
