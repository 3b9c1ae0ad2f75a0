// Suppress and Revive of a service framework over a long stretch of virtual time: once deployed
// and idle it suppresses offers, and receives none for an hour of the cluster's (virtual) time,
// although its idle decline filters would have expired many times over; new work revives it.
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { ServiceScheduler } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Layer, References } from "effect"

const spec = (count: number) => ({
  name: "idle-web",
  role: "web",
  pods: { web: { count, tasks: { server: { goal: "RUNNING", cpus: 0.1, mem: 16, cmd: "exec sleep 100000" } } } }
})

const eventually = <A>(what: string, check: Effect.Effect<A | undefined, any>) =>
  Effect.gen(function*() {
    while (true) {
      const value = yield* check
      if (value !== undefined) return value
      yield* Effect.sleep("100 millis")
    }
  }).pipe(Effect.timeoutOrElse({ duration: 60_000, orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) }))

describe("a service framework's Suppress and Revive on virtual time", () => {
  it.live("idle for an hour of virtual time: no offer; new work revives it and is deployed", () =>
    Effect.gen(function*() {
      // Short idle decline filters make the point: without Suppress the agents would be offered
      // again every 10 virtual seconds.
      const cluster = yield* TestCluster.make({ agents: 2, clock: "virtual", agentResources: "cpus:1;mem:256;disk:64" })
      const context = yield* Layer.build(
        ServiceScheduler.layerStack({ spec: spec(1), master: cluster.master, offers: { refuseSecondsIdle: 10 } }).pipe(
          Layer.provide(StateStore.layerMemory)
        )
      )
      const service = Context.get(context, ServiceScheduler.ServiceScheduler)
      yield* service.awaitPlan("deploy").pipe(Effect.timeout("60 seconds"))

      // Idle, nothing to release: suppressed.
      const idle = yield* eventually("suppressed", Effect.map(service.offers, (s) => (s.suppressed && s.pending.length === 0 ? s : undefined)))
      const received = idle.counters.offersReceived
      const startedAt = cluster.now()
      // An hour of virtual time in 1-minute steps: allocation cycles, decline filters and offer
      // expiry all run on it; a framework that was not suppressed would be offered every agent
      // again every few steps.
      yield* cluster.advance("1 hour", { step: "1 minute" })
      expect(cluster.now() - startedAt).toBeGreaterThanOrEqual(3_600_000)
      yield* Effect.sleep("1 second") // anything sent would have arrived by now
      const after = yield* service.offers
      expect(after.counters.offersReceived).toBe(received)
      expect(after.suppressed).toBe(true)
      const master = yield* cluster.operator.state
      expect(master.frameworks[0]!.offered).toEqual([])
      expect(master.tasks.filter((t) => t.state === v1.TaskState.RUNNING)).toHaveLength(1)

      // New work (a second pod): the framework revives, gets offers and deploys it.
      yield* service.update(spec(2))
      const pods = yield* eventually("2 RUNNING pods", Effect.map(service.pods, (ps) => (ps.filter((p) => p.state === "RUNNING").length === 2 ? ps : undefined)))
      expect(pods.map((p) => p.instance)).toEqual(["web-0", "web-1"])
      yield* service.awaitPlan("deploy").pipe(Effect.timeout("60 seconds"))
      const revived = yield* service.offers
      expect(revived.counters.revives).toBeGreaterThan(idle.counters.revives)
      expect(revived.counters.offersReceived).toBeGreaterThan(received)
      // And suppresses again once idle.
      yield* eventually("suppressed again", Effect.map(service.offers, (s) => (s.suppressed && s.counters.suppresses > idle.counters.suppresses ? s : undefined)))
    }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "Warn")), 120_000)
})
