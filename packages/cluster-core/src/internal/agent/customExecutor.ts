import * as grpc from "@grpc/grpc-js"
import { TaskStates, v1 } from "@berth/proto"
import { type CommandExecutor, ExecutorProcess, ExecutorSession } from "@berth/sdk-executor"
import { Clock, Deferred, Effect, Semaphore, type Context, type Fiber, type Scope } from "effect"
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { InvalidArgument, NotFound, Unauthenticated } from "../../ClusterError.ts"
import * as Grpc from "../grpc.ts"
import * as Checkpoint from "./checkpoint.ts"
import * as UpdateLog from "./updateLog.ts"

/**
 * Custom executors: a framework's own executor program (written with `@berth/sdk-executor`),
 * started by the agent as a process group in its sandbox and talking back over the agent's
 * gRPC `ExecutorService`. The agent
 *
 * - starts the program with the executor environment (`ExecutorSession.Env`) and kills it, failing
 *   its tasks with REASON_EXECUTOR_REGISTRATION_TIMEOUT, if it does not subscribe in time;
 * - queues events (launch, kill, acknowledged, message) until the executor subscribes, and on a
 *   re-subscription takes the updates it lists (each uuid once) and launches again the tasks the
 *   executor lost;
 * - checkpoints every update before forwarding it, and takes exactly one terminal update per task;
 * - when the program ends, fails its unfinished tasks with REASON_EXECUTOR_TERMINATED;
 * - after its own restart, re-attaches to a program still running and waits for it to subscribe
 *   again (REASON_EXECUTOR_REREGISTRATION_TIMEOUT otherwise).
 */

type Event = ExecutorSession.ExecutorEvent

/** What the agent keeps of one task given to a custom executor. */
export interface CustomTask {
  readonly info: v1.TaskInfo
  /** The task's checkpoint directory (`tasks/<taskId>` of the run's). */
  readonly dir: string
  /** Uuids of every update taken for the task (hex): a resent one is not taken twice. */
  readonly seen: Set<string>
  /** Uuids acknowledged by the scheduler (hex): answered again when the executor resends them. */
  readonly acknowledged: Set<string>
  terminal: boolean
}

/** One run of a custom executor program. */
export interface CustomRun {
  readonly frameworkId: string
  readonly executorId: string
  readonly runId: string
  readonly framework: v1.FrameworkInfo
  readonly executor: v1.ExecutorInfo
  /** The secret the program authenticates its calls with ("" for runs of older agents). */
  readonly token: string
  readonly sandbox: string
  readonly dir: string
  readonly tasks: Map<string, CustomTask>
  /** Completes on the first subscription of this agent's lifetime. */
  readonly subscribed: Deferred.Deferred<void>
  /** The open subscription, if any. */
  stream: grpc.ServerWritableStream<v1.ExecutorServiceSubscribeRequest, v1.ExecutorServiceSubscribeResponse> | undefined
  /** Events waiting for a subscriber, in order. */
  readonly pending: Array<Event>
  handle: ExecutorProcess.Handle | undefined
  /** The program's cgroup, when the agent limits resources. */
  isolated: CommandExecutor.Isolated | undefined
  fiber: Fiber.Fiber<void> | undefined
  /** Set once the program ended (or was given up on): nothing more is sent to it. */
  over: boolean
  /** Set once the agent asked it to shut down (no task left): its stream is ended. */
  ending: boolean
}

export interface Config {
  readonly workDir: string
  readonly registrationTimeoutMs: number
  readonly reregistrationTimeoutMs: number
  /** Given to the program: how long it keeps re-subscribing after losing the agent. */
  readonly recoveryTimeoutMs: number
  readonly reattachPollMs: number
  /** Whether interrupting a run's watch (the agent stops) kills its program. */
  readonly killOnStop: boolean
  readonly agentId: () => string
  readonly endpoint: () => string
  /** PEM file of the agent's CA, given to the program when the agent serves TLS. */
  readonly caFile?: string | undefined
  /** Checkpoints an update (in `dir`) and hands it to the status update manager. */
  readonly record: (frameworkId: string, dir: string, status: v1.TaskStatus) => Effect.Effect<void>
  /** Sends a message to the master (an executor's message for its scheduler, its exit). */
  readonly toMaster: (message: v1.ConnectRequest) => void
  /** Where runs' watching fibers live. */
  readonly scope: Scope.Scope
  /** Whether executor calls must carry their run's token (`authorization: Bearer <token>`). */
  readonly authenticateExecutors: boolean
  /** Resource limits for a run's program (cgroups), keyed by run id; none when undefined. */
  readonly isolation?: ((key: string) => CommandExecutor.Isolation | undefined) | undefined
}

/** How long a program has to exit after SHUTDOWN before it is killed (Mesos' default). */
const SHUTDOWN_GRACE_SECONDS = 5

const hex = (uuid: Uint8Array) => Buffer.from(uuid).toString("hex")
const runKey = (frameworkId: string, executorId: string) => `${frameworkId}/${executorId}`

/** Why `executor` cannot be run as a custom executor, naming the field. */
export const problem = (executor: v1.ExecutorInfo, field: string): string | undefined => {
  if (executor.type === v1.ExecutorInfo_Type.DEFAULT) return `${field}.type: TYPE_DEFAULT runs task groups only (LAUNCH_GROUP)`
  if (!/^[A-Za-z0-9._-]+$/.test(executor.executorId)) return `${field}.executorId: must match [A-Za-z0-9._-]+`
  if (executor.command === undefined || executor.command.value === "") {
    return `${field}.command: a custom executor needs the command that starts its program`
  }
  if (executor.container !== undefined) return `${field}.container: custom executors run as processes only`
  for (const [index, uri] of executor.command.uris.entries()) {
    const problem = ExecutorProcess.artifactProblem(uri, index)
    if (problem !== undefined) return `${field}.${problem}`
  }
  return undefined
}

export const make = (config: Config) => {
  // Launches are one at a time: two tasks for a new executor arriving together must start one
  // program, not race to start two (runFor awaits the disk before it records the run).
  const launching = Semaphore.makeUnsafe(1)
  const runs = new Map<string, CustomRun>()

  const send = (run: CustomRun, event: Event): Effect.Effect<void> =>
    Effect.sync(() => {
      if (run.over) return
      if (run.stream !== undefined) run.stream.write({ event })
      else run.pending.push(event)
    })

  const agentStatus = (run: CustomRun, task: CustomTask, reason: v1.TaskStatus_Reason, message: string, now: number) =>
    v1.TaskStatus.create({
      taskId: task.info.taskId,
      state: v1.TaskState.FAILED,
      message,
      source: v1.TaskStatus_Source.AGENT,
      reason,
      agentId: config.agentId(),
      executorId: run.executorId,
      timestampMs: now,
      uuid: Buffer.from(randomUUID().replaceAll("-", ""), "hex")
    })

  /** Takes one status from the executor: once per uuid, and nothing after the task's terminal one. */
  const take = (run: CustomRun, status: v1.TaskStatus, field: string) =>
    Effect.gen(function*() {
      const task = run.tasks.get(status.taskId)
      if (task === undefined) {
        return yield* new InvalidArgument({ field: `${field}.taskId`, rule: `no task "${status.taskId}" was given to executor ${run.executorId}` })
      }
      if (status.uuid.length !== 16) return yield* new InvalidArgument({ field: `${field}.uuid`, rule: "must be 16 bytes" })
      const id = hex(status.uuid)
      if (task.acknowledged.has(id)) {
        // Resent after the acknowledgement was lost with the connection: answer it again.
        yield* send(run, { $case: "acknowledged", value: { taskId: task.info.taskId, uuid: Buffer.from(status.uuid) } })
        return
      }
      if (task.seen.has(id)) return
      if (task.terminal) {
        yield* Effect.logWarning("ignoring an update after the task's terminal update").pipe(
          Effect.annotateLogs({ taskId: task.info.taskId, state: status.state })
        )
        return
      }
      task.seen.add(id)
      if (TaskStates.isTerminal(status.state)) task.terminal = true
      // Copied: bytes fields may be views into the whole received message.
      const taken = v1.TaskStatus.create({
        ...status,
        uuid: Buffer.from(status.uuid),
        data: Buffer.from(status.data),
        source: v1.TaskStatus_Source.EXECUTOR,
        executorId: run.executorId,
        agentId: config.agentId()
      })
      yield* config.record(run.frameworkId, task.dir, taken)
    })

  /** Fails every unfinished task of the run with `reason` (the agent speaks for the executor). */
  const failUnfinished = (run: CustomRun, reason: v1.TaskStatus_Reason, message: string) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      for (const task of run.tasks.values()) {
        if (task.terminal) continue
        task.terminal = true
        const status = agentStatus(run, task, reason, message, now)
        task.seen.add(hex(status.uuid))
        yield* config.record(run.frameworkId, task.dir, status)
      }
    })

  /**
   * Watches a run's program: the (re-)registration deadline, then its end. Interrupted when the
   * agent stops: the program is left running (or killed with `killOnStop`).
   */
  const watch = (run: CustomRun, handle: ExecutorProcess.Handle, deadlineMs: number, reason: v1.TaskStatus_Reason) =>
    Effect.gen(function*() {
      const first = yield* Effect.raceAll([
        Deferred.await(run.subscribed).pipe(Effect.as("subscribed" as const)),
        handle.awaitExit.pipe(Effect.as("exited" as const)),
        Effect.sleep(deadlineMs).pipe(Effect.as("timeout" as const))
      ])
      if (first === "timeout") {
        const seconds = deadlineMs / 1000
        const why = reason === v1.TaskStatus_Reason.EXECUTOR_REGISTRATION_TIMEOUT
          ? `the executor did not subscribe within ${seconds} s (executor registration timeout); it was killed`
          : `the executor did not subscribe again within ${seconds} s of the agent's restart; it was killed`
        yield* Effect.logWarning(why).pipe(Effect.annotateLogs({ executorId: run.executorId, pid: handle.pid }))
        if (handle.process !== undefined) yield* ExecutorProcess.kill(handle.process)
        yield* handle.awaitExit
        yield* finish(run, reason, why, undefined)
        return
      }
      const termination = yield* handle.awaitExit
      const limitation = run.isolated?.limitation()
      yield* limitation === undefined
        ? finish(run, v1.TaskStatus_Reason.EXECUTOR_TERMINATED, `the executor ended before its task did: ${ExecutorProcess.describe(termination)}`, termination)
        : finish(run, limitation.reason, `${limitation.message.replace(/^the task/, "the executor")}. ${ExecutorProcess.describe(termination)}`, termination)
    }).pipe(
      Effect.onInterrupt(() =>
        config.killOnStop && handle.process !== undefined && !handle.hasExited() ? ExecutorProcess.kill(handle.process) : Effect.void
      )
    )

  const finish = (run: CustomRun, reason: v1.TaskStatus_Reason, message: string, termination: ExecutorProcess.Termination | undefined) =>
    Effect.gen(function*() {
      run.over = true
      if (run.isolated !== undefined) yield* run.isolated.release
      run.isolated = undefined
      run.stream?.end()
      run.stream = undefined
      yield* failUnfinished(run, reason, message)
      config.toMaster({
        message: {
          $case: "executorExited",
          value: {
            frameworkId: run.frameworkId,
            executorId: run.executorId,
            ...(termination?.code === null || termination?.code === undefined ? {} : { status: termination.code })
          }
        }
      })
      if (runs.get(runKey(run.frameworkId, run.executorId)) === run) runs.delete(runKey(run.frameworkId, run.executorId))
    })

  const environment = (run: CustomRun): Record<string, string> => {
    const Env = ExecutorSession.Env
    const env: Record<string, string> = {}
    if (process.env.PATH !== undefined) env.PATH = process.env.PATH
    for (const variable of run.executor.command?.environment ?? []) env[variable.name] = variable.value
    env[Env.frameworkId] = run.frameworkId
    env[Env.executorId] = run.executorId
    env[Env.agentId] = config.agentId()
    env[Env.agentEndpoint] = config.endpoint()
    env[Env.sandbox] = run.sandbox
    env[Env.recoveryTimeoutMs] = String(config.recoveryTimeoutMs)
    env[Env.subscriptionBackoffMaxMs] = "1000"
    env[Env.token] = run.token
    if (config.caFile !== undefined) env[Env.agentCaFile] = config.caFile
    return env
  }

  /**
   * The run of `executor` for a new task: the live one, or a new one (checkpointed, its sandbox
   * made, its program started). Fails with a message when the program cannot be started.
   */
  const runFor = (framework: v1.FrameworkInfo, executor: v1.ExecutorInfo) =>
    Effect.gen(function*() {
      const live = runs.get(runKey(framework.frameworkId, executor.executorId))
      if (live !== undefined && !live.over && !live.ending) return { run: live, started: false }
      const record: Checkpoint.CustomRun = {
        frameworkId: framework.frameworkId,
        executorId: executor.executorId,
        runId: randomUUID(),
        framework,
        executor,
        token: randomBytes(24).toString("base64url")
      }
      const sandbox = Checkpoint.sandboxDir(config.workDir, record)
      const dir = yield* Effect.promise(() => Checkpoint.writeCustomRun(config.workDir, record))
      yield* Effect.promise(async () => {
        await fs.mkdir(sandbox, { recursive: true })
        const runsDir = path.dirname(sandbox)
        await fs.rm(path.join(runsDir, "latest"), { force: true })
        await fs.symlink(record.runId, path.join(runsDir, "latest"))
      })
      const run: CustomRun = {
        ...record,
        sandbox,
        dir,
        tasks: new Map(),
        subscribed: yield* Deferred.make<void>(),
        stream: undefined,
        pending: [],
        handle: undefined,
        isolated: undefined,
        fiber: undefined,
        over: false,
        ending: false
      }
      runs.set(runKey(run.frameworkId, run.executorId), run)
      return { run, started: true }
    })

  /**
   * What the program's cgroup is sized for: the executor's own resources and those of the task it
   * is started for (later tasks do not resize it).
   */
  const limits = (run: CustomRun, first: v1.TaskInfo | undefined) =>
    v1.TaskInfo.create({ taskId: "executor", resources: [...run.executor.resources, ...(first?.resources ?? [])] })

  const startProgram = (run: CustomRun, first: v1.TaskInfo) =>
    Effect.gen(function*() {
      const isolation = config.isolation?.(run.runId)
      if (isolation !== undefined) run.isolated = yield* isolation.prepare(limits(run, first), false).pipe(Effect.orDie)
      const handle = yield* ExecutorProcess.start({
        executorId: run.executorId,
        sandbox: run.sandbox,
        command: run.executor.command!,
        env: environment(run),
        exitStatusFile: Checkpoint.exitStatusFile(run.dir),
        joinFiles: run.isolated?.procsFiles
      }).pipe(Effect.orDie)
      run.handle = handle
      if (handle.process !== undefined) yield* Effect.promise(() => Checkpoint.writeProcess(run.dir, handle.process!))
      run.fiber = yield* watch(run, handle, config.registrationTimeoutMs, v1.TaskStatus_Reason.EXECUTOR_REGISTRATION_TIMEOUT).pipe(
        Effect.forkIn(config.scope)
      )
    })

  /**
   * Fetches the executor's `command.uris` into the new run's sandbox (its program may be one of
   * them). On failure the run ends before any program started: its tasks FAILED with
   * REASON_FETCHER_FAILED, the master told the executor exited. Returns whether to start it.
   *
   * The fetch holds the launch permit: other custom executor launches on this agent wait for it
   * (artifacts are usually local or cached; a slow download delays them).
   */
  const fetchArtifacts = (run: CustomRun) =>
    Effect.gen(function*() {
      const uris = run.executor.command?.uris ?? []
      if (uris.length === 0) return true
      const fetched = yield* ExecutorProcess.fetchArtifacts(run.sandbox, uris, { cacheDir: path.join(config.workDir, "cache") }).pipe(
        Effect.result
      )
      if (fetched._tag === "Success") return true
      const error = fetched.failure
      yield* Effect.logWarning("cannot fetch a custom executor's artifacts").pipe(
        Effect.annotateLogs({ executorId: run.executorId, uri: error.uri, error: error.message })
      )
      yield* finish(run, v1.TaskStatus_Reason.FETCHER_FAILED, `Failed to fetch '${error.uri}': ${error.message}`, undefined)
      return false
    })

  /**
   * Gives `task` to its custom executor, starting the program if it does not run. Returns the
   * task's checkpoint directory; fails (before the executor hears of the task) with a message.
   */
  const launch = (framework: v1.FrameworkInfo, task: v1.TaskInfo) =>
    launching.withPermit(Effect.gen(function*() {
      const executor = task.executor!
      const { run, started } = yield* runFor(framework, executor)
      const dir = yield* Effect.promise(() => Checkpoint.writeCustomTask(run.dir, task))
      const entry: CustomTask = { info: task, dir, seen: new Set(), acknowledged: new Set(), terminal: false }
      run.tasks.set(task.taskId, entry)
      yield* send(run, { $case: "launch", value: { task } })
      if (started && (yield* fetchArtifacts(run))) {
        yield* startProgram(run, task).pipe(
          Effect.catchCause((cause) =>
            Effect.gen(function*() {
              run.over = true
              runs.delete(runKey(run.frameworkId, run.executorId))
              return yield* Effect.failCause(cause)
            })
          )
        )
      }
      return { run, task: entry }
    }))

  /** Forwards an event for a task (kill, acknowledged) to its executor. */
  const sendFor = (frameworkId: string, executorId: string, event: Event) =>
    Effect.suspend(() => {
      const run = runs.get(runKey(frameworkId, executorId))
      return run === undefined ? Effect.void : send(run, event)
    })

  /** Notes an acknowledgement (for the executor to hear again if it resends the update). */
  const acknowledged = (frameworkId: string, executorId: string, taskId: string, uuid: Uint8Array) =>
    Effect.suspend(() => {
      const run = runs.get(runKey(frameworkId, executorId))
      const task = run?.tasks.get(taskId)
      if (run === undefined || task === undefined) return Effect.void
      task.acknowledged.add(hex(uuid))
      return send(run, { $case: "acknowledged", value: { taskId, uuid: Buffer.from(uuid) } })
    })

  /** No task of the run is left: the executor is asked to shut down, and its stream ends. */
  const end = (frameworkId: string, executorId: string) =>
    Effect.suspend(() => {
      const run = runs.get(runKey(frameworkId, executorId))
      if (run === undefined || run.over || [...run.tasks.values()].some((t) => !t.terminal)) return Effect.void
      run.ending = true
      return send(run, { $case: "shutdown", value: { gracePeriodSeconds: SHUTDOWN_GRACE_SECONDS } }).pipe(
        Effect.andThen(Effect.sync(() => {
          run.stream?.end()
          run.stream = undefined
        })),
        // A program that does not exit after its SHUTDOWN is killed (Mesos'
        // --executor_shutdown_grace_period); its watcher then records how it ended.
        Effect.andThen(
          Effect.sleep(SHUTDOWN_GRACE_SECONDS * 1000).pipe(
            Effect.andThen(Effect.suspend(() => {
              const process = run.handle?.process
              if (process === undefined || run.handle!.hasExited()) return Effect.void
              return Effect.logWarning("the executor did not exit after its shutdown; killing it").pipe(
                Effect.annotateLogs({ executorId: run.executorId }),
                Effect.andThen(ExecutorProcess.kill(process))
              )
            })),
            Effect.forkIn(config.scope)
          )
        ),
        Effect.asVoid
      )
    })

  /** A framework message from the scheduler, for one of this agent's custom executors. */
  const frameworkMessage = (frameworkId: string, executorId: string, data: Uint8Array) =>
    Effect.suspend(() => {
      const run = runs.get(runKey(frameworkId, executorId))
      if (run === undefined) {
        return Effect.logWarning("dropping a framework message for an unknown executor").pipe(Effect.annotateLogs({ frameworkId, executorId }))
      }
      return send(run, { $case: "message", value: { data: Buffer.from(data) } })
    })

  const digest = (text: string) => createHash("sha256").update(text, "utf8").digest()
  const findRun = (frameworkId: string, executorId: string, metadata: grpc.Metadata) =>
    Effect.suspend((): Effect.Effect<CustomRun, NotFound | Unauthenticated> => {
      const run = runs.get(runKey(frameworkId, executorId))
      const presented = String(metadata.get("authorization")[0] ?? "")
      // Checked before the run is looked up, so a caller without the token learns nothing.
      if (config.authenticateExecutors) {
        const expected = run === undefined || run.token === "" ? undefined : `Bearer ${run.token}`
        if (presented === "" || expected === undefined || !timingSafeEqual(digest(presented), digest(expected))) {
          return Effect.fail(new Unauthenticated({ reason: "authorization: executor calls need `authorization: Bearer <BERTH_EXECUTOR_TOKEN>` of that executor" }))
        }
      }
      return run === undefined || run.over
        ? Effect.fail(new NotFound({ field: "executorId", rule: `no executor "${executorId}" of framework "${frameworkId}" runs on this agent` }))
        : Effect.succeed(run)
    })

  // ------------------------------------------------------------ the ExecutorService

  const subscribe = (run: (effect: Effect.Effect<void>) => void) =>
  (call: grpc.ServerWritableStream<v1.ExecutorServiceSubscribeRequest, v1.ExecutorServiceSubscribeResponse>) => {
    const request = call.request
    run(
      Effect.gen(function*() {
        const custom = yield* findRun(request.frameworkId, request.executorId, call.metadata)
        // A newer subscription replaces an older one (the executor reconnected).
        custom.stream?.end()
        custom.stream = undefined
        for (const [i, status] of request.unacknowledgedUpdates.entries()) {
          yield* take(custom, status, `unacknowledgedUpdates[${i}]`).pipe(Effect.catch(() => Effect.void))
        }
        // Tasks the executor lost (it never heard of them, or the launch died with the old
        // stream): launched again, unless a launch still waits in the queue.
        const known = new Set(request.unacknowledgedTasks.map((t) => t.taskId))
        const queued = new Set(custom.pending.flatMap((e) => (e.$case === "launch" ? [e.value.task?.taskId ?? ""] : [])))
        const relaunch = [...custom.tasks.values()].filter((t) => !t.terminal && t.seen.size === 0 && !known.has(t.info.taskId) && !queued.has(t.info.taskId))
        call.write({
          event: {
            $case: "subscribed",
            value: {
              executorInfo: custom.executor,
              frameworkInfo: custom.framework,
              agentInfo: { agentId: config.agentId(), hostname: "", resources: [], attributes: [], endpoint: config.endpoint(), version: "" },
              containerId: custom.runId
            }
          }
        })
        for (const task of relaunch) call.write({ event: { $case: "launch", value: { task: task.info } } })
        for (const event of custom.pending.splice(0)) call.write({ event })
        custom.stream = call
        const detach = () => {
          if (custom.stream === call) custom.stream = undefined
        }
        call.on("cancelled", detach)
        call.on("close", detach)
        yield* Deferred.succeed(custom.subscribed, undefined)
        if (custom.ending) {
          call.write({ event: { $case: "shutdown", value: { gracePeriodSeconds: 3 } } })
          call.end()
        }
      }).pipe(Effect.catch((error) => Effect.sync(() => Grpc.failStream(call, error))))
    )
  }

  const update = (request: v1.UpdateRequest, call: grpc.ServerUnaryCall<v1.UpdateRequest, v1.UpdateResponse>) =>
    Effect.gen(function*() {
      const custom = yield* findRun(request.frameworkId, request.executorId, call.metadata)
      for (const [i, status] of request.statuses.entries()) yield* take(custom, status, `statuses[${i}]`)
      return {}
    })

  const message = (
    request: v1.ExecutorServiceMessageRequest,
    call: grpc.ServerUnaryCall<v1.ExecutorServiceMessageRequest, v1.ExecutorServiceMessageResponse>
  ) =>
    Effect.gen(function*() {
      const custom = yield* findRun(request.frameworkId, request.executorId, call.metadata)
      config.toMaster({
        message: {
          $case: "executorMessage",
          value: { frameworkId: custom.frameworkId, executorId: custom.executorId, data: Buffer.from(request.data) }
        }
      })
      return {}
    })

  // ------------------------------------------------------------ recovery

  /**
   * Takes over a run found in the checkpoint: returns its unfinished tasks (to report to the
   * master) and starts watching its program (or reports its tasks ended, when it is gone).
   */
  const recover = (found: Checkpoint.RecoveredCustom) =>
    Effect.gen(function*() {
      const sandbox = Checkpoint.sandboxDir(config.workDir, found.run)
      const run: CustomRun = {
        ...found.run,
        sandbox,
        dir: found.dir,
        tasks: new Map(),
        subscribed: yield* Deferred.make<void>(),
        stream: undefined,
        pending: [],
        handle: undefined,
        isolated: undefined,
        fiber: undefined,
        over: false,
        ending: false
      }
      for (const t of found.tasks) {
        const seen = new Set<string>()
        const acknowledgedIds = new Set<string>()
        for (const record of t.records) {
          if (record._tag === "Update") seen.add(hex(record.status.uuid))
          if (record._tag === "Ack") acknowledgedIds.add(hex(record.uuid))
        }
        run.tasks.set(t.task.taskId, {
          info: t.task,
          dir: t.dir,
          seen,
          acknowledged: acknowledgedIds,
          terminal: t.log.latest !== undefined && TaskStates.isTerminal(t.log.latest.state)
        })
      }
      runs.set(runKey(run.frameworkId, run.executorId), run)
      const exitStatusFile = Checkpoint.exitStatusFile(found.dir)
      const process = found.process ?? ExecutorProcess.find(exitStatusFile)
      const handle = process === undefined ? undefined : ExecutorProcess.attach(process, exitStatusFile, config.reattachPollMs)
      if (handle === undefined || handle.hasExited()) {
        const termination = handle === undefined ? undefined : yield* handle.awaitExit
        yield* finish(
          run,
          v1.TaskStatus_Reason.EXECUTOR_TERMINATED,
          `the executor ended while the agent was away${termination === undefined ? "" : `: ${ExecutorProcess.describe(termination)}`}`,
          termination
        )
        return run
      }
      run.handle = handle
      const isolation = config.isolation?.(run.runId)
      if (isolation !== undefined) {
        const prepared = yield* Effect.result(isolation.prepare(limits(run, found.tasks[0]?.task), true))
        if (prepared._tag === "Success") run.isolated = prepared.success
      }
      run.fiber = yield* watch(run, handle, config.reregistrationTimeoutMs, v1.TaskStatus_Reason.EXECUTOR_REREGISTRATION_TIMEOUT).pipe(
        Effect.forkIn(config.scope)
      )
      return run
    })

  /** `--recover=cleanup`: kills the run's program and closes its tasks' logs. */
  const cleanup = (found: Checkpoint.RecoveredCustom, now: number) =>
    Effect.gen(function*() {
      const process = found.process ?? ExecutorProcess.find(Checkpoint.exitStatusFile(found.dir))
      if (process !== undefined) yield* ExecutorProcess.kill(process)
      for (const t of found.tasks) {
        if (t.log.completedAtMs !== undefined) continue
        yield* Effect.promise(() => UpdateLog.append(Checkpoint.updatesFile(t.dir), [{ _tag: "Closed", atMs: now, reason: "--recover=cleanup" }], true))
      }
    })

  return {
    launch,
    sendFor,
    acknowledged,
    end,
    frameworkMessage,
    recover,
    cleanup,
    runs: (): ReadonlyArray<CustomRun> => [...runs.values()],
    service: (runFork: (effect: Effect.Effect<void>) => void, context: Context.Context<never>) => ({
      subscribe: subscribe(runFork),
      update: Grpc.unary(context, update),
      message: Grpc.unary(context, message)
    })
  }
}

export type CustomExecutors = ReturnType<typeof make>

