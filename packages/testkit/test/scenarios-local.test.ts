/**
 * The shared scenario suite of issue 7 (scenarios.ts) on the in-process and processes backends:
 * every scenario on both. The partition scenario goes through the fault-injecting proxy; the
 * leader-failover scenario runs three masters on one etcd (in process, each master in a scope of
 * its own, killed as a crash).
 */
import { describe, it } from "@effect/vitest"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import * as Scenarios from "./scenarios.ts"

for (const backend of ["in-process", "processes"] as const) {
  describe(`scenarios, ${backend} backend`, () => {
    for (const scenario of Scenarios.all) {
      it.live(scenario.name, () => Effect.flatMap(TestCluster.make({ ...scenario.options, backend }), scenario.run), scenario.timeoutMs)
    }
  })
}
