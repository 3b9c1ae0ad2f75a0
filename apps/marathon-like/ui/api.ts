// A small client for the Marathon REST API v2 served at the same origin. Types follow Marathon's
// documented JSON (only the fields the UI reads; everything else is kept as `unknown`).

export type Constraint = [string, string] | [string, string, string]

export interface HealthCheckResult {
  alive?: boolean
  consecutiveFailures?: number
  firstSuccess?: string | null
  lastFailure?: string | null
  lastSuccess?: string | null
  lastFailureCause?: string | null
  instanceId?: string
  taskId?: string
}

export interface Task {
  id: string
  appId?: string
  host?: string
  agentId?: string
  slaveId?: string
  ports?: number[]
  state?: string
  startedAt?: string | null
  stagedAt?: string | null
  version?: string
  healthCheckResults?: HealthCheckResult[]
}

export interface LastTaskFailure {
  appId?: string
  host?: string
  message?: string
  state?: string
  taskId?: string
  timestamp?: string
  version?: string
}

export interface App {
  id: string
  cmd?: string | null
  args?: string[] | null
  cpus?: number
  mem?: number
  disk?: number
  instances?: number
  constraints?: Constraint[]
  labels?: Record<string, string>
  env?: Record<string, unknown>
  healthChecks?: unknown[]
  container?: { type?: string; docker?: { image?: string } } | null
  version?: string
  versionInfo?: { lastScalingAt?: string; lastConfigChangeAt?: string }
  tasksRunning?: number
  tasksStaged?: number
  tasksHealthy?: number
  tasksUnhealthy?: number
  deployments?: { id: string }[]
  tasks?: Task[]
  lastTaskFailure?: LastTaskFailure | null
  [key: string]: unknown
}

export interface DeploymentAction {
  action: string
  app?: string
  pod?: string
  readinessCheckResults?: unknown[]
}

export interface Deployment {
  id: string
  version?: string
  affectedApps?: string[]
  affectedPods?: string[]
  steps?: { actions: DeploymentAction[] }[]
  currentActions?: DeploymentAction[]
  currentStep?: number
  totalSteps?: number
}

export interface DeclinedOfferStep {
  reason: string
  declined: number
  processed: number
}

export interface QueueItem {
  app?: App
  count?: number
  since?: string
  delay?: { timeLeftSeconds?: number; overdue?: boolean }
  processedOffersSummary?: {
    processedOffersCount?: number
    unusedOffersCount?: number
    lastUnusedOfferAt?: string | null
    lastUsedOfferAt?: string | null
    rejectSummaryLastOffers?: DeclinedOfferStep[]
    rejectSummaryLaunchAttempt?: DeclinedOfferStep[]
  }
  lastUnusedOffers?: { offer?: { id?: string; hostname?: string; agentId?: string }; reason?: string[]; details?: string[]; timestamp?: string }[]
}

export interface Info {
  name?: string
  version?: string
  leader?: string | null
  frameworkId?: string | null
  [key: string]: unknown
}

export interface ErrorDetail {
  path: string
  errors: string[]
}

/** A non-2xx answer, with Marathon's `message` and `details` when the body carried them. */
export class ApiError extends Error {
  readonly status: number
  readonly details: ErrorDetail[]
  constructor(status: number, message: string, details: ErrorDetail[]) {
    super(message)
    this.status = status
    this.details = details
  }
}

export interface DeploymentResult {
  deploymentId?: string
  version?: string
}

const request = async <A>(method: string, path: string, body?: unknown): Promise<A> => {
  const init: RequestInit = { method, headers: { Accept: "application/json" } }
  if (body !== undefined) {
    init.body = JSON.stringify(body)
    init.headers = { Accept: "application/json", "Content-Type": "application/json" }
  }
  let response: Response
  try {
    response = await fetch(path, init)
  } catch (e) {
    throw new ApiError(0, `The server is unreachable (${e instanceof Error ? e.message : String(e)})`, [])
  }
  const text = await response.text()
  let json: unknown = undefined
  if (text !== "") {
    try {
      json = JSON.parse(text)
    } catch {
      json = undefined
    }
  }
  if (!response.ok) {
    const record = (json ?? {}) as { message?: unknown; details?: unknown }
    const message = typeof record.message === "string" ? record.message : `${response.status} ${response.statusText}`
    const details = Array.isArray(record.details)
      ? record.details.flatMap((d): ErrorDetail[] => {
          const r = d as { path?: unknown; errors?: unknown }
          if (typeof r.path !== "string") return []
          return [{ path: r.path, errors: Array.isArray(r.errors) ? r.errors.map(String) : [] }]
        })
      : []
    throw new ApiError(response.status, message, details)
  }
  return json as A
}

const appPath = (id: string): string => `/v2/apps/${id.replace(/^\/+/, "").split("/").map(encodeURIComponent).join("/")}`
const withForce = (path: string, force: boolean): string => (force ? `${path}?force=true` : path)

export const api = {
  listApps: () =>
    request<{ apps: App[] }>(
      "GET",
      "/v2/apps?embed=apps.tasks&embed=apps.counts&embed=apps.deployments&embed=apps.lastTaskFailure"
    ).then((r) => r.apps ?? []),
  getApp: (id: string) =>
    request<{ app: App }>(
      "GET",
      `${appPath(id)}?embed=app.tasks&embed=app.counts&embed=app.deployments&embed=app.lastTaskFailure`
    ).then((r) => r.app),
  createApp: (definition: unknown) => request<App & { deployments?: { id: string }[] }>("POST", "/v2/apps", definition),
  replaceApp: (id: string, definition: unknown, force: boolean) =>
    request<DeploymentResult>("PUT", withForce(appPath(id), force), definition),
  scaleApp: (id: string, instances: number, force: boolean) =>
    request<DeploymentResult>("PATCH", withForce(appPath(id), force), { instances }),
  restartApp: (id: string, force: boolean) =>
    request<DeploymentResult>("POST", withForce(`${appPath(id)}/restart`, force), undefined),
  destroyApp: (id: string, force: boolean) => request<DeploymentResult>("DELETE", withForce(appPath(id), force), undefined),
  /** Kills one instance; Marathon replaces it unless `scale` lowers `instances` by one. */
  killTask: (appId: string, taskId: string, scale: boolean) =>
    request<unknown>("DELETE", `${appPath(appId)}/tasks/${encodeURIComponent(taskId)}${scale ? "?scale=true" : ""}`, undefined),
  listDeployments: () => request<Deployment[]>("GET", "/v2/deployments").then((r) => r ?? []),
  cancelDeployment: (id: string, force: boolean) =>
    request<DeploymentResult | undefined>("DELETE", withForce(`/v2/deployments/${encodeURIComponent(id)}`, force), undefined),
  queue: () => request<{ queue: QueueItem[] }>("GET", "/v2/queue?embed=lastUnusedOffers").then((r) => r.queue ?? []),
  info: () => request<Info>("GET", "/v2/info")
}

/** Normalises an app id to Marathon's absolute form (`web` → `/web`). */
export const absoluteId = (id: string): string => (id.startsWith("/") ? id : `/${id}`)
