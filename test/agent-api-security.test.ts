import { describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { Agent } from "@berth/cluster-core"
import { Sandbox } from "@berth/sdk-scheduler"
import { Certificates } from "@berth/testkit"
import { Effect, References } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { startAgent, workDir } from "./support/agentProcess.ts"
import * as Framework from "./support/framework.ts"
import * as MasterSupport from "./support/master.ts"
import * as ScriptedMaster from "./support/scriptedMaster.ts"

const credentials = {
  credentials: [
    { principal: "ops", kind: "operator" as const, secret: "ops-secret" },
    { principal: "fw", kind: "framework" as const, secret: "fw-secret" }
  ]
}
const quiet = Effect.provideService(References.MinimumLogLevel, "Warn")

describe("the agent's own API over TLS, with authentication", () => {
  it.live("sandbox files are served over TLS to operator principals only", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-agent-api-")
      const certs = yield* Certificates.generate(path.join(dir, "tls"))
      const master = yield* MasterSupport.start()
      const agent = yield* Agent.start({
        master: master.endpoint,
        workDir: path.join(dir, "agent"),
        resources: "cpus:2;mem:1024;disk:1024",
        apiTls: { certFile: certs.server.cert, keyFile: certs.server.key, caFile: certs.ca },
        apiCredentials: credentials
      })
      yield* agent.registered
      const framework = yield* Framework.open(master.endpoint)
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        Framework.launch([v1.TaskInfo.create({
          name: "writer",
          taskId: "writer",
          resources: [Resources.scalar("cpus", 0.1)],
          command: { shell: true, value: "echo secret output" }
        })])
      ])
      const finished = yield* framework.awaitState("writer", v1.TaskState.FINISHED)
      const read = (agentOptions: Sandbox.ReadFileOptions["agent"]) =>
        Sandbox.readFile({
          master: master.endpoint,
          agentId: finished.agentId,
          frameworkId: framework.frameworkId,
          executorId: "writer",
          ...(agentOptions === undefined ? {} : { agent: agentOptions })
        })

      // Plaintext does not reach a TLS server.
      expect((yield* read(undefined).pipe(Effect.flip))._tag).toBe("SandboxError")
      const anonymous = yield* read({ tls: { ca: certs.ca } }).pipe(Effect.flip)
      expect(anonymous.reason).toMatch(/^ReadFile: authentication is required/)
      const wrong = yield* read({ tls: { ca: certs.ca }, credentials: { principal: "ops", secret: "nope" } }).pipe(Effect.flip)
      expect(wrong.reason).toBe("authorization: invalid credentials (basic)")
      const notOperator = yield* read({ tls: { ca: certs.ca }, credentials: { principal: "fw", secret: "fw-secret" } }).pipe(Effect.flip)
      expect(notOperator.reason).toBe('ReadFile: principal "fw" is not an operator principal; the agent\'s file API needs one')

      const bytes = yield* read({ tls: { ca: certs.ca }, credentials: { principal: "ops", secret: "ops-secret" } })
      expect(new TextDecoder().decode(bytes)).toBe("secret output\n")
    }).pipe(quiet), 60_000)

  it.live("a custom executor reaches a TLS agent with its CA and authenticates with its token; calls without the token are refused", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-agent-api-")
      const certs = yield* Certificates.generate(path.join(dir, "tls"))
      const credentialsFile = path.join(dir, "credentials.json")
      fs.writeFileSync(credentialsFile, JSON.stringify(credentials))
      const master = yield* ScriptedMaster.start()
      const agent = yield* startAgent(master.endpoint, path.join(dir, "agent"), [
        "--api-tls-cert", certs.server.cert, "--api-tls-key", certs.server.key, "--api-tls-ca", certs.ca,
        "--api-credentials", credentialsFile
      ])
      yield* agent.registered
      const fixture = fileURLToPath(new URL("./fixtures/customExecutor.ts", import.meta.url))
      const executor = v1.ExecutorInfo.create({
        type: v1.ExecutorInfo_Type.CUSTOM,
        executorId: "secure",
        // The program's own share (with cgroups, its limit is this plus its first task's).
        resources: [Resources.scalar("cpus", 1), Resources.scalar("mem", 256)],
        command: v1.CommandInfo.create({ shell: false, value: process.execPath, arguments: [process.execPath, fixture] })
      })
      const framework = v1.FrameworkInfo.create({ frameworkId: "f1", name: "secure" })
      master.send({
        $case: "run",
        value: {
          tasks: [{ framework, task: v1.TaskInfo.create({ taskId: "s1", name: "s1", resources: [Resources.scalar("cpus", 0.1)], executor }) }],
          taskGroups: []
        }
      })
      yield* master.waitFor("s1 RUNNING", () => master.updates.find((s) => s.taskId === "s1" && s.state === v1.TaskState.RUNNING))
      const sandbox = path.join(dir, "agent", "frameworks", "f1", "executors", "secure", "runs", "latest")
      const env = JSON.parse(fs.readFileSync(path.join(sandbox, "env.json"), "utf8")) as Record<string, string>
      expect(env.BERTH_AGENT_CA_FILE).toBe(certs.ca)
      expect(env.BERTH_EXECUTOR_TOKEN).toMatch(/^[\w-]{20,}$/)

      // Someone else on the machine, with TLS but without the executor's token.
      const intruder = new v1.ExecutorServiceClient(env.BERTH_AGENT_ENDPOINT!, grpc.credentials.createSsl(fs.readFileSync(certs.ca)))
      const refused = yield* Effect.callback<grpc.ServiceError | null>((resume) => {
        intruder.update({
          frameworkId: "f1",
          executorId: "secure",
          statuses: [v1.TaskStatus.create({ taskId: "s1", state: v1.TaskState.FAILED, uuid: Buffer.alloc(16, 7) })]
        }, (error) => resume(Effect.succeed(error)))
      })
      intruder.close()
      expect(refused?.code).toBe(grpc.status.UNAUTHENTICATED)

      master.send({ $case: "frameworkMessage", value: { frameworkId: "f1", executorId: "secure", data: Buffer.from("finish") } })
      yield* master.waitFor("s1 FINISHED", () => master.updates.find((s) => s.taskId === "s1" && TaskStates.isTerminal(s.state)))
      expect(master.updates.filter((s) => s.taskId === "s1").map((s) => TaskStates.name(s.state))).toEqual(["RUNNING", "FINISHED"])
    }).pipe(quiet), 60_000)
})
