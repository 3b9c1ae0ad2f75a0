import * as grpc from "@grpc/grpc-js"
import { TaskStates, v1 } from "@berth/proto"
import { CommandExecutor, DockerExecutor, ExecutorSession } from "@berth/sdk-executor"
import { Cause, Clock, Deferred, Effect, Fiber, Queue, Schedule, Scope, Stream } from "effect"
import { randomBytes, randomUUID } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as Grpc from "../grpc.ts"
import * as Files from "./files.ts"
import * as StatusUpdates from "./statusUpdates.ts"
import * as Volumes from "./volumes.ts"
import { StartupError } from "../../ClusterError.ts"

export interface AgentConfig {
  /** The master's "host:port". */
  readonly master: string
  /** Sandboxes and agent state live under this directory. */
  readonly workDir: string
  readonly hostname: string
  /** Total resources (detected and declared, see `detect.ts`). */
  readonly resources: ReadonlyArray<v1.Resource>
  readonly attributes: ReadonlyArray<v1.Attribute>
  /** Unacknowledged status updates are resent this often. */
  readonly statusUpdateRetrySeconds: number
  readonly version: string
  /** Where the agent's own gRPC API (sandbox files; executors later) listens. */
  readonly host: string
  readonly port: number
}

export interface AgentHandle {
  /** Completes with the agent id once the master has registered the agent. */
  readonly registered: Effect.Effect<string>
  readonly info: () => v1.AgentInfo
  readonly workDir: string
  /** Status updates held because they are not acknowledged yet. */
  readonly pendingUpdates: () => number
}

interface RunningTask {
  readonly frameworkId: string
  readonly framework: v1.FrameworkInfo
  readonly info: v1.TaskInfo
  readonly sandbox: string
  readonly executor: ExecutorSession.InProcess
  latest: v1.TaskStatus | undefined
  fiber: Fiber.Fiber<void> | undefined
}

/**
 * The agent: registers with the master over one long-lived stream (reconnecting with backoff),
 * runs each task through the built-in command executor (a fiber in this process driving a real
 * child process group, not a process per task), and forwards status updates reliably.
 */
export const make = Effect.fn("Agent.make")(function*(config: AgentConfig) {
  const scope = yield* Scope.Scope
  const context = yield* Effect.context<never>()
  const registered = yield* Deferred.make<string>()
  const checkpoint = yield* Effect.tryPromise({
    try: () => Volumes.readCheckpoint(config.workDir),
    catch: (error) => new StartupError({ component: "agent", reason: (error as Error).message })
  })
  /** Total resources with reservations and volumes, as the master last told the agent to keep. */
  let checkpointed: ReadonlyArray<v1.Resource> = checkpoint?.resources ?? []
  const server = yield* Grpc.serve(
    `${config.host}:${config.port}`,
    [[v1.AgentOperatorServiceService, {
      listFiles: Grpc.unary(context, Files.listFiles(config.workDir)),
      readFile: Files.readFile(config.workDir, (effect) => void Effect.runForkWith(context)(effect))
    }]],
    "agent"
  )
  const endpoint = Grpc.endpoint(config.host, server.port)
  let agentId = checkpoint?.agentId ?? ""
  let pingIntervalMs = 5000
  let send: ((message: v1.ConnectRequest) => void) | undefined
  const tasks = new Map<string, RunningTask>()
  const key = (frameworkId: string, taskId: string) => `${frameworkId}/${taskId}`

  // Updates headed for the master leave in batches: everything queued since the last write goes
  // out as one StatusUpdates message.
  const outbox = yield* Queue.unbounded<v1.StatusUpdate>()
  const updates = StatusUpdates.make((frameworkId, status) => Queue.offerUnsafe(outbox, { frameworkId, status }))
  yield* Queue.takeAll(outbox).pipe(
    Effect.tap((batch) =>
      Effect.sync(() => send?.({ message: { $case: "statusUpdates", value: { updates: [...batch] } } }))
    ),
    Effect.forever,
    Effect.forkIn(scope)
  )

  const info = (): v1.AgentInfo => ({
    agentId,
    hostname: config.hostname,
    resources: [...config.resources],
    attributes: [...config.attributes],
    endpoint,
    version: config.version
  })

  const onUpdate = (frameworkId: string) => (status: v1.TaskStatus) =>
    Effect.gen(function*() {
      const task = tasks.get(key(frameworkId, status.taskId))
      if (task !== undefined) task.latest = status
      updates.enqueue(frameworkId, status, yield* Clock.currentTimeMillis)
    })

  const launch = (framework: v1.FrameworkInfo, task: v1.TaskInfo) =>
    Effect.gen(function*() {
      const frameworkId = framework.frameworkId
      const k = key(frameworkId, task.taskId)
      if (tasks.has(k)) return
      const runs = path.join(config.workDir, "frameworks", frameworkId, "executors", task.taskId, "runs")
      const runId = randomUUID()
      const sandbox = path.join(runs, runId)
      yield* Effect.promise(async () => {
        await fs.mkdir(sandbox, { recursive: true })
        // "runs/latest" lets UIs and tools find the current run without knowing its id.
        await fs.rm(path.join(runs, "latest"), { force: true })
        await fs.symlink(runId, path.join(runs, "latest"))
        await Volumes.mount(config.workDir, sandbox, task.resources)
      })
      const executor = yield* ExecutorSession.makeInProcess({
        frameworkId,
        executorId: task.taskId,
        agentId,
        onUpdate: onUpdate(frameworkId)
      })
      const entry: RunningTask = { frameworkId, framework, info: task, sandbox, executor, latest: undefined, fiber: undefined }
      tasks.set(k, entry)
      const executorRun = task.container?.type === v1.ContainerInfo_Type.DOCKER
        ? DockerExecutor.run({ sandbox })
        : CommandExecutor.run({ sandbox, fetcher: { cacheDir: path.join(config.workDir, "cache") } })
      entry.fiber = yield* executorRun.pipe(
        Effect.provide(ExecutorSession.layerInProcess(executor)),
        Effect.scoped,
        Effect.forkIn(scope)
      )
      yield* executor.send({ $case: "launch", value: { task } })
    }).pipe(
      Effect.catchCause((cause) =>
        Effect.gen(function*() {
          yield* Effect.logError("task launch failed").pipe(Effect.annotateLogs({ taskId: task.taskId, cause: Cause.pretty(cause) }))
          // The scheduler must hear about it: a task that never reports stays STAGING forever.
          const now = yield* Clock.currentTimeMillis
          updates.enqueue(framework.frameworkId, v1.TaskStatus.create({
            taskId: task.taskId,
            state: v1.TaskState.FAILED,
            message: `the agent could not launch the task: ${Cause.squash(cause) instanceof Error ? (Cause.squash(cause) as Error).message : String(Cause.squash(cause))}`,
            source: v1.TaskStatus_Source.AGENT,
            reason: v1.TaskStatus_Reason.CONTAINER_LAUNCH_FAILED,
            agentId,
            executorId: task.taskId,
            timestampMs: now,
            uuid: randomBytes(16)
          }), now)
        })
      )
    )

  const handle = (message: NonNullable<v1.ConnectResponse["message"]>) =>
    Effect.gen(function*() {
      switch (message.$case) {
        case "registered": {
          agentId = message.value.agentId
          yield* Effect.promise(() => Volumes.writeCheckpoint(config.workDir, { agentId, resources: checkpointed }))
          if (message.value.pingIntervalSeconds > 0) pingIntervalMs = message.value.pingIntervalSeconds * 1000
          yield* Deferred.succeed(registered, agentId)
          // A new master knows nothing of what is in flight: resend every unacknowledged update.
          updates.resend(yield* Clock.currentTimeMillis, 0)
          yield* Effect.logInfo("agent registered").pipe(Effect.annotateLogs({ agentId, master: config.master }))
          return
        }
        case "run":
          for (const { framework, task } of message.value.tasks) {
            if (framework !== undefined && task !== undefined) yield* launch(framework, task)
          }
          return
        case "applyOperations": {
          const inUse = new Set(
            [...tasks.values()].flatMap((t) => t.info.resources.map((r) => r.disk?.persistence?.id ?? "")).filter((id) => id !== "")
          )
          for (const { operation } of message.value.operations) {
            if (operation !== undefined) yield* Effect.promise(() => Volumes.apply(config.workDir, operation, inUse))
          }
          checkpointed = message.value.checkpointedResources
          yield* Effect.promise(() => Volumes.writeCheckpoint(config.workDir, { agentId, resources: checkpointed }))
          return
        }
        case "kill":
          for (const kill of message.value.kills) {
            const task = tasks.get(key(kill.frameworkId, kill.taskId))
            if (task === undefined) continue
            yield* task.executor.send({
              $case: "kill",
              value: {
                taskId: kill.taskId,
                reason: kill.reason,
                ...(kill.killPolicy === undefined ? {} : { killPolicy: kill.killPolicy })
              }
            })
          }
          return
        case "acknowledgements": {
          const now = yield* Clock.currentTimeMillis
          for (const ack of message.value.acknowledgements) {
            const acked = updates.acknowledge(ack.frameworkId, ack.taskId, ack.uuid, now)
            if (acked === undefined) continue
            const task = tasks.get(key(ack.frameworkId, ack.taskId))
            if (task === undefined) continue
            yield* task.executor.send({ $case: "acknowledged", value: { taskId: ack.taskId, uuid: ack.uuid } })
            // Once its terminal update is acknowledged a task is done: the agent forgets it.
            if (TaskStates.isTerminal(acked.state)) {
              tasks.delete(key(ack.frameworkId, ack.taskId))
              yield* task.executor.end
            }
          }
          return
        }
        default:
          return
      }
    })

  const reports = (): Array<v1.TaskReport> =>
    [...tasks.values()].map((t) => ({
      frameworkId: t.frameworkId,
      task: t.info,
      ...(t.latest === undefined ? {} : { latestStatus: t.latest })
    }))

  /** One connection to the master: ends (fails) when the stream breaks. */
  const connect = Effect.gen(function*() {
    const client = new v1.AgentServiceClient(config.master, grpc.credentials.createInsecure())
    yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
    const call = client.connect()
    yield* Effect.addFinalizer(() => Effect.sync(() => call.cancel()))
    const messages = Stream.callback<v1.ConnectResponse, Error>((queue) =>
      Effect.sync(() => {
        call.on("data", (message: v1.ConnectResponse) => Queue.offerUnsafe(queue, message))
        call.on("error", (error) => Queue.failCauseUnsafe(queue, Cause.fail(error)))
        call.on("end", () => Queue.failCauseUnsafe(queue, Cause.fail(new Error("the master closed the stream"))))
      })
    )
    send = (message) => call.write(message)
    yield* Effect.addFinalizer(() => Effect.sync(() => (send = undefined)))
    const frameworks = [...new Map([...tasks.values()].map((t) => [t.frameworkId, t.framework])).values()]
    call.write({
      message: {
        $case: "register",
        value: { agentInfo: info(), tasks: reports(), frameworks, checkpointedResources: [...checkpointed], bootId: bootId }
      }
    })
    // Pings at the interval the master asked for in REGISTERED (5 s until then).
    let sequence = 0
    const ping = yield* Effect.suspend(() => Effect.sleep(pingIntervalMs)).pipe(
      Effect.andThen(Effect.sync(() => send?.({ message: { $case: "ping", value: { sequence: sequence++ } } }))),
      Effect.forever,
      Effect.forkScoped
    )
    yield* messages.pipe(Stream.runForEach((response) => (response.message === undefined ? Effect.void : handle(response.message))))
    yield* Fiber.interrupt(ping)
  }).pipe(Effect.scoped)

  const bootId = randomUUID()
  yield* connect.pipe(
    Effect.tapError((error) =>
      Effect.logWarning("connection to master lost; reconnecting").pipe(
        Effect.annotateLogs({ master: config.master, error: error.message })
      )
    ),
    Effect.retry(Schedule.min([Schedule.exponential("100 millis", 2), Schedule.spaced("5 seconds")]).pipe(Schedule.jittered)),
    Effect.forkIn(scope)
  )

  // At-least-once delivery: an update the master dropped (it had no subscriber, or restarted) is
  // resent until acknowledged.
  yield* Effect.gen(function*() {
    updates.resend(yield* Clock.currentTimeMillis, config.statusUpdateRetrySeconds * 1000)
  }).pipe(Effect.repeat(Schedule.spaced(`${config.statusUpdateRetrySeconds} seconds`)), Effect.forkIn(scope))

  const agentHandle: AgentHandle = {
    registered: Deferred.await(registered),
    info,
    workDir: config.workDir,
    pendingUpdates: () => updates.pendingCount()
  }
  return agentHandle
})
