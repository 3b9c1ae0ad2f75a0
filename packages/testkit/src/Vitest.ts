/**
 * Fixtures for `@effect/vitest`: one cluster shared by a block of tests (`layer`), the cluster
 * itself (`cluster`), its failure report on a failing test (`reportOnFailure`), and a reset to a
 * healthy cluster between tests that inject faults (`reset`).
 *
 * The testkit does not import vitest: the fixtures take what they need from the test context
 * `@effect/vitest` passes to `it.effect` (`onTestFailed`).
 *
 * @example
 * ```ts
 * import { layer } from "@effect/vitest"
 * import { Vitest } from "@berth/testkit"
 *
 * layer(Vitest.layer({ agents: 3 }), { timeout: "60 seconds" })("my framework", (it) => {
 *   it.effect("survives a partition", (ctx) =>
 *     Effect.gen(function*() {
 *       yield* Vitest.reportOnFailure(ctx)
 *       const cluster = yield* Vitest.cluster
 *       yield* cluster.agents[0].partition
 *       // ...
 *       yield* Vitest.reset
 *     }))
 * })
 * ```
 */
import { v1 } from "@berth/proto"
import { Effect, type Layer } from "effect"
import * as Common from "./internal/common.ts"
import type * as Operator from "./Operator.ts"
import * as TestCluster from "./TestCluster.ts"
import type { TimeoutError, UnsupportedFault } from "./TestClusterError.ts"

/** The cluster service that `layer` provides. */
export const Cluster = TestCluster.Cluster

/**
 * A cluster for a block of tests (see `TestCluster.layer`): give it to `@effect/vitest`'s `layer`
 * or `it.layer`. It runs on the real clock even under `it.effect`'s `TestClock`.
 */
export const layer = (options: TestCluster.Options = {}): Layer.Layer<TestCluster.Cluster, TestCluster.MakeError> =>
  TestCluster.layer(options)

/** The block's cluster. */
export const cluster: Effect.Effect<TestCluster.TestCluster, never, TestCluster.Cluster> = Effect.gen(function*() {
  return yield* TestCluster.Cluster
})

/** The part of vitest's test context this module uses. */
export interface TestContext {
  readonly onTestFailed: (handler: () => void) => void
}

/**
 * Writes the cluster's report (event log, process logs) to stderr if the current test fails: a
 * shared cluster outlives the test, so its scope cannot tell.
 */
export const reportOnFailure = (context: TestContext, options: Pick<TestCluster.Options, "dumpOnFailure"> = {}): Effect.Effect<void, never, TestCluster.Cluster> =>
  Effect.map(cluster, (c) => {
    const mark = c.events.all().length
    context.onTestFailed(() => {
      c.events.record(`test failed (its events start at #${mark})`)
      Common.writeReport(options, c.report())
    })
  })

/**
 * Heals every partition, stops disturbing status updates and waits until every agent is ACTIVE
 * again, so the next test of the block starts from a healthy cluster. (An agent a test killed is
 * the test's to restart.)
 */
export const reset: Effect.Effect<void, UnsupportedFault | TimeoutError | Operator.OperatorError, TestCluster.Cluster> = Effect.gen(
  function*() {
    const c = yield* TestCluster.Cluster
    yield* c.faults.clear.pipe(Effect.catchTag("UnsupportedFault", () => Effect.void))
    yield* c.waitFor("every agent active", (s) =>
      c.agents.every((agent) => s.agents.some((a) => a.info?.agentId === agent.agentId && a.state === v1.Agent_State.ACTIVE)))
  }
)
