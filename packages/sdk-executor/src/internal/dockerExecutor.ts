import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { constants as osConstants } from "node:os"
import { Duration, Effect, Option, Queue, Result, Schema, Stream } from "effect"
import { Resources, v1 } from "@berth/proto"
import type { Recovered, RunOptions } from "../DockerExecutor.ts"
import { LaunchError } from "../ExecutorError.ts"
import { type ExecutorEvent, ExecutorSession, type StatusInit } from "../ExecutorSession.ts"
import { connect, DockerEngineError, type Engine } from "./dockerEngine.ts"
import { containerName, createBody, defaultSandboxPath, describeProblem, labelKeys, type Mount, mountsOf, taskProblem } from "./dockerTask.ts"

type Input =
  | { readonly _tag: "Event"; readonly event: ExecutorEvent }
  | { readonly _tag: "EventsEnded" }
  | { readonly _tag: "Exited"; readonly result: Result.Result<number, DockerEngineError> }

/** The sandbox files the container's output is appended to, and the attach stream feeding them. */
interface Output {
  readonly source: NodeJS.ReadableStream
  readonly stdout: fs.WriteStream
  readonly stderr: fs.WriteStream
}

interface Running {
  readonly info: v1.TaskInfo
  readonly id: string
  /** What `created` knows it by. */
  readonly name: string
  readonly output: Output
  /** Set once a kill or shutdown started: the reason of the KILLED status to come. */
  killReason: v1.TaskStatus_Reason | undefined
}

const { TaskState, TaskStatus_Reason: Reason } = v1

const signalNames = new Map<number, string>(Object.entries(osConstants.signals).map(([name, n]) => [n, name]))

/** "Container exited with status 3", or "... status 137 (SIGKILL)" for a signal's conventional status. */
const describeExit = (code: number): string => {
  const signal = code > 128 ? signalNames.get(code - 128) : undefined
  return `Container exited with status ${code}${signal === undefined ? "" : ` (${signal})`}`
}

const killReasonOf = (kill: { readonly reason?: v1.TaskStatus_Reason }): v1.TaskStatus_Reason =>
  kill.reason !== undefined && kill.reason !== Reason.UNSPECIFIED ? kill.reason : Reason.KILLED_BY_SCHEDULER

const errorText = (error: unknown): string => error instanceof Error ? error.message : String(error)

/**
 * What the executor records in `checkpoint.exitStatusFile` once the container ended, before it
 * removes the container: so that a later `recover` that finds no container can tell a task that
 * ran and ended (its terminal status lost with the agent) from one that never got a container.
 */
const RecordedExit = Schema.fromJsonString(Schema.Struct({ exitCode: Schema.Number, oomKilled: Schema.Boolean }))

/** The exit recorded in `file`, or `undefined` when there is none (or it cannot be read). */
const readRecordedExit = (file: string): { readonly exitCode: number; readonly oomKilled: boolean } | undefined => {
  let text: string
  try {
    text = fs.readFileSync(file, "utf8")
  } catch {
    return undefined
  }
  const decoded = Schema.decodeUnknownResult(RecordedExit)(text)
  return Result.isSuccess(decoded) ? decoded.success : undefined
}

/** Resolves `p` through symlinks as far as it exists (a socket path may be a link, e.g. /var/run). */
const realpath = (p: string): string => {
  try {
    return fs.realpathSync(p)
  } catch {
    return path.resolve(p)
  }
}

const isSameOrInside = (inner: string, outer: string): boolean =>
  inner === outer || inner.startsWith(outer.endsWith("/") ? outer : `${outer}/`)

/**
 * Readies the bind mounts on the agent: sandbox-relative sources are created, absolute ones must
 * exist, and nothing may hand the task the Docker engine's socket (or a directory holding it).
 */
const prepareMounts = (
  taskId: string,
  mounts: ReadonlyArray<Mount>,
  sandbox: string,
  socketPath: string | undefined
): Effect.Effect<void, LaunchError> =>
  Effect.try({
    try: () => {
      const sandboxReal = realpath(sandbox)
      const sockets = [socketPath, "/var/run/docker.sock", "/run/docker.sock"]
        .filter((s): s is string => s !== undefined)
        .map(realpath)
      for (const mount of mounts.slice(1)) {
        if (mount.inSandbox) fs.mkdirSync(mount.source, { recursive: true })
        else if (!fs.existsSync(mount.source)) throw new Error(`the host path ${mount.source} of volume ${mount.target} does not exist on the agent`)
        const source = realpath(mount.source)
        if (mount.inSandbox && !isSameOrInside(source, sandboxReal)) {
          throw new Error(`the volume ${mount.target} resolves outside the sandbox (${source})`)
        }
        if (sockets.some((socket) => isSameOrInside(socket, source))) {
          throw new Error(`the volume ${mount.target} would expose the Docker engine's socket (${source}) to the task`)
        }
      }
    },
    catch: (error) => new LaunchError({ taskId, message: errorText(error) })
  })

/**
 * Persistent volumes the agent linked into the sandbox (a symlink to the volume's directory):
 * each is bind-mounted at its own agent path, so that the link resolves inside the container too.
 */
const linkedVolumes = (info: v1.TaskInfo, sandbox: string): Array<Mount> => {
  const mounts: Array<Mount> = []
  for (const resource of info.resources) {
    const volume = resource.disk?.volume
    if (!resource.disk?.persistence?.id || volume === undefined || volume.containerPath === "") continue
    const link = path.resolve(sandbox, volume.containerPath)
    if (!isSameOrInside(link, sandbox)) continue
    let isLink = false
    try {
      isLink = fs.lstatSync(link).isSymbolicLink()
    } catch {
      continue
    }
    if (!isLink) continue
    const source = realpath(link)
    mounts.push({ source, target: source, readOnly: volume.mode === v1.Volume_Mode.RO, inSandbox: false })
  }
  return mounts
}

/** Opens the sandbox's stdout and stderr for appending; closed when the scope closes. */
const openOutput = (sandbox: string) =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        const fds: Array<number> = []
        try {
          for (const file of ["stdout", "stderr"]) fds.push(fs.openSync(path.join(sandbox, file), "a"))
        } catch (error) {
          for (const fd of fds) fs.closeSync(fd)
          throw error
        }
        return {
          stdout: fs.createWriteStream(path.join(sandbox, "stdout"), { fd: fds[0]! }),
          stderr: fs.createWriteStream(path.join(sandbox, "stderr"), { fd: fds[1]! })
        }
      },
      catch: (error) => errorText(error)
    }),
    (files) =>
      Effect.sync(() => {
        files.stdout.destroy()
        files.stderr.destroy()
      })
  )

/** Waits (bounded) until the container's output has ended and is written to the sandbox files. */
const flush = (output: Output): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const source = output.source as NodeJS.ReadableStream & { readableEnded?: boolean; destroyed?: boolean }
    const finish = () => {
      let open = 2
      const closed = () => {
        if (--open === 0) resume(Effect.void)
      }
      for (const file of [output.stdout, output.stderr]) {
        if (file.writableFinished || file.destroyed) closed()
        else file.end(closed)
      }
    }
    if (source.readableEnded === true || source.destroyed === true) {
      finish()
      return
    }
    source.once("end", finish)
    source.once("close", finish)
    source.once("error", finish)
    return Effect.sync(() => {
      source.off("end", finish)
      source.off("close", finish)
      source.off("error", finish)
    })
  }).pipe(
    // The engine ends the attach stream as the container exits; should it not, do not hang on it.
    Effect.timeoutOption("5 seconds"),
    Effect.asVoid
  )

export const run = (options: RunOptions): Effect.Effect<void, never, ExecutorSession> =>
  Effect.scoped(Effect.gen(function*() {
    const session = yield* ExecutorSession
    const defaultGrace = options.defaultGracePeriodSeconds ?? 3
    const sandboxPath = options.sandboxPath ?? defaultSandboxPath
    const launchTimeout = options.launchTimeout ?? "2 minutes"
    const inputs = yield* Queue.unbounded<Input>()
    yield* session.events.pipe(
      Stream.runForEach((event) => Queue.offer(inputs, { _tag: "Event", event })),
      Effect.andThen(Queue.offer(inputs, { _tag: "EventsEnded" })),
      Effect.forkScoped
    )
    const report = (init: StatusInit) => Effect.asVoid(session.update(init))
    let engine: Engine | undefined
    let task: Running | undefined
    /** Containers created (by name) and not yet known to be removed. */
    const created = new Set<string>()

    /** Removes a container this executor created; a failure is logged, and retried by the finalizer. */
    const removeContainer = (engine: Engine, name: string) =>
      engine.remove(name).pipe(
        Effect.timeoutOrElse({
          duration: "30 seconds",
          orElse: () => Effect.fail(new DockerEngineError({ operation: "remove container", message: "no answer within 30 s" }))
        }),
        Effect.andThen(Effect.sync(() => created.delete(name))),
        Effect.catch((error) => Effect.logWarning(`cannot remove container ${name}: ${error.message}`))
      )
    const removeAll = (engine: Engine, keep?: string) =>
      Effect.forEach([...created].filter((name) => name !== keep), (name) => removeContainer(engine, name), { discard: true })
    /** What interrupting `run` does to a running task (see CheckpointOptions.onInterrupt). */
    const onInterrupt = options.checkpoint?.onInterrupt ?? (options.checkpoint === undefined ? "kill" : "leave")

    // Whatever happens to this executor (its task ended, it was interrupted, the agent shut down),
    // no container it created outlives it, except a running task's left for a later `recover`.
    yield* Effect.addFinalizer(() =>
      engine === undefined ? Effect.void : removeAll(engine, onInterrupt === "leave" && task !== undefined ? task.name : undefined)
    )

    const environment = (info: v1.TaskInfo): Record<string, string> => {
      const env: Record<string, string> = { ...options.env }
      for (const variable of info.command?.environment ?? []) env[variable.name] = variable.value
      return {
        ...env,
        BERTH_SANDBOX: sandboxPath,
        BERTH_TASK_ID: info.taskId,
        BERTH_FRAMEWORK_ID: session.frameworkId,
        BERTH_EXECUTOR_ID: session.executorId,
        BERTH_AGENT_ID: session.agentId
      }
    }

    const exitStatusFile = options.checkpoint?.exitStatusFile
    /**
     * Records how the container ended, durably and atomically, before it is removed: once it is
     * gone, this is all a later `recover` has to tell "ended" from "never created" (see RecordedExit).
     */
    const recordExit = (exitCode: number, oomKilled: boolean): Effect.Effect<void> =>
      exitStatusFile === undefined ? Effect.void : Effect.try({
        try: () => {
          const temporary = `${exitStatusFile}.tmp`
          const fd = fs.openSync(temporary, "w")
          try {
            fs.writeSync(fd, `${JSON.stringify({ exitCode, oomKilled })}\n`)
            fs.fsyncSync(fd)
          } finally {
            fs.closeSync(fd)
          }
          fs.renameSync(temporary, exitStatusFile)
        },
        catch: errorText
      }).pipe(Effect.catch((message) => Effect.logWarning(`cannot record the container's exit in ${exitStatusFile}: ${message}`)))

    const engineError = (taskId: string) => (error: DockerEngineError) =>
      new LaunchError({ taskId, message: `Docker engine: ${error.operation}: ${error.message}` })

    /** Creates and starts the task's container, its output streaming into the sandbox. */
    const startContainer = (info: v1.TaskInfo) =>
      Effect.gen(function*() {
        const taskId = info.taskId
        const container = info.container!
        const image = container.docker!.image
        // Opened first, so the sandbox has its output files whatever happens next.
        const files = yield* openOutput(options.sandbox).pipe(
          Effect.mapError((message) => new LaunchError({ taskId, message: `cannot open the sandbox output files: ${message}` }))
        )
        engine ??= yield* connect(options.docker).pipe(Effect.mapError(engineError(taskId)))
        const docker = engine
        if (!(yield* docker.imageExists(image).pipe(Effect.mapError(engineError(taskId))))) {
          return yield* new LaunchError({
            taskId,
            message: `Docker image "${image}" is not present on this agent's Docker engine (${docker.address}). ` +
              "Agents never pull images: build, import or load it into the engine of every agent that may run the task"
          })
        }
        const mounts = [...mountsOf(container, options.sandbox, sandboxPath), ...linkedVolumes(info, options.sandbox)]
        yield* prepareMounts(taskId, mounts, options.sandbox, docker.socketPath)
        const name = containerName(taskId, randomBytes(4).toString("hex"))
        // Known before the create call, so that the finalizer removes the container even when
        // the call is interrupted after the engine made it.
        created.add(name)
        const id = yield* docker.create(createBody(info, {
          name,
          sandboxPath,
          env: environment(info),
          labels: {
            [labelKeys.taskId]: taskId,
            [labelKeys.frameworkId]: session.frameworkId,
            [labelKeys.executorId]: session.executorId,
            [labelKeys.agentId]: session.agentId
          },
          mounts,
          portBindHost: options.portBindHost ?? "127.0.0.1",
          init: options.init ?? true
        })).pipe(Effect.mapError(engineError(taskId)))
        // Attached before the start, so not a byte of output is missed.
        const source = yield* Effect.acquireRelease(
          docker.attach(id),
          (stream) => Effect.sync(() => (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.())
        ).pipe(Effect.mapError(engineError(taskId)))
        docker.demux(source, files.stdout, files.stderr)
        yield* docker.start(id).pipe(Effect.mapError(engineError(taskId)))
        return { id, name, output: { source, ...files } }
      }).pipe(
        Effect.timeoutOrElse({
          duration: launchTimeout,
          orElse: () =>
            Effect.fail(
              new LaunchError({
                taskId: info.taskId,
                message: `the Docker engine did not create and start the container within ${Duration.format(Duration.fromInputUnsafe(launchTimeout))}`
              })
            )
        })
      )

    /** Returns whether the executor is done. */
    const launch = Effect.fnUntraced(function*(info: v1.TaskInfo | undefined) {
      if (info === undefined) {
        yield* Effect.logWarning("ignoring a launch without a task")
        return false
      }
      if (task !== undefined) {
        // A resent launch of the running task must not turn it into an ERROR.
        if (info.taskId !== task.info.taskId) {
          yield* report({
            taskId: info.taskId,
            state: TaskState.ERROR,
            reason: Reason.TASK_INVALID,
            message: "the Docker executor runs one task"
          })
        }
        return false
      }
      if (info.container?.type !== v1.ContainerInfo_Type.DOCKER) {
        yield* report({
          taskId: info.taskId,
          state: TaskState.ERROR,
          reason: Reason.TASK_INVALID,
          message: "container.type: must be DOCKER for the Docker executor"
        })
        return true
      }
      const problem = taskProblem(info, sandboxPath)
      if (problem !== undefined) {
        yield* report({
          taskId: info.taskId,
          state: TaskState.ERROR,
          reason: Reason.TASK_INVALID,
          message: describeProblem(problem)
        })
        return true
      }
      yield* report({ taskId: info.taskId, state: TaskState.STARTING })
      const started = yield* Effect.result(startContainer(info))
      if (Result.isFailure(started)) {
        // Nothing half-made is left behind: a container that was created but did not start goes now.
        if (engine !== undefined) yield* removeAll(engine)
        yield* report({
          taskId: info.taskId,
          state: TaskState.FAILED,
          reason: Reason.CONTAINER_LAUNCH_FAILED,
          message: started.failure.message
        })
        return true
      }
      const { id, name, output } = started.success
      task = { info, id, name, output, killReason: undefined }
      yield* report({ taskId: info.taskId, state: TaskState.RUNNING })
      yield* engine!.wait(id).pipe(
        Effect.result,
        Effect.flatMap((result) => Queue.offer(inputs, { _tag: "Exited", result })),
        Effect.forkScoped
      )
      return false
    })

    const taskGrace = (info: v1.TaskInfo): number => info.killPolicy?.gracePeriodSeconds ?? defaultGrace

    const stop = Effect.fnUntraced(function*(running: Running, graceSeconds: number, reason: v1.TaskStatus_Reason) {
      if (running.killReason !== undefined) return
      running.killReason = reason
      yield* report({ taskId: running.info.taskId, state: TaskState.KILLING })
      // The engine sends SIGTERM (or the image's stop signal), then SIGKILL after the grace
      // period, which it takes in whole seconds. The container's exit is reported by the waiter.
      const seconds = Math.max(0, Math.ceil(graceSeconds))
      yield* engine!.stop(running.id, seconds).pipe(
        Effect.catch((error) => Effect.logWarning(`cannot stop container ${running.id}: ${error.message}`)),
        Effect.forkScoped
      )
    })

    /** The terminal status of a container that ended (`result`: its exit status, or why it is unknown). */
    const terminal = (
      info: v1.TaskInfo,
      killReason: v1.TaskStatus_Reason | undefined,
      result: Result.Result<number, DockerEngineError>,
      oomKilled: boolean
    ): StatusInit => {
      const taskId = info.taskId
      if (Result.isFailure(result)) {
        const message = `Lost the container: ${result.failure.operation}: ${result.failure.message}`
        return killReason !== undefined
          ? { taskId, state: TaskState.KILLED, reason: killReason, message }
          : { taskId, state: TaskState.FAILED, reason: Reason.EXECUTOR_TERMINATED, message }
      }
      const code = result.success
      const message = describeExit(code)
      if (killReason !== undefined) {
        return { taskId, state: TaskState.KILLED, reason: killReason, message, exitCode: code }
      }
      if (oomKilled) {
        const mem = Resources.sumScalar(info.resources, "mem")
        return {
          taskId,
          state: TaskState.FAILED,
          reason: Reason.CONTAINER_LIMITATION_MEMORY,
          message: `Container exceeded its memory limit of ${mem} MB and was killed by the kernel (${message})`,
          exitCode: code
        }
      }
      if (code === 0) return { taskId, state: TaskState.FINISHED, message, exitCode: code }
      return { taskId, state: TaskState.FAILED, reason: Reason.COMMAND_EXECUTOR_FAILED, message, exitCode: code }
    }

    const exited = Effect.fnUntraced(function*(running: Running, result: Result.Result<number, DockerEngineError>) {
      yield* flush(running.output)
      const state = Result.isSuccess(result)
        ? yield* engine!.inspect(running.id).pipe(Effect.option)
        : undefined
      const oomKilled = state !== undefined && Option.isSome(state) && state.value.oomKilled
      if (Result.isSuccess(result)) yield* recordExit(result.success, oomKilled)
      // Gone before its terminal update, so a scheduler that sees the update sees no container.
      yield* removeAll(engine!)
      return terminal(running.info, running.killReason, result, oomKilled)
    })

    /**
     * Takes over the container of a task an earlier executor was given (found by its labels), or
     * starts the task when it never got one; returns whether the executor is done.
     */
    const recover = Effect.fnUntraced(function*(recovered: Recovered) {
      const info = recovered.task
      const taskId = info.taskId
      const killReason = recovered.killReason
      const connected = yield* Effect.result(connect(options.docker))
      if (Result.isFailure(connected)) {
        yield* report({
          taskId,
          state: killReason === undefined ? TaskState.FAILED : TaskState.KILLED,
          reason: killReason ?? Reason.EXECUTOR_TERMINATED,
          message: `Cannot re-attach to the task's container: ${connected.failure.message}`
        })
        return true
      }
      const docker = connected.success
      engine = docker
      const found = yield* docker.list({
        [labelKeys.frameworkId]: session.frameworkId,
        [labelKeys.executorId]: session.executorId,
        [labelKeys.agentId]: session.agentId
      }).pipe(
        Effect.flatMap((ids) =>
          Effect.forEach(ids, (id) => docker.inspect(id).pipe(Effect.map((state) => ({ id, state })), Effect.option))
        ),
        Effect.map((all) => all.flatMap((o) => (Option.isSome(o) ? [o.value] : []))),
        Effect.result
      )
      const containers = Result.isSuccess(found) ? found.success : []
      for (const { id } of containers) created.add(id)
      const live = containers.find((c) => c.state.running)
      if (live !== undefined) {
        const files = yield* openOutput(options.sandbox).pipe(Effect.result)
        const source = Result.isSuccess(files)
          ? yield* Effect.acquireRelease(
            docker.attach(live.id),
            (stream) => Effect.sync(() => (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.())
          ).pipe(Effect.result)
          : undefined
        if (Result.isSuccess(files) && source !== undefined && Result.isSuccess(source)) {
          // Output written while nobody was attached stays in the engine's log (`docker logs`).
          docker.demux(source.success, files.success.stdout, files.success.stderr)
          yield* removeAll(docker, live.id)
          const running: Running = { info, id: live.id, name: live.id, output: { source: source.success, ...files.success }, killReason: undefined }
          task = running
          yield* docker.wait(live.id).pipe(
            Effect.result,
            Effect.flatMap((result) => Queue.offer(inputs, { _tag: "Exited", result })),
            Effect.forkScoped
          )
          if (killReason !== undefined) yield* stop(running, taskGrace(info), killReason)
          return false
        }
      }
      // It ended (or cannot be followed) while nobody watched: report how, and remove what is left.
      // A container created but never started (the agent stopped between create and start) did
      // not run the task: it is removed below with the rest and the task launched again.
      const ended = live ?? containers.find((c) => c.state.started)
      if (live !== undefined) yield* docker.stop(live.id, 0).pipe(Effect.ignore)
      if (ended !== undefined) {
        const state = live === undefined ? ended.state : yield* docker.inspect(live.id).pipe(Effect.orElseSucceed(() => ended.state))
        yield* recordExit(state.exitCode, state.oomKilled)
        yield* removeAll(docker)
        yield* report(terminal(info, killReason, Result.succeed(state.exitCode), state.oomKilled))
        return true
      }
      yield* removeAll(docker)
      if (Result.isFailure(found)) {
        // Whether it has a container is unknown: starting another could run the task twice.
        yield* report({
          taskId,
          state: killReason === undefined ? TaskState.FAILED : TaskState.KILLED,
          reason: killReason ?? Reason.EXECUTOR_TERMINATED,
          message: `Cannot re-attach to the task's container: ${found.failure.operation}: ${found.failure.message}`
        })
        return true
      }
      // No container, but it had one that ended (and was removed) before its terminal status got out.
      const recorded = exitStatusFile === undefined ? undefined : readRecordedExit(exitStatusFile)
      if (recorded !== undefined) {
        yield* report(terminal(info, killReason, Result.succeed(recorded.exitCode), recorded.oomKilled))
        return true
      }
      if (killReason !== undefined) {
        yield* report({
          taskId,
          state: TaskState.KILLED,
          reason: killReason,
          message: "The executor stopped before the task's container was created; it never ran"
        })
        return true
      }
      // The earlier executor had the task (STARTING) but stopped before its container was created
      // (its agent restarted mid-launch): nothing of it ran, so launch it now, as an executor that
      // outlived its agent would have (Mesos' does). Failing it would fail a healthy task for an
      // agent restart (ARCHITECTURE §3, invariant 5).
      return yield* launch(info)
    })

    /** Returns whether the executor is done. */
    const handle = Effect.fnUntraced(function*(input: Input) {
      switch (input._tag) {
        case "Exited": {
          const status: StatusInit = yield* exited(task!, input.result)
          yield* report(status)
          return true
        }
        case "EventsEnded": {
          // The agent is gone: stop the task as for a shutdown and report how it ended.
          if (task === undefined) return true
          yield* stop(task, defaultGrace, Reason.EXECUTOR_TERMINATED)
          return false
        }
        case "Event": {
          const event = input.event
          switch (event.$case) {
            case "launch":
              return yield* launch(event.value.task)
            case "launchGroup": {
              for (const info of event.value.taskGroup?.tasks ?? []) {
                yield* report({
                  taskId: info.taskId,
                  state: TaskState.ERROR,
                  reason: Reason.TASK_INVALID,
                  message: "the Docker executor does not run task groups"
                })
              }
              return false
            }
            case "kill": {
              const { killPolicy, taskId } = event.value
              const reason = killReasonOf(event.value)
              if (task === undefined || task.info.taskId !== taskId) {
                yield* report({ taskId, state: TaskState.KILLED, reason, message: "Task was not running" })
                return task === undefined
              }
              yield* stop(task, killPolicy?.gracePeriodSeconds ?? taskGrace(task.info), reason)
              return false
            }
            case "shutdown": {
              if (task === undefined) return true
              const grace = event.value.gracePeriodSeconds > 0 ? event.value.gracePeriodSeconds : taskGrace(task.info)
              yield* stop(task, grace, Reason.EXECUTOR_TERMINATED)
              return false
            }
            default:
              return false
          }
        }
      }
    })

    // Each input is handled to completion before the next is taken, so statuses stay in order.
    let done = options.recover === undefined ? false : yield* recover(options.recover)
    while (!done) done = yield* handle(yield* Queue.take(inputs))
  }))
