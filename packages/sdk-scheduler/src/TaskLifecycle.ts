/**
 * The task lifecycle: every task the framework launched, as a typed, partition-aware state
 * machine kept in storage.
 *
 * - **Write-ahead**: a task's launch intent is written to the `TaskStore` before the Accept that
 *   launches it, so a scheduler that dies mid-launch finds the task on restart and reconciles it
 *   instead of launching it twice.
 * - **Persist, then acknowledge**: a status update is stored before it is acknowledged; an
 *   acknowledged update is never resent, so one lost here would be lost for good.
 * - **Idempotent**: duplicates, late arrivals and reordered updates are ignored by the rules of
 *   {@link apply}; a terminal state never changes; UNREACHABLE is not dead (the task may come
 *   back, and is not relaunched while it might still run).
 * - **Reconciliation**: explicit after every SUBSCRIBED (the stored non-terminal tasks, again
 *   with backoff until each answered; offers are held meanwhile) and implicit periodically.
 *   Tasks the master reports that storage does not know are killed or adopted (`unknownTasks`).
 * - **Timers and policies**: a staging timeout (kill, then relaunch), kill with a grace period,
 *   and an exponential launch backoff with a maximum between failed attempts.
 *
 * `launch` is declarative and idempotent: it makes sure a requirement has a live task,
 * launching one through the `OfferManager` only when none is live. After a restart call it
 * again with the wanted requirements; live tasks found in storage are kept.
 *
 * @example
 * ```ts
 * import { v1 } from "@berth/proto"
 * import { Effect, Stream } from "effect"
 * import { Requirement, TaskLifecycle } from "@berth/sdk-scheduler"
 *
 * const program = Effect.gen(function*() {
 *   const tasks = yield* TaskLifecycle.TaskLifecycle
 *   yield* tasks.launch([{
 *     request: {
 *       requirement: Requirement.decodeSync({ id: "web-0", resources: { cpus: 0.1, mem: 32 } }),
 *       task: { command: v1.CommandInfo.create({ value: "sleep 1000", shell: true }) }
 *     },
 *     goal: "RUNNING"
 *   }])
 *   yield* tasks.changes.pipe(
 *     Stream.filter((c) => c.record.requirementId === "web-0" && c.record.state === "RUNNING"),
 *     Stream.take(1),
 *     Stream.runDrain
 *   )
 * })
 * ```
 *
 * @since 0.1.0
 */
import type { v1 } from "@berth/proto"
import type { StateStore, StoreError } from "@berth/storage"
import type { Duration, Effect, Option, Stream } from "effect"
import { Context, Layer, Schema } from "effect"
import type * as OfferManager from "./OfferManager.ts"
import type * as Placement from "./Placement.ts"
import type { SchedulerError } from "./SchedulerError.ts"
import type { SchedulerEvents } from "./SchedulerEvents.ts"
import type { SchedulerSession } from "./SchedulerSession.ts"
import * as internal from "./internal/tasks/lifecycle.ts"
import * as Machine from "./internal/tasks/machine.ts"

/**
 * A task's state. `LAUNCHING`: the launch intent is stored and the Accept sent (or about to
 * be), no status yet. The others are the cluster's task states.
 *
 * @since 0.1.0
 * @category models
 */
export const State = Schema.Literals(Machine.STATES as unknown as readonly [Machine.State, ...Array<Machine.State>])
/** @since 0.1.0 @category models */
export type State = Machine.State

/**
 * What should happen when a task ends: `RUNNING` relaunches it whenever it ends (a server),
 * `FINISH` until it finishes successfully (a job), `ONCE` never.
 *
 * @since 0.1.0
 * @category models
 */
export const Goal = Schema.Literals(["RUNNING", "FINISH", "ONCE"])
/** @since 0.1.0 @category models */
export type Goal = typeof Goal.Type

/**
 * One task (one launch attempt of a requirement) as the lifecycle keeps it. Task ids are
 * `<requirement id>.<attempt>`; the tasks of a group (LAUNCH_GROUP) are
 * `<requirement id>.<attempt>.<task>` (the task's `taskId`, else its `name`, in the request),
 * all of one attempt, run by the executor `<requirement id>.<attempt>` unless the request names one.
 *
 * @since 0.1.0
 * @category models
 */
export const TaskRecord = Schema.Struct({
  taskId: Schema.String,
  requirementId: Schema.String,
  /** The requirement's group (counted by constraints), when known. */
  group: Schema.optional(Schema.String),
  /** 1 for the first launch of the requirement, then 2, 3, ... */
  attempt: Schema.Number,
  goal: Goal,
  state: State,
  /** The highest rank reached (0 launching, 1 staging, 2 starting, 3 running, 4 killing, 10 terminal). */
  progress: Schema.Number,
  agentId: Schema.String,
  offerId: Schema.String,
  /** When the launch intent was written (ms since the epoch). */
  launchedAtMs: Schema.Number,
  /** The timestamp of the latest status taken. */
  updatedAtMs: Schema.Number,
  healthy: Schema.optional(Schema.Boolean),
  ready: Schema.optional(Schema.Boolean),
  message: Schema.String,
  /** The status reason's name (`RECONCILIATION`, `AGENT_DISCONNECTED`, ...). */
  reason: Schema.optional(Schema.String),
  exitCode: Schema.optional(Schema.Number),
  /** Set once the scheduler asked for the task to be killed (no relaunch follows when `stop` did). */
  killRequested: Schema.optional(Schema.Boolean),
  /** Failed attempts in a row before this one (for the launch backoff). */
  failures: Schema.Number
})
/** @since 0.1.0 @category models */
export type TaskRecord = typeof TaskRecord.Type

/**
 * A change of one task's record: a status taken, a launch, a kill request.
 *
 * @since 0.1.0
 * @category models
 */
export interface Change {
  /** The state before, or none for a new launch. */
  readonly previous: State | undefined
  readonly record: TaskRecord
}

/**
 * A requirement to keep a task for.
 *
 * @since 0.1.0
 * @category models
 */
export interface LaunchSpec {
  /** The requirement and the task (or task group) to launch. Task ids are set by the lifecycle. */
  readonly request: Placement.Request
  /** Default `RUNNING`. */
  readonly goal?: Goal | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface KillOptions {
  /** Overrides the task's kill policy: how long it gets between SIGTERM and SIGKILL. */
  readonly gracePeriod?: Duration.Input | undefined
}

/**
 * What to do with a task the master reports that storage does not know (a task of an older
 * run whose record was lost, or one launched by another replica).
 *
 * @since 0.1.0
 * @category models
 */
export type UnknownTaskPolicy = "kill" | "adopt"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long a task may stay LAUNCHING or STAGING before it is killed (and relaunched). Default 5 minutes. */
  readonly stagingTimeout?: Duration.Input | undefined
  /** The launch backoff after a failure: initial delay (default 1 s), doubled per failure in a row up to `max` (default 5 minutes). */
  readonly backoff?: { readonly initial?: Duration.Input | undefined; readonly max?: Duration.Input | undefined; readonly factor?: number | undefined } | undefined
  /** Explicit reconciliation retries: from `initial` (default 4 s), doubled up to `max` (default 30 s), until every task answered. */
  readonly reconcile?: { readonly initial?: Duration.Input | undefined; readonly max?: Duration.Input | undefined } | undefined
  /** The period of implicit reconciliation. Default 15 minutes. */
  readonly implicitReconcileInterval?: Duration.Input | undefined
  /** Tasks the master reports that storage does not know. Default `kill`. */
  readonly unknownTasks?: UnknownTaskPolicy | undefined
  /** The default kill grace period (when neither the kill nor the task sets one). */
  readonly killGracePeriod?: Duration.Input | undefined
}

/**
 * The lifecycle's own errors: storage failed, or the master refused a call.
 *
 * @since 0.1.0
 * @category errors
 */
export type LifecycleError = StoreError.StoreError | SchedulerError

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Makes sure each requirement has a live task: when its latest task is live (or being
   * launched), nothing happens; otherwise a new attempt is submitted to the offer manager (after
   * the backoff its failures earned). Requirements launched here are relaunched by their goal.
   * Calling it again with a changed spec replaces the spec used for the *next* attempt (a
   * rolling update: `launch` the new spec, then `kill` the old task); work already submitted to
   * the offer manager keeps the request it was submitted with.
   */
  readonly launch: (specs: ReadonlyArray<LaunchSpec>) => Effect.Effect<void, LifecycleError>
  /**
   * Stops requirements for good: withdraws their pending work and kills their live tasks; no
   * relaunch follows.
   */
  readonly stop: (requirementIds: ReadonlyArray<string>, options?: KillOptions) => Effect.Effect<void, LifecycleError>
  /**
   * Kills one task (a restart, when its requirement's goal relaunches it). Killing a terminal or
   * unknown task does nothing.
   */
  readonly kill: (taskId: string, options?: KillOptions) => Effect.Effect<void, LifecycleError>
  /** Every change from now on (subscribe before acting to miss nothing). */
  readonly changes: Stream.Stream<Change>
  readonly get: (taskId: string) => Effect.Effect<Option.Option<TaskRecord>>
  /** Every known task, sorted by task id. */
  readonly tasks: Effect.Effect<ReadonlyArray<TaskRecord>>
  /** The attempts of one requirement, oldest first. */
  readonly byRequirement: (requirementId: string) => Effect.Effect<ReadonlyArray<TaskRecord>>
  /** Completes once the current explicit reconciliation (if any) is done. */
  readonly reconciled: Effect.Effect<void>
  /** Runs an explicit reconciliation of the stored non-terminal tasks now, and waits for it. */
  readonly reconcile: Effect.Effect<void, LifecycleError>
  /** Removes a requirement's terminal attempts from storage (after an uninstall, say). */
  readonly forget: (requirementId: string) => Effect.Effect<void, StoreError.StoreError>
}

/**
 * @since 0.1.0
 * @category services
 */
export class TaskLifecycle extends Context.Service<TaskLifecycle, Service>()("@berth/sdk-scheduler/TaskLifecycle") {}

/**
 * The lifecycle over the current session, offer manager and state store (namespace the store
 * per framework). It loads the stored tasks, registers its event handler and the live tasks as
 * the offer manager's running set; start the `SchedulerEvents` hub afterwards.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<TaskLifecycle, StoreError.StoreError, SchedulerSession | SchedulerEvents | OfferManager.OfferManager | StateStore.StateStore> =>
  Layer.effect(TaskLifecycle, internal.make(options))

/**
 * The transition rules as a pure function (see the module docs): `Applied` with the next
 * record, or `Ignored` with why (`terminal`, `stale`, `regression`, `duplicate`).
 *
 * @example
 * ```ts
 * const t = TaskLifecycle.apply(record, { state: "STAGING", timestampMs: 1 })
 * if (t._tag === "Applied") record = t.next
 * ```
 *
 * @since 0.1.0
 * @category state machine
 */
export const apply: <T extends Machine.Tracked>(record: T, update: Machine.Update) => Machine.Transition<T> = Machine.apply

/**
 * @since 0.1.0
 * @category state machine
 */
export type Update = Machine.Update

/**
 * @since 0.1.0
 * @category state machine
 */
export type Transition<T extends Machine.Tracked> = Machine.Transition<T>

/**
 * A terminal state never changes (FINISHED, FAILED, KILLED, ERROR, DROPPED, GONE, GONE_BY_OPERATOR).
 *
 * @since 0.1.0
 * @category state machine
 */
export const isTerminal: (state: State) => boolean = Machine.isTerminal

/**
 * UNREACHABLE or UNKNOWN: the task may still run and come back.
 *
 * @since 0.1.0
 * @category state machine
 */
export const isPartitioned: (state: State) => boolean = Machine.isPartitioned

/**
 * A cluster status update as an {@link Update} (none for an unrecognised state).
 *
 * @since 0.1.0
 * @category state machine
 */
export const toUpdate: (status: v1.TaskStatus) => Update | undefined = Machine.toUpdate

/**
 * The launch delay after `failures` failed attempts in a row: `initialMs × factor^(failures-1)`,
 * at most `maxMs`, 0 without failures.
 *
 * @since 0.1.0
 * @category state machine
 */
export const backoffMs: (failures: number, initialMs: number, maxMs: number, factor?: number) => number = Machine.backoffMs

/**
 * The task id of a requirement's attempt: `<requirementId>.<attempt>`.
 *
 * @since 0.1.0
 * @category models
 */
export const taskIdOf = (requirementId: string, attempt: number): string => `${requirementId}.${attempt}`
