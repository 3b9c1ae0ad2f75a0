import * as grpc from "@grpc/grpc-js"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { CommandExecutor, DefaultExecutor, DockerExecutor, ExecutorSession } from "@berth/sdk-executor"
import { Cause, Clock, Deferred, Effect, Fiber, Queue, Result, Schedule, Scope, Semaphore, Stream } from "effect"
import { randomBytes, randomUUID } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as Grpc from "../grpc.ts"
import * as ApiSecurity from "./apiSecurity.ts"
import * as Cgroups from "./cgroups.ts"
import * as Checkpoint from "./checkpoint.ts"
import * as CustomExecutor from "./customExecutor.ts"
import * as Files from "./files.ts"
import * as Gc from "./gc.ts"
import * as StatusUpdates from "./statusUpdates.ts"
import * as UpdateLog from "./updateLog.ts"
import * as Volumes from "./volumes.ts"
import { StartupError } from "../../ClusterError.ts"

export interface AgentConfig {
  /** The master's "host:port". */
  readonly master: string
  /** How the agent's connection to the master is secured (plaintext by default). */
  readonly channelCredentials: grpc.ChannelCredentials
  /** Client options carrying the agent principal's credentials, if any. */
  readonly clientOptions: grpc.ClientOptions
  /** Sandboxes and agent state live under this directory. */
  readonly workDir: string
  readonly hostname: string
  /** Total resources (detected and declared, see `detect.ts`). */
  readonly resources: ReadonlyArray<v1.Resource>
  readonly attributes: ReadonlyArray<v1.Attribute>
  /** Unacknowledged status updates are resent after `minMs`, doubling up to `maxMs`. */
  readonly statusUpdateBackoff: StatusUpdates.Backoff
  readonly version: string
  /** Where the agent's own gRPC API (sandbox files; executors later) listens. */
  readonly host: string
  readonly port: number
  /**
   * What to do with the tasks found in the checkpoint at start: "reconnect" re-attaches to those
   * still running and reports those that ended; "cleanup" kills them and starts without tasks.
   */
  readonly recover: "reconnect" | "cleanup"
  /** Sandboxes of finished runs are removed this long after their terminal update is acknowledged. */
  readonly gcDelayMs: number
  /** Whether stopping the agent kills its tasks (else they keep running, to be re-attached). */
  readonly killTasksOnStop: boolean
  /** How often a re-attached task (not a child of this agent) is polled for its end. */
  readonly reattachPollMs: number
  /** A custom executor that has not subscribed this long after its start is killed (its tasks fail). */
  readonly executorRegistrationTimeoutMs: number
  /** After an agent restart, a running custom executor must subscribe again within this long. */
  readonly executorReregistrationTimeoutMs: number
  /** Given to custom executors: how long they keep re-subscribing while the agent is away. */
  readonly recoveryTimeoutMs: number
  /** "auto": cpu and memory limits through cgroups where the machine allows them; "off": none. */
  readonly cgroups: "auto" | "off"
  /** TLS and authentication of the agent's own API (plaintext and open by default). */
  readonly apiSecurity?: ApiSecurity.Config | undefined
}

export interface AgentHandle {
  /** Completes with the agent id once the master has registered the agent. */
  readonly registered: Effect.Effect<string>
  readonly info: () => v1.AgentInfo
  readonly workDir: string
  /** Status updates held because they are not acknowledged yet. */
  readonly pendingUpdates: () => number
  /** Finished runs whose sandbox waits for the garbage collector. */
  readonly pendingGc: () => number
}

interface RunningTask {
  readonly frameworkId: string
  readonly framework: v1.FrameworkInfo
  readonly info: v1.TaskInfo
  readonly runId: string
  readonly containerizer: "process" | "docker"
  readonly sandbox: string
  /** The run's checkpoint directory (see checkpoint.ts). */
  readonly checkpoint: string
  /** None for a recovered task whose terminal update only waits for its acknowledgement. */
  executor: ExecutorHandle | undefined
  fiber: Fiber.Fiber<void> | undefined
  /** The latest update, and the latest acknowledged one. */
  latest: v1.TaskStatus | undefined
  acknowledged: v1.TaskStatus | undefined
  /** The task group it belongs to (LAUNCH_GROUP); its executor and sandbox are the group's. */
  group?: Group | undefined
}

/** How the agent reaches a task's executor: in process (built-in) or over gRPC (custom). */
interface ExecutorHandle {
  readonly send: (event: ExecutorSession.ExecutorEvent) => Effect.Effect<void>
  /** The executor has no task left. */
  readonly end: Effect.Effect<void>
}

/** A task group's run: one executor, one sandbox, one checkpoint directory for all its tasks. */
interface Group {
  readonly executorId: string
  readonly sandbox: string
  readonly checkpoint: string
  /** Tasks whose terminal update is not acknowledged yet: the run is over when none is left. */
  readonly live: Set<string>
}

/**
 * A default executor's run, as long as it may take further groups: every LAUNCH_GROUP naming
 * its executor id while it still runs a task joins it (Mesos' semantics: same sandbox, same
 * volumes, group policy per group), so a sidecar such as a backup sees the pod's data.
 */
interface GroupExecutor {
  readonly frameworkId: string
  readonly info: v1.ExecutorInfo
  /** The run shared by every group: executor id, sandbox, checkpoint directory, live tasks. */
  readonly run: Group
  readonly runId: string
  /** Every task given to this run (the update checkpoint of a task is found here). */
  readonly byTask: Map<string, RunningTask>
  /** Volumes linked into the sandbox, by persistence id and container path. */
  readonly mounted: Set<string>
  /**
   * Serialises the run's start and each group added to it: a group is checkpointed and handed
   * over only once the executor (and the groups before it) are. Starts with no permit: the
   * run's start releases it.
   */
  readonly lock: Semaphore.Semaphore
  /** Groups recorded in the checkpoint so far (run.json holds the first). */
  groups: number
  executor: ExecutorSession.InProcess | undefined
  fiber: Fiber.Fiber<void> | undefined
  /** Set once the executor returned: nothing can join it any more. */
  ended: boolean
}

/** How many launches of one run order proceed at once. */
const LAUNCH_CONCURRENCY = 16

/** The longest a task gets between SIGTERM and SIGKILL when the agent stops with killTasksOnStop. */
const STOP_GRACE_SECONDS = 10

const errorText = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

/**
 * The agent: registers with the master over one long-lived stream (reconnecting with backoff),
 * runs each task through a built-in executor (a fiber in this process driving a real process
 * group or container, not a process per task), checkpoints every task and status update so that
 * tasks outlive the agent process, and forwards status updates reliably.
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
  const cgroups: Cgroups.Detection = config.cgroups === "off"
    ? { _tag: "Unavailable", reason: "--cgroups=off" }
    : Cgroups.detect(config.workDir)
  // Said once, at startup: whether a task's cpus and mem are enforced on this machine.
  yield* cgroups._tag === "Unavailable"
    ? Effect.logWarning(`cgroups unavailable (${cgroups.reason}): process tasks run without cpu and memory limits`)
    : Effect.logInfo(`cgroups: process tasks get cpu and memory limits (${Cgroups.describe(cgroups)})`)
  if (cgroups._tag !== "Unavailable") yield* Effect.addFinalizer(() => Cgroups.releaseSubtree(cgroups))
  const isolation = (key: string) => (cgroups._tag === "Unavailable" ? undefined : Cgroups.isolation(cgroups, key))
  // Executors run in a scope of their own that closes after the stop finalizer below has run,
  // so that finalizer can still shut them down in order.
  const executors = yield* Scope.fork(scope, "parallel")
  let agentId = checkpoint?.agentId ?? ""
  let endpoint = ""
  let pingIntervalMs = 5000
  let send: ((message: v1.ConnectRequest) => void) | undefined
  const runFork = (effect: Effect.Effect<void>) => void Effect.runForkWith(context)(effect)
  const apiSecurity = ApiSecurity.make(config.apiSecurity ?? {}, yield* Clock.currentTimeMillis)
  if (Result.isFailure(apiSecurity)) return yield* new StartupError({ component: "agent", reason: apiSecurity.failure })
  const api = apiSecurity.success
  const customs = CustomExecutor.make({
    workDir: config.workDir,
    registrationTimeoutMs: config.executorRegistrationTimeoutMs,
    reregistrationTimeoutMs: config.executorReregistrationTimeoutMs,
    recoveryTimeoutMs: config.recoveryTimeoutMs,
    reattachPollMs: config.reattachPollMs,
    killOnStop: config.killTasksOnStop,
    agentId: () => agentId,
    endpoint: () => endpoint,
    record: (frameworkId, dir, status) => record(frameworkId, dir, status),
    toMaster: (message) => send?.(message),
    scope: executors,
    authenticateExecutors: api.authenticateExecutors,
    isolation: (key) => isolation(key),
    caFile: api.caFile
  })
  const server = yield* Grpc.serve(
    `${config.host}:${config.port}`,
    [
      [v1.AgentOperatorServiceService, {
        listFiles: Grpc.unary(context, Files.listFiles(config.workDir)),
        readFile: Files.readFile(config.workDir, runFork)
      }],
      [v1.ExecutorServiceService, customs.service(runFork, context)]
    ],
    "agent",
    { credentials: api.serverCredentials, interceptors: api.interceptors }
  )
  endpoint = Grpc.endpoint(config.host, server.port)
  const tasks = new Map<string, RunningTask>()
  const key = (frameworkId: string, taskId: string) => `${frameworkId}/${taskId}`

  // Updates headed for the master leave in batches: everything queued since the last write goes
  // out as one StatusUpdates message.
  const outbox = yield* Queue.unbounded<v1.StatusUpdate>()
  const updates = StatusUpdates.make(
    (frameworkId, status) => Queue.offerUnsafe(outbox, { frameworkId, status }),
    config.statusUpdateBackoff
  )
  yield* Queue.takeAll(outbox).pipe(
    Effect.tap((batch) =>
      Effect.sync(() => send?.({ message: { $case: "statusUpdates", value: { updates: [...batch] } } }))
    ),
    Effect.forever,
    Effect.forkIn(scope)
  )
  const gc = yield* Gc.make({ workDir: config.workDir, delayMs: config.gcDelayMs, scope })

  const info = (): v1.AgentInfo => ({
    agentId,
    hostname: config.hostname,
    resources: [...config.resources],
    attributes: [...config.attributes],
    endpoint,
    version: config.version
  })

  /** Checkpoints an update (fsync'd), then hands it to the status update manager. */
  const record = (frameworkId: string, runDir: string | undefined, status: v1.TaskStatus) =>
    Effect.gen(function*() {
      if (runDir !== undefined) {
        yield* Effect.tryPromise(() => UpdateLog.append(Checkpoint.updatesFile(runDir), [{ _tag: "Update", status }], true)).pipe(
          // Better an update sent without its checkpoint than one lost: it still goes out.
          Effect.catch((error) =>
            Effect.logError("cannot checkpoint a status update").pipe(
              Effect.annotateLogs({ taskId: status.taskId, error: String(error.cause ?? error) })
            )
          )
        )
      }
      const task = tasks.get(key(frameworkId, status.taskId))
      if (task !== undefined) task.latest = status
      updates.enqueue(frameworkId, status, yield* Clock.currentTimeMillis)
    })

  const agentStatus = (task: v1.TaskInfo, state: v1.TaskState, reason: v1.TaskStatus_Reason, message: string, now: number) =>
    v1.TaskStatus.create({
      taskId: task.taskId,
      state,
      message,
      source: v1.TaskStatus_Source.AGENT,
      reason,
      agentId,
      executorId: task.executor?.executorId ?? task.taskId,
      timestampMs: now,
      uuid: randomBytes(16)
    })

  /** Checkpoints a task's process (`process.json` in its checkpoint directory `dir`). */
  const recordProcess = (dir: string, taskId: string) => (process: CommandExecutor.TaskProcess) =>
    Effect.tryPromise(() => Checkpoint.writeProcess(dir, process)).pipe(
      // The task still runs and is watched; only a restarted agent would have to look for it.
      Effect.catch((error) =>
        Effect.logError("cannot checkpoint a task's process").pipe(
          Effect.annotateLogs({ taskId, pid: process.pid, error: String(error.cause ?? error) })
        )
      )
    )

  /** Starts the executor of `task`; with `recover`, it takes over the task of an earlier agent. */
  const startExecutor = (task: RunningTask, recover?: CommandExecutor.Recovered) =>
    Effect.gen(function*() {
      const executor = yield* ExecutorSession.makeInProcess({
        frameworkId: task.frameworkId,
        executorId: task.info.taskId,
        agentId,
        onUpdate: (status) => record(task.frameworkId, task.checkpoint, status)
      })
      task.executor = executor
      const checkpointOptions: DockerExecutor.CheckpointOptions & CommandExecutor.CheckpointOptions = {
        exitStatusFile: Checkpoint.exitStatusFile(task.checkpoint),
        onStarted: recordProcess(task.checkpoint, task.info.taskId),
        onInterrupt: config.killTasksOnStop ? "kill" : "leave",
        pollInterval: config.reattachPollMs
      }
      const run = task.containerizer === "docker"
        ? DockerExecutor.run({
          sandbox: task.sandbox,
          checkpoint: checkpointOptions,
          ...(recover === undefined ? {} : { recover })
        })
        : CommandExecutor.run({
          sandbox: task.sandbox,
          fetcher: { cacheDir: path.join(config.workDir, "cache") },
          checkpoint: checkpointOptions,
          user: task.framework.user,
          isolation: isolation(task.runId),
          ...(recover === undefined ? {} : { recover })
        })
      task.fiber = yield* run.pipe(
        Effect.provide(ExecutorSession.layerInProcess(executor)),
        Effect.scoped,
        Effect.forkIn(executors)
      )
      return executor
    })

  // ---------------------------------------------------------------- custom executors

  /** The groups of custom executor runs, by run id: their tasks share the run's sandbox. */
  const customGroups = new Map<string, Group>()
  const customGroup = (run: CustomExecutor.CustomRun): Group => {
    let group = customGroups.get(run.runId)
    if (group === undefined) {
      group = { executorId: run.executorId, sandbox: run.sandbox, checkpoint: run.dir, live: new Set() }
      customGroups.set(run.runId, group)
    }
    return group
  }

  const customHandle = (run: CustomExecutor.CustomRun): ExecutorHandle => ({
    send: (event) =>
      event.$case === "acknowledged"
        ? customs.acknowledged(run.frameworkId, run.executorId, event.value.taskId, event.value.uuid)
        : customs.sendFor(run.frameworkId, run.executorId, event),
    end: Effect.suspend(() => {
      customGroups.delete(run.runId)
      return customs.end(run.frameworkId, run.executorId)
    })
  })

  const customEntry = (framework: v1.FrameworkInfo, run: CustomExecutor.CustomRun, task: CustomExecutor.CustomTask): RunningTask => {
    const group = customGroup(run)
    group.live.add(task.info.taskId)
    return {
      frameworkId: framework.frameworkId,
      framework,
      info: task.info,
      runId: run.runId,
      containerizer: "process",
      sandbox: run.sandbox,
      checkpoint: task.dir,
      executor: customHandle(run),
      fiber: run.fiber,
      latest: undefined,
      acknowledged: undefined,
      group
    }
  }

  /** Gives a task to its custom executor (the framework's own program), starting it if needed. */
  const launchCustom = (framework: v1.FrameworkInfo, task: v1.TaskInfo) =>
    Effect.gen(function*() {
      const k = key(framework.frameworkId, task.taskId)
      const now = yield* Clock.currentTimeMillis
      const problem = CustomExecutor.problem(task.executor!, "task.executor")
      if (problem !== undefined) {
        return yield* record(framework.frameworkId, undefined, agentStatus(task, v1.TaskState.FAILED, v1.TaskStatus_Reason.TASK_INVALID, problem, now))
      }
      // Known at once, so that a second launch of the same task starts nothing.
      const placeholder: RunningTask = {
        frameworkId: framework.frameworkId,
        framework,
        info: task,
        runId: "",
        containerizer: "process",
        sandbox: "",
        checkpoint: "",
        executor: undefined,
        fiber: undefined,
        latest: undefined,
        acknowledged: undefined
      }
      tasks.set(k, placeholder)
      const launched = yield* Effect.exit(customs.launch(framework, task))
      if (launched._tag === "Failure") {
        tasks.delete(k)
        yield* Effect.logError("custom executor launch failed").pipe(
          Effect.annotateLogs({ taskId: task.taskId, executorId: task.executor!.executorId, cause: Cause.pretty(launched.cause) })
        )
        return yield* record(
          framework.frameworkId,
          undefined,
          agentStatus(task, v1.TaskState.FAILED, v1.TaskStatus_Reason.CONTAINER_LAUNCH_FAILED, `the agent could not start the executor: ${errorText(launched.cause)}`, now)
        )
      }
      const { run, task: custom } = launched.value
      // An update recorded during the launch (its artifacts could not be fetched) stays the latest.
      const entry = { ...customEntry(framework, run, custom), latest: placeholder.latest }
      tasks.set(k, entry)
      // The program may have started only now: every task of the run shares its watching fiber.
      for (const other of tasks.values()) if (other.runId === run.runId) other.fiber = run.fiber
    })

  const launch = (framework: v1.FrameworkInfo, task: v1.TaskInfo) => {
    let runDir: string | undefined
    return Effect.gen(function*() {
      const frameworkId = framework.frameworkId
      const k = key(frameworkId, task.taskId)
      // A launch resent for a task the agent already runs (or recovered) starts nothing again.
      if (tasks.has(k)) return
      if (task.executor !== undefined) return yield* launchCustom(framework, task)
      const run: Checkpoint.Run = {
        frameworkId,
        executorId: task.taskId,
        runId: randomUUID(),
        framework,
        task,
        containerizer: task.container?.type === v1.ContainerInfo_Type.DOCKER ? "docker" : "process"
      }
      const sandbox = Checkpoint.sandboxDir(config.workDir, run)
      runDir = Checkpoint.runDir(config.workDir, run)
      const entry: RunningTask = {
        frameworkId,
        framework,
        info: task,
        runId: run.runId,
        containerizer: run.containerizer,
        sandbox,
        checkpoint: runDir,
        executor: undefined,
        fiber: undefined,
        latest: undefined,
        acknowledged: undefined
      }
      // Known at once, so that a second launch of the same task (even one handled concurrently)
      // starts nothing.
      tasks.set(k, entry)
      // The checkpoint comes first: whatever happens next, a restarted agent knows of the task.
      yield* Effect.promise(() => Checkpoint.writeRun(config.workDir, run))
      yield* Effect.promise(async () => {
        const runs = path.dirname(sandbox)
        await fs.mkdir(sandbox, { recursive: true })
        // "runs/latest" lets UIs and tools find the current run without knowing its id.
        await fs.rm(path.join(runs, "latest"), { force: true })
        await fs.symlink(run.runId, path.join(runs, "latest"))
        await Volumes.mount(config.workDir, sandbox, task.resources)
      })
      const executor = yield* startExecutor(entry)
      yield* executor.send({ $case: "launch", value: { task } })
    }).pipe(
      Effect.catchCause((cause) =>
        Effect.gen(function*() {
          yield* Effect.logError("task launch failed").pipe(Effect.annotateLogs({ taskId: task.taskId, cause: Cause.pretty(cause) }))
          // The scheduler must hear about it: a task that never reports stays STAGING forever.
          const now = yield* Clock.currentTimeMillis
          yield* record(
            framework.frameworkId,
            runDir,
            agentStatus(task, v1.TaskState.FAILED, v1.TaskStatus_Reason.CONTAINER_LAUNCH_FAILED, `the agent could not launch the task: ${errorText(cause)}`, now)
          )
        })
      )
    )
  }

  // ---------------------------------------------------------------- task groups

  /** The group executors that may take further groups, by "frameworkId/executorId". */
  const groupExecutors = new Map<string, GroupExecutor>()

  /** Whether a group arriving now can join `live`: its executor still runs a task of it. */
  const joinable = (live: GroupExecutor) =>
    !live.ended && [...live.byTask.values()].some((t) => t.latest === undefined || !TaskStates.isTerminal(t.latest.state))

  /** What must match for a group to join a running executor: all but the stamps of the master. */
  const sameExecutor = (running: v1.ExecutorInfo, wanted: v1.ExecutorInfo): boolean => {
    const encode = (e: v1.ExecutorInfo) =>
      Buffer.from(v1.ExecutorInfo.encode({
        ...e,
        frameworkId: "",
        resources: Resources.normalize(e.resources.map((r) => ({ ...r, allocationRole: "" })))
      }).finish())
    return encode(running).equals(encode(wanted))
  }

  const volumeKey = (r: v1.Resource) => `${r.disk?.persistence?.id ?? ""}\0${r.disk?.volume?.containerPath ?? ""}`

  /**
   * Starts the default executor of `live`'s run; with `recover`, it takes over the groups of an
   * earlier agent. Each task is checkpointed like a single task, in its own directory of the run.
   * Once the executor returns, a task handed to it that it never started (it was ending as the
   * group arrived) is DROPPED, so no task waits in STAGING for an executor that is gone.
   */
  const startGroupExecutor = (live: GroupExecutor, recover?: ReadonlyArray<DefaultExecutor.RecoveredGroup>) =>
    Effect.gen(function*() {
      const first = [...live.byTask.values()][0]
      const executor = yield* ExecutorSession.makeInProcess({
        frameworkId: live.frameworkId,
        executorId: live.run.executorId,
        agentId,
        onUpdate: (status) => record(live.frameworkId, live.byTask.get(status.taskId)?.checkpoint, status)
      })
      const fiber = yield* DefaultExecutor.run({
        sandbox: live.run.sandbox,
        user: first?.framework.user,
        isolation: isolation(live.runId),
        fetcher: { cacheDir: path.join(config.workDir, "cache") },
        checkpoint: (info) => {
          const dir = Checkpoint.groupTaskDir(live.run.checkpoint, info.taskId)
          return {
            exitStatusFile: Checkpoint.exitStatusFile(dir),
            onStarted: recordProcess(dir, info.taskId),
            onInterrupt: config.killTasksOnStop ? "kill" : "leave",
            pollInterval: config.reattachPollMs
          }
        },
        ...(recover === undefined ? {} : { recover })
      }).pipe(
        Effect.provide(ExecutorSession.layerInProcess(executor)),
        Effect.scoped,
        Effect.onExit((exit) =>
          Effect.gen(function*() {
            live.ended = true
            // Interrupted: the agent stops and the tasks run on for the next agent to take over.
            if (exit._tag !== "Success") return
            const now = yield* Clock.currentTimeMillis
            for (const entry of live.byTask.values()) {
              if (entry.latest !== undefined || !tasks.has(key(live.frameworkId, entry.info.taskId))) continue
              yield* record(
                live.frameworkId,
                entry.checkpoint,
                agentStatus(
                  entry.info,
                  v1.TaskState.DROPPED,
                  v1.TaskStatus_Reason.EXECUTOR_TERMINATED,
                  `executor "${live.run.executorId}" ended before it started the task; launch its group again`,
                  now
                )
              )
            }
          })
        ),
        Effect.forkIn(executors)
      )
      live.executor = executor
      live.fiber = fiber
      for (const entry of live.byTask.values()) {
        entry.executor = executor
        entry.fiber = fiber
      }
      return executor
    })

  /** The volumes among `tasks`' resources not linked into the run's sandbox yet, each once. */
  const newVolumes = (live: GroupExecutor, tasks: ReadonlyArray<v1.TaskInfo>): Array<v1.Resource> => {
    const seen = new Set(live.mounted)
    return tasks.flatMap((task) => task.resources).filter((r) => {
      const id = r.disk?.persistence?.id
      if (id === undefined || id === "") return false
      const k = volumeKey(r)
      if (seen.has(k)) return false
      seen.add(k)
      return true
    })
  }

  /** The run's entry for `task` (its checkpoint directory inside the run's). */
  const groupEntry = (framework: v1.FrameworkInfo, live: GroupExecutor, task: v1.TaskInfo): RunningTask => ({
    frameworkId: live.frameworkId,
    framework,
    info: task,
    runId: live.runId,
    containerizer: "process",
    sandbox: live.run.sandbox,
    checkpoint: Checkpoint.groupTaskDir(live.run.checkpoint, task.taskId),
    executor: live.executor,
    fiber: live.fiber,
    latest: undefined,
    acknowledged: undefined,
    group: live.run
  })

  /** Links `volumes` into the run's sandbox, refusing a container path another volume holds. */
  const mountVolumes = (live: GroupExecutor, volumes: ReadonlyArray<v1.Resource>) =>
    Effect.promise(async () => {
      const taken = new Map([...live.mounted].map((k) => [k.split("\0")[1]!, k.split("\0")[0]!]))
      for (const r of volumes) {
        const containerPath = r.disk?.volume?.containerPath ?? ""
        const holder = taken.get(containerPath)
        if (holder !== undefined && holder !== r.disk?.persistence?.id) {
          throw new Error(`volume ${r.disk?.persistence?.id}: container path "${containerPath}" already holds volume ${holder} in executor ${live.run.executorId}'s sandbox`)
        }
      }
      await Volumes.mount(config.workDir, live.run.sandbox, volumes)
      for (const r of volumes) live.mounted.add(volumeKey(r))
    })

  /** Reports the failure of a group launch for every task of it (a task that never reports stays STAGING forever). */
  const groupLaunchFailed = (
    framework: v1.FrameworkInfo,
    executorId: string,
    group: ReadonlyArray<v1.TaskInfo>,
    entries: ReadonlyArray<RunningTask>,
    cause: Cause.Cause<unknown>
  ) =>
    Effect.gen(function*() {
      yield* Effect.logError("task group launch failed").pipe(
        Effect.annotateLogs({ executorId, cause: Cause.pretty(cause) })
      )
      const now = yield* Clock.currentTimeMillis
      const message = `the agent could not launch the task group: ${errorText(cause)}`
      for (const task of group) {
        const entry = entries.find((e) => e.info.taskId === task.taskId)
        yield* record(
          framework.frameworkId,
          entry?.checkpoint,
          agentStatus(task, v1.TaskState.FAILED, v1.TaskStatus_Reason.CONTAINER_LAUNCH_FAILED, message, now)
        )
      }
    })

  /** A new run of the group's executor: checkpoint, sandbox, volumes, executor, then the group. */
  const startGroupRun = (framework: v1.FrameworkInfo, executorInfo: v1.ExecutorInfo, group: ReadonlyArray<v1.TaskInfo>) => {
    const frameworkId = framework.frameworkId
    const run: Checkpoint.GroupRun = {
      frameworkId,
      executorId: executorInfo.executorId,
      runId: randomUUID(),
      framework,
      executor: executorInfo,
      tasks: group
    }
    const sandbox = Checkpoint.sandboxDir(config.workDir, run)
    const runDir = Checkpoint.runDir(config.workDir, run)
    const live: GroupExecutor = {
      frameworkId,
      info: executorInfo,
      run: { executorId: run.executorId, sandbox, checkpoint: runDir, live: new Set(group.map((t) => t.taskId)) },
      runId: run.runId,
      byTask: new Map(),
      mounted: new Set(),
      lock: Semaphore.makeUnsafe(0),
      groups: 1,
      executor: undefined,
      fiber: undefined,
      ended: false
    }
    const entries = group.map((task) => groupEntry(framework, live, task))
    // Known at once (before anything is awaited), so that a resent group, or a further group of
    // the same executor handled concurrently, finds the run.
    for (const entry of entries) {
      tasks.set(key(frameworkId, entry.info.taskId), entry)
      live.byTask.set(entry.info.taskId, entry)
    }
    groupExecutors.set(key(frameworkId, run.executorId), live)
    return Effect.gen(function*() {
      // The checkpoint comes first: whatever happens next, a restarted agent knows of the group.
      yield* Effect.promise(() => Checkpoint.writeGroupRun(config.workDir, run))
      yield* Effect.promise(async () => {
        const runs = path.dirname(sandbox)
        await fs.mkdir(sandbox, { recursive: true })
        await fs.rm(path.join(runs, "latest"), { force: true })
        await fs.symlink(run.runId, path.join(runs, "latest"))
      })
      yield* mountVolumes(live, newVolumes(live, group))
      const executor = yield* startGroupExecutor(live)
      yield* executor.send({ $case: "launchGroup", value: { taskGroup: { tasks: [...group] } } })
    }).pipe(
      Effect.catchCause((cause) =>
        Effect.gen(function*() {
          // Nothing can join a run that did not start.
          live.ended = true
          yield* groupLaunchFailed(framework, executorInfo.executorId, group, entries, cause)
        })
      ),
      Effect.ensuring(live.lock.release(1))
    )
  }

  /** A further group for a running executor: checkpointed, its new volumes linked, then handed over. */
  const joinGroupRun = (framework: v1.FrameworkInfo, live: GroupExecutor, executorInfo: v1.ExecutorInfo, group: ReadonlyArray<v1.TaskInfo>) => {
    let entries: Array<RunningTask> = []
    return Effect.gen(function*() {
      const frameworkId = framework.frameworkId
      if (group.some((task) => tasks.has(key(frameworkId, task.taskId)))) return
      // Its executor ended (or never started) while this group waited for its turn: the group
      // starts a new run.
      if (!joinable(live) || live.executor === undefined) {
        live.ended = true
        return yield* launchGroup(framework, executorInfo, group)
      }
      if (!sameExecutor(live.info, executorInfo)) {
        const now = yield* Clock.currentTimeMillis
        for (const task of group) {
          yield* record(
            frameworkId,
            undefined,
            agentStatus(
              task,
              v1.TaskState.ERROR,
              v1.TaskStatus_Reason.TASK_INVALID,
              `executor "${executorInfo.executorId}" already runs on this agent with another ExecutorInfo; send the same ExecutorInfo to launch into it, or use a new executor id`,
              now
            )
          )
        }
        return
      }
      entries = group.map((task) => groupEntry(framework, live, task))
      for (const entry of entries) {
        tasks.set(key(frameworkId, entry.info.taskId), entry)
        live.byTask.set(entry.info.taskId, entry)
        live.run.live.add(entry.info.taskId)
      }
      const index = live.groups++
      // Recorded before the executor hears of it: a restarted agent gives it back as a group.
      yield* Effect.promise(() => Checkpoint.writeAddedGroup(live.run.checkpoint, index, group))
      yield* mountVolumes(live, newVolumes(live, group))
      yield* live.executor.send({ $case: "launchGroup", value: { taskGroup: { tasks: [...group] } } })
    }).pipe(
      Effect.catchCause((cause) => groupLaunchFailed(framework, executorInfo.executorId, group, entries, cause)),
      live.lock.withPermit
    )
  }

  const launchGroup = (framework: v1.FrameworkInfo, executorInfo: v1.ExecutorInfo, group: ReadonlyArray<v1.TaskInfo>): Effect.Effect<void> =>
    Effect.suspend(() => {
      const frameworkId = framework.frameworkId
      // A group resent (or recovered) starts nothing again.
      if (group.length === 0 || group.some((task) => tasks.has(key(frameworkId, task.taskId)))) return Effect.void
      const live = groupExecutors.get(key(frameworkId, executorInfo.executorId))
      // The executor id names a run that still runs a task: the group joins it (the master let it,
      // having checked the ExecutorInfo). Else a new run of the executor starts, as for a fresh id.
      if (live !== undefined && joinable(live)) return joinGroupRun(framework, live, executorInfo, group)
      return startGroupRun(framework, executorInfo, group)
    })

  // ---------------------------------------------------------------- recovery

  /**
   * Takes over what the checkpoint holds (before the agent registers, so that its registration
   * reports every task): runs done for the agent go to the garbage collector; the others are
   * re-attached (or reported as ended) with `reconnect`, or killed with `cleanup`.
   */
  const recoverRuns = Effect.gen(function*() {
    const found = yield* Effect.promise(() => Checkpoint.readRuns(config.workDir))
    const now = yield* Clock.currentTimeMillis
    for (const { dir, problem } of found.repaired) {
      yield* Effect.logWarning("a status update log ended in a torn record; it was cut back").pipe(Effect.annotateLogs({ run: dir, problem }))
    }
    for (const { dir, reason } of found.unreadable) {
      // The agent died while recording the run: nothing of it was started.
      yield* Effect.logWarning("dropping an unreadable run checkpoint").pipe(Effect.annotateLogs({ run: dir, reason }))
      const sandbox = path.join(config.workDir, path.relative(Checkpoint.metaDir(config.workDir), dir))
      yield* gc.schedule({ sandbox, checkpoint: dir }, now, now)
    }
    let reattached = 0
    let cleaned = 0
    let waiting = 0
    for (const found_ of found.runs) {
      const { run, log } = found_
      const sandbox = Checkpoint.sandboxDir(config.workDir, run)
      if (log.completedAtMs !== undefined) {
        yield* gc.schedule({ sandbox, checkpoint: found_.dir }, log.completedAtMs, now)
        continue
      }
      if (config.recover === "cleanup") {
        if (run.containerizer === "docker") {
          yield* DockerExecutor.removeContainers({ frameworkId: run.frameworkId, executorId: run.executorId, agentId }).pipe(
            Effect.catch((error) => Effect.logWarning(`cannot remove the containers of task ${run.task.taskId}: ${error.message}`))
          )
        } else {
          const process = found_.process ?? CommandExecutor.find(Checkpoint.exitStatusFile(found_.dir))
          if (process !== undefined) yield* CommandExecutor.kill(process)
        }
        yield* Effect.promise(() =>
          UpdateLog.append(Checkpoint.updatesFile(found_.dir), [{ _tag: "Closed", atMs: now, reason: "--recover=cleanup" }], true)
        )
        yield* gc.schedule({ sandbox, checkpoint: found_.dir }, now, now)
        cleaned++
        continue
      }
      const entry: RunningTask = {
        frameworkId: run.frameworkId,
        framework: run.framework,
        info: run.task,
        runId: run.runId,
        containerizer: run.containerizer,
        sandbox,
        checkpoint: found_.dir,
        executor: undefined,
        fiber: undefined,
        latest: log.latest,
        acknowledged: log.acknowledged
      }
      tasks.set(key(run.frameworkId, run.task.taskId), entry)
      updates.restore(run.frameworkId, run.task.taskId, log.pending)
      const latest = log.latest
      // Over already: its terminal update only waits to be acknowledged.
      if (latest !== undefined && TaskStates.isTerminal(latest.state)) {
        waiting++
        continue
      }
      if (latest === undefined && run.containerizer === "process" && found_.process === undefined) {
        const exitStatusFile = Checkpoint.exitStatusFile(found_.dir)
        const started = CommandExecutor.find(exitStatusFile) !== undefined || (yield* Effect.promise(() => fs.stat(exitStatusFile).then(() => true, () => false)))
        if (!started) {
          // The agent stopped between checkpointing the launch and its executor taking the task
          // (which reports STARTING before anything is spawned): nothing ran, and its sandbox may
          // not even be ready. As Mesos does for a task launched during an agent restart: DROPPED
          // (the framework may launch it again), not FAILED, which would blame the task.
          yield* record(
            run.frameworkId,
            found_.dir,
            agentStatus(
              run.task,
              v1.TaskState.DROPPED,
              v1.TaskStatus_Reason.AGENT_RESTARTED,
              "Task launched during agent restart: the agent stopped before the task's executor took it; it never ran",
              now
            )
          )
          waiting++
          continue
        }
      }
      const killing = latest?.state === v1.TaskState.KILLING
      yield* startExecutor(entry, {
        task: run.task,
        process: found_.process,
        ...(latest?.healthy === undefined ? {} : { healthy: latest.healthy }),
        ...(latest?.ready === undefined ? {} : { ready: latest.ready }),
        ...(killing
          ? { killReason: latest.reason !== v1.TaskStatus_Reason.UNSPECIFIED ? latest.reason : v1.TaskStatus_Reason.KILLED_BY_SCHEDULER }
          : {})
      })
      reattached++
    }
    for (const found_ of found.groups) {
      const { run } = found_
      const sandbox = Checkpoint.sandboxDir(config.workDir, run)
      const completed = found_.tasks.map((t) => t.log.completedAtMs)
      if (completed.every((at) => at !== undefined)) {
        yield* gc.schedule({ sandbox, checkpoint: found_.dir }, Math.max(...completed as Array<number>), now)
        continue
      }
      if (config.recover === "cleanup") {
        for (const t of found_.tasks) {
          const process = t.process ?? CommandExecutor.find(Checkpoint.exitStatusFile(t.dir))
          if (process !== undefined) yield* CommandExecutor.kill(process)
          if (t.log.completedAtMs === undefined) {
            yield* Effect.promise(() =>
              UpdateLog.append(Checkpoint.updatesFile(t.dir), [{ _tag: "Closed", atMs: now, reason: "--recover=cleanup" }], true)
            )
          }
        }
        yield* gc.schedule({ sandbox, checkpoint: found_.dir }, now, now)
        cleaned += found_.tasks.length
        continue
      }
      const shared: Group = {
        executorId: run.executorId,
        sandbox,
        checkpoint: found_.dir,
        live: new Set(found_.tasks.filter((t) => t.log.completedAtMs === undefined).map((t) => t.task.taskId))
      }
      const live: GroupExecutor = {
        frameworkId: run.frameworkId,
        info: run.executor,
        run: shared,
        runId: run.runId,
        // Only the tasks the executor takes over: one over already gets no update from it.
        byTask: new Map(),
        mounted: new Set(),
        lock: Semaphore.makeUnsafe(1),
        groups: found_.groups.length,
        executor: undefined,
        fiber: undefined,
        ended: false
      }
      // Every group the executor was given, each with its own policy (an old checkpoint has one).
      const recovered: Array<DefaultExecutor.RecoveredGroup> = []
      const byId = new Map(found_.tasks.map((t) => [t.task.taskId, t]))
      for (const taskIds of found_.groups) {
        const running: Array<CommandExecutor.Recovered> = []
        const ended: Array<v1.TaskStatus> = []
        for (const taskId of taskIds) {
          const t = byId.get(taskId)
          if (t === undefined) continue
          const latest = t.log.latest
          if (t.log.completedAtMs !== undefined) {
            if (latest !== undefined) ended.push(latest)
            continue
          }
          const entry: RunningTask = {
            frameworkId: run.frameworkId,
            framework: run.framework,
            info: t.task,
            runId: run.runId,
            containerizer: "process",
            sandbox,
            checkpoint: t.dir,
            executor: undefined,
            fiber: undefined,
            latest,
            acknowledged: t.log.acknowledged,
            group: shared
          }
          tasks.set(key(run.frameworkId, t.task.taskId), entry)
          updates.restore(run.frameworkId, t.task.taskId, t.log.pending)
          if (latest !== undefined && TaskStates.isTerminal(latest.state)) {
            // Over already: its terminal update only waits to be acknowledged.
            ended.push(latest)
            waiting++
            continue
          }
          const killing = latest?.state === v1.TaskState.KILLING
          live.byTask.set(t.task.taskId, entry)
          running.push({
            task: t.task,
            process: t.process,
            ...(latest?.healthy === undefined ? {} : { healthy: latest.healthy }),
            ...(latest?.ready === undefined ? {} : { ready: latest.ready }),
            ...(killing
              ? { killReason: latest.reason !== v1.TaskStatus_Reason.UNSPECIFIED ? latest.reason : v1.TaskStatus_Reason.KILLED_BY_SCHEDULER }
              : {})
          })
        }
        if (running.length > 0) recovered.push({ tasks: running, ended })
        reattached += running.length
      }
      // The tasks still running get the group's executor back (and it takes further groups);
      // those over only wait for their acknowledgement (and a kill for them goes nowhere, as for
      // a single task).
      if (recovered.length > 0) {
        for (const r of found_.tasks.flatMap((t) => t.task.resources)) {
          const containerPath = r.disk?.volume?.containerPath
          if (!r.disk?.persistence?.id || containerPath === undefined) continue
          const linked = yield* Effect.promise(() => fs.lstat(path.resolve(sandbox, containerPath)).then(() => true, () => false))
          if (linked) live.mounted.add(volumeKey(r))
        }
        groupExecutors.set(key(run.frameworkId, run.executorId), live)
        yield* startGroupExecutor(live, recovered)
      }
    }
    for (const found_ of found.customs) {
      const sandbox = Checkpoint.sandboxDir(config.workDir, found_.run)
      const completed = found_.tasks.map((t) => t.log.completedAtMs)
      if (completed.every((at) => at !== undefined)) {
        yield* gc.schedule({ sandbox, checkpoint: found_.dir }, Math.max(now, ...completed as Array<number>), now)
        continue
      }
      if (config.recover === "cleanup") {
        yield* customs.cleanup(found_, now)
        yield* gc.schedule({ sandbox, checkpoint: found_.dir }, now, now)
        cleaned += found_.tasks.length
        continue
      }
      const run = yield* customs.recover(found_)
      for (const t of found_.tasks) {
        if (t.log.completedAtMs !== undefined) continue
        const custom = run.tasks.get(t.task.taskId)
        if (custom === undefined) continue
        const entry = customEntry(found_.run.framework, run, custom)
        entry.latest = t.log.latest
        entry.acknowledged = t.log.acknowledged
        tasks.set(key(run.frameworkId, t.task.taskId), entry)
        updates.restore(run.frameworkId, t.task.taskId, t.log.pending)
        if (custom.terminal) waiting++
        else reattached++
      }
    }
    if (found.runs.length > 0 || found.groups.length > 0 || found.customs.length > 0 || found.unreadable.length > 0) {
      yield* Effect.logInfo("recovered the checkpoint").pipe(
        Effect.annotateLogs({
          mode: config.recover,
          tasks: reattached,
          awaitingAcknowledgement: waiting,
          cleanedUp: cleaned,
          pendingUpdates: updates.pendingCount(),
          pendingGc: gc.pending()
        })
      )
    }
  })
  yield* recoverRuns
  // After the recovery: the cgroups of tasks still running are in use and stay.
  if (cgroups._tag !== "Unavailable") yield* Cgroups.sweep(cgroups)

  // ---------------------------------------------------------------- the master

  /** Appends an acknowledgement to the run's log: an ack lost to a crash costs one resend. */
  const recordAck = (task: RunningTask, uuid: Uint8Array, atMs: number) =>
    Effect.tryPromise(() => UpdateLog.append(Checkpoint.updatesFile(task.checkpoint), [{ _tag: "Ack", uuid, atMs }], false)).pipe(
      Effect.catch((error) =>
        Effect.logWarning("cannot checkpoint an acknowledgement").pipe(
          Effect.annotateLogs({ taskId: task.info.taskId, error: String(error.cause ?? error) })
        )
      )
    )

  const handle = (message: NonNullable<v1.ConnectResponse["message"]>) =>
    Effect.gen(function*() {
      switch (message.$case) {
        case "registered": {
          agentId = message.value.agentId
          failures = 0
          lastFailed = ""
          yield* Effect.promise(() => Volumes.writeCheckpoint(config.workDir, { agentId, resources: checkpointed }))
          if (message.value.pingIntervalSeconds > 0) pingIntervalMs = message.value.pingIntervalSeconds * 1000
          yield* Deferred.succeed(registered, agentId)
          // A new master knows nothing of what is in flight: resend every unacknowledged update.
          updates.resendAll(yield* Clock.currentTimeMillis)
          yield* Effect.logInfo("agent registered").pipe(Effect.annotateLogs({ agentId, master: config.master }))
          return
        }
        case "run":
          // Launches of one message overlap: each mostly waits for the disk (checkpoint, sandbox).
          yield* Effect.forEach(
            message.value.tasks,
            ({ framework, task }) => (framework !== undefined && task !== undefined ? launch(framework, task) : Effect.void),
            { concurrency: LAUNCH_CONCURRENCY, discard: true }
          )
          yield* Effect.forEach(
            message.value.taskGroups,
            ({ executor, framework, taskGroup }) =>
              framework !== undefined && executor !== undefined ? launchGroup(framework, executor, taskGroup?.tasks ?? []) : Effect.void,
            { concurrency: LAUNCH_CONCURRENCY, discard: true }
          )
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
        case "frameworkMessage":
          yield* customs.frameworkMessage(message.value.frameworkId, message.value.executorId, message.value.data)
          return
        case "kill":
          for (const kill of message.value.kills) {
            const task = tasks.get(key(kill.frameworkId, kill.taskId))
            if (task?.executor === undefined) continue
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
          for (const ack of message.value.acknowledgements) {
            if (!updates.isInFlight(ack.frameworkId, ack.taskId, ack.uuid)) continue
            const now = yield* Clock.currentTimeMillis
            const task = tasks.get(key(ack.frameworkId, ack.taskId))
            // Checkpointed before the next update goes out, so a restart resends from there.
            if (task !== undefined) yield* recordAck(task, ack.uuid, now)
            const acked = updates.acknowledge(ack.frameworkId, ack.taskId, ack.uuid, now)
            if (acked === undefined || task === undefined) continue
            task.acknowledged = acked
            yield* task.executor?.send({ $case: "acknowledged", value: { taskId: ack.taskId, uuid: ack.uuid } }) ?? Effect.void
            // Once its terminal update is acknowledged a task is done: the agent forgets it, and
            // its sandbox goes after the GC delay.
            if (TaskStates.isTerminal(acked.state)) {
              tasks.delete(key(ack.frameworkId, ack.taskId))
              const group = task.group
              // A group's executor and sandbox are shared: they go with the group's last task.
              if (group !== undefined) group.live.delete(ack.taskId)
              if (group === undefined || group.live.size === 0) {
                const live = groupExecutors.get(key(ack.frameworkId, group?.executorId ?? ""))
                if (live !== undefined && live.run === group) {
                  // Nothing joins it any more: a group naming its id starts a new run.
                  live.ended = true
                  groupExecutors.delete(key(ack.frameworkId, live.run.executorId))
                }
                yield* task.executor?.end ?? Effect.void
                yield* gc.schedule(group ?? { sandbox: task.sandbox, checkpoint: task.checkpoint }, now, now)
              }
            }
          }
          return
        }
        default:
          return
      }
    })

  /**
   * The tasks as the master should know them. Each carries the update in flight (the oldest not
   * acknowledged), else the last acknowledged: the master then follows the updates as they arrive,
   * in order, as it does while connected.
   */
  const reports = (): Array<v1.TaskReport> =>
    [...tasks.values()].map((t) => {
      const status = updates.pending(t.frameworkId, t.info.taskId)[0] ?? t.acknowledged ?? t.latest
      return { frameworkId: t.frameworkId, task: t.info, ...(status === undefined ? {} : { latestStatus: status }) }
    })

  /** One connection to the master: ends (fails) when the stream breaks. */
  // Several masters may be named ("a:5050,b:5050"); a standby names the leader in its answer.
  const masters = config.master.split(",").map((m) => m.trim()).filter((m) => m !== "")
  let target = masters[0] ?? config.master
  let masterIndex = 0
  /** The master whose connection last failed outright: a stale pointer to it is not followed. */
  let lastFailed = ""
  let failures = 0

  const connect = Effect.gen(function*() {
    // Keepalive pings: a silent network cut must end the stream, not leave it hanging.
    const client = new v1.AgentServiceClient(target, config.channelCredentials, { ...Grpc.keepaliveOptions, ...config.clientOptions })
    yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
    // Telling a standby which master failed us lets it hold the stream until it leads, rather than
    // send us back to a leader that is most likely dead.
    const metadata = new grpc.Metadata()
    if (lastFailed !== "" && lastFailed !== target) metadata.set(Grpc.LOST_MASTER_HEADER, lastFailed)
    const call = client.connect(metadata)
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
  /** Where to connect next after a failure: the leader a standby named, else the next master. */
  const nextTarget = (error: unknown) => {
    const metadata = (error as grpc.ServiceError | undefined)?.metadata
    const leader = String(metadata?.get("berth-leader")[0] ?? "")
    // A standby that held us for two lease TTLs knows the leader is alive: try it again.
    const alive = metadata?.get(Grpc.LEADER_ALIVE_HEADER)[0] !== undefined
    if (leader !== "" && (leader !== lastFailed || alive)) {
      if (alive) lastFailed = ""
      target = leader
    } else if (leader === "") {
      lastFailed = target
      masterIndex = (masterIndex + 1) % Math.max(masters.length, 1)
      target = masters[masterIndex] ?? target
    }
  }
  yield* connect.pipe(
    Effect.catch((error) =>
      Effect.gen(function*() {
        yield* Effect.logWarning("connection to master lost; reconnecting").pipe(
          Effect.annotateLogs({ master: target, error: error.message })
        )
        nextTarget(error)
        // Backoff restarts after every registration: a long-lived connection that breaks is
        // retried quickly (a master failover must not wait out old failures).
        const delay = Math.min(100 * 2 ** failures, 2000) * (0.5 + Math.random())
        failures++
        yield* Effect.sleep(delay)
      })
    ),
    Effect.forever,
    Effect.forkIn(scope)
  )

  // At-least-once delivery: an update the master dropped (it had no subscriber, or restarted) is
  // resent until acknowledged, with exponential backoff per update.
  const tickMs = Math.min(1000, Math.max(20, Math.floor(config.statusUpdateBackoff.minMs / 4)))
  yield* Effect.gen(function*() {
    updates.retry(yield* Clock.currentTimeMillis)
  }).pipe(Effect.repeat(Schedule.spaced(tickMs)), Effect.forkIn(scope))

  // Stopping the agent: with killTasksOnStop every task is shut down (SIGTERM, SIGKILL after its
  // grace period, at most STOP_GRACE_SECONDS) and its terminal update checkpointed; without, the
  // executors are merely interrupted and the tasks keep running for the next agent to re-attach.
  // Registered last, so it runs first, while the connection and the executors are still up.
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      // The tasks of a group share one executor: it is shut down once.
      const stopping = config.killTasksOnStop
        ? [...new Map([...tasks.values()].filter((t) => t.fiber !== undefined && t.executor !== undefined).map((t) => [t.executor, t])).values()]
        : []
      if (stopping.length === 0) return
      for (const task of stopping) {
        const grace = Math.min(task.info.killPolicy?.gracePeriodSeconds ?? 3, STOP_GRACE_SECONDS)
        // 0 would mean "the task's own grace period"; a tiny positive one is "at once".
        yield* task.executor!.send({ $case: "shutdown", value: { gracePeriodSeconds: grace > 0 ? grace : 0.001 } })
      }
      yield* Effect.forEach(stopping, (t) => Fiber.await(t.fiber!), { concurrency: "unbounded", discard: true }).pipe(
        Effect.timeoutOption((STOP_GRACE_SECONDS + 2) * 1000),
        Effect.interruptible
      )
    })
  )

  const agentHandle: AgentHandle = {
    registered: Deferred.await(registered),
    info,
    workDir: config.workDir,
    pendingUpdates: () => updates.pendingCount(),
    pendingGc: () => gc.pending()
  }
  return agentHandle
})
