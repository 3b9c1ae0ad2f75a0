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
}

interface SimAgent {
  readonly index: number
  id: string
  target: string
  masterIndex: number
  call: grpc.ClientDuplexStream<v1.ConnectRequest, v1.ConnectResponse> | undefined
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
    const clients = new Map<string, v1.AgentServiceClient>()
    const clientFor = (target: string, group: number) => {
      const key = `${target}#${group}`
      let client = clients.get(key)
      if (client === undefined) {
        client = new v1.AgentServiceClient(target, grpc.credentials.createInsecure(), {
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
    const enqueue = (agent: SimAgent, task: SimTask, s: v1.TaskStatus) => {
      task.state = s.state
      task.latest = s
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
              timer: undefined
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
      const call = clientFor(agent.target, Math.floor(agent.index / config.agentsPerConnection)).connect(metadata)
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
      const reports: Array<v1.TaskReport> = [...agent.tasks.values()].map((t) => ({
        frameworkId: t.frameworkId,
        task: t.info,
        ...(t.latest === undefined ? {} : { latestStatus: t.latest })
      }))
      call.write({
        message: {
          $case: "register",
          value: {
            agentInfo: {
              agentId: agent.id,
              hostname: `${config.hostnamePrefix}-${agent.index}`,
              resources,
              attributes: attributes[agent.index]!,
              endpoint: "",
              version: "0.1.0-simulated"
            },
            tasks: reports,
            frameworks: [],
            checkpointedResources: [],
            bootId
          }
        }
      })
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
