/**
 * The pure task state machine: which status updates a task record takes, and which it ignores
 * (duplicates, late arrivals, regressions, anything after a terminal state).
 */
import { v1 } from "@berth/proto"

export type State =
  | "LAUNCHING"
  | "STAGING"
  | "STARTING"
  | "RUNNING"
  | "KILLING"
  | "UNREACHABLE"
  | "UNKNOWN"
  | "FINISHED"
  | "FAILED"
  | "KILLED"
  | "ERROR"
  | "DROPPED"
  | "GONE"
  | "GONE_BY_OPERATOR"

export const STATES: ReadonlyArray<State> = [
  "LAUNCHING",
  "STAGING",
  "STARTING",
  "RUNNING",
  "KILLING",
  "UNREACHABLE",
  "UNKNOWN",
  "FINISHED",
  "FAILED",
  "KILLED",
  "ERROR",
  "DROPPED",
  "GONE",
  "GONE_BY_OPERATOR"
]

const TERMINAL: ReadonlySet<State> = new Set<State>(["FINISHED", "FAILED", "KILLED", "ERROR", "DROPPED", "GONE", "GONE_BY_OPERATOR"])

export const isTerminal = (state: State): boolean => TERMINAL.has(state)

/** UNREACHABLE and UNKNOWN: the task may still run; it may come back. */
export const isPartitioned = (state: State): boolean => state === "UNREACHABLE" || state === "UNKNOWN"

/** How far a launch got; partition states have no rank (they keep the rank reached). */
export const rank = (state: State): number => {
  switch (state) {
    case "LAUNCHING":
      return 0
    case "STAGING":
      return 1
    case "STARTING":
      return 2
    case "RUNNING":
      return 3
    case "KILLING":
      return 4
    case "UNREACHABLE":
    case "UNKNOWN":
      return -1
    default:
      return 10
  }
}

const fromProto: Record<number, State | undefined> = {
  [v1.TaskState.STAGING]: "STAGING",
  [v1.TaskState.STARTING]: "STARTING",
  [v1.TaskState.RUNNING]: "RUNNING",
  [v1.TaskState.KILLING]: "KILLING",
  [v1.TaskState.FINISHED]: "FINISHED",
  [v1.TaskState.FAILED]: "FAILED",
  [v1.TaskState.KILLED]: "KILLED",
  [v1.TaskState.ERROR]: "ERROR",
  [v1.TaskState.DROPPED]: "DROPPED",
  [v1.TaskState.UNREACHABLE]: "UNREACHABLE",
  [v1.TaskState.GONE]: "GONE",
  [v1.TaskState.GONE_BY_OPERATOR]: "GONE_BY_OPERATOR",
  [v1.TaskState.UNKNOWN]: "UNKNOWN"
}

export const stateOf = (state: v1.TaskState): State | undefined => fromProto[state]

/** The parts of a status update the machine reads. */
export interface Update {
  readonly state: State
  /** When the update was generated (ms since the epoch); 0 when unknown. */
  readonly timestampMs: number
  readonly agentId?: string | undefined
  readonly healthy?: boolean | undefined
  readonly ready?: boolean | undefined
  readonly message?: string | undefined
  readonly reason?: string | undefined
  readonly exitCode?: number | undefined
}

/** The record the machine keeps per task (the lifecycle adds the launch details). */
export interface Tracked {
  readonly state: State
  /** The highest rank reached: a partitioned task may only come back at or above it. */
  readonly progress: number
  readonly updatedAtMs: number
  readonly agentId: string
  readonly healthy?: boolean | undefined
  readonly ready?: boolean | undefined
  readonly message: string
  readonly reason?: string | undefined
  readonly exitCode?: number | undefined
}

export type IgnoredReason = "terminal" | "stale" | "regression" | "duplicate"

export type Transition<T extends Tracked> =
  | { readonly _tag: "Applied"; readonly previous: State; readonly next: T }
  | { readonly _tag: "Ignored"; readonly reason: IgnoredReason }

/**
 * Applies an update. Rules, in order: a terminal record takes nothing more; a terminal update is
 * always taken (it is final whenever it arrives); an update older than the last one taken is
 * stale; a partition state (UNREACHABLE, UNKNOWN) is taken without losing the rank reached; any
 * other state below the rank reached is a regression (a late STAGING after RUNNING); the same
 * state with the same health, readiness and message is a duplicate.
 */
export const apply = <T extends Tracked>(record: T, update: Update): Transition<T> => {
  if (isTerminal(record.state)) return { _tag: "Ignored", reason: "terminal" }
  const next = (): Transition<T> => ({
    _tag: "Applied",
    previous: record.state,
    next: {
      ...record,
      state: update.state,
      progress: isPartitioned(update.state) ? record.progress : Math.max(record.progress, rank(update.state)),
      updatedAtMs: Math.max(record.updatedAtMs, update.timestampMs),
      agentId: update.agentId !== undefined && update.agentId !== "" ? update.agentId : record.agentId,
      healthy: update.healthy ?? (update.state === record.state ? record.healthy : undefined),
      ready: update.ready ?? (update.state === record.state ? record.ready : undefined),
      message: update.message ?? "",
      reason: update.reason,
      exitCode: update.exitCode ?? record.exitCode
    }
  })
  if (isTerminal(update.state)) return next()
  if (update.timestampMs > 0 && update.timestampMs < record.updatedAtMs) return { _tag: "Ignored", reason: "stale" }
  if (!isPartitioned(update.state) && rank(update.state) < record.progress) return { _tag: "Ignored", reason: "regression" }
  if (
    update.state === record.state &&
    (update.healthy === undefined || update.healthy === record.healthy) &&
    (update.ready === undefined || update.ready === record.ready) &&
    (update.message ?? "") === record.message
  ) return { _tag: "Ignored", reason: "duplicate" }
  return next()
}

/** The exponential launch backoff after `failures` failures in a row (0: none). */
export const backoffMs = (failures: number, initialMs: number, maxMs: number, factor = 2): number =>
  failures <= 0 ? 0 : Math.min(maxMs, initialMs * Math.pow(factor, failures - 1))

export const toUpdate = (status: v1.TaskStatus): Update | undefined => {
  const state = stateOf(status.state)
  if (state === undefined) return undefined
  const reasonName = reasonNames[status.reason]
  return {
    state,
    timestampMs: status.timestampMs,
    agentId: status.agentId,
    healthy: status.healthy,
    ready: status.ready,
    message: status.message,
    reason: reasonName === undefined || status.reason === 0 ? undefined : reasonName,
    exitCode: status.exitCode
  }
}

const reasonNames: Record<number, string | undefined> = Object.fromEntries(
  Object.entries(v1.TaskStatus_Reason).map(([name, value]) => [value, name])
)
