import { Duration, Effect, Fiber, Queue, type Result, Stream } from "effect"
import { v1 } from "@berth/proto"
import type { Isolated, Recovered, RunOptions } from "../CommandExecutor.ts"
import type { FetchError } from "../ExecutorError.ts"
import { type ExecutorEvent, ExecutorSession, type StatusInit } from "../ExecutorSession.ts"
import { fetchAll, resolveConfig, uriProblem } from "./fetcher.ts"
import { type CheckEvent, checkProblem, probe, runHealth, runReadiness } from "./health.ts"
import {
  attach,
  commandProblem,
  defaultPollInterval,
  describeTermination,
  findWrapper,
  isRunning,
  killLeftovers,
  readExitStatus,
  resolveUser,
  signalGroup,
  start,
  type TaskHandle,
  type TaskProcess,
  taskProcessOf,
  type Termination,
  type User
} from "./process.ts"

/** Everything the loop reacts to, in one queue so that the state is changed by one fiber only. */
type Input =
  | { readonly _tag: "Event"; readonly event: ExecutorEvent }
  | { readonly _tag: "EventsEnded" }
  | { readonly _tag: "Fetched"; readonly result: Result.Result<void, FetchError> }
  | { readonly _tag: "Exited"; readonly termination: Termination }
  | { readonly _tag: "Check"; readonly event: CheckEvent }

/** A task whose artifacts are being fetched: nothing is spawned yet. */
interface Fetching {
  readonly info: v1.TaskInfo
  readonly fiber: Fiber.Fiber<void>
}

interface Task {
  readonly info: v1.TaskInfo
  /** Its process: spawned by this executor, or re-attached after an agent restart. */
  readonly handle: TaskHandle
  readonly pid: number
  /** Set once this executor sent the group SIGKILL (a re-attached task then leaves no status). */
  sigkilled: boolean
  /** The health and readiness checkers; stopped once the task is being killed. */
  readonly checkers: Array<Fiber.Fiber<void>>
  /** The latest results of the checks, carried on later RUNNING updates. */
  healthy: boolean | undefined
  ready: boolean | undefined
  /** Set once a kill or shutdown started: the reason of the KILLED status to come. */
  killReason: v1.TaskStatus_Reason | undefined
  /** Why the executor itself killed the task (a failing health check), for KILLED's message. */
  killMessage: string | undefined
}

const { TaskState, TaskStatus_Reason: Reason } = v1

const terminalStatus = (
  task: Pick<Task, "info" | "killReason" | "killMessage">,
  termination: Termination
): StatusInit => {
  const taskId = task.info.taskId
  const message = describeTermination(termination)
  const exitCode = termination.code === null ? {} : { exitCode: termination.code }
  // As in Mesos: a task we were asked to stop is KILLED however it ended.
  if (task.killReason !== undefined) {
    if (task.killMessage !== undefined) {
      // Killed by its health check: Mesos reports TASK_KILLED with healthy=false; the reason says why.
      return {
        taskId,
        state: TaskState.KILLED,
        reason: task.killReason,
        message: `${task.killMessage}. ${message}`,
        healthy: false,
        ...exitCode
      }
    }
    return { taskId, state: TaskState.KILLED, reason: task.killReason, message, ...exitCode }
  }
  if (termination.code === 0) return { taskId, state: TaskState.FINISHED, message, ...exitCode }
  // No exit status at all (a re-attached task whose group was killed from outside): the executor
  // cannot vouch for how it ended.
  const reason = termination.code === null && termination.signal === null ? Reason.EXECUTOR_TERMINATED : Reason.COMMAND_EXECUTOR_FAILED
  return { taskId, state: TaskState.FAILED, reason, message, ...exitCode }
}

/** Why `info` cannot be run by this executor, naming the field and the rule, if it cannot. */
export const taskProblem = (info: v1.TaskInfo): string | undefined => {
  const problem = commandProblem(info.command)
  if (problem !== undefined) return problem
  for (const [index, uri] of info.command!.uris.entries()) {
    const uriIssue = uriProblem(uri, index)
    if (uriIssue !== undefined) return uriIssue
  }
  if (info.healthCheck !== undefined) {
    const healthIssue = checkProblem(info.healthCheck, "health_check")
    if (healthIssue !== undefined) return healthIssue
  }
  if (info.check !== undefined) return checkProblem(info.check, "check")
  return undefined
}

/** The reason a kill event carries, when the agent gave one (older agents do not). */
const killReasonOf = (kill: { readonly reason?: v1.TaskStatus_Reason }): v1.TaskStatus_Reason =>
  kill.reason !== undefined && kill.reason !== Reason.UNSPECIFIED ? kill.reason : Reason.KILLED_BY_SCHEDULER

export const run = (options: RunOptions): Effect.Effect<void, never, ExecutorSession> =>
  Effect.scoped(Effect.gen(function*() {
    const session = yield* ExecutorSession
    const defaultGrace = options.defaultGracePeriodSeconds ?? 3
    const fetcher = resolveConfig(options.fetcher)
    const inputs = yield* Queue.unbounded<Input>()
    yield* session.events.pipe(
      Stream.runForEach((event) => Queue.offer(inputs, { _tag: "Event", event })),
      Effect.andThen(Queue.offer(inputs, { _tag: "EventsEnded" })),
      Effect.forkScoped
    )
    const report = (init: StatusInit) => Effect.asVoid(session.update(init))
    let fetching: Fetching | undefined
    let task: Task | undefined
    /** The user the task runs as (undefined: the agent's own). */
    let taskUser: User | undefined
    /** The task's container (resource limits), if the executor was given an isolation. */
    let isolated: Isolated | undefined
    yield* Effect.addFinalizer(() => Effect.suspend(() => (isolated !== undefined && onInterrupt === "kill" ? isolated.release : Effect.void)))

    const environment = (info: v1.TaskInfo): Record<string, string> => {
      const env: Record<string, string> = { ...options.env }
      for (const variable of info.command?.environment ?? []) env[variable.name] = variable.value
      if (env.PATH === undefined && process.env.PATH !== undefined) env.PATH = process.env.PATH
      return {
        ...env,
        BERTH_SANDBOX: options.sandbox,
        BERTH_TASK_ID: info.taskId,
        BERTH_FRAMEWORK_ID: session.frameworkId,
        BERTH_EXECUTOR_ID: session.executorId,
        BERTH_AGENT_ID: session.agentId
      }
    }

    const emitCheck = (event: CheckEvent) => Effect.asVoid(Queue.offer(inputs, { _tag: "Check", event }))

    /** Starts the task's checkers; they report through the queue, so updates stay in order. */
    const startCheckers = Effect.fnUntraced(function*(info: v1.TaskInfo) {
      // Checks run as the task's user (a recovered task's is looked up again).
      const user = taskUser ?? resolveUser(info.command!, options.user)
      const context = { sandbox: options.sandbox, env: environment(info), user }
      const checkers: Array<Fiber.Fiber<void>> = []
      if (info.healthCheck !== undefined) {
        const check = info.healthCheck
        checkers.push(yield* Effect.forkScoped(runHealth(check, probe(check, context), emitCheck)))
      }
      if (info.check !== undefined) {
        const check = info.check
        checkers.push(yield* Effect.forkScoped(Effect.asVoid(runReadiness(check, probe(check, context), emitCheck))))
      }
      return checkers
    })

    const checkpoint = options.checkpoint
    /** What interrupting `run` does to a running task (see CheckpointOptions.onInterrupt). */
    const onInterrupt = checkpoint?.onInterrupt ?? (checkpoint === undefined ? "kill" : "leave")
    const pollInterval = checkpoint?.pollInterval ?? defaultPollInterval

    /** Kills a task still running when `run` is interrupted, unless it is meant to outlive it. */
    const release = (handle: TaskHandle) =>
      Effect.suspend(() =>
        onInterrupt === "leave" || handle.hasExited()
          ? Effect.void
          : signalGroup(handle.pid, "SIGKILL").pipe(
            Effect.andThen(handle.awaitExit),
            Effect.timeoutOption("5 seconds"),
            Effect.asVoid
          )
      )

    /**
     * Makes `handle` the running task: its exit feeds the loop, its checks start. `recovered`
     * carries what an earlier executor knew of the task (check results) when it is re-attached.
     */
    const adopt = Effect.fnUntraced(function*(
      info: v1.TaskInfo,
      handle: TaskHandle,
      recovered?: { readonly healthy?: boolean | undefined; readonly ready?: boolean | undefined }
    ) {
      const running: Task = {
        info,
        handle,
        pid: handle.pid,
        sigkilled: false,
        checkers: [],
        healthy: recovered?.healthy,
        ready: recovered?.ready,
        killReason: undefined,
        killMessage: undefined
      }
      task = running
      yield* handle.awaitExit.pipe(
        Effect.flatMap((termination) => Queue.offer(inputs, { _tag: "Exited", termination })),
        Effect.forkScoped
      )
      return running
    })

    /** Spawns the (validated, fetched) task; returns whether the executor is done. */
    const spawn = Effect.fnUntraced(function*(info: v1.TaskInfo) {
      const command = info.command!
      if (options.isolation !== undefined) {
        const prepared = yield* Effect.result(options.isolation.prepare(info, false))
        if (prepared._tag === "Failure") {
          yield* report({
            taskId: info.taskId,
            state: TaskState.FAILED,
            reason: Reason.CONTAINER_LAUNCH_FAILED,
            message: `cannot set up the task's resource limits: ${prepared.failure.message}`
          })
          return true
        }
        isolated = prepared.success
      }
      const started = yield* Effect.acquireRelease(
        start({
          taskId: info.taskId,
          sandbox: options.sandbox,
          command,
          env: environment(info),
          exitStatusFile: checkpoint?.exitStatusFile,
          outputDir: options.outputDir,
          user: taskUser,
          joinFiles: isolated?.procsFiles
        }),
        // The executor is stopping with its task still running (interrupted): nothing may outlive
        // it, unless the task is checkpointed to be re-attached later.
        ({ handle }) => release(handle)
      ).pipe(Effect.result)
      if (started._tag === "Failure") {
        yield* report({
          taskId: info.taskId,
          state: TaskState.FAILED,
          reason: Reason.CONTAINER_LAUNCH_FAILED,
          message: started.failure.message
        })
        return true
      }
      const { handle } = started.success
      if (checkpoint?.onStarted !== undefined) {
        // Recorded before RUNNING goes out, so a task reported RUNNING can always be found again.
        // A task already gone has nothing to record: its exit status is in the status file.
        const recorded = taskProcessOf(handle.pid)
        if (recorded !== undefined) yield* checkpoint.onStarted(recorded)
      }
      const running = yield* adopt(info, handle)
      yield* report({ taskId: info.taskId, state: TaskState.RUNNING })
      running.checkers.push(...yield* startCheckers(info))
      return false
    })

    /**
     * Takes over the task of an earlier executor (see RunOptions.recover); returns whether the
     * executor is done (the task ended while nobody watched it).
     */
    const recover = Effect.fnUntraced(function*(recovered: Recovered) {
      const info = recovered.task
      if (checkpoint === undefined) {
        return yield* Effect.die(new Error("CommandExecutor.run: `recover` needs `checkpoint` (the task's exit status file)"))
      }
      let recorded: TaskProcess | undefined = recovered.process
      // Spawned, but the agent stopped before it recorded the pid: find the wrapper by its command line.
      const found = recorded === undefined ? findWrapper(checkpoint.exitStatusFile) : undefined
      if (found !== undefined) {
        recorded = found
        if (checkpoint.onStarted !== undefined) yield* checkpoint.onStarted(found)
      }
      const killReason = recovered.killReason
      if (recorded !== undefined && isRunning(recorded)) {
        // Its container is still there: the limit it may hit is read from it at its end.
        if (options.isolation !== undefined) {
          const prepared = yield* Effect.result(options.isolation.prepare(info, true))
          if (prepared._tag === "Success") isolated = prepared.success
        }
        let running: Task | undefined
        const handle = attach(recorded, checkpoint.exitStatusFile, pollInterval, () => running?.sigkilled === true)
        yield* Effect.addFinalizer(() => release(handle))
        running = yield* adopt(info, handle, recovered)
        // Never reported RUNNING: the pid is recorded before RUNNING goes out.
        if (found !== undefined) yield* report({ taskId: info.taskId, state: TaskState.RUNNING })
        if (killReason !== undefined) {
          // It was being killed when the previous executor stopped: finish the kill.
          yield* stop(running, taskGrace(info), killReason)
        } else {
          running.checkers.push(...yield* startCheckers(info))
        }
        return false
      }
      // It ended while nobody watched it. What its group left behind goes too.
      if (recorded !== undefined) yield* killLeftovers(recorded)
      const termination = readExitStatus(checkpoint.exitStatusFile)
      if (termination === undefined && recorded === undefined) {
        if (killReason !== undefined) {
          yield* report({
            taskId: info.taskId,
            state: TaskState.KILLED,
            reason: killReason,
            message: "The executor stopped before the task's command was started; it never ran"
          })
          return true
        }
        // The earlier executor had the task (STARTING) but stopped before its command started (its
        // agent restarted mid-launch): nothing of it ran, so start it now, as an executor that
        // outlived its agent would have (Mesos' does). Failing it would fail a healthy task for an
        // agent restart (ARCHITECTURE §3, invariant 5).
        return yield* launch(info)
      }
      yield* report(terminalStatus({ info, killReason, killMessage: undefined }, termination ?? { code: null, signal: null }))
      return true
    })

    /** Returns whether the executor is done. */
    const launch = Effect.fnUntraced(function*(info: v1.TaskInfo | undefined) {
      if (info === undefined) {
        yield* Effect.logWarning("ignoring a launch without a task")
        return false
      }
      const current = task?.info ?? fetching?.info
      if (current !== undefined) {
        // A resent launch of the running task must not turn it into an ERROR.
        if (info.taskId !== current.taskId) {
          yield* report({
            taskId: info.taskId,
            state: TaskState.ERROR,
            reason: Reason.TASK_INVALID,
            message: "command executor runs one task"
          })
        }
        return false
      }
      const problem = taskProblem(info)
      if (problem !== undefined) {
        yield* report({ taskId: info.taskId, state: TaskState.ERROR, reason: Reason.TASK_INVALID, message: problem })
        return true
      }
      const user = resolveUser(info.command!, options.user)
      if (typeof user === "string") {
        // Nothing is fetched or spawned for a task whose user cannot be had.
        yield* report({ taskId: info.taskId, state: TaskState.FAILED, reason: Reason.CONTAINER_LAUNCH_FAILED, message: user })
        return true
      }
      taskUser = user
      yield* report({ taskId: info.taskId, state: TaskState.STARTING })
      const uris = info.command!.uris
      if (uris.length === 0) return yield* spawn(info)
      // The fetch runs beside the loop so that a kill or shutdown during a long download is heard.
      const fiber = yield* fetchAll(options.sandbox, uris, fetcher).pipe(
        Effect.result,
        Effect.flatMap((result) => Queue.offer(inputs, { _tag: "Fetched", result })),
        Effect.asVoid,
        Effect.forkScoped
      )
      fetching = { info, fiber }
      return false
    })

    /** Ends a task whose artifacts are still being fetched: nothing was spawned. */
    const abandonFetch = Effect.fnUntraced(function*(pending: Fetching, reason: v1.TaskStatus_Reason) {
      fetching = undefined
      yield* Fiber.interrupt(pending.fiber)
      yield* report({
        taskId: pending.info.taskId,
        state: TaskState.KILLED,
        reason,
        message: "Task killed while its artifacts were being fetched; it was never started"
      })
      return true
    })

    const stop = Effect.fnUntraced(function*(
      running: Task,
      graceSeconds: number,
      reason: v1.TaskStatus_Reason,
      because?: string
    ) {
      if (running.killReason !== undefined) return
      running.killReason = reason
      running.killMessage = because
      // No health or readiness updates once the task is going away.
      const checkers = running.checkers.splice(0)
      yield* Effect.forEach(checkers, Fiber.interrupt, { discard: true })
      yield* report(
        because === undefined
          ? { taskId: running.info.taskId, state: TaskState.KILLING }
          : { taskId: running.info.taskId, state: TaskState.KILLING, reason, message: because, healthy: false }
      )
      // A leader already gone is handled by its exit (which kills what is left of the group).
      if (!running.handle.hasExited()) yield* signalGroup(running.pid, "SIGTERM")
      // The timer is a fiber of this run, so it dies with it and never signals a recycled pid.
      yield* Effect.sleep(Duration.seconds(graceSeconds > 0 ? graceSeconds : 0)).pipe(
        Effect.andThen(
          Effect.suspend(() => {
            if (running.handle.hasExited()) return Effect.void
            running.sigkilled = true
            return signalGroup(running.pid, "SIGKILL")
          })
        ),
        Effect.forkScoped
      )
    })

    const taskGrace = (info: v1.TaskInfo): number => info.killPolicy?.gracePeriodSeconds ?? defaultGrace

    const onCheck = Effect.fnUntraced(function*(event: CheckEvent) {
      const running = task
      // A result that raced with a kill or the task's exit says nothing any more.
      if (running === undefined || running.killReason !== undefined) return
      const taskId = running.info.taskId
      switch (event._tag) {
        case "Health": {
          running.healthy = event.healthy
          yield* report({
            taskId,
            state: TaskState.RUNNING,
            reason: Reason.TASK_HEALTH_CHECK_STATUS_UPDATED,
            message: event.message,
            healthy: event.healthy,
            ...(running.ready === undefined ? {} : { ready: running.ready })
          })
          return
        }
        case "Ready": {
          running.ready = event.ready
          yield* report({
            taskId,
            state: TaskState.RUNNING,
            reason: Reason.TASK_CHECK_STATUS_UPDATED,
            message: event.message,
            ready: event.ready,
            ...(running.healthy === undefined ? {} : { healthy: running.healthy })
          })
          return
        }
        case "HealthKill": {
          running.healthy = false
          yield* stop(running, taskGrace(running.info), Reason.TASK_HEALTH_CHECK_STATUS_UPDATED, event.message)
          return
        }
      }
    })

    /** Returns whether the executor is done. */
    const handle = Effect.fnUntraced(function*(input: Input) {
      switch (input._tag) {
        case "Exited": {
          const ended = task!
          // Whatever the command left behind in its group goes with it.
          yield* ended.handle.killLeftovers
          // A task the kernel killed for outgrowing its memory failed for that, not for a signal.
          const limitation = isolated?.limitation()
          yield* report(
            limitation === undefined
              ? terminalStatus(ended, input.termination)
              : {
                ...terminalStatus(ended, input.termination),
                state: TaskState.FAILED,
                reason: limitation.reason,
                message: `${limitation.message}. ${describeTermination(input.termination)}`
              }
          )
          if (isolated !== undefined) yield* isolated.release
          isolated = undefined
          return true
        }
        case "Fetched": {
          const pending = fetching
          // Killed meanwhile: the result was already accounted for.
          if (pending === undefined) return false
          fetching = undefined
          if (input.result._tag === "Failure") {
            const error = input.result.failure
            yield* report({
              taskId: pending.info.taskId,
              state: TaskState.FAILED,
              reason: Reason.FETCHER_FAILED,
              message: `Failed to fetch '${error.uri}': ${error.message}`
            })
            return true
          }
          return yield* spawn(pending.info)
        }
        case "Check": {
          yield* onCheck(input.event)
          return false
        }
        case "EventsEnded": {
          // The agent is gone: stop the task as for a shutdown and report how it ended.
          if (fetching !== undefined) return yield* abandonFetch(fetching, Reason.EXECUTOR_TERMINATED)
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
                  message: "command executor does not run task groups"
                })
              }
              return false
            }
            case "kill": {
              const { killPolicy, taskId } = event.value
              const reason = killReasonOf(event.value)
              if (fetching !== undefined && fetching.info.taskId === taskId) return yield* abandonFetch(fetching, reason)
              if (task === undefined || task.info.taskId !== taskId) {
                yield* report({ taskId, state: TaskState.KILLED, reason, message: "Task was not running" })
                // Killed before its launch: the executor's one task is over.
                return task === undefined && fetching === undefined
              }
              yield* stop(task, killPolicy?.gracePeriodSeconds ?? taskGrace(task.info), reason)
              return false
            }
            case "shutdown": {
              if (fetching !== undefined) return yield* abandonFetch(fetching, Reason.EXECUTOR_TERMINATED)
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
