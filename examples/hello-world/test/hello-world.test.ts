import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { ServiceScheduler } from "@berth/sdk-scheduler"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Layer, References } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as HelloWorld from "../src/helloWorld.ts"

const waitUntil = <A>(what: string, check: Effect.Effect<A | undefined, any>, timeoutMs = 60_000) =>
  Effect.gen(function*() {
    while (true) {
      const value = yield* check
      if (value !== undefined) return value
      yield* Effect.sleep("100 millis")
    }
  }).pipe(Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) }))

/** What a task wrote to its stdout, from its sandbox on whichever agent ran it. */
const stdoutOf = (cluster: TestCluster.TestCluster, taskId: string) => {
  for (const agent of cluster.agents) {
    const frameworks = path.join(agent.workDir, "frameworks")
    if (!fs.existsSync(frameworks)) continue
    for (const fw of fs.readdirSync(frameworks)) {
      const file = path.join(frameworks, fw, "executors", taskId, "runs", "latest", "stdout")
      if (fs.existsSync(file)) return fs.readFileSync(file, "utf8").trim()
    }
  }
  return undefined
}

describe("examples/hello-world", () => {
  it.live("deploys stateless pods, runs the world jobs once, and runs the greet plan with a parameter", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, agentResources: "cpus:1;mem:512;disk:256" })
      const context = yield* Layer.build(HelloWorld.layer({ master: cluster.master }))
      const service = Context.get(context, ServiceScheduler.ServiceScheduler)
      const complete = (name: string) =>
        waitUntil(`plan ${name}`, Effect.map(service.plan(name), (v) => (v.status === "COMPLETE" ? v : undefined)))

      // The deploy plan: one phase per pod, in order; hello servers running and ready, world jobs finished.
      const deploy = yield* complete("deploy")
      expect(deploy.phases.map((p) => [p.name, p.steps.map((s) => s.name)])).toEqual([
        ["hello", ["hello-0", "hello-1"]],
        ["world", ["world-0", "world-1"]]
      ])
      const pods = yield* service.pods
      expect(pods.filter((p) => p.pod === "hello").map((p) => [p.instance, p.state, p.ready])).toEqual([
        ["hello-0", "RUNNING", true],
        ["hello-1", "RUNNING", true]
      ])
      let state = yield* cluster.operator.state
      const jobs = state.tasks.filter((t) => t.info!.taskId.startsWith("world-"))
      expect(jobs.map((t) => t.state)).toEqual([v1.TaskState.FINISHED, v1.TaskState.FINISHED])
      expect(jobs.map((t) => stdoutOf(cluster, t.info!.taskId)).sort()).toEqual(["world 0 greets nobody", "world 1 greets nobody"])
      expect(stdoutOf(cluster, pods[0]!.taskId!)).toBe("hello from hello-0")

      // A custom plan waits until started; a parameter it does not declare is refused.
      expect((yield* service.plan("greet")).message).toBe("not started: start the plan to run it")
      const refused = yield* Effect.flip(service.startPlan("greet", { COLOR: "red" }))
      expect(refused.message).toBe("parameters.COLOR: plan greet declares no such parameter (declared: NAME)")
      yield* service.startPlan("greet", { NAME: "the operator" })
      yield* complete("greet")
      state = yield* cluster.operator.state
      const greetings = state.tasks.filter((t) => t.info!.taskId.includes("-greet-")).map((t) => stdoutOf(cluster, t.info!.taskId)).sort()
      expect(greetings).toEqual(["world 0 greets the operator", "world 1 greets the operator"])
      // The servers kept running through it.
      expect((yield* service.pods).filter((p) => p.pod === "hello").map((p) => p.taskId)).toEqual(pods.filter((p) => p.pod === "hello").map((p) => p.taskId))

      // Uninstall leaves nothing: no framework, no reservation.
      yield* service.uninstall
      yield* complete("uninstall")
      yield* cluster.waitFor("an empty cluster", (s) =>
        s.frameworks.length === 0 && s.agents.every((a) => [...(a.info?.resources ?? []), ...a.offered].every((r) => r.reservations.length === 0)))
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 120_000)

  it.live("an uninstalled service does not come back silently when its scheduler is started again", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:1;mem:512;disk:256" })
      const state = path.join(cluster.workDir, "hello.db")
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(HelloWorld.layer({ master: cluster.master, state }))
        const service = Context.get(context, ServiceScheduler.ServiceScheduler)
        yield* service.uninstall
        return yield* waitUntil("uninstall", Effect.map(service.plan("uninstall"), (v) => (v.status === "COMPLETE" ? v : undefined)))
      }))
      expect(first.status).toBe("COMPLETE")
      const error = yield* Effect.flip(Effect.scoped(Layer.build(HelloWorld.layer({ master: cluster.master, state }))))
      expect(error._tag).toBe("ServiceUninstalled")
      expect(error.message).toMatch(/^service "hello-world" was uninstalled and its framework torn down/)
      expect((yield* cluster.operator.state).frameworks).toEqual([])
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 120_000)
})
