/**
 * A service, declared: its pods (how many instances, where they may run, what each instance
 * reserves, its persistent volumes) and the tasks of each pod (command, goal, checks, env,
 * config templates, artifacts), plus optional custom plans. One Effect Schema gives the type,
 * the validation and the decoding from code or YAML; every error names the path and the rule
 * (`pods.kv.count: must be ≥ 1`), and nothing is launched from a spec that failed.
 *
 * A change of a running service's spec is checked by {@link validateUpdate} (volumes cannot
 * change, pods cannot shrink unless decommission is allowed, ...): a rejected update leaves the
 * previous target in force and says why.
 *
 * @example
 * ```ts
 * import { ServiceSpec } from "@berth/sdk-scheduler"
 *
 * const spec = ServiceSpec.fromYamlSync(`
 * name: kv-store
 * role: kv
 * pods:
 *   kv:
 *     count: 3
 *     placement: [["hostname", "UNIQUE"]]
 *     volumes: [{ path: data, size: 64 }]
 *     tasks:
 *       server:
 *         goal: RUNNING
 *         cmd: ./kv --data data
 *         cpus: 0.1
 *         mem: 64
 *         readiness: { cmd: "test -f data/ready" }
 * `)
 * ServiceSpec.instances(spec) // ["kv-0", "kv-1", "kv-2"]
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Result, Schema, SchemaIssue } from "effect"
import { createHash } from "node:crypto"
import * as Yaml from "yaml"
import * as Requirement from "./Requirement.ts"

const NAME = /^[a-z][a-z0-9-]{0,62}$/
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
const RELATIVE_PATH = /^(?!\/)(?!.*(^|\/)\.\.(\/|$))[A-Za-z0-9._/-]+$/
const URI = /^(https?|file):\/\/\S+$/

const name = (what: string) =>
  Schema.String.check(Schema.isPattern(NAME, { message: `${what} must match ${NAME.source} (lower case, digits, -)` }))
const Positive = Schema.Finite.check(Schema.isGreaterThan(0, { message: "must be > 0" }))
const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be ≥ 0" }))
const Seconds = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be a number of seconds ≥ 0" }))
const NonEmpty = Schema.String.check(Schema.isMinLength(1, { message: "must not be empty" }))
const RelativePath = Schema.String.check(
  Schema.isPattern(RELATIVE_PATH, { message: "must be a relative path inside the sandbox (no .., not absolute)" })
)
// Record keys are checked in `crossChecks`: a refined key schema drops bad keys silently.
const Env = Schema.Record(Schema.String, Schema.String)
const Uris = Schema.Array(Schema.String.check(Schema.isPattern(URI, { message: "must be an http(s):// or file:// URI" })))

/**
 * A command run periodically inside the task's sandbox. As a health check, `consecutiveFailures`
 * failures in a row (after `gracePeriodSeconds`) kill the task; as a readiness check it is only
 * reported, and the step that launched the task waits until it passes.
 *
 * @since 0.1.0
 * @category models
 */
export const Check = Schema.Struct({
  cmd: NonEmpty,
  intervalSeconds: Schema.optional(Positive),
  timeoutSeconds: Schema.optional(Positive),
  delaySeconds: Schema.optional(Seconds),
  gracePeriodSeconds: Schema.optional(Seconds),
  consecutiveFailures: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1, { message: "must be ≥ 1" })))
})
/** @since 0.1.0 @category models */
export type Check = typeof Check.Type

/**
 * A file rendered from a template before the task starts: `{{NAME}}` is replaced by the task's
 * environment variable `NAME` (including `POD_INSTANCE_INDEX`, `POD_INSTANCE`, `SERVICE_NAME`,
 * and plan parameters); an unknown name renders as an empty string.
 *
 * @since 0.1.0
 * @category models
 */
export const ConfigTemplate = Schema.Struct({
  /** Where the rendered file goes, relative to the sandbox. */
  dest: RelativePath,
  template: Schema.String
})
/** @since 0.1.0 @category models */
export type ConfigTemplate = typeof ConfigTemplate.Type

/**
 * What a task (or a resource set shared by several tasks) reserves.
 *
 * @since 0.1.0
 * @category models
 */
export const ResourceSet = Schema.Struct({
  cpus: Positive,
  mem: Positive,
  disk: Schema.optional(NonNegative),
  gpus: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be an integer ≥ 0" }))),
  ports: Schema.optional(Schema.Array(Schema.String))
})
/** @since 0.1.0 @category models */
export type ResourceSet = typeof ResourceSet.Type

/**
 * A persistent volume of every instance of a pod, kept across task restarts and released only
 * by replace, decommission or uninstall. Volumes cannot change once deployed.
 *
 * @since 0.1.0
 * @category models
 */
export const VolumeSpec = Schema.Struct({
  /** Where the volume is mounted, relative to the sandbox; also names it. */
  path: RelativePath,
  /** Size in MB. */
  size: Positive
})
/** @since 0.1.0 @category models */
export type VolumeSpec = typeof VolumeSpec.Type

/**
 * `RUNNING` tasks are kept running (restarted when they exit); `FINISH` tasks run to success
 * once per deployment of their pod's configuration; `ONCE` tasks run to success once in the
 * service's life (an init step), never again.
 *
 * @since 0.1.0
 * @category models
 */
export const Goal = Schema.Literals(["RUNNING", "FINISH", "ONCE"])
/** @since 0.1.0 @category models */
export type Goal = typeof Goal.Type

/**
 * One task of a pod. Resources come from `resourceSet` (a name in the pod's `resourceSets`) or
 * inline (`cpus`, `mem`, ...), not both.
 *
 * @since 0.1.0
 * @category models
 */
export const TaskSpec = Schema.Struct({
  goal: Goal,
  /** A shell command, run in the sandbox (volumes are mounted under their paths). */
  cmd: NonEmpty,
  resourceSet: Schema.optional(Schema.String),
  cpus: Schema.optional(Positive),
  mem: Schema.optional(Positive),
  disk: Schema.optional(NonNegative),
  gpus: Schema.optional(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0, { message: "must be an integer ≥ 0" }))),
  ports: Schema.optional(Schema.Array(Schema.String)),
  env: Schema.optional(Env),
  health: Schema.optional(Check),
  readiness: Schema.optional(Check),
  configs: Schema.optional(Schema.Array(ConfigTemplate)),
  uris: Schema.optional(Uris),
  killGracePeriodSeconds: Schema.optional(Seconds)
})
/** @since 0.1.0 @category models */
export type TaskSpec = typeof TaskSpec.Type

/**
 * How the steps of a phase (or the phases of a plan) run.
 *
 * - `serial`: one after the other.
 * - `parallel`: all at once.
 * - `canary`: the first step, then a pause until the operator proceeds (`resume`), then serial.
 * - `dependency`: each step waits for the steps it names in `dependsOn`.
 *
 * @since 0.1.0
 * @category models
 */
export const Strategy = Schema.Literals(["serial", "parallel", "canary", "dependency"])
/** @since 0.1.0 @category models */
export type Strategy = typeof Strategy.Type

/**
 * A pod: `count` instances (`<pod>-0` ... `<pod>-<count-1>`), each placed by `placement`
 * (Marathon constraints, e.g. `[["hostname", "UNIQUE"]]`), each with its own reservation and
 * volumes, running the pod's tasks.
 *
 * @since 0.1.0
 * @category models
 */
export const PodSpec = Schema.Struct({
  count: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1, { message: "must be ≥ 1" })),
  placement: Schema.optional(Schema.Array(Requirement.Constraint)),
  preferences: Schema.optional(Schema.Array(Requirement.Preference)),
  /** Lets an update lower `count` (or remove the pod): the extra instances are decommissioned. */
  allowDecommission: Schema.optional(Schema.Boolean),
  /**
   * How the deploy plan's phase for this pod runs its instances' steps. Default `serial` (a
   * rolling update, one instance at a time, each waiting for readiness); `canary` pauses after
   * the first instance until the operator resumes the phase.
   */
  strategy: Schema.optional(Strategy),
  resourceSets: Schema.optional(Schema.Record(Schema.String, ResourceSet)),
  volumes: Schema.optional(Schema.Array(VolumeSpec)),
  env: Schema.optional(Env),
  uris: Schema.optional(Uris),
  tasks: Schema.Record(Schema.String, TaskSpec)
})
/** @since 0.1.0 @category models */
export type PodSpec = typeof PodSpec.Type

/**
 * One phase of a custom plan: runs `tasks` (default: every task) of every instance of `pod`.
 *
 * @since 0.1.0
 * @category models
 */
export const PhaseSpec = Schema.Struct({
  pod: Schema.String,
  strategy: Schema.optional(Strategy),
  tasks: Schema.optional(Schema.Array(Schema.String)),
  /** For the `dependency` strategy of the plan: phases that must complete first. */
  dependsOn: Schema.optional(Schema.Array(Schema.String))
})
/** @since 0.1.0 @category models */
export type PhaseSpec = typeof PhaseSpec.Type

/**
 * A custom plan (e.g. `backup`), started by the operator with parameters that become the
 * environment of its tasks. `parameters` lists the accepted names with their defaults.
 *
 * @since 0.1.0
 * @category models
 */
export const PlanSpec = Schema.Struct({
  strategy: Schema.optional(Strategy),
  parameters: Schema.optional(Env),
  phases: Schema.Record(Schema.String, PhaseSpec)
})
/** @since 0.1.0 @category models */
export type PlanSpec = typeof PlanSpec.Type

const ServiceStruct = Schema.Struct({
  name: name("service names"),
  /** The role reservations are made for. Default `<name>-role`. */
  role: Schema.optional(NonEmpty),
  principal: Schema.optional(NonEmpty),
  user: Schema.optional(NonEmpty),
  pods: Schema.Record(Schema.String, PodSpec),
  plans: Schema.optional(Schema.Record(Schema.String, PlanSpec))
})

type Issue = { readonly path: ReadonlyArray<string | number>; readonly issue: string }

const keyIssues = (
  record: Readonly<Record<string, unknown>> | undefined,
  pattern: RegExp,
  what: string,
  path: ReadonlyArray<string | number>
): Array<Issue> =>
  Object.keys(record ?? {}).filter((k) => !pattern.test(k)).map((k) => ({ path: [...path, k], issue: `${what} must match ${pattern.source}` }))

const NAMES = `${NAME.source} (lower case, digits, -)`
const envIssues = (env: Readonly<Record<string, string>> | undefined, path: ReadonlyArray<string | number>) =>
  keyIssues(env, ENV_NAME, "environment variable names", path)

const crossChecks = (spec: typeof ServiceStruct.Type): Array<Issue> => {
  const issues: Array<Issue> = []
  issues.push(...keyIssues(spec.pods, NAME, "pod names", ["pods"]).map((i) => ({ ...i, issue: i.issue.replace(NAME.source, NAMES) })))
  issues.push(...keyIssues(spec.plans, NAME, "plan names", ["plans"]))
  const pods = Object.entries(spec.pods)
  if (pods.length === 0) issues.push({ path: ["pods"], issue: "must declare at least one pod" })
  for (const [podName, pod] of pods) {
    const at = (...rest: Array<string | number>) => ["pods", podName, ...rest]
    const tasks = Object.entries(pod.tasks)
    issues.push(...keyIssues(pod.tasks, NAME, "task names", at("tasks")))
    issues.push(...keyIssues(pod.resourceSets, NAME, "resource set names", at("resourceSets")))
    issues.push(...envIssues(pod.env, at("env")))
    if (tasks.length === 0) issues.push({ path: at("tasks"), issue: "must declare at least one task" })
    const paths = new Set<string>()
    for (const [i, v] of (pod.volumes ?? []).entries()) {
      if (paths.has(v.path)) issues.push({ path: at("volumes", i, "path"), issue: `"${v.path}" is listed twice` })
      paths.add(v.path)
    }
    for (const [setName, set] of Object.entries(pod.resourceSets ?? {})) {
      issues.push(...portIssues(set.ports ?? [], at("resourceSets", setName, "ports")))
    }
    for (const [taskName, task] of tasks) {
      const t = (...rest: Array<string | number>) => at("tasks", taskName, ...rest)
      const inline = task.cpus !== undefined || task.mem !== undefined
      if (task.resourceSet !== undefined) {
        if (inline) issues.push({ path: t("resourceSet"), issue: "give either resourceSet or cpus/mem, not both" })
        if (pod.resourceSets?.[task.resourceSet] === undefined) {
          issues.push({ path: t("resourceSet"), issue: `no resource set "${task.resourceSet}" in pods.${podName}.resourceSets` })
        }
      } else {
        if (task.cpus === undefined) issues.push({ path: t("cpus"), issue: "is required (or name a resourceSet)" })
        if (task.mem === undefined) issues.push({ path: t("mem"), issue: "is required (or name a resourceSet)" })
      }
      issues.push(...portIssues(task.ports ?? [], t("ports")))
      issues.push(...envIssues(task.env, t("env")))
      if (task.readiness !== undefined && task.goal !== "RUNNING") {
        issues.push({ path: t("readiness"), issue: "only a RUNNING task can have a readiness check" })
      }
      const dests = new Set<string>()
      for (const [i, c] of (task.configs ?? []).entries()) {
        if (dests.has(c.dest)) issues.push({ path: t("configs", i, "dest"), issue: `"${c.dest}" is listed twice` })
        dests.add(c.dest)
      }
    }
  }
  for (const [planName, plan] of Object.entries(spec.plans ?? {})) {
    const p = (...rest: Array<string | number>) => ["plans", planName, ...rest]
    if (["deploy", "recovery", "decommission", "uninstall"].includes(planName)) {
      issues.push({ path: p(), issue: `"${planName}" is a built-in plan: choose another name` })
    }
    const phases = Object.entries(plan.phases)
    issues.push(...keyIssues(plan.phases, NAME, "phase names", p("phases")))
    issues.push(...envIssues(plan.parameters, p("parameters")))
    if (phases.length === 0) issues.push({ path: p("phases"), issue: "must declare at least one phase" })
    for (const [phaseName, phase] of phases) {
      const pod = spec.pods[phase.pod]
      if (pod === undefined) {
        issues.push({ path: p("phases", phaseName, "pod"), issue: `no pod "${phase.pod}" in pods` })
        continue
      }
      for (const [i, task] of (phase.tasks ?? []).entries()) {
        if (pod.tasks[task] === undefined) issues.push({ path: p("phases", phaseName, "tasks", i), issue: `no task "${task}" in pods.${phase.pod}.tasks` })
      }
      for (const [i, dep] of (phase.dependsOn ?? []).entries()) {
        if (plan.phases[dep] === undefined) issues.push({ path: p("phases", phaseName, "dependsOn", i), issue: `no phase "${dep}" in this plan` })
        if (dep === phaseName) issues.push({ path: p("phases", phaseName, "dependsOn", i), issue: "a phase cannot depend on itself" })
      }
    }
  }
  return issues
}

const PORT_NAME = /^[a-z][a-z0-9-]{0,62}$/
const portIssues = (ports: ReadonlyArray<string>, path: Array<string | number>): Array<Issue> => {
  const issues: Array<Issue> = []
  const seen = new Set<string>()
  for (const [i, p] of ports.entries()) {
    if (!PORT_NAME.test(p)) issues.push({ path: [...path, i], issue: `must match ${PORT_NAME.source}` })
    if (seen.has(p)) issues.push({ path: [...path, i], issue: `port name "${p}" is listed twice` })
    seen.add(p)
  }
  return issues
}

/**
 * The service spec schema (decode input with {@link decode} or {@link fromYaml} to get errors
 * with paths).
 *
 * @since 0.1.0
 * @category models
 */
export const ServiceSpec = ServiceStruct.check(Schema.makeFilter((spec) => crossChecks(spec)))
/** @since 0.1.0 @category models */
export type ServiceSpec = typeof ServiceSpec.Type
/** The input form (constraints may be Marathon arrays). @since 0.1.0 @category models */
export type Encoded = typeof ServiceSpec.Encoded

/**
 * A spec (or a spec update) that is invalid: `issues` lists every problem as a path and a rule;
 * the message has one `path: rule` per line.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServiceSpecError extends Schema.TaggedError<ServiceSpecError>()("ServiceSpecError", {
  issues: Schema.Array(Schema.Struct({ path: Schema.String, rule: Schema.String }))
}) {
  override get message(): string {
    return this.issues.map((i) => `${i.path}: ${i.rule}`).join("\n")
  }
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

const pathText = (path: ReadonlyArray<unknown>): string =>
  path
    .map((p) => (typeof p === "object" && p !== null && "key" in p ? (p as { key: unknown }).key : p))
    .reduce<string>((acc, key) => (typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`), "")

const toError = (issue: SchemaIssue.Issue): ServiceSpecError => {
  const seen = new Set<string>()
  const issues: Array<{ path: string; rule: string }> = []
  for (const i of formatter(issue).issues) {
    const entry = { path: pathText(i.path ?? []) || "(root)", rule: i.message }
    const key = `${entry.path}\u0000${entry.rule}`
    if (!seen.has(key)) issues.push(entry)
    seen.add(key)
  }
  return new ServiceSpecError({ issues })
}

/**
 * Validates a spec given as data (from code, JSON or parsed YAML).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ServiceSpec } from "@berth/sdk-scheduler"
 *
 * ServiceSpec.decode({ name: "kv", pods: { kv: { count: 0, tasks: {} } } }).pipe(
 *   Effect.catchTag("ServiceSpecError", (e) => Effect.logError(e.message)) // pods.kv.count: must be ≥ 1
 * )
 * ```
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode = (input: unknown): Effect.Effect<ServiceSpec, ServiceSpecError> =>
  Effect.fromResult(decodeResult(input))

/** Like {@link decode}, as a `Result`. @since 0.1.0 @category decoding */
export const decodeResult = (input: unknown): Result.Result<ServiceSpec, ServiceSpecError> =>
  Result.mapError(Schema.decodeUnknownResult(ServiceSpec)(input, { errors: "all" }), (e) => toError(e.issue))

/** Like {@link decode}; throws the {@link ServiceSpecError}. @since 0.1.0 @category decoding */
export const decodeSync = (input: Encoded | unknown): ServiceSpec => {
  const result = decodeResult(input)
  if (Result.isFailure(result)) throw result.failure
  return result.success
}

/**
 * Parses YAML text and validates it. A YAML syntax error is reported with its line and column
 * under the path `(yaml)`.
 *
 * @since 0.1.0
 * @category decoding
 */
export const fromYamlResult = (text: string): Result.Result<ServiceSpec, ServiceSpecError> => {
  const doc = Yaml.parseDocument(text, { uniqueKeys: true })
  if (doc.errors.length > 0) {
    return Result.fail(
      new ServiceSpecError({
        issues: doc.errors.map((e) => ({
          path: "(yaml)",
          rule: `${e.linePos?.[0] ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}: ` : ""}${e.message.split("\n")[0]}`
        }))
      })
    )
  }
  return decodeResult(doc.toJS())
}

/** Like {@link fromYamlResult}, as an Effect. @since 0.1.0 @category decoding */
export const fromYaml = (text: string): Effect.Effect<ServiceSpec, ServiceSpecError> => Effect.fromResult(fromYamlResult(text))

/** Like {@link fromYamlResult}; throws the {@link ServiceSpecError}. @since 0.1.0 @category decoding */
export const fromYamlSync = (text: string): ServiceSpec => {
  const result = fromYamlResult(text)
  if (Result.isFailure(result)) throw result.failure
  return result.success
}

// ---------------------------------------------------------------------------------------------
// Config updates

/**
 * Why a change from the running spec to a new one is refused, as `{ path, rule }` issues (empty
 * when the update is acceptable). Rules: the service name and role cannot change (reservations
 * are made for the role); a pod's volumes cannot change; a pod's count cannot shrink, and a pod
 * cannot be removed, unless the *new* spec (or, for a removed pod, the old one) sets
 * `allowDecommission`.
 *
 * @example
 * ```ts
 * import { ServiceSpec } from "@berth/sdk-scheduler"
 *
 * ServiceSpec.validateUpdate(running, next)
 * // [{ path: "pods.kv.volumes", rule: "cannot change once deployed (was data:64MB, now data:128MB)" }]
 * ```
 *
 * @since 0.1.0
 * @category updates
 */
export const validateUpdate = (
  previous: ServiceSpec,
  next: ServiceSpec
): Array<{ readonly path: string; readonly rule: string }> => {
  const issues: Array<{ path: string; rule: string }> = []
  if (previous.name !== next.name) issues.push({ path: "name", rule: `cannot change (was "${previous.name}")` })
  if (roleOf(previous) !== roleOf(next)) {
    issues.push({ path: "role", rule: `cannot change: reservations are held for "${roleOf(previous)}"` })
  }
  for (const [podName, before] of Object.entries(previous.pods)) {
    const after = next.pods[podName]
    if (after === undefined) {
      if (before.allowDecommission !== true) {
        issues.push({ path: `pods.${podName}`, rule: "cannot be removed unless the pod sets allowDecommission: true" })
      }
      continue
    }
    const volumes = (v: PodSpec) => (v.volumes ?? []).map((x) => `${x.path}:${x.size}MB`).sort().join(",") || "none"
    if (volumes(before) !== volumes(after)) {
      issues.push({ path: `pods.${podName}.volumes`, rule: `cannot change once deployed (was ${volumes(before)}, now ${volumes(after)})` })
    }
    if (after.count < before.count && after.allowDecommission !== true) {
      issues.push({
        path: `pods.${podName}.count`,
        rule: `cannot shrink from ${before.count} to ${after.count} unless allowDecommission: true`
      })
    }
  }
  return issues
}

/**
 * {@link validateUpdate} as an Effect that fails with a {@link ServiceSpecError}.
 *
 * @since 0.1.0
 * @category updates
 */
export const checkUpdate = (previous: ServiceSpec, next: ServiceSpec): Effect.Effect<ServiceSpec, ServiceSpecError> => {
  const issues = validateUpdate(previous, next)
  return issues.length === 0 ? Effect.succeed(next) : Effect.fail(new ServiceSpecError({ issues }))
}

// ---------------------------------------------------------------------------------------------
// Derived facts

/** The role reservations are made for. @since 0.1.0 @category derived */
export const roleOf = (spec: ServiceSpec): string => spec.role ?? `${spec.name}-role`

/** The principal reservations and volumes are made by ("" when the spec names none). @since 0.1.0 @category derived */
export const principalOf = (spec: ServiceSpec): string => spec.principal ?? ""

/**
 * The pod instances of a spec, in deploy order (`<pod>-<index>`, pods in declaration order).
 *
 * @since 0.1.0
 * @category derived
 */
export const instances = (spec: ServiceSpec): Array<string> =>
  Object.entries(spec.pods).flatMap(([pod, p]) => Array.from({ length: p.count }, (_, i) => instanceName(pod, i)))

/** `kv`, 2 → `kv-2`. @since 0.1.0 @category derived */
export const instanceName = (pod: string, index: number): string => `${pod}-${index}`

/** `kv-2` → `{ pod: "kv", index: 2 }`. @since 0.1.0 @category derived */
export const parseInstance = (instance: string): { readonly pod: string; readonly index: number } | undefined => {
  const m = /^(.*)-(\d+)$/.exec(instance)
  return m === null ? undefined : { pod: m[1]!, index: Number(m[2]) }
}

/** The resources one task takes (its resource set, or its inline values). @since 0.1.0 @category derived */
export const taskResources = (pod: PodSpec, task: TaskSpec): ResourceSet => {
  const set = task.resourceSet === undefined ? undefined : pod.resourceSets?.[task.resourceSet]
  if (set !== undefined) return set
  return {
    cpus: task.cpus ?? 0,
    mem: task.mem ?? 0,
    ...(task.disk === undefined ? {} : { disk: task.disk }),
    ...(task.gpus === undefined ? {} : { gpus: task.gpus }),
    ...(task.ports === undefined ? {} : { ports: task.ports })
  }
}

/**
 * Everything one instance of a pod reserves (the sum over its tasks, a resource set counted
 * once), with its volumes, as a placement {@link Requirement.Requirement}. `existing` asks for
 * the instance's current reservation and volumes (restart in place) instead of new ones.
 *
 * @since 0.1.0
 * @category derived
 */
export const requirement = (
  spec: ServiceSpec,
  pod: string,
  index: number,
  options: {
    readonly existing?: boolean | undefined
    readonly tasks?: ReadonlyArray<string> | undefined
    /** Bumped by every replace, so the new reservation and volumes never match the old ones. Default 0. */
    readonly generation?: number | undefined
    /** The requirement id (and task id prefix). Default: the instance name. */
    readonly id?: string | undefined
    /**
     * Launch only these tasks' resources; the rest of what the listed `tasks` (default: all)
     * take is reserved with them but left unused (`reservation.extra`), for tasks that come later.
     */
    readonly launchTasks?: ReadonlyArray<string> | undefined
  } = {}
): Requirement.Requirement => {
  const p = spec.pods[pod]!
  const id = instanceName(pod, index)
  const sum = (only: ReadonlyArray<string> | undefined) => {
    let cpus = 0, mem = 0, disk = 0, gpus = 0
    const ports: Array<string> = []
    const sets = new Set<string>()
    for (const [taskName, task] of Object.entries(p.tasks)) {
      if (only !== undefined && !only.includes(taskName)) continue
      if (task.resourceSet !== undefined) {
        if (sets.has(task.resourceSet)) continue
        sets.add(task.resourceSet)
      }
      const r = taskResources(p, task)
      cpus += r.cpus
      mem += r.mem
      disk += r.disk ?? 0
      gpus += r.gpus ?? 0
      for (const port of r.ports ?? []) if (!ports.includes(port)) ports.push(port)
    }
    return { cpus, mem, disk, gpus, ports }
  }
  const all = sum(options.tasks)
  const launched = options.launchTasks === undefined ? all : sum(options.launchTasks)
  const { cpus, mem, disk, gpus } = launched
  // Every port is taken by the launch: a later task finds its ports in its group's environment.
  const ports = all.ports
  const extra = {
    cpus: round(Math.max(0, all.cpus - launched.cpus)),
    mem: round(Math.max(0, all.mem - launched.mem)),
    disk: round(Math.max(0, all.disk - launched.disk)),
    gpus: Math.max(0, all.gpus - launched.gpus)
  }
  const hasExtra = extra.cpus > 0 || extra.mem > 0 || extra.disk > 0 || extra.gpus > 0
  const existing = options.existing === true
  const generation = options.generation ?? 0
  const volumes = (p.volumes ?? []).map((v) =>
    existing
      ? { persistenceId: volumeId(spec, id, v.path, generation), containerPath: v.path, existing: true as const }
      : { persistenceId: volumeId(spec, id, v.path, generation), containerPath: v.path, size: v.size }
  )
  return Requirement.decodeSync({
    id: options.id ?? id,
    group: pod,
    role: roleOf(spec),
    resources: {
      cpus: round(cpus),
      mem: round(mem),
      ...(disk > 0 ? { disk: round(disk) } : {}),
      ...(gpus > 0 ? { gpus } : {}),
      ...(ports.length > 0 ? { ports } : {})
    },
    reservation: {
      labels: reservationLabels(spec, id, generation),
      ...(existing ? { existing: true } : {}),
      ...(hasExtra ? { extra: Object.fromEntries(Object.entries(extra).filter(([, v]) => v > 0)) } : {})
    },
    ...(volumes.length > 0 ? { volumes } : {}),
    ...(p.placement === undefined ? {} : { constraints: p.placement.map((c) => ({ ...c })) }),
    ...(p.preferences === undefined ? {} : { preferences: p.preferences })
  })
}

const round = (n: number) => Math.round(n * 1000) / 1000

/**
 * The labels on an instance's reservation: the service, the instance and its generation (bumped
 * by every replace).
 *
 * @since 0.1.0
 * @category derived
 */
export const reservationLabels = (spec: ServiceSpec, instance: string, generation = 0): Record<string, string> => ({
  "berth.service": spec.name,
  "berth.instance": instance,
  "berth.generation": String(generation)
})

/**
 * The persistence id of an instance's volume: `<service>.<instance>.<path>` (path separators as
 * `_`), with `.g<generation>` after the instance once it was replaced.
 *
 * @since 0.1.0
 * @category derived
 */
export const volumeId = (spec: ServiceSpec, instance: string, path: string, generation = 0): string =>
  `${spec.name}.${instance}${generation > 0 ? `.g${generation}` : ""}.${path.replace(/[^A-Za-z0-9_.-]/g, "_")}`

/**
 * A stable fingerprint (16 hex digits) of what one pod's instances run (tasks, resources, placement, env, ...),
 * ignoring `count`, `allowDecommission` and `strategy`: instances launched from a config with another
 * fingerprint must be rolled.
 *
 * @since 0.1.0
 * @category derived
 */
export const podFingerprint = (spec: ServiceSpec, pod: string): string => {
  const { count: _count, allowDecommission: _allow, strategy: _strategy, ...rest } = spec.pods[pod]!
  const text = stableJson({ ...rest, service: spec.name, role: roleOf(spec), user: spec.user ?? null })
  return createHash("sha256").update(text).digest("hex").slice(0, 16)
}

const stableJson = (value: unknown): string =>
  JSON.stringify(value, (_key, v) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]]))
      : v)

/**
 * Renders `{{NAME}}` placeholders from `env` (unknown names render empty).
 *
 * @since 0.1.0
 * @category derived
 */
export const render = (template: string, env: Readonly<Record<string, string>>): string =>
  template.replace(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g, (_m, key: string) => env[key] ?? "")
