// The records the scheduler keeps, one store key each (no single blob: an app, an app version,
// an instance and a deployment are separate keys, so state grows by keys, not by value size).
import type { App } from "../AppDefinition.ts"

/** Marathon's task state names. */
export type TaskStateName =
  | "TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING" | "TASK_KILLING" | "TASK_FINISHED" | "TASK_FAILED"
  | "TASK_KILLED" | "TASK_ERROR" | "TASK_DROPPED" | "TASK_UNREACHABLE" | "TASK_GONE" | "TASK_GONE_BY_OPERATOR" | "TASK_UNKNOWN"

/**
 * One instance of an app: its current task. A resident instance outlives its tasks: it keeps
 * its reservation and volumes on one agent and is relaunched there in place.
 */
export interface Instance {
  readonly instanceId: string
  taskId: string
  readonly appId: string
  /** The app version (`versionInfo.lastConfigChangeAt`) the task runs. */
  version: string
  agentId: string
  host: string
  attributes: Record<string, string>
  ports: Array<number>
  state: TaskStateName
  healthy: boolean | undefined
  ready: boolean | undefined
  stagedAt: string
  startedAt: string | undefined
  /** The scheduler asked the master to kill it; it no longer counts toward the target. */
  killing: boolean
  /** Resident instances: the persistence ids of their volumes (reserved on `agentId`). */
  resident: { readonly reservationLabel: string; readonly volumes: ReadonlyArray<string> } | undefined
  /** Resident instances only: the task ended and the slot waits to be relaunched in place (or is parked by a scale-down). */
  parked: boolean
  /** Epoch millis the task became UNREACHABLE (or UNKNOWN); undefined while reachable. */
  unreachableSince?: number | undefined
  /** The last terminal status message, for lastTaskFailure. */
  message: string
}

export type ActionName = "StartApplication" | "StopApplication" | "ScaleApplication" | "RestartApplication"

/** A deployment: a plan of steps, each a set of actions run together. */
export interface Deployment {
  readonly id: string
  readonly version: string
  readonly affectedApps: ReadonlyArray<string>
  readonly steps: ReadonlyArray<{ readonly actions: ReadonlyArray<{ readonly action: ActionName; readonly app: string }> }>
  currentStep: number
  /** What to restore on rollback: the app definitions before the change (null: the app did not exist). */
  readonly previous: Readonly<Record<string, App | null>>
  readonly createdAt: string
  /** Set on a rollback deployment: the id of the deployment it reverts (rollbacks have no progress deadline). */
  readonly rollbackOf?: string | undefined
  /** A canary deployment: only `instances` new ones run until it is promoted. */
  canary?: { readonly instances: number; promoted: boolean } | undefined
}

/** What `/v2/queue` shows per app: the offers looked at for it and why they did not fit. */
export interface OfferStats {
  processedOffersCount: number
  unusedOffersCount: number
  lastUnusedOfferAt: string | undefined
  lastUsedOfferAt: string | undefined
  rejectSummaryLastOffers: Map<string, { declined: number; processed: number }>
  lastUnusedOffers: Array<{ offerId: string; agentId: string; hostname: string; reason: Array<string>; details: Array<string>; timestamp: string }>
}
