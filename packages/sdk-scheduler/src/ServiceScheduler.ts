/**
 * The service runtime: it keeps a {@link ServiceSpec.ServiceSpec} deployed. It stores the spec as
 * the target configuration, computes the deploy plan from what runs, and drives every plan's
 * steps through the `TaskLifecycle` and `OfferManager`: deploy (reserve, create volumes,
 * launch), rolling config updates (one instance at a time, each waiting for readiness), scale
 * up, restart in place on the same reservation and volumes, replace elsewhere (releasing the old
 * reservation and volumes when their agent is offered), decommission, custom plans with
 * parameters, and uninstall (kill, destroy, unreserve, teardown) that leaves nothing behind.
 *
 * A pod's RUNNING tasks run as one task when there is one, as one task group (the default
 * executor: one sandbox, the pod's volumes shared) when there are several or when custom plans
 * run sidecar tasks in the pod (a backup that reads the live volume): those join the running
 * group, on a share of the pod's reservation held back for them.
 *
 * Everything it decides from is stored (target config, plan statuses and overrides, each
 * instance's reservation generation, failure clock and recovery, what is to be released), so a
 * restarted scheduler resumes where it stopped: the task lifecycle's write-ahead and its
 * idempotent `launch` make sure no task is launched twice.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { ServiceScheduler, ServiceSpec } from "@berth/sdk-scheduler"
 * import { StateStore } from "@berth/storage"
 *
 * const spec = ServiceSpec.fromYamlSync(yamlText)
 * const Live = ServiceScheduler.layerStack({ spec, master: "127.0.0.1:5050" }).pipe(
 *   Layer.provide(StateStore.layerSqlite({ path: "kv-store.db" }))
 * )
 * const program = Effect.gen(function*() {
 *   const service = yield* ServiceScheduler.ServiceScheduler
 *   yield* service.awaitPlan("deploy")          // every pod RUNNING and ready
 *   yield* service.replacePod("kv-1")            // move it elsewhere, release the old volume
 * }).pipe(Effect.provide(Live))
 * ```
 *
 * @since 0.1.0
 */
import { ConfigStore, Election, FrameworkStore, PlanStore, StateStore, TypedStore } from "@berth/storage"
import type { StoreError } from "@berth/storage"
import { Clock, Context, Duration, Effect, Exit, Layer, Option, Queue, Schema, Scope, Semaphore, Stream } from "effect"
import { hostname } from "node:os"
import { createHash } from "node:crypto"
import * as OfferManager from "./OfferManager.ts"
import * as Plan from "./Plan.ts"
import * as Requirement from "./Requirement.ts"
import * as SchedulerEvents from "./SchedulerEvents.ts"
import * as SchedulerSession from "./SchedulerSession.ts"
import type { InvalidOptions } from "./SchedulerError.ts"
import * as ServiceSpec from "./ServiceSpec.ts"
import * as TaskLifecycle from "./TaskLifecycle.ts"
import * as Release from "./internal/service/release.ts"
import * as TaskInfo from "./internal/service/taskInfo.ts"

// ---------------------------------------------------------------------------------------------
// Stored records

const FailureRecord = Schema.Struct({
  since: Schema.Number,
  failures: Schema.Number,
  lastReplacedAt: Schema.optional(Schema.Number),
  recoveredAt: Schema.optional(Schema.Number)
})

/**
 * What the runtime stores about one pod instance.
 *
 * @since 0.1.0
 * @category models
 */
export const InstanceRecord = Schema.Struct({
  instance: Schema.String,
  pod: Schema.String,
  index: Schema.Number,
  /** Bumped by every replace: the reservation and volume names carry it. */
  generation: Schema.Number,
  /** Attempts launched from this time on belong to the current generation. */
  generationSince: Schema.Number,
  /** The current generation's reservation (and volumes) exist on `agentId`. */
  placed: Schema.Boolean,
  agentId: Schema.optional(Schema.String),
  hostname: Schema.optional(Schema.String),
  /** A replaced instance avoids the host it left. */
  avoidHostname: Schema.optional(Schema.String),
  /** The configuration (pod fingerprint and config id) its tasks run, once deployed. */
  fingerprint: Schema.optional(Schema.String),
  configId: Schema.optional(Schema.String),
  /** The configuration being deployed, and since when. */
  launchFingerprint: Schema.optional(Schema.String),
  launchConfigId: Schema.optional(Schema.String),
  launchSince: Schema.optional(Schema.Number),
  onceDone: Schema.Array(Schema.String),
  failure: Schema.optional(FailureRecord),
  recovery: Schema.optional(Schema.Struct({
    kind: Schema.Literals(["restart", "replace"]),
    requestedAt: Schema.Number,
    moved: Schema.optional(Schema.Boolean),
    /** Started by the failure monitor after a transient failure (the lifecycle relaunches in place). */
    auto: Schema.optional(Schema.Boolean)
  })),
  /** Decommission or uninstall started: never relaunched. */
  retiring: Schema.optional(Schema.Boolean),
  /** The last failed attempt the failure monitor counted. */
  countedAttempt: Schema.optional(Schema.Number),
  /** The step start (its `since`) for which everything the instance ran was stopped. */
  freshFor: Schema.optional(Schema.Number)
})
/** @since 0.1.0 @category models */
export type InstanceRecord = typeof InstanceRecord.Type

const Meta = Schema.Struct({ uninstalling: Schema.Boolean, tornDown: Schema.optional(Schema.Boolean) })
const PlanRun = Schema.Struct({ parameters: Schema.Record(Schema.String, Schema.String), startedAt: Schema.Number })

// ---------------------------------------------------------------------------------------------
// Public models

/**
 * One pod instance as it stands.
 *
 * @since 0.1.0
 * @category models
 */
export interface PodStatus {
  readonly instance: string
  readonly pod: string
  readonly index: number
  /**
   * The latest attempt of its RUNNING task(s), as one: the least advanced live task of the
   * attempt (RUNNING once all run), ready once every task is.
   */
  readonly taskId?: string | undefined
  readonly state?: TaskLifecycle.State | undefined
  readonly ready?: boolean | undefined
  /** Each task of that attempt (one, or every task of the pod's group). */
  readonly tasks: ReadonlyArray<PodTaskStatus>
  readonly agentId?: string | undefined
  readonly hostname?: string | undefined
  readonly generation: number
  /** Runs the target configuration. */
  readonly upToDate: boolean
  readonly recovering?: "restart" | "replace" | undefined
}

/**
 * One task of a pod instance's latest attempt.
 *
 * @since 0.1.0
 * @category models
 */
export interface PodTaskStatus {
  /** The task's name in the pod spec. */
  readonly name: string
  readonly taskId: string
  readonly state: TaskLifecycle.State
  readonly ready?: boolean | undefined
  readonly healthy?: boolean | undefined
}

/**
 * The runtime's failures from the operator's side: an unknown plan or pod, a parameter the plan
 * does not declare.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServiceCommandError extends Schema.TaggedError<ServiceCommandError>()("ServiceCommandError", {
  path: Schema.String,
  rule: Schema.String
}) {
  override get message(): string {
    return `${this.path}: ${this.rule}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The target spec. */
  readonly spec: Effect.Effect<ServiceSpec.ServiceSpec, StoreError.StoreError>
  /**
   * Makes `spec` the target (a rolling update, a scale-up, a decommission). A spec that is
   * invalid, or an update the validators refuse, fails with every reason and changes nothing.
   */
  readonly update: (spec: unknown) => Effect.Effect<void, ServiceSpec.ServiceSpecError | StoreError.StoreError>
  /** Every plan (deploy, recovery, decommission, custom plans, uninstall while it runs). */
  readonly plans: Effect.Effect<ReadonlyArray<Plan.PlanView>, StoreError.StoreError>
  readonly plan: (name: string) => Effect.Effect<Plan.PlanView, ServiceCommandError | StoreError.StoreError>
  /** Starts a custom plan (from scratch) with parameters, which become its tasks' environment. */
  readonly startPlan: (name: string, parameters?: Readonly<Record<string, string>>) => Effect.Effect<void, ServiceCommandError | StoreError.StoreError>
  readonly stopPlan: (name: string) => Effect.Effect<void, ServiceCommandError | StoreError.StoreError>
  readonly pause: (target: PlanStore.Target) => Effect.Effect<void, ServiceCommandError | StoreError.StoreError>
  readonly resume: (target: PlanStore.Target) => Effect.Effect<void, ServiceCommandError | StoreError.StoreError>
  readonly forceComplete: (target: PlanStore.Target) => Effect.Effect<void, ServiceCommandError | StoreError.StoreError>
  readonly restartPlan: (target: PlanStore.Target) => Effect.Effect<void, ServiceCommandError | StoreError.StoreError>
  readonly pods: Effect.Effect<ReadonlyArray<PodStatus>, StoreError.StoreError>
  /** Restarts an instance in place: same agent, same reservation, same volumes. */
  readonly restartPod: (instance: string) => Effect.Effect<void, ServiceCommandError | StoreError.StoreError>
  /** Replaces an instance: launched elsewhere with new volumes; the old ones are released. */
  readonly replacePod: (instance: string) => Effect.Effect<void, ServiceCommandError | StoreError.StoreError>
  /** Starts the uninstall: kill everything, destroy volumes, unreserve, tear the framework down. */
  readonly uninstall: Effect.Effect<void, StoreError.StoreError>
  /** Waits until a plan is COMPLETE (or `until` holds), checking as the runtime progresses. */
  readonly awaitPlan: (name: string, until?: (view: Plan.PlanView) => boolean) => Effect.Effect<Plan.PlanView, StoreError.StoreError>
  /** The offer manager's why-not record of an instance's pending launch. */
  readonly whyNot: (instance: string) => Effect.Effect<Option.Option<OfferManager.WhyNotRecord>>
  /** What is still to be released (old reservations and volumes), per agent. */
  readonly pendingRelease: Effect.Effect<ReadonlyArray<{ readonly instance: string; readonly agentId: string }>>
  /** The framework id, the target configuration and whether an uninstall is under way (`/v1/state`). */
  readonly state: Effect.Effect<ServiceState, StoreError.StoreError>
  /** The offer manager's state: queued offers, holds, counters, a why-not record per pending launch. */
  readonly offers: Effect.Effect<OfferManager.Snapshot>
}

/**
 * What the runtime stores about the service as a whole.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServiceState {
  readonly service: string
  /** None before the first registration. */
  readonly frameworkId?: string | undefined
  /** The target configuration: its id (a hash of the spec) and the spec itself, encoded. */
  readonly targetConfigId: string
  readonly spec: ServiceSpec.Encoded
  readonly uninstalling: boolean
  readonly tornDown: boolean
}

/**
 * @since 0.1.0
 * @category services
 */
export class ServiceScheduler extends Context.Service<ServiceScheduler, Service>()("@berth/sdk-scheduler/ServiceScheduler") {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The spec: decoded, or raw data (validated; errors name the path and the rule). */
  readonly spec: ServiceSpec.ServiceSpec | ServiceSpec.Encoded | unknown
  /** When a failing instance is replaced instead of restarted. Default: never (restart in place). */
  readonly failurePolicy?: Plan.FailurePolicy | undefined
  /** How long an instance must run after a recovery before its failure clock is reset. Default 60 s. */
  readonly stableAfter?: Duration.Input | undefined
  /** How often the plans are re-evaluated besides on every task change. Default 250 ms. */
  readonly tickInterval?: Duration.Input | undefined
}

/** How many instances one plan evaluation works on at once. */
const TICK_CONCURRENCY = 128

const configIdOf = (spec: ServiceSpec.ServiceSpec) =>
  createHash("sha256").update(JSON.stringify(Schema.encodeSync(ServiceSpec.ServiceSpec)(spec))).digest("hex").slice(0, 16)

/**
 * `ServiceSpec.podFingerprint`, computed once per spec object and pod: an evaluation asks for it
 * once per instance, and it hashes the pod's whole spec.
 */
const fingerprints = new WeakMap<ServiceSpec.ServiceSpec, Map<string, string>>()
const fingerprintOf = (spec: ServiceSpec.ServiceSpec, pod: string): string => {
  let byPod = fingerprints.get(spec)
  if (byPod === undefined) fingerprints.set(spec, byPod = new Map())
  let fingerprint = byPod.get(pod)
  if (fingerprint === undefined) {
    const base = ServiceSpec.podFingerprint(spec, pod)
    // Gaining or losing sidecars moves the RUNNING task into or out of a group: a new config.
    fingerprint = groupMode(spec, pod) && runningTasksOf(spec.pods[pod]!).length === 1
      ? createHash("sha256").update(`${base}|group`).digest("hex").slice(0, 16)
      : base
    byPod.set(pod, fingerprint)
  }
  return fingerprint
}

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** The pod's RUNNING tasks: one runs as a single task, several as one task group. */
const runningTasksOf = (pod: ServiceSpec.PodSpec): Array<string> =>
  Object.entries(pod.tasks).filter(([, t]) => t.goal === "RUNNING").map(([name]) => name)

/**
 * The pod's tasks that custom plans run next to its RUNNING tasks (a backup, a repair): its
 * tasks named by a plan's phases for that pod (all of them when a phase names none) that are
 * not RUNNING tasks, in a pod that has RUNNING tasks (none otherwise). Only their plans run
 * them (the deploy does not), inside the running group.
 */
const sidecarsOf = (spec: ServiceSpec.ServiceSpec, pod: string): Array<string> => {
  const p = spec.pods[pod]
  if (p === undefined || runningTasksOf(p).length === 0) return []
  const names = new Set<string>()
  for (const plan of Object.values(spec.plans ?? {})) {
    for (const phase of Object.values(plan.phases)) {
      if (phase.pod !== pod) continue
      for (const task of phase.tasks ?? Object.keys(p.tasks)) if (p.tasks[task]?.goal !== "RUNNING") names.add(task)
    }
  }
  return [...names]
}

/**
 * Whether the pod's RUNNING tasks run as a task group (the default executor): with several of
 * them, or with sidecars to launch into the group later (they share its sandbox and volumes).
 */
const groupMode = (spec: ServiceSpec.ServiceSpec, pod: string): boolean => {
  const running = runningTasksOf(spec.pods[pod]!)
  return running.length > 1 || (running.length === 1 && sidecarsOf(spec, pod).length > 0)
}

/**
 * The tasks of the latest attempt of a requirement launched at or after `since`: one task, or
 * every task of its group.
 */
const latestAttempt = (
  records: ReadonlyArray<TaskLifecycle.TaskRecord>,
  requirementId: string,
  since: number
): ReadonlyArray<TaskLifecycle.TaskRecord> => {
  let attempt = -1
  for (const t of records) if (t.requirementId === requirementId && t.launchedAtMs >= since && t.attempt > attempt) attempt = t.attempt
  return attempt < 0 ? [] : records.filter((t) => t.requirementId === requirementId && t.attempt === attempt)
}

/** The task of the pod a record runs: the only RUNNING task, or the group member its id names. */
const taskNameOf = (t: TaskLifecycle.TaskRecord, running: ReadonlyArray<string>): string =>
  running.length === 1 ? running[0]! : t.taskId.slice(t.taskId.lastIndexOf(".") + 1)

/** An attempt's state as one: RUNNING once every task runs, else the least advanced live task's. */
const attemptState = (group: ReadonlyArray<TaskLifecycle.TaskRecord>): TaskLifecycle.TaskRecord | undefined => {
  const live = group.filter((t) => !TaskLifecycle.isTerminal(t.state))
  if (live.length === 0) return group[0]
  return live.find((t) => t.state !== "RUNNING") ?? live[0]
}

/**
 * The runtime over a session, its event hub, offer manager and task lifecycle, and a state store
 * (already namespaced for this service); {@link layerStack} builds all of them. The `releaser`
 * sees the offers the offer manager does not use (its `onOffers` is the offer manager's
 * `onIdleOffers`).
 */
const make = (
  options: Options,
  releaser: Release.Releaser
): Effect.Effect<
  Service,
  ServiceSpec.ServiceSpecError | StoreError.StoreError,
  | SchedulerSession.SchedulerSession
  | SchedulerEvents.SchedulerEvents
  | OfferManager.OfferManager
  | TaskLifecycle.TaskLifecycle
  | StateStore.StateStore
  | Scope.Scope
> =>
  Effect.gen(function*() {
    const initial = yield* ServiceSpec.decode(options.spec)
    const session = yield* SchedulerSession.SchedulerSession
    const events = yield* SchedulerEvents.SchedulerEvents
    const offers = yield* OfferManager.OfferManager
    const tasks = yield* TaskLifecycle.TaskLifecycle
    const planStore = yield* PlanStore.make
    const configs = yield* ConfigStore.make(ServiceSpec.ServiceSpec)
    const frameworks = yield* FrameworkStore.make
    const instances = yield* TypedStore.make(InstanceRecord, "service/instances/")
    const metaStore = yield* TypedStore.make(Meta, "service/")
    const runs = yield* TypedStore.make(PlanRun, "service/plan-runs/")
    const controls = Plan.controls(planStore)
    const policy = options.failurePolicy ?? {}
    const stableMs = Duration.toMillis(Duration.fromInputUnsafe(options.stableAfter ?? "60 seconds"))
    const wake = yield* Queue.sliding<void>(1)
    const hostnames = new Map<string, string>()
    const orDieSchema = <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.catchIf(effect, (e: any): e is any => e?._tag !== "StoreError", (e) => Effect.die(e)) as Effect.Effect<A, StoreError.StoreError>

    const recordsLock = Semaphore.makeUnsafe(1)
    const saveRecord = (r: InstanceRecord) => orDieSchema(instances.put(r.instance, r))
    const loadRecords = Effect.map(orDieSchema(instances.list()), (es) => new Map(es.map((e) => [e.key, e.value])))
    const meta = Effect.map(orDieSchema(metaStore.get("meta")), (o) => Option.getOrElse(Option.map(o, (e) => e.value), (): typeof Meta.Type => ({ uninstalling: false })))

    const target = Effect.gen(function*() {
      const t = yield* configs.target
      if (Option.isNone(t)) return yield* Effect.die(new Error("no target configuration stored"))
      return { id: t.value[0], spec: t.value[1] }
    })

    // Under the records lock: a tick in progress would write the old deploy plan's statuses back.
    const update = (input: unknown) =>
      recordsLock.withPermit(Effect.gen(function*() {
        const next = yield* ServiceSpec.decode(input)
        const current = yield* configs.target
        if (Option.isSome(current)) yield* ServiceSpec.checkUpdate(current.value[1], next)
        const id = configIdOf(next)
        if (Option.isSome(current) && current.value[0] === id) return
        yield* orDieSchema(configs.put(id, next))
        yield* orDieSchema(configs.setTarget(id))
        // The stored deploy statuses belonged to the previous target; the new plan starts fresh.
        yield* planStore.removePlan("deploy")
        yield* Queue.offer(wake, undefined)
      }))

    yield* update(initial)

    const specOf = (configId: string | undefined, fallback: ServiceSpec.ServiceSpec) =>
      configId === undefined
        ? Effect.succeed(fallback)
        : Effect.map(configs.get(configId), Option.getOrElse(() => fallback))

    // -------------------------------------------------------------------------------------------
    // Launching

    /** The latest attempt's task of a requirement that launches one task at a time. */
    const latest = (all: ReadonlyArray<TaskLifecycle.TaskRecord>, requirementId: string, since: number): TaskLifecycle.TaskRecord | undefined =>
      latestAttempt(all, requirementId, since)[0]
    const latestAny = (all: ReadonlyArray<TaskLifecycle.TaskRecord>, requirementId: string) => latest(all, requirementId, -Infinity)
    const live = (t: TaskLifecycle.TaskRecord | undefined): t is TaskLifecycle.TaskRecord => t !== undefined && !TaskLifecycle.isTerminal(t.state)

    let lastReleaseRevive = 0
    /** The in-place launch spec registered with the lifecycle per instance (see the tick). */
    const registered = new Map<string, string>()
    const hostsInUse = new Map<string, { readonly pod: string; readonly hostname: string }>()
    const requirementOf = (spec: ServiceSpec.ServiceSpec, r: InstanceRecord, id: string, launchTasks?: ReadonlyArray<string>) => {
      const base = ServiceSpec.requirement(spec, r.pod, r.index, { existing: r.placed, generation: r.generation, id, launchTasks })
      if (r.placed) return base
      const avoid = new Set<string>()
      if (r.avoidHostname !== undefined) avoid.add(r.avoidHostname)
      // hostname:UNIQUE, also spelt out as the hosts the pod's other instances run on. The offer
      // manager counts running tasks for constraints from the sources registered with it; this
      // keeps UNIQUE hosts correct even when such a source is missing or stale.
      if ((base.constraints ?? []).some((c) => c.operator === "UNIQUE" && Requirement.fieldName(c.field) === "hostname")) {
        for (const [instance, h] of hostsInUse) if (h.pod === r.pod && instance !== r.instance) avoid.add(h.hostname)
      }
      if (avoid.size === 0) return base
      return Requirement.decodeSync({
        ...Schema.encodeSync(Requirement.Requirement)(base),
        constraints: [...(base.constraints ?? []), { field: "hostname", operator: "UNLIKE", value: [...avoid].sort().map(escapeRegex).join("|") }]
      })
    }

    /**
     * The RUNNING task's launch spec. Its requirement id is the instance, so the lifecycle
     * relaunches it in place by itself after a transient failure (goal RUNNING) once the spec
     * asks for the existing reservation; every other relaunch (update, replace, operator restart)
     * is a `stop` and then a new `launch`, so nothing old is relaunched in between.
     */
    const mainSpec = (spec: ServiceSpec.ServiceSpec, r: InstanceRecord, fingerprint: string): TaskLifecycle.LaunchSpec => {
      const running = runningTasksOf(spec.pods[r.pod]!)
      if (!groupMode(spec, r.pod)) {
        return { request: { requirement: requirementOf(spec, r, r.instance), task: TaskInfo.make(spec, r.pod, r.index, running[0]!, { fingerprint }) }, goal: "RUNNING" }
      }
      // The group launches its RUNNING tasks' share; the rest of the pod's reservation stays
      // reserved for the sidecars that custom plans launch into the group.
      return {
        request: { requirement: requirementOf(spec, r, r.instance, running), group: TaskInfo.group(spec, r.pod, r.index, running, { fingerprint }) },
        goal: "RUNNING"
      }
    }

    /**
     * A sidecar's launch spec: a group of one task, launched into the executor of the instance's
     * running group (so it shares its sandbox and volumes), on the share of the instance's
     * reservation the group left for it.
     */
    const sidecarSpec = (
      spec: ServiceSpec.ServiceSpec,
      r: InstanceRecord,
      id: string,
      task: string,
      executorId: string,
      options: { readonly fingerprint: string; readonly extraEnv: Readonly<Record<string, string>> }
    ): TaskLifecycle.LaunchSpec => {
      const pod = spec.pods[r.pod]!
      const group = TaskInfo.group(spec, r.pod, r.index, [task], options)
      return {
        request: {
          requirement: Requirement.decodeSync({
            id,
            group: r.pod,
            role: ServiceSpec.roleOf(spec),
            resources: ServiceSpec.taskResources(pod, pod.tasks[task]!),
            reservation: { labels: ServiceSpec.reservationLabels(spec, r.instance, r.generation), existing: true }
          }),
          group: { executor: { ...group.executor, executorId }, tasks: group.tasks }
        },
        goal: "FINISH"
      }
    }

    /** FINISH and ONCE tasks run once per configuration and generation: a fresh requirement id each. */
    const initId = (r: InstanceRecord, task: string, fingerprint: string) => `${r.instance}-${task}-g${r.generation}-${fingerprint.slice(0, 8)}`

    /**
     * An instance's tasks: its main requirement (`kv-0`) and its init tasks (`kv-0-<task>-...`).
     * Indexed once per task snapshot (by the id and each of its `-` prefixes), since every
     * evaluation asks for every instance: a scan per instance is quadratic at a thousand pods.
     */
    const instanceIndex = new WeakMap<ReadonlyArray<TaskLifecycle.TaskRecord>, Map<string, Array<TaskLifecycle.TaskRecord>>>()
    const ofInstance = (all: ReadonlyArray<TaskLifecycle.TaskRecord>, instance: string): ReadonlyArray<TaskLifecycle.TaskRecord> => {
      let index = instanceIndex.get(all)
      if (index === undefined) {
        index = new Map()
        const add = (key: string, t: TaskLifecycle.TaskRecord) => {
          const list = index!.get(key)
          if (list === undefined) index!.set(key, [t])
          else list.push(t)
        }
        for (const t of all) {
          const id = t.requirementId
          add(id, t)
          for (let i = id.indexOf("-"); i > 0; i = id.indexOf("-", i + 1)) add(id.slice(0, i), t)
        }
        instanceIndex.set(all, index)
      }
      return index.get(instance) ?? []
    }

    const newRecord = (instance: string, pod: string, index: number, now: number): InstanceRecord => ({
      instance, pod, index, generation: 0, generationSince: now, placed: false, onceDone: []
    })

    /** Queues what the instance held on its agent for release (its tasks have ended). */
    const retireReservation = (r: InstanceRecord, spec: ServiceSpec.ServiceSpec) =>
      Effect.gen(function*() {
        if (r.placed && r.agentId !== undefined) {
          yield* releaser.add([{ instance: r.instance, agentId: r.agentId, labels: ServiceSpec.reservationLabels(spec, r.instance, r.generation) }])
          // Offers of that agent may sit behind a long decline filter: clear the filters. The
          // offer manager looks again too: with something to release it does not stay suppressed.
          yield* session.revive().pipe(Effect.ignore)
          yield* offers.poke
        }
      })

    /**
     * Drives one instance towards running `fingerprint` with tasks launched at or after `since`:
     * stops older tasks, moves the instance when replacing (new generation, old reservation
     * released), runs its FINISH/ONCE tasks when `runInit`, then its RUNNING task(s) (one task
     * or one task group), and reports the step's status (COMPLETE once every task is RUNNING and
     * each one with a readiness check is ready).
     */
    const ensure = (
      spec: ServiceSpec.ServiceSpec,
      record: InstanceRecord,
      all: ReadonlyArray<TaskLifecycle.TaskRecord>,
      goal: {
        readonly fingerprint: string
        readonly since: number
        readonly runInit: boolean
        readonly replace: boolean
        /**
         * Start from nothing: stop whatever the instance runs first (which also stops the
         * lifecycle from relaunching it on its own meanwhile). False only for the restart after
         * a transient failure, which the lifecycle does in place by itself.
         */
        readonly fresh: boolean
      }
    ): Effect.Effect<{ status: PlanStore.StepStatus; record: InstanceRecord }, TaskLifecycle.LifecycleError> =>
      Effect.gen(function*() {
        let r = record
        const pod = spec.pods[r.pod]!
        const running = runningTasksOf(pod)
        const mine = ofInstance(all, r.instance)
        if (goal.fresh && r.freshFor !== goal.since) {
          yield* tasks.stop([...new Set([r.instance, ...mine.map((t) => t.requirementId)])])
          r = { ...r, freshFor: goal.since }
          yield* saveRecord(r)
          // The task snapshot predates the stop: look again next time.
          return { status: "STARTING" as const, record: r }
        }
        const older = mine.filter((t) => live(t) && (t.launchedAtMs < goal.since || (goal.fresh && t.killRequested === true)))
        if (older.length > 0) {
          const ids = [...new Set(older.map((t) => t.requirementId))]
          if (older.some((t) => t.killRequested !== true)) yield* tasks.stop(ids)
          return { status: "STARTING" as const, record: r }
        }
        if (goal.replace && r.recovery?.moved !== true) {
          yield* retireReservation(r, spec)
          const now = yield* Clock.currentTimeMillis
          r = {
            ...r,
            generation: r.generation + 1,
            generationSince: now,
            placed: false,
            agentId: undefined,
            avoidHostname: r.hostname ?? r.avoidHostname,
            hostname: undefined,
            onceDone: [],
            ...(r.recovery === undefined ? {} : { recovery: { ...r.recovery, moved: true } })
          }
          yield* saveRecord(r)
        }
        if (goal.runInit) {
          const sidecars = sidecarsOf(spec, r.pod)
          for (const [name, task] of Object.entries(pod.tasks)) {
            // Sidecars run when their plan runs, inside the running group: not at deploy.
            if (task.goal === "RUNNING" || sidecars.includes(name)) continue
            if (task.goal === "ONCE" && r.onceDone.includes(name)) continue
            const id = initId(r, name, goal.fingerprint)
            const t = latestAny(all, id)
            if (t?.state === "FINISHED") {
              if (task.goal === "ONCE") {
                r = { ...r, onceDone: [...r.onceDone, name] }
                yield* saveRecord(r)
              }
              continue
            }
            // The lifecycle relaunches a failed FINISH task itself (with backoff).
            yield* tasks.launch([{
              request: { requirement: requirementOf(spec, r, id), task: TaskInfo.make(spec, r.pod, r.index, name, { fingerprint: goal.fingerprint }) },
              goal: "FINISH"
            }])
            return { status: live(t) ? "STARTING" as const : "PREPARED" as const, record: r }
          }
        }
        if (running.length === 0) return { status: "COMPLETE" as const, record: r }
        const attempt = latestAttempt(mine, r.instance, goal.since)
        // Idempotent: nothing is launched while the latest attempt lives.
        yield* tasks.launch([mainSpec(spec, r, goal.fingerprint)])
        if (!attempt.some(live)) return { status: "PREPARED" as const, record: r }
        if (attempt.some((t) => t.state !== "RUNNING")) return { status: "STARTING" as const, record: r }
        const unready = attempt.some((t) => pod.tasks[taskNameOf(t, running)]?.readiness !== undefined && t.ready !== true)
        return { status: unready ? "STARTED" as const : "COMPLETE" as const, record: r }
      })

    /** Kills everything of an instance and queues its reservation for release; COMPLETE once released. */
    const retire = (spec: ServiceSpec.ServiceSpec, record: InstanceRecord, all: ReadonlyArray<TaskLifecycle.TaskRecord>) =>
      Effect.gen(function*() {
        let r = record
        if (r.retiring !== true) {
          r = { ...r, retiring: true }
          yield* saveRecord(r)
        }
        const mine = ofInstance(all, r.instance)
        const ids = [...new Set([r.instance, ...mine.map((t) => t.requirementId)])]
        const running = mine.filter((t) => live(t))
        if (running.length > 0) {
          if (running.some((t) => t.killRequested !== true)) yield* tasks.stop(ids)
          return "STARTING" as const
        }
        if (r.placed) {
          yield* retireReservation(r, spec)
          r = { ...r, placed: false }
          yield* saveRecord(r)
        }
        const pending = yield* releaser.pending
        if (pending.some((g) => g.instance === r.instance)) return "STARTED" as const
        for (const id of ids) yield* tasks.forget(id).pipe(Effect.ignore)
        yield* orDieSchema(instances.delete(r.instance))
        return "COMPLETE" as const
      })

    // -------------------------------------------------------------------------------------------
    // Plans

    const deployedOf = (records: ReadonlyMap<string, InstanceRecord>): Plan.Deployed =>
      Object.fromEntries([...records.values()].filter((r) => r.fingerprint !== undefined && r.retiring !== true).map((r) => [r.instance, { fingerprint: r.fingerprint! }]))

    const currentPlans = Effect.gen(function*() {
      const m = yield* meta
      const { spec } = yield* target
      const records = yield* loadRecords
      if (m.uninstalling) return { spec, records, plans: [Plan.uninstallPlan([...records.keys()].sort())] }
      const deployed = deployedOf(records)
      const recovery = Plan.recoveryPlan(
        [...records.values()].filter((r) => r.recovery !== undefined && r.retiring !== true).map((r) => ({ instance: r.instance, kind: r.recovery!.kind }))
      )
      const custom = Object.keys(spec.plans ?? {}).map((name) => Plan.customPlan(spec, name)!)
      const retiring = Object.fromEntries([...records.values()].filter((r) => r.retiring === true).map((r) => [r.instance, { fingerprint: "" }]))
      return {
        spec,
        records,
        plans: [Plan.deployPlan(spec, deployed), recovery, Plan.decommissionPlan(spec, { ...deployed, ...retiring }), ...custom]
      }
    })

    const viewOf = (plan: Plan.Plan, spec: ServiceSpec.ServiceSpec, records: ReadonlyMap<string, InstanceRecord>) =>
      Effect.gen(function*() {
        let stored = yield* planStore.steps(plan.name)
        if (plan.name === "deploy") {
          // A COMPLETE stored for an instance that does not run the target (yet) is stale.
          stored = stored.filter((s) => {
            if (s.status !== "COMPLETE") return true
            const r = records.get(s.step)
            const pod = ServiceSpec.parseInstance(s.step)?.pod
            return r !== undefined && pod !== undefined && spec.pods[pod] !== undefined && r.fingerprint === fingerprintOf(spec, pod)
          })
        }
        return Plan.view(plan, stored, yield* planStore.overrides(plan.name))
      })

    const progress = (
      plan: Plan.Plan,
      step: Plan.Step,
      spec: ServiceSpec.ServiceSpec,
      configId: string,
      records: Map<string, InstanceRecord>,
      all: ReadonlyArray<TaskLifecycle.TaskRecord>,
      now: number
    ): Effect.Effect<PlanStore.StepStatus, TaskLifecycle.LifecycleError> =>
      Effect.gen(function*() {
        const instance = step.instance
        switch (step.kind) {
          case "deploy":
          case "update": {
            const parsed = ServiceSpec.parseInstance(instance!)!
            const fingerprint = fingerprintOf(spec, parsed.pod)
            let r = records.get(instance!) ?? newRecord(instance!, parsed.pod, parsed.index, now)
            if (r.launchFingerprint !== fingerprint || r.launchSince === undefined) {
              r = { ...r, launchFingerprint: fingerprint, launchConfigId: configId, launchSince: now, recovery: undefined }
              yield* saveRecord(r)
            }
            const out = yield* ensure(spec, r, all, { fingerprint, since: r.launchSince!, runInit: true, replace: false, fresh: true })
            r = out.record
            if (out.status === "COMPLETE" && (r.fingerprint !== fingerprint || r.configId !== configId)) {
              r = { ...r, fingerprint, configId }
              yield* saveRecord(r)
            }
            records.set(r.instance, r)
            return out.status
          }
          case "restart":
          case "replace": {
            let r = records.get(instance!)
            if (r === undefined || r.recovery === undefined) return "COMPLETE"
            const own = yield* specOf(r.configId, spec)
            if (own.pods[r.pod] === undefined) return "COMPLETE"
            const out = yield* ensure(own, r, all, {
              fingerprint: r.fingerprint ?? fingerprintOf(own, r.pod),
              since: r.recovery.requestedAt,
              runInit: false,
              replace: r.recovery.kind === "replace",
              fresh: r.recovery.kind === "replace" || r.recovery.auto !== true
            })
            r = out.record
            if (out.status === "COMPLETE") {
              const failure = r.failure === undefined
                ? undefined
                : { ...r.failure, recoveredAt: now, ...(r.recovery?.kind === "replace" ? { lastReplacedAt: now } : {}) }
              r = { ...r, recovery: undefined, ...(failure === undefined ? {} : { failure }) }
              yield* saveRecord(r)
            }
            records.set(r.instance, r)
            return out.status
          }
          case "decommission":
          case "uninstall": {
            const r = records.get(instance!)
            if (r === undefined) return "COMPLETE"
            const own = yield* specOf(r.configId, spec)
            return yield* retire(own.pods[r.pod] === undefined ? spec : own, r, all)
          }
          case "run": {
            const run = Option.map(yield* orDieSchema(runs.get(plan.name)), (e) => e.value)
            const parameters = Option.match(run, { onNone: () => ({}), onSome: (x) => x.parameters })
            const since = Option.match(run, { onNone: () => 0, onSome: (x) => x.startedAt })
            const pod = spec.pods[step.pod!]!
            const index = ServiceSpec.parseInstance(instance!)!.index
            const r = records.get(instance!)
            // An instance not deployed yet (a plan that went on while the pod scaled up) or
            // going away: its tasks run on its reservation, so they wait for it.
            if (r === undefined || r.retiring === true || !r.placed) return "PENDING"
            const sidecars = sidecarsOf(spec, step.pod!)
            for (const task of step.tasks ?? []) {
              // One requirement per run, so that every start of the plan runs its tasks again.
              const id = `${instance}-${task}-${plan.name}-${since}`
              const t = latest(all, id, since)
              if (t?.state === "FINISHED") continue
              if (sidecars.includes(task)) {
                // Into the running group (its sandbox and volumes): wait while the group does not run.
                const group = latestAttempt(ofInstance(all, r.instance), r.instance, -Infinity)
                const groupRunning = group.length > 0 && group.every((x) => x.state === "RUNNING")
                if (groupRunning) {
                  const executorId = TaskLifecycle.taskIdOf(r.instance, group[0]!.attempt)
                  // Registered again each time: a relaunched group runs under a new executor.
                  yield* tasks.launch([sidecarSpec(spec, r, id, task, executorId, { fingerprint: plan.name, extraEnv: parameters })])
                }
                if (live(t)) return t.state === "RUNNING" ? "STARTED" : "STARTING"
                return groupRunning ? "PREPARED" : "STARTING"
              }
              if (live(t)) return t.state === "RUNNING" ? "STARTED" : "STARTING"
              if (runningTasksOf(pod).length === 0) {
                // A pod with no RUNNING task: the plan's task runs on the instance's own reservation
                // and volumes, as its FINISH tasks do.
                yield* tasks.launch([{
                  request: { requirement: requirementOf(spec, r, id), task: TaskInfo.make(spec, step.pod!, index, task, { fingerprint: plan.name, extraEnv: parameters }) },
                  goal: "FINISH"
                }])
                return "PREPARED"
              }
              const resources = ServiceSpec.taskResources(pod, pod.tasks[task]!)
              yield* tasks.launch([{
                request: {
                  requirement: Requirement.decodeSync({ id, group: `${step.pod}-${plan.name}`, role: ServiceSpec.roleOf(spec), resources }),
                  task: TaskInfo.make(spec, step.pod!, index, task, { fingerprint: plan.name, extraEnv: parameters })
                },
                // Retried (with backoff) until it succeeds.
                goal: "FINISH"
              }])
              return "PREPARED"
            }
            return "COMPLETE"
          }
          case "teardown": {
            const pending = yield* releaser.pending
            if (pending.length > 0 || records.size > 0) return "PENDING"
            const torn = yield* Effect.result(session.teardown)
            if (torn._tag === "Failure") {
              yield* Effect.logWarning("uninstall: teardown failed; retrying", torn.failure)
              return "PENDING"
            }
            yield* frameworks.clearFrameworkId.pipe(Effect.ignore)
            yield* orDieSchema(metaStore.put("meta", { uninstalling: true, tornDown: true }))
            return "COMPLETE"
          }
        }
      })

    const tick = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const m = yield* meta
      if (m.tornDown === true) return
      const { id: configId } = yield* target
      const { spec, records } = yield* currentPlans
      const all = yield* tasks.tasks
      // Releases wait for an offer from their agent; one that did not come (a long decline
      // filter, a refused operation) is asked for again by clearing the filters.
      const garbage = yield* releaser.pending
      if (garbage.some((g) => g.sentAt === undefined || now - g.sentAt > 10_000) && now - lastReleaseRevive > 10_000) {
        lastReleaseRevive = now
        yield* session.revive().pipe(Effect.ignore)
      }

      // Where each pod's live instances run, for `hostname:UNIQUE` (see `requirementOf`).
      hostsInUse.clear()
      for (const t of all) {
        const r = records.get(t.requirementId)
        if (r === undefined || TaskLifecycle.isTerminal(t.state)) continue
        const hostname = hostnames.get(t.requirementId) ?? (r.agentId === t.agentId ? r.hostname : undefined)
        if (hostname !== undefined) hostsInUse.set(r.instance, { pod: r.pod, hostname })
      }
      const recordsMut = new Map(records)

      // What the lifecycle learnt: reservations made, failures to recover, stable instances. Each
      // instance on its own, concurrently: their writes then share the store's group commits.
      yield* Effect.forEach(records.values(), (r0) => Effect.gen(function*() {
        let r = r0
        let changed = false
        const mine = ofInstance(all, r.instance)
        if (!r.placed && r.retiring !== true) {
          // The Accept that launched a task of this generation also made its reservation.
          // Its own tasks only (group: the pod), not a plan's task launched elsewhere.
          const placed = mine.find((t) => t.launchedAtMs >= r.generationSince && t.progress >= 1 && t.group === r.pod)
          if (placed !== undefined) {
            r = { ...r, placed: true, agentId: placed.agentId, hostname: hostnames.get(placed.requirementId) ?? r.hostname }
            changed = true
          }
        }
        if (r.hostname === undefined && r.placed && hostnames.has(r.instance)) {
          r = { ...r, hostname: hostnames.get(r.instance) }
          changed = true
        }
        const pod = spec.pods[r.pod]
        const running = pod === undefined ? [] : runningTasksOf(pod)
        const deploying = r.launchFingerprint !== undefined && r.launchFingerprint !== r.fingerprint
        const attempts = mine.filter((t) => t.requirementId === r.instance)
        const current = latestAttempt(attempts, r.instance, -Infinity)
        // A group runs as one: a RUNNING task that ended on its own (a failed one already took
        // its siblings down in the executor) has the rest killed, so the group is relaunched whole.
        if (current.length > 1 && current.some((x) => TaskLifecycle.isTerminal(x.state))) {
          for (const x of current) {
            if (live(x) && x.killRequested !== true) yield* tasks.kill(x.taskId)
          }
        }
        if (!m.uninstalling && running.length > 0 && r.retiring !== true && r.fingerprint !== undefined && !deploying) {
          const t = attemptState(current)
          const failed = attempts.filter((x) =>
            TaskLifecycle.isTerminal(x.state) && x.killRequested !== true && x.launchedAtMs >= (r.launchSince ?? 0) && x.attempt > (r.countedAttempt ?? 0)
          )
          if (failed.length > 0 && r.recovery?.kind !== "replace") {
            // The failure monitor: its clock (failure.since) is stored, so restarts do not reset it.
            // One failure per attempt: the tasks of a group fail together.
            const failedAttempts = [...new Set(failed.map((x) => x.attempt))]
            const lastAttempt = failed.filter((x) => x.attempt === failedAttempts.at(-1))
            const last = lastAttempt.find((x) => x.state !== "KILLED") ?? lastAttempt[0]!
            let failure = r.failure?.recoveredAt === undefined ? r.failure : { ...r.failure, recoveredAt: undefined }
            for (const _ of failedAttempts) failure = Plan.recordFailure(failure, now)
            const kind = Plan.recoveryAction(failure!, now, policy)
            // A restart counts any attempt after the failed one (the lifecycle relaunches in place by itself).
            r = {
              ...r,
              failure,
              countedAttempt: last.attempt,
              recovery: kind === "restart" ? { kind, requestedAt: last.launchedAtMs + 1, auto: true } : { kind, requestedAt: now }
            }
            yield* planStore.setStepStatus("recovery", "recovery", r.instance, "PENDING", `${last.taskId} ${last.state}: ${last.message}`)
            changed = true
          } else if (live(t) && t.state === "RUNNING" && current.every(live) && r.failure?.recoveredAt !== undefined && now - r.failure.recoveredAt >= stableMs) {
            r = { ...r, failure: undefined }
            changed = true
          }
          if (r.recovery === undefined && r.placed && live(t)) {
            // After a scheduler restart the lifecycle knows no spec: register the in-place one, so
            // that a transient failure is relaunched on the same reservation and volumes. Once
            // per task attempt and record state: building the spec is costly at a thousand pods.
            const key = `${t.taskId}|${r.generation}|${r.fingerprint}|${r.configId}|${r.agentId}|${r.hostname}`
            if (registered.get(r.instance) !== key) {
              const own = yield* specOf(r.configId, spec)
              if (own.pods[r.pod] !== undefined) yield* tasks.launch([mainSpec(own, r, r.fingerprint!)])
              registered.set(r.instance, key)
            }
          }
        }
        if (changed) {
          yield* saveRecord(r)
          recordsMut.set(r.instance, r)
        }
      }), { concurrency: TICK_CONCURRENCY, discard: true })

      const fresh = yield* currentPlans
      const ordered = m.uninstalling ? fresh.plans : [
        fresh.plans[0]!,
        Plan.recoveryPlan(
          [...recordsMut.values()].filter((r) => r.recovery !== undefined && r.retiring !== true).map((r) => ({ instance: r.instance, kind: r.recovery!.kind }))
        ),
        ...fresh.plans.slice(2)
      ]
      let newWork = false
      // Plans run side by side, but an instance belongs to one plan at a time: the first (in the
      // order deploy, recovery, decommission, custom) that has a step for it under way or ready.
      const claimed = new Set<string>()
      for (const plan of ordered) {
        const view = yield* viewOf(plan, spec, recordsMut)
        const mine = new Set<string>()
        for (const phase of view.phases) {
          for (const s of phase.steps) {
            if (s.instance !== undefined && (s.stored === "PREPARED" || s.stored === "STARTING" || s.stored === "STARTED")) mine.add(s.instance)
          }
        }
        // The candidates of one instance in plan order; different instances concurrently (their
        // writes then share the store's group commits: a 1,000-pod deploy is not 1,000 fsyncs a step).
        const storedOf = new Map(view.phases.flatMap((p) => p.steps.map((st) => [`${p.name}/${st.name}`, st.stored] as const)))
        const groups = new Map<string, Array<{ readonly phase: string; readonly step: Plan.Step; readonly stored: PlanStore.StepStatus }>>()
        for (const c of view.candidates) {
          const step = Plan.findStep(plan, c.phase, c.step)!
          if (step.instance !== undefined) {
            if (claimed.has(step.instance)) continue
            mine.add(step.instance)
          }
          const key = step.instance ?? `${c.phase}/${c.step}`
          const group = groups.get(key)
          const entry = { phase: c.phase, step, stored: storedOf.get(`${c.phase}/${c.step}`)! }
          if (group === undefined) groups.set(key, [entry])
          else group.push(entry)
        }
        yield* Effect.forEach(groups.values(), (group) =>
          Effect.forEach(group, ({ phase, step, stored }) =>
            Effect.gen(function*() {
              const status = yield* progress(plan, step, spec, configId, recordsMut, all, now)
              if (status !== stored) {
                yield* planStore.setStepStatus(plan.name, phase, step.name, status)
                if (status === "PREPARED") newWork = true
              }
            }), { discard: true }), { concurrency: TICK_CONCURRENCY, discard: true })
        for (const i of mine) claimed.add(i)
      }
      // New work: the offer manager revives (rate-limited) if it suppressed offers or declined
      // agents with the long idle filter; a Revive per step would make the master re-offer every
      // agent each time.
      if (newWork) yield* offers.poke
    })

    // A tick reads every instance record once and writes back the ones it changed: an operator
    // command (restart, replace) written meanwhile would be overwritten by the tick's older copy.
    // Commands and ticks take turns.
    const runTick = recordsLock.withPermit(tick).pipe(
      Effect.catchCause((cause) => Effect.logWarning("service runtime: plan evaluation failed; retrying", cause))
    )

    // Event wiring: operation feedback for releases, the framework id for failover.
    yield* events.register("service-scheduler", (event) => {
      switch (event.$case) {
        case "updateOperationStatus":
          return Effect.forEach(event.value.statuses, (s) => releaser.onOperationStatus(s), { discard: true })
        case "subscribed":
          return frameworks.storeFrameworkId(event.value.frameworkId).pipe(
            Effect.catchCause((cause) => Effect.logError("could not store the framework id", cause)),
            Effect.andThen(Queue.offer(wake, undefined)),
            Effect.asVoid
          )
        default:
          return Effect.void
      }
    })
    yield* offers.accepted.pipe(
      Stream.runForEach((a) => Effect.sync(() => hostnames.set(a.placed.requirementId, a.placed.hostname))),
      Effect.forkScoped
    )
    yield* tasks.changes.pipe(Stream.runForEach(() => Queue.offer(wake, undefined)), Effect.forkScoped)
    const interval = options.tickInterval ?? "250 millis"
    yield* Effect.gen(function*() {
      yield* tasks.reconciled
      while (true) {
        yield* runTick
        yield* Effect.raceFirst(Effect.sleep(interval), Queue.take(wake))
      }
    }).pipe(Effect.forkScoped)

    const known = (name: string) =>
      Effect.gen(function*() {
        const { plans, spec, records } = yield* currentPlans
        const plan = plans.find((p) => p.name === name)
        if (plan === undefined) return yield* new ServiceCommandError({ path: `plans.${name}`, rule: `no such plan (known: ${plans.map((p) => p.name).join(", ")})` })
        return { plan, spec, records }
      })

    const knownTarget = (t: PlanStore.Target) =>
      Effect.gen(function*() {
        const { plan } = yield* known(t.plan)
        if (t.phase !== undefined) {
          const phase = plan.phases.find((p) => p.name === t.phase)
          if (phase === undefined) return yield* new ServiceCommandError({ path: `plans.${t.plan}.${t.phase}`, rule: "no such phase" })
          if (t.step !== undefined && !phase.steps.some((s) => s.name === t.step)) {
            return yield* new ServiceCommandError({ path: `plans.${t.plan}.${t.phase}.${t.step}`, rule: "no such step" })
          }
        }
        return plan
      })

    const poke = <A, E>(effect: Effect.Effect<A, E>) => Effect.tap(effect, () => Queue.offer(wake, undefined))
    // Operator commands write what a tick reads and writes back (instance records, step
    // statuses, plan controls): they wait for the tick in progress, so neither overwrites the
    // other (a plan restarted mid-tick would otherwise get its old step statuses back).
    const command = <A, E>(effect: Effect.Effect<A, E>) => poke(recordsLock.withPermit(effect))

    const podCommand = (instance: string, kind: "restart" | "replace") =>
      command(Effect.gen(function*() {
        const records = yield* loadRecords
        const r = records.get(instance)
        if (r === undefined || r.retiring === true) {
          return yield* new ServiceCommandError({ path: `pods.${instance}`, rule: `no such deployed pod instance (deployed: ${[...records.keys()].join(", ") || "none"})` })
        }
        const now = yield* Clock.currentTimeMillis
        yield* saveRecord({ ...r, recovery: { kind, requestedAt: now } })
        yield* planStore.setStepStatus("recovery", "recovery", instance, "PENDING", `${kind} requested by the operator`)
      }))

    const service: Service = {
      spec: Effect.map(target, (t) => t.spec),
      update,
      plans: Effect.gen(function*() {
        const { plans, spec, records } = yield* currentPlans
        return yield* Effect.forEach(plans, (p) => viewOf(p, spec, records))
      }),
      plan: (name) =>
        Effect.gen(function*() {
          const { plan, spec, records } = yield* known(name)
          return yield* viewOf(plan, spec, records)
        }),
      startPlan: (name, parameters = {}) =>
        command(Effect.gen(function*() {
          const { plan, spec } = yield* known(name)
          const declared = spec.plans?.[name]?.parameters ?? {}
          for (const key of Object.keys(parameters)) {
            if (!(key in declared)) {
              return yield* new ServiceCommandError({ path: `parameters.${key}`, rule: `plan ${name} declares no such parameter (declared: ${Object.keys(declared).join(", ") || "none"})` })
            }
          }
          const now = yield* Clock.currentTimeMillis
          yield* orDieSchema(runs.put(name, { parameters: { ...declared, ...parameters }, startedAt: now }))
          yield* controls.restart(plan, { plan: name })
          yield* controls.start(plan)
        })),
      stopPlan: (name) => command(Effect.flatMap(known(name), ({ plan }) => controls.stop(plan))),
      pause: (t) => command(Effect.flatMap(knownTarget(t), () => controls.pause(t))),
      resume: (t) => command(Effect.flatMap(knownTarget(t), () => controls.resume(t))),
      forceComplete: (t) => command(Effect.flatMap(knownTarget(t), () => controls.forceComplete(t))),
      restartPlan: (t) => command(Effect.flatMap(knownTarget(t), (plan) => controls.restart(plan, t))),
      pods: Effect.gen(function*() {
        const { spec } = yield* target
        const records = yield* loadRecords
        const all = yield* tasks.tasks
        const names = [...new Set([...ServiceSpec.instances(spec), ...records.keys()])]
        return names.map((instance): PodStatus => {
          const parsed = ServiceSpec.parseInstance(instance)!
          const r = records.get(instance)
          const group = latestAttempt(ofInstance(all, instance), instance, -Infinity)
          const t = attemptState(group)
          const pod = spec.pods[parsed.pod]
          const running = pod === undefined ? [] : runningTasksOf(pod)
          return {
            instance,
            pod: parsed.pod,
            index: parsed.index,
            taskId: t?.taskId,
            state: t?.state,
            ready: group.length === 0 ? undefined : group.every((x) => x.ready === true) ? true : group.some((x) => x.ready !== undefined) ? false : undefined,
            tasks: group.map((x) => ({
              name: taskNameOf(x, running),
              taskId: x.taskId,
              state: x.state,
              ...(x.ready === undefined ? {} : { ready: x.ready }),
              ...(x.healthy === undefined ? {} : { healthy: x.healthy })
            })),
            agentId: r?.agentId ?? t?.agentId,
            hostname: r?.hostname ?? hostnames.get(instance),
            generation: r?.generation ?? 0,
            upToDate: r !== undefined && spec.pods[parsed.pod] !== undefined && r.fingerprint === fingerprintOf(spec, parsed.pod),
            recovering: r?.recovery?.kind
          }
        })
      }),
      restartPod: (instance) => podCommand(instance, "restart"),
      replacePod: (instance) => podCommand(instance, "replace"),
      uninstall: command(Effect.gen(function*() {
        const m = yield* meta
        if (m.uninstalling) return
        yield* orDieSchema(metaStore.put("meta", { uninstalling: true }))
      })),
      awaitPlan: (name, until = (v) => v.status === "COMPLETE") =>
        Effect.gen(function*() {
          while (true) {
            const { plans, spec, records } = yield* currentPlans
            const plan = plans.find((p) => p.name === name)
            if (plan !== undefined) {
              const v = yield* viewOf(plan, spec, records)
              if (until(v)) return v
            }
            yield* Effect.sleep("100 millis")
          }
        }),
      whyNot: (instance) => offers.whyNot(instance),
      pendingRelease: Effect.map(releaser.pending, (gs) => gs.map((g) => ({ instance: g.instance, agentId: g.agentId }))),
      state: Effect.gen(function*() {
        const t = yield* target
        const m = yield* meta
        const frameworkId = yield* frameworks.frameworkId
        return {
          service: t.spec.name,
          frameworkId: Option.getOrUndefined(frameworkId),
          targetConfigId: t.id,
          spec: Schema.encodeSync(ServiceSpec.ServiceSpec)(t.spec),
          uninstalling: m.uninstalling,
          tornDown: m.tornDown === true
        }
      }),
      offers: offers.snapshot
    }
    return service
  })

/**
 * Why {@link layerStack} could not be built: an invalid spec (before anything is launched),
 * storage, or invalid session options.
 *
 * @since 0.1.0
 * @category errors
 */
export type StackError = ServiceSpec.ServiceSpecError | StoreError.StoreError | InvalidOptions | ServiceUninstalled

/**
 * The store says this service was uninstalled (its framework torn down). Starting it again would
 * register a new framework and deploy from scratch, so it is refused: clear the service's state
 * (`services/<name>/` in the store) to install it anew.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServiceUninstalled extends Schema.TaggedError<ServiceUninstalled>()("ServiceUninstalled", {
  service: Schema.String
}) {
  override get message(): string {
    return `service ${JSON.stringify(this.service)} was uninstalled and its framework torn down; clear its state (services/${this.service}/ in the store) to install it again`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface StackOptions extends Options {
  /** The master's gRPC endpoint(s). */
  readonly master: string
  /** Extra session options (credentials, TLS, reconnect...). The framework is named after the service, with its role. */
  readonly session?: Partial<Omit<SchedulerSession.Options, "master" | "framework">> | undefined
  readonly offers?: Omit<OfferManager.Options, "onIdleOffers" | "suppressWhenIdle" | "wantOffers" | "principal"> | undefined
  readonly lifecycle?: TaskLifecycle.Options | undefined
}

/**
 * Everything a service framework needs, from a state store: the session (failing over to the
 * framework id stored by a previous run), the event hub, the offer manager, the task lifecycle
 * and the service runtime, with all state under `services/<name>/` in the store. The spec is
 * validated first: an invalid one fails the layer (naming the path and the rule) before
 * anything is launched.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { ServiceScheduler } from "@berth/sdk-scheduler"
 * import { StateStore } from "@berth/storage"
 *
 * const Live = ServiceScheduler.layerStack({ spec, master: "127.0.0.1:5050" }).pipe(
 *   Layer.provide(StateStore.layerSqlite({ path: "state.db" }))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerStack = (options: StackOptions): Layer.Layer<ServiceScheduler, StackError, StateStore.StateStore> =>
  Layer.unwrap(Effect.gen(function*() {
    const spec = yield* ServiceSpec.decode(options.spec)
    const base = yield* StateStore.StateStore
    const store = StateStore.namespaced(base, `services/${encodeURIComponent(spec.name)}/`)
    const provideStore = Effect.provideService(StateStore.StateStore, store)
    const releaser = yield* provideStore(Release.make)
    const frameworkId = yield* provideStore(Effect.flatMap(FrameworkStore.make, (f) => f.frameworkId))
    const meta = yield* provideStore(Effect.flatMap(TypedStore.make(Meta, "service/"), (m) => m.get("meta")))
    if (Option.isSome(meta) && meta.value.value.tornDown === true) return yield* new ServiceUninstalled({ service: spec.name })
    const role = ServiceSpec.roleOf(spec)
    const sessionLayer = SchedulerSession.layer({
      ...options.session,
      master: options.master,
      framework: {
        name: spec.name,
        roles: [role],
        ...(spec.principal === undefined ? {} : { principal: spec.principal }),
        ...(spec.user === undefined ? {} : { user: spec.user }),
        ...(Option.isSome(frameworkId) ? { frameworkId: frameworkId.value } : {})
      }
    })
    const offersLayer = OfferManager.layer({
      // A service goes idle between the steps of a rolling update (and suppresses): the next
      // step's Revive should not wait the offer manager's default 5 s.
      reviveInterval: "1 second",
      ...options.offers,
      principal: ServiceSpec.principalOf(spec),
      // Idle with nothing to release: suppressed (no offer for hours, however long it stays
      // idle). Old reservations are released from offers nothing else wants, so while some wait
      // for release, offers keep coming.
      suppressWhenIdle: true,
      wantOffers: Effect.map(releaser.pending, (pending) => pending.length > 0),
      onIdleOffers: releaser.onOffers
    })
    const storeLayer = Layer.succeed(StateStore.StateStore, store)
    const serviceLayer = Layer.effect(ServiceScheduler, make({ ...options, spec }, releaser))
    return SchedulerEvents.layerStart.pipe(
      Layer.provideMerge(serviceLayer),
      Layer.provideMerge(TaskLifecycle.layer(options.lifecycle)),
      Layer.provideMerge(offersLayer),
      Layer.provideMerge(SchedulerEvents.layer),
      Layer.provideMerge(sessionLayer),
      Layer.provideMerge(storeLayer)
    )
  }))

// ---------------------------------------------------------------------------------------------
// High availability

/**
 * This replica's leadership of the service, provided by {@link layerHa} once it leads.
 *
 * @since 0.1.0
 * @category services
 */
export class Leadership extends Context.Service<Leadership, {
  /** What this replica published as its identity in the leader key. */
  readonly identity: string
  /** The leader key in the (un-namespaced) store. */
  readonly key: string
  /**
   * Completes when leadership is lost (the lease lapsed, the key was deleted). By then this
   * replica's stack is already stopped; a program should exit, and its supervisor start it again
   * as a standby.
   */
  readonly lost: Effect.Effect<void>
}>()("@berth/sdk-scheduler/ServiceScheduler/Leadership") {}

/**
 * @since 0.1.0
 * @category models
 */
export interface HaOptions extends StackOptions {
  /** Published in the leader key (default `hostname:pid`). */
  readonly identity?: string | undefined
  /**
   * How long the leader's lease lives without renewal (default 10 s): a leader that dies is
   * replaced after at most this long; one that is stopped hands over at once.
   */
  readonly leaseTtl?: Duration.Input | undefined
}

/**
 * Why {@link layerHa} could not be built: the stack's reasons, or the leader's lease ending
 * while it was being taken.
 *
 * @since 0.1.0
 * @category errors
 */
export type HaError = StackError | StoreError.LeaseExpired

/** The key the replicas of a service campaign on (in the un-namespaced store). @since 0.1.0 @category constructors */
export const leaderKey = (service: string): string => `services/${encodeURIComponent(service)}/ha/leader`

/**
 * {@link layerStack} for several replicas of one scheduler sharing a state store (one SQLite file
 * on a shared disk, or etcd): each replica campaigns on the service's leader key, and only the
 * leader builds the stack (session, offers, lifecycle, runtime). A standby waits in the campaign;
 * when the leader stops (its scope closes: it resigns) or dies (its lease lapses), a standby
 * wins, fails the framework over with the stored framework id, reconciles, and resumes every plan
 * from storage: the same framework, the same tasks, no duplicate launch.
 *
 * The layer finishes building only once this replica leads. A replica that loses leadership
 * stops its stack at once (it must not make decisions a new leader also makes), then
 * {@link Leadership}'s `lost` completes.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { ServiceScheduler } from "@berth/sdk-scheduler"
 * import { StateStore } from "@berth/storage"
 *
 * const Live = ServiceScheduler.layerHa({ spec, master: "127.0.0.1:5050", leaseTtl: "5 seconds" }).pipe(
 *   Layer.provide(StateStore.layerSqlite({ path: "/shared/kv-store.db" }))
 * )
 * const program = Effect.gen(function*() {
 *   const leadership = yield* ServiceScheduler.Leadership
 *   yield* leadership.lost // serve until leadership ends, then exit
 * }).pipe(Effect.provide(Live))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerHa = (
  options: HaOptions
): Layer.Layer<ServiceScheduler | Leadership, HaError, StateStore.StateStore> =>
  Layer.effectContext(Effect.gen(function*() {
    const spec = yield* ServiceSpec.decode(options.spec)
    const key = leaderKey(spec.name)
    const identity = options.identity ?? `${hostname()}:${process.pid}`
    const leadership = yield* Election.campaign(key, new TextEncoder().encode(identity), { ttl: options.leaseTtl ?? "10 seconds" })
    yield* Effect.logInfo(`service ${spec.name}: ${identity} leads`)
    // The stack lives in a child scope, closed as soon as leadership is lost (before the
    // leadership's own finalizer resigns when the outer scope closes normally).
    const outer = yield* Scope.Scope
    const stackScope = yield* Scope.fork(outer)
    const context = yield* Layer.buildWithScope(layerStack({ ...options, spec }), stackScope)
    yield* leadership.lost.pipe(
      Effect.andThen(Effect.logError(`service ${spec.name}: ${identity} lost leadership; stopping its scheduler`)),
      Effect.andThen(Scope.close(stackScope, Exit.void)),
      Effect.forkIn(outer)
    )
    return Context.add(context, Leadership, { identity, key, lost: leadership.lost })
  }))
