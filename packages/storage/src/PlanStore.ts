/**
 * A framework's plans (in the dcos-commons sense: a plan has phases, a phase
 * has steps): the status of every step, and the operator's overrides
 * (interrupt, force-complete) on a plan, a phase or a step. Each step is its
 * own key, so that concurrent steps never contend; the overrides of a plan
 * are one value, changed with compare-and-set.
 *
 * Keys (relative to the framework's namespace): `plans/steps/<plan>/<phase>/<step>`,
 * `plans/overrides/<plan>`, with each name URI-encoded.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Option, Schema, Stream } from "effect"
import type { StateStore } from "./StateStore.ts"
import { listAll, StateStore as StateStoreTag } from "./StateStore.ts"
import type { StoreError } from "./StoreError.ts"
import * as TypedStore from "./TypedStore.ts"

/**
 * The status of a step, as in dcos-commons.
 *
 * @since 0.1.0
 * @category models
 */
export const StepStatus = Schema.Literals([
  "PENDING",
  "PREPARED",
  "STARTING",
  "STARTED",
  "COMPLETE",
  "WAITING",
  "DELAYED",
  "ERROR"
])

/**
 * @since 0.1.0
 * @category models
 */
export type StepStatus = typeof StepStatus.Type

/**
 * @since 0.1.0
 * @category models
 */
export const StepRecord = Schema.Struct({
  status: StepStatus,
  message: Schema.optional(Schema.String),
  /** When the status was recorded (ms since the epoch, from the `Clock`). */
  updatedAt: Schema.Number
})

/**
 * @since 0.1.0
 * @category models
 */
export type StepRecord = typeof StepRecord.Type

/**
 * An operator's decision about part of a plan: `interrupted` pauses it
 * (nothing new starts), `forceComplete` marks it complete without running it.
 *
 * @since 0.1.0
 * @category models
 */
export const Override = Schema.Struct({
  interrupted: Schema.Boolean,
  forceComplete: Schema.Boolean,
  updatedAt: Schema.Number
})

/**
 * @since 0.1.0
 * @category models
 */
export type Override = typeof Override.Type

const PlanOverrides = Schema.Struct({
  plan: Schema.optional(Override),
  phases: Schema.Record(Schema.String, Override),
  steps: Schema.Record(Schema.String, Override)
})
type PlanOverrides = typeof PlanOverrides.Type

/**
 * What an override applies to: a whole plan, one phase, or one step.
 *
 * @since 0.1.0
 * @category models
 */
export interface Target {
  readonly plan: string
  readonly phase?: string | undefined
  readonly step?: string | undefined
}

/**
 * A step with its recorded status.
 *
 * @since 0.1.0
 * @category models
 */
export interface StepState extends StepRecord {
  readonly phase: string
  readonly step: string
}

/**
 * The overrides in force on one plan.
 *
 * @since 0.1.0
 * @category models
 */
export interface Overrides {
  readonly plan: Option.Option<Override>
  readonly phases: ReadonlyMap<string, Override>
  /** By phase, then step. */
  readonly steps: ReadonlyMap<string, ReadonlyMap<string, Override>>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PlanStore {
  readonly setStepStatus: (
    plan: string,
    phase: string,
    step: string,
    status: StepStatus,
    message?: string
  ) => Effect.Effect<void, StoreError>
  /** The recorded steps of a plan, by phase then step name (code point order). */
  readonly steps: (plan: string) => Effect.Effect<ReadonlyArray<StepState>, StoreError>
  readonly step: (plan: string, phase: string, step: string) => Effect.Effect<Option.Option<StepRecord>, StoreError>
  /** Sets (merges) an operator override; `{ interrupted: false, forceComplete: false }` lifts it. */
  readonly setOverride: (
    target: Target,
    override: { readonly interrupted?: boolean | undefined; readonly forceComplete?: boolean | undefined }
  ) => Effect.Effect<Override, StoreError>
  readonly clearOverride: (target: Target) => Effect.Effect<void, StoreError>
  readonly overrides: (plan: string) => Effect.Effect<Overrides, StoreError>
  /** Every plan with recorded state. */
  readonly plans: Effect.Effect<ReadonlyArray<string>, StoreError>
  /** Forgets a plan's step statuses and overrides. */
  readonly removePlan: (plan: string) => Effect.Effect<void, StoreError>
}

const segment = encodeURIComponent
const name = decodeURIComponent

/**
 * The plan store of the current `StateStore`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PlanStore, StateStore } from "@berth/storage"
 *
 * const program = Effect.gen(function*() {
 *   const plans = yield* PlanStore.make
 *   yield* plans.setStepStatus("deploy", "nodes", "node-0", "STARTING")
 *   yield* plans.setOverride({ plan: "deploy", phase: "nodes" }, { interrupted: true }) // operator: pause
 *   return yield* plans.steps("deploy")
 * }).pipe(Effect.provide(StateStore.layerMemory))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<PlanStore, never, StateStore> = Effect.gen(function*() {
  const store = yield* StateStoreTag
  const withStore = <A, E>(effect: Effect.Effect<A, E, StateStore>) => Effect.provideService(effect, StateStoreTag, store)
  const allSteps = yield* TypedStore.make(StepRecord, "plans/steps/")
  const overrides = yield* TypedStore.make(PlanOverrides, "plans/overrides/")
  const stepKey = (plan: string, phase: string, step: string) => `${segment(plan)}/${segment(phase)}/${segment(step)}`
  const empty: PlanOverrides = { phases: {}, steps: {} }
  // Plan records are written without guards, leases or values outside their schema: only StoreErrors remain.
  const storeErrors = <A>(effect: Effect.Effect<A, StoreError | { readonly _tag: "LeaseExpired" | "SchemaError" | "VersionConflict" }>) =>
    Effect.catchIf(effect, (e): e is Exclude<typeof e, StoreError> => e._tag !== "StoreError", (e) => Effect.die(e)) as Effect.Effect<A, StoreError>

  const modifyOverrides = (plan: string, f: (current: PlanOverrides, now: number) => PlanOverrides) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const written = yield* storeErrors(
        overrides.modify(segment(plan), (current) => f(Option.getOrElse(current, () => empty), now))
      )
      return written.value
    })

  const apply = (target: Target, update: (current: Override | undefined) => Override | undefined) =>
  (current: PlanOverrides): PlanOverrides => {
    const set = (record: { readonly [key: string]: Override }, key: string) => {
      const next = { ...record }
      const value = update(record[key])
      if (value === undefined) delete next[key]
      else next[key] = value
      return next
    }
    if (target.phase === undefined) {
      const plan = update(current.plan)
      return { phases: current.phases, steps: current.steps, ...(plan === undefined ? {} : { plan }) }
    }
    if (target.step === undefined) return { ...current, phases: set(current.phases, segment(target.phase)) }
    return { ...current, steps: set(current.steps, `${segment(target.phase)}/${segment(target.step)}`) }
  }

  const planNames = (prefix: string) =>
    Effect.map(
      Stream.runCollect(Stream.provideService(listAll(prefix), StateStoreTag, store)),
      (entries) => entries.map((e) => name(e.key.slice(prefix.length).split("/")[0]!))
    )

  return {
    setStepStatus: (plan, phase, step, status, message) =>
      Effect.gen(function*() {
        const updatedAt = yield* Clock.currentTimeMillis
        yield* storeErrors(
          allSteps.put(stepKey(plan, phase, step), { status, updatedAt, ...(message === undefined ? {} : { message }) })
        )
      }),
    steps: (plan) =>
      withStore(Effect.gen(function*() {
        const ofPlan = yield* TypedStore.make(StepRecord, `plans/steps/${segment(plan)}/`)
        const entries = yield* Stream.runCollect(ofPlan.listAll)
        return entries.map((entry) => {
          const [phase = "", step = ""] = entry.key.split("/")
          return { phase: name(phase), step: name(step), ...entry.value }
        })
      })),
    step: (plan, phase, step) => Effect.map(allSteps.get(stepKey(plan, phase, step)), Option.map((entry) => entry.value)),
    setOverride: (target, override) =>
      Effect.gen(function*() {
        let result: Override | undefined
        yield* modifyOverrides(target.plan, (current, now) =>
          apply(target, (existing) => {
            result = {
              interrupted: override.interrupted ?? existing?.interrupted ?? false,
              forceComplete: override.forceComplete ?? existing?.forceComplete ?? false,
              updatedAt: now
            }
            return result
          })(current))
        return result!
      }),
    clearOverride: (target) => Effect.asVoid(modifyOverrides(target.plan, (current) => apply(target, () => undefined)(current))),
    overrides: (plan) =>
      Effect.map(overrides.get(segment(plan)), (entry) => {
        const value = Option.match(entry, { onNone: () => empty, onSome: (e) => e.value })
        const byPhase = new Map<string, Map<string, Override>>()
        for (const [key, override] of Object.entries(value.steps)) {
          const [phase = "", step = ""] = key.split("/")
          const phaseName = name(phase)
          if (!byPhase.has(phaseName)) byPhase.set(phaseName, new Map())
          byPhase.get(phaseName)!.set(name(step), override)
        }
        return {
          plan: Option.fromNullishOr(value.plan),
          phases: new Map(Object.entries(value.phases).map(([phase, override]) => [name(phase), override])),
          steps: byPhase
        } satisfies Overrides
      }),
    plans: Effect.map(
      Effect.all([planNames("plans/steps/"), planNames("plans/overrides/")]),
      ([a, b]) => [...new Set([...a, ...b])].sort()
    ),
    removePlan: (plan) =>
      Effect.gen(function*() {
        const keys = yield* Effect.map(
          Stream.runCollect(Stream.provideService(listAll(`plans/steps/${segment(plan)}/`), StateStoreTag, store)),
          (entries) => entries.map((e) => e.key)
        )
        keys.push(`plans/overrides/${segment(plan)}`)
        for (const key of keys) yield* Effect.catchTag(store.delete(key), "VersionConflict", (e) => Effect.die(e))
      })
  } satisfies PlanStore
})
