// High availability of a service scheduler: two replicas on one SQLite file (each with its own
// connection, as two processes would have), on a real in-process cluster. One leads through the
// storage election; the standby waits; when the leader stops, the standby takes over, fails the
// framework over and resumes from stored state: the service stays deployed, no task duplicated.
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { ServiceScheduler } from "@berth/sdk-scheduler"
import { Election, StateStore } from "@berth/storage"
import { TestCluster } from "@berth/testkit"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Option, References, Scope } from "effect"
import * as path from "node:path"

const spec = {
  name: "ha-web",
  role: "web",
  pods: { web: { count: 2, tasks: { server: { goal: "RUNNING", cpus: 0.1, mem: 16, cmd: "exec sleep 100000" } } } }
}

const replica = (master: string, file: string, identity: string) =>
  ServiceScheduler.layerHa({ spec, master, identity, leaseTtl: "3 seconds" }).pipe(
    Layer.provide(StateStore.layerSqlite({ path: file }))
  )

const leaderOf = (file: string) =>
  Effect.map(
    Election.leader(ServiceScheduler.leaderKey("ha-web")).pipe(Effect.provide(StateStore.layerSqlite({ path: file }))),
    Option.map((e) => new TextDecoder().decode(e.value))
  )

const running = (s: v1.GetStateResponse) => s.tasks.filter((t) => t.state === v1.TaskState.RUNNING)

describe("ServiceScheduler.layerHa", () => {
  it.live("a standby takes over from a stopped leader and resumes from storage: same framework, no duplicate task", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, agentResources: "cpus:1;mem:256;disk:64" })
      const file = path.join(cluster.workDir, "ha.db")

      // Replica A leads (its layer finishes building only once it leads).
      const scopeA = yield* Scope.make()
      const a = yield* Layer.build(replica(cluster.master, file, "replica-a")).pipe(Scope.provide(scopeA))
      expect(Context.get(a, ServiceScheduler.Leadership).identity).toBe("replica-a")
      const serviceA = Context.get(a, ServiceScheduler.ServiceScheduler)

      // Replica B campaigns and waits as a standby: its stack is not built while A leads.
      const scopeB = yield* Scope.make()
      const bBuilt = yield* Deferred.make<void>()
      const bFiber = yield* Layer.build(replica(cluster.master, file, "replica-b")).pipe(
        Scope.provide(scopeB),
        Effect.tap(() => Deferred.succeed(bBuilt, undefined)),
        Effect.forkChild
      )

      yield* serviceA.awaitPlan("deploy").pipe(Effect.timeout("90 seconds"))
      const deployed = yield* cluster.waitFor("2 RUNNING tasks", (s) => running(s).length === 2)
      const frameworkId = deployed.frameworks[0]!.info!.frameworkId
      expect(deployed.frameworks).toHaveLength(1)
      expect((yield* leaderOf(file)).pipe(Option.getOrUndefined)).toBe("replica-a")
      // The standby has not built anything (no second framework, no second session).
      expect(yield* Deferred.isDone(bBuilt)).toBe(false)
      expect((yield* cluster.operator.state).frameworks).toHaveLength(1)
      const tasksBefore = deployed.tasks.map((t) => t.info!.taskId).sort()
      expect(tasksBefore).toEqual(["web-0.1", "web-1.1"])

      // The leader stops: it resigns; B leads, fails over with the stored framework id, reconciles.
      yield* Scope.close(scopeA, Exit.void)
      const b = yield* Fiber.join(bFiber).pipe(Effect.timeout("60 seconds"))
      expect(Context.get(b, ServiceScheduler.Leadership).identity).toBe("replica-b")
      expect((yield* leaderOf(file)).pipe(Option.getOrUndefined)).toBe("replica-b")
      const serviceB = Context.get(b, ServiceScheduler.ServiceScheduler)
      const state = yield* serviceB.state
      expect(state.frameworkId).toBe(frameworkId)

      // The service stays deployed: the plan is complete from stored state, the same two tasks
      // run (nothing relaunched), and the framework is the same one, reconnected.
      yield* serviceB.awaitPlan("deploy").pipe(Effect.timeout("60 seconds"))
      const after = yield* cluster.waitFor("the framework reconnected", (s) =>
        s.frameworks.length === 1 && s.frameworks[0]!.connected === true && running(s).length === 2)
      expect(after.frameworks.map((f) => f.info!.frameworkId)).toEqual([frameworkId])
      expect(after.tasks.map((t) => t.info!.taskId).sort()).toEqual(tasksBefore)
      const pods = yield* serviceB.pods
      expect(pods.map((p) => [p.instance, p.state, p.taskId])).toEqual([["web-0", "RUNNING", "web-0.1"], ["web-1", "RUNNING", "web-1.1"]])
      // Give the new leader time to do anything wrong (a relaunch), then look again.
      yield* Effect.sleep("2 seconds")
      expect((yield* cluster.operator.state).tasks.map((t) => t.info!.taskId).sort()).toEqual(tasksBefore)
      yield* Scope.close(scopeB, Exit.void)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 180_000)
})
