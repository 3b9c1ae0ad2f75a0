import { describe, expect, it } from "@effect/vitest"
import { Plan, ServiceSpec } from "@berth/sdk-scheduler"
import { PlanStore, StateStore } from "@berth/storage"
import { Effect, Option } from "effect"

const spec = ServiceSpec.decodeSync({
  name: "kv-store",
  pods: {
    kv: { count: 3, volumes: [{ path: "data", size: 64 }], tasks: { server: { goal: "RUNNING", cmd: "./kv", cpus: 0.1, mem: 64 } } },
    web: { count: 2, tasks: { main: { goal: "RUNNING", cmd: "./web", cpus: 0.1, mem: 32 } } }
  },
  plans: { backup: { strategy: "parallel", parameters: { BUCKET: "b" }, phases: { dump: { pod: "kv", tasks: ["server"] } } } }
})
const fp = (s: ServiceSpec.ServiceSpec, pod: string) => ({ fingerprint: ServiceSpec.podFingerprint(s, pod) })
const noOverrides: PlanStore.Overrides = { plan: Option.none(), phases: new Map(), steps: new Map() }
const rec = (phase: string, step: string, status: PlanStore.StepStatus): PlanStore.StepState => ({ phase, step, status, updatedAt: 0 })
const override = (o: Partial<PlanStore.Override>): PlanStore.Override => ({ interrupted: false, forceComplete: false, updatedAt: 0, ...o })
const names = (v: Plan.PlanView) => v.candidates.map((c) => `${c.phase}/${c.step}`)

describe("deploy plan from the difference between running and target", () => {
  it("first install: every instance is deployed, pod by pod, one at a time", () => {
    const plan = Plan.deployPlan(spec, {})
    expect(plan.phases.map((p) => [p.name, p.steps.map((s) => `${s.name}:${s.kind}`)])).toEqual([
      ["kv", ["kv-0:deploy", "kv-1:deploy", "kv-2:deploy"]],
      ["web", ["web-0:deploy", "web-1:deploy"]]
    ])
    const v = Plan.view(plan, [], noOverrides)
    expect(v.status).toBe("PENDING")
    expect(names(v)).toEqual(["kv/kv-0"])
  })

  it("nothing changed: the plan is complete", () => {
    const deployed = { "kv-0": fp(spec, "kv"), "kv-1": fp(spec, "kv"), "kv-2": fp(spec, "kv"), "web-0": fp(spec, "web"), "web-1": fp(spec, "web") }
    const v = Plan.view(Plan.deployPlan(spec, deployed), [], noOverrides)
    expect(v.status).toBe("COMPLETE")
    expect(v.candidates).toEqual([])
  })

  it("a config change of one pod rolls only that pod, one instance at a time", () => {
    const next = ServiceSpec.decodeSync({ ...structuredClone(spec), pods: { ...spec.pods, kv: { ...spec.pods.kv!, env: { V: "2" } } } })
    const deployed = { "kv-0": fp(spec, "kv"), "kv-1": fp(spec, "kv"), "kv-2": fp(spec, "kv"), "web-0": fp(spec, "web"), "web-1": fp(spec, "web") }
    const plan = Plan.deployPlan(next, deployed)
    let v = Plan.view(plan, [], noOverrides)
    expect(v.phases.map((p) => p.status)).toEqual(["PENDING", "COMPLETE"])
    expect(names(v)).toEqual(["kv/kv-0"])
    // kv-0 launched but not ready yet (STARTED): kv-1 must wait for it.
    v = Plan.view(plan, [rec("kv", "kv-0", "STARTED")], noOverrides)
    expect(names(v)).toEqual(["kv/kv-0"])
    expect(v.status).toBe("IN_PROGRESS")
    v = Plan.view(plan, [rec("kv", "kv-0", "COMPLETE")], noOverrides)
    expect(names(v)).toEqual(["kv/kv-1"])
  })

  it("a canary pod: the first instance rolls, then the phase waits until resumed", () => {
    const canary = ServiceSpec.decodeSync({ ...structuredClone(spec), pods: { ...spec.pods, kv: { ...spec.pods.kv!, strategy: "canary", env: { V: "2" } } } })
    const deployed = { "kv-0": fp(spec, "kv"), "kv-1": fp(spec, "kv"), "kv-2": fp(spec, "kv"), "web-0": fp(spec, "web"), "web-1": fp(spec, "web") }
    const plan = Plan.deployPlan(canary, deployed)
    expect(names(Plan.view(plan, [], noOverrides))).toEqual(["kv/kv-0"])
    const waiting = Plan.view(plan, [rec("kv", "kv-0", "COMPLETE")], noOverrides)
    expect(waiting.candidates).toEqual([])
    expect(waiting.phases[0]!.status).toBe("WAITING")
    const resumed = Plan.view(plan, [rec("kv", "kv-0", "COMPLETE")], { ...noOverrides, phases: new Map([["kv", override({ interrupted: false })]]) })
    expect(names(resumed)).toEqual(["kv/kv-1"])
    // The strategy is not part of what instances run: changing it rolls nothing.
    expect(ServiceSpec.podFingerprint(canary, "kv")).toBe(ServiceSpec.podFingerprint(ServiceSpec.decodeSync({ ...structuredClone(canary), pods: { ...canary.pods, kv: { ...canary.pods.kv!, strategy: "serial" } } }), "kv"))
  })

  it("a canary pod scaled up: the first new instance is the canary (the untouched ones are not), and the plan says it waits", () => {
    const bigger = ServiceSpec.decodeSync({ ...structuredClone(spec), pods: { ...spec.pods, kv: { ...spec.pods.kv!, strategy: "canary", count: 5 } } })
    const deployed = { "kv-0": fp(bigger, "kv"), "kv-1": fp(bigger, "kv"), "kv-2": fp(bigger, "kv"), "web-0": fp(spec, "web"), "web-1": fp(spec, "web") }
    const plan = Plan.deployPlan(bigger, deployed)
    expect(names(Plan.view(plan, [], noOverrides))).toEqual(["kv/kv-3"])
    const waiting = Plan.view(plan, [rec("kv", "kv-3", "COMPLETE")], noOverrides)
    expect(waiting.candidates).toEqual([])
    expect(waiting.phases[0]!.message).toBe("canary kv-3 is complete: resume the phase to proceed with the other steps")
    expect(waiting.message).toBe("canary kv-3 is complete: resume the phase to proceed with the other steps")
    const resumed = Plan.view(plan, [rec("kv", "kv-3", "COMPLETE")], { ...noOverrides, phases: new Map([["kv", override({ interrupted: false })]]) })
    expect(names(resumed)).toEqual(["kv/kv-4"])
  })

  it("scale up adds deploy steps for the new instances only", () => {
    const bigger = ServiceSpec.decodeSync({ ...structuredClone(spec), pods: { ...spec.pods, kv: { ...spec.pods.kv!, count: 5 } } })
    const deployed = { "kv-0": fp(spec, "kv"), "kv-1": fp(spec, "kv"), "kv-2": fp(spec, "kv"), "web-0": fp(spec, "web"), "web-1": fp(spec, "web") }
    const v = Plan.view(Plan.deployPlan(bigger, deployed), [], noOverrides)
    expect(v.phases[0]!.steps.map((s) => `${s.name}:${s.status}`)).toEqual(["kv-0:COMPLETE", "kv-1:COMPLETE", "kv-2:COMPLETE", "kv-3:PENDING", "kv-4:PENDING"])
    expect(names(v)).toEqual(["kv/kv-3"])
  })

  it("decommission: extra instances, highest index first", () => {
    const smaller = ServiceSpec.decodeSync({ ...structuredClone(spec), pods: { ...spec.pods, kv: { ...spec.pods.kv!, count: 1, allowDecommission: true } } })
    const deployed = { "kv-0": fp(spec, "kv"), "kv-1": fp(spec, "kv"), "kv-2": fp(spec, "kv") }
    const plan = Plan.decommissionPlan(smaller, deployed)
    expect(plan.phases[0]!.steps.map((s) => `${s.name}:${s.kind}`)).toEqual(["kv-2:decommission", "kv-1:decommission"])
    expect(Plan.decommissionPlan(spec, deployed).phases).toEqual([])
  })

  it("uninstall releases every instance in parallel, then tears down", () => {
    const v = Plan.view(Plan.uninstallPlan(["kv-0", "kv-1"]), [], noOverrides)
    expect(names(v)).toEqual(["release/kv-0", "release/kv-1"])
    const after = Plan.view(Plan.uninstallPlan(["kv-0", "kv-1"]), [rec("release", "kv-0", "COMPLETE"), rec("release", "kv-1", "COMPLETE")], noOverrides)
    expect(names(after)).toEqual(["teardown/teardown"])
  })
})

describe("strategies", () => {
  const steps = (n: number, extra: Partial<Plan.Step> = {}): Array<Plan.Step> =>
    Array.from({ length: n }, (_, i) => ({ name: `s${i}`, kind: "run" as const, ...extra }))
  const one = (strategy: ServiceSpec.Strategy, s: Array<Plan.Step>): Plan.Plan => ({
    name: "p", strategy: "serial", phases: [{ name: "ph", strategy, steps: s }]
  })

  it("serial runs the first unfinished step; parallel all of them", () => {
    expect(names(Plan.view(one("serial", steps(3)), [rec("ph", "s0", "COMPLETE")], noOverrides))).toEqual(["ph/s1"])
    expect(names(Plan.view(one("parallel", steps(3)), [rec("ph", "s0", "COMPLETE")], noOverrides))).toEqual(["ph/s1", "ph/s2"])
  })

  it("canary: the first step alone, then a pause until resumed", () => {
    const plan = one("canary", steps(3))
    expect(names(Plan.view(plan, [], noOverrides))).toEqual(["ph/s0"])
    const waiting = Plan.view(plan, [rec("ph", "s0", "COMPLETE")], noOverrides)
    expect(waiting.candidates).toEqual([])
    expect(waiting.phases[0]!.status).toBe("WAITING")
    expect(waiting.phases[0]!.message).toMatch(/canary s0 is complete: resume the phase/)
    const approved: PlanStore.Overrides = { ...noOverrides, phases: new Map([["ph", override({ interrupted: false })]]) }
    expect(names(Plan.view(plan, [rec("ph", "s0", "COMPLETE")], approved))).toEqual(["ph/s1"])
  })

  it("dependency: a step waits for the steps it depends on", () => {
    const plan = one("dependency", [
      { name: "a", kind: "run" }, { name: "b", kind: "run", dependsOn: ["a"] }, { name: "c", kind: "run" }, { name: "d", kind: "run", dependsOn: ["b", "c"] }
    ])
    expect(names(Plan.view(plan, [], noOverrides))).toEqual(["ph/a", "ph/c"])
    expect(names(Plan.view(plan, [rec("ph", "a", "COMPLETE")], noOverrides))).toEqual(["ph/b", "ph/c"])
    expect(names(Plan.view(plan, [rec("ph", "a", "COMPLETE"), rec("ph", "b", "COMPLETE"), rec("ph", "c", "COMPLETE")], noOverrides))).toEqual(["ph/d"])
  })

  it("an ERROR step stops a serial phase and marks it ERROR", () => {
    const v = Plan.view(one("serial", steps(2)), [rec("ph", "s0", "ERROR")], noOverrides)
    expect(v.candidates).toEqual([])
    expect(v.status).toBe("ERROR")
  })

  it("pause and force-complete at each level", () => {
    const plan = one("serial", steps(3))
    const paused = Plan.view(plan, [], { ...noOverrides, plan: Option.some(override({ interrupted: true })) })
    expect(paused.candidates).toEqual([])
    expect(paused.status).toBe("WAITING")
    expect(paused.message).toBe("paused by the operator")
    const stepForced = Plan.view(plan, [], { ...noOverrides, steps: new Map([["ph", new Map([["s0", override({ forceComplete: true })]])]]) })
    expect(stepForced.phases[0]!.steps[0]!.status).toBe("COMPLETE")
    expect(names(stepForced)).toEqual(["ph/s1"])
    const planForced = Plan.view(plan, [], { ...noOverrides, plan: Option.some(override({ forceComplete: true })) })
    expect(planForced.status).toBe("COMPLETE")
  })

  it("a custom plan is manual: it waits until started", () => {
    const backup = Plan.customPlan(spec, "backup")!
    expect(backup.phases[0]!.steps.map((s) => `${s.name}:${s.kind}:${s.tasks}`)).toEqual(["kv-0:run:server", "kv-1:run:server", "kv-2:run:server"])
    const idle = Plan.view(backup, [], noOverrides)
    expect(idle.candidates).toEqual([])
    expect(idle.message).toBe("not started: start the plan to run it")
    const started = Plan.view(backup, [], { ...noOverrides, plan: Option.some(override({ interrupted: false })) })
    expect(names(started)).toEqual(["dump/kv-0"]) // the phase is serial by default
    expect(Plan.customPlan(spec, "nope")).toBeUndefined()
  })
})

describe("failure monitor", () => {
  const policy = { permanentAfterMs: 60_000, minReplaceDelayMs: 30_000 }
  it("restarts in place until the instance has failed for long enough, then replaces", () => {
    const r = Plan.recordFailure(Plan.recordFailure(undefined, 1_000), 5_000)
    expect(r).toEqual({ since: 1_000, failures: 2 })
    expect(Plan.recoveryAction(r, 30_000, policy)).toBe("restart")
    expect(Plan.recoveryAction(r, 61_000, policy)).toBe("replace")
    expect(Plan.recoveryAction({ ...r, lastReplacedAt: 50_000 }, 61_000, policy)).toBe("restart")
    expect(Plan.recoveryAction(r, 10 ** 12, {})).toBe("restart")
  })
})

describe("plan controls, persisted in the PlanStore", () => {
  const plan = Plan.deployPlan(spec, {})
  const load = (store: PlanStore.PlanStore, p: Plan.Plan) =>
    Effect.gen(function*() {
      return Plan.view(p, yield* store.steps(p.name), yield* store.overrides(p.name))
    })

  it.effect("pause, resume, force-complete, restart and stop survive a new store instance over the same state", () =>
    Effect.gen(function*() {
      const store = yield* PlanStore.make
      const c = Plan.controls(store)
      yield* store.setStepStatus("deploy", "kv", "kv-0", "COMPLETE")
      yield* c.pause({ plan: "deploy" })
      // A "restarted scheduler": a fresh PlanStore over the same StateStore sees the pause.
      const again = yield* PlanStore.make
      expect((yield* load(again, plan)).candidates).toEqual([])
      yield* c.resume({ plan: "deploy" })
      expect(names(yield* load(again, plan))).toEqual(["kv/kv-1"])
      yield* c.forceComplete({ plan: "deploy", phase: "kv", step: "kv-1" })
      expect(names(yield* load(again, plan))).toEqual(["kv/kv-2"])
      yield* c.forceComplete({ plan: "deploy", phase: "kv" })
      expect(names(yield* load(again, plan))).toEqual(["web/web-0"])
      yield* c.restart(plan, { plan: "deploy", phase: "kv" })
      const restarted = yield* load(again, plan)
      expect(restarted.phases[0]!.steps.map((s) => s.status)).toEqual(["PENDING", "PENDING", "PENDING"])
      expect(names(restarted)).toEqual(["kv/kv-0"])
      yield* store.setStepStatus("deploy", "kv", "kv-0", "STARTED")
      yield* c.stop(plan)
      const stopped = yield* load(again, plan)
      expect(stopped.candidates).toEqual([])
      expect(stopped.phases[0]!.steps[0]!.stored).toBe("PENDING")
      yield* c.start(plan)
      expect(names(yield* load(again, plan))).toEqual(["kv/kv-0"])
    }).pipe(Effect.provide(StateStore.layerMemory)))
})
