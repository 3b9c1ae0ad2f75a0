import * as grpc from "@grpc/grpc-js"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { Election, type StateStore } from "@berth/storage"
import { Cause, Clock, Effect, Exit, Option, Queue, Result, Schedule, Scope } from "effect"
import { randomUUID } from "node:crypto"
import {
  FrameworkRemoved,
  InvalidArgument,
  NotFound,
  NotLeader,
  type PermissionDenied,
  type RequestError,
  StaleSession,
  Unimplemented
} from "../../ClusterError.ts"
import * as Grpc from "../grpc.ts"
import * as Http from "../http.ts"
import * as Security from "../security.ts"
import * as Allocator from "./allocator.ts"
import * as Metrics from "./metrics.ts"
import * as Operations from "./operations.ts"
import * as Registry from "./registry.ts"
import * as Validate from "./validation.ts"

export interface MasterConfig {
  readonly host: string
  readonly port: number
  /** How often a full allocation round runs; freed resources also trigger one at once. */
  readonly allocationIntervalMs: number
  /** An unused offer is rescinded after this long (invariant 1: offers expire). */
  readonly offerTimeoutSeconds: number
  readonly frameworkHeartbeatSeconds: number
  /** Agents ping this often ... */
  readonly agentPingSeconds: number
  /** ... and are unreachable after this many missed pings (or this long disconnected). */
  readonly agentPingMisses: number
  /** Refusal applied by Decline (and to what an Accept leaves unused) when no filter is given. */
  readonly defaultRefuseSeconds: number
  /** Requests larger than this are refused (RESOURCE_EXHAUSTED) before they are decoded. */
  readonly maxMessageBytes: number
  /** Terminal tasks kept per framework for reconciliation and the operator API (oldest dropped first). */
  readonly maxCompletedTasksPerFramework: number
  /** Resources smaller than this (either cpus or mem) are not worth an offer. */
  readonly minimumAllocatable: Allocator.MinimumAllocatable
  /**
   * Masters sharing one store elect a leader through a lease on this key; standbys answer every
   * call with UNAVAILABLE and the leader's endpoint. A single master simply wins at once.
   */
  readonly leaderKey: string
  /** A leader that cannot renew its lease for this long loses leadership; a standby takes over. */
  readonly leaderLeaseSeconds: number
  /** Serves Prometheus `/metrics` and `/health` over HTTP on this port (0: a free one; absent: off). */
  readonly httpPort?: number | undefined
  readonly version: string
  /** TLS on the gRPC port (PEM files); with `caFile`, mutual TLS: clients must present a certificate it signed. */
  readonly tls?: Security.ServerTls | undefined
  /** Principals with their kind and secret or token: a JSON file's path, or its parsed content. */
  readonly credentials?: string | Security.CredentialsFile | undefined
  /** Roles each framework principal may use, and the operator principals: a JSON file's path, or its content. */
  readonly acls?: string | Security.AclsFile | undefined
  /** Whose calls must authenticate; each defaults to on when `credentials` is given. */
  readonly authentication?: Partial<Security.Authentication> | undefined
  /** A token bucket per principal (or address) for Subscribe, and one for Revive. Off when absent. */
  readonly subscribeRate?: Security.Rate | undefined
}

export const defaults: MasterConfig = {
  host: "127.0.0.1",
  port: 5050,
  allocationIntervalMs: 1000,
  offerTimeoutSeconds: 60,
  frameworkHeartbeatSeconds: 15,
  agentPingSeconds: 5,
  agentPingMisses: 5,
  defaultRefuseSeconds: 5,
  minimumAllocatable: { cpus: 0.01, mem: 32 },
  maxMessageBytes: 16 * 1024 * 1024,
  maxCompletedTasksPerFramework: 1000,
  leaderKey: "berth/master/leader",
  leaderLeaseSeconds: 5,
  version: "0.1.0"
}

export interface MasterHandle {
  readonly endpoint: string
  /** "host:port" of the HTTP endpoint (metrics, health), when enabled. */
  readonly httpEndpoint: string | undefined
  readonly port: number
  readonly info: v1.MasterInfo
}

type AgentCall = grpc.ServerDuplexStream<v1.ConnectRequest, v1.ConnectResponse>

interface AgentConnection {
  readonly send: (message: v1.ConnectResponse) => void
  readonly close: () => void
}

type AgentState = "active" | "disconnected" | "unreachable"

interface AgentEntry {
  info: v1.AgentInfo
  connection: AgentConnection | undefined
  state: AgentState
  draining: boolean
  registeredAtMs: number
  lastSeenMs: number
}

interface Subscriber {
  readonly frameworkId: string
  readonly streamId: string
  readonly send: (event: v1.SubscribeResponse) => void
  readonly close: () => void
}

interface FrameworkEntry {
  info: v1.FrameworkInfo
  subscriber: Subscriber | undefined
  /** Set while the scheduler is away: the framework is torn down at this time. */
  failoverDeadlineMs: number | undefined
}

/**
 * One task, kept compact: a master holds 100,000 of them (docs/performance.md, "Master at scale").
 * The TaskInfo (less its resources) and the latest status are kept protobuf-encoded in one-byte
 * strings and decoded only when asked for; ids are shared strings, and equal resource lists are
 * one shared (never mutated) array. Build with `makeTask`, store with `putTask` / `dropTask`.
 */
interface TaskEntry {
  readonly frameworkId: string
  readonly agentId: string
  /** The role the task's resources were allocated to. */
  readonly role: string
  readonly taskId: string
  /** The task's executor (a task group's), "" for a command task. */
  readonly executorId: string
  readonly resources: ReadonlyArray<v1.Resource>
  readonly killPolicy: v1.KillPolicy | undefined
  /** The TaskInfo without its resources, encoded (latin1): `taskInfo` decodes it. */
  readonly packedInfo: string
  state: v1.TaskState
  /** The latest status, encoded (latin1) without the task's own ids: `taskStatus` decodes it. */
  packedStatus: string | undefined
}

type Writer = ReturnType<typeof v1.TaskInfo.encode>
/** One writer for every record: a fresh writer per encode allocates (and grows) a buffer each time. */
const writer: Writer = v1.TaskInfo.encode(v1.TaskInfo.create())
writer.finish()
/** The writer's bytes as a one-byte string, and the writer reset. */
const packed = (w: Writer): string => {
  const bytes = w.finish()
  return bytes.length <= 4096 ? String.fromCharCode.apply(null, bytes as unknown as Array<number>) : Buffer.from(bytes).toString("latin1")
}
const fromLatin1 = (text: string) => Buffer.from(text, "latin1")
const emptyTaskInfo = v1.TaskInfo.create()

/**
 * A key for a list of unreserved, non-shared, disk-less scalars (what most tasks ask for), or
 * undefined for any other list. It starts with a byte no encoded list can start with (protobuf
 * field 4, wire type 2, is 0x22), so the two kinds of key never collide.
 */
const plainKey = (resources: ReadonlyArray<v1.Resource>): string | undefined => {
  let key = "\u0000"
  for (const r of resources) {
    if (r.value?.$case !== "scalar" || r.reservations.length > 0 || r.disk !== undefined || r.shared) return undefined
    // The separators below must not occur in what they separate.
    if (/[\u0001\u0002]/.test(r.name) || /[\u0001\u0002]/.test(r.allocationRole)) return undefined
    key += `${r.name}\u0001${r.value.value}\u0001${r.allocationRole}\u0002`
  }
  return key
}

const packStatus = (status: v1.TaskStatus | undefined, taskId: string, agentId: string): string | undefined =>
  status === undefined ? undefined : packed(v1.TaskStatus.encode({
    ...status,
    taskId: status.taskId === taskId ? "" : status.taskId,
    agentId: status.agentId === agentId ? "" : status.agentId
  }, writer))

const taskInfo = (task: TaskEntry): v1.TaskInfo => ({ ...v1.TaskInfo.decode(fromLatin1(task.packedInfo)), resources: [...task.resources] })

const taskStatus = (task: TaskEntry): v1.TaskStatus | undefined => {
  if (task.packedStatus === undefined) return undefined
  const status = v1.TaskStatus.decode(fromLatin1(task.packedStatus))
  return { ...status, taskId: status.taskId || task.taskId, agentId: status.agentId || task.agentId }
}

const roleOf = (resources: ReadonlyArray<v1.Resource>) => resources.find((r) => r.allocationRole !== "")?.allocationRole ?? "*"

/**
 * Deep equality of decoded protobuf values (a field left out equals one that is undefined). Used to
 * tell whether a returning agent's AgentInfo changed without encoding both sides.
 */
const sameValue = (a: unknown, b: unknown): boolean => {
  if (a === b) return true
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && Buffer.compare(a, b) === 0
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a)) {
    const other = b as Array<unknown>
    if (a.length !== other.length) return false
    for (let i = 0; i < a.length; i++) if (!sameValue(a[i], other[i])) return false
    return true
  }
  const x = a as Record<string, unknown>
  const y = b as Record<string, unknown>
  for (const key in x) if (!sameValue(x[key], y[key])) return false
  for (const key in y) if (!(key in x) && y[key] !== undefined) return false
  return true
}

/**
 * The master: agent registry, framework sessions, allocation, offers and task bookkeeping. All
 * state lives in maps mutated only inside synchronous sections, so the single JS thread
 * serialises them; the durable registry is written through `StateStore` before a registration is
 * answered.
 */
export const make = Effect.fn("Master.make")(function*(config: MasterConfig) {
  const scope = yield* Scope.Scope
  const clock = yield* Clock.Clock
  const context = yield* Effect.context<StateStore.StateStore>()
  const run = <A, E>(effect: Effect.Effect<A, E, StateStore.StateStore>) => Effect.runForkWith(context)(effect)
  // Bad TLS, credentials or ACL files stop the master before it touches anything.
  const security = yield* Security.make(config, "master", (call, peer, error) =>
    run(Effect.logWarning("call refused").pipe(Effect.annotateLogs({ call, peer, reason: error.message }))))
  const registry = yield* Registry.make
  let allocator = Allocator.make({ minimumAllocatable: config.minimumAllocatable })

  const agents = new Map<string, AgentEntry>()
  const frameworks = new Map<string, FrameworkEntry>()
  const tasks = new Map<string, TaskEntry>()
  const offers = new Map<string, v1.Offer>()
  /** The latest status of every operation with an id, by "frameworkId/operationId". */
  const operationStatuses = new Map<string, v1.OperationStatus>()
  const admittedAgents = new Map<string, v1.AgentInfo>()
  /** Torn-down framework ids: they may never subscribe again (and so never redeploy by accident). */
  const removedFrameworks = new Set<string>()
  const goneAgents = new Set<string>()
  /**
   * Custom executors running on each agent, by "frameworkId/executorId": what they were started
   * with and the role their own resources are charged to (given back when they exit).
   */
  const customExecutors = new Map<string, Map<string, { readonly frameworkId: string; readonly role: string; readonly info: v1.ExecutorInfo }>>()
  const executorsOn = (agentId: string) => {
    let map = customExecutors.get(agentId)
    if (map === undefined) customExecutors.set(agentId, map = new Map())
    return map
  }
  /** Gives back the resources of an agent's custom executors (all, or one framework's). */
  const releaseExecutors = (agentId: string, frameworkId?: string) => {
    const map = customExecutors.get(agentId)
    if (map === undefined) return
    for (const [key, executor] of map) {
      if (frameworkId !== undefined && executor.frameworkId !== frameworkId) continue
      allocator.recover(executor.frameworkId, agentId, executor.role, executor.info.resources)
      map.delete(key)
    }
  }
  /** Agents an operator is draining (maintenance): durable, so a restarted master keeps draining. */
  const drainingAgents = new Map<string, { readonly maxGracePeriodSeconds: number | undefined; readonly markGone: boolean }>()
  const unreachableAfterMs = config.agentPingSeconds * config.agentPingMisses * 1000

  const startTimeMs = yield* Clock.currentTimeMillis
  /** Only the leader acts; a standby (or a master that lost its lease) answers with the leader. */
  let leading = false

  /**
   * Loads the durable registry into fresh in-memory state: what a new leader does before it
   * serves (invariant 5). Task state then comes back with the re-registering agents.
   */
  const loadRegistry = Effect.gen(function*() {
    for (const map of [agents, frameworks, tasks, offers, operationStatuses, admittedAgents, drainingAgents, customExecutors]) map.clear()
    tasksByAgent.clear()
    offersByAgent.clear()
    removedFrameworks.clear()
    goneAgents.clear()
    allocator = Allocator.make({ minimumAllocatable: config.minimumAllocatable })
    const now = yield* Clock.currentTimeMillis
    const snapshot = yield* registry.load
    for (const id of snapshot.removedFrameworks) removedFrameworks.add(id)
    for (const id of snapshot.goneAgents) goneAgents.add(id)
    for (const d of snapshot.draining) drainingAgents.set(d.agentId, { maxGracePeriodSeconds: d.maxGracePeriodSeconds, markGone: d.markGone })
    for (const info of snapshot.agents) admittedAgents.set(info.agentId, info)
    for (const { role, weight } of snapshot.weights) allocator.setWeight(role, weight)
    for (const { role, limits } of snapshot.quotas) allocator.setQuota(role, limits)
    for (const record of snapshot.frameworks) {
      // A scheduler that was connected when the previous leader stopped gets its whole failover
      // timeout from now to come back.
      const deadline = record.failoverDeadlineMs ?? now + record.info.failoverTimeoutSeconds * 1000
      frameworks.set(record.info.frameworkId, { info: record.info, subscriber: undefined, failoverDeadlineMs: deadline })
      allocator.addFramework(record.info.frameworkId, record.info.roles)
      allocator.deactivateFramework(record.info.frameworkId)
    }
  })

  const masterInfo: v1.MasterInfo = {
    masterId: randomUUID(),
    endpoint: "",
    version: config.version,
    startTimeMs,
    leading: false
  }

  /** Operator event stream subscribers (WatchEvents). */
  const watchers = new Set<(event: v1.WatchEventsResponse) => void>()
  const emit = (event: NonNullable<v1.WatchEventsResponse["event"]>) => {
    for (const watcher of watchers) watcher({ event })
  }

  const metrics = Metrics.make({
    tasksByState: () => {
      const counts = new Map<v1.TaskState, number>()
      for (const task of tasks.values()) counts.set(task.state, (counts.get(task.state) ?? 0) + 1)
      return counts
    },
    agentsByState: () => {
      const counts = new Map<string, number>()
      for (const agent of agents.values()) {
        const state = agent.draining ? "draining" : agent.state
        counts.set(state, (counts.get(state) ?? 0) + 1)
      }
      return counts
    },
    frameworks: () => {
      let connected = 0
      for (const f of frameworks.values()) if (f.subscriber !== undefined) connected++
      return { connected, disconnected: frameworks.size - connected }
    },
    offersOutstanding: () => offers.size
  })

  const kicks = yield* Queue.sliding<void>(1)
  const kick = () => Queue.offerUnsafe(kicks, undefined)
  const taskKey = (frameworkId: string, taskId: string) => `${frameworkId}/${taskId}`

  /** Ids shared by many tasks are kept once. */
  const sharedStrings = new Map<string, string>()
  const intern = (text: string) => {
    const found = sharedStrings.get(text)
    if (found !== undefined) return found
    sharedStrings.set(text, text)
    return text
  }
  /** Equal resource lists, one array: most tasks of a framework ask for the same resources. */
  const resourceLists = new Map<string, ReadonlyArray<v1.Resource>>()
  const internResources = (resources: ReadonlyArray<v1.Resource>): ReadonlyArray<v1.Resource> => {
    // Most lists are a few plain scalars ("cpus 0.1, mem 32"): their key is built without encoding.
    const plain = plainKey(resources)
    if (plain !== undefined) {
      const found = resourceLists.get(plain)
      if (found !== undefined) return found
    }
    const key = packed(v1.TaskInfo.encode({ ...emptyTaskInfo, resources: [...resources] }, writer))
    const found = resourceLists.get(key)
    if (found !== undefined) {
      if (plain !== undefined) resourceLists.set(plain, found)
      return found
    }
    // Bounded: past this many distinct lists new ones are simply not shared with earlier ones.
    if (resourceLists.size >= 10_000) resourceLists.clear()
    // Decoded afresh, so nothing keeps a view into the received message alive.
    const own = v1.TaskInfo.decode(fromLatin1(key)).resources
    resourceLists.set(key, own)
    if (plain !== undefined) resourceLists.set(plain, own)
    return own
  }
  const makeTask = (
    frameworkId: string,
    agentId: string,
    role: string,
    info: v1.TaskInfo,
    state: v1.TaskState,
    status: v1.TaskStatus | undefined
  ): TaskEntry => ({
    frameworkId: intern(frameworkId),
    agentId: intern(agentId),
    role: intern(role),
    taskId: info.taskId,
    executorId: info.executor === undefined ? "" : intern(info.executor.executorId),
    resources: internResources(info.resources),
    killPolicy: info.killPolicy === undefined ? undefined : { ...info.killPolicy },
    packedInfo: packed(v1.TaskInfo.encode({ ...info, resources: [] }, writer)),
    state,
    packedStatus: packStatus(status, info.taskId, agentId)
  })
  const setStatus = (task: TaskEntry, status: v1.TaskStatus) => {
    task.state = status.state
    task.packedStatus = packStatus(status, task.taskId, task.agentId)
  }

  /** Tasks by agent: registration, unreachability, draining and the agent view look only at one agent's. */
  const tasksByAgent = new Map<string, Map<string, TaskEntry>>()
  const noTasks: ReadonlyMap<string, TaskEntry> = new Map()
  const tasksOn = (agentId: string): ReadonlyMap<string, TaskEntry> => tasksByAgent.get(agentId) ?? noTasks
  const putTask = (key: string, task: TaskEntry) => {
    const before = tasks.get(key)
    if (before !== undefined && before.agentId !== task.agentId) tasksByAgent.get(before.agentId)?.delete(key)
    tasks.set(key, task)
    let onAgent = tasksByAgent.get(task.agentId)
    if (onAgent === undefined) {
      onAgent = new Map()
      tasksByAgent.set(task.agentId, onAgent)
    }
    onAgent.set(key, task)
  }
  const dropTask = (key: string) => {
    const task = tasks.get(key)
    if (task === undefined) return
    tasks.delete(key)
    const onAgent = tasksByAgent.get(task.agentId)
    onAgent?.delete(key)
    if (onAgent?.size === 0) tasksByAgent.delete(task.agentId)
  }
  /** Outstanding offer ids by agent. */
  const offersByAgent = new Map<string, Set<string>>()

  const updateEvent = (statuses: Array<v1.TaskStatus>): v1.SubscribeResponse => ({
    event: { $case: "update", value: { statuses } }
  })

  const masterStatus = (
    task: { readonly taskId: string; readonly agentId: string },
    state: v1.TaskState,
    reason: v1.TaskStatus_Reason,
    message: string,
    now: number
  ): v1.TaskStatus => ({
    taskId: task.taskId,
    state,
    message,
    source: v1.TaskStatus_Source.MASTER,
    reason,
    data: new Uint8Array(),
    agentId: task.agentId,
    executorId: "",
    timestampMs: now,
    uuid: new Uint8Array(),
    unreachableTimeMs: 0
  })

  /** Sends master-generated updates, batched per framework. They carry no uuid: no acknowledgement. */
  const notify = (updates: ReadonlyArray<{ readonly frameworkId: string; readonly status: v1.TaskStatus }>) => {
    const byFramework = new Map<string, Array<v1.TaskStatus>>()
    for (const { frameworkId, status } of updates) {
      const list = byFramework.get(frameworkId)
      if (list === undefined) byFramework.set(frameworkId, [status])
      else list.push(status)
      if (watchers.size > 0 && status.reason !== v1.TaskStatus_Reason.RECONCILIATION && status.state !== v1.TaskState.UNKNOWN) {
        emit({ $case: "taskUpdated", value: { frameworkId, status, state: status.state } })
      }
    }
    for (const [frameworkId, statuses] of byFramework) frameworks.get(frameworkId)?.subscriber?.send(updateEvent(statuses))
  }

  /** Kills for agents that are not connected right now: sent when they register again. */
  const pendingKills = new Map<string, Map<string, v1.ConnectResponse_KillTask>>()
  const sendKills = (kills: ReadonlyArray<{ readonly agentId: string; readonly kill: v1.ConnectResponse_KillTask }>) => {
    const byAgent = new Map<string, Array<v1.ConnectResponse_KillTask>>()
    for (const { agentId, kill } of kills) {
      const list = byAgent.get(agentId)
      if (list === undefined) byAgent.set(agentId, [kill])
      else list.push(kill)
    }
    for (const [agentId, list] of byAgent) {
      const connection = agents.get(agentId)?.connection
      if (connection !== undefined) {
        connection.send({ message: { $case: "kill", value: { kills: list } } })
        continue
      }
      const pending = pendingKills.get(agentId) ?? new Map<string, v1.ConnectResponse_KillTask>()
      for (const kill of list) pending.set(taskKey(kill.frameworkId, kill.taskId), kill)
      pendingKills.set(agentId, pending)
    }
  }

  // ---------------------------------------------------------------- offers and allocation

  /** Removes an offer; its resources stay allocated to the framework (the caller decides). */
  const takeOffer = (offerId: string): v1.Offer | undefined => {
    const offer = offers.get(offerId)
    if (offer !== undefined) {
      offers.delete(offerId)
      const onAgent = offersByAgent.get(offer.agentId)
      onAgent?.delete(offerId)
      if (onAgent?.size === 0) offersByAgent.delete(offer.agentId)
    }
    return offer
  }

  /** Takes offers back, returns their resources to the pool, and tells their frameworks. */
  const rescind = (predicate: (offer: v1.Offer) => boolean) => rescindOffers([...offers.values()].filter(predicate))
  /** Rescinds one agent's offers (an index lookup: registrations of 10,000 agents must not scan every offer). */
  const rescindAgent = (agentId: string) =>
    rescindOffers([...(offersByAgent.get(agentId) ?? [])].flatMap((id) => offers.get(id) ?? []))
  const rescindOffers = (rescinded: ReadonlyArray<v1.Offer>) => {
    const byFramework = new Map<string, Array<string>>()
    for (const offer of rescinded) {
      takeOffer(offer.offerId)
      allocator.recover(offer.frameworkId, offer.agentId, offer.allocationRole, offer.resources)
      const list = byFramework.get(offer.frameworkId)
      if (list === undefined) byFramework.set(offer.frameworkId, [offer.offerId])
      else list.push(offer.offerId)
    }
    for (const [frameworkId, offerIds] of byFramework) {
      frameworks.get(frameworkId)?.subscriber?.send({ event: { $case: "rescind", value: { offerIds } } })
      metrics.offersRescinded.inc(offerIds.length)
    }
    if (byFramework.size > 0) kick()
  }

  const allocate = (now: number) => {
    rescind((offer) => offer.expiresAtMs <= now)
    const batches = new Map<string, Array<v1.Offer>>()
    const started = performance.now()
    const allocations = allocator.cycle(now)
    metrics.cycleSeconds.observe((performance.now() - started) / 1000)
    metrics.offersSent.inc(allocations.length)
    for (const allocation of allocations) {
      const agent = agents.get(allocation.agentId)!
      const offer: v1.Offer = {
        offerId: randomUUID(),
        frameworkId: allocation.frameworkId,
        agentId: allocation.agentId,
        hostname: agent.info.hostname,
        resources: allocation.resources,
        attributes: agent.info.attributes,
        allocationRole: allocation.role,
        executorIds: [],
        expiresAtMs: now + config.offerTimeoutSeconds * 1000
      }
      offers.set(offer.offerId, offer)
      let onAgent = offersByAgent.get(offer.agentId)
      if (onAgent === undefined) {
        onAgent = new Set()
        offersByAgent.set(offer.agentId, onAgent)
      }
      onAgent.add(offer.offerId)
      const batch = batches.get(offer.frameworkId)
      if (batch === undefined) batches.set(offer.frameworkId, [offer])
      else batch.push(offer)
    }
    for (const [frameworkId, batch] of batches) {
      frameworks.get(frameworkId)?.subscriber?.send({ event: { $case: "offers", value: { offers: batch } } })
    }
  }

  // ---------------------------------------------------------------- tasks

  const releaseTask = (task: TaskEntry) => allocator.recover(task.frameworkId, task.agentId, task.role, task.resources)

  /** Terminal tasks per framework, oldest first: the master keeps a bounded history, not all of it. */
  const completed = new Map<string, Array<string>>()
  const rememberCompleted = (task: TaskEntry) => {
    let list = completed.get(task.frameworkId)
    if (list === undefined) {
      list = []
      completed.set(task.frameworkId, list)
    }
    list.push(taskKey(task.frameworkId, task.taskId))
    while (list.length > config.maxCompletedTasksPerFramework) {
      const key = list.shift()!
      const old = tasks.get(key)
      if (old !== undefined && TaskStates.isTerminal(old.state)) dropTask(key)
    }
  }

  /**
   * Applies a new state to a known task, releasing its resources when it becomes terminal. The
   * status is kept encoded (a copy), so no view into the received batch stays alive.
   */
  const transition = (task: TaskEntry, status: v1.TaskStatus): boolean => {
    const wasTerminal = TaskStates.isTerminal(task.state)
    // A late duplicate (RUNNING resent after the terminal update arrived) changes nothing: a
    // terminal task stays terminal and its resources are released once.
    if (wasTerminal && !TaskStates.isTerminal(status.state)) return false
    setStatus(task, status)
    if (!wasTerminal && TaskStates.isTerminal(status.state)) {
      releaseTask(task)
      rememberCompleted(task)
      return true
    }
    return false
  }

  // ---------------------------------------------------------------- frameworks

  const session = (
    ref: v1.SessionRef | undefined
  ): Effect.Effect<FrameworkEntry, StaleSession | InvalidArgument | PermissionDenied> => {
    if (ref === undefined || ref.frameworkId === "") {
      return Effect.fail(new InvalidArgument({ field: "session.frameworkId", rule: "is required" }))
    }
    const framework = frameworks.get(ref.frameworkId)
    if (framework === undefined) {
      return Effect.fail(new StaleSession({ frameworkId: ref.frameworkId, reason: "is not subscribed" }))
    }
    if (framework.subscriber === undefined || framework.subscriber.streamId !== ref.streamId) {
      return Effect.fail(
        new StaleSession({ frameworkId: ref.frameworkId, reason: `stream id "${ref.streamId}" is not the current session` })
      )
    }
    return Effect.flatMap(Security.Caller, (caller) => {
      const denied = security.authorizeFramework(caller, "session.frameworkId", framework.info)
      return denied === undefined ? Effect.succeed(framework) : Effect.fail(denied)
    })
  }

  const subscribe = (
    request: v1.SubscribeRequest,
    subscriber: Omit<Subscriber, "streamId" | "frameworkId">
  ): Effect.Effect<Subscriber, RequestError> =>
    Effect.gen(function*() {
      const caller = yield* Security.Caller
      const limited = yield* security.limit("Subscribe", security.rateKey(caller, request.frameworkInfo?.principal ?? ""))
      if (limited !== undefined) return yield* limited
      const problem = Validate.frameworkInfo(request.frameworkInfo)
      if (problem !== undefined) return yield* problem
      const principal = security.authorizeSubscribe(caller, request.frameworkInfo!)
      if (Result.isFailure(principal)) return yield* principal.failure
      const info: v1.FrameworkInfo = { ...request.frameworkInfo!, principal: principal.success }
      let frameworkId = info.frameworkId
      if (removedFrameworks.has(frameworkId)) return yield* new FrameworkRemoved({ frameworkId })
      if (frameworkId !== "" && !frameworks.has(frameworkId)) {
        return yield* new NotFound({
          field: "frameworkInfo.frameworkId",
          rule: `framework ${frameworkId} is unknown to this cluster (torn down or never registered)`
        })
      }
      const owned = frameworks.get(frameworkId)
      const hijack = owned === undefined ? undefined : security.authorizeFramework(caller, "frameworkInfo.frameworkId", owned.info)
      if (hijack !== undefined) return yield* hijack
      if (frameworkId === "") frameworkId = randomUUID()
      const roles = info.roles.length > 0 ? info.roles : ["*"]
      const stored: v1.FrameworkInfo = { ...info, frameworkId, roles }
      yield* registry.putFramework({ info: stored })
      const current: Subscriber = { ...subscriber, frameworkId, streamId: randomUUID() }
      const existing = frameworks.get(frameworkId)
      if (existing !== undefined) {
        // Failover: the newest scheduler wins; the old stream is closed and its offers void.
        const previous = existing.subscriber
        existing.info = stored
        existing.subscriber = current
        existing.failoverDeadlineMs = undefined
        rescind((offer) => offer.frameworkId === frameworkId)
        // Tell the old scheduler why it lost the session, so it stops instead of re-subscribing
        // and taking the session back.
        previous?.send({
          event: { $case: "error", value: { message: `framework ${frameworkId} failed over to another scheduler` } }
        })
        previous?.close()
      } else {
        frameworks.set(frameworkId, { info: stored, subscriber: current, failoverDeadlineMs: undefined })
      }
      allocator.addFramework(frameworkId, roles, request.suppressedRoles)
      if (watchers.size > 0) {
        emit(
          existing === undefined
            ? { $case: "frameworkAdded", value: { framework: frameworkView(frameworks.get(frameworkId)!) } }
            : { $case: "frameworkUpdated", value: { framework: frameworkView(existing) } }
        )
      }
      current.send({
        event: {
          $case: "subscribed",
          value: {
            frameworkId,
            streamId: current.streamId,
            heartbeatIntervalSeconds: config.frameworkHeartbeatSeconds,
            masterInfo
          }
        }
      })
      kick()
      yield* Effect.logInfo("framework subscribed").pipe(Effect.annotateLogs({ frameworkId, name: info.name }))
      return current
    })

  const unsubscribe = (frameworkId: string, streamId: string) =>
    Effect.gen(function*() {
      const framework = frameworks.get(frameworkId)
      if (framework?.subscriber?.streamId !== streamId) return
      framework.subscriber = undefined
      allocator.deactivateFramework(frameworkId)
      rescind((offer) => offer.frameworkId === frameworkId)
      // Invariant 6: nothing of it is killed before the failover timeout runs out.
      const now = yield* Clock.currentTimeMillis
      framework.failoverDeadlineMs = now + framework.info.failoverTimeoutSeconds * 1000
      yield* registry.putFramework({ info: framework.info, failoverDeadlineMs: framework.failoverDeadlineMs })
      if (watchers.size > 0) emit({ $case: "frameworkUpdated", value: { framework: frameworkView(framework) } })
      yield* Effect.logInfo("framework disconnected").pipe(
        Effect.annotateLogs({ frameworkId, failoverTimeoutSeconds: framework.info.failoverTimeoutSeconds })
      )
    })

  /** Ends a framework for good: kills its tasks, forgets it, remembers its id as removed. */
  const removeFramework = (framework: FrameworkEntry, why: string) =>
    Effect.gen(function*() {
      const frameworkId = framework.info.frameworkId
      yield* registry.removeFramework(framework.info)
      removedFrameworks.add(frameworkId)
      rescind((offer) => offer.frameworkId === frameworkId)
      const kills: Array<{ agentId: string; kill: v1.ConnectResponse_KillTask }> = []
      for (const [key, task] of tasks) {
        if (task.frameworkId !== frameworkId) continue
        if (!TaskStates.isTerminal(task.state)) {
          kills.push({
            agentId: task.agentId,
            kill: { frameworkId, taskId: task.taskId, reason: v1.TaskStatus_Reason.FRAMEWORK_REMOVED }
          })
          releaseTask(task)
        }
        dropTask(key)
      }
      sendKills(kills)
      for (const agentId of customExecutors.keys()) releaseExecutors(agentId, frameworkId)
      allocator.removeFramework(frameworkId)
      frameworks.delete(frameworkId)
      emit({ $case: "frameworkRemoved", value: { frameworkInfo: framework.info } })
      framework.subscriber?.send({ event: { $case: "error", value: { message: `framework ${frameworkId} ${why}` } } })
      framework.subscriber?.close()
      kick()
      yield* Effect.logInfo("framework removed").pipe(Effect.annotateLogs({ frameworkId, why }))
    })

  // ---------------------------------------------------------------- scheduler calls

  const accept = (request: v1.AcceptRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const frameworkId = framework.info.frameworkId
      if (request.offerIds.length === 0) return yield* new InvalidArgument({ field: "offerIds", rule: "must list at least one offer" })
      const used: Array<v1.Offer> = []
      for (const [i, offerId] of request.offerIds.entries()) {
        const offer = offers.get(offerId)
        if (offer === undefined || offer.frameworkId !== frameworkId) {
          return yield* new InvalidArgument({
            field: `offerIds[${i}]`,
            rule: `offer "${offerId}" is unknown, expired or already used (an offer id can be used once)`
          })
        }
        if (request.offerIds.indexOf(offerId) !== i) {
          return yield* new InvalidArgument({ field: `offerIds[${i}]`, rule: `offer "${offerId}" is listed twice` })
        }
        if (used.length > 0 && (used[0]!.agentId !== offer.agentId || used[0]!.allocationRole !== offer.allocationRole)) {
          return yield* new InvalidArgument({
            field: `offerIds[${i}]`,
            rule: "all offers of an Accept must be on one agent and allocated to one role"
          })
        }
        used.push(offer)
      }
      const agentId = used[0]!.agentId
      const role = used[0]!.allocationRole
      const denied = security.authorizeOperations(framework.info.principal, role, request.operations)
      if (denied !== undefined) return yield* denied
      const offered = Resources.add([], used.flatMap((o) => o.resources))
      const agent = agents.get(agentId)
      const volumes = volumesOf(agentId)
      const plan = Operations.plan(
        {
          frameworkId,
          principal: framework.info.principal,
          role,
          agentId,
          volumes: new Set(volumes.keys()),
          volumesInUse: volumesInUse(agentId),
          taskExists: (taskId) => {
            const existing = tasks.get(taskKey(frameworkId, taskId))
            return existing !== undefined && !TaskStates.isTerminal(existing.state)
          },
          executorExists: (executorId) =>
            [...tasksOn(agentId).values()].some((t) =>
              t.frameworkId === frameworkId && !TaskStates.isTerminal(t.state) &&
              (t.executorId || t.taskId) === executorId
            ),
          runningExecutor: (executorId) => customExecutors.get(agentId)?.get(`${frameworkId}/${executorId}`)?.info,
          // Live while it runs a task: once its last task ended the id names a new executor.
          runningGroupExecutor: (executorId) => {
            for (const t of tasksOn(agentId).values()) {
              if (t.frameworkId !== frameworkId || t.executorId !== executorId || TaskStates.isTerminal(t.state)) continue
              const executor = taskInfo(t).executor
              if (executor?.type === v1.ExecutorInfo_Type.DEFAULT) return executor
            }
            return undefined
          }
        },
        request.operations,
        offered
      )
      if (plan instanceof InvalidArgument || plan instanceof Unimplemented) return yield* plan
      if (agent?.connection === undefined) {
        return yield* new InvalidArgument({ field: "offerIds", rule: `agent ${agentId} is no longer connected` })
      }

      // Everything checked: from here on nothing fails, so the Accept is all or nothing.
      const now = yield* Clock.currentTimeMillis
      for (const offer of used) takeOffer(offer.offerId)
      metrics.offersAccepted.inc(used.length)
      metrics.tasksLaunched.inc(plan.launches.length + plan.groups.reduce((n, g) => n + g.tasks.length, 0))
      if (plan.conversions.length > 0) {
        // Reservations and volumes change the agent's total: durable first (invariant 4), then
        // the agent checkpoints the same total and carries out CREATE and DESTROY.
        let total = agent.info.resources
        for (const { from, to } of plan.conversions) {
          total = Resources.add(Resources.subtract(total, from), to)
          allocator.convert(agentId, from, to)
        }
        agent.info = { ...agent.info, resources: total.map((r) => ({ ...r, allocationRole: "" })) }
        yield* registry.putAgent(agent.info)
        admittedAgents.set(agentId, agent.info)
        agent.connection.send({
          message: {
            $case: "applyOperations",
            value: {
              operations: plan.agentOperations.map((operation) => ({ frameworkId, operation, uuid: new Uint8Array() })),
              checkpointedResources: agent.info.resources
            }
          }
        })
      }
      if (plan.finished.length > 0) {
        const statuses = plan.finished.map(({ operationId, converted }): v1.OperationStatus => ({
          operationId,
          state: v1.OperationState.FINISHED,
          message: "",
          convertedResources: [...converted],
          uuid: new Uint8Array(),
          agentId,
          timestampMs: now
        }))
        for (const status of statuses) operationStatuses.set(`${frameworkId}/${status.operationId}`, status)
        framework.subscriber?.send({ event: { $case: "updateOperationStatus", value: { statuses } } })
      }
      // The executors' own resources came out of the offers, like the tasks': already allocated.
      for (const executor of plan.executors) {
        executorsOn(agentId).set(`${frameworkId}/${executor.executorId}`, { frameworkId, role, info: executor })
      }
      const launches = plan.launches.map((info) => ({ ...info, data: info.data.slice() }))
      // Task groups (LAUNCH_GROUP): every task is recorded with its group's executor id.
      const groups = plan.groups.map(({ executor, tasks }) => {
        const detached = { ...executor, data: executor.data.slice() }
        return { executor: detached, tasks: tasks.map((info) => ({ ...info, executor: detached, data: info.data.slice() })) }
      })
      const launched = [...launches, ...groups.flatMap((g) => g.tasks)]
      const staging: Array<v1.TaskStatus> = []
      for (const info of launched) {
        const status = {
          ...masterStatus(info, v1.TaskState.STAGING, v1.TaskStatus_Reason.UNSPECIFIED, "", now),
          executorId: info.executor?.executorId ?? ""
        }
        const entry = makeTask(frameworkId, agentId, role, info, v1.TaskState.STAGING, status)
        putTask(taskKey(frameworkId, info.taskId), entry)
        staging.push(status)
        if (watchers.size > 0) emit({ $case: "taskAdded", value: { task: taskView(entry) } })
      }
      if (launched.length > 0) {
        agent.connection.send({
          message: {
            $case: "run",
            value: {
              tasks: launches.map((task) => ({ framework: framework.info, task })),
              taskGroups: groups.map(({ executor, tasks }) => ({ framework: framework.info, executor, taskGroup: { tasks } }))
            }
          }
        })
        framework.subscriber?.send(updateEvent(staging))
      }
      if (plan.leftover.length > 0) {
        allocator.recover(frameworkId, agentId, role, plan.leftover)
        const refuse = request.filters?.refuseSeconds ?? config.defaultRefuseSeconds
        allocator.filter(frameworkId, agentId, now + refuse * 1000, plan.leftover)
      }
      kick()
      return { launchedTaskIds: launched.map((t) => t.taskId) }
    })

  /** Persistent volumes on an agent, by persistence id. */
  const volumesOf = (agentId: string) => {
    const out = new Map<string, v1.Resource>()
    for (const r of agents.get(agentId)?.info.resources ?? []) {
      const id = r.disk?.persistence?.id
      if (id !== undefined && id !== "") out.set(id, r)
    }
    return out
  }

  const volumesInUse = (agentId: string) => {
    const out = new Set<string>()
    for (const task of tasksOn(agentId).values()) {
      if (TaskStates.isTerminal(task.state)) continue
      for (const r of task.resources) {
        const id = r.disk?.persistence?.id
        if (id !== undefined && id !== "") out.add(id)
      }
    }
    return out
  }

  const reconcileOperations = (request: v1.ReconcileOperationsRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const frameworkId = framework.info.frameworkId
      const now = yield* Clock.currentTimeMillis
      const statuses =
        request.operations.length === 0
          ? [...operationStatuses.entries()].filter(([key]) => key.startsWith(`${frameworkId}/`)).map(([, status]) => status)
          : request.operations.map((o, i) =>
            operationStatuses.get(`${frameworkId}/${o.operationId}`) ?? {
              operationId: o.operationId,
              state: v1.OperationState.UNKNOWN,
              message: `operations[${i}]: no operation "${o.operationId}" is known for this framework`,
              convertedResources: [],
              uuid: new Uint8Array(),
              agentId: o.agentId,
              timestampMs: now
            }
          )
      if (statuses.length > 0) framework.subscriber?.send({ event: { $case: "updateOperationStatus", value: { statuses } } })
      return {}
    })

  const acknowledgeOperationStatus = (request: v1.AcknowledgeOperationStatusRequest) =>
    Effect.gen(function*() {
      yield* session(request.session)
      for (const [i, ack] of request.acknowledgements.entries()) {
        if (ack.operationId === "") return yield* new InvalidArgument({ field: `acknowledgements[${i}].operationId`, rule: "is required" })
      }
      // Operations on an agent's own resources finish in the master and carry no uuid; nothing
      // waits for these acknowledgements yet (resource providers would).
      return {}
    })

  const decline = (request: v1.DeclineRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const refuse = request.filters?.refuseSeconds ?? config.defaultRefuseSeconds
      if (!(refuse >= 0)) return yield* new InvalidArgument({ field: "filters.refuseSeconds", rule: "must be a number >= 0" })
      const now = yield* Clock.currentTimeMillis
      for (const offerId of request.offerIds) {
        const offer = offers.get(offerId)
        // Declining an offer that is already gone is harmless: the framework may race a rescind.
        if (offer === undefined || offer.frameworkId !== framework.info.frameworkId) continue
        takeOffer(offerId)
        metrics.offersDeclined.inc()
        allocator.recover(offer.frameworkId, offer.agentId, offer.allocationRole, offer.resources)
        allocator.filter(offer.frameworkId, offer.agentId, now + refuse * 1000, offer.resources)
      }
      // No allocation round on a decline: the declined resources wait for the next interval, so a
      // framework declining with a 0 s refusal cannot turn the master into an offer loop.
      return {}
    })

  const validRoles = (framework: FrameworkEntry, roles: ReadonlyArray<string>) => {
    const unknown = roles.findIndex((r) => !framework.info.roles.includes(r))
    return unknown < 0
      ? undefined
      : new InvalidArgument({ field: `roles[${unknown}]`, rule: `"${roles[unknown]}" is not one of the framework's roles` })
  }

  const revive = (request: v1.ReviveRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const limited = yield* security.limit("Revive", security.rateKey(yield* Security.Caller, framework.info.principal))
      if (limited !== undefined) return yield* limited
      const problem = validRoles(framework, request.roles)
      if (problem !== undefined) return yield* problem
      allocator.revive(framework.info.frameworkId, request.roles)
      kick()
      return {}
    })

  const suppress = (request: v1.SuppressRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const problem = validRoles(framework, request.roles)
      if (problem !== undefined) return yield* problem
      const roles = request.roles.length > 0 ? request.roles : framework.info.roles
      allocator.suppress(framework.info.frameworkId, roles)
      rescind((offer) => offer.frameworkId === framework.info.frameworkId && roles.includes(offer.allocationRole))
      return {}
    })

  const kill = (request: v1.KillRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const frameworkId = framework.info.frameworkId
      for (const [i, k] of request.kills.entries()) {
        if (k.taskId === "") return yield* new InvalidArgument({ field: `kills[${i}].taskId`, rule: "is required" })
        const grace = k.killPolicy?.gracePeriodSeconds
        if (grace !== undefined && !(grace >= 0)) {
          return yield* new InvalidArgument({ field: `kills[${i}].killPolicy.gracePeriodSeconds`, rule: "must be >= 0" })
        }
      }
      const now = yield* Clock.currentTimeMillis
      const answers: Array<{ frameworkId: string; status: v1.TaskStatus }> = []
      const kills: Array<{ agentId: string; kill: v1.ConnectResponse_KillTask }> = []
      for (const k of request.kills) {
        const task = tasks.get(taskKey(frameworkId, k.taskId))
        if (task === undefined) {
          answers.push({
            frameworkId,
            status: masterStatus(k, v1.TaskState.UNKNOWN, v1.TaskStatus_Reason.TASK_UNKNOWN, "unknown task", now)
          })
        } else if (TaskStates.isTerminal(task.state)) {
          const last = taskStatus(task)
          if (last !== undefined) {
            answers.push({ frameworkId, status: { ...last, uuid: new Uint8Array(), source: v1.TaskStatus_Source.MASTER } })
          }
        } else {
          const policy = k.killPolicy ?? task.killPolicy
          const killTask: v1.ConnectResponse_KillTask = {
            frameworkId,
            taskId: k.taskId,
            reason: v1.TaskStatus_Reason.KILLED_BY_SCHEDULER,
            ...(policy === undefined ? {} : { killPolicy: policy })
          }
          kills.push({ agentId: task.agentId, kill: killTask })
        }
      }
      sendKills(kills)
      notify(answers)
      return {}
    })

  const acknowledge = (request: v1.AcknowledgeRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const frameworkId = framework.info.frameworkId
      const byAgent = new Map<string, Array<v1.ConnectResponse_Acknowledgement>>()
      for (const [i, ack] of request.acknowledgements.entries()) {
        if (ack.uuid.length === 0) {
          return yield* new InvalidArgument({ field: `acknowledgements[${i}].uuid`, rule: "is required" })
        }
        const agentId = ack.agentId !== "" ? ack.agentId : tasks.get(taskKey(frameworkId, ack.taskId))?.agentId
        if (agentId === undefined) {
          return yield* new InvalidArgument({ field: `acknowledgements[${i}].agentId`, rule: "is required for an unknown task" })
        }
        const list = byAgent.get(agentId)
        const acknowledgement = { frameworkId, taskId: ack.taskId, uuid: ack.uuid }
        if (list === undefined) byAgent.set(agentId, [acknowledgement])
        else list.push(acknowledgement)
      }
      for (const [agentId, acknowledgements] of byAgent) {
        agents.get(agentId)?.connection?.send({ message: { $case: "acknowledgements", value: { acknowledgements } } })
      }
      return {}
    })

  const reconcile = (request: v1.ReconcileRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const frameworkId = framework.info.frameworkId
      const now = yield* Clock.currentTimeMillis
      const answer = (task: TaskEntry): v1.TaskStatus => ({
        ...(taskStatus(task) ?? masterStatus({ taskId: task.taskId, agentId: task.agentId }, task.state, 0, "", now)),
        state: task.state,
        source: v1.TaskStatus_Source.MASTER,
        reason: v1.TaskStatus_Reason.RECONCILIATION,
        uuid: new Uint8Array()
      })
      const statuses =
        request.tasks.length === 0
          ? [...tasks.values()].filter((t) => t.frameworkId === frameworkId && !TaskStates.isTerminal(t.state)).map(answer)
          : request.tasks.map((t) => {
            const task = tasks.get(taskKey(frameworkId, t.taskId))
            return task === undefined
              ? masterStatus(t, v1.TaskState.UNKNOWN, v1.TaskStatus_Reason.RECONCILIATION, "unknown task", now)
              : answer(task)
          })
      notify(statuses.map((status) => ({ frameworkId, status })))
      return {}
    })

  /** A scheduler's message for one of its custom executors, relayed through the agent (at most once). */
  const message = (request: v1.MessageRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const frameworkId = framework.info.frameworkId
      if (request.agentId === "") return yield* new InvalidArgument({ field: "agentId", rule: "is required" })
      if (request.executorId === "") return yield* new InvalidArgument({ field: "executorId", rule: "is required" })
      const agent = agents.get(request.agentId)
      if (agent === undefined) return yield* new NotFound({ field: "agentId", rule: `no agent "${request.agentId}" is registered` })
      if (!customExecutors.get(request.agentId)?.has(`${frameworkId}/${request.executorId}`)) {
        return yield* new NotFound({
          field: "executorId",
          rule: `no custom executor "${request.executorId}" of this framework runs on agent ${request.agentId}`
        })
      }
      if (agent.connection === undefined) {
        return yield* new InvalidArgument({ field: "agentId", rule: `agent ${request.agentId} is not connected; try again when it is` })
      }
      agent.connection.send({
        message: {
          $case: "frameworkMessage",
          value: { frameworkId, executorId: request.executorId, data: Buffer.from(request.data) }
        }
      })
      return {}
    })

  const teardown = (request: v1.TeardownRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      yield* removeFramework(framework, "was torn down")
      return {}
    })

  // ---------------------------------------------------------------- agents

  const registerAgent = (register: v1.ConnectRequest_Register, connection: AgentConnection) =>
    Effect.gen(function*() {
      const offered = register.agentInfo
      if (offered === undefined) return yield* new InvalidArgument({ field: "register.agentInfo", rule: "is required" })
      if (goneAgents.has(offered.agentId)) {
        return yield* new InvalidArgument({
          field: "register.agentInfo.agentId",
          rule: `agent ${offered.agentId} was marked gone and may not re-register; start it with a fresh work dir`
        })
      }
      if (Resources.sumScalar(offered.resources, "cpus") <= 0) {
        return yield* new InvalidArgument({ field: "register.agentInfo.resources", rule: "cpus must be > 0" })
      }
      const known = offered.agentId !== "" && (agents.has(offered.agentId) || admittedAgents.has(offered.agentId))
      const agentId = known ? offered.agentId : randomUUID()
      // What the agent checkpointed (its reservations and volumes) is what it has.
      const resources = register.checkpointedResources.length > 0 ? register.checkpointedResources : offered.resources
      let info: v1.AgentInfo = { ...offered, agentId, resources }
      // A re-registration (after a leader change, 10,000 at once) writes nothing when nothing changed.
      const admitted = admittedAgents.get(agentId)
      if (admitted !== undefined && sameValue(admitted, info)) {
        info = admitted
      } else {
        yield* registry.putAgent(info)
        admittedAgents.set(agentId, info)
      }
      const now = yield* Clock.currentTimeMillis
      const previous = agents.get(agentId)
      rescindAgent(agentId)
      previous?.connection?.close()

      // Task state is rebuilt from what the agent reports (invariant 5). Tasks the master knew on
      // this agent that it no longer reports are gone.
      const reported = new Set(register.tasks.map((r) => taskKey(r.frameworkId, r.task?.taskId ?? "")))
      const updates: Array<{ frameworkId: string; status: v1.TaskStatus }> = []
      for (const [key, task] of tasksOn(agentId)) {
        if (TaskStates.isTerminal(task.state)) continue
        releaseTask(task)
        if (!reported.has(key)) {
          const status = masterStatus(
            { taskId: task.taskId, agentId },
            v1.TaskState.GONE,
            v1.TaskStatus_Reason.AGENT_RESTARTED,
            "the agent re-registered without this task",
            now
          )
          setStatus(task, status)
          updates.push({ frameworkId: task.frameworkId, status })
        }
      }
      releaseExecutors(agentId)
      allocator.addAgent(agentId, info.resources)
      if (previous?.draining ?? drainingAgents.has(agentId)) allocator.deactivateAgent(agentId)
      // Records a standby built while it held this agent's stream, when they are for this agent id.
      const prepared = agentId === offered.agentId ? preparedTasks.get(register) : undefined
      preparedTasks.delete(register)
      const live: Array<TaskEntry> = []
      for (let i = 0; i < register.tasks.length; i++) {
        const report = register.tasks[i]!
        if (report.task === undefined) continue
        const key = taskKey(report.frameworkId, report.task.taskId)
        const state = report.latestStatus?.state ?? v1.TaskState.STAGING
        const before = tasks.get(key)
        const entry = prepared?.[i] ??
          makeTask(report.frameworkId, agentId, roleOf(report.task.resources), report.task, state, report.latestStatus)
        const role = entry.role
        putTask(key, entry)
        if (!TaskStates.isTerminal(state)) live.push(entry)
        // A custom executor that still runs a task is running: its own share is held again.
        const executor = report.task.executor
        if (executor !== undefined && executor.type === v1.ExecutorInfo_Type.CUSTOM && !TaskStates.isTerminal(state)) {
          const running = executorsOn(agentId)
          const executorKey = `${report.frameworkId}/${executor.executorId}`
          if (!running.has(executorKey)) {
            const executorRole = roleOf(executor.resources) || role
            allocator.track(report.frameworkId, agentId, executorRole, executor.resources)
            running.set(executorKey, { frameworkId: report.frameworkId, role: executorRole, info: executor })
          }
        }
        // A task the frameworks saw as UNREACHABLE is back: say so (the agent's own updates may
        // already have been acknowledged and will not come again).
        if (before?.state === v1.TaskState.UNREACHABLE && report.latestStatus !== undefined) {
          updates.push({
            frameworkId: report.frameworkId,
            status: { ...report.latestStatus, source: v1.TaskStatus_Source.MASTER, uuid: new Uint8Array(), timestampMs: now }
          })
        }
      }
      // One allocator update for all of the agent's tasks (10,000 agents re-register at once).
      allocator.trackAll(agentId, live)
      agents.set(agentId, {
        info,
        connection,
        state: "active",
        draining: previous?.draining ?? drainingAgents.has(agentId),
        registeredAtMs: previous?.registeredAtMs ?? now,
        lastSeenMs: now
      })
      if (watchers.size > 0) emit({ $case: "agentAdded", value: { agent: agentView(agentId, agents.get(agentId)!) } })
      connection.send({
        message: {
          $case: "registered",
          value: { agentId, pingIntervalSeconds: config.agentPingSeconds, masterInfo }
        }
      })
      notify(updates)
      // Kills ordered while the agent was away still apply to the tasks it came back with.
      const pending = pendingKills.get(agentId)
      pendingKills.delete(agentId)
      if (pending !== undefined) {
        sendKills([...pending].flatMap(([key, kill]) => {
          const task = tasks.get(key)
          return task !== undefined && !TaskStates.isTerminal(task.state) ? [{ agentId, kill }] : []
        }))
      }
      kick()
      // A new leader re-registers every agent at once: one line each would cost more than the
      // registration (and so would formatting its resources for a line nobody sees).
      yield* known
        ? Effect.logDebug("agent re-registered").pipe(Effect.annotateLogs({ agentId, hostname: info.hostname }))
        : Effect.logInfo("agent registered").pipe(
          Effect.annotateLogs({ agentId, hostname: info.hostname, resources: Resources.format(info.resources) })
        )
      return agentId
    })

  /** An executor's message for its scheduler (at most once, as in Mesos). */
  const executorMessage = (agentId: string, message: v1.ConnectRequest_ExecutorMessage) => {
    const framework = frameworks.get(message.frameworkId)
    framework?.subscriber?.send({
      event: { $case: "message", value: { agentId, executorId: message.executorId, data: Buffer.from(message.data) } }
    })
  }

  /** A custom executor ended: its own resources go back to the pool and its scheduler hears of it. */
  const executorExited = (agentId: string, exited: v1.ConnectRequest_ExecutorExited) => {
    const key = `${exited.frameworkId}/${exited.executorId}`
    const executor = customExecutors.get(agentId)?.get(key)
    if (executor !== undefined) {
      allocator.recover(executor.frameworkId, agentId, executor.role, executor.info.resources)
      customExecutors.get(agentId)!.delete(key)
      kick()
    }
    frameworks.get(exited.frameworkId)?.subscriber?.send({
      event: {
        $case: "failure",
        value: { agentId, executorId: exited.executorId, ...(exited.status === undefined ? {} : { status: exited.status }) }
      }
    })
  }

  const disconnectAgent = (agentId: string, connection: AgentConnection) =>
    Effect.gen(function*() {
      const agent = agents.get(agentId)
      if (agent?.connection !== connection) return
      agent.connection = undefined
      agent.state = "disconnected"
      agent.lastSeenMs = yield* Clock.currentTimeMillis
      allocator.deactivateAgent(agentId)
      rescindAgent(agentId)
      yield* Effect.logWarning("agent disconnected").pipe(Effect.annotateLogs({ agentId }))
    })

  /**
   * An agent silent (or disconnected) for ping interval × misses is unreachable: its tasks become
   * UNREACHABLE (not lost: they return to RUNNING when it re-registers).
   */
  const checkAgents = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const updates: Array<{ frameworkId: string; status: v1.TaskStatus }> = []
    for (const [agentId, agent] of agents) {
      if (agent.state === "active" && now - agent.lastSeenMs > unreachableAfterMs) {
        yield* Effect.logWarning("agent missed its pings").pipe(Effect.annotateLogs({ agentId }))
        const connection = agent.connection
        if (connection !== undefined) {
          yield* disconnectAgent(agentId, connection)
          connection.close()
        }
      }
      if (agent.state === "disconnected" && now - agent.lastSeenMs >= unreachableAfterMs) {
        agent.state = "unreachable"
        for (const task of tasksOn(agentId).values()) {
          if (TaskStates.isTerminal(task.state)) continue
          const status = {
            ...masterStatus(
              { taskId: task.taskId, agentId },
              v1.TaskState.UNREACHABLE,
              v1.TaskStatus_Reason.AGENT_DISCONNECTED,
              `agent ${agentId} is unreachable`,
              now
            ),
            unreachableTimeMs: now
          }
          setStatus(task, status)
          updates.push({ frameworkId: task.frameworkId, status })
        }
        yield* Effect.logWarning("agent unreachable").pipe(Effect.annotateLogs({ agentId }))
      }
    }
    notify(updates)
  })

  /** Frameworks whose scheduler stayed away past the failover timeout are torn down (invariant 6). */
  const checkFailoverTimeouts = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    for (const framework of [...frameworks.values()]) {
      if (framework.subscriber === undefined && framework.failoverDeadlineMs !== undefined && framework.failoverDeadlineMs <= now) {
        yield* removeFramework(framework, "was torn down: its scheduler did not come back within its failover timeout")
      }
    }
  })

  const statusUpdates = (agentId: string, updates: ReadonlyArray<v1.StatusUpdate>) => {
    metrics.statusUpdates.inc(updates.length)
    const forward: Array<{ frameworkId: string; status: v1.TaskStatus }> = []
    const acknowledgements: Array<v1.ConnectResponse_Acknowledgement> = []
    let freed = false
    for (const update of updates) {
      const status = update.status
      if (status === undefined) continue
      if (removedFrameworks.has(update.frameworkId)) {
        // Nobody will acknowledge these: the master does, so the agent can forget the task.
        acknowledgements.push({ frameworkId: update.frameworkId, taskId: status.taskId, uuid: status.uuid })
        continue
      }
      const task = tasks.get(taskKey(update.frameworkId, status.taskId))
      if (task !== undefined && transition(task, { ...status, agentId })) freed = true
      forward.push({ frameworkId: update.frameworkId, status: { ...status, agentId } })
    }
    if (acknowledgements.length > 0) {
      agents.get(agentId)?.connection?.send({ message: { $case: "acknowledgements", value: { acknowledgements } } })
    }
    // A disconnected framework misses these; the agent resends until they are acknowledged.
    notify(forward)
    if (freed) kick()
  }

  /**
   * An agent's stream: its messages are handled as they come, after `held` (what arrived while a
   * standby held the stream, in order).
   */
  const agentConnect = (call: AgentCall, held: ReadonlyArray<v1.ConnectRequest> = []) => {
    let agentId: string | undefined
    let closed = false
    const connection: AgentConnection = {
      send: (message) => {
        if (!closed) call.write(message)
      },
      close: () => {
        closed = true
        call.end()
      }
    }
    const disconnect = () => {
      closed = true
      if (agentId !== undefined) run(disconnectAgent(agentId, connection))
    }
    const onData = (request: v1.ConnectRequest) => {
      const message = request.message
      if (message === undefined) return
      if (agentId !== undefined) {
        const agent = agents.get(agentId)
        if (agent?.connection === connection) agent.lastSeenMs = clock.currentTimeMillisUnsafe()
      }
      switch (message.$case) {
        case "register":
          run(
            registerAgent(message.value, connection).pipe(
              Effect.tap((id) => Effect.sync(() => (agentId = id))),
              Effect.catch((error) => Effect.sync(() => Grpc.failStream(call, error))),
              Effect.catchCause((cause) =>
                Effect.logError("agent registration failed").pipe(
                  Effect.annotateLogs({ cause: Cause.pretty(cause) }),
                  Effect.andThen(Effect.sync(() => Grpc.failStream(call, { code: grpc.status.INTERNAL, details: "internal error" })))
                )
              )
            )
          )
          return
        case "ping":
          connection.send({ message: { $case: "pong", value: { sequence: message.value.sequence } } })
          return
        case "statusUpdates":
          if (agentId !== undefined) statusUpdates(agentId, message.value.updates)
          return
        case "executorMessage":
          if (agentId !== undefined) executorMessage(agentId, message.value)
          return
        case "executorExited":
          if (agentId !== undefined) executorExited(agentId, message.value)
          return
        default:
          return
      }
    }
    call.on("data", onData)
    call.on("end", () => {
      disconnect()
      call.end()
    })
    call.on("error", disconnect)
    call.on("cancelled", disconnect)
    // Synchronously, before the stream can emit anything newer.
    for (const request of held) onData(request)
  }

  // ---------------------------------------------------------------- agents waiting at a standby

  /**
   * When a leader dies, its agents come to a standby while the dead leader's lease still names it
   * (up to a whole TTL). Refusing them would have thousands of agents retry with backoff, and the
   * standby spend its time refusing them, until the lease lapses; then they would all register
   * late, at once. Instead a standby *holds* the stream of an agent that says it lost the master
   * the election still names (`LOST_MASTER_HEADER`): it keeps the stream open, keeps what the
   * agent sends, builds its task records ahead of time, and the moment it leads it registers them
   * all. If someone else wins the election the held agents are pointed at the winner; if the named
   * leader keeps its lease for two TTLs it is alive after all, and they are pointed back at it.
   */
  interface HeldAgent {
    readonly call: AgentCall
    readonly lostMaster: string
    readonly sinceMs: number
    readonly messages: Array<v1.ConnectRequest>
    readonly detach: () => void
  }
  const heldAgents = new Set<HeldAgent>()
  /** Task records built from a held Register, by message: used when it is processed as a leader. */
  const preparedTasks = new WeakMap<v1.ConnectRequest_Register, ReadonlyArray<TaskEntry | undefined>>()
  const holdLimitMs = Math.max(2 * config.leaderLeaseSeconds, config.leaderLeaseSeconds + 2) * 1000

  const prepare = (register: v1.ConnectRequest_Register) => {
    const agentId = register.agentInfo?.agentId ?? ""
    if (agentId === "" || register.tasks.length === 0) return
    preparedTasks.set(
      register,
      register.tasks.map((report) =>
        report.task === undefined ? undefined : makeTask(
          report.frameworkId,
          agentId,
          roleOf(report.task.resources),
          report.task,
          report.latestStatus?.state ?? v1.TaskState.STAGING,
          report.latestStatus
        )
      )
    )
  }

  const holdAgent = (call: AgentCall, lostMaster: string) => {
    const messages: Array<v1.ConnectRequest> = []
    const onData = (request: v1.ConnectRequest) => {
      // Pings wait for an answer from the leader; only the latest registration matters.
      if (request.message?.$case === "ping") return
      if (request.message?.$case === "register") prepare(request.message.value)
      messages.push(request)
    }
    const gone = () => {
      heldAgents.delete(entry)
      entry.detach()
    }
    const ended = () => {
      gone()
      call.end()
    }
    const entry: HeldAgent = {
      call,
      lostMaster,
      sinceMs: clock.currentTimeMillisUnsafe(),
      messages,
      detach: () => {
        call.removeListener("data", onData)
        call.removeListener("end", ended)
        call.removeListener("error", gone)
        call.removeListener("cancelled", gone)
      }
    }
    call.on("data", onData)
    call.on("end", ended)
    call.on("error", gone)
    call.on("cancelled", gone)
    // The response headers now, while waiting: one thing less to do per agent once leading.
    call.sendMetadata(new grpc.Metadata())
    heldAgents.add(entry)
    if (heldAgents.size === 1) run(watchHeld)
  }

  /** Ends a held stream with the leader's address (and whether it is known to be alive). */
  const redirectHeld = (entry: HeldAgent, leader: string, alive: boolean) => {
    heldAgents.delete(entry)
    entry.detach()
    const status = Grpc.toServiceError(new NotLeader({ leader }))
    if (alive) status.metadata?.set(Grpc.LEADER_ALIVE_HEADER, "1")
    Grpc.failStream(entry.call, status)
  }

  /** While agents are held and this master does not lead, follows the election for them. */
  const watchHeld: Effect.Effect<void, never, StateStore.StateStore> = Effect.gen(function*() {
    while (heldAgents.size > 0 && !leading) {
      yield* Effect.sleep(100)
      if (leading) return
      const leader = yield* currentLeader
      const now = yield* Clock.currentTimeMillis
      for (const entry of [...heldAgents]) {
        // Nobody leads right now (the election is under way): keep waiting.
        if (leader === "" || leader === masterInfo.endpoint) continue
        if (leader !== entry.lostMaster) redirectHeld(entry, leader, false)
        else if (now - entry.sinceMs >= holdLimitMs) redirectHeld(entry, leader, true)
      }
    }
  })

  /**
   * A new leader registers the agents it held, a few hundred at a time with a turn of the event
   * loop in between: renewing the lease, pings and new streams must not wait for all of them.
   */
  const registerHeld = Effect.gen(function*() {
    const waiting = [...heldAgents]
    heldAgents.clear()
    if (waiting.length === 0) return
    yield* Effect.logInfo("registering agents held while standing by").pipe(Effect.annotateLogs({ agents: waiting.length }))
    for (let i = 0; i < waiting.length; i += 250) {
      for (const entry of waiting.slice(i, i + 250)) {
        entry.detach()
        agentConnect(entry.call, entry.messages)
      }
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    }
  })

  /** A standby holds an agent that lost the master the election names (or while nobody is named). */
  const connectHandler = (call: AgentCall) => {
    if (leading) return agentConnect(call)
    const lost = String(call.metadata.get(Grpc.LOST_MASTER_HEADER)[0] ?? "")
    run(Effect.flatMap(recentLeader, (leader) =>
      Effect.sync(() => {
        if (leading) agentConnect(call)
        else if (lost !== "" && (leader === "" || leader === lost)) holdAgent(call, lost)
        else Grpc.failStream(call, new NotLeader({ leader }))
      })))
  }

  // ---------------------------------------------------------------- operator

  const agentView = (agentId: string, agent: AgentEntry): v1.Agent => {
    // Most agents have no offer out: the operator's agent list of 10,000 agents stays cheap.
    const offerIds = offersByAgent.get(agentId)
    const offered = offerIds === undefined ? [] : Resources.add([], [...offerIds].flatMap((id) => offers.get(id)?.resources ?? []))
    return {
      info: agent.info,
      state: agent.draining
        ? [...tasksOn(agentId).values()].some((t) => !TaskStates.isTerminal(t.state))
          ? v1.Agent_State.DRAINING
          : v1.Agent_State.DRAINED
        : agent.state === "active"
        ? v1.Agent_State.ACTIVE
        : v1.Agent_State.UNREACHABLE,
      allocated: offered.length === 0 ? [...allocator.agentAllocated(agentId)] : Resources.subtract(allocator.agentAllocated(agentId), offered),
      offered,
      registeredTimeMs: agent.registeredAtMs
    }
  }
  const frameworkView = (f: FrameworkEntry): v1.Framework => {
    const id = f.info.frameworkId
    const offered = Resources.add([], [...offers.values()].filter((o) => o.frameworkId === id).flatMap((o) => o.resources))
    const used = Resources.add(
      [],
      [...tasks.values()].filter((t) => t.frameworkId === id && !TaskStates.isTerminal(t.state)).flatMap((t) => t.resources)
    )
    return {
      info: f.info,
      connected: f.subscriber !== undefined,
      active: f.subscriber !== undefined,
      allocated: used,
      offered,
      failoverDeadlineMs: f.failoverDeadlineMs ?? 0
    }
  }
  const taskView = (t: TaskEntry): v1.Task => {
    const status = taskStatus(t)
    return {
      frameworkId: t.frameworkId,
      agentId: t.agentId,
      info: taskInfo(t),
      state: t.state,
      ...(status === undefined ? {} : { status })
    }
  }
  const state = (): v1.GetStateResponse => ({
    master: masterInfo,
    agents: [...agents].map(([id, agent]) => agentView(id, agent)),
    frameworks: [...frameworks.values()].map(frameworkView),
    tasks: [...tasks.values()].map(taskView),
    offers: [...offers.values()]
  })

  // ---------------------------------------------------------------- operator calls

  const knownAgent = (agentId: string) => {
    const agent = agents.get(agentId)
    return agent === undefined
      ? Effect.fail(new NotFound({ field: "agentId", rule: `no agent "${agentId}" is registered` }))
      : Effect.succeed(agent)
  }

  const quantitiesToResources = (quantities: ReadonlyMap<string, number> | undefined) =>
    [...(quantities ?? new Map())].map(([name, amount]) => Resources.scalar(name, amount))

  const getRoles = () =>
    Effect.sync((): v1.GetRolesResponse => ({
      roles: allocator.roleNames().sort().map((name) => {
        const view = allocator.roleView(name)
        return {
          name,
          weight: view.weight,
          quota: quantitiesToResources(view.quota),
          allocated: quantitiesToResources(view.allocated).filter((r) => r.value?.$case === "scalar" && r.value.value > 0),
          frameworkIds: view.frameworks
        }
      })
    }))

  const updateWeights = (request: v1.UpdateWeightsRequest) =>
    Effect.gen(function*() {
      const problem = Validate.role("role", request.role) ??
        (Number.isFinite(request.weight) && request.weight > 0 ? undefined : new InvalidArgument({ field: "weight", rule: "must be a finite number > 0" }))
      if (problem !== undefined) return yield* problem
      yield* registry.putWeight(request.role, request.weight)
      allocator.setWeight(request.role, request.weight)
      kick()
      return {}
    })

  const updateQuota = (request: v1.UpdateQuotaRequest) =>
    Effect.gen(function*() {
      const problem = Validate.role("role", request.role) ?? Validate.quota("limits", request.limits)
      if (problem !== undefined) return yield* problem
      yield* registry.putQuota(request.role, request.limits)
      allocator.setQuota(request.role, request.limits)
      // Offers already out may exceed the new limit: take them back and allocate again.
      rescind((offer) => offer.allocationRole === request.role)
      kick()
      return {}
    })

  /** Removes an agent for good: its tasks are GONE_BY_OPERATOR and it may never re-register. */
  const markGone = (agentId: string) =>
    Effect.gen(function*() {
      const agent = yield* knownAgent(agentId)
      yield* registry.markAgentGone(agentId)
      goneAgents.add(agentId)
      admittedAgents.delete(agentId)
      drainingAgents.delete(agentId)
      rescindAgent(agentId)
      const now = yield* Clock.currentTimeMillis
      const updates: Array<{ frameworkId: string; status: v1.TaskStatus }> = []
      for (const task of [...tasksOn(agentId).values()]) {
        if (TaskStates.isTerminal(task.state)) continue
        const status = masterStatus(
          { taskId: task.taskId, agentId },
          v1.TaskState.GONE_BY_OPERATOR,
          v1.TaskStatus_Reason.AGENT_REMOVED,
          `agent ${agentId} was marked gone by an operator`,
          now
        )
        transition(task, status)
        updates.push({ frameworkId: task.frameworkId, status })
      }
      customExecutors.delete(agentId)
      allocator.removeAgent(agentId)
      agents.delete(agentId)
      agent.connection?.close()
      notify(updates)
      emit({ $case: "agentRemoved", value: { agentId } })
      kick()
      yield* Effect.logWarning("agent marked gone").pipe(Effect.annotateLogs({ agentId }))
      return {}
    })

  /** Draining: no more offers from the agent, and its tasks are killed with REASON_AGENT_DRAINING. */
  const drain = (request: v1.DrainAgentRequest) =>
    Effect.gen(function*() {
      const agent = yield* knownAgent(request.agentId)
      const grace = request.maxGracePeriodSeconds
      if (grace !== undefined && !(Number.isFinite(grace) && grace >= 0)) {
        return yield* new InvalidArgument({ field: "maxGracePeriodSeconds", rule: "must be a finite number >= 0" })
      }
      const plan = { maxGracePeriodSeconds: grace, markGone: request.markGone }
      yield* registry.putDraining(request.agentId, plan)
      drainingAgents.set(request.agentId, plan)
      agent.draining = true
      allocator.deactivateAgent(request.agentId)
      rescindAgent(request.agentId)
      const kills: Array<{ agentId: string; kill: v1.ConnectResponse_KillTask }> = []
      for (const task of tasksOn(request.agentId).values()) {
        if (TaskStates.isTerminal(task.state)) continue
        const own = task.killPolicy?.gracePeriodSeconds
        const seconds = grace === undefined ? own : Math.min(grace, own ?? grace)
        kills.push({
          agentId: task.agentId,
          kill: {
            frameworkId: task.frameworkId,
            taskId: task.taskId,
            reason: v1.TaskStatus_Reason.AGENT_DRAINING,
            ...(seconds === undefined ? {} : { killPolicy: { gracePeriodSeconds: seconds } })
          }
        })
      }
      sendKills(kills)
      yield* Effect.logInfo("agent draining").pipe(Effect.annotateLogs({ agentId: request.agentId, tasks: kills.length }))
      return {}
    })

  const reactivate = (request: v1.ReactivateAgentRequest) =>
    Effect.gen(function*() {
      const agent = yield* knownAgent(request.agentId)
      yield* registry.putDraining(request.agentId, undefined)
      drainingAgents.delete(request.agentId)
      agent.draining = false
      if (agent.state === "active") allocator.activateAgent(request.agentId)
      kick()
      return {}
    })

  /**
   * Operator reservations (Mesos' RESERVE_RESOURCES): the resources must be free on the agent
   * (outstanding offers of the agent are rescinded first); the change is durable, checkpointed by
   * the agent, and the reserved resources are then offered to the role only.
   */
  const operatorConvert = (kind: "reserve" | "unreserve", request: v1.ReserveResourcesRequest) =>
    Effect.gen(function*() {
      const agent = yield* knownAgent(request.agentId)
      if (request.resources.length === 0) return yield* new InvalidArgument({ field: "resources", rule: "must not be empty" })
      for (const [i, r] of request.resources.entries()) {
        const field = `resources[${i}]`
        const last = r.reservations.at(-1)
        if (last === undefined || last.type !== v1.ReservationInfo_Type.DYNAMIC) {
          return yield* new InvalidArgument({ field: `${field}.reservations`, rule: "must end with the DYNAMIC reservation to make or remove" })
        }
        const problem = Validate.role(`${field}.reservations[${r.reservations.length - 1}].role`, last.role)
        if (problem !== undefined) return yield* problem
        if (r.value?.$case !== "scalar" && r.value?.$case !== "ranges" && r.value?.$case !== "set") {
          return yield* new InvalidArgument({ field: `${field}.value`, rule: "must be set" })
        }
        if (r.value.$case === "scalar" && !(Number.isFinite(r.value.value) && r.value.value > 0)) {
          return yield* new InvalidArgument({ field: `${field}.scalar`, rule: "must be a finite number > 0" })
        }
        if (r.disk?.persistence?.id) {
          return yield* new InvalidArgument({ field: `${field}.disk.persistence`, rule: "a persistent volume lives on it: it must be destroyed first" })
        }
      }
      const reserved = request.resources.map((r) => ({ ...r, allocationRole: "" }))
      const unreserved = reserved.map((r) => ({ ...r, reservations: r.reservations.slice(0, -1) }))
      const [from, to] = kind === "reserve" ? [unreserved, reserved] : [reserved, unreserved]
      // Resources in outstanding offers are free too: take the offers back first.
      rescind((offer) => offer.agentId === request.agentId)
      const available = allocator.agentAvailable(request.agentId)
      if (!Resources.contains(available, from)) {
        return yield* new InvalidArgument({
          field: "resources",
          rule: `needs ${Resources.format(from)} free on agent ${request.agentId}, but only ${Resources.format(available) || "nothing"} is`
        })
      }
      allocator.convert(request.agentId, from, to, false)
      agent.info = { ...agent.info, resources: Resources.add(Resources.subtract(agent.info.resources, from), to) }
      yield* registry.putAgent(agent.info)
      admittedAgents.set(request.agentId, agent.info)
      const operation: v1.Operation = {
        operationId: "",
        kind: kind === "reserve" ? { $case: "reserve", value: { resources: to } } : { $case: "unreserve", value: { resources: from } }
      }
      agent.connection?.send({
        message: {
          $case: "applyOperations",
          value: { operations: [{ frameworkId: "", operation, uuid: new Uint8Array() }], checkpointedResources: agent.info.resources }
        }
      })
      kick()
      yield* Effect.logInfo(kind === "reserve" ? "operator reserved resources" : "operator unreserved resources").pipe(
        Effect.annotateLogs({ agentId: request.agentId, resources: Resources.format(to) })
      )
      return {}
    })

  /** A drained agent (no live task left) that was to be marked gone, is. */
  const finishDrains = Effect.gen(function*() {
    for (const [agentId, plan] of drainingAgents) {
      if (!plan.markGone || !agents.has(agentId)) continue
      const busy = [...tasksOn(agentId).values()].some((t) => !TaskStates.isTerminal(t.state))
      if (!busy) yield* markGone(agentId)
    }
  })

  const watchEvents = (call: grpc.ServerWritableStream<v1.WatchEventsRequest, v1.WatchEventsResponse>) => {
    const watcher = (event: v1.WatchEventsResponse) => {
      call.write(event)
    }
    call.write({ event: { $case: "snapshot", value: { state: state() } } })
    watchers.add(watcher)
    const stop = () => watchers.delete(watcher)
    call.on("cancelled", stop)
    call.on("close", stop)
    call.on("error", stop)
  }

  // ---------------------------------------------------------------- wiring

  /** The leading master's endpoint, from the election key ("" when none is elected). */
  const currentLeader: Effect.Effect<string, never, StateStore.StateStore> = Election.leader(config.leaderKey).pipe(
    Effect.map(Option.match({
      onNone: () => "",
      onSome: (entry) => {
        try {
          return String((JSON.parse(new TextDecoder().decode(entry.value)) as { endpoint?: string }).endpoint ?? "")
        } catch {
          return ""
        }
      }
    })),
    Effect.orElseSucceed(() => "")
  )
  /**
   * A standby answers every agent of a failed leader, 10,000 of them retrying each second while the
   * old lease runs out: it reads the election key at most every 250 ms for them.
   */
  let knownLeader: { readonly endpoint: string; readonly atMs: number } | undefined
  const recentLeader = Effect.suspend(() => {
    const now = clock.currentTimeMillisUnsafe()
    if (knownLeader !== undefined && now - knownLeader.atMs < 250) return Effect.succeed(knownLeader.endpoint)
    return Effect.tap(currentLeader, (endpoint) => Effect.sync(() => (knownLeader = { endpoint, atMs: now })))
  })
  const notLeader = Effect.flatMap(currentLeader, (leader) => Effect.fail(new NotLeader({ leader })))
  /** Every call but the master's own info is for the leader only; handlers learn who calls. */
  const guard = <Req, A, E, R>(handler: (request: Req) => Effect.Effect<A, E, R>) =>
  (request: Req, call: { readonly metadata: grpc.Metadata; getPeer(): string }) =>
    leading ? Effect.provideService(handler(request), Security.Caller, security.caller(call.metadata, call.getPeer())) : notLeader
  const guardStream = <C extends grpc.ServerWritableStream<any, any> | grpc.ServerDuplexStream<any, any>>(handler: (call: C) => void) =>
  (call: C) => {
    if (leading) return handler(call)
    run(Effect.flatMap(recentLeader, (leader) => Effect.sync(() => Grpc.failStream(call, new NotLeader({ leader })))))
  }

  const subscribeHandler = (call: grpc.ServerWritableStream<v1.SubscribeRequest, v1.SubscribeResponse>) => {
    let current: Subscriber | undefined
    let ended = false
    const end = () => {
      if (ended) return
      ended = true
      if (current !== undefined) run(unsubscribe(current.frameworkId, current.streamId))
    }
    run(
      subscribe(call.request, {
        send: (event) => {
          if (!ended) call.write(event)
        },
        close: () => {
          ended = true
          call.end()
        }
      }).pipe(
        Effect.provideService(Security.Caller, security.caller(call.metadata, call.getPeer())),
        Effect.tap((s) => Effect.sync(() => (current = s))),
        Effect.catch((error) => Effect.sync(() => Grpc.failStream(call, error))),
        Effect.catchCause((cause) =>
          Effect.logError("subscription failed").pipe(
            Effect.annotateLogs({ cause: Cause.pretty(cause) }),
            Effect.andThen(Effect.sync(() => Grpc.failStream(call, { code: grpc.status.INTERNAL, details: "internal error" })))
          )
        )
      )
    )
    call.on("cancelled", end)
    call.on("close", end)
    call.on("error", end)
  }

  const unimplemented = (name: string) => () => Effect.fail(new Unimplemented({ field: name, feature: name }))

  const scheduler: v1.SchedulerServiceServer = {
    subscribe: guardStream(subscribeHandler),
    accept: Grpc.unary(context, guard(accept)),
    decline: Grpc.unary(context, guard(decline)),
    revive: Grpc.unary(context, guard(revive)),
    suppress: Grpc.unary(context, guard(suppress)),
    kill: Grpc.unary(context, guard(kill)),
    shutdown: Grpc.unary(context, guard(unimplemented("Shutdown"))),
    acknowledge: Grpc.unary(context, guard(acknowledge)),
    acknowledgeOperationStatus: Grpc.unary(context, guard(acknowledgeOperationStatus)),
    reconcile: Grpc.unary(context, guard(reconcile)),
    reconcileOperations: Grpc.unary(context, guard(reconcileOperations)),
    message: Grpc.unary(context, guard(message)),
    teardown: Grpc.unary(context, guard(teardown)),
    updateFramework: Grpc.unary(context, unimplemented("UpdateFramework"))
  }

  const operator: v1.OperatorServiceServer = {
    getMaster: Grpc.unary(context, () =>
      Effect.map(leading ? Effect.succeed(masterInfo.endpoint) : currentLeader, (leaderEndpoint) => ({ master: masterInfo, leaderEndpoint }))),
    getHealth: Grpc.unary(context, () => Effect.succeed({ healthy: true, message: "ok" })),
    getMetrics: Grpc.unary(context, () => Effect.map(Effect.promise(metrics.text), (prometheusText) => ({ prometheusText }))),
    getState: Grpc.unary(context, guard(() => Effect.sync(state))),
    getAgents: Grpc.unary(context, guard(() => Effect.sync(() => ({ agents: [...agents].map(([id, agent]) => agentView(id, agent)) })))),
    getFrameworks: Grpc.unary(context, guard(() => Effect.sync(() => ({ frameworks: [...frameworks.values()].map(frameworkView) })))),
    getTasks: Grpc.unary(context, guard((request: v1.GetTasksRequest) =>
      Effect.sync(() => ({
        tasks: [...tasks.values()]
          .filter((t) => request.frameworkId === "" || t.frameworkId === request.frameworkId)
          .map(taskView)
      })))),
    getRoles: Grpc.unary(context, guard(getRoles)),
    watchEvents: guardStream(watchEvents),
    drainAgent: Grpc.unary(context, guard(drain)),
    reactivateAgent: Grpc.unary(context, guard(reactivate)),
    markAgentGone: Grpc.unary(context, guard((request: v1.MarkAgentGoneRequest) => markGone(request.agentId))),
    getQuota: Grpc.unary(context, guard(() =>
      Effect.sync((): v1.GetQuotaResponse => ({
        quotas: allocator.roleNames().sort().flatMap((role) => {
          const quota = allocator.roleView(role).quota
          return quota === undefined ? [] : [{ role, limits: quantitiesToResources(quota) }]
        })
      })))),
    updateQuota: Grpc.unary(context, guard(updateQuota)),
    getWeights: Grpc.unary(context, guard(() =>
      Effect.sync((): v1.GetWeightsResponse => ({
        weights: allocator.roleNames().sort().map((role) => ({ role, weight: allocator.roleView(role).weight }))
      })))),
    updateWeights: Grpc.unary(context, guard(updateWeights)),
    reserveResources: Grpc.unary(context, guard((request: v1.ReserveResourcesRequest) => operatorConvert("reserve", request))),
    unreserveResources: Grpc.unary(context, guard((request: v1.UnreserveResourcesRequest) => operatorConvert("unreserve", request)))
  }

  // ---------------------------------------------------------------- background work, leadership

  /** What only a leader runs, in the scope of its term. */
  const startTerm = (term: Scope.Scope) =>
    Effect.gen(function*() {
      // A round runs every interval, and shortly after anything frees or adds resources; the short
      // delay lets a burst of changes (an Accept's leftovers, many terminal updates) share one round.
      yield* Effect.gen(function*() {
        yield* Effect.race(Queue.take(kicks), Effect.sleep(config.allocationIntervalMs))
        yield* Effect.sleep(5)
        allocate(yield* Clock.currentTimeMillis)
      }).pipe(Effect.forever, Effect.forkIn(term))

      // Heartbeats keep idle sessions alive and let schedulers notice a dead master; watchers of
      // the event stream learn it is alive even when nothing changes.
      yield* Effect.sync(() => {
        for (const framework of frameworks.values()) framework.subscriber?.send({ event: { $case: "heartbeat", value: {} } })
        emit({ $case: "heartbeat", value: {} })
      }).pipe(Effect.repeat(Schedule.spaced(config.frameworkHeartbeatSeconds * 1000)), Effect.forkIn(term))

      yield* Effect.all([checkAgents, checkFailoverTimeouts, finishDrains]).pipe(
        Effect.repeat(Schedule.spaced(Math.min(config.agentPingSeconds, 1) * 1000)),
        Effect.forkIn(term)
      )
    })

  const encoder = new TextEncoder()
  const decoder = new TextDecoder()
  const leaderValue = () => encoder.encode(JSON.stringify({ endpoint: masterInfo.endpoint, masterId: masterInfo.masterId }))

  /** Leads until the lease is lost, then steps down: every session and connection is closed. */
  const lead = (leadership: Election.Leadership) =>
    Effect.gen(function*() {
      yield* loadRegistry
      const term = yield* Scope.make()
      // The term's timers (allocation, heartbeats, ping and failover checks) stop with the master
      // too, not only when leadership is lost: `lost` below is never reached when it is stopped.
      yield* Effect.addFinalizer(() => Scope.close(term, Exit.void))
      yield* startTerm(term)
      leading = true
      masterInfo.leading = true
      yield* Effect.logInfo("leading").pipe(Effect.annotateLogs({ endpoint: masterInfo.endpoint }))
      kick()
      yield* registerHeld
      yield* leadership.lost
      leading = false
      masterInfo.leading = false
      yield* Scope.close(term, Exit.void)
      for (const framework of frameworks.values()) framework.subscriber?.close()
      for (const agent of agents.values()) agent.connection?.close()
      yield* Effect.logError("lost leadership: stepped down to standby").pipe(Effect.annotateLogs({ endpoint: masterInfo.endpoint }))
    })

    const { port } = yield* Grpc.serve(
    `${config.host}:${config.port}`,
    [
      [v1.SchedulerServiceService, scheduler],
      [v1.AgentServiceService, { connect: connectHandler }],
      [v1.OperatorServiceService, operator]
    ],
    "master",
    { maxMessageBytes: config.maxMessageBytes, credentials: security.serverCredentials, interceptors: security.interceptors }
  )
  masterInfo.endpoint = Grpc.endpoint(config.host, port)
  const httpEndpoint = config.httpPort === undefined
    ? undefined
    : yield* Http.serve(config.host, config.httpPort, {
      "/metrics": async () => ({ contentType: metrics.contentType, body: await metrics.text() }),
      "/health": async () => ({ contentType: "application/json", body: JSON.stringify({ healthy: true, leading: masterInfo.leading }) })
    })
  yield* Effect.logInfo("master listening").pipe(Effect.annotateLogs({ endpoint: masterInfo.endpoint }))
  // A single master (or the first of several) wins at once, before start returns; otherwise this
  // master serves as a standby and keeps campaigning in the background.
  const lease = { ttl: `${config.leaderLeaseSeconds} seconds` as const }
  const first = yield* Election.tryCampaign(config.leaderKey, leaderValue(), lease).pipe(Effect.orDie)
  const campaign = Effect.scoped(Effect.flatMap(Election.campaign(config.leaderKey, leaderValue(), lease), lead)).pipe(
    Effect.catchCause((cause) =>
      Effect.logError("leader election failed; retrying").pipe(Effect.annotateLogs({ cause: Cause.pretty(cause) }))
    ),
    Effect.andThen(Effect.sleep(200)),
    Effect.forever
  )
  if (Option.isSome(first)) {
    yield* Effect.scoped(lead(first.value)).pipe(Effect.andThen(campaign), Effect.forkIn(scope))
    // lead() sets `leading` synchronously up to its first wait; yield until it has.
    while (!leading) yield* Effect.sleep(1)
  } else {
    yield* Effect.logInfo("standby: another master leads").pipe(Effect.annotateLogs({ endpoint: masterInfo.endpoint }))
    yield* campaign.pipe(Effect.forkIn(scope))
  }
  const handle: MasterHandle = { endpoint: masterInfo.endpoint, httpEndpoint, port, info: masterInfo }
  return handle
})
