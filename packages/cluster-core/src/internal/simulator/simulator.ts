import * as grpc from "@grpc/grpc-js"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { Clock, Deferred, Effect } from "effect"
import { randomBytes, randomUUID } from "node:crypto"
import { StartupError } from "../../ClusterError.ts"
import * as Detect from "../agent/detect.ts"
import * as Grpc from "../grpc.ts"

export interface SimulatorConfig {
  readonly masters: ReadonlyArray<string>
  readonly agents: number
  readonly resources: string
  readonly attributes: (index: number) => string
  readonly taskSeconds: number | undefined
  readonly agentsPerConnection: number
  readonly hostnamePrefix: string
}

export interface SimulatorHandle {
  /** Completes once every agent has been registered at least once. */
  readonly registered: Effect.Effect<void>
  readonly agentIds: () => ReadonlyArray<string>
  /** Tasks by state, across all agents. */
  readonly tasks: () => { readonly running: number; readonly finished: number; readonly killed: number; readonly failed: number }
  /** Updates waiting for an acknowledgement, across all agents. */
  readonly pendingUpdates: () => number
  /** Registrations (first and later ones), e.g. to measure a master failover. */
  readonly registrations: () => number
  /** How many agents are connected and registered right now. */
  readonly connected: () => number
}

interface SimTask {
  readonly frameworkId: string
  readonly info: v1.TaskInfo
  state: v1.TaskState
  latest: v1.TaskStatus | undefined
  /** Unacknowledged updates, oldest first; only the first is in flight (as on a real agent). */
  readonly pending: Array<v1.TaskStatus>
  timer: ReturnType<typeof setTimeout> | undefined
  /** The task's entry in a Register message (field tag, length, TaskReport), once encoded. */
  encoded: Uint8Array | undefined
}

/**
 * Connect with messages that may come pre-encoded: when a master dies, thousands of simulated
 * agents re-register at once, and encoding every task report again would cost this one process
 * what thousands of real agents each spend on their own.
 */
const connectMethod = {
  ...v1.AgentServiceService.connect,
  requestSerialize: (value: v1.ConnectRequest | Uint8Array): Buffer =>
    value instanceof Uint8Array
      ? Buffer.from(value.buffer, value.byteOffset, value.byteLength)
      : v1.AgentServiceService.connect.requestSerialize(value)
}
interface SimClient {
  connect(metadata: grpc.Metadata): grpc.ClientDuplexStream<v1.ConnectRequest | Uint8Array, v1.ConnectResponse>
  close(): void
}
const SimClient = grpc.makeGenericClientConstructor({ connect: connectMethod }, "AgentService") as unknown as new(
  target: string,
  credentials: grpc.ChannelCredentials,
  options: grpc.ClientOptions
) => SimClient

const emptyRegister = v1.ConnectRequest_Register.create()
/** The tag of ConnectRequest's `register` field: its encoding with an empty Register, less the 0 length. */
const registerTag = v1.ConnectRequest.encode({ message: { $case: "register", value: emptyRegister } }).finish().slice(0, -1)
const varint = (n: number): Uint8Array => {
  const out: Array<number> = []
  while (n > 127) {
    out.push((n & 127) | 128)
    n >>>= 7
  }
  out.push(n)
  return Uint8Array.from(out)
}
/** A task's entry in a Register: a Register holding only that task encodes to exactly it. */
const encodeReport = (task: SimTask): Uint8Array =>
  v1.ConnectRequest_Register.encode({
    ...emptyRegister,
    tasks: [{ frameworkId: task.frameworkId, task: task.info, ...(task.latest === undefined ? {} : { latestStatus: task.latest }) }]
  }).finish()

interface SimAgent {
  readonly index: number
  id: string
  target: string
  masterIndex: number
  call: grpc.ClientDuplexStream<v1.ConnectRequest | Uint8Array, v1.ConnectResponse> | undefined
  registered: boolean
  readonly tasks: Map<string, SimTask>
  outbox: Array<v1.StatusUpdate>
  flushScheduled: boolean
  ping: ReturnType<typeof setInterval> | undefined
  retryDelayMs: number
  /** The master whose connection last failed outright (not a standby's redirect). */
  lastFailed: string
}

/**
 * Plain callbacks and timers rather than a fiber per agent and per task: this module exists to
 * put tens of thousands of agents and hundreds of thousands of tasks in one process, and every
 * byte per task counts. Time here is only ever a delay, never read for logic.
 */
export const make = (config: SimulatorConfig) =>
  Effect.gen(function*() {
    const resources = yield* Effect.try({
      try: () => Resources.parse(config.resources),
      catch: (e) => new StartupError({ component: "simulator", reason: `resources: ${(e as Error).message}` })
    })
    const attributes = yield* Effect.try({
      try: () => Array.from({ length: config.agents }, (_, i) => Detect.attributes(config.attributes(i))),
      catch: (e) => new StartupError({ component: "simulator", reason: `attributes: ${(e as Error).message}` })
    })
    const clock = yield* Clock.Clock
    const allRegistered = yield* Deferred.make<void>()
    let registeredCount = 0
    let registrations = 0
    let closed = false
    const bootId = randomUUID()

    // One HTTP/2 connection per group of agents and master: the channel options differ per group,
    // so grpc-js does not fold them all into one connection.
    const clients = new Map<string, SimClient>()
    const clientFor = (target: string, group: number) => {
      const key = `${target}#${group}`
      let client = clients.get(key)
      if (client === undefined) {
        client = new SimClient(target, grpc.credentials.createInsecure(), {
          ...Grpc.keepaliveOptions,
          "grpc.berth_simulator_group": group,
          "grpc.max_receive_message_length": 64 * 1024 * 1024
        })
        clients.set(key, client)
      }
      return client
    }

    const status = (agent: SimAgent, task: SimTask, state: v1.TaskState, message: string, exitCode?: number): v1.TaskStatus => ({
      taskId: task.info.taskId,
      state,
      message,
      source: v1.TaskStatus_Source.EXECUTOR,
      reason: state === v1.TaskState.KILLED ? v1.TaskStatus_Reason.KILLED_BY_SCHEDULER : v1.TaskStatus_Reason.UNSPECIFIED,
      data: new Uint8Array(),
      agentId: agent.id,
      executorId: task.info.taskId,
      timestampMs: clock.currentTimeMillisUnsafe(),
      uuid: randomBytes(16),
      unreachableTimeMs: 0,
      ...(exitCode === undefined ? {} : { exitCode })
    })

    const flush = (agent: SimAgent) => {
      agent.flushScheduled = false
      if (agent.outbox.length === 0 || agent.call === undefined || !agent.registered) return
      const updates = agent.outbox
      agent.outbox = []
      agent.call.write({ message: { $case: "statusUpdates", value: { updates } } })
    }
    const send = (agent: SimAgent, frameworkId: string, s: v1.TaskStatus) => {
      agent.outbox.push({ frameworkId, status: s })
      if (!agent.flushScheduled) {
        agent.flushScheduled = true
        setImmediate(() => flush(agent))
      }
    }
    // Task reports are encoded ahead of time, in batches off the hot path, for the next registration.
    const stale = new Set<SimTask>()
    let encoding: ReturnType<typeof setTimeout> | undefined
    const encodeStale = () => {
      encoding = undefined
      let budget = 5000
      for (const task of stale) {
        stale.delete(task)
        task.encoded = encodeReport(task)
        if (--budget === 0) break
      }
      if (stale.size > 0) encoding = setTimeout(encodeStale, 50)
    }
    const enqueue = (agent: SimAgent, task: SimTask, s: v1.TaskStatus) => {
      task.state = s.state
      task.latest = s
      task.encoded = undefined
      stale.add(task)
      encoding ??= setTimeout(encodeStale, 500)
      task.pending.push(s)
      if (task.pending.length === 1) send(agent, task.frameworkId, s)
    }
    const resendHeads = (agent: SimAgent) => {
      for (const task of agent.tasks.values()) {
        const head = task.pending[0]
        if (head !== undefined) send(agent, task.frameworkId, head)
      }
    }

    const finishLater = (agent: SimAgent, task: SimTask) => {
      if (config.taskSeconds === undefined) return
      const exit = /^\s*exit\s+(\d+)\s*$/.exec(task.info.command?.value ?? "")
      task.timer = setTimeout(() => {
        task.timer = undefined
        if (TaskStates.isTerminal(task.state)) return
        const code = exit === null ? 0 : Number(exit[1])
        enqueue(agent, task, status(agent, task, code === 0 ? v1.TaskState.FINISHED : v1.TaskState.FAILED, `Command exited with status ${code}`, code))
      }, config.taskSeconds * 1000)
    }

    const handle = (agent: SimAgent, response: v1.ConnectResponse) => {
      const message = response.message
      if (message === undefined) return
      switch (message.$case) {
        case "registered": {
          agent.id = message.value.agentId
          agent.retryDelayMs = 50
          agent.lastFailed = ""
          registrations++
          if (!agent.registered) {
            agent.registered = true
            registeredCount++
            if (registeredCount === config.agents) Deferred.doneUnsafe(allRegistered, Effect.void)
          }
          if (agent.ping !== undefined) clearInterval(agent.ping)
          const interval = Math.max(100, (message.value.pingIntervalSeconds || 5) * 1000)
          agent.ping = setInterval(() => agent.call?.write({ message: { $case: "ping", value: { sequence: 0 } } }), interval)
          resendHeads(agent)
          return
        }
        case "run":
          for (const { framework, task } of message.value.tasks) {
            if (framework === undefined || task === undefined) continue
            const key = `${framework.frameworkId}/${task.taskId}`
            if (agent.tasks.has(key)) continue
            const entry: SimTask = {
              frameworkId: framework.frameworkId,
              info: task,
              state: v1.TaskState.STAGING,
              latest: undefined,
              pending: [],
              timer: undefined,
              encoded: undefined
            }
            agent.tasks.set(key, entry)
            enqueue(agent, entry, status(agent, entry, v1.TaskState.STARTING, ""))
            enqueue(agent, entry, status(agent, entry, v1.TaskState.RUNNING, ""))
            finishLater(agent, entry)
          }
          return
        case "kill":
          for (const kill of message.value.kills) {
            const task = agent.tasks.get(`${kill.frameworkId}/${kill.taskId}`)
            if (task === undefined || TaskStates.isTerminal(task.state)) continue
            if (task.timer !== undefined) clearTimeout(task.timer)
            enqueue(agent, task, {
              ...status(agent, task, v1.TaskState.KILLED, "Command terminated with signal SIGTERM"),
              reason: kill.reason || v1.TaskStatus_Reason.KILLED_BY_SCHEDULER
            })
          }
          return
        case "acknowledgements":
          for (const ack of message.value.acknowledgements) {
            const key = `${ack.frameworkId}/${ack.taskId}`
            const task = agent.tasks.get(key)
            const head = task?.pending[0]
            if (task === undefined || head === undefined || Buffer.compare(Buffer.from(head.uuid), Buffer.from(ack.uuid)) !== 0) continue
            task.pending.shift()
            const next = task.pending[0]
            if (next !== undefined) send(agent, task.frameworkId, next)
            else if (TaskStates.isTerminal(task.state)) agent.tasks.delete(key)
          }
          return
        default:
          return
      }
    }

    const connect = (agent: SimAgent) => {
      if (closed) return
      // As a real agent does: a standby told which master failed us holds the stream until it leads.
      const metadata = new grpc.Metadata()
      if (agent.lastFailed !== "" && agent.lastFailed !== agent.target) metadata.set(Grpc.LOST_MASTER_HEADER, agent.lastFailed)
      // grpc-js records the caller's stack trace for every call, to attach to its error; formatting
      // 10,000 of them when a master dies costs the simulator more than reconnecting does.
      const limit = Error.stackTraceLimit
      Error.stackTraceLimit = 0
      let call: grpc.ClientDuplexStream<v1.ConnectRequest | Uint8Array, v1.ConnectResponse>
      try {
        call = clientFor(agent.target, Math.floor(agent.index / config.agentsPerConnection)).connect(metadata)
      } finally {
        Error.stackTraceLimit = limit
      }
      agent.call = call
      let done = false
      const lost = (leader: string, alive: boolean) => {
        if (done) return
        done = true
        if (agent.call === call) agent.call = undefined
        if (agent.ping !== undefined) clearInterval(agent.ping)
        agent.ping = undefined
        if (closed) return
        // Follow a standby's pointer to the leader, unless it points at the master that just failed
        // us (the election key outlives a dead leader until its lease lapses): then wait at the
        // standby, which is about to lead. Without a pointer, try the next master.
        const failed = agent.target
        if (leader !== "" && (leader !== agent.lastFailed || alive)) {
          if (alive) agent.lastFailed = ""
          agent.target = leader
        } else if (leader === "") {
          agent.lastFailed = failed
          agent.masterIndex = (agent.masterIndex + 1) % config.masters.length
          agent.target = config.masters[agent.masterIndex]!
        }
        const delay = agent.retryDelayMs * (0.5 + Math.random())
        agent.retryDelayMs = Math.min(agent.retryDelayMs * 2, 1000)
        setTimeout(() => connect(agent), delay)
      }
      call.on("data", (response: v1.ConnectResponse) => handle(agent, response))
      call.on("error", (error: grpc.ServiceError) =>
        lost(String(error.metadata?.get("berth-leader")[0] ?? ""), error.metadata?.get(Grpc.LEADER_ALIVE_HEADER)[0] !== undefined))
      call.on("end", () => lost("", false))
      // The Register, assembled from its encoded parts: the agent's own fields, then each task.
      const parts: Array<Uint8Array> = [v1.ConnectRequest_Register.encode({
        ...emptyRegister,
        agentInfo: {
          agentId: agent.id,
          hostname: `${config.hostnamePrefix}-${agent.index}`,
          resources,
          attributes: attributes[agent.index]!,
          endpoint: "",
          version: "0.1.0-simulated"
        },
        bootId
      }).finish()]
      for (const task of agent.tasks.values()) {
        if (task.encoded === undefined) {
          stale.delete(task)
          task.encoded = encodeReport(task)
        }
        parts.push(task.encoded)
      }
      const length = parts.reduce((n, part) => n + part.length, 0)
      call.write(Buffer.concat([registerTag, varint(length), ...parts]))
    }

    const agents: Array<SimAgent> = Array.from({ length: config.agents }, (_, index) => ({
      index,
      id: "",
      target: config.masters[0]!,
      masterIndex: 0,
      call: undefined,
      registered: false,
      tasks: new Map(),
      outbox: [],
      flushScheduled: false,
      ping: undefined,
      retryDelayMs: 50,
      lastFailed: ""
    }))
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        if (encoding !== undefined) clearTimeout(encoding)
        for (const agent of agents) {
          if (agent.ping !== undefined) clearInterval(agent.ping)
          for (const task of agent.tasks.values()) if (task.timer !== undefined) clearTimeout(task.timer)
          agent.call?.cancel()
        }
        for (const client of clients.values()) client.close()
      })
    )
    for (const agent of agents) connect(agent)

    const handle_: SimulatorHandle = {
      registered: Deferred.await(allRegistered),
      agentIds: () => agents.map((a) => a.id),
      tasks: () => {
        let running = 0
        let finished = 0
        let killed = 0
        let failed = 0
        for (const agent of agents) {
          for (const task of agent.tasks.values()) {
            if (task.state === v1.TaskState.RUNNING) running++
            else if (task.state === v1.TaskState.FINISHED) finished++
            else if (task.state === v1.TaskState.KILLED) killed++
            else if (task.state === v1.TaskState.FAILED) failed++
          }
        }
        return { running, finished, killed, failed }
      },
      pendingUpdates: () => agents.reduce((n, a) => n + [...a.tasks.values()].reduce((m, t) => m + t.pending.length, 0), 0),
      registrations: () => registrations,
      connected: () => agents.filter((a) => a.call !== undefined && a.registered).length
    }
    return handle_
  })
