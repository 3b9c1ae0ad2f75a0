/**
 * The shared scenario suite of issue 7 (scenarios.ts) on the in-process and processes backends;
 * the partition scenario goes through the fault-injecting proxy on both. The in-process backend
 * runs one master, so the leader-failover scenario runs on the processes backend only (the reason
 * is printed).
 */
import { describe, it } from "@effect/vitest"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import * as Scenarios from "./scenarios.ts"

for (const backend of ["in-process", "processes"] as const) {
  describe(`scenarios, ${backend} backend`, () => {
    for (const scenario of Scenarios.all) {
      if (backend === "in-process" && (scenario.options.masters ?? 1) > 1) {
        process.stderr.write(`SKIPPED on the in-process backend: "${scenario.name}" needs several masters (processes and containers backends)\n`)
        it.skip(`${scenario.name} (needs several masters)`, () => {})
        continue
      }
      it.live(scenario.name, () => Effect.flatMap(TestCluster.make({ ...scenario.options, backend }), scenario.run), scenario.timeoutMs)
    }
  })
}
