// The scheduler core of the leader: apps, instances and deployments in memory (mirrored to the
// store key by key), the launch queue fed by offers, status handling and the converge loop.
// It talks to the cluster only through the `Cluster` seam below, so a generic offer manager or
// task lifecycle module can replace those parts later.
import { TaskStates, v1 } from "@berth/proto"
import { Placement, type Requirement } from "@berth/sdk-scheduler"
import { StateStore, Txn } from "@berth/storage"
import { Effect } from "effect"
import * as AppDefinition from "../AppDefinition.ts"
import * as Backoff from "./backoff.ts"
import type { EventBus } from "./events.ts"
import type { ActionName, Deployment, Instance, OfferStats, TaskStateName } from "./model.ts"
import * as Rolling from "./rolling.ts"

type App = AppDefinition.App
type Store = StateStore.StateStore["Service"]

/** The cluster calls the core makes: a SchedulerSession, or a fake in unit tests. */
export interface Cluster {
  readonly accept: (offerIds: ReadonlyArray<string>, operations: ReadonlyArray<v1.Operation>, filters?: v1.Filters) => Effect.Effect<unknown, unknown>
  readonly decline: (offerIds: ReadonlyArray<string>, filters?: v1.Filters) => Effect.Effect<void, unknown>
  readonly kill: (taskId: string, options?: { agentId?: string }) => Effect.Effect<void, unknown>
  readonly reconcile: (tasks?: ReadonlyArray<{ taskId: string; agentId?: string }>) => Effect.Effect<void, unknown>
  readonly revive: () => Effect.Effect<void, unknown>
}

/** An API error with its HTTP status. */
export class ApiError {
  readonly _tag = "ApiError"
  readonly status: number
  readonly body: Record<string, unknown>
  constructor(status: number, body: Record<string, unknown>) {
    this.status = status
    this.body = body
  }
}

export const KEYS = {
  app: (id: string) => `apps/${encodeURIComponent(id)}`,
  version: (id: string, version: string) => `versions/${encodeURIComponent(id)}/${version}`,
  versions: (id: string) => `versions/${encodeURIComponent(id)}/`,
  instance: (id: string) => `instances/${id}`,
  deployment: (id: string) => `deployments/${id}`,
  frameworkId: "framework/id",
  eventId: "events/last-id"
}

const enc = new TextEncoder()
const dec = new TextDecoder()
const json = (value: unknown) => enc.encode(JSON.stringify(value))

const STATE_NAMES: Record<number, TaskStateName> = Object.fromEntries(
  Object.entries(v1.TaskState).filter(([, v]) => typeof v === "number" && v > 0).map(([k, v]) => [v, `TASK_${k}` as TaskStateName])
)
const TERMINAL = new Set<TaskStateName>(["TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR"])
const GONE_FOR_NOW = new Set<TaskStateName>(["TASK_UNREACHABLE", "TASK_UNKNOWN"])
/** Ends that count as failures for the backoff (Marathon: FAILED and FINISHED, not KILLED). */
const FAILURES = new Set<TaskStateName>(["TASK_FAILED", "TASK_FINISHED", "TASK_ERROR"])

/** Launches matched against the offers in one evaluation (see `Core.handleOffers`). */
const LAUNCH_SLICE = 200
/** Keys written in one store transaction at most (see `Core.write`). */
const WRITE_CHUNK = 100
/** Statuses applied between two turns of the event loop. */
const STATUS_SLICE = 200
/** One turn of the event loop (a macrotask): pending I/O, such as HTTP requests, runs first. */
const letIoThrough: Effect.Effect<void> = Effect.callback<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

const sanitize = (appId: string) => appId.slice(1).replace(/\//g, "_")

export interface CoreOptions {
  readonly store: Store
  readonly events: EventBus
  /** The framework's role: resident apps reserve for it. */
  readonly role: string
  readonly principal: string
  /** Fences every write with the leader key's version, so a deposed leader cannot write. */
  readonly fence?: { readonly key: string; readonly version: number } | undefined
  readonly now: () => number
  readonly newId?: () => string
}

export class Core {
  readonly apps = new Map<string, App>()
  readonly versions = new Map<string, Array<string>>()
  readonly instances = new Map<string, Instance>()
  private readonly byTask = new Map<string, string>()
  /** Instance ids per app, so per-app views cost O(the app's instances), not O(all). */
  private readonly byApp = new Map<string, Set<string>>()
  readonly deployments = new Map<string, Deployment>()
  /** Apps being destroyed: their instances are killed, then their records removed. */
  readonly deleting = new Map<string, App>()
  readonly backoff = new Map<string, Backoff.Backoff>()
  readonly stats = new Map<string, OfferStats>()
  readonly lastTaskFailure = new Map<string, Record<string, unknown>>()
  /** A counter per app, bumped on every change of the app, its instances or its deployment (for response caching). */
  readonly revisions = new Map<string, number>()
  /** The revision of each app at the last converge pass that found nothing to do for it. */
  private readonly settled = new Map<string, number>()
  /** Launches each app wants right now (recomputed by every converge pass). */
  readonly wanted = new Map<string, number>()
  private cluster: Cluster | undefined
  private readonly now: () => number
  private readonly newId: () => string
  private wantedBefore = 0

  readonly options: CoreOptions
  constructor(options: CoreOptions) {
    this.options = options
    this.now = options.now
    this.newId = options.newId ?? (() => crypto.randomUUID())
  }

  private iso(): string {
    return new Date(this.now()).toISOString()
  }

  // ---------------------------------------------------------------------------------------------
  // Persistence

  /**
   * Writes the ops, fenced. Up to `WRITE_CHUNK` ops go in one transaction; a bigger batch (1,000
   * instances launched or updated at once) is written in transactions of that size, one after
   * another, because a SQLite transaction runs on the event loop and one of 1,000 keys would
   * hold every API request up for hundreds of milliseconds. Such big batches only hold
   * independent per-instance keys (and a deployment's end), so a crash between two of them
   * leaves records a new leader reconciles, never a half-written app.
   */
  private write(ops: ReadonlyArray<StateStore.TxnOp>): Effect.Effect<void, ApiError> {
    if (ops.length === 0) return Effect.void
    if (ops.length <= WRITE_CHUNK) return this.writeOne(ops)
    return Effect.gen({ self: this }, function*() {
      for (let k = 0; k < ops.length; k += WRITE_CHUNK) {
        if (k > 0) yield* letIoThrough
        yield* this.writeOne(ops.slice(k, k + WRITE_CHUNK))
      }
    })
  }

  private writeOne(ops: ReadonlyArray<StateStore.TxnOp>): Effect.Effect<void, ApiError> {
    const fenced = this.options.fence === undefined ? ops : [Txn.check(this.options.fence.key, this.options.fence.version), ...ops]
    return this.options.store.transaction(fenced).pipe(
      Effect.asVoid,
      Effect.mapError((e) => new ApiError(503, { message: `state store write failed: ${String((e as { message?: unknown }).message ?? e)}` }))
    )
  }

  private putInstance(i: Instance): StateStore.TxnOp {
    return Txn.put(KEYS.instance(i.instanceId), json(i))
  }

  /** Loads everything from the store (a new leader's first step). */
  load: Effect.Effect<void, unknown> = Effect.gen({ self: this }, function*() {
    const store = this.options.store
    for (const e of yield* store.list("apps/")) {
      const app = JSON.parse(dec.decode(e.value)) as App
      this.apps.set(app.id, app)
    }
    for (const e of yield* store.list("versions/")) {
      const [, id, version] = e.key.split("/")
      const appId = decodeURIComponent(id!)
      const list = this.versions.get(appId) ?? []
      list.push(version!)
      this.versions.set(appId, list)
    }
    for (const list of this.versions.values()) list.sort()
    for (const e of yield* store.list("instances/")) {
      const i = JSON.parse(dec.decode(e.value)) as Instance
      this.remember(i)
      if (GONE_FOR_NOW.has(i.state)) this.unreachableApps.add(i.appId)
    }
    for (const e of yield* store.list("deployments/")) {
      const d = JSON.parse(dec.decode(e.value)) as Deployment & { deleting?: App }
      this.deployments.set(d.id, d)
      if (d.deleting !== undefined) this.deleting.set(d.deleting.id, d.deleting)
    }
  })

  readVersion(appId: string, version: string): Effect.Effect<App | undefined, unknown> {
    const current = this.apps.get(appId)
    if (current !== undefined && current.version === version) return Effect.succeed(current)
    return Effect.map(this.options.store.get(KEYS.version(appId, version)), (o) =>
      o._tag === "Some" ? (JSON.parse(dec.decode(o.value.value)) as App) : undefined)
  }

  attach(cluster: Cluster): void {
    this.cluster = cluster
  }

  // ---------------------------------------------------------------------------------------------
  // Queries

  instancesOf(appId: string): Array<Instance> {
    const out: Array<Instance> = []
    for (const id of this.byApp.get(appId) ?? []) out.push(this.instances.get(id)!)
    return out
  }

  deploymentOf(appId: string): Deployment | undefined {
    if (this.deployments.size === 0) return undefined
    for (const d of this.deployments.values()) if (d.affectedApps.includes(appId)) return d
    return undefined
  }

  isHealthy(app: App, i: Instance): boolean {
    if (i.state !== "TASK_RUNNING" || i.killing || i.parked) return false
    if (app.healthChecks.length > 0 && i.healthy !== true) return false
    if (app.readinessChecks.length > 0 && i.ready !== true) return false
    return true
  }

  /** An app (or every app of a group) runs all its instances healthy with no deployment in flight. */
  isUp(id: string): boolean {
    const apps = this.apps.has(id) ? [this.apps.get(id)!] : [...this.apps.values()].filter((a) => a.id.startsWith(id + "/"))
    return apps.every((app) => {
      if (this.deploymentOf(app.id) !== undefined) return false
      let healthy = 0
      for (const i of this.instancesOf(app.id)) if (i.version === app.versionInfo.lastConfigChangeAt && this.isHealthy(app, i)) healthy++
      return healthy >= app.instances
    })
  }

  /**
   * Counts toward the app's instances. An unreachable task still counts until its app's
   * `unreachableStrategy.inactiveAfterSeconds` have passed (then a replacement is launched);
   * with `disabled` (resident apps) it always counts, so it is never replaced.
   */
  private isLive(i: Instance): boolean {
    if (i.killing || i.parked || TERMINAL.has(i.state)) return false
    if (!GONE_FOR_NOW.has(i.state)) return true
    const strategy = (this.apps.get(i.appId) ?? this.deleting.get(i.appId))?.unreachableStrategy
    if (strategy === undefined) return false
    if (strategy === "disabled") return true
    return this.now() - (i.unreachableSince ?? 0) < strategy.inactiveAfterSeconds * 1000
  }

  /** Apps with unreachable instances: their converge pass is never skipped (time alone changes what they need). */
  private readonly unreachableApps = new Set<string>()

  /** Forgets unreachable instances past `expungeAfterSeconds`: if their task comes back it is unknown, so it is killed. */
  private expunge(appId: string, ops: Array<StateStore.TxnOp>): void {
    const app = this.apps.get(appId)
    let any = false
    for (const i of this.instancesOf(appId)) {
      if (!GONE_FOR_NOW.has(i.state)) continue
      any = true
      const strategy = app?.unreachableStrategy
      if (strategy === undefined || strategy === "disabled") continue
      const limit = Math.max(strategy.expungeAfterSeconds, strategy.inactiveAfterSeconds) * 1000
      if (this.now() - (i.unreachableSince ?? 0) >= limit) {
        this.forget(i)
        ops.push(Txn.delete(KEYS.instance(i.instanceId)))
        this.options.events.publish("instance_changed_event", { instanceId: i.instanceId, condition: "Gone", runSpecId: appId, agentId: i.agentId, host: i.host, runSpecVersion: i.version })
      }
    }
    if (!any) this.unreachableApps.delete(appId)
  }

  delayOf(appId: string): Backoff.Backoff {
    return this.backoff.get(appId) ?? Backoff.initial
  }

  // ---------------------------------------------------------------------------------------------
  // Writes from the API

  /**
   * Replaces an app's definition (null: destroys it) and starts the deployment that gets there.
   * Fails with 409 when another deployment holds the app, unless `force`.
   */
  deploy(appId: string, next: App | null, action: ActionName, force: boolean, rollbackOf?: string): Effect.Effect<Deployment, ApiError> {
    return Effect.suspend(() => {
      const before = this.apps.get(appId) ?? null
      const running = this.deploymentOf(appId)
      if (running !== undefined && !force) {
        return Effect.fail(new ApiError(409, {
          message: "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
          deployments: [{ id: running.id }]
        }))
      }
      const ops: Array<StateStore.TxnOp> = []
      if (running !== undefined) {
        this.deployments.delete(running.id)
        ops.push(Txn.delete(KEYS.deployment(running.id)))
        this.options.events.publish("deployment_failed", { id: running.id, plan: this.planJson(running) })
      }
      const version = next?.version ?? this.iso()
      const deployment: Deployment & { deleting?: App } = {
        id: this.newId(),
        version,
        affectedApps: [appId],
        steps: action === "StartApplication"
          ? [{ actions: [{ action: "StartApplication", app: appId }] }, { actions: [{ action: "ScaleApplication", app: appId }] }]
          : [{ actions: [{ action, app: appId }] }],
        currentStep: 1,
        previous: { [appId]: before },
        createdAt: this.iso(),
        ...(rollbackOf === undefined ? {} : { rollbackOf }),
        ...(action === "RestartApplication" && rollbackOf === undefined && before !== null && next?.upgradeStrategy.canaryInstances !== undefined
          ? { canary: { instances: Math.min(next.upgradeStrategy.canaryInstances, next.instances), promoted: false } }
          : {})
      }
      if (next === null) {
        if (before !== null) {
          this.deleting.set(appId, before)
          deployment.deleting = before
        }
        this.apps.delete(appId)
        ops.push(Txn.delete(KEYS.app(appId)))
      } else {
        if (before === null || before.versionInfo.lastConfigChangeAt !== next.versionInfo.lastConfigChangeAt) this.backoff.delete(appId)
        this.deleting.delete(appId)
        this.apps.set(appId, next)
        const list = this.versions.get(appId) ?? []
        if (!list.includes(next.version)) list.push(next.version)
        this.versions.set(appId, list)
        ops.push(Txn.put(KEYS.app(appId), json(next)), Txn.put(KEYS.version(appId, next.version), json(next)))
      }
      this.deployments.set(deployment.id, deployment)
      this.touch(appId)
      ops.push(Txn.put(KEYS.deployment(deployment.id), json(deployment)))
      return this.write(ops).pipe(
        Effect.tap(() => Effect.sync(() => {
          if (next !== null) this.options.events.publish("api_post_event", { clientIp: null, uri: `/v2/apps${appId}`, appDefinition: next })
          this.options.events.publish("group_change_success", { groupId: "/", version })
          this.options.events.publish("deployment_info", { plan: this.planJson(deployment), currentStep: this.stepJson(deployment) })
        })),
        Effect.as(deployment as Deployment)
      )
    })
  }

  /** DELETE /v2/deployments/{id}: rollback (a new deployment back to the previous definitions), or with force just forget it. */
  cancelDeployment(id: string, force: boolean): Effect.Effect<Deployment | undefined, ApiError> {
    return Effect.suspend(() => {
      const d = this.deployments.get(id)
      if (d === undefined) return Effect.fail(new ApiError(404, { message: `DeploymentPlan ${id} does not exist` }))
      if (force) {
        this.deployments.delete(id)
        for (const a of d.affectedApps) this.touch(a)
        return this.write([Txn.delete(KEYS.deployment(id))]).pipe(
          Effect.tap(() => Effect.sync(() => this.options.events.publish("deployment_failed", { id, plan: this.planJson(d) }))),
          Effect.as(undefined)
        )
      }
      const appId = d.affectedApps[0]!
      const previous = d.previous[appId] ?? null
      const restored = previous === null ? null : { ...previous, version: this.iso() }
      return this.deploy(appId, restored, previous === null ? "StopApplication" : "RestartApplication", true, d.id)
    })
  }

  /** Promotes a canary deployment: the rest of the instances are replaced under the upgrade strategy. */
  promote(id: string): Effect.Effect<Deployment, ApiError> {
    return Effect.suspend(() => {
      const d = this.deployments.get(id)
      if (d === undefined) return Effect.fail(new ApiError(404, { message: `DeploymentPlan ${id} does not exist` }))
      if (d.canary === undefined) return Effect.fail(new ApiError(409, { message: `Deployment ${id} has no canary to promote` }))
      d.canary.promoted = true
      for (const a of d.affectedApps) this.touch(a)
      return this.write([Txn.put(KEYS.deployment(d.id), json(d))]).pipe(Effect.as(d))
    })
  }

  /** Kills tasks by id. `scale` lowers the app's instances instead of replacing them; `wipe` forgets resident slots. */
  killTasks(taskIds: ReadonlyArray<string>, options: { scale: boolean; wipe: boolean; force: boolean }): Effect.Effect<{ killed: Array<Instance>; deployment: Deployment | undefined }, ApiError> {
    return Effect.gen({ self: this }, function*() {
      const killed: Array<Instance> = []
      for (const taskId of taskIds) {
        const iid = this.byTask.get(taskId)
        const i = iid === undefined ? undefined : this.instances.get(iid)
        if (i !== undefined) killed.push(i)
      }
      let deployment: Deployment | undefined
      if (options.scale) {
        const perApp = new Map<string, number>()
        for (const i of killed) if (this.isLive(i) || i.parked) perApp.set(i.appId, (perApp.get(i.appId) ?? 0) + 1)
        for (const [appId, n] of perApp) {
          const app = this.apps.get(appId)
          if (app === undefined) continue
          const now = this.iso()
          const next: App = { ...app, instances: Math.max(0, app.instances - n), version: now, versionInfo: { ...app.versionInfo, lastScalingAt: now } }
          deployment = yield* this.deploy(appId, next, "ScaleApplication", options.force)
        }
      }
      const ops: Array<StateStore.TxnOp> = []
      for (const i of killed) {
        if (options.wipe && i.resident !== undefined) {
          // The slot is forgotten once its task ends; its reservation and volumes then come back
          // in an offer labelled with an instance nobody knows, and `releaseOperations` destroys
          // the volumes and unreserves the rest (as Marathon does with wipe=true).
          i.resident = undefined
        }
        this.touch(i.appId)
        if (!TERMINAL.has(i.state)) {
          i.killing = true
          ops.push(this.putInstance(i))
        } else if (options.wipe) {
          this.forget(i)
          ops.push(Txn.delete(KEYS.instance(i.instanceId)))
        }
      }
      yield* this.write(ops)
      for (const i of killed) if (i.killing) yield* this.killTask(i)
      return { killed, deployment }
    })
  }

  resetDelay(appId: string): boolean {
    return this.backoff.delete(appId)
  }

  private forget(i: Instance): void {
    this.touch(i.appId)
    this.instances.delete(i.instanceId)
    this.byTask.delete(i.taskId)
    const set = this.byApp.get(i.appId)
    set?.delete(i.instanceId)
    if (set !== undefined && set.size === 0) this.byApp.delete(i.appId)
  }

  /** Bumped with every per-app revision: equal values mean nothing any app view shows has changed. */
  revision = 0

  touch(appId: string): void {
    this.revision++
    this.revisions.set(appId, (this.revisions.get(appId) ?? 0) + 1)
  }

  private remember(i: Instance): void {
    this.touch(i.appId)
    this.instances.set(i.instanceId, i)
    this.byTask.set(i.taskId, i.instanceId)
    let set = this.byApp.get(i.appId)
    if (set === undefined) this.byApp.set(i.appId, (set = new Set()))
    set.add(i.instanceId)
  }

  private killTask(i: Instance): Effect.Effect<void> {
    const cluster = this.cluster
    if (cluster === undefined) return Effect.void
    return cluster.kill(i.taskId, { agentId: i.agentId }).pipe(Effect.ignore)
  }

  // ---------------------------------------------------------------------------------------------
  // The converge loop

  /** One pass over every app: kills what must go, records what must launch, finishes deployments. */
  converge: Effect.Effect<void> = Effect.gen({ self: this }, function*() {
    const ops: Array<StateStore.TxnOp> = []
    const kills: Array<Instance> = []
    const finished: Array<Deployment> = []
    let totalWanted = 0
    const byApp = { get: (appId: string): Array<Instance> => this.instancesOf(appId) }
    for (const [appId, app] of this.deleting) {
      const mine = byApp.get(appId) ?? []
      for (const i of mine) {
        if (!i.killing && !TERMINAL.has(i.state) && !i.parked) {
          i.killing = true
          kills.push(i)
          ops.push(this.putInstance(i))
        }
      }
      const left = mine.filter((i) => !TERMINAL.has(i.state) && !i.parked)
      if (left.length === 0) {
        for (const i of mine) {
          this.forget(i)
          ops.push(Txn.delete(KEYS.instance(i.instanceId)))
        }
        this.deleting.delete(appId)
        for (const v of this.versions.get(appId) ?? []) ops.push(Txn.delete(KEYS.version(appId, v)))
        this.versions.delete(appId)
        this.backoff.delete(appId)
        this.stats.delete(appId)
        this.options.events.publish("app_terminated_event", { appId })
        const d = this.deploymentOf(appId)
        if (d !== undefined) finished.push(d)
      }
      void app
    }
    for (const [appId, app] of this.apps) {
      // A settled app (nothing changed since the last pass, nothing to launch, no deployment) is skipped.
      if (this.unreachableApps.has(appId)) {
        this.expunge(appId, ops)
        this.settled.delete(appId)
      }
      const rev = this.revisions.get(appId) ?? 0
      if (this.settled.get(appId) === rev && (this.wanted.get(appId) ?? 0) === 0 && this.deploymentOf(appId) === undefined) continue
      this.settled.set(appId, rev)
      const mine = byApp.get(appId) ?? []
      const live = mine.filter((i) => this.isLive(i))
      const deployment = this.deploymentOf(appId)
      const canary = deployment?.canary !== undefined && !deployment.canary.promoted ? deployment.canary.instances : undefined
      const stepOf = canary === undefined ? Rolling.step : (t: Rolling.Target, l: ReadonlyArray<Rolling.InstanceView>) => Rolling.canaryStep(t, l, canary)
      const step = stepOf(this.target(app), live.map((i) => ({
        instanceId: i.instanceId,
        version: i.version,
        healthy: this.isHealthy(app, i),
        running: i.state === "TASK_RUNNING",
        stagedAt: Date.parse(i.stagedAt)
      })))
      for (const iid of step.kill) {
        const i = this.instances.get(iid)!
        this.touch(appId)
        i.killing = true
        kills.push(i)
        ops.push(this.putInstance(i))
      }
      // Dependencies: nothing of this app starts before every app it depends on is fully up.
      const blocked = step.launch > 0 && app.dependencies.some((dep) => !this.isUp(dep))
      const launch = blocked ? 0 : step.launch
      if (blocked) this.settled.delete(appId)
      this.wanted.set(appId, launch)
      totalWanted += launch
      const d = this.deploymentOf(appId)
      if (d !== undefined && step.done && step.kill.length === 0 && mine.every((i) => !i.killing || TERMINAL.has(i.state))) finished.push(d)
      else if (d !== undefined && d.currentStep < d.steps.length && live.length > 0) {
        // A start's first step (StartApplication) is done once the app has tasks.
        d.currentStep = d.steps.length
        this.touch(appId)
        this.options.events.publish("deployment_step_success", { plan: this.planJson(d), currentStep: this.stepJson(d) })
        ops.push(Txn.put(KEYS.deployment(d.id), json(d)))
      }
    }
    // Progress deadlines: a deployment past its app's deadline is rolled back (after this pass).
    const overdue: Array<Deployment> = []
    const now = this.now()
    for (const d of this.deployments.values()) {
      if (finished.includes(d)) continue
      const app = this.apps.get(d.affectedApps[0]!)
      const seconds = app?.upgradeStrategy.progressDeadlineSeconds
      // Not for rollbacks (no ping-pong) nor for a new app (there is nothing to go back to).
      if (seconds !== undefined && d.rollbackOf === undefined && (d.previous[app!.id] ?? null) !== null && now - Date.parse(d.createdAt) > seconds * 1000) overdue.push(d)
    }
    for (const d of finished) {
      this.deployments.delete(d.id)
      for (const a of d.affectedApps) this.touch(a)
      ops.push(Txn.delete(KEYS.deployment(d.id)))
    }
    yield* this.write(ops).pipe(Effect.ignore)
    for (const d of finished) {
      this.options.events.publish("deployment_step_success", { plan: this.planJson(d), currentStep: this.stepJson(d) })
      this.options.events.publish("deployment_success", { id: d.id, plan: this.planJson(d) })
    }
    for (const d of overdue) {
      this.options.events.publish("deployment_failed", { id: d.id, plan: this.planJson(d), reason: "progress deadline exceeded: rolling back" })
      yield* this.cancelDeployment(d.id, false).pipe(Effect.ignore)
    }
    yield* Effect.forEach(kills, (i) => this.killTask(i), { concurrency: 16, discard: true })
    // More launches wanted than at the last pass: clear the decline filters so offers come now.
    if (totalWanted > this.wantedBefore && this.cluster !== undefined) yield* this.cluster.revive().pipe(Effect.ignore)
    this.wantedBefore = totalWanted
  })

  target(app: App): Rolling.Target {
    return {
      version: app.versionInfo.lastConfigChangeAt,
      instances: app.instances,
      minimumHealthCapacity: app.upgradeStrategy.minimumHealthCapacity,
      maximumOverCapacity: app.upgradeStrategy.maximumOverCapacity,
      killSelection: app.killSelection,
      resident: AppDefinition.isResident(app)
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Offers: the launch queue

  /** Matches the wanted launches (apps not in backoff) against the offers, accepts and declines. */
  handleOffers(offered: ReadonlyArray<v1.Offer>): Effect.Effect<void> {
    let offers = offered
    return Effect.gen({ self: this }, function*() {
      const cluster = this.cluster
      if (cluster === undefined || offers.length === 0) return
      // Reservations and volumes of instances this scheduler no longer keeps (wiped, or of a
      // destroyed app) are released first: DESTROY the volumes, then UNRESERVE everything.
      const known = new Set<string>()
      for (const i of this.instances.values()) if (i.resident !== undefined) known.add(i.resident.reservationLabel)
      const usable: Array<v1.Offer> = []
      for (const offer of offers) {
        const release = releaseOperations(offer, known, this.options.principal)
        if (release === undefined) {
          usable.push(offer)
          continue
        }
        yield* Effect.logInfo(`marathon-like: releasing reservations of forgotten instances on agent ${offer.agentId} (${offer.hostname})`)
        yield* cluster.accept([offer.offerId], release, { refuseSeconds: 0 }).pipe(
          Effect.catch((e) => Effect.logWarning(`marathon-like: releasing reservations on agent ${offer.agentId} failed: ${String((e as { message?: unknown }).message ?? e)}`))
        )
      }
      offers = usable
      if (offers.length === 0) return
      const now = this.now()
      const requests: Array<{ request: Placement.Request; app: App; slot: Instance | undefined; instanceId: string; taskId: string }> = []
      for (const [appId, n] of this.wanted) {
        if (n <= 0) continue
        const app = this.apps.get(appId)
        if (app === undefined) continue
        if (this.delayOf(appId).until > now) continue
        const resident = AppDefinition.isResident(app)
        const slots = resident ? this.instancesOf(appId).filter((i) => i.resident !== undefined) : []
        const parked = slots.filter((i) => i.parked)
        // A resident app reuses its slots (reservation + volumes); a slot whose task is still
        // being killed is not free yet, and new slots are only made up to `instances`.
        const launches = resident ? Math.min(n, parked.length + Math.max(0, app.instances - slots.length)) : n
        for (let k = 0; k < launches; k++) {
          const slot = parked[k]
          const instanceId = slot?.instanceId ?? `${sanitize(appId)}.instance-${this.newId()}`
          const attempt = slot === undefined ? 1 : Number(slot.taskId.split("._app.")[1] ?? "1") + 1
          const taskId = `${instanceId}._app.${attempt}`
          requests.push({ request: this.request(app, instanceId, taskId, slot), app, slot, instanceId, taskId })
        }
      }
      if (requests.length === 0) {
        // Launches that wait for a slot or a backoff come back soon; with nothing to do, later.
        const waiting = [...this.wanted.values()].some((n) => n > 0)
        yield* cluster.decline(offers.map((o) => o.offerId), { refuseSeconds: waiting ? 1 : 5 }).pipe(Effect.ignore)
        return
      }
      // Launches are matched in slices of LAUNCH_SLICE, each against the offers no earlier slice
      // used, and each slice's launches are written and sent before the next is matched, with
      // the event loop let through in between: one evaluation and one Accept of 1,000 tasks
      // would hold API requests up for hundreds of milliseconds.
      const hostnames = new Map(offers.map((o) => [o.offerId, o]))
      const stamp = this.iso()
      let remaining: ReadonlyArray<v1.Offer> = offers
      for (let from = 0; from < requests.length && remaining.length > 0; from += LAUNCH_SLICE) {
        if (from > 0) yield* letIoThrough
        const chunk = requests.slice(from, from + LAUNCH_SLICE)
        const running: Array<Placement.Running> = []
        for (const i of this.instances.values()) {
          if (this.isLive(i)) running.push({ id: i.instanceId, group: i.appId, agentId: i.agentId, attributes: i.attributes })
        }
        const evaluation = Placement.evaluate(chunk.map((r) => r.request), remaining, {
          running,
          principal: this.options.principal,
          operationId: (id, kind) => `${id}.${kind}`
        })
        const ops: Array<StateStore.TxnOp> = []
        const placedApps = new Map<string, number>()
        evaluation.outcomes.forEach((outcome, idx) => {
          const r = chunk[idx]!
          const stats = this.statsOf(r.app.id)
          if (outcome._tag === "Placed") {
            placedApps.set(r.app.id, (placedApps.get(r.app.id) ?? 0) + 1)
            stats.lastUsedOfferAt = stamp
            const offer = hostnames.get(outcome.offerId)!
            const resources = r.request.requirement.resources
            const count = (resources.ports?.length ?? 0) + Object.keys(resources.fixedPorts ?? {}).length
            const ports = Array.from({ length: count }, (_, k) => outcome.ports[`port${k}`]!)
            this.finishTask(outcome, r.app, ports, offer)
            const attributes: Record<string, string> = { hostname: offer.hostname }
            for (const a of offer.attributes) if (a.value?.$case === "text") attributes[a.name] = a.value.value
            const instance: Instance = {
              instanceId: r.instanceId,
              taskId: r.taskId,
              appId: r.app.id,
              version: r.app.versionInfo.lastConfigChangeAt,
              agentId: offer.agentId,
              host: offer.hostname,
              attributes,
              ports,
              state: "TASK_STAGING",
              healthy: undefined,
              ready: undefined,
              stagedAt: stamp,
              startedAt: undefined,
              killing: false,
              resident: AppDefinition.isResident(r.app)
                ? { reservationLabel: r.instanceId, volumes: AppDefinition.persistentVolumes(r.app).map((v) => volumeId(r.instanceId, v.containerPath)) }
                : undefined,
              parked: false,
              message: ""
            }
            if (r.slot !== undefined) this.byTask.delete(r.slot.taskId)
            this.remember(instance)
            ops.push(this.putInstance(instance))
          }
          // Why-not bookkeeping, per offer looked at for this app (Marathon's processedOffersSummary).
          const rejections = outcome.rejections
          stats.processedOffersCount += rejections.length + (outcome._tag === "Placed" ? 1 : 0)
          if (outcome._tag === "Unplaced" && rejections.length > 0) {
            stats.unusedOffersCount += rejections.length
            stats.lastUnusedOfferAt = stamp
            stats.rejectSummaryLastOffers = new Map()
            stats.lastUnusedOffers = []
            for (const rej of rejections) {
              const reason = marathonReason(rej.stage, rej.reason)
              const s = stats.rejectSummaryLastOffers.get(reason) ?? { declined: 0, processed: 0 }
              s.declined++
              stats.rejectSummaryLastOffers.set(reason, s)
              stats.lastUnusedOffers.push({ offerId: rej.offerId, agentId: rej.agentId, hostname: rej.hostname, reason: [reason], details: [rej.reason], timestamp: stamp })
            }
            for (const s of stats.rejectSummaryLastOffers.values()) s.processed = rejections.length
          }
        })
        // Until the next converge pass recomputes it, the queue shows what is still unplaced.
        for (const [appId, placed] of placedApps) this.wanted.set(appId, Math.max(0, (this.wanted.get(appId) ?? 0) - placed))
        yield* this.write(ops).pipe(Effect.ignore)
        yield* Effect.forEach(evaluation.accepts, (a) =>
          cluster.accept([a.offerId], a.operations, { refuseSeconds: 1 }).pipe(
            Effect.catch(() => this.dropLaunches(a.operations))
          ), { concurrency: "unbounded", discard: true })
        const unused = new Set(evaluation.unused)
        remaining = remaining.filter((o) => unused.has(o.offerId))
      }
      const stillWanted = [...this.wanted.values()].some((n) => n > 0)
      if (remaining.length > 0) {
        yield* cluster.decline(remaining.map((o) => o.offerId), { refuseSeconds: stillWanted ? 1 : 5 }).pipe(Effect.ignore)
      }
    })
  }

  private statsOf(appId: string): OfferStats {
    let s = this.stats.get(appId)
    if (s === undefined) {
      s = { processedOffersCount: 0, unusedOffersCount: 0, lastUnusedOfferAt: undefined, lastUsedOfferAt: undefined, rejectSummaryLastOffers: new Map(), lastUnusedOffers: [] }
      this.stats.set(appId, s)
    }
    return s
  }

  /** The accept failed: the launched tasks never start, so they are dropped (and relaunched by the next pass). */
  private dropLaunches(operations: ReadonlyArray<v1.Operation>): Effect.Effect<void> {
    return Effect.gen({ self: this }, function*() {
      for (const op of operations) {
        if (op.kind?.$case !== "launch") continue
        for (const t of op.kind.value.taskInfos) {
          yield* this.handleStatus(v1.TaskStatus.create({ taskId: t.taskId, state: v1.TaskState.DROPPED, message: "the accept call failed" }))
        }
      }
    })
  }

  /** The Placement request for one launch: resources, named ports, constraints, reservation and volumes for resident apps. */
  private request(app: App, instanceId: string, taskId: string, slot: Instance | undefined): Placement.Request {
    const resident = AppDefinition.isResident(app)
    // Ports are named port0, port1, … in definition order. A definition's own number is a fixed
    // host port with `requirePorts` (and a Docker mapping's non-zero hostPort always is); the
    // others are chosen from the offer.
    const dockerPorts = app.container?.docker?.portMappings ?? app.container?.portMappings ?? []
    const wanted: ReadonlyArray<number> = app.portDefinitions.length > 0
      ? app.portDefinitions.map((p) => (app.requirePorts ? p.port : 0))
      : dockerPorts.filter((m) => m.hostPort !== undefined).map((m) => m.hostPort ?? 0)
    const named: Array<string> = []
    const fixedPorts: Record<string, number> = {}
    wanted.forEach((port, i) => {
      if (port > 0) fixedPorts[`port${i}`] = port
      else named.push(`port${i}`)
    })
    const requirement: Requirement.Requirement = {
      id: instanceId,
      group: app.id,
      resources: {
        cpus: app.cpus, mem: app.mem, disk: app.disk, gpus: app.gpus, ports: named,
        ...(Object.keys(fixedPorts).length > 0 ? { fixedPorts } : {})
      },
      constraints: app.constraints.map((c) => (c.length === 3 ? { field: c[0]!, operator: c[1] as Requirement.Operator, value: c[2]! } : { field: c[0]!, operator: c[1] as Requirement.Operator })),
      ...(resident
        ? {
          role: app.role === "*" ? this.options.role : app.role,
          reservation: { labels: { [INSTANCE_LABEL]: instanceId }, existing: slot !== undefined },
          volumes: AppDefinition.persistentVolumes(app).map((v) =>
            slot !== undefined
              ? { persistenceId: volumeId(instanceId, v.containerPath), containerPath: v.containerPath, existing: true, mode: v.mode ?? "RW" }
              : { persistenceId: volumeId(instanceId, v.containerPath), containerPath: v.containerPath, size: v.persistent.size, mode: v.mode ?? "RW" })
        }
        : {})
    }
    return { requirement, task: this.taskTemplate(app, taskId) }
  }

  private taskTemplate(app: App, taskId: string): Partial<v1.TaskInfo> {
    const env: Array<v1.EnvironmentVariable> = []
    for (const [k, v] of Object.entries(app.env)) if (typeof v === "string") env.push({ name: k, value: v })
    env.push({ name: "MARATHON_APP_ID", value: app.id }, { name: "MARATHON_APP_VERSION", value: app.version }, { name: "MESOS_TASK_ID", value: taskId })
    for (const [k, v] of Object.entries(app.labels)) if (/^[A-Za-z0-9_]+$/.test(k)) env.push({ name: `MARATHON_APP_LABEL_${k.toUpperCase()}`, value: v })
    const uris = app.fetch.map((f) => ({ value: f.uri, executable: f.executable, extract: f.extract, cache: f.cache, outputFile: f.destPath ?? "", checksum: "" }))
    const command: v1.CommandInfo = app.cmd !== null
      ? { shell: true, value: app.cmd, arguments: [], environment: env, uris, user: app.user ?? "" }
      : app.args !== null && app.args.length > 0
      ? { shell: false, value: app.args[0]!, arguments: [...app.args], environment: env, uris, user: app.user ?? "" }
      : { shell: false, value: "", arguments: [], environment: env, uris, user: app.user ?? "" }
    const docker = app.container?.docker
    return {
      name: app.id.slice(1).split("/").reverse().join("."),
      taskId,
      command,
      ...(docker === undefined ? {} : {
        container: v1.ContainerInfo.create({
          type: v1.ContainerInfo_Type.DOCKER,
          docker: {
            image: docker.image,
            network: docker.network === "BRIDGE" ? v1.ContainerInfo_DockerInfo_Network.BRIDGE
              : docker.network === "NONE" ? v1.ContainerInfo_DockerInfo_Network.NONE
              : docker.network === "USER" ? v1.ContainerInfo_DockerInfo_Network.USER
              : v1.ContainerInfo_DockerInfo_Network.HOST,
            portMappings: [],
            forcePullImage: docker.forcePullImage ?? false,
            networkName: ""
          }
        })
      }),
      labels: { labels: Object.entries(app.labels).map(([key, value]) => ({ key, value })) },
      ...(app.taskKillGracePeriodSeconds === null ? {} : { killPolicy: { gracePeriodSeconds: app.taskKillGracePeriodSeconds } })
    }
  }

  /** Adds what needs the assigned host ports: PORT0…, PORTS, HOST, port mappings and the health/readiness checks. */
  private finishTask(placed: Placement.Placed, app: App, ports: ReadonlyArray<number>, offer: v1.Offer): void {
    for (const op of placed.operations) {
      if (op.kind?.$case !== "launch") continue
      const infos = op.kind.value.taskInfos
      const task = infos[0]!
      const env = [...(task.command?.environment ?? [])]
      env.push({ name: "HOST", value: offer.hostname }, { name: "PORTS", value: ports.join(",") })
      ports.forEach((p, i) => {
        env.push({ name: `PORT${i}`, value: String(p) })
        const name = app.portDefinitions[i]?.name
        if (name !== undefined) env.push({ name: `PORT_${name.toUpperCase().replace(/-/g, "_")}`, value: String(p) })
      })
      if (ports.length > 0) env.push({ name: "PORT", value: String(ports[0]) })
      const dockerMappings = app.container?.docker?.portMappings ?? app.container?.portMappings ?? []
      const container = task.container === undefined ? undefined : {
        ...task.container,
        docker: task.container.docker === undefined ? undefined : {
          ...task.container.docker,
          portMappings: dockerMappings.map((m, i) => ({ hostPort: ports[i] ?? m.hostPort ?? 0, containerPort: m.containerPort ?? 0, protocol: m.protocol ?? "tcp" }))
        }
      }
      const hc = app.healthChecks[0]
      const rc = app.readinessChecks[0]
      infos[0] = {
        ...task,
        command: task.command === undefined ? undefined : { ...task.command, environment: env },
        container,
        healthCheck: hc === undefined ? undefined : healthCheckInfo(hc, ports, env),
        check: rc === undefined ? undefined : {
          type: v1.HealthCheck_Type.HTTP,
          delaySeconds: 0.001,
          intervalSeconds: rc.intervalSeconds,
          timeoutSeconds: rc.timeoutSeconds,
          consecutiveFailures: 0,
          gracePeriodSeconds: 0,
          command: undefined,
          http: { scheme: rc.protocol === "HTTPS" ? "https" : "http", port: ports[app.portDefinitions.findIndex((p) => p.name === rc.portName)] ?? 0, path: rc.path, statuses: [...rc.httpStatusCodesForReady] },
          tcp: undefined
        }
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Status updates

  /** Applies status updates in one store write; the caller acknowledges them after this completes. */
  handleStatus(status: v1.TaskStatus): Effect.Effect<void> {
    return this.handleStatuses([status])
  }

  handleStatuses(statuses: ReadonlyArray<v1.TaskStatus>): Effect.Effect<void> {
    return Effect.gen({ self: this }, function*() {
      const ops: Array<StateStore.TxnOp> = []
      const unknown: Array<v1.TaskStatus> = []
      for (let k = 0; k < statuses.length; k++) {
        // A big batch (1,000 tasks starting) is applied in slices with the event loop let through
        // between them, so API requests are not held up behind the whole batch.
        if (k > 0 && k % STATUS_SLICE === 0) yield* letIoThrough
        this.applyStatus(statuses[k]!, ops, unknown)
      }
      yield* this.write(ops).pipe(Effect.ignore)
      const cluster = this.cluster
      if (cluster !== undefined) {
        yield* Effect.forEach(unknown, (status) => cluster.kill(status.taskId, status.agentId === "" ? {} : { agentId: status.agentId }).pipe(Effect.ignore), { discard: true })
      }
    })
  }

  private applyStatus(status: v1.TaskStatus, ops: Array<StateStore.TxnOp>, unknown: Array<v1.TaskStatus>): void {
    {
      const state = STATE_NAMES[status.state] ?? "TASK_UNKNOWN"
      const iid = this.byTask.get(status.taskId)
      const i = iid === undefined ? undefined : this.instances.get(iid)
      if (i === undefined) {
        // A task this scheduler does not know (a leftover of an app deleted while we were away): kill it.
        if (!TaskStates.isTerminal(status.state) && this.cluster !== undefined) {
          this.options.events.publish("unknown_instance_terminated_event", { instanceId: status.taskId, runSpecId: null, condition: state })
          unknown.push(status)
        }
        return
      }
      const app = this.apps.get(i.appId) ?? this.deleting.get(i.appId)
      const wasHealthy = i.healthy
      const previous = i.state
      i.state = state
      if (status.agentId !== "") i.agentId = status.agentId
      if (status.healthy !== undefined) i.healthy = status.healthy
      if (GONE_FOR_NOW.has(state)) {
        if (i.unreachableSince === undefined) i.unreachableSince = Number(status.unreachableTimeMs) > 0 ? Number(status.unreachableTimeMs) : this.now()
        this.unreachableApps.add(i.appId)
      } else i.unreachableSince = undefined
      if (status.ready !== undefined) i.ready = status.ready
      if (state === "TASK_RUNNING" && i.startedAt === undefined) i.startedAt = new Date(Number(status.timestampMs) || this.now()).toISOString()
      if (previous !== state) {
        this.options.events.publish("status_update_event", {
          slaveId: i.agentId, taskId: i.taskId, taskStatus: state, message: status.message, appId: i.appId, host: i.host,
          ipAddresses: [], ports: i.ports, version: i.version
        })
        this.options.events.publish("instance_changed_event", { instanceId: i.instanceId, condition: state, runSpecId: i.appId, agentId: i.agentId, host: i.host, runSpecVersion: i.version })
      }
      if (status.healthy !== undefined && wasHealthy !== status.healthy) {
        this.options.events.publish("instance_health_changed_event", { instanceId: i.instanceId, runSpecId: i.appId, runSpecVersion: i.version, healthy: status.healthy })
        this.options.events.publish("health_status_changed_event", { appId: i.appId, taskId: i.taskId, instanceId: i.instanceId, version: i.version, alive: status.healthy })
        if (!status.healthy) this.options.events.publish("failed_health_check_event", { appId: i.appId, taskId: i.taskId, instanceId: i.instanceId, healthCheck: app?.healthChecks[0] ?? null })
      }
      this.touch(i.appId)
      if (TERMINAL.has(state)) {
        const unhealthyKill = status.reason === v1.TaskStatus_Reason.TASK_HEALTH_CHECK_STATUS_UPDATED || (wasHealthy === false && !i.killing)
        if (!i.killing && app !== undefined && (FAILURES.has(state) || unhealthyKill)) {
          this.backoff.set(i.appId, Backoff.fail(app, this.delayOf(i.appId), this.now()))
        }
        if (unhealthyKill && !i.killing) {
          this.options.events.publish("unhealthy_instance_kill_event", { appId: i.appId, taskId: i.taskId, instanceId: i.instanceId, version: i.version, reason: status.message, host: i.host, slaveId: i.agentId })
        }
        if (!i.killing || FAILURES.has(state)) {
          this.lastTaskFailure.set(i.appId, {
            appId: i.appId, host: i.host, message: status.message, state, taskId: i.taskId, timestamp: this.iso(), version: i.version, slaveId: i.agentId
          })
        }
        i.message = status.message
        if (i.resident !== undefined && !this.deleting.has(i.appId)) {
          // Resident: the slot keeps its reservation and volumes and is relaunched in place.
          i.parked = true
          i.killing = false
          i.healthy = undefined
          i.ready = undefined
          ops.push(this.putInstance(i))
        } else {
          this.forget(i)
          ops.push(Txn.delete(KEYS.instance(i.instanceId)))
        }
      } else {
        ops.push(this.putInstance(i))
      }
    }
  }

  /** After SUBSCRIBED: ask the master for the state of every task we know, and of any we do not. */
  reconcileAll: Effect.Effect<void> = Effect.gen({ self: this }, function*() {
    const cluster = this.cluster
    if (cluster === undefined) return
    const known = [...this.instances.values()].filter((i) => !i.parked).map((i) => ({ taskId: i.taskId, agentId: i.agentId }))
    if (known.length > 0) yield* cluster.reconcile(known).pipe(Effect.ignore)
    yield* cluster.reconcile([]).pipe(Effect.ignore)
  })

  // ---------------------------------------------------------------------------------------------
  // JSON views

  planJson(d: Deployment): Record<string, unknown> {
    return {
      id: d.id,
      version: d.version,
      affectedApps: d.affectedApps,
      affectedPods: [],
      steps: d.steps,
      currentStep: d.currentStep,
      totalSteps: d.steps.length,
      original: { id: "/", apps: Object.values(d.previous).filter((a) => a !== null) },
      target: { id: "/", apps: d.affectedApps.map((id) => this.apps.get(id)).filter((a) => a !== undefined) }
    }
  }

  stepJson(d: Deployment): Record<string, unknown> {
    return d.steps[Math.min(d.currentStep, d.steps.length) - 1] ?? { actions: [] }
  }
}

/** The reservation label every resident instance's resources carry (value: the instance id). */
export const INSTANCE_LABEL = "marathon.instance"

/**
 * The operations that give back what an offer holds for resident instances not in `known`
 * (only reservations made by `principal`: another framework sharing the role keeps its own):
 * DESTROY of each such persistent volume, then UNRESERVE of those resources (a volume's disk
 * as the plain reserved disk it becomes once destroyed). Undefined when there is nothing to release.
 */
export const releaseOperations = (offer: v1.Offer, known: ReadonlySet<string>, principal: string): Array<v1.Operation> | undefined => {
  const destroy: Array<v1.Resource> = []
  const unreserve: Array<v1.Resource> = []
  for (const r of offer.resources) {
    const last = r.reservations.at(-1)
    if (last === undefined || last.type !== v1.ReservationInfo_Type.DYNAMIC || last.principal !== principal) continue
    const label = last.labels?.labels.find((l) => l.key === INSTANCE_LABEL)
    if (label === undefined || known.has(label.value)) continue
    if (r.disk?.persistence !== undefined && r.disk.persistence.id !== "") {
      destroy.push(r)
      const { disk, ...rest } = r
      unreserve.push(disk?.source === undefined ? rest : { ...rest, disk: { source: disk.source } })
    } else unreserve.push(r)
  }
  if (unreserve.length === 0) return undefined
  const operations: Array<v1.Operation> = []
  if (destroy.length > 0) operations.push({ operationId: "", kind: { $case: "destroy", value: { volumes: destroy } } })
  operations.push({ operationId: "", kind: { $case: "unreserve", value: { resources: unreserve } } })
  return operations
}

const volumeId = (instanceId: string, containerPath: string) => `${instanceId}.${containerPath}`.slice(0, 128)

/** Marathon's decline reason names, from Berth's placement stages. */
const marathonReason = (stage: Placement.Stage, reason: string): string => {
  switch (stage) {
    case "role":
      return "UnfulfilledRole"
    case "reservation":
      return "NoCorrespondingReservationFound"
    case "ports":
      return "InsufficientPorts"
    case "volumes":
      return "InsufficientDisk"
    case "constraints":
      return "UnfulfilledConstraint"
    case "resources":
      return /cpus/.test(reason) ? "InsufficientCpus" : /mem/.test(reason) ? "InsufficientMemory" : /gpus/.test(reason) ? "InsufficientGpus" : "InsufficientDisk"
  }
}

const healthCheckInfo = (hc: AppDefinition.HealthCheckDef, ports: ReadonlyArray<number>, env: ReadonlyArray<v1.EnvironmentVariable>): v1.HealthCheck => {
  const port = hc.port ?? ports[hc.portIndex ?? 0] ?? 0
  // The agent reads 0 as "its default": tiny positive values stand for Marathon's zeros, and
  // maxConsecutiveFailures 0 (Marathon: never kill) becomes a limit that is never reached.
  const base = {
    delaySeconds: hc.delaySeconds > 0 ? hc.delaySeconds : 0.001,
    intervalSeconds: hc.intervalSeconds,
    timeoutSeconds: hc.timeoutSeconds,
    consecutiveFailures: hc.maxConsecutiveFailures > 0 ? hc.maxConsecutiveFailures : 2 ** 31,
    gracePeriodSeconds: hc.gracePeriodSeconds > 0 ? hc.gracePeriodSeconds : 0.001,
    command: undefined,
    http: undefined,
    tcp: undefined
  }
  switch (hc.protocol) {
    case "COMMAND":
      return { ...base, type: v1.HealthCheck_Type.COMMAND, command: { shell: true, value: hc.command!.value, arguments: [], environment: [...env], uris: [], user: "" } }
    case "TCP":
    case "MESOS_TCP":
      return { ...base, type: v1.HealthCheck_Type.TCP, tcp: { port } }
    default:
      return { ...base, type: v1.HealthCheck_Type.HTTP, http: { scheme: hc.protocol.endsWith("HTTPS") ? "https" : "http", port, path: hc.path, statuses: [] } }
  }
}
