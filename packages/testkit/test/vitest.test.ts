/**
 * The @effect/vitest fixtures (issue 7, scope 6): one cluster shared by a block of `it.effect`
 * tests through `layer(Vitest.layer(...))`, usable under `it.effect`'s TestClock (the cluster runs
 * on real time), with a failure report hook and a reset between tests that inject faults.
 */
import { expect, layer } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { TestCluster, Vitest } from "@berth/testkit"
import { Clock, Effect } from "effect"

let shared: TestCluster.TestCluster | undefined

layer(Vitest.layer({ agents: 2, master: { agentPingSeconds: 0.5, agentPingMisses: 2 } }), { timeout: "60 seconds" })(
  "Vitest.layer",
  (it) => {
    it.effect("gives every test of the block the same running cluster, on real time under it.effect", (ctx) =>
      Effect.gen(function*() {
        yield* Vitest.reportOnFailure(ctx)
        const cluster = yield* Vitest.cluster
        shared = cluster
        // waitFor polls on the real clock although this test runs on a TestClock.
        const state = yield* cluster.waitFor("two active agents", (s) =>
          s.agents.filter((a) => a.state === v1.Agent_State.ACTIVE).length === 2)
        expect(state.agents).toHaveLength(2)
        // The test's clock is the TestClock (at the epoch); the cluster's is real.
        expect(yield* Clock.currentTimeMillis).toBeLessThan(1_000_000)
        expect(cluster.now()).toBeGreaterThan(1_600_000_000_000)
      }), 60_000)

    it.effect("a fault in one test is undone by Vitest.reset for the next", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.Cluster
        expect(cluster.master).toBe(shared?.master)
        yield* cluster.agents[1]!.partition
        yield* cluster.waitFor("agent-2 unreachable", (s) =>
          s.agents.some((a) => a.info?.agentId === cluster.agents[1]!.agentId && a.state === v1.Agent_State.UNREACHABLE))
        yield* Vitest.reset
        const state = yield* cluster.operator.state
        expect(state.agents.map((a) => a.state)).toEqual([v1.Agent_State.ACTIVE, v1.Agent_State.ACTIVE])
      }), 60_000)

    it.effect("reportOnFailure writes the cluster report when the test fails", () =>
      Effect.gen(function*() {
        let failed: (() => void) | undefined
        const written: Array<string> = []
        yield* Vitest.reportOnFailure({ onTestFailed: (handler) => (failed = handler) }, { dumpOnFailure: (text) => written.push(text) })
        expect(written).toEqual([])
        failed!()
        expect(written).toHaveLength(1)
        expect(written[0]).toContain("cluster event log")
        expect(written[0]).toContain("agent-2 partitioned from the masters")
      }))
  }
)
