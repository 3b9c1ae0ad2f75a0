/**
 * What a Docker task means, without touching the engine: the rules its ContainerInfo must keep
 * (shared by the master's Accept validation and the executor) and the container it asks for.
 */
import * as path from "node:path"
import { Resources, v1 } from "@berth/proto"

const { ContainerInfo_DockerInfo_Network: Network, Volume_Mode: Mode } = v1

/**
 * A broken rule: `field` is a path below the ContainerInfo (or the TaskInfo, for `command.*`,
 * `healthCheck`, `check`). `unsupported` marks a request that is well formed but that this
 * containerizer does not do, as opposed to an invalid one; its `rule` then names the feature.
 */
export interface Problem {
  readonly field: string
  readonly rule: string
  readonly unsupported?: boolean
}

/** The labels every container Berth creates carries; task labels cannot use the `berth.` prefix. */
export const labelKeys = {
  taskId: "berth.task-id",
  frameworkId: "berth.framework-id",
  executorId: "berth.executor-id",
  agentId: "berth.agent-id"
} as const

export const reservedLabelPrefix = "berth."

/** Where the task's sandbox is mounted in its container, and the container's working directory. */
export const defaultSandboxPath = "/mnt/sandbox"

// Docker's reference grammar (distribution/reference), without the pieces no engine accepts.
const COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
const IMAGE = new RegExp(
  `^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?/)?${COMPONENT}(?:/${COMPONENT})*` +
    "(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
const IMAGE_ID = /^(?:sha256:)?[a-f0-9]{12,64}$/
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9_.\/-]{0,254}$/

/** The rlimits Docker can set, by the names Mesos uses. */
const RLIMITS: Record<string, string> = {
  RLIMIT_AS: "as",
  RLIMIT_CORE: "core",
  RLIMIT_CPU: "cpu",
  RLIMIT_DATA: "data",
  RLIMIT_FSIZE: "fsize",
  RLIMIT_LOCKS: "locks",
  RLIMIT_MEMLOCK: "memlock",
  RLIMIT_MSGQUEUE: "msgqueue",
  RLIMIT_NICE: "nice",
  RLIMIT_NOFILE: "nofile",
  RLIMIT_NPROC: "nproc",
  RLIMIT_RSS: "rss",
  RLIMIT_RTPRIO: "rtprio",
  RLIMIT_RTTIME: "rttime",
  RLIMIT_SIGPENDING: "sigpending",
  RLIMIT_STACK: "stack"
}

const hasDotDot = (p: string): boolean => p.split("/").includes("..")

/** The network a DockerInfo asks for; unspecified means BRIDGE (see docs/docker.md). */
export const networkOf = (docker: v1.ContainerInfo_DockerInfo): v1.ContainerInfo_DockerInfo_Network =>
  docker.network === Network.UNSPECIFIED ? Network.BRIDGE : docker.network

/** The first rule `container` (of type DOCKER) breaks; fields are relative to the ContainerInfo. */
export const containerProblem = (
  container: v1.ContainerInfo,
  sandboxPath: string = defaultSandboxPath
): Problem | undefined => {
  const docker = container.docker
  if (docker === undefined) return { field: "docker", rule: "is required when type is DOCKER" }
  if (docker.image.trim() === "") {
    return { field: "docker.image", rule: "is required: the name of an image present on the agents' Docker engine" }
  }
  if (!IMAGE.test(docker.image) && !IMAGE_ID.test(docker.image)) {
    return { field: "docker.image", rule: "must be a Docker image reference such as \"name:tag\" or \"host:5000/name@sha256:<hex>\"" }
  }
  if (docker.forcePullImage) {
    return {
      field: "docker.forcePullImage",
      rule: "pulling Docker images (agents never pull: build, import or load the image into each " +
        "agent's Docker engine and leave forcePullImage false)",
      unsupported: true
    }
  }
  const network = networkOf(docker)
  if (![Network.HOST, Network.BRIDGE, Network.NONE, Network.USER].includes(network as 1 | 2 | 3 | 4)) {
    return { field: "docker.network", rule: "must be HOST, BRIDGE, NONE or USER" }
  }
  if (network === Network.USER) {
    if (!NETWORK_NAME.test(docker.networkName)) {
      return { field: "docker.networkName", rule: `is required with the USER network and must match ${NETWORK_NAME.source}` }
    }
    if (["host", "bridge", "none", "default"].includes(docker.networkName)) {
      return { field: "docker.networkName", rule: "must name a user-defined network, not host, bridge, none or default" }
    }
  } else if (docker.networkName !== "") {
    return { field: "docker.networkName", rule: "must be empty unless network is USER" }
  }
  if (docker.portMappings.length > 0 && network !== Network.BRIDGE && network !== Network.USER) {
    return {
      field: "docker.portMappings",
      rule: "need the BRIDGE or USER network (HOST shares the agent's ports, NONE has no network)"
    }
  }
  const mapped = new Set<string>()
  for (const [i, mapping] of docker.portMappings.entries()) {
    const at = `docker.portMappings[${i}]`
    if (!(mapping.hostPort >= 1 && mapping.hostPort <= 65535)) return { field: `${at}.hostPort`, rule: "must be in 1..65535" }
    if (!(mapping.containerPort >= 1 && mapping.containerPort <= 65535)) {
      return { field: `${at}.containerPort`, rule: "must be in 1..65535" }
    }
    if (mapping.protocol !== "" && mapping.protocol !== "tcp" && mapping.protocol !== "udp") {
      return { field: `${at}.protocol`, rule: "must be \"tcp\" (the default) or \"udp\"" }
    }
    const key = `${mapping.hostPort}/${mapping.protocol || "tcp"}`
    if (mapped.has(key)) return { field: `${at}.hostPort`, rule: `${key} is mapped twice` }
    mapped.add(key)
  }
  const labelSeen = new Set<string>()
  for (const [i, label] of (docker.labels?.labels ?? []).entries()) {
    const at = `docker.labels.labels[${i}].key`
    if (!LABEL_KEY.test(label.key)) return { field: at, rule: `must match ${LABEL_KEY.source}` }
    if (label.key.startsWith(reservedLabelPrefix)) {
      return { field: at, rule: `must not start with "${reservedLabelPrefix}" (reserved for the labels Berth sets)` }
    }
    if (labelSeen.has(label.key)) return { field: at, rule: `"${label.key}" appears twice` }
    labelSeen.add(label.key)
  }
  const containerPaths = new Set<string>([sandboxPath])
  for (const [i, volume] of container.volumes.entries()) {
    const at = `volumes[${i}]`
    const target = volume.containerPath
    if (!path.posix.isAbsolute(target)) return { field: `${at}.containerPath`, rule: "must be an absolute path in the container" }
    if (hasDotDot(target)) return { field: `${at}.containerPath`, rule: "must not contain \"..\"" }
    const normalized = path.posix.normalize(target).replace(/(.)\/$/, "$1")
    if (normalized === "/") return { field: `${at}.containerPath`, rule: "must not be the container's root" }
    if (containerPaths.has(normalized)) {
      return {
        field: `${at}.containerPath`,
        rule: normalized === sandboxPath ? `must not be ${sandboxPath}, where the sandbox is mounted` : "is mounted twice"
      }
    }
    containerPaths.add(normalized)
    if (volume.hostPath === "") {
      return {
        field: `${at}.hostPath`,
        rule: "is required for Docker volumes: an absolute path on the agent, or a path relative to the sandbox"
      }
    }
    if (hasDotDot(volume.hostPath)) return { field: `${at}.hostPath`, rule: "must not contain \"..\"" }
    if (volume.mode !== Mode.UNSPECIFIED && volume.mode !== Mode.RW && volume.mode !== Mode.RO) {
      return { field: `${at}.mode`, rule: "must be RW or RO" }
    }
  }
  if (container.hostname !== "") {
    if (!HOSTNAME.test(container.hostname)) return { field: "hostname", rule: "must be a valid host name (RFC 1123)" }
    if (network === Network.HOST) return { field: "hostname", rule: "cannot be set with the HOST network" }
  }
  for (const [i, rlimit] of container.rlimits.entries()) {
    const at = `rlimits[${i}]`
    if (RLIMITS[rlimit.type] === undefined) {
      return { field: `${at}.type`, rule: `must be one of ${Object.keys(RLIMITS).join(", ")}` }
    }
    if (rlimit.soft !== undefined && rlimit.hard !== undefined && rlimit.soft > rlimit.hard) {
      return { field: `${at}.soft`, rule: "must be <= hard" }
    }
  }
  return undefined
}

/**
 * The first rule a Docker task breaks, with fields relative to the TaskInfo. `container` is
 * assumed to be of type DOCKER.
 */
export const taskProblem = (info: v1.TaskInfo, sandboxPath: string = defaultSandboxPath): Problem | undefined => {
  const command = info.command
  if (command === undefined) {
    return { field: "command", rule: "is required (a shell command, an argv, or an empty argv for the image's default)" }
  }
  if (command.shell && command.value.trim() === "") return { field: "command.value", rule: "must be a non-empty shell command" }
  for (const [i, variable] of command.environment.entries()) {
    if (!ENV_NAME.test(variable.name)) {
      return { field: `command.environment[${i}].name`, rule: "must be a valid environment variable name" }
    }
  }
  if (command.uris.length > 0) {
    return { field: "command.uris", rule: "fetching artifacts for Docker containers", unsupported: true }
  }
  if (command.user !== "") {
    return { field: "command.user", rule: "running Docker containers as another user", unsupported: true }
  }
  if (info.healthCheck !== undefined) {
    return { field: "healthCheck", rule: "health checks of Docker containers", unsupported: true }
  }
  if (info.check !== undefined) {
    return { field: "check", rule: "readiness checks of Docker containers", unsupported: true }
  }
  const problem = containerProblem(info.container!, sandboxPath)
  return problem === undefined ? undefined : { ...problem, field: `container.${problem.field}` }
}

/** A volume resolved against the sandbox: where it comes from on the agent and where it goes. */
export interface Mount {
  readonly source: string
  readonly target: string
  readonly readOnly: boolean
  /** Relative host paths live in the sandbox and are created if missing; absolute ones must exist. */
  readonly inSandbox: boolean
}

export const mountsOf = (container: v1.ContainerInfo, sandbox: string, sandboxPath: string): Array<Mount> => [
  { source: sandbox, target: sandboxPath, readOnly: false, inSandbox: true },
  ...container.volumes.map((volume) => {
    const inSandbox = !path.isAbsolute(volume.hostPath)
    return {
      source: inSandbox ? path.join(sandbox, volume.hostPath) : path.normalize(volume.hostPath),
      target: path.posix.normalize(volume.containerPath),
      readOnly: volume.mode === Mode.RO,
      inSandbox
    }
  })
]

/** What the executor needs to build a container for a task, besides the task itself. */
export interface SpecContext {
  readonly name: string
  readonly sandboxPath: string
  readonly env: Record<string, string>
  readonly labels: Record<string, string>
  readonly mounts: ReadonlyArray<Mount>
  readonly portBindHost: string
  readonly init: boolean
}

/** The message a status or an error gives for `problem`. */
export const describeProblem = (problem: Problem): string =>
  problem.unsupported === true ? `${problem.field}: ${problem.rule} is not supported yet` : `${problem.field}: ${problem.rule}`

/** Docker's minimum memory limit. */
const MIN_MEMORY_BYTES = 6 * 1024 * 1024

/** The body of the engine's "create container" call for `info` (a validated Docker task). */
export const createBody = (info: v1.TaskInfo, context: SpecContext) => {
  const container = info.container!
  const docker = container.docker!
  const command = info.command!
  const network = networkOf(docker)
  const exposed: Record<string, {}> = {}
  const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {}
  for (const mapping of docker.portMappings) {
    const key = `${mapping.containerPort}/${mapping.protocol || "tcp"}`
    exposed[key] = {}
    const list = bindings[key] ?? (bindings[key] = [])
    list.push({ HostIp: context.portBindHost, HostPort: String(mapping.hostPort) })
  }
  // shell: `/bin/sh -c value`, replacing the image's entrypoint. argv: `value` replaces the
  // entrypoint and arguments[1..] follow (arguments[0] is argv[0], which Docker cannot set). An
  // empty argv value keeps the image's entrypoint and passes all of `arguments` as its command.
  const process = command.shell
    ? { Entrypoint: ["/bin/sh", "-c"], Cmd: [command.value] }
    : command.value !== ""
    ? { Entrypoint: [command.value], Cmd: command.arguments.slice(1) }
    : command.arguments.length > 0
    ? { Cmd: [...command.arguments] }
    : {}
  const labels: Record<string, string> = {}
  for (const label of docker.labels?.labels ?? []) labels[label.key] = label.value
  const memMb = Resources.sumScalar(info.resources, "mem")
  const cpus = Resources.sumScalar(info.resources, "cpus")
  const memory = memMb > 0 ? Math.max(MIN_MEMORY_BYTES, Math.round(memMb * 1024 * 1024)) : undefined
  return {
    name: context.name,
    Image: docker.image,
    ...process,
    Env: Object.entries(context.env).map(([name, value]) => `${name}=${value}`),
    WorkingDir: context.sandboxPath,
    Labels: { ...labels, ...context.labels },
    ...(container.hostname === "" ? {} : { Hostname: container.hostname }),
    AttachStdin: false,
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    OpenStdin: false,
    ExposedPorts: exposed,
    HostConfig: {
      NetworkMode: network === Network.HOST
        ? "host"
        : network === Network.NONE
        ? "none"
        : network === Network.USER
        ? docker.networkName
        : "bridge",
      PortBindings: bindings,
      Mounts: context.mounts.map((mount) => ({
        Type: "bind" as const,
        Source: mount.source,
        Target: mount.target,
        ReadOnly: mount.readOnly
      })),
      // An init process as PID 1 forwards SIGTERM to the command and reaps its zombies; a shell
      // as PID 1 would ignore SIGTERM and always wait out the grace period.
      Init: context.init,
      ...(memory === undefined ? {} : { Memory: memory, MemorySwap: memory }),
      ...(cpus > 0 ? { CpuShares: Math.max(2, Math.round(cpus * 1024)) } : {}),
      Ulimits: container.rlimits.map((rlimit) => ({
        Name: RLIMITS[rlimit.type]!,
        // Absent means unlimited; -1 is RLIM_INFINITY to the engine.
        Soft: rlimit.soft === undefined ? -1 : Number(rlimit.soft),
        Hard: rlimit.hard === undefined ? -1 : Number(rlimit.hard)
      })),
      LogConfig: { Type: "json-file", Config: { "max-size": "10m", "max-file": "2" } },
      RestartPolicy: { Name: "no" },
      AutoRemove: false
    }
  }
}

/** A name the engine accepts (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`) that says which task it runs. */
export const containerName = (taskId: string, suffix: string): string =>
  `berth-${taskId.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 100)}-${suffix}`
