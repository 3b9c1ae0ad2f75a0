import * as grpc from "@grpc/grpc-js"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Cause, Clock, Effect, Queue, Schedule, Scope } from "effect"
import { randomUUID } from "node:crypto"
import { FrameworkRemoved, InvalidArgument, NotFound, StaleSession, Unimplemented, type RequestError } from "../../ClusterError.ts"
import * as Grpc from "../grpc.ts"
import * as Validate from "./validation.ts"

export interface MasterConfig {
  readonly host: string
  readonly port: number
  /** How often a full allocation round runs; freed resources also trigger one at once. */
  readonly allocationIntervalMs: number
  /** An unused offer is rescinded after this long (invariant 1: offers expire). */
  readonly offerTimeoutSeconds: number
  readonly frameworkHeartbeatSeconds: number
  readonly agentPingSeconds: number
  /** Refusal applied by Decline (and to what an Accept leaves unused) when no filter is given. */
  readonly defaultRefuseSeconds: number
  readonly version: string
}

export const defaults: MasterConfig = {
  host: "127.0.0.1",
  port: 5050,
  allocationIntervalMs: 1000,
  offerTimeoutSeconds: 60,
  frameworkHeartbeatSeconds: 15,
  agentPingSeconds: 5,
  defaultRefuseSeconds: 5,
  version: "0.1.0"
}

export interface MasterHandle {
  readonly endpoint: string
  readonly port: number
  readonly info: v1.MasterInfo
}

interface AgentConnection {
  readonly send: (message: v1.ConnectResponse) => void
  readonly close: () => void
}

interface AgentEntry {
  info: v1.AgentInfo
  used: Array<v1.Resource>
  offered: Array<v1.Resource>
  connection: AgentConnection | undefined
  registeredAtMs: number
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
  /** Agent id → time (ms) until which this framework is not offered that agent's resources. */
  readonly filters: Map<string, number>
  suppressedRoles: Set<string>
  used: Array<v1.Resource>
  offered: Array<v1.Resource>
}

interface TaskEntry {
  readonly frameworkId: string
  readonly agentId: string
  readonly info: v1.TaskInfo
  state: v1.TaskState
  status: v1.TaskStatus | undefined
}

interface OfferEntry {
  readonly offer: v1.Offer
}

const FRAMEWORKS = "berth/master/frameworks/"
const AGENTS = "berth/master/agents/"
const REMOVED = "berth/master/removed-frameworks/"
const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Minimum resources worth offering, so frameworks are not flooded with crumbs. */
const allocatable = (resources: ReadonlyArray<v1.Resource>): boolean =>
  Resources.sumScalar(resources, "cpus") >= 0.01 || Resources.sumScalar(resources, "mem") >= 32

/**
 * The master: agent registry, framework sessions, offers and task bookkeeping. All state lives in
 * plain maps mutated only by synchronous sections, so the single JS thread serialises them; the
 * durable registry (frameworks and admitted agents) is written through `StateStore` before a
 * registration is answered.
 */
export const make = Effect.fn("Master.make")(function*(config: MasterConfig) {
  const store = yield* StateStore.StateStore
  const scope = yield* Scope.Scope
  const context = yield* Effect.context<StateStore.StateStore>()
  const run = <A, E>(effect: Effect.Effect<A, E, StateStore.StateStore>) => Effect.runForkWith(context)(effect)

  const agents = new Map<string, AgentEntry>()
  const frameworks = new Map<string, FrameworkEntry>()
  const tasks = new Map<string, TaskEntry>()
  const offers = new Map<string, OfferEntry>()
  /** Agents known to the durable registry but not (yet) re-registered. */
  const admittedAgents = new Map<string, v1.AgentInfo>()
  /** Torn-down framework ids: they may never subscribe again (and so never redeploy by accident). */
  const removedFrameworks = new Set<string>()

  for (const entry of yield* store.list(FRAMEWORKS).pipe(Effect.orDie)) {
    const info = v1.FrameworkInfo.fromJSON(JSON.parse(decoder.decode(entry.value)))
    frameworks.set(info.frameworkId, {
      info,
      subscriber: undefined,
      filters: new Map(),
      suppressedRoles: new Set(),
      used: [],
      offered: []
    })
  }
  for (const entry of yield* store.list(REMOVED).pipe(Effect.orDie)) removedFrameworks.add(entry.key.slice(REMOVED.length))
  for (const entry of yield* store.list(AGENTS).pipe(Effect.orDie)) {
    const info = v1.AgentInfo.fromJSON(JSON.parse(decoder.decode(entry.value)))
    admittedAgents.set(info.agentId, info)
  }

  const startTimeMs = yield* Clock.currentTimeMillis
  const masterInfo: v1.MasterInfo = {
    masterId: randomUUID(),
    endpoint: "",
    version: config.version,
    startTimeMs,
    leading: true
  }

  const kicks = yield* Queue.sliding<void>(1)
  const kick = () => Queue.offerUnsafe(kicks, undefined)

  const taskKey = (frameworkId: string, taskId: string) => `${frameworkId}/${taskId}`

  // ---------------------------------------------------------------- offers and allocation

  const removeOffer = (offerId: string): OfferEntry | undefined => {
    const entry = offers.get(offerId)
    if (entry === undefined) return undefined
    offers.delete(offerId)
    const agent = agents.get(entry.offer.agentId)
    if (agent !== undefined) agent.offered = Resources.subtract(agent.offered, entry.offer.resources)
    const framework = frameworks.get(entry.offer.frameworkId)
    if (framework !== undefined) framework.offered = Resources.subtract(framework.offered, entry.offer.resources)
    return entry
  }

  /** Takes offers back and tells their frameworks, batched per framework. */
  const rescind = (predicate: (offer: v1.Offer) => boolean) => {
    const byFramework = new Map<string, Array<string>>()
    for (const { offer } of [...offers.values()]) {
      if (!predicate(offer)) continue
      removeOffer(offer.offerId)
      byFramework.set(offer.frameworkId, [...(byFramework.get(offer.frameworkId) ?? []), offer.offerId])
    }
    for (const [frameworkId, offerIds] of byFramework) {
      frameworks.get(frameworkId)?.subscriber?.send({ event: { $case: "rescind", value: { offerIds } } })
    }
    if (byFramework.size > 0) kick()
  }

  const totals = () => {
    let cpus = 0
    let mem = 0
    for (const agent of agents.values()) {
      if (agent.connection === undefined) continue
      cpus += Resources.sumScalar(agent.info.resources, "cpus")
      mem += Resources.sumScalar(agent.info.resources, "mem")
    }
    return { cpus: Math.max(cpus, 1e-9), mem: Math.max(mem, 1e-9) }
  }

  /** Dominant resource share: the framework with the smallest share gets the next offer. */
  const share = (framework: FrameworkEntry, total: { cpus: number; mem: number }) => {
    const held = Resources.add(framework.used, framework.offered)
    return Math.max(Resources.sumScalar(held, "cpus") / total.cpus, Resources.sumScalar(held, "mem") / total.mem)
  }

  const offerable = (resources: ReadonlyArray<v1.Resource>, role: string) =>
    resources.filter((r) => r.reservations.length === 0 || r.reservations.at(-1)?.role === role)

  const allocate = (now: number) => {
    rescind((offer) => offer.expiresAtMs <= now)
    const total = totals()
    const batches = new Map<string, Array<v1.Offer>>()
    for (const agent of agents.values()) {
      if (agent.connection === undefined) continue
      const available = Resources.subtract(agent.info.resources, Resources.add(agent.used, agent.offered))
      if (!allocatable(available)) continue
      const candidates = [...frameworks.values()]
        .filter((f) => f.subscriber !== undefined && (f.filters.get(agent.info.agentId) ?? 0) <= now)
        .map((f) => ({ f, role: (f.info.roles.length > 0 ? f.info.roles : ["*"]).find((r) => !f.suppressedRoles.has(r)) }))
        .filter((c): c is { f: FrameworkEntry; role: string } => c.role !== undefined)
        .sort((a, b) => share(a.f, total) - share(b.f, total))
      for (const { f, role } of candidates) {
        const resources = Resources.allocate(offerable(available, role), role)
        if (!allocatable(resources)) continue
        const offer: v1.Offer = {
          offerId: randomUUID(),
          frameworkId: f.info.frameworkId,
          agentId: agent.info.agentId,
          hostname: agent.info.hostname,
          resources,
          attributes: agent.info.attributes,
          allocationRole: role,
          executorIds: [],
          expiresAtMs: now + config.offerTimeoutSeconds * 1000
        }
        offers.set(offer.offerId, { offer })
        agent.offered = Resources.add(agent.offered, resources)
        f.offered = Resources.add(f.offered, resources)
        batches.set(f.info.frameworkId, [...(batches.get(f.info.frameworkId) ?? []), offer])
        break
      }
    }
    for (const [frameworkId, batch] of batches) {
      frameworks.get(frameworkId)?.subscriber?.send({ event: { $case: "offers", value: { offers: batch } } })
    }
  }

  // A round runs every interval, and shortly after anything frees or adds resources; the short
  // delay lets a burst of changes (an Accept's leftovers, many terminal updates) share one round.
  yield* Effect.gen(function*() {
    yield* Effect.race(Queue.take(kicks), Effect.sleep(config.allocationIntervalMs))
    yield* Effect.sleep(5)
    allocate(yield* Clock.currentTimeMillis)
  }).pipe(Effect.forever, Effect.forkIn(scope))

  // Heartbeats keep idle sessions alive and let schedulers notice a dead master.
  yield* Effect.sync(() => {
    for (const framework of frameworks.values()) {
      framework.subscriber?.send({ event: { $case: "heartbeat", value: {} } })
    }
  }).pipe(Effect.repeat(Schedule.spaced(config.frameworkHeartbeatSeconds * 1000)), Effect.forkIn(scope))

  // ---------------------------------------------------------------- scheduler API

  const session = (ref: v1.SessionRef | undefined): Effect.Effect<FrameworkEntry, StaleSession | InvalidArgument> => {
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
    return Effect.succeed(framework)
  }

  const updateEvent = (statuses: Array<v1.TaskStatus>): v1.SubscribeResponse => ({
    event: { $case: "update", value: { statuses } }
  })

  const masterStatus = (
    task: { taskId: string; agentId: string },
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

  const subscribe = (
    request: v1.SubscribeRequest,
    subscriber: Omit<Subscriber, "streamId" | "frameworkId">
  ): Effect.Effect<Subscriber, RequestError, StateStore.StateStore> =>
    Effect.gen(function*() {
      const problem = Validate.frameworkInfo(request.frameworkInfo)
      if (problem !== undefined) return yield* problem
      const info = request.frameworkInfo!
      let frameworkId = info.frameworkId
      if (removedFrameworks.has(frameworkId)) return yield* new FrameworkRemoved({ frameworkId })
      if (frameworkId !== "" && !frameworks.has(frameworkId)) {
        return yield* new NotFound({
          field: "frameworkInfo.frameworkId",
          rule: `framework ${frameworkId} is unknown to this cluster (torn down or never registered)`
        })
      }
      if (frameworkId === "") frameworkId = randomUUID()
      const stored: v1.FrameworkInfo = { ...info, frameworkId, roles: info.roles.length > 0 ? info.roles : ["*"] }
      yield* store.put(FRAMEWORKS + frameworkId, encoder.encode(JSON.stringify(v1.FrameworkInfo.toJSON(stored)))).pipe(
        Effect.orDie
      )
      const current: Subscriber = { ...subscriber, frameworkId, streamId: randomUUID() }
      const existing = frameworks.get(frameworkId)
      if (existing !== undefined) {
        // Failover: the newest scheduler wins; the old stream is closed and its offers void.
        const previous = existing.subscriber
        existing.info = stored
        existing.subscriber = current
        existing.suppressedRoles = new Set(request.suppressedRoles)
        existing.filters.clear()
        rescind((offer) => offer.frameworkId === frameworkId)
        // Tell the old scheduler why it lost the session, so it stops instead of re-subscribing
        // and taking the session back.
        previous?.send({
          event: { $case: "error", value: { message: `framework ${frameworkId} failed over to another scheduler` } }
        })
        previous?.close()
      } else {
        frameworks.set(frameworkId, {
          info: stored,
          subscriber: current,
          filters: new Map(),
          suppressedRoles: new Set(request.suppressedRoles),
          used: [],
          offered: []
        })
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

  const unsubscribe = (frameworkId: string, streamId: string) => {
    const framework = frameworks.get(frameworkId)
    if (framework?.subscriber?.streamId !== streamId) return
    framework.subscriber = undefined
    rescind((offer) => offer.frameworkId === frameworkId)
  }

  const accept = (request: v1.AcceptRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const frameworkId = framework.info.frameworkId
      if (request.offerIds.length === 0) return yield* new InvalidArgument({ field: "offerIds", rule: "must list at least one offer" })
      const used: Array<OfferEntry> = []
      for (const [i, offerId] of request.offerIds.entries()) {
        const entry = offers.get(offerId)
        if (entry === undefined || entry.offer.frameworkId !== frameworkId) {
          return yield* new InvalidArgument({
            field: `offerIds[${i}]`,
            rule: `offer "${offerId}" is unknown, expired or already used (an offer id can be used once)`
          })
        }
        if (request.offerIds.indexOf(offerId) !== i) {
          return yield* new InvalidArgument({ field: `offerIds[${i}]`, rule: `offer "${offerId}" is listed twice` })
        }
        if (used.length > 0 && used[0]!.offer.agentId !== entry.offer.agentId) {
          return yield* new InvalidArgument({ field: `offerIds[${i}]`, rule: "all offers of an Accept must be on one agent" })
        }
        used.push(entry)
      }
      const agentId = used[0]!.offer.agentId
      const offered = Resources.add([], used.flatMap((e) => e.offer.resources))
      const launches: Array<v1.TaskInfo> = []
      const seen = new Set<string>()
      for (const [i, operation] of request.operations.entries()) {
        const launch = Validate.operationKind(`operations[${i}]`, operation)
        if (!("taskInfos" in launch)) return yield* launch
        for (const [j, info] of launch.taskInfos.entries()) {
          const field = `operations[${i}].launch.taskInfos[${j}]`
          const problem = Validate.task(field, info, agentId)
          if (problem !== undefined) return yield* problem
          const existing = tasks.get(taskKey(frameworkId, info.taskId))
          if (seen.has(info.taskId) || (existing !== undefined && !TaskStates.isTerminal(existing.state))) {
            return yield* new InvalidArgument({ field: `${field}.taskId`, rule: `task "${info.taskId}" already exists` })
          }
          seen.add(info.taskId)
          launches.push({ ...info, agentId })
        }
      }
      const needed = Resources.add([], launches.flatMap((t) => t.resources))
      const problem = Validate.fits(offered, needed)
      if (problem !== undefined) return yield* problem
      const agent = agents.get(agentId)
      if (agent?.connection === undefined) {
        return yield* new InvalidArgument({ field: "offerIds", rule: `agent ${agentId} is no longer connected` })
      }

      // Everything checked: from here on nothing fails, so the Accept is all or nothing.
      const now = yield* Clock.currentTimeMillis
      for (const entry of used) removeOffer(entry.offer.offerId)
      const role = used[0]!.offer.allocationRole
      const consumed = Resources.allocate(needed, role)
      agent.used = Resources.add(agent.used, consumed)
      framework.used = Resources.add(framework.used, consumed)
      const staging: Array<v1.TaskStatus> = []
      for (const info of launches) {
        const status = masterStatus(info, v1.TaskState.STAGING, v1.TaskStatus_Reason.UNSPECIFIED, "", now)
        tasks.set(taskKey(frameworkId, info.taskId), { frameworkId, agentId, info, state: v1.TaskState.STAGING, status })
        staging.push(status)
      }
      if (launches.length > 0) {
        agent.connection.send({
          message: {
            $case: "run",
            value: { tasks: launches.map((task) => ({ framework: framework.info, task })), taskGroups: [] }
          }
        })
        framework.subscriber?.send(updateEvent(staging))
      }
      const leftover = Resources.subtract(offered, needed)
      if (allocatable(leftover)) {
        const refuse = request.filters?.refuseSeconds ?? config.defaultRefuseSeconds
        framework.filters.set(agentId, now + refuse * 1000)
      }
      kick()
      return { launchedTaskIds: launches.map((t) => t.taskId) }
    })

  const decline = (request: v1.DeclineRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const now = yield* Clock.currentTimeMillis
      const refuse = request.filters?.refuseSeconds ?? config.defaultRefuseSeconds
      if (!(refuse >= 0)) return yield* new InvalidArgument({ field: "filters.refuseSeconds", rule: "must be >= 0" })
      for (const offerId of request.offerIds) {
        const entry = offers.get(offerId)
        // Declining an offer that is already gone is harmless: the framework may race a rescind.
        if (entry === undefined || entry.offer.frameworkId !== framework.info.frameworkId) continue
        removeOffer(offerId)
        framework.filters.set(entry.offer.agentId, now + refuse * 1000)
      }
      kick()
      return {}
    })

  const revive = (request: v1.ReviveRequest) =>
    Effect.map(session(request.session), (framework) => {
      framework.filters.clear()
      if (request.roles.length === 0) framework.suppressedRoles.clear()
      for (const role of request.roles) framework.suppressedRoles.delete(role)
      kick()
      return {}
    })

  const suppress = (request: v1.SuppressRequest) =>
    Effect.map(session(request.session), (framework) => {
      const roles = request.roles.length > 0 ? request.roles : framework.info.roles
      for (const role of roles) framework.suppressedRoles.add(role)
      rescind((offer) => offer.frameworkId === framework.info.frameworkId && roles.includes(offer.allocationRole))
      return {}
    })

  const kill = (request: v1.KillRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const frameworkId = framework.info.frameworkId
      const now = yield* Clock.currentTimeMillis
      const answers: Array<v1.TaskStatus> = []
      const byAgent = new Map<string, Array<v1.ConnectResponse_KillTask>>()
      for (const [i, k] of request.kills.entries()) {
        if (k.taskId === "") return yield* new InvalidArgument({ field: `kills[${i}].taskId`, rule: "is required" })
        const task = tasks.get(taskKey(frameworkId, k.taskId))
        if (task === undefined) {
          answers.push(masterStatus(k, v1.TaskState.UNKNOWN, v1.TaskStatus_Reason.TASK_UNKNOWN, "unknown task", now))
        } else if (TaskStates.isTerminal(task.state)) {
          if (task.status !== undefined) answers.push({ ...task.status, uuid: new Uint8Array(), source: v1.TaskStatus_Source.MASTER })
        } else {
          const killTask: v1.ConnectResponse_KillTask = { frameworkId, taskId: k.taskId }
          const policy = k.killPolicy ?? task.info.killPolicy
          byAgent.set(task.agentId, [...(byAgent.get(task.agentId) ?? []), policy === undefined ? killTask : { ...killTask, killPolicy: policy }])
        }
      }
      for (const [agentId, kills] of byAgent) agents.get(agentId)?.connection?.send({ message: { $case: "kill", value: { kills } } })
      if (answers.length > 0) framework.subscriber?.send(updateEvent(answers))
      return {}
    })

  const acknowledge = (request: v1.AcknowledgeRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const byAgent = new Map<string, Array<v1.ConnectResponse_Acknowledgement>>()
      for (const [i, ack] of request.acknowledgements.entries()) {
        if (ack.uuid.length === 0) {
          return yield* new InvalidArgument({ field: `acknowledgements[${i}].uuid`, rule: "is required" })
        }
        const agentId = ack.agentId !== "" ? ack.agentId : tasks.get(taskKey(framework.info.frameworkId, ack.taskId))?.agentId
        if (agentId === undefined) {
          return yield* new InvalidArgument({ field: `acknowledgements[${i}].agentId`, rule: "is required for an unknown task" })
        }
        byAgent.set(agentId, [
          ...(byAgent.get(agentId) ?? []),
          { frameworkId: framework.info.frameworkId, taskId: ack.taskId, uuid: ack.uuid }
        ])
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
        ...(task.status ?? masterStatus({ taskId: task.info.taskId, agentId: task.agentId }, task.state, 0, "", now)),
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
      if (statuses.length > 0) framework.subscriber?.send(updateEvent(statuses))
      return {}
    })

  const teardown = (request: v1.TeardownRequest) =>
    Effect.gen(function*() {
      const framework = yield* session(request.session)
      const frameworkId = framework.info.frameworkId
      yield* store.put(REMOVED + frameworkId, encoder.encode(JSON.stringify(v1.FrameworkInfo.toJSON(framework.info)))).pipe(
        Effect.orDie
      )
      yield* store.delete(FRAMEWORKS + frameworkId).pipe(Effect.orDie)
      removedFrameworks.add(frameworkId)
      rescind((offer) => offer.frameworkId === frameworkId)
      const byAgent = new Map<string, Array<v1.ConnectResponse_KillTask>>()
      for (const [key, task] of tasks) {
        if (task.frameworkId !== frameworkId) continue
        if (!TaskStates.isTerminal(task.state)) {
          byAgent.set(task.agentId, [...(byAgent.get(task.agentId) ?? []), { frameworkId, taskId: task.info.taskId }])
          releaseTask(task)
        }
        tasks.delete(key)
      }
      for (const [agentId, kills] of byAgent) agents.get(agentId)?.connection?.send({ message: { $case: "kill", value: { kills } } })
      frameworks.delete(frameworkId)
      framework.subscriber?.send({ event: { $case: "error", value: { message: `framework ${frameworkId} was torn down` } } })
      framework.subscriber?.close()
      kick()
      yield* Effect.logInfo("framework torn down").pipe(Effect.annotateLogs({ frameworkId }))
      return {}
    })

  // ---------------------------------------------------------------- agent API

  const registerAgent = (register: v1.ConnectRequest_Register, connection: AgentConnection) =>
    Effect.gen(function*() {
      const offeredInfo = register.agentInfo
      if (offeredInfo === undefined) return yield* new InvalidArgument({ field: "register.agentInfo", rule: "is required" })
      if (Resources.sumScalar(offeredInfo.resources, "cpus") <= 0) {
        return yield* new InvalidArgument({ field: "register.agentInfo.resources", rule: "cpus must be > 0" })
      }
      const known = offeredInfo.agentId !== "" && (agents.has(offeredInfo.agentId) || admittedAgents.has(offeredInfo.agentId))
      const agentId = known ? offeredInfo.agentId : randomUUID()
      const info: v1.AgentInfo = { ...offeredInfo, agentId }
      yield* store.put(AGENTS + agentId, encoder.encode(JSON.stringify(v1.AgentInfo.toJSON(info)))).pipe(Effect.orDie)
      admittedAgents.set(agentId, info)
      const now = yield* Clock.currentTimeMillis
      const previous = agents.get(agentId)
      rescind((offer) => offer.agentId === agentId)
      previous?.connection?.close()
      const entry: AgentEntry = { info, used: [], offered: [], connection, registeredAtMs: now }
      agents.set(agentId, entry)
      // Task state is rebuilt from what the agent reports (invariant 5).
      for (const report of register.tasks) {
        if (report.task === undefined) continue
        const key = taskKey(report.frameworkId, report.task.taskId)
        const state = report.latestStatus?.state ?? v1.TaskState.STAGING
        const previousTask = tasks.get(key)
        if (previousTask !== undefined && !TaskStates.isTerminal(previousTask.state)) releaseTask(previousTask)
        tasks.set(key, { frameworkId: report.frameworkId, agentId, info: report.task, state, status: report.latestStatus })
        if (!TaskStates.isTerminal(state)) {
          entry.used = Resources.add(entry.used, report.task.resources)
          const framework = frameworks.get(report.frameworkId)
          if (framework !== undefined) framework.used = Resources.add(framework.used, report.task.resources)
        }
      }
      connection.send({
        message: {
          $case: "registered",
          value: { agentId, pingIntervalSeconds: config.agentPingSeconds, masterInfo }
        }
      })
      kick()
      yield* Effect.logInfo(known ? "agent re-registered" : "agent registered").pipe(
        Effect.annotateLogs({ agentId, hostname: info.hostname, resources: Resources.format(info.resources) })
      )
      return agentId
    })

  const releaseTask = (task: TaskEntry) => {
    const agent = agents.get(task.agentId)
    if (agent !== undefined) agent.used = Resources.subtract(agent.used, task.info.resources)
    const framework = frameworks.get(task.frameworkId)
    if (framework !== undefined) framework.used = Resources.subtract(framework.used, task.info.resources)
  }

  const statusUpdates = (agentId: string, updates: ReadonlyArray<v1.StatusUpdate>) => {
    const byFramework = new Map<string, Array<v1.TaskStatus>>()
    let freed = false
    for (const update of updates) {
      const status = update.status
      if (status === undefined) continue
      if (removedFrameworks.has(update.frameworkId)) {
        // Nobody will acknowledge these: the master does, so the agent can forget the task.
        agents.get(agentId)?.connection?.send({
          message: {
            $case: "acknowledgements",
            value: { acknowledgements: [{ frameworkId: update.frameworkId, taskId: status.taskId, uuid: status.uuid }] }
          }
        })
        continue
      }
      const key = taskKey(update.frameworkId, status.taskId)
      const task = tasks.get(key)
      if (task !== undefined) {
        const wasTerminal = TaskStates.isTerminal(task.state)
        task.state = status.state
        task.status = status
        if (!wasTerminal && TaskStates.isTerminal(status.state)) {
          releaseTask(task)
          freed = true
        }
      }
      byFramework.set(update.frameworkId, [...(byFramework.get(update.frameworkId) ?? []), { ...status, agentId }])
    }
    // A disconnected framework misses these; the agent resends until they are acknowledged.
    for (const [frameworkId, statuses] of byFramework) frameworks.get(frameworkId)?.subscriber?.send(updateEvent(statuses))
    if (freed) kick()
  }

  const agentConnect = (call: grpc.ServerDuplexStream<v1.ConnectRequest, v1.ConnectResponse>) => {
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
      if (agentId === undefined) return
      const agent = agents.get(agentId)
      if (agent?.connection !== connection) return
      agent.connection = undefined
      rescind((offer) => offer.agentId === agentId)
      run(Effect.logWarning("agent disconnected").pipe(Effect.annotateLogs({ agentId })))
    }
    call.on("data", (request: v1.ConnectRequest) => {
      const message = request.message
      if (message === undefined) return
      switch (message.$case) {
        case "register":
          run(
            registerAgent(message.value, connection).pipe(
              Effect.tap((id) => Effect.sync(() => (agentId = id))),
              Effect.catch((error) =>
                Effect.sync(() => Grpc.failStream(call, error))
              ),
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
        default:
          return
      }
    })
    call.on("end", () => {
      disconnect()
      call.end()
    })
    call.on("error", disconnect)
    call.on("cancelled", disconnect)
  }

  // ---------------------------------------------------------------- operator API

  const agentView = (agent: AgentEntry): v1.Agent => ({
    info: agent.info,
    state: agent.connection === undefined ? v1.Agent_State.UNREACHABLE : v1.Agent_State.ACTIVE,
    allocated: agent.used,
    offered: agent.offered,
    registeredTimeMs: agent.registeredAtMs
  })
  const frameworkView = (f: FrameworkEntry): v1.Framework => ({
    info: f.info,
    connected: f.subscriber !== undefined,
    active: f.subscriber !== undefined,
    allocated: f.used,
    offered: f.offered,
    failoverDeadlineMs: 0
  })
  const taskView = (t: TaskEntry): v1.Task => ({
    frameworkId: t.frameworkId,
    agentId: t.agentId,
    info: t.info,
    state: t.state,
    ...(t.status === undefined ? {} : { status: t.status })
  })

  // ---------------------------------------------------------------- wiring

  const subscribeHandler = (call: grpc.ServerWritableStream<v1.SubscribeRequest, v1.SubscribeResponse>) => {
    let current: Subscriber | undefined
    let ended = false
    const end = () => {
      if (ended) return
      ended = true
      if (current !== undefined) unsubscribe(current.frameworkId, current.streamId)
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
        Effect.tap((s) => Effect.sync(() => (current = s))),
        Effect.catch((error) =>
          Effect.sync(() => Grpc.failStream(call, error))
        ),
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
    subscribe: subscribeHandler,
    accept: Grpc.unary(context, accept),
    decline: Grpc.unary(context, decline),
    revive: Grpc.unary(context, revive),
    suppress: Grpc.unary(context, suppress),
    kill: Grpc.unary(context, kill),
    shutdown: Grpc.unary(context, unimplemented("Shutdown")),
    acknowledge: Grpc.unary(context, acknowledge),
    acknowledgeOperationStatus: Grpc.unary(context, unimplemented("AcknowledgeOperationStatus")),
    reconcile: Grpc.unary(context, reconcile),
    reconcileOperations: Grpc.unary(context, unimplemented("ReconcileOperations")),
    message: Grpc.unary(context, unimplemented("Message")),
    teardown: Grpc.unary(context, teardown),
    updateFramework: Grpc.unary(context, unimplemented("UpdateFramework"))
  }

  const state = (): v1.GetStateResponse => ({
    master: masterInfo,
    agents: [...agents.values()].map(agentView),
    frameworks: [...frameworks.values()].map(frameworkView),
    tasks: [...tasks.values()].map(taskView),
    offers: [...offers.values()].map((o) => o.offer)
  })

  const operator: v1.OperatorServiceServer = {
    getMaster: Grpc.unary(context, () => Effect.succeed({ master: masterInfo, leaderEndpoint: masterInfo.endpoint })),
    getHealth: Grpc.unary(context, () => Effect.succeed({ healthy: true, message: "ok" })),
    getMetrics: Grpc.unary(context, unimplemented("GetMetrics")),
    getState: Grpc.unary(context, () => Effect.sync(state)),
    getAgents: Grpc.unary(context, () => Effect.sync(() => ({ agents: state().agents }))),
    getFrameworks: Grpc.unary(context, () => Effect.sync(() => ({ frameworks: state().frameworks }))),
    getTasks: Grpc.unary(context, (request: v1.GetTasksRequest) =>
      Effect.sync(() => ({
        tasks: state().tasks.filter((t) => request.frameworkId === "" || t.frameworkId === request.frameworkId)
      }))),
    getRoles: Grpc.unary(context, unimplemented("GetRoles")),
    watchEvents: (call) => Grpc.failStream(call, new Unimplemented({ field: "WatchEvents", feature: "WatchEvents" })),
    drainAgent: Grpc.unary(context, unimplemented("DrainAgent")),
    reactivateAgent: Grpc.unary(context, unimplemented("ReactivateAgent")),
    markAgentGone: Grpc.unary(context, unimplemented("MarkAgentGone")),
    getQuota: Grpc.unary(context, unimplemented("GetQuota")),
    updateQuota: Grpc.unary(context, unimplemented("UpdateQuota")),
    getWeights: Grpc.unary(context, unimplemented("GetWeights")),
    updateWeights: Grpc.unary(context, unimplemented("UpdateWeights")),
    reserveResources: Grpc.unary(context, unimplemented("ReserveResources")),
    unreserveResources: Grpc.unary(context, unimplemented("UnreserveResources"))
  }

  const { port } = yield* Grpc.serve(
    `${config.host}:${config.port}`,
    [
      [v1.SchedulerServiceService, scheduler],
      [v1.AgentServiceService, { connect: agentConnect }],
      [v1.OperatorServiceService, operator]
    ],
    "master"
  )
  masterInfo.endpoint = Grpc.endpoint(config.host, port)
  yield* Effect.logInfo("master listening").pipe(Effect.annotateLogs({ endpoint: masterInfo.endpoint }))
  const handle: MasterHandle = { endpoint: masterInfo.endpoint, port, info: masterInfo }
  return handle
})

