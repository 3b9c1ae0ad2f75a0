import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import * as Framework from "./support/framework.ts"

const sample = (text: string, name: string): number | undefined => {
  const line = text.split("\n").find((l) => l.startsWith(name + " "))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1))
}

describe("master metrics", () => {
  it.live("Prometheus /metrics counts offers, tasks by state, agents, frameworks and allocation cycles", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, master: { httpPort: 0 } })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        Framework.launch([v1.TaskInfo.create({ taskId: "m", resources: [Resources.scalar("cpus", 0.1)], command: { shell: true, value: "true" } })])
      ])
      yield* framework.awaitState("m", v1.TaskState.FINISHED)
      const response = yield* Effect.promise(() => fetch(`http://${cluster.masterHttp}/metrics`))
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toMatch(/text\/plain/)
      const text = yield* Effect.promise(() => response.text())
      expect(sample(text, "berth_master_offers_sent_total")).toBeGreaterThanOrEqual(1)
      expect(sample(text, "berth_master_offers_accepted_total")).toBe(1)
      expect(sample(text, "berth_master_tasks_launched_total")).toBe(1)
      expect(text).toContain('berth_master_tasks{state="FINISHED"} 1')
      expect(text).toContain('berth_master_agents{state="active"} 2')
      expect(text).toContain('berth_master_frameworks{connected="true"} 1')
      expect(sample(text, "berth_master_allocation_cycle_seconds_count")).toBeGreaterThanOrEqual(1)

      const health = yield* Effect.promise(() => fetch(`http://${cluster.masterHttp}/health`).then((r) => r.json()))
      expect(health).toEqual({ healthy: true, leading: true })
      const missing = yield* Effect.promise(() => fetch(`http://${cluster.masterHttp}/nope`))
      expect(missing.status).toBe(404)

      // The same text over gRPC.
      const client = new v1.OperatorServiceClient(cluster.master, grpc.credentials.createInsecure())
      const viaGrpc = yield* Effect.callback<string>((resume) => {
        client.getMetrics({}, (error, r) => resume(error === null ? Effect.succeed(r.prometheusText) : Effect.die(error)))
      })
      client.close()
      expect(viaGrpc).toContain("berth_master_tasks_launched_total 1")
    }))
})
