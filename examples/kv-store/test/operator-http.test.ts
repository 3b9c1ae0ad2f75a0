// The operator API (OperatorHttp) as mounted by kv-store, exercised over real HTTP against a
// kv-store deployed on an in-process cluster.
import { describe, expect, it } from "@effect/vitest"
import { OperatorHttp, ServiceScheduler } from "@berth/sdk-scheduler"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Layer, References } from "effect"
import * as path from "node:path"
import * as KvStore from "../src/kvStore.ts"

interface Response {
  readonly status: number
  readonly body: any
  readonly text: string
  readonly contentType: string
}

const call = (base: string, method: string, route: string, body?: string) =>
  Effect.promise(async (): Promise<Response> => {
    const res = await fetch(`${base}${route}`, { method, ...(body === undefined ? {} : { body, headers: { "content-type": "application/json" } }) })
    const text = await res.text()
    const contentType = res.headers.get("content-type") ?? ""
    return { status: res.status, text, contentType, body: contentType.startsWith("application/json") ? JSON.parse(text) : undefined }
  })

const waitUntil = <A>(what: string, check: Effect.Effect<A | undefined, any>, timeoutMs = 90_000) =>
  Effect.gen(function*() {
    while (true) {
      const value = yield* check
      if (value !== undefined) return value
      yield* Effect.sleep("150 millis")
    }
  }).pipe(Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) }))

describe("kv-store operator API", () => {
  it.live("serves plans, pods, state, debug offers and metrics; commands work; errors are JSON with a status", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:512;disk:256" })
      const context = yield* Layer.build(KvStore.layer({ master: cluster.master, state: path.join(cluster.workDir, "kv.db") }))
      const api = Context.get(context, OperatorHttp.OperatorHttp).url
      const service = Context.get(context, ServiceScheduler.ServiceScheduler)
      const get = (route: string) => call(api, "GET", route)
      const post = (route: string, body?: string) => call(api, "POST", route, body)

      // Deploy completes: seen through /v1/plans/deploy.
      yield* waitUntil("deploy COMPLETE over HTTP", Effect.map(get("/v1/plans/deploy"), (r) => (r.body?.status === "COMPLETE" ? r : undefined)))
      const plans = yield* get("/v1/plans")
      expect(plans.status).toBe(200)
      expect(plans.body.map((p: any) => p.name)).toContain("deploy")
      const deploy = plans.body.find((p: any) => p.name === "deploy")
      expect(deploy.phases[0].steps.map((s: any) => s.name)).toEqual(["kv-0", "kv-1", "kv-2"])

      // Pods: three RUNNING and ready, on three agents.
      const pods = yield* waitUntil("3 ready pods", Effect.map(get("/v1/pods"), (r) => {
        const ready = (r.body as Array<any>).filter((p) => p.state === "RUNNING" && p.ready === true)
        return ready.length === 3 ? ready : undefined
      }))
      expect(new Set(pods.map((p: any) => p.agentId)).size).toBe(3)
      const kv1 = yield* get("/v1/pods/kv-1")
      expect(kv1.status).toBe(200)
      expect(kv1.body.instance).toBe("kv-1")
      expect(kv1.body.whyNot).toBeUndefined()

      // State: the framework id the master knows, the target configuration.
      const state = yield* get("/v1/state")
      expect(state.status).toBe(200)
      const master = yield* cluster.operator.state
      expect(state.body.frameworkId).toBe(master.frameworks[0]!.info!.frameworkId)
      expect(state.body.service).toBe("kv-store")
      expect(state.body.targetConfigId).toMatch(/^[0-9a-f]{16}$/)
      expect(state.body.spec.pods.kv.count).toBe(3)
      expect(state.body.uninstalling).toBe(false)

      // Debug offers: counters, nothing pending.
      const offers = yield* get("/v1/debug/offers")
      expect(offers.status).toBe(200)
      expect(offers.body.counters.offersReceived).toBeGreaterThan(0)
      expect(offers.body.counters.offersAccepted).toBeGreaterThanOrEqual(3)
      expect(offers.body.pending).toEqual([])

      // Metrics: Prometheus text.
      const metrics = yield* get("/metrics")
      expect(metrics.status).toBe(200)
      expect(metrics.contentType).toContain("text/plain")
      expect(metrics.text).toContain("berth_service_pods_ready 3")
      expect(metrics.text).toContain('berth_service_plan_status{plan="deploy",status="COMPLETE"} 1')
      expect(metrics.text).toMatch(/berth_service_offers_received_total [1-9]/)

      // Errors: unknown plan / phase / pod → 404; bad action, body, parameter → 400; wrong method → 405.
      const noPlan = yield* get("/v1/plans/restore")
      expect(noPlan.status).toBe(404)
      expect(noPlan.body.error).toContain("plans.restore: no such plan (known: deploy")
      const badAction = yield* post("/v1/plans/deploy/explode")
      expect(badAction.status).toBe(400)
      expect(badAction.body).toMatchObject({ path: "action" })
      expect(badAction.body.rule).toContain("must be one of start, stop, pause, resume, force-complete, restart")
      const noPhase = yield* post("/v1/plans/deploy/pause", JSON.stringify({ phase: "nope" }))
      expect(noPhase.status).toBe(404)
      expect(noPhase.body.error).toBe("plans.deploy.nope: no such phase")
      const badJson = yield* post("/v1/plans/deploy/pause", "{phase")
      expect(badJson.status).toBe(400)
      expect(badJson.body.path).toBe("body")
      const badField = yield* post("/v1/plans/deploy/pause", JSON.stringify({ stage: "x" }))
      expect(badField.status).toBe(400)
      expect(badField.body.error).toContain("body.stage: unknown field")
      const badParameter = yield* post("/v1/plans/deploy/start", JSON.stringify({ parameters: { SNAPSHOT: "s1" } }))
      expect(badParameter.status).toBe(400)
      expect(badParameter.body.error).toContain("parameters.SNAPSHOT: plan deploy declares no such parameter")
      const noPod = yield* post("/v1/pods/kv-9/restart")
      expect(noPod.status).toBe(404)
      expect(noPod.body.error).toContain("pods.kv-9: no such pod instance")
      const badPodAction = yield* post("/v1/pods/kv-1/explode")
      expect(badPodAction.status).toBe(400)
      expect(badPodAction.body.rule).toContain("must be one of restart, replace")
      expect((yield* post("/v1/pods")).status).toBe(405)
      expect((yield* get("/v1/nothing")).status).toBe(404)
      // None of the refused commands changed anything.
      expect((yield* get("/v1/plans/deploy")).body.status).toBe("COMPLETE")

      // Pod restart over HTTP: a new task on the same agent.
      const before = (yield* get("/v1/pods/kv-1")).body
      const restart = yield* post("/v1/pods/kv-1/restart")
      expect(restart.status).toBe(200)
      const after = yield* waitUntil("kv-1 restarted", Effect.map(get("/v1/pods/kv-1"), (r) =>
        r.body.taskId !== before.taskId && r.body.state === "RUNNING" && r.body.ready === true ? r.body : undefined))
      expect(after.agentId).toBe(before.agentId)

      // A pod that fits nowhere (a 4th instance, one per host, on 3 hosts): its status and the
      // debug endpoint say, per agent, which stage rejected it and why.
      yield* service.update(KvStore.spec({ count: 4 }))
      const stuck = yield* waitUntil("kv-3's why-not record covering every agent", Effect.map(get("/v1/pods/kv-3"), (r) =>
        r.status === 200 && r.body.whyNot !== undefined && new Set(r.body.whyNot.recent.map((x: any) => x.agentId)).size === 3 ? r.body : undefined))
      for (const rejection of stuck.whyNot.recent) {
        expect(rejection.stage).toBe("constraints")
        expect(rejection.reason).toMatch(/hostname/)
      }
      expect(new Set(stuck.whyNot.recent.map((x: any) => x.agentId))).toEqual(new Set(cluster.agents.map((a) => a.agentId)))
      expect(stuck.whyNot.summary.constraints).toBeGreaterThanOrEqual(3)
      const debug = yield* get("/v1/debug/offers")
      expect(debug.body.pending.map((p: any) => p.requirementId)).toContain("kv-3")
      const deploy4 = yield* get("/v1/plans/deploy")
      expect(deploy4.body.status).not.toBe("COMPLETE")

      // Plan controls on the unfinished deploy: pause and resume, visible in the plan's status.
      const paused = yield* post("/v1/plans/deploy/pause")
      expect(paused.status).toBe(200)
      expect(paused.body.message).toBe("paused by the operator")
      expect(paused.body.candidates).toEqual([])
      expect((yield* get("/v1/plans/deploy")).body.message).toBe("paused by the operator")
      const resumed = yield* post("/v1/plans/deploy/resume")
      expect(resumed.status).toBe(200)
      expect(resumed.body.message).toBeUndefined()
      expect(resumed.body.candidates).toEqual([{ phase: deploy4.body.phases[0].name, step: "kv-3" }])
    }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "Warn")), 180_000)
})
