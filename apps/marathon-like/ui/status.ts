// App and task status, derived the way Marathon's own UI did it: from the app's counts, its
// deployments and its launch-queue entry.
import type { App, QueueItem, Task } from "./api.ts"

export type AppStatus = "Running" | "Deploying" | "Waiting" | "Delayed" | "Suspended"

export const statusColor: Record<AppStatus, string> = {
  Running: "teal",
  Deploying: "blue",
  Waiting: "yellow",
  Delayed: "orange",
  Suspended: "gray"
}

export const statusHelp: Record<AppStatus, string> = {
  Running: "All requested instances are running",
  Deploying: "A deployment is in progress",
  Waiting: "Instances are waiting for matching offers",
  Delayed: "Launches are delayed by backoff after failures",
  Suspended: "Scaled to zero instances"
}

/**
 * Order matters: backoff wins (nothing will launch until the delay ends), then an in-flight
 * deployment (Waiting while its instances sit in the queue unplaced), then zero instances.
 */
export const appStatus = (app: App, queued: QueueItem | undefined): AppStatus => {
  const instances = app.instances ?? 0
  const running = app.tasksRunning ?? 0
  const delayed = queued?.delay !== undefined && queued.delay.overdue === false && (queued.delay.timeLeftSeconds ?? 0) > 0
  if (delayed) return "Delayed"
  const deploying = (app.deployments?.length ?? 0) > 0
  const waiting = queued !== undefined && queued.delay?.overdue !== false && (queued.count ?? 0) > 0
  if (deploying) return waiting && hasDeclines(queued) ? "Waiting" : "Deploying"
  if (instances === 0 && running === 0) return "Suspended"
  if (waiting || running < instances) return "Waiting"
  return "Running"
}

// A queued app is only "waiting" once offers were actually declined for it; right after a
// deployment starts it is normally just being launched.
const hasDeclines = (q: QueueItem | undefined): boolean => (q?.processedOffersSummary?.unusedOffersCount ?? 0) > 0

export type TaskHealth = "Healthy" | "Unhealthy" | "Staged" | "Unknown"

export const taskHealth = (task: Task): TaskHealth => {
  const state = task.state ?? ""
  if (state === "TASK_STAGING" || state === "TASK_STARTING" || (task.startedAt == null && state === "")) return "Staged"
  const results = task.healthCheckResults ?? []
  if (results.length === 0) return "Unknown"
  return results.every((r) => r.alive === true) ? "Healthy" : "Unhealthy"
}

export const healthColor: Record<TaskHealth, string> = {
  Healthy: "teal",
  Unhealthy: "red",
  Staged: "blue",
  Unknown: "gray"
}

/** Task state without the `TASK_` prefix, title-cased: `TASK_RUNNING` → `Running`. */
export const taskStateLabel = (state: string | undefined): string => {
  if (state === undefined || state === "") return "Unknown"
  const s = state.replace(/^TASK_/, "").toLowerCase()
  return s.charAt(0).toUpperCase() + s.slice(1)
}

export const taskStateColor = (state: string | undefined): string => {
  switch (state) {
    case "TASK_RUNNING":
      return "teal"
    case "TASK_STAGING":
    case "TASK_STARTING":
      return "blue"
    case "TASK_KILLING":
      return "orange"
    case "TASK_FAILED":
    case "TASK_ERROR":
    case "TASK_LOST":
    case "TASK_GONE":
    case "TASK_DROPPED":
      return "red"
    case "TASK_UNREACHABLE":
      return "yellow"
    default:
      return "gray"
  }
}

/** "3 minutes ago" style relative times for timestamps. */
export const ago = (iso: string | null | undefined, now: number): string => {
  if (iso == null || iso === "") return "—"
  const t = Date.parse(iso)
  if (Number.isNaN(t)) return iso
  const s = Math.max(0, Math.round((now - t) / 1000))
  if (s < 5) return "just now"
  if (s < 60) return `${s}s ago`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m} min ago`
  const h = Math.floor(m / 60)
  if (h < 48) return `${h} h ago`
  return `${Math.floor(h / 24)} d ago`
}
