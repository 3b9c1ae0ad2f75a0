/**
 * Plans, as in dcos-commons: a plan has phases, a phase has steps, and a strategy at each level
 * says which may run now (`serial`, `parallel`, `canary`, `dependency`). Everything here is a
 * pure function of the plan's shape, the step statuses and the operator's overrides, all of
 * which live in `@berth/storage`'s `PlanStore` — so a plan, its progress and every operator
 * decision (pause, force-complete, canary approval) survive a scheduler restart.
 *
 * - {@link deployPlan} computes the deploy plan from the difference between what runs and the
 *   target spec: new instances are deployed, instances running another configuration are rolled
 *   one at a time, up-to-date ones are complete from the start.
 * - {@link view} tells, for stored statuses and overrides, each step's effective status and
 *   which steps may be worked on now ({@link PlanView.candidates}).
 * - {@link controls} are the operator's commands (start, stop, pause, resume, force-complete,
 *   restart), written to the `PlanStore`.
 * - {@link recoveryAction} is the failure monitor: restart in place, or replace elsewhere once an
 *   instance has been failing for too long, from a failure record whose clock is stored.
 *
 * @example
 * ```ts
 * import { Plan, ServiceSpec } from "@berth/sdk-scheduler"
 *
 * const plan = Plan.deployPlan(spec, { "kv-0": { fingerprint: ServiceSpec.podFingerprint(old, "kv") } })
 * const v = Plan.view(plan, yield* plans.steps("deploy"), yield* plans.overrides("deploy"))
 * v.status      // "IN_PROGRESS"
 * v.candidates  // [{ phase: "kv", step: "kv-0" }]: roll kv-0 first, then kv-1 ...
 * ```
 *
 * @since 0.1.0
 */
import type { PlanStore, StoreError as StoreErrors } from "@berth/storage"
import { Effect, Option } from "effect"
import * as ServiceSpec from "./ServiceSpec.ts"

type StoreError = StoreErrors.StoreError

/**
 * What a step does to its pod instance.
 *
 * - `deploy`: launch the instance (reserve and create its volumes first).
 * - `update`: relaunch it with the target configuration, on its reservation and volumes.
 * - `restart`: relaunch it in place, same configuration (transient recovery).
 * - `replace`: launch it elsewhere and release its old reservation and volumes (permanent recovery).
 * - `decommission`: kill it and release its reservation and volumes for good.
 * - `run`: run some of its tasks (a custom plan), with the plan's parameters in their environment.
 * - `uninstall`: kill it and release everything it holds.
 * - `teardown`: remove the framework (the last step of uninstall).
 *
 * @since 0.1.0
 * @category models
 */
export type StepKind = "deploy" | "update" | "restart" | "replace" | "decommission" | "run" | "uninstall" | "teardown"

/**
 * @since 0.1.0
 * @category models
 */
export interface Step {
  readonly name: string
  readonly kind: StepKind
  /** The pod instance it acts on (`kv-0`). */
  readonly instance?: string | undefined
  readonly pod?: string | undefined
  /** The tasks it runs (custom plans); all of the pod's tasks when absent. */
  readonly tasks?: ReadonlyArray<string> | undefined
  /** For the `dependency` strategy: steps of the same phase that must complete first. */
  readonly dependsOn?: ReadonlyArray<string> | undefined
  /** Already done when the plan was computed (an up-to-date instance). */
  readonly done?: boolean | undefined
}

/** @since 0.1.0 @category models */
export interface Phase {
  readonly name: string
  readonly strategy: ServiceSpec.Strategy
  readonly steps: ReadonlyArray<Step>
  /** For the plan's `dependency` strategy: phases that must complete first. */
  readonly dependsOn?: ReadonlyArray<string> | undefined
}

/** @since 0.1.0 @category models */
export interface Plan {
  readonly name: string
  readonly strategy: ServiceSpec.Strategy
  readonly phases: ReadonlyArray<Phase>
  /** Custom plans are manual: they wait (interrupted) until the operator starts them. */
  readonly manual?: boolean | undefined
}

/**
 * A stored status or one derived for display: `IN_PROGRESS` is only ever an aggregate.
 *
 * @since 0.1.0
 * @category models
 */
export type Status = PlanStore.StepStatus | "IN_PROGRESS"

/** @since 0.1.0 @category models */
export interface StepView {
  readonly phase: string
  readonly name: string
  readonly kind: StepKind
  readonly instance?: string | undefined
  readonly status: Status
  readonly message?: string | undefined
  /** The stored status before overrides were applied (`PENDING` when nothing is stored). */
  readonly stored: PlanStore.StepStatus
}

/** @since 0.1.0 @category models */
export interface PhaseView {
  readonly name: string
  readonly strategy: ServiceSpec.Strategy
  readonly status: Status
  readonly message?: string | undefined
  readonly steps: ReadonlyArray<StepView>
}

/** @since 0.1.0 @category models */
export interface PlanView {
  readonly name: string
  readonly strategy: ServiceSpec.Strategy
  readonly status: Status
  readonly message?: string | undefined
  readonly phases: ReadonlyArray<PhaseView>
  /** Steps that may be worked on now, in plan order. Empty when paused, complete or waiting at a canary. */
  readonly candidates: ReadonlyArray<{ readonly phase: string; readonly step: string }>
}

const isDone = (s: Status) => s === "COMPLETE"

/**
 * The indices of the children a strategy lets run now, given which are done. `gate` says whether
 * the canary was approved; `blocked` marks children that cannot progress (ERROR), which stop a
 * serial strategy.
 */
const runnable = (
  strategy: ServiceSpec.Strategy,
  done: ReadonlyArray<boolean>,
  names: ReadonlyArray<string>,
  dependsOn: ReadonlyArray<ReadonlyArray<string> | undefined>,
  gate: boolean,
  canary = 0
): { readonly indices: Array<number>; readonly waitingForCanary: boolean } => {
  const open = done.flatMap((d, i) => (d ? [] : [i]))
  if (open.length === 0) return { indices: [], waitingForCanary: false }
  switch (strategy) {
    case "parallel":
      return { indices: open, waitingForCanary: false }
    case "serial":
      return { indices: [open[0]!], waitingForCanary: false }
    case "canary":
      // The canary (the first child this rollout changes) runs alone; the rest wait until the
      // operator approves it.
      if (!done[canary]) return { indices: [canary], waitingForCanary: false }
      return gate ? { indices: [open[0]!], waitingForCanary: false } : { indices: [], waitingForCanary: true }
    case "dependency": {
      const doneByName = new Map(names.map((n, i) => [n, done[i]!]))
      return {
        indices: open.filter((i) => (dependsOn[i] ?? []).every((d) => doneByName.get(d) === true)),
        waitingForCanary: false
      }
    }
  }
}

const aggregate = (children: ReadonlyArray<Status>): Status => {
  if (children.length === 0 || children.every(isDone)) return "COMPLETE"
  if (children.some((s) => s === "ERROR")) return "ERROR"
  if (children.every((s) => s === "PENDING")) return "PENDING"
  if (children.every((s) => s === "PENDING" || s === "WAITING")) return "WAITING"
  return "IN_PROGRESS"
}

/**
 * The plan as it stands: effective statuses (a force-completed step is `COMPLETE`, a pending
 * step of a paused plan, phase or step is `WAITING`) and the steps that may be worked on now.
 *
 * Canary: the first step of a `canary` phase runs alone; the others wait until the operator
 * resumes the phase (or the plan), which {@link controls}' `resume` records as an override with
 * `interrupted: false`. A manual (custom) plan is paused until started.
 *
 * @since 0.1.0
 * @category evaluation
 */
export const view = (
  plan: Plan,
  stored: ReadonlyArray<PlanStore.StepState>,
  overrides: PlanStore.Overrides
): PlanView => {
  const byKey = new Map(stored.map((s) => [`${s.phase}/${s.step}`, s]))
  const planOverride = Option.getOrUndefined(overrides.plan)
  const planPaused = planOverride === undefined ? plan.manual === true : planOverride.interrupted
  const planForced = planOverride?.forceComplete === true
  const phases: Array<PhaseView> = []
  const candidateSets: Array<Array<string>> = []
  for (const phase of plan.phases) {
    const phaseOverride = overrides.phases.get(phase.name)
    const phasePaused = planPaused || phaseOverride?.interrupted === true
    const phaseForced = planForced || phaseOverride?.forceComplete === true
    const stepOverrides = overrides.steps.get(phase.name)
    const steps: Array<StepView> = phase.steps.map((step) => {
      const record = byKey.get(`${phase.name}/${step.name}`)
      const storedStatus: PlanStore.StepStatus = record?.status ?? (step.done === true ? "COMPLETE" : "PENDING")
      const o = stepOverrides?.get(step.name)
      const forced = phaseForced || o?.forceComplete === true
      const paused = phasePaused || o?.interrupted === true
      const status: Status = forced ? "COMPLETE" : paused && storedStatus === "PENDING" ? "WAITING" : storedStatus
      return {
        phase: phase.name,
        name: step.name,
        kind: step.kind,
        instance: step.instance,
        status,
        stored: storedStatus,
        ...(forced ? { message: "force-completed by the operator" } : record?.message === undefined ? {} : { message: record.message })
      }
    })
    const gate = phaseOverride?.interrupted === false || planOverride?.interrupted === false
    // The canary is the first step this rollout runs: steps complete from the start (instances
    // already on the target, e.g. kv-0..2 of a scale-up to 5) were not rolled, unless a status
    // was stored for them (the runtime recomputes the plan, so a rolled canary is `done` too).
    const canary = Math.max(0, phase.steps.findIndex((s) => s.done !== true || byKey.has(`${phase.name}/${s.name}`)))
    const r = runnable(
      phase.strategy,
      steps.map((s) => isDone(s.status)),
      phase.steps.map((s) => s.name),
      phase.steps.map((s) => s.dependsOn),
      gate,
      canary
    )
    const pausedSteps = new Set(phase.steps.filter((s) => stepOverrides?.get(s.name)?.interrupted === true).map((s) => s.name))
    candidateSets.push(
      phasePaused ? [] : r.indices.map((i) => steps[i]!).filter((s) => s.status !== "ERROR" && !pausedSteps.has(s.name)).map((s) => s.name)
    )
    const status: Status = phaseForced ? "COMPLETE" : r.waitingForCanary ? "WAITING" : aggregate(steps.map((s) => s.status))
    phases.push({
      name: phase.name,
      strategy: phase.strategy,
      status,
      steps,
      ...(r.waitingForCanary && !phaseForced
        ? { message: `canary ${phase.steps[canary]!.name} is complete: resume the phase to proceed with the other steps` }
        : phasePaused && status !== "COMPLETE" ? { message: "paused by the operator" } : {})
    })
  }
  const planGate = planOverride?.interrupted === false
  const r = runnable(
    plan.strategy,
    phases.map((p) => isDone(p.status)),
    plan.phases.map((p) => p.name),
    plan.phases.map((p) => p.dependsOn),
    planGate
  )
  const candidates = planPaused
    ? []
    : r.indices.flatMap((i) => candidateSets[i]!.map((step) => ({ phase: plan.phases[i]!.name, step })))
  const status: Status = planForced ? "COMPLETE" : r.waitingForCanary ? "WAITING" : aggregate(phases.map((p) => p.status))
  return {
    name: plan.name,
    strategy: plan.strategy,
    status,
    phases,
    candidates,
    ...(planPaused && status !== "COMPLETE"
      ? { message: plan.manual === true && planOverride === undefined ? "not started: start the plan to run it" : "paused by the operator" }
      : r.waitingForCanary ? { message: `canary phase ${plan.phases[0]!.name} is complete: resume the plan to proceed` }
      // A phase waiting at its canary holds the plan: say so where the operator looks first.
      : candidates.length === 0 && status !== "COMPLETE" && phases.some((p) => p.status === "WAITING" && p.message !== undefined)
      ? { message: phases.find((p) => p.status === "WAITING" && p.message !== undefined)!.message }
      : {})
  }
}

/** Finds a step of a plan by phase and name. @since 0.1.0 @category evaluation */
export const findStep = (plan: Plan, phase: string, step: string): Step | undefined =>
  plan.phases.find((p) => p.name === phase)?.steps.find((s) => s.name === step)

// ---------------------------------------------------------------------------------------------
// Plans computed from the spec

/**
 * What runs now, per pod instance: the fingerprint ({@link ServiceSpec.podFingerprint}) of the
 * configuration it was launched with.
 *
 * @since 0.1.0
 * @category models
 */
export type Deployed = Readonly<Record<string, { readonly fingerprint: string }>>

/**
 * The deploy plan that moves the service from what runs (`deployed`) to `target`: one phase per
 * pod (in declaration order, one after the other), one step per instance, run by the pod's
 * `strategy` (default serial; `canary` waits after the first instance until resumed). A new instance gets a `deploy`
 * step; one running another configuration an `update` step (rolled one at a time, each waiting
 * for readiness); an up-to-date one a step that is complete from the start. Instances beyond
 * the pod's count are left to {@link decommissionPlan}.
 *
 * @example
 * ```ts
 * import { Plan, ServiceSpec } from "@berth/sdk-scheduler"
 *
 * Plan.deployPlan(spec, {}) // first install: every instance gets a deploy step
 * ```
 *
 * @since 0.1.0
 * @category plans
 */
export const deployPlan = (target: ServiceSpec.ServiceSpec, deployed: Deployed): Plan => ({
  name: "deploy",
  strategy: "serial",
  phases: Object.entries(target.pods).map(([pod, spec]): Phase => {
    const fingerprint = ServiceSpec.podFingerprint(target, pod)
    return {
      name: pod,
      // "dependency" has nothing to depend on between instances: it runs them all at once.
      strategy: spec.strategy ?? "serial",
      steps: Array.from({ length: spec.count }, (_, i): Step => {
        const instance = ServiceSpec.instanceName(pod, i)
        const running = deployed[instance]
        return running === undefined
          ? { name: instance, kind: "deploy", instance, pod }
          : running.fingerprint === fingerprint
          ? { name: instance, kind: "update", instance, pod, done: true }
          : { name: instance, kind: "update", instance, pod }
      })
    }
  })
})

/**
 * The decommission plan: one step per deployed instance the target no longer has (a lowered
 * count, a removed pod), highest index first, one at a time.
 *
 * @since 0.1.0
 * @category plans
 */
export const decommissionPlan = (target: ServiceSpec.ServiceSpec, deployed: Deployed): Plan => {
  const wanted = new Set(ServiceSpec.instances(target))
  const extra = Object.keys(deployed)
    .filter((i) => !wanted.has(i))
    .sort((a, b) => {
      const pa = ServiceSpec.parseInstance(a), pb = ServiceSpec.parseInstance(b)
      return pa && pb && pa.pod === pb.pod ? pb.index - pa.index : a < b ? -1 : 1
    })
  return {
    name: "decommission",
    strategy: "serial",
    phases: extra.length === 0 ? [] : [{
      name: "decommission",
      strategy: "serial",
      steps: extra.map((instance) => ({ name: instance, kind: "decommission", instance, pod: ServiceSpec.parseInstance(instance)?.pod }))
    }]
  }
}

/**
 * The uninstall plan: kill and release every instance (in parallel), then tear the framework
 * down.
 *
 * @since 0.1.0
 * @category plans
 */
export const uninstallPlan = (instances: ReadonlyArray<string>): Plan => ({
  name: "uninstall",
  strategy: "serial",
  phases: [
    {
      name: "release",
      strategy: "parallel",
      steps: instances.map((instance) => ({ name: instance, kind: "uninstall", instance, pod: ServiceSpec.parseInstance(instance)?.pod }))
    },
    { name: "teardown", strategy: "serial", steps: [{ name: "teardown", kind: "teardown" }] }
  ]
})

/**
 * A custom plan of the spec (e.g. `backup`): each phase runs its tasks on every instance of its
 * pod. Custom plans are manual: nothing runs until the operator starts them.
 *
 * @since 0.1.0
 * @category plans
 */
export const customPlan = (spec: ServiceSpec.ServiceSpec, name: string): Plan | undefined => {
  const p = spec.plans?.[name]
  if (p === undefined) return undefined
  return {
    name,
    strategy: p.strategy ?? "serial",
    manual: true,
    phases: Object.entries(p.phases).map(([phaseName, phase]): Phase => ({
      name: phaseName,
      strategy: phase.strategy ?? "serial",
      dependsOn: phase.dependsOn,
      steps: Array.from({ length: spec.pods[phase.pod]?.count ?? 0 }, (_, i) => {
        const instance = ServiceSpec.instanceName(phase.pod, i)
        return { name: instance, kind: "run" as const, instance, pod: phase.pod, tasks: phase.tasks ?? Object.keys(spec.pods[phase.pod]!.tasks) }
      })
    }))
  }
}

/**
 * The recovery plan: one step per instance that needs recovering, all in parallel (each acts on
 * its own instance).
 *
 * @since 0.1.0
 * @category plans
 */
export const recoveryPlan = (
  actions: ReadonlyArray<{ readonly instance: string; readonly kind: "restart" | "replace" }>
): Plan => ({
  name: "recovery",
  strategy: "serial",
  phases: actions.length === 0 ? [] : [{
    name: "recovery",
    strategy: "parallel",
    steps: actions.map((a) => ({ name: a.instance, kind: a.kind, instance: a.instance, pod: ServiceSpec.parseInstance(a.instance)?.pod }))
  }]
})

// ---------------------------------------------------------------------------------------------
// Failure monitor

/**
 * When an instance that keeps failing is given up on and replaced elsewhere. `permanentAfterMs`
 * undefined (the default) never replaces automatically: a lost agent may come back, and a
 * replace loses the instance's data. `minReplaceDelayMs` spaces automatic replacements.
 *
 * @since 0.1.0
 * @category failure monitor
 */
export interface FailurePolicy {
  readonly permanentAfterMs?: number | undefined
  readonly minReplaceDelayMs?: number | undefined
}

/**
 * What the failure monitor knows of an instance, stored so that its clock survives scheduler
 * restarts: when it started failing (the first failure since it was last healthy), how often,
 * and when it was last replaced.
 *
 * @since 0.1.0
 * @category failure monitor
 */
export interface FailureRecord {
  readonly since: number
  readonly failures: number
  readonly lastReplacedAt?: number | undefined
}

/**
 * Records one more failure at `now` (starting the clock if the instance was healthy).
 *
 * @since 0.1.0
 * @category failure monitor
 */
export const recordFailure = (record: FailureRecord | undefined, now: number): FailureRecord =>
  record === undefined ? { since: now, failures: 1 } : { ...record, failures: record.failures + 1 }

/**
 * The failure monitor: `restart` in place (transient, keeps the reservation and volumes) until
 * the instance has been failing for `permanentAfterMs` — measured from the stored `since`, so a
 * scheduler restart does not reset it — then `replace` (permanent: elsewhere, releasing the old
 * resources), at most once per `minReplaceDelayMs`.
 *
 * @example
 * ```ts
 * import { Plan } from "@berth/sdk-scheduler"
 *
 * Plan.recoveryAction({ since: 0, failures: 3 }, 20 * 60_000, { permanentAfterMs: 20 * 60_000 }) // "replace"
 * Plan.recoveryAction({ since: 0, failures: 3 }, 60_000, { permanentAfterMs: 20 * 60_000 })      // "restart"
 * ```
 *
 * @since 0.1.0
 * @category failure monitor
 */
export const recoveryAction = (record: FailureRecord, now: number, policy: FailurePolicy): "restart" | "replace" => {
  if (policy.permanentAfterMs === undefined) return "restart"
  if (now - record.since < policy.permanentAfterMs) return "restart"
  if (record.lastReplacedAt !== undefined && now - record.lastReplacedAt < (policy.minReplaceDelayMs ?? 0)) return "restart"
  return "replace"
}

// ---------------------------------------------------------------------------------------------
// Operator controls

/**
 * The operator's commands on a plan, written to the `PlanStore` (so they survive restarts).
 *
 * - `start` / `resume`: lift a pause (and approve a canary); a manual plan starts running.
 * - `stop`: pause and reset every step to PENDING (the next start runs the plan from scratch).
 * - `pause`: nothing new starts (running steps finish).
 * - `forceComplete`: mark a plan, phase or step complete without running it.
 * - `restart`: reset steps to PENDING and lift force-complete, so they run again.
 *
 * @since 0.1.0
 * @category controls
 */
export interface Controls {
  readonly start: (plan: Plan) => Effect.Effect<void, StoreError>
  readonly stop: (plan: Plan) => Effect.Effect<void, StoreError>
  readonly pause: (target: PlanStore.Target) => Effect.Effect<void, StoreError>
  readonly resume: (target: PlanStore.Target) => Effect.Effect<void, StoreError>
  readonly forceComplete: (target: PlanStore.Target) => Effect.Effect<void, StoreError>
  readonly restart: (plan: Plan, target: PlanStore.Target) => Effect.Effect<void, StoreError>
}

/**
 * {@link Controls} on a `PlanStore`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PlanStore } from "@berth/storage"
 * import { Plan } from "@berth/sdk-scheduler"
 *
 * const program = Effect.gen(function*() {
 *   const c = Plan.controls(yield* PlanStore.make)
 *   yield* c.pause({ plan: "deploy" })
 *   yield* c.forceComplete({ plan: "deploy", phase: "kv", step: "kv-2" })
 *   yield* c.resume({ plan: "deploy" })
 * })
 * ```
 *
 * @since 0.1.0
 * @category controls
 */
export const controls = (store: PlanStore.PlanStore): Controls => {
  const stepsOf = (plan: Plan, target: PlanStore.Target) =>
    plan.phases
      .filter((p) => target.phase === undefined || p.name === target.phase)
      .flatMap((p) => p.steps.filter((s) => target.step === undefined || s.name === target.step).map((s) => [p.name, s.name] as const))
  const reset = (plan: Plan, target: PlanStore.Target) =>
    Effect.forEach(stepsOf(plan, target), ([phase, step]) => store.setStepStatus(plan.name, phase, step, "PENDING"), { discard: true })
  return {
    start: (plan) => store.setOverride({ plan: plan.name }, { interrupted: false, forceComplete: false }).pipe(Effect.asVoid),
    stop: (plan) =>
      Effect.gen(function*() {
        yield* store.setOverride({ plan: plan.name }, { interrupted: true, forceComplete: false })
        yield* reset(plan, { plan: plan.name })
      }),
    pause: (target) => Effect.asVoid(store.setOverride(target, { interrupted: true })),
    resume: (target) => Effect.asVoid(store.setOverride(target, { interrupted: false })),
    forceComplete: (target) => Effect.asVoid(store.setOverride(target, { forceComplete: true })),
    restart: (plan, target) =>
      Effect.gen(function*() {
        const overrides = yield* store.overrides(plan.name)
        // Lift force-complete on the target and everything under it, so the steps run again.
        if (target.phase === undefined) {
          if (Option.isSome(overrides.plan)) yield* store.setOverride({ plan: plan.name }, { forceComplete: false })
          for (const phase of overrides.phases.keys()) yield* store.setOverride({ plan: plan.name, phase }, { forceComplete: false })
          for (const [phase, steps] of overrides.steps) {
            for (const step of steps.keys()) yield* store.setOverride({ plan: plan.name, phase, step }, { forceComplete: false })
          }
        } else if (target.step === undefined) {
          if (overrides.phases.has(target.phase)) yield* store.setOverride(target, { forceComplete: false })
          for (const step of overrides.steps.get(target.phase)?.keys() ?? []) {
            yield* store.setOverride({ plan: plan.name, phase: target.phase, step }, { forceComplete: false })
          }
        } else if (overrides.steps.get(target.phase)?.has(target.step) === true) {
          yield* store.setOverride(target, { forceComplete: false })
        }
        yield* reset(plan, target)
      })
  }
}
