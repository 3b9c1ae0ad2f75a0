/**
 * Marathon's app definition (`/v2/apps` bodies) as an Effect Schema, with Marathon's field names
 * and defaults, and its validation errors in Marathon's 422 shape.
 *
 * @since 0.1.0
 */
import { Requirement } from "@berth/sdk-scheduler"
import { Result, Schema, SchemaIssue } from "effect"

const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be greater than or equal to 0" }))
const NonNegativeInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be an integer greater than or equal to 0" }))
const Fraction = Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1 }, { message: "must be between 0.0 and 1.0" }))
const Port = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 }, { message: "must be a port between 0 and 65535" }))
const StringMap = Schema.Record(Schema.String, Schema.String)

/** One segment of an app id: Marathon's rule (lower case letters, digits, dots and dashes). */
export const ID_SEGMENT = /^(([a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])$/

/**
 * Normalises an app or group id to an absolute path without a trailing slash: `"web"` and
 * `"/web/"` are both `"/web"`.
 *
 * @example
 * ```ts
 * import { AppDefinition } from "@berth/marathon-like"
 * AppDefinition.normalizeId("prod/web/") // "/prod/web"
 * ```
 *
 * @since 0.1.0
 */
export const normalizeId = (id: string): string => "/" + id.split("/").filter((s) => s.length > 0).join("/")

const AppId = Schema.String.check(
  Schema.makeFilter((id) => {
    const segments = id.split("/").filter((s) => s.length > 0)
    if (segments.length === 0) return "must not be empty"
    const bad = segments.find((s) => s !== "." && s !== ".." && !ID_SEGMENT.test(s))
    if (bad !== undefined) return `path segment "${bad}" must fully match regular expression '${ID_SEGMENT.source}'`
    if (segments.some((s) => s === "." || s === "..")) return "must not contain . or .. segments"
    return undefined
  })
)

/** `[field, OPERATOR]` or `[field, OPERATOR, value]`, with the operator and value checked as Berth's placement does. */
export const Constraint = Schema.Array(Schema.String).check(
  Schema.makeFilter((c) => {
    if (c.length < 2 || c.length > 3) return "a constraint is [field, operator] or [field, operator, value]"
    const decoded = Schema.decodeUnknownResult(Requirement.Constraint)(c)
    if (Result.isFailure(decoded)) {
      const issues = formatter(decoded.failure.issue).issues
      return issues.map((i) => i.message).join("; ")
    }
    return undefined
  })
)

export const PortDefinition = Schema.Struct({
  port: Schema.optional(Port),
  protocol: Schema.optional(Schema.Literals(["tcp", "udp", "udp,tcp", "tcp,udp"])),
  name: Schema.optional(Schema.String.check(Schema.isPattern(/^[a-z0-9-]+$/, { message: "must match ^[a-z0-9-]+$" }))),
  labels: Schema.optional(StringMap)
})

export const PortMapping = Schema.Struct({
  containerPort: Schema.optional(Port),
  hostPort: Schema.optional(Port),
  servicePort: Schema.optional(Port),
  protocol: Schema.optional(Schema.Literals(["tcp", "udp", "udp,tcp", "tcp,udp"])),
  name: Schema.optional(Schema.String.check(Schema.isPattern(/^[a-z0-9-]+$/, { message: "must match ^[a-z0-9-]+$" }))),
  labels: Schema.optional(StringMap)
})

export const PersistentVolume = Schema.Struct({
  containerPath: Schema.String.check(
    Schema.isPattern(/^[A-Za-z0-9._-]+$/, { message: "a persistent volume's containerPath must be a single relative path segment" })
  ),
  mode: Schema.optional(Schema.Literals(["RW", "RO"])),
  persistent: Schema.Struct({
    size: Schema.Finite.check(Schema.isGreaterThan(0, { message: "must be greater than 0 (MiB)" })),
    type: Schema.optional(Schema.Literals(["root", "path", "mount"])),
    maxSize: Schema.optional(Schema.Finite)
  })
})

export const HostVolume = Schema.Struct({
  containerPath: Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" })),
  hostPath: Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" })),
  mode: Schema.optional(Schema.Literals(["RW", "RO"]))
})

export const Container = Schema.Struct({
  type: Schema.optional(Schema.Literals(["MESOS", "DOCKER"])),
  docker: Schema.optional(Schema.Struct({
    image: Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" })),
    network: Schema.optional(Schema.Literals(["BRIDGE", "HOST", "NONE", "USER"])),
    portMappings: Schema.optional(Schema.Array(PortMapping)),
    privileged: Schema.optional(Schema.Boolean),
    forcePullImage: Schema.optional(Schema.Boolean),
    parameters: Schema.optional(Schema.Array(Schema.Struct({ key: Schema.String, value: Schema.String })))
  })),
  portMappings: Schema.optional(Schema.Array(PortMapping)),
  volumes: Schema.optional(Schema.Array(Schema.Union([PersistentVolume, HostVolume])))
})

export const HealthCheck = Schema.Struct({
  protocol: Schema.optional(Schema.Literals(["HTTP", "HTTPS", "TCP", "COMMAND", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP"])),
  path: Schema.optional(Schema.String),
  portIndex: Schema.optional(NonNegativeInt),
  port: Schema.optional(Port),
  command: Schema.optional(Schema.Struct({ value: Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" })) })),
  gracePeriodSeconds: Schema.optional(NonNegative),
  intervalSeconds: Schema.optional(Schema.Finite.check(Schema.isGreaterThan(0, { message: "must be greater than 0" }))),
  timeoutSeconds: Schema.optional(Schema.Finite.check(Schema.isGreaterThan(0, { message: "must be greater than 0" }))),
  maxConsecutiveFailures: Schema.optional(NonNegativeInt),
  delaySeconds: Schema.optional(NonNegative),
  ignoreHttp1xx: Schema.optional(Schema.Boolean)
})

export const ReadinessCheck = Schema.Struct({
  name: Schema.optional(Schema.String),
  protocol: Schema.optional(Schema.Literals(["HTTP", "HTTPS"])),
  path: Schema.optional(Schema.String),
  portName: Schema.optional(Schema.String),
  intervalSeconds: Schema.optional(Schema.Finite.check(Schema.isGreaterThan(0, { message: "must be greater than 0" }))),
  timeoutSeconds: Schema.optional(Schema.Finite.check(Schema.isGreaterThan(0, { message: "must be greater than 0" }))),
  httpStatusCodesForReady: Schema.optional(Schema.Array(Schema.Int)),
  preserveLastResponse: Schema.optional(Schema.Boolean)
})

export const UpgradeStrategy = Schema.Struct({
  minimumHealthCapacity: Schema.optional(Fraction),
  maximumOverCapacity: Schema.optional(Fraction),
  /**
   * Beyond Marathon (whose deployments "would take forever"): a deployment of this app that has
   * not finished after this many seconds is rolled back automatically. Absent: no deadline.
   */
  progressDeadlineSeconds: Schema.optional(Schema.Finite.check(Schema.isGreaterThan(0, { message: "must be greater than 0" }))),
  /**
   * Beyond Marathon: a configuration change first starts this many new instances next to the old
   * ones and waits for `POST /v2/deployments/{id}/promote` before replacing the rest.
   */
  canaryInstances: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1, { message: "must be an integer >= 1" })))
})

export const UnreachableStrategy = Schema.Union([
  Schema.Literal("disabled"),
  Schema.Struct({ inactiveAfterSeconds: Schema.optional(NonNegative), expungeAfterSeconds: Schema.optional(NonNegative) })
])

export const Fetch = Schema.Struct({
  uri: Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" })),
  extract: Schema.optional(Schema.Boolean),
  executable: Schema.optional(Schema.Boolean),
  cache: Schema.optional(Schema.Boolean),
  destPath: Schema.optional(Schema.String)
})

/**
 * The app definition as clients send it: every field but `id` optional, Marathon's names.
 * Unknown keys (including read-only ones such as `tasksRunning` echoed back by clients) are
 * dropped.
 *
 * @since 0.1.0
 */
export const AppInput = Schema.Struct({
  id: AppId,
  cmd: Schema.optional(Schema.NullOr(Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" })))),
  args: Schema.optional(Schema.NullOr(Schema.Array(Schema.String))),
  user: Schema.optional(Schema.NullOr(Schema.String)),
  env: Schema.optional(Schema.Record(Schema.String, Schema.Union([Schema.String, Schema.Struct({ secret: Schema.String })]))),
  instances: Schema.optional(NonNegativeInt),
  cpus: Schema.optional(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0.001, { message: "must be greater than or equal to 0.001" }))),
  mem: Schema.optional(NonNegative),
  disk: Schema.optional(NonNegative),
  gpus: Schema.optional(NonNegativeInt),
  constraints: Schema.optional(Schema.Array(Constraint)),
  fetch: Schema.optional(Schema.Array(Fetch)),
  uris: Schema.optional(Schema.Array(Schema.String)),
  container: Schema.optional(Schema.NullOr(Container)),
  healthChecks: Schema.optional(Schema.Array(HealthCheck)),
  readinessChecks: Schema.optional(Schema.Array(ReadinessCheck)),
  dependencies: Schema.optional(Schema.Array(AppId)),
  upgradeStrategy: Schema.optional(UpgradeStrategy),
  labels: Schema.optional(StringMap),
  acceptedResourceRoles: Schema.optional(Schema.NullOr(Schema.Array(Schema.String))),
  role: Schema.optional(Schema.String),
  portDefinitions: Schema.optional(Schema.Array(PortDefinition)),
  ports: Schema.optional(Schema.Array(Port)),
  requirePorts: Schema.optional(Schema.Boolean),
  backoffSeconds: Schema.optional(NonNegative),
  backoffFactor: Schema.optional(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(1, { message: "must be greater than or equal to 1" }))),
  maxLaunchDelaySeconds: Schema.optional(NonNegative),
  killSelection: Schema.optional(Schema.Literals(["YOUNGEST_FIRST", "OLDEST_FIRST"])),
  unreachableStrategy: Schema.optional(UnreachableStrategy),
  taskKillGracePeriodSeconds: Schema.optional(Schema.NullOr(NonNegative)),
  networks: Schema.optional(Schema.Array(Schema.Struct({ mode: Schema.optional(Schema.String), name: Schema.optional(Schema.String) }))),
  executor: Schema.optional(Schema.String)
})
export type AppInput = typeof AppInput.Type

/** A health check with Marathon's defaults applied. */
export interface HealthCheckDef {
  readonly protocol: "HTTP" | "HTTPS" | "TCP" | "COMMAND" | "MESOS_HTTP" | "MESOS_HTTPS" | "MESOS_TCP"
  readonly path: string
  readonly portIndex?: number
  readonly port?: number
  readonly command?: { readonly value: string }
  readonly gracePeriodSeconds: number
  readonly intervalSeconds: number
  readonly timeoutSeconds: number
  readonly maxConsecutiveFailures: number
  readonly delaySeconds: number
  readonly ignoreHttp1xx: boolean
}

/** A readiness check with Marathon's defaults applied. */
export interface ReadinessCheckDef {
  readonly name: string
  readonly protocol: "HTTP" | "HTTPS"
  readonly path: string
  readonly portName: string
  readonly intervalSeconds: number
  readonly timeoutSeconds: number
  readonly httpStatusCodesForReady: ReadonlyArray<number>
  readonly preserveLastResponse: boolean
}

/**
 * A complete app definition: the input with Marathon's defaults applied and the id normalised.
 * This is what is stored (one key per version) and what `GET /v2/apps` returns.
 *
 * @since 0.1.0
 */
export interface App {
  readonly id: string
  readonly cmd: string | null
  readonly args: ReadonlyArray<string> | null
  readonly user: string | null
  readonly env: Readonly<Record<string, string | { readonly secret: string }>>
  readonly instances: number
  readonly cpus: number
  readonly mem: number
  readonly disk: number
  readonly gpus: number
  readonly executor: string
  readonly constraints: ReadonlyArray<ReadonlyArray<string>>
  readonly uris: ReadonlyArray<string>
  readonly fetch: ReadonlyArray<{ readonly uri: string; readonly extract: boolean; readonly executable: boolean; readonly cache: boolean; readonly destPath?: string }>
  readonly storeUrls: ReadonlyArray<string>
  readonly backoffSeconds: number
  readonly backoffFactor: number
  readonly maxLaunchDelaySeconds: number
  readonly container: typeof Container.Type | null
  readonly healthChecks: ReadonlyArray<HealthCheckDef>
  readonly readinessChecks: ReadonlyArray<ReadinessCheckDef>
  readonly dependencies: ReadonlyArray<string>
  readonly upgradeStrategy: { readonly minimumHealthCapacity: number; readonly maximumOverCapacity: number; readonly progressDeadlineSeconds?: number; readonly canaryInstances?: number }
  readonly labels: Readonly<Record<string, string>>
  readonly acceptedResourceRoles: ReadonlyArray<string> | null
  readonly role: string
  readonly portDefinitions: ReadonlyArray<{ readonly port: number; readonly protocol: string; readonly name?: string; readonly labels: Readonly<Record<string, string>> }>
  readonly requirePorts: boolean
  readonly killSelection: "YOUNGEST_FIRST" | "OLDEST_FIRST"
  readonly unreachableStrategy: "disabled" | { readonly inactiveAfterSeconds: number; readonly expungeAfterSeconds: number }
  readonly taskKillGracePeriodSeconds: number | null
  readonly networks: ReadonlyArray<{ readonly mode?: string | undefined; readonly name?: string | undefined }>
  readonly version: string
  readonly versionInfo: { readonly lastScalingAt: string; readonly lastConfigChangeAt: string }
}

/** One entry of a 422 body's `details`. */
export interface Violation {
  readonly path: string
  readonly errors: ReadonlyArray<string>
}

/**
 * Validation failed: Marathon's 422 body is `{ message: "Object is not valid", details }`.
 *
 * @since 0.1.0
 */
export class InvalidApp extends Schema.TaggedError<InvalidApp>()("InvalidApp", {
  details: Schema.Array(Schema.Struct({ path: Schema.String, errors: Schema.Array(Schema.String) }))
}) {
  override get message(): string {
    return this.details.map((d) => `${d.path}: ${d.errors.join(", ")}`).join("; ")
  }
  /** The JSON body of the 422 response. */
  get body(): { message: string; details: ReadonlyArray<Violation> } {
    return { message: "Object is not valid", details: this.details }
  }
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

/** Marathon writes paths as `/healthChecks(0)/portIndex`. */
const pointer = (path: ReadonlyArray<unknown>): string => {
  let out = ""
  for (const p of path) {
    const key = typeof p === "object" && p !== null && "key" in p ? (p as { key: unknown }).key : p
    out += typeof key === "number" ? `(${key})` : `/${String(key)}`
  }
  return out === "" ? "/" : out
}

const group = (violations: ReadonlyArray<{ path: string; error: string }>): Array<Violation> => {
  const byPath = new Map<string, Array<string>>()
  for (const v of violations) {
    const list = byPath.get(v.path) ?? []
    if (!list.includes(v.error)) list.push(v.error)
    byPath.set(v.path, list)
  }
  return [...byPath].map(([path, errors]) => ({ path, errors }))
}

const isPersistent = (v: unknown): v is typeof PersistentVolume.Type => typeof v === "object" && v !== null && "persistent" in v

/** True when the app has local persistent volumes (a "resident" app). */
export const isResident = (app: { readonly container?: typeof Container.Type | null | undefined }): boolean =>
  (app.container?.volumes ?? []).some(isPersistent)

/** The persistent volumes of an app. */
export const persistentVolumes = (app: App): ReadonlyArray<typeof PersistentVolume.Type> =>
  (app.container?.volumes ?? []).filter(isPersistent)

/** The ports an app asks for: portDefinitions (or the deprecated `ports`), or the Docker port mappings. */
const portsOf = (input: AppInput): ReadonlyArray<{ port: number; protocol: string; name?: string; labels: Record<string, string> }> => {
  if (input.portDefinitions !== undefined) {
    return input.portDefinitions.map((p) => ({
      port: p.port ?? 0,
      protocol: p.protocol ?? "tcp",
      ...(p.name === undefined ? {} : { name: p.name }),
      labels: { ...p.labels }
    }))
  }
  if (input.ports !== undefined) return input.ports.map((port) => ({ port, protocol: "tcp", labels: {} }))
  // Marathon's default for an app without networking settings is one port (a random service port).
  if (input.container?.docker !== undefined || input.container?.portMappings !== undefined) return []
  return [{ port: 0, protocol: "tcp", labels: {} }]
}

/** Cross-field rules Marathon enforces beyond the field types. */
const crossCheck = (input: AppInput, ports: number): Array<{ path: string; error: string }> => {
  const out: Array<{ path: string; error: string }> = []
  const hasCmd = input.cmd !== undefined && input.cmd !== null
  const hasArgs = input.args !== undefined && input.args !== null && input.args.length > 0
  if (hasCmd && hasArgs) out.push({ path: "/", error: "AppDefinition must either contain a 'cmd' or 'args', not both" })
  if (!hasCmd && !hasArgs && input.container?.docker === undefined) {
    out.push({ path: "/", error: "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'" })
  }
  const resident = isResident(input)
  if (resident) {
    if (input.unreachableStrategy !== undefined && input.unreachableStrategy !== "disabled") {
      out.push({ path: "/unreachableStrategy", error: "unreachableStrategy must be disabled for resident apps" })
    }
    if ((input.upgradeStrategy?.maximumOverCapacity ?? 0) > 0) {
      out.push({ path: "/upgradeStrategy/maximumOverCapacity", error: "must be 0 for resident apps: their reservations cannot be overprovisioned" })
    }
  }
  for (const [i, hc] of (input.healthChecks ?? []).entries()) {
    const protocol = hc.protocol ?? "HTTP"
    if (protocol === "COMMAND" && hc.command === undefined) out.push({ path: `/healthChecks(${i})/command`, error: "a COMMAND health check needs a command" })
    if (protocol !== "COMMAND" && hc.port === undefined && (hc.portIndex ?? 0) >= ports) {
      out.push({ path: `/healthChecks(${i})/portIndex`, error: `must be less than the number of ports (${ports})` })
    }
  }
  for (const [i, dep] of (input.dependencies ?? []).entries()) {
    if (normalizeId(dep) === normalizeId(input.id)) out.push({ path: `/dependencies(${i})`, error: "an app cannot depend on itself" })
  }
  if ((input.readinessChecks ?? []).length > 1) out.push({ path: "/readinessChecks", error: "only one readiness check per app is supported" })
  for (const [i, rc] of (input.readinessChecks ?? []).entries()) {
    const names = (input.portDefinitions ?? []).map((p) => p.name)
    const portName = rc.portName ?? "http-api"
    if (!names.includes(portName)) out.push({ path: `/readinessChecks(${i})/portName`, error: `no port definition is named "${portName}"` })
    if ((rc.timeoutSeconds ?? 10) >= (rc.intervalSeconds ?? 30)) out.push({ path: `/readinessChecks(${i})/timeoutSeconds`, error: "must be less than intervalSeconds" })
  }
  const names = new Set<string>()
  for (const [i, p] of (input.portDefinitions ?? []).entries()) {
    if (p.name === undefined) continue
    if (names.has(p.name)) out.push({ path: `/portDefinitions(${i})/name`, error: `port name "${p.name}" is used twice` })
    names.add(p.name)
  }
  if (input.requirePorts === true) {
    // Fixed host ports: one task holds each, so two definitions cannot ask for the same one.
    const seen = new Set<number>()
    for (const [i, p] of (input.portDefinitions ?? []).entries()) {
      if (p.port === undefined || p.port === 0) continue
      if (seen.has(p.port)) out.push({ path: `/portDefinitions(${i})/port`, error: `host port ${p.port} is required twice` })
      seen.add(p.port)
    }
  }
  return out
}

/**
 * Applies Marathon's defaults to a validated input. `version` is the ISO timestamp of this
 * version of the definition.
 *
 * @since 0.1.0
 */
export const withDefaults = (input: AppInput, version: string, previous?: App): App => {
  const resident = isResident(input)
  const ports = portsOf(input)
  return {
    id: normalizeId(input.id),
    cmd: input.cmd ?? null,
    args: input.args ?? null,
    user: input.user ?? null,
    env: { ...input.env },
    instances: input.instances ?? 1,
    cpus: input.cpus ?? 1,
    mem: input.mem ?? 128,
    disk: input.disk ?? 0,
    gpus: input.gpus ?? 0,
    executor: input.executor ?? "",
    constraints: (input.constraints ?? []).map((c) => [...c]),
    uris: input.uris ?? [],
    fetch: (input.fetch ?? input.uris?.map((uri) => ({ uri })) ?? []).map((f) => ({
      uri: f.uri,
      extract: "extract" in f && f.extract !== undefined ? f.extract : true,
      executable: "executable" in f && f.executable !== undefined ? f.executable : false,
      cache: "cache" in f && f.cache !== undefined ? f.cache : false,
      ...("destPath" in f && f.destPath !== undefined ? { destPath: f.destPath } : {})
    })),
    storeUrls: [],
    backoffSeconds: input.backoffSeconds ?? 1,
    backoffFactor: input.backoffFactor ?? 1.15,
    maxLaunchDelaySeconds: input.maxLaunchDelaySeconds ?? 300,
    container: input.container ?? null,
    healthChecks: (input.healthChecks ?? []).map((h) => ({
      protocol: h.protocol ?? "HTTP",
      path: h.path ?? "/",
      ...(h.port === undefined ? { portIndex: h.portIndex ?? 0 } : { port: h.port }),
      ...(h.command === undefined ? {} : { command: h.command }),
      gracePeriodSeconds: h.gracePeriodSeconds ?? 300,
      intervalSeconds: h.intervalSeconds ?? 60,
      timeoutSeconds: h.timeoutSeconds ?? 20,
      maxConsecutiveFailures: h.maxConsecutiveFailures ?? 3,
      delaySeconds: h.delaySeconds ?? 15,
      ignoreHttp1xx: h.ignoreHttp1xx ?? false
    })),
    readinessChecks: (input.readinessChecks ?? []).map((r) => ({
      name: r.name ?? "readinessCheck",
      protocol: r.protocol ?? "HTTP",
      path: r.path ?? "/",
      portName: r.portName ?? "http-api",
      intervalSeconds: r.intervalSeconds ?? 30,
      timeoutSeconds: r.timeoutSeconds ?? 10,
      httpStatusCodesForReady: r.httpStatusCodesForReady ?? [200],
      preserveLastResponse: r.preserveLastResponse ?? false
    })),
    dependencies: (input.dependencies ?? []).map(normalizeId),
    upgradeStrategy: {
      minimumHealthCapacity: input.upgradeStrategy?.minimumHealthCapacity ?? (resident ? 0.5 : 1),
      maximumOverCapacity: input.upgradeStrategy?.maximumOverCapacity ?? (resident ? 0 : 1),
      ...(input.upgradeStrategy?.progressDeadlineSeconds === undefined ? {} : { progressDeadlineSeconds: input.upgradeStrategy.progressDeadlineSeconds }),
      ...(input.upgradeStrategy?.canaryInstances === undefined ? {} : { canaryInstances: input.upgradeStrategy.canaryInstances })
    },
    labels: { ...input.labels },
    acceptedResourceRoles: input.acceptedResourceRoles ?? null,
    role: input.role ?? "*",
    portDefinitions: ports,
    requirePorts: input.requirePorts ?? false,
    killSelection: input.killSelection ?? "YOUNGEST_FIRST",
    unreachableStrategy: input.unreachableStrategy === "disabled" || (input.unreachableStrategy === undefined && resident)
      ? "disabled"
      : { inactiveAfterSeconds: input.unreachableStrategy?.inactiveAfterSeconds ?? 0, expungeAfterSeconds: input.unreachableStrategy?.expungeAfterSeconds ?? 0 },
    taskKillGracePeriodSeconds: input.taskKillGracePeriodSeconds ?? null,
    networks: input.networks ?? [{ mode: "host" }],
    version,
    versionInfo: {
      lastScalingAt: version,
      lastConfigChangeAt: previous === undefined || !sameConfig(previous, input) ? version : previous.versionInfo.lastConfigChangeAt
    }
  }
}

/** True when only `instances` differs: Marathon then records a scaling, not a config change. */
const sameConfig = (previous: App, input: AppInput): boolean => {
  const { instances: _a, version: _v, versionInfo: _vi, ...before } = previous
  const { instances: _b, version: _v2, versionInfo: _vi2, ...after } = withDefaults(input, previous.version)
  return JSON.stringify(before) === JSON.stringify(after)
}

/**
 * Validates an app body. Collects every violation (field types, ranges, and Marathon's
 * cross-field rules) as `details[].path`.
 *
 * @example
 * ```ts
 * import { AppDefinition } from "@berth/marathon-like"
 * import { Result } from "effect"
 * const r = AppDefinition.validate({ id: "/web", cmd: "sleep 1000", cpus: -1 })
 * // Result.failure: InvalidApp with details [{ path: "/cpus", errors: ["must be greater than or equal to 0.001"] }]
 * ```
 *
 * @since 0.1.0
 */
export const validate = (body: unknown): Result.Result<AppInput, InvalidApp> => {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return Result.fail(new InvalidApp({ details: [{ path: "/", errors: ["expected a JSON object"] }] }))
  }
  const decoded = Schema.decodeUnknownResult(AppInput)(body, { errors: "all" })
  if (Result.isFailure(decoded)) {
    const issues = formatter(decoded.failure.issue).issues
    return Result.fail(new InvalidApp({ details: group(issues.map((i) => ({ path: pointer(i.path ?? []), error: i.message }))) }))
  }
  const input = decoded.success
  const cross = crossCheck(input, portsOf(input).length)
  return cross.length > 0 ? Result.fail(new InvalidApp({ details: group(cross) })) : Result.succeed(input)
}

/**
 * Validates and applies defaults in one go.
 *
 * @since 0.1.0
 */
export const decode = (body: unknown, version: string, previous?: App): Result.Result<App, InvalidApp> =>
  Result.map(validate(body), (input) => withDefaults(input, version, previous))

/**
 * Turns a stored app back into an input (for PATCH: merge the body over it and validate again).
 *
 * @since 0.1.0
 */
export const toInput = (app: App): Record<string, unknown> => {
  const { version: _v, versionInfo: _vi, storeUrls: _s, ...rest } = app
  const out: Record<string, unknown> = { ...rest }
  for (const [k, v] of Object.entries(out)) if (v === null) delete out[k]
  if (app.args !== null && app.args.length === 0) delete out.args
  return out
}
