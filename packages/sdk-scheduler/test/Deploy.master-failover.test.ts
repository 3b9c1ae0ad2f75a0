// A master failover during a service deploy: three masters on one SQLite registry, the leader
// killed (a crash, not a resignation) while the deploy is under way. The scheduler follows the
// new leader, re-subscribes with its framework id, reconciles, and the deploy continues: every
// pod RUNNING, no task launched twice.
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { ServiceScheduler } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Layer, References } from "effect"
import * as path from "node:path"

const spec = {
  name: "failover-web",
  role: "web",
  pods: {
    web: {
      count: 4,
      // One at a time, each waiting for readiness: the deploy is still under way when the leader dies.
      tasks: {
        server: {
          goal: "RUNNING",
          cpus: 0.1,
          mem: 16,
          cmd: "sleep 1 && touch ready && exec sleep 100000",
          readiness: { cmd: "test -f ready", intervalSeconds: 0.2 }
        }
      }
    }
  }
}

const eventually = <A>(what: string, check: Effect.Effect<A | undefined, any>, timeoutMs = 90_000) =>
  Effect.gen(function*() {
    while (true) {
      const value = yield* check
      if (value !== undefined) return value
      yield* Effect.sleep("100 millis")
    }
  }).pipe(Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) }))

describe("a service deploy across a master failover", () => {
  it.live("the leading master is killed mid-deploy; the deploy continues after reconciliation, no duplicate task", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({
        masters: 3,
        storage: "sqlite",
        agents: 2,
        agentResources: "cpus:1;mem:256;disk:64",
        master: { leaderLeaseSeconds: 2 }
      })
      const endpoints = cluster.masters.map((m) => m.endpoint).join(",")
      const context = yield* Layer.build(
        ServiceScheduler.layerStack({ spec, master: endpoints }).pipe(
          Layer.provide(StateStore.layerSqlite({ path: path.join(cluster.workDir, "scheduler.db") }))
        )
      )
      const service = Context.get(context, ServiceScheduler.ServiceScheduler)

      // Mid-deploy: web-0 ready, web-1 under way.
      yield* eventually("web-1 under way", Effect.map(service.plan("deploy"), (v) => {
        const steps = v.phases[0]!.steps
        return steps[0]!.status === "COMPLETE" && steps[1]!.status !== "PENDING" && steps[3]!.status === "PENDING" ? v : undefined
      }))
      const before = yield* service.state
      const leader = (yield* cluster.leader)!
      yield* leader.kill

      // A standby leads; the scheduler follows it with the same framework id; the deploy completes.
      yield* service.awaitPlan("deploy").pipe(Effect.timeout("120 seconds"))
      const next = (yield* cluster.leader)!
      expect(next.name).not.toBe(leader.name)
      const state = yield* cluster.waitFor("every pod RUNNING at the new leader", (s) =>
        s.master?.endpoint === next.endpoint && s.frameworks.some((f) => f.connected) &&
        s.tasks.filter((t) => t.state === v1.TaskState.RUNNING).length === 4, { timeout: 60_000 })
      expect(state.frameworks.map((f) => f.info!.frameworkId)).toEqual([before.frameworkId])
      // One attempt per pod: nothing launched twice across the failover.
      expect(state.tasks.map((t) => t.info!.taskId).sort()).toEqual(["web-0.1", "web-1.1", "web-2.1", "web-3.1"])
      const pods = yield* service.pods
      expect(pods.map((p) => [p.instance, p.state, p.ready])).toEqual([
        ["web-0", "RUNNING", true],
        ["web-1", "RUNNING", true],
        ["web-2", "RUNNING", true],
        ["web-3", "RUNNING", true]
      ])
    }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "Error")), 240_000)
})
