import type { ChildProcess } from "node:child_process"
import { Duration, Effect, Queue, Stream } from "effect"
import { v1 } from "@berth/proto"
import type { RunOptions } from "../CommandExecutor.ts"
import { type ExecutorEvent, ExecutorSession, type StatusInit } from "../ExecutorSession.ts"
import {
  awaitExit,
  commandProblem,
  describeTermination,
  hasExited,
  signalGroup,
  start,
  type Termination
} from "./process.ts"

/** Everything the loop reacts to, in one queue so that the state is changed by one fiber only. */
type Input =
  | { readonly _tag: "Event"; readonly event: ExecutorEvent }
  | { readonly _tag: "EventsEnded" }
  | { readonly _tag: "Exited"; readonly termination: Termination }

interface Task {
  readonly info: v1.TaskInfo
  readonly child: ChildProcess
  readonly pid: number
  /** Set once a kill or shutdown started: the reason of the KILLED status to come. */
  killReason: v1.TaskStatus_Reason | undefined
}

const { TaskState, TaskStatus_Reason: Reason } = v1

const terminalStatus = (task: Task, termination: Termination): StatusInit => {
  const taskId = task.info.taskId
  const message = describeTermination(termination)
  const exitCode = termination.code === null ? {} : { exitCode: termination.code }
  // As in Mesos: a task we were asked to stop is KILLED however it ended.
  if (task.killReason !== undefined) {
    return { taskId, state: TaskState.KILLED, reason: task.killReason, message, ...exitCode }
  }
  if (termination.code === 0) return { taskId, state: TaskState.FINISHED, message, ...exitCode }
  return { taskId, state: TaskState.FAILED, reason: Reason.COMMAND_EXECUTOR_FAILED, message, ...exitCode }
}

export const run = (options: RunOptions): Effect.Effect<void, never, ExecutorSession> =>
  Effect.scoped(Effect.gen(function*() {
    const session = yield* ExecutorSession
    const defaultGrace = options.defaultGracePeriodSeconds ?? 3
    const inputs = yield* Queue.unbounded<Input>()
    yield* session.events.pipe(
      Stream.runForEach((event) => Queue.offer(inputs, { _tag: "Event", event })),
      Effect.andThen(Queue.offer(inputs, { _tag: "EventsEnded" })),
      Effect.forkScoped
    )
    const report = (init: StatusInit) => Effect.asVoid(session.update(init))
    let task: Task | undefined

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
            message: "command executor runs one task"
          })
        }
        return false
      }
      const command = info.command
      const problem = commandProblem(command)
      if (command === undefined || problem !== undefined) {
        const message = problem ?? ""
        yield* report({ taskId: info.taskId, state: TaskState.ERROR, reason: Reason.TASK_INVALID, message })
        return true
      }
      yield* report({ taskId: info.taskId, state: TaskState.STARTING })
      const started = yield* Effect.acquireRelease(
        start({ taskId: info.taskId, sandbox: options.sandbox, command, env: environment(info) }),
        // The executor is stopping with its task still running (interrupted): nothing may outlive it.
        (child) =>
          hasExited(child) || child.pid === undefined
            ? Effect.void
            : signalGroup(child.pid, "SIGKILL").pipe(
              Effect.andThen(awaitExit(child)),
              Effect.timeoutOption("5 seconds")
            )
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
      const child = started.success
      task = { info, child, pid: child.pid!, killReason: undefined }
      yield* report({ taskId: info.taskId, state: TaskState.RUNNING })
      yield* awaitExit(child).pipe(
        Effect.flatMap((termination) => Queue.offer(inputs, { _tag: "Exited", termination })),
        Effect.forkScoped
      )
      return false
    })

    const stop = Effect.fnUntraced(function*(running: Task, graceSeconds: number, reason: v1.TaskStatus_Reason) {
      if (running.killReason !== undefined) return
      running.killReason = reason
      yield* report({ taskId: running.info.taskId, state: TaskState.KILLING })
      yield* signalGroup(running.pid, "SIGTERM")
      // The timer is a fiber of this run, so it dies with it and never signals a recycled pid.
      yield* Effect.sleep(Duration.seconds(graceSeconds > 0 ? graceSeconds : 0)).pipe(
        Effect.andThen(
          Effect.suspend(() => hasExited(running.child) ? Effect.void : signalGroup(running.pid, "SIGKILL"))
        ),
        Effect.forkScoped
      )
    })

    const taskGrace = (info: v1.TaskInfo): number => info.killPolicy?.gracePeriodSeconds ?? defaultGrace

    /** Returns whether the executor is done. */
    const handle = Effect.fnUntraced(function*(input: Input) {
      switch (input._tag) {
        case "Exited": {
          const ended = task!
          // Whatever the command left behind in its group goes with it.
          yield* signalGroup(ended.pid, "SIGKILL")
          yield* report(terminalStatus(ended, input.termination))
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
                  message: "command executor does not run task groups"
                })
              }
              return false
            }
            case "kill": {
              const { taskId, killPolicy } = event.value
              if (task === undefined || task.info.taskId !== taskId) {
                yield* report({
                  taskId,
                  state: TaskState.KILLED,
                  reason: Reason.KILLED_BY_SCHEDULER,
                  message: "Task was not running"
                })
                // Killed before its launch: the executor's one task is over.
                return task === undefined
              }
              yield* stop(task, killPolicy?.gracePeriodSeconds ?? taskGrace(task.info), Reason.KILLED_BY_SCHEDULER)
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
    let done = false
    while (!done) done = yield* handle(yield* Queue.take(inputs))
  }))
