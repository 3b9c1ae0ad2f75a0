import { Resources, v1 } from "@berth/proto"
import { DockerExecutor } from "@berth/sdk-executor"
import { InvalidArgument, Unimplemented } from "../../ClusterError.ts"

/** Task, framework and role ids: printable, no path separators (they name sandbox directories). */
const ID = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}$/
const ROLE = /^(\*|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$/

const invalid = (field: string, rule: string) => new InvalidArgument({ field, rule })

/** Checks a FrameworkInfo as it arrives with Subscribe. */
export const frameworkInfo = (info: v1.FrameworkInfo | undefined): InvalidArgument | undefined => {
  if (info === undefined) return invalid("frameworkInfo", "is required")
  if (info.name.trim() === "") return invalid("frameworkInfo.name", "must not be empty")
  if (info.frameworkId !== "" && !ID.test(info.frameworkId)) {
    return invalid("frameworkInfo.frameworkId", `must match ${ID.source}`)
  }
  for (const [i, role] of info.roles.entries()) {
    if (!ROLE.test(role)) return invalid(`frameworkInfo.roles[${i}]`, `must be "*" or match ${ROLE.source}`)
  }
  if (!Number.isFinite(info.failoverTimeoutSeconds) || info.failoverTimeoutSeconds < 0) {
    return invalid("frameworkInfo.failoverTimeoutSeconds", "must be a finite number >= 0")
  }
  return undefined
}

const resources = (field: string, list: ReadonlyArray<v1.Resource>): InvalidArgument | undefined => {
  let cpus = 0
  for (const [i, resource] of list.entries()) {
    const at = `${field}[${i}]`
    if (resource.name === "") return invalid(`${at}.name`, "must not be empty")
    const value = resource.value
    if (value === undefined) return invalid(`${at}.value`, "must be set (scalar, ranges or set)")
    if (value.$case === "scalar") {
      if (!Number.isFinite(value.value)) return invalid(`${at}.scalar`, "must be a finite number")
      if (value.value < 0) return invalid(`${at}.scalar`, `${resource.name} must be >= 0`)
      if (resource.name === "cpus") cpus += value.value
    }
    if (value.$case === "ranges") {
      for (const [j, range] of value.value.range.entries()) {
        if (range.begin > range.end) return invalid(`${at}.ranges.range[${j}]`, "begin must be <= end")
      }
    }
  }
  if (!(cpus > 0)) return invalid(`${field}`, "cpus must be > 0")
  return undefined
}

const command = (field: string, cmd: v1.CommandInfo | undefined): InvalidArgument | undefined => {
  if (cmd === undefined) return invalid(field, "is required (a shell command or an argv)")
  if (cmd.value.trim() === "") {
    return invalid(`${field}.value`, cmd.shell ? "must be a non-empty shell command" : "must name the executable to run")
  }
  for (const [i, variable] of cmd.environment.entries()) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(variable.name)) {
      return invalid(`${field}.environment[${i}].name`, "must be a valid environment variable name")
    }
  }
  return undefined
}

/**
 * A Docker task: the container's and command's rules (shared with the Docker executor), and host
 * ports taken from the task's own `ports` resources, so two tasks never publish the same port.
 */
const docker = (field: string, info: v1.TaskInfo): InvalidArgument | Unimplemented | undefined => {
  const problem = DockerExecutor.taskProblem(info)
  if (problem !== undefined) {
    const at = `${field}.${problem.field}`
    return problem.unsupported === true ? new Unimplemented({ field: at, feature: problem.rule }) : invalid(at, problem.rule)
  }
  const ports = Resources.rangesOf(info.resources, "ports")
  for (const [i, mapping] of info.container!.docker!.portMappings.entries()) {
    if (!ports.some((range) => range.begin <= mapping.hostPort && mapping.hostPort <= range.end)) {
      const held = ports.length === 0 ? "none" : ports.map((r) => r.begin === r.end ? `${r.begin}` : `${r.begin}-${r.end}`).join(",")
      return invalid(
        `${field}.container.docker.portMappings[${i}].hostPort`,
        `${mapping.hostPort} must be among the task's ports resources (${held})`
      )
    }
  }
  return undefined
}

/**
 * Checks one task of a LAUNCH against the rules the master enforces before anything is
 * launched. Returns the first broken rule.
 */
export const task = (
  field: string,
  info: v1.TaskInfo,
  agentId: string
): InvalidArgument | Unimplemented | undefined => {
  if (!ID.test(info.taskId)) return invalid(`${field}.taskId`, `must match ${ID.source}`)
  if (info.agentId !== "" && info.agentId !== agentId) {
    return invalid(`${field}.agentId`, `must be empty or the offers' agent ${agentId}`)
  }
  if (info.executor !== undefined) {
    if (info.command !== undefined) return invalid(`${field}.command`, "must be unset when executor is set: the custom executor runs the task")
    if (info.container !== undefined) return invalid(`${field}.container`, "must be unset when executor is set: the executor's container applies")
    return (
      customExecutor(`${field}.executor`, info.executor) ??
      resources(`${field}.resources`, info.resources) ??
      (info.killPolicy !== undefined && !(info.killPolicy.gracePeriodSeconds >= 0)
        ? invalid(`${field}.killPolicy.gracePeriodSeconds`, "must be >= 0")
        : undefined)
    )
  }
  return (
    (info.container?.type === v1.ContainerInfo_Type.DOCKER
      ? docker(field, info)
      : command(`${field}.command`, info.command)) ??
    resources(`${field}.resources`, info.resources) ??
    (info.killPolicy !== undefined && !(info.killPolicy.gracePeriodSeconds >= 0)
      ? invalid(`${field}.killPolicy.gracePeriodSeconds`, "must be >= 0")
      : undefined)
  )
}

/**
 * Checks the ExecutorInfo of a task run by a custom executor: a framework's own program (written
 * with `@berth/sdk-executor`) that the agent starts in the executor's sandbox.
 */
export const customExecutor = (field: string, info: v1.ExecutorInfo): InvalidArgument | Unimplemented | undefined => {
  if (info.type !== v1.ExecutorInfo_Type.CUSTOM) {
    return invalid(`${field}.type`, "must be TYPE_CUSTOM for a task's own executor (task groups use LAUNCH_GROUP with TYPE_DEFAULT)")
  }
  if (!ID.test(info.executorId)) return invalid(`${field}.executorId`, `must match ${ID.source}`)
  if (info.command === undefined) return invalid(`${field}.command`, "is required: the program the agent starts")
  if (info.container !== undefined && info.container.type === v1.ContainerInfo_Type.DOCKER) {
    return new Unimplemented({ field: `${field}.container`, feature: "Docker containers for custom executors" })
  }
  return command(`${field}.command`, info.command) ?? resources(`${field}.resources`, info.resources)
}

/**
 * Checks the ExecutorInfo of a LAUNCH_GROUP: the built-in default executor only (a custom one is
 * not served yet), a valid id, the framework's own id if any, no command of its own (the default
 * executor is built in), and sound resources that hold no persistent volume (a group's volumes
 * go on its tasks; every task of the group sees them in the shared sandbox).
 */
export const executor = (
  field: string,
  info: v1.ExecutorInfo | undefined,
  frameworkId: string
): InvalidArgument | Unimplemented | undefined => {
  if (info === undefined) return invalid(field, "is required (the group's executor, type TYPE_DEFAULT)")
  if (info.type === v1.ExecutorInfo_Type.CUSTOM) return new Unimplemented({ field: `${field}.type`, feature: "custom executors" })
  if (info.type !== v1.ExecutorInfo_Type.DEFAULT) return invalid(`${field}.type`, "must be TYPE_DEFAULT (the built-in default executor)")
  if (!ID.test(info.executorId)) return invalid(`${field}.executorId`, `must match ${ID.source}`)
  if (info.frameworkId !== "" && info.frameworkId !== frameworkId) {
    return invalid(`${field}.frameworkId`, `must be empty or the framework's id ${frameworkId}`)
  }
  if (info.command !== undefined) return invalid(`${field}.command`, "must be unset: the default executor is built into the agent")
  if (info.container !== undefined && info.container.type === v1.ContainerInfo_Type.DOCKER) {
    return new Unimplemented({ field: `${field}.container`, feature: "Docker containers for the default executor" })
  }
  for (const [i, resource] of info.resources.entries()) {
    const at = `${field}.resources[${i}]`
    if (resource.name === "") return invalid(`${at}.name`, "must not be empty")
    const value = resource.value
    if (value === undefined) return invalid(`${at}.value`, "must be set (scalar, ranges or set)")
    if (value.$case === "scalar" && !(Number.isFinite(value.value) && value.value >= 0)) {
      return invalid(`${at}.scalar`, "must be a finite number >= 0")
    }
    if (value.$case === "ranges" && value.value.range.some((range) => range.begin > range.end)) {
      return invalid(`${at}.ranges`, "begin must be <= end")
    }
    if (resource.disk?.persistence?.id) {
      return invalid(`${at}.disk.persistence`, "a task group's volumes go on its tasks (every task of the group sees them)")
    }
  }
  return undefined
}

/** The operations this master applies; the rest of the contract is declared but not served yet. */
export const operationKind = (
  field: string,
  operation: v1.Operation
): InvalidArgument | Unimplemented | v1.Operation_Launch => {
  const kind = operation.kind
  if (kind === undefined) return invalid(`${field}.kind`, "must be set (launch, launchGroup, reserve, ...)")
  if (kind.$case === "launch") {
    if (kind.value.taskInfos.length === 0) return invalid(`${field}.launch.taskInfos`, "must list at least one task")
    return kind.value
  }
  return new Unimplemented({ field: `${field}.${kind.$case}`, feature: kind.$case.toUpperCase() })
}

/** Rejects an Accept whose tasks need more than its offers hold. */
export const fits = (offered: ReadonlyArray<v1.Resource>, needed: ReadonlyArray<v1.Resource>): InvalidArgument | undefined =>
  Resources.contains(offered, needed)
    ? undefined
    : invalid(
      "operations",
      `the tasks need ${Resources.format(needed)} but the offers hold only ${Resources.format(offered)}`
    )

/** A role name as used by weights, quota and reservations. */
export const role = (field: string, name: string): InvalidArgument | undefined =>
  ROLE.test(name) ? undefined : invalid(field, `must be "*" or match ${ROLE.source}`)

/** Quota limits: scalar resources only, each finite and >= 0, each name once. */
export const quota = (field: string, limits: ReadonlyArray<v1.Resource>): InvalidArgument | undefined => {
  const seen = new Set<string>()
  for (const [i, r] of limits.entries()) {
    const at = `${field}[${i}]`
    if (r.name === "") return invalid(`${at}.name`, "must not be empty")
    if (r.value?.$case !== "scalar") return invalid(`${at}`, "quota covers scalar resources only (cpus, mem, disk, gpus, ...)")
    if (!Number.isFinite(r.value.value) || r.value.value < 0) return invalid(`${at}.scalar`, "must be a finite number >= 0")
    if (r.reservations.length > 0) return invalid(`${at}.reservations`, "must be empty: a quota limits a role, not a reservation")
    if (seen.has(r.name)) return invalid(`${at}.name`, `"${r.name}" is listed twice`)
    seen.add(r.name)
  }
  return undefined
}
