// The REST API v2 on the leader's core: routing, Marathon's JSON shapes, status codes and headers.
// Streaming (/v2/events), static files and proxying live in server.ts; this module answers
// everything that is one request → one JSON response.
import { Effect, Result } from "effect"
import * as AppDefinition from "../AppDefinition.ts"
import { ApiError, type Core } from "./core.ts"
import type { Deployment, Instance } from "./model.ts"

export interface Request {
  readonly method: string
  readonly path: string
  readonly query: URLSearchParams
  /** The parsed JSON body (undefined when there was none). */
  readonly body: unknown
  /** The Accept header, for the text/plain form of /v2/tasks. */
  readonly accept?: string | undefined
}

export interface Response {
  readonly status: number
  readonly headers?: Record<string, string>
  readonly body: unknown
  /** The body already serialised (cached fragments); sent instead of `body`. */
  readonly raw?: string | Buffer
}

/**
 * GET /v2/apps answers, whole, per query (filters and embeds), valid while no app changed
 * (`core.revision`): clients and the UI poll the list, so a poll with nothing new costs one
 * socket write and no allocation of the app list. Bounded: at most `MAX_QUERIES` query forms.
 */
const lists = new WeakMap<Core, { revision: number; answers: Map<string, Buffer> }>()
const MAX_QUERIES = 64

/** A random tag per core (per leadership): ETags of one leader never match another's. */
const epochs = new WeakMap<Core, string>()
const epochOf = (core: Core): string => {
  let e = epochs.get(core)
  if (e === undefined) epochs.set(core, (e = Math.random().toString(36).slice(2, 10)))
  return e
}

/** The ETag of every view derived from the current revision (ETags are scoped to a URL by clients). */
export const etagOf = (core: Core): string => `"${epochOf(core)}-${core.revision}"`

/**
 * Serialised app JSON per core, per embed form and app, valid while the app's revision is
 * unchanged; the embed forms are the few Marathon defines, so the cache has a bounded number of maps.
 */
const fragments = new WeakMap<Core, Map<string, Map<string, { rev: number; app: AppDefinition.App; bytes: Buffer }>>>()

/** The embeds appJson understands, normalised (`app.tasks` = `apps.tasks`), as a cache key. */
const embedKey = (embed: ReadonlySet<string>): { key: string; set: ReadonlySet<string> } => {
  const known: Array<string> = []
  for (const name of ["tasks", "lastTaskFailure", "readiness", "taskStats"]) {
    if (embed.has(`apps.${name}`) || embed.has(`app.${name}`)) known.push(`apps.${name}`)
  }
  return { key: known.join(","), set: new Set(known) }
}

/** Kept as UTF-8 bytes: a list answer is then one copy of each fragment (no 1 MB string to encode). */
const appBytes = (core: Core, app: AppDefinition.App, embed: { key: string; set: ReadonlySet<string> }): Buffer => {
  let perEmbed = fragments.get(core)
  if (perEmbed === undefined) fragments.set(core, (perEmbed = new Map()))
  let cache = perEmbed.get(embed.key)
  if (cache === undefined) perEmbed.set(embed.key, (cache = new Map()))
  const rev = core.revisions.get(app.id) ?? 0
  const hit = cache.get(app.id)
  if (hit !== undefined && hit.rev === rev && hit.app === app) return hit.bytes
  const bytes = Buffer.from(JSON.stringify(appJson(core, app, embed.set)))
  cache.set(app.id, { rev, app, bytes })
  // Destroyed apps leave entries behind: drop them once they could outnumber the live ones.
  if (cache.size > core.apps.size * 2 + 64) for (const id of cache.keys()) if (!core.apps.has(id)) cache.delete(id)
  return bytes
}

const OPEN = Buffer.from(`{"apps":[`)
const COMMA = Buffer.from(",")
const CLOSE = Buffer.from("]}")

/** GET /v2/apps: the cached answer for this query form, or a new one built from cached fragments. */
const listApps = (core: Core, query: URLSearchParams, embed: ReadonlySet<string>): Response => {
  const cmd = query.get("cmd")
  const id = query.get("id")
  const label = query.get("label")
  const normal = embedKey(embed)
  const key = JSON.stringify([cmd, id, label, normal.key])
  let cached = lists.get(core)
  if (cached === undefined || cached.revision !== core.revision) lists.set(core, (cached = { revision: core.revision, answers: new Map() }))
  const headers = { ETag: etagOf(core) }
  const hit = cached.answers.get(key)
  if (hit !== undefined) return { status: 200, body: undefined, raw: hit, headers }
  let select: ((a: AppDefinition.App) => boolean) | undefined
  if (label !== null) {
    const selector = parseSelector(label)
    if (Result.isFailure(selector)) return { status: 400, body: { message: selector.failure } }
    select = (a) => selector.success(a.labels)
  }
  const lowerId = id?.toLowerCase()
  const parts: Array<Buffer> = [OPEN]
  for (const a of core.apps.values()) {
    if (cmd !== null && (a.cmd === null || !a.cmd.includes(cmd))) continue
    if (lowerId !== undefined && !a.id.toLowerCase().includes(lowerId)) continue
    if (select !== undefined && !select(a)) continue
    if (parts.length > 1) parts.push(COMMA)
    parts.push(appBytes(core, a, normal))
  }
  parts.push(CLOSE)
  const raw = Buffer.concat(parts)
  if (cached.answers.size >= MAX_QUERIES) cached.answers.clear()
  cached.answers.set(key, raw)
  return { status: 200, body: undefined, raw, headers }
}

const ok = (body: unknown, status = 200, headers?: Record<string, string>): Response => (headers === undefined ? { status, body } : { status, body, headers })
const notFound = (message: string): Response => ({ status: 404, body: { message } })
const flag = (q: URLSearchParams, name: string) => q.get(name) === "true"

const deployed = (d: Deployment, status = 200): Response =>
  ok({ deploymentId: d.id, version: d.version }, status, { "Marathon-Deployment-Id": d.id })

// -------------------------------------------------------------------------------------------------
// JSON views

export const taskJson = (core: Core, i: Instance): Record<string, unknown> => {
  const app = core.apps.get(i.appId)
  const hasChecks = app !== undefined && app.healthChecks.length > 0
  return {
    id: i.taskId,
    appId: i.appId,
    host: i.host,
    ports: i.ports,
    servicePorts: [],
    slaveId: i.agentId,
    agentId: i.agentId,
    state: i.state,
    stagedAt: i.stagedAt,
    startedAt: i.startedAt ?? null,
    version: i.version,
    ipAddresses: [],
    localVolumes: i.resident === undefined ? [] : i.resident.volumes.map((persistenceId) => ({ containerPath: persistenceId.split(".").at(-1), persistenceId })),
    healthCheckResults: hasChecks && i.healthy !== undefined
      ? [{ alive: i.healthy, consecutiveFailures: i.healthy ? 0 : 1, instanceId: i.instanceId, taskId: i.taskId, lastSuccess: null, lastFailure: null, firstSuccess: null }]
      : [],
    ...(i.ready === undefined ? {} : { ready: i.ready })
  }
}

/** The instances shown as tasks: those with a task that is not parked. */
const visible = (core: Core, appId: string) => core.instancesOf(appId).filter((i) => !i.parked)

export const counts = (core: Core, app: AppDefinition.App) => {
  let staged = 0, running = 0, healthy = 0, unhealthy = 0
  for (const i of visible(core, app.id)) {
    if (i.state === "TASK_STAGING" || i.state === "TASK_STARTING") staged++
    if (i.state === "TASK_RUNNING") running++
    if (app.healthChecks.length > 0 && i.state === "TASK_RUNNING") {
      if (i.healthy === true) healthy++
      else if (i.healthy === false) unhealthy++
    }
  }
  return { tasksStaged: staged, tasksRunning: running, tasksHealthy: healthy, tasksUnhealthy: unhealthy }
}

export const appJson = (core: Core, app: AppDefinition.App, embed: ReadonlySet<string>, single = false): Record<string, unknown> => {
  const d = core.deploymentOf(app.id)
  const out: Record<string, unknown> = { ...app, ...counts(core, app), deployments: d === undefined ? [] : [{ id: d.id }] }
  if (single || embed.has("apps.tasks") || embed.has("app.tasks")) out.tasks = visible(core, app.id).map((i) => taskJson(core, i))
  if (single || embed.has("apps.lastTaskFailure") || embed.has("app.lastTaskFailure")) {
    const f = core.lastTaskFailure.get(app.id)
    if (f !== undefined) out.lastTaskFailure = f
  }
  if (embed.has("apps.readiness") || embed.has("app.readiness")) out.readinessCheckResults = []
  if (embed.has("apps.taskStats") || embed.has("app.taskStats")) out.taskStats = {}
  return out
}

export const deploymentJson = (core: Core, d: Deployment): Record<string, unknown> => ({
  id: d.id,
  version: d.version,
  affectedApps: d.affectedApps,
  affectedPods: [],
  steps: d.steps,
  currentActions: (d.steps[d.currentStep - 1]?.actions ?? []).map((a) => ({ action: a.action, app: a.app, readinessCheckResults: [] })),
  currentStep: d.currentStep,
  totalSteps: d.steps.length,
  ...(d.canary === undefined ? {} : { canary: { instances: d.canary.instances, promoted: d.canary.promoted } })
})

// -------------------------------------------------------------------------------------------------
// Label selector: `a`, `!a`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, joined by commas.

type Term = (labels: Readonly<Record<string, string>>) => boolean

export const parseSelector = (text: string): Result.Result<Term, string> => {
  const parts: Array<string> = []
  let depth = 0, current = ""
  for (const ch of text) {
    if (ch === "(") depth++
    if (ch === ")") depth--
    if (ch === "," && depth === 0) {
      parts.push(current.trim())
      current = ""
    } else current += ch
  }
  if (current.trim() !== "") parts.push(current.trim())
  const terms: Array<Term> = []
  for (const p of parts) {
    let m: RegExpExecArray | null
    if ((m = /^([^=!\s()]+)\s*==\s*(.*)$/.exec(p)) !== null) {
      const [, k, v] = m
      terms.push((l) => l[k!] === v)
    } else if ((m = /^([^=!\s()]+)\s*!=\s*(.*)$/.exec(p)) !== null) {
      const [, k, v] = m
      terms.push((l) => l[k!] !== v)
    } else if ((m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(p)) !== null) {
      const [, k, op, list] = m
      const values = list!.split(",").map((s) => s.trim())
      terms.push(op === "in" ? (l) => l[k!] !== undefined && values.includes(l[k!]!) : (l) => l[k!] === undefined || !values.includes(l[k!]!))
    } else if ((m = /^!([^=!\s()]+)$/.exec(p)) !== null) {
      const k = m[1]!
      terms.push((l) => !(k in l))
    } else if (/^[^=!\s()]+$/.test(p)) {
      terms.push((l) => p in l)
    } else {
      return Result.fail(`Invalid label selector term: "${p}"`)
    }
  }
  return Result.succeed((labels) => terms.every((t) => t(labels)))
}

// -------------------------------------------------------------------------------------------------
// Groups

interface GroupNode {
  id: string
  apps: Array<Record<string, unknown>>
  groups: Array<GroupNode>
  dependencies: Array<string>
  version: string
}

export const groupTree = (core: Core, embed: ReadonlySet<string>): GroupNode => {
  const root: GroupNode = { id: "/", apps: [], groups: [], dependencies: [], version: "" }
  const nodes = new Map<string, GroupNode>([["/", root]])
  const nodeFor = (id: string): GroupNode => {
    const existing = nodes.get(id)
    if (existing !== undefined) return existing
    const parentId = id.slice(0, id.lastIndexOf("/")) || "/"
    const node: GroupNode = { id, apps: [], groups: [], dependencies: [], version: "" }
    nodes.set(id, node)
    nodeFor(parentId).groups.push(node)
    return node
  }
  const appEmbed = new Set([...embed].map((e) => e.replace(/^group\.apps\./, "apps.")))
  for (const app of [...core.apps.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    const parentId = app.id.slice(0, app.id.lastIndexOf("/")) || "/"
    const node = nodeFor(parentId)
    node.apps.push(appJson(core, app, appEmbed))
    if (app.version > node.version) node.version = app.version
  }
  const fill = (n: GroupNode): string => {
    for (const g of n.groups) {
      const v = fill(g)
      if (v > n.version) n.version = v
    }
    return n.version
  }
  fill(root)
  if (root.version === "") root.version = new Date(0).toISOString()
  return root
}

// -------------------------------------------------------------------------------------------------
// Routes

const appsPrefix = "/v2/apps"

export const handle = (core: Core, req: Request, now: () => number): Effect.Effect<Response> =>
  route(core, req, now).pipe(
    Effect.catch((e) => Effect.succeed(e instanceof ApiError ? { status: e.status, body: e.body } : { status: 500, body: { message: String(e) } }))
  )

const iso = (now: () => number) => new Date(now()).toISOString()

const route = (core: Core, req: Request, now: () => number): Effect.Effect<Response, ApiError> =>
  Effect.gen(function*() {
    const { method, path, query } = req
    const force = flag(query, "force")
    const embed = new Set(query.getAll("embed"))

    if (path === appsPrefix || path === appsPrefix + "/") {
      if (method === "GET") return listApps(core, query, embed)
      if (method === "POST") return yield* createApp(core, req.body, force, now, flag(query, "dryRun"))
      if (method === "PUT" || method === "PATCH") return yield* bulkUpdate(core, req.body, force, now, method === "PATCH" || query.get("partialUpdate") !== "false")
      return methodNotAllowed
    }

    if (path.startsWith(appsPrefix + "/")) {
      const rest = path.slice(appsPrefix.length)
      let m: RegExpExecArray | null
      if ((m = /^(.*)\/restart$/.exec(rest)) !== null && method === "POST") {
        const app = core.apps.get(AppDefinition.normalizeId(m[1]!))
        if (app === undefined) return notFound(`App '${AppDefinition.normalizeId(m[1]!)}' does not exist`)
        const version = iso(now)
        const next = { ...app, version, versionInfo: { ...app.versionInfo, lastConfigChangeAt: version } }
        return deployed(yield* core.deploy(app.id, next, "RestartApplication", force))
      }
      if ((m = /^(.*)\/tasks(?:\/([^/]+))?$/.exec(rest)) !== null && core.apps.has(AppDefinition.normalizeId(m[1]!))) {
        const app = core.apps.get(AppDefinition.normalizeId(m[1]!))!
        if (method === "GET") return ok({ tasks: visible(core, app.id).map((i) => taskJson(core, i)) })
        if (method === "DELETE") {
          const host = query.get("host")
          const one = m[2]
          const ids: Array<string> = one !== undefined
            ? [one]
            : core.instancesOf(app.id).filter((i) => host === null || i.host === host).map((i) => i.taskId)
          if (one !== undefined && !core.instancesOf(app.id).some((i) => i.taskId === one)) return notFound(`Task '${one}' does not exist`)
          const before = core.instancesOf(app.id).filter((i) => ids.includes(i.taskId)).map((i) => taskJson(core, i))
          const result = yield* core.killTasks(ids, { scale: flag(query, "scale"), wipe: flag(query, "wipe"), force })
          if (result.deployment !== undefined) return deployed(result.deployment)
          return one !== undefined ? ok({ task: before[0] }) : ok({ tasks: before })
        }
        return methodNotAllowed
      }
      if ((m = /^(.*)\/versions(?:\/([^/]+))?$/.exec(rest)) !== null && core.apps.has(AppDefinition.normalizeId(m[1]!)) && method === "GET") {
        const id = AppDefinition.normalizeId(m[1]!)
        if (m[2] === undefined) return ok({ versions: [...(core.versions.get(id) ?? [])].sort().reverse() })
        const v = yield* core.readVersion(id, decodeURIComponent(m[2])).pipe(Effect.orElseSucceed(() => undefined))
        return v === undefined ? notFound(`Version '${m[2]}' of app '${id}' does not exist`) : ok(v)
      }
      const id = AppDefinition.normalizeId(rest)
      const app = core.apps.get(id)
      if (method === "GET") {
        if (app === undefined) {
          // A group id: Marathon answers GET /v2/apps/<group>/* with the apps below it.
          if (id.endsWith("/*")) {
            const prefix = id.slice(0, -2) + "/"
            return ok({ apps: [...core.apps.values()].filter((a) => a.id.startsWith(prefix)).map((a) => appJson(core, a, embed)) })
          }
          return notFound(`App '${id}' does not exist`)
        }
        return ok({ app: appJson(core, app, embed, true) })
      }
      if (method === "PUT" || method === "PATCH") {
        const body = req.body
        if (typeof body !== "object" || body === null || Array.isArray(body)) return invalid("/", "expected a JSON object")
        const partial = method === "PATCH" || query.get("partialUpdate") !== "false"
        const merged: Record<string, unknown> = app !== undefined && partial ? { ...AppDefinition.toInput(app), ...(body as object), id } : { ...(body as object), id }
        return yield* upsert(core, id, merged, force, now, app === undefined ? 201 : 200, flag(query, "dryRun"))
      }
      if (method === "DELETE") {
        if (app === undefined) return notFound(`App '${id}' does not exist`)
        return deployed(yield* core.deploy(id, null, "StopApplication", force))
      }
      return methodNotAllowed
    }

    if (path === "/v2/deployments" && method === "GET") return ok([...core.deployments.values()].map((d) => deploymentJson(core, d)))
    {
      const promote = /^\/v2\/deployments\/([^/]+)\/promote$/.exec(path)
      if (promote !== null && method === "POST") {
        const d = yield* core.promote(promote[1]!)
        return ok(deploymentJson(core, d))
      }
      const m = /^\/v2\/deployments\/([^/]+)$/.exec(path)
      if (m !== null && method === "DELETE") {
        const rollback = yield* core.cancelDeployment(m[1]!, force)
        return rollback === undefined ? ok({}, 202) : deployed(rollback)
      }
    }

    if (path === "/v2/tasks" && method === "GET") {
      const status = query.get("status")
      const wanted = status === null ? undefined : `TASK_${status.toUpperCase()}`
      const instances = [...core.instances.values()].filter((i) => !i.parked && (wanted === undefined || i.state === wanted))
      if ((req.accept ?? "").includes("text/plain") && !(req.accept ?? "").includes("application/json")) {
        // Marathon's load-balancer format: per app and port, "<appId>_<port index> <port> host:port…".
        const lines: Array<string> = []
        for (const app of core.apps.values()) {
          const mine = instances.filter((i) => i.appId === app.id && i.state === "TASK_RUNNING")
          app.portDefinitions.forEach((p, k) => {
            lines.push([`${app.id.slice(1).replace(/\//g, "_")}_${k}`, String(p.port), ...mine.filter((i) => i.ports[k] !== undefined).map((i) => `${i.host}:${i.ports[k]}`)].join("\t"))
          })
        }
        return { status: 200, body: undefined, raw: lines.join("\n") + (lines.length > 0 ? "\n" : ""), headers: { "Content-Type": "text/plain; charset=utf-8" } }
      }
      return ok({ tasks: instances.map((i) => taskJson(core, i)) })
    }
    if (path === "/v2/tasks/delete" && method === "POST") {
      const body = req.body as { ids?: unknown } | undefined
      if (typeof body !== "object" || body === null || !Array.isArray(body.ids) || !body.ids.every((x) => typeof x === "string")) {
        return invalid("/ids", "expected an array of task ids")
      }
      const result = yield* core.killTasks(body.ids as Array<string>, { scale: flag(query, "scale"), wipe: flag(query, "wipe"), force })
      if (result.deployment !== undefined) return deployed(result.deployment)
      return ok({ tasks: result.killed.map((i) => taskJson(core, i)) })
    }

    if (path === "/v2/queue" && method === "GET") return ok(queueJson(core, embed, now))
    {
      const m = /^\/v2\/queue\/(.+)\/delay$/.exec(path)
      if (m !== null && method === "DELETE") {
        const id = AppDefinition.normalizeId(m[1]!)
        if (!core.apps.has(id)) return notFound(`Application ${id} not found in tasks queue.`)
        core.resetDelay(id)
        return { status: 204, body: undefined }
      }
    }

    if ((path === "/v2/groups" || path.startsWith("/v2/groups/")) && method !== "GET") return yield* groupWrite(core, req, force, now)
    if ((path === "/v2/groups" || path === "/v2/groups/") && method === "GET") return ok(groupTree(core, embed))
    if (path.startsWith("/v2/groups/") && method === "GET") {
      const id = AppDefinition.normalizeId(path.slice("/v2/groups".length))
      const find = (n: ReturnType<typeof groupTree>): ReturnType<typeof groupTree> | undefined =>
        n.id === id ? n : n.groups.map(find).find((x) => x !== undefined)
      const found = find(groupTree(core, embed))
      return found === undefined ? notFound(`Group '${id}' does not exist`) : ok(found)
    }

    return { status: 404, body: { message: `Unknown path ${path}` } }
  })

const methodNotAllowed: Response = { status: 405, body: { message: "HTTP method not allowed" } }

const invalid = (path: string, error: string): Response => ({ status: 422, body: { message: "Object is not valid", details: [{ path, errors: [error] }] } })

/** The apps of a group body, with ids made absolute under their group: `{ id, apps, groups }`, recursively. */
const flattenGroup = (group: unknown, parent: string, out: Array<unknown>, errors: Array<{ path: string; errors: ReadonlyArray<string> }>, at: string): void => {
  if (typeof group !== "object" || group === null || Array.isArray(group)) {
    errors.push({ path: at || "/", errors: ["expected a group object"] })
    return
  }
  const g = group as { id?: unknown; apps?: unknown; groups?: unknown }
  const id = typeof g.id === "string" ? (g.id.startsWith("/") ? AppDefinition.normalizeId(g.id) : AppDefinition.normalizeId(`${parent}/${g.id}`)) : parent
  const apps = g.apps === undefined ? [] : g.apps
  if (!Array.isArray(apps)) errors.push({ path: `${at}/apps`, errors: ["expected an array of apps"] })
  else {
    for (const [k, app] of apps.entries()) {
      if (typeof app === "object" && app !== null && typeof (app as { id?: unknown }).id === "string") {
        const appId = (app as { id: string }).id
        out.push({ ...(app as object), id: appId.startsWith("/") ? appId : `${id === "/" ? "" : id}/${appId}` })
      } else out.push(app)
      void k
    }
  }
  const groups = g.groups === undefined ? [] : g.groups
  if (!Array.isArray(groups)) errors.push({ path: `${at}/groups`, errors: ["expected an array of groups"] })
  else for (const [k, sub] of groups.entries()) flattenGroup(sub, id, out, errors, `${at}/groups(${k})`)
}

/** POST/PUT a group (its apps, created or updated together), PUT `{scaleBy}`, DELETE a group's apps. */
const groupWrite = (core: Core, req: Request, force: boolean, now: () => number): Effect.Effect<Response, ApiError> =>
  Effect.gen(function*() {
    const id = AppDefinition.normalizeId(req.path.slice("/v2/groups".length))
    const under = (a: AppDefinition.App) => id === "/" || a.id.startsWith(id + "/")
    if (req.method === "DELETE") {
      const apps = [...core.apps.values()].filter(under)
      if (apps.length === 0) return notFound(`Group '${id}' does not exist`)
      if (!force && apps.some((a) => core.deploymentOf(a.id) !== undefined)) {
        return yield* Effect.fail(new ApiError(409, { message: "App is locked by one or more deployments. Override with the option '?force=true'." }))
      }
      let last: Deployment | undefined
      for (const a of apps) last = yield* core.deploy(a.id, null, "StopApplication", force)
      return deployed(last!)
    }
    if (req.method !== "POST" && req.method !== "PUT" && req.method !== "PATCH") return methodNotAllowed
    const body = req.body as { scaleBy?: unknown } | undefined
    if (typeof body === "object" && body !== null && "scaleBy" in body) {
      if (typeof body.scaleBy !== "number" || !(body.scaleBy >= 0)) return invalid("/scaleBy", "must be a number >= 0")
      const factor = body.scaleBy
      const apps = [...core.apps.values()].filter(under)
      if (apps.length === 0) return notFound(`Group '${id}' does not exist`)
      return yield* bulkUpdate(core, apps.map((a) => ({ id: a.id, instances: Math.ceil(a.instances * factor) })), force, now, true)
    }
    const apps: Array<unknown> = []
    const errors: Array<{ path: string; errors: ReadonlyArray<string> }> = []
    flattenGroup(body, id, apps, errors, "")
    if (errors.length > 0) return { status: 422, body: { message: "Object is not valid", details: errors } }
    if (req.method === "POST") {
      const existing = apps.find((a) => core.apps.has(AppDefinition.normalizeId(String((a as { id?: unknown }).id ?? ""))))
      if (existing !== undefined) return { status: 409, body: { message: `An app with id [${AppDefinition.normalizeId(String((existing as { id: string }).id))}] already exists.` } }
    }
    const result = yield* bulkUpdate(core, apps, force, now, req.method !== "PUT" || req.query.get("partialUpdate") !== "false")
    return req.method === "POST" && result.status === 200 ? { ...result, status: 201 } : result
  })

/** `dryRun=true` (beyond Marathon, which has it for groups only): the plan a write would start, and no change. */
const dryRunPlan = (core: Core, id: string, next: AppDefinition.App, action: string): Response => {
  const before = core.apps.get(id)
  const steps = action === "StartApplication"
    ? [{ actions: [{ action: "StartApplication", app: id }] }, { actions: [{ action: "ScaleApplication", app: id }] }]
    : [{ actions: [{ action, app: id }] }]
  const running = core.deploymentOf(id)
  return ok({
    dryRun: true,
    affectedApps: [id],
    steps,
    totalSteps: steps.length,
    original: before ?? null,
    target: next,
    blockedBy: running === undefined ? [] : [{ id: running.id }],
    instancesToReplace: action === "RestartApplication" ? core.instancesOf(id).filter((i) => !i.parked).length : 0
  })
}

const createApp = (core: Core, body: unknown, force: boolean, now: () => number, dryRun = false): Effect.Effect<Response, ApiError> =>
  Effect.gen(function*() {
    const version = iso(now)
    const decoded = AppDefinition.decode(body, version)
    if (Result.isFailure(decoded)) return { status: 422, body: decoded.failure.body }
    const app = decoded.success
    if (core.apps.has(app.id) || core.deleting.has(app.id)) {
      return { status: 409, body: { message: `An app with id [${app.id}] already exists.` } }
    }
    if (dryRun) return dryRunPlan(core, app.id, app, "StartApplication")
    const d = yield* core.deploy(app.id, app, "StartApplication", force)
    return ok({ ...appJson(core, app, new Set()), deployments: [{ id: d.id }] }, 201, { "Marathon-Deployment-Id": d.id, Location: `/v2/apps${app.id}` })
  })

const upsert = (core: Core, id: string, body: Record<string, unknown>, force: boolean, now: () => number, status: number, dryRun = false): Effect.Effect<Response, ApiError> =>
  Effect.gen(function*() {
    const previous = core.apps.get(id)
    const version = iso(now)
    const decoded = AppDefinition.decode(body, version, previous)
    if (Result.isFailure(decoded)) return { status: 422, body: decoded.failure.body }
    const next = decoded.success
    const action = previous === undefined ? "StartApplication" : previous.versionInfo.lastConfigChangeAt === next.versionInfo.lastConfigChangeAt ? "ScaleApplication" : "RestartApplication"
    if (dryRun) return dryRunPlan(core, id, next, action)
    const d = yield* core.deploy(id, next, action, force)
    return deployed(d, status)
  })

const bulkUpdate = (core: Core, body: unknown, force: boolean, now: () => number, partial: boolean): Effect.Effect<Response, ApiError> =>
  Effect.gen(function*() {
    if (!Array.isArray(body)) return invalid("/", "expected a JSON array of apps")
    // Validate everything first: a bad entry changes nothing.
    const version = iso(now)
    const prepared: Array<{ id: string; app: AppDefinition.App }> = []
    const details: Array<{ path: string; errors: ReadonlyArray<string> }> = []
    for (const [k, entry] of body.entries()) {
      const rawId = typeof entry === "object" && entry !== null && typeof (entry as { id?: unknown }).id === "string" ? (entry as { id: string }).id : undefined
      const id = rawId === undefined ? undefined : AppDefinition.normalizeId(rawId)
      const previous = id === undefined ? undefined : core.apps.get(id)
      const merged = previous !== undefined && partial ? { ...AppDefinition.toInput(previous), ...(entry as object) } : entry
      const decoded = AppDefinition.decode(merged, version, previous)
      if (Result.isFailure(decoded)) for (const d of decoded.failure.details) details.push({ path: `(${k})${d.path === "/" ? "" : d.path}`, errors: d.errors })
      else prepared.push({ id: decoded.success.id, app: decoded.success })
    }
    if (details.length > 0) return { status: 422, body: { message: "Object is not valid", details } }
    if (!force) {
      const locked = prepared.find((p) => core.deploymentOf(p.id) !== undefined)
      if (locked !== undefined) yield* Effect.fail(new ApiError(409, { message: "App is locked by one or more deployments. Override with the option '?force=true'." }))
    }
    let last: Deployment | undefined
    for (const p of prepared) {
      const previous = core.apps.get(p.id)
      const action = previous === undefined ? "StartApplication" : previous.versionInfo.lastConfigChangeAt === p.app.versionInfo.lastConfigChangeAt ? "ScaleApplication" : "RestartApplication"
      last = yield* core.deploy(p.id, p.app, action, force)
    }
    return last === undefined ? ok({ deploymentId: null, version }) : deployed(last)
  })

export const queueJson = (core: Core, embed: ReadonlySet<string>, now: () => number): Record<string, unknown> => {
  const queue: Array<Record<string, unknown>> = []
  const t = now()
  for (const [appId, count] of core.wanted) {
    const app = core.apps.get(appId)
    if (app === undefined || count <= 0) continue
    const delay = core.delayOf(appId)
    const stats = core.stats.get(appId)
    const summary = [...(stats?.rejectSummaryLastOffers ?? new Map<string, { declined: number; processed: number }>())]
      .map(([reason, s]) => ({ reason, declined: s.declined, processed: s.processed }))
    const entry: Record<string, unknown> = {
      app: appJson(core, app, new Set()),
      count,
      delay: { timeLeftSeconds: Math.max(0, Math.ceil((delay.until - t) / 1000)), overdue: delay.until <= t },
      since: stats?.lastUnusedOfferAt ?? app.version,
      processedOffersSummary: {
        processedOffersCount: stats?.processedOffersCount ?? 0,
        unusedOffersCount: stats?.unusedOffersCount ?? 0,
        ...(stats?.lastUnusedOfferAt === undefined ? {} : { lastUnusedOfferAt: stats.lastUnusedOfferAt }),
        ...(stats?.lastUsedOfferAt === undefined ? {} : { lastUsedOfferAt: stats.lastUsedOfferAt }),
        rejectSummaryLastOffers: summary,
        rejectSummaryLaunchAttempt: summary
      }
    }
    if (embed.has("lastUnusedOffers")) {
      entry.lastUnusedOffers = (stats?.lastUnusedOffers ?? []).map((o) => ({
        offer: { id: o.offerId, agentId: o.agentId, hostname: o.hostname },
        reason: o.reason,
        details: o.details,
        timestamp: o.timestamp
      }))
    }
    queue.push(entry)
  }
  return { queue }
}
