import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Queue, Stream } from "effect"
import { TaskStates, v1 } from "@berth/proto"
import type { Recovered } from "../CommandExecutor.ts"
import type { RunOptions } from "../DefaultExecutor.ts"
import {
  type ExecutorEvent,
  ExecutorSession,
  type InProcess,
  layerInProcess,
  makeInProcess,
  type StatusInit
} from "../ExecutorSession.ts"
import { run as runCommand, taskProblem } from "./commandExecutor.ts"

/**
 * The default executor is a composition, not a copy: each task of the group is run by a command
 * executor of its own (same fetch, process, health-check and checkpoint machinery) over an
 * in-process sub-session. This loop owns the group: it validates it as a whole, starts the
 * members together, forwards their updates to the real session, and applies the group policy
 * (a member that fails or is killed takes the others with it).
 */

type Input =
  | { readonly _tag: "Event"; readonly event: ExecutorEvent }
  | { readonly _tag: "EventsEnded" }
  | { readonly _tag: "MemberDone"; readonly taskId: string }

interface Member {
  readonly info: v1.TaskInfo
  executor: InProcess | undefined
  /** Set once its terminal update went out. */
  terminal: boolean
  /** Set once its command executor returned. */
  done: boolean
  /** Why the group killed it (another task failed or was killed): prefixed to its KILLING/KILLED message. */
  groupKill: string | undefined
}

const { TaskState, TaskStatus_Reason: Reason } = v1

/** Task ids name directories (`tasks/<taskId>`) in the shared sandbox. */
const TASK_ID = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}$/

/** What a member's full status says, to be stamped again by the group's own session. */
const toInit = (status: v1.TaskStatus): StatusInit => ({
  taskId: status.taskId,
  state: status.state,
  message: status.message,
  reason: status.reason,
  ...(status.healthy === undefined ? {} : { healthy: status.healthy }),
  ...(status.ready === undefined ? {} : { ready: status.ready }),
  ...(status.exitCode === undefined ? {} : { exitCode: status.exitCode }),
  ...(status.data.length === 0 ? {} : { data: status.data })
})

/** Why a task group cannot be run, naming the task and the field, if it cannot. */
export const groupProblem = (
  tasks: ReadonlyArray<v1.TaskInfo>
): { readonly taskId: string | undefined; readonly message: string } | undefined => {
  if (tasks.length === 0) return { taskId: undefined, message: "task_group.tasks: must list at least one task" }
  const seen = new Set<string>()
  for (const [i, info] of tasks.entries()) {
    const at = `task_group.tasks[${i}]`
    if (!TASK_ID.test(info.taskId)) return { taskId: info.taskId, message: `${at}.task_id: must match ${TASK_ID.source}` }
    if (seen.has(info.taskId)) return { taskId: info.taskId, message: `${at}.task_id: "${info.taskId}" is listed twice` }
    seen.add(info.taskId)
    if (info.container?.type === v1.ContainerInfo_Type.DOCKER) {
      return { taskId: info.taskId, message: `${at}.container: the default executor runs commands, not Docker containers` }
    }
    const problem = taskProblem(info)
    if (problem !== undefined) return { taskId: info.taskId, message: `${at} (${info.taskId}): ${problem}` }
  }
  return undefined
}

/** How a member's end reads in its siblings' KILLED messages. */
const howItEnded = (status: v1.TaskStatus): string => {
  const what = status.state === TaskState.FAILED
    ? "failed"
    : status.state === TaskState.KILLED
    ? "was killed"
    : `ended ${TaskStates.name(status.state)}`
  return status.message === "" ? what : `${what} (${status.message})`
}

export const run = (options: RunOptions): Effect.Effect<void, never, ExecutorSession> =>
  Effect.scoped(Effect.gen(function*() {
    const session = yield* ExecutorSession
    const inputs = yield* Queue.unbounded<Input>()
    yield* session.events.pipe(
      Stream.runForEach((event) => Queue.offer(inputs, { _tag: "Event", event })),
      Effect.andThen(Queue.offer(inputs, { _tag: "EventsEnded" })),
      Effect.forkScoped
    )
    const report = (init: StatusInit) => Effect.asVoid(session.update(init))
    /** The group's tasks, by id; undefined until the group is launched (or recovered). */
    let members: Map<string, Member> | undefined
    /** Set once the group policy (or a kill) ends the group: it happens once. */
    let groupKilled = false

    /** Kills every live member but `except`, saying why on their KILLED updates. */
    const killGroup = Effect.fnUntraced(function*(
      except: string,
      why: string,
      reason: v1.TaskStatus_Reason,
      killPolicy?: v1.KillPolicy
    ) {
      groupKilled = true
      for (const member of members?.values() ?? []) {
        if (member.info.taskId === except || member.terminal || member.executor === undefined) continue
        member.groupKill = why
        yield* member.executor.send({
          $case: "kill",
          value: { taskId: member.info.taskId, reason, ...(killPolicy === undefined ? {} : { killPolicy }) }
        })
      }
    })

    /** A member's update: forwarded first, then the group policy applies to a failure. */
    const onMemberUpdate = (member: Member) =>
      Effect.fnUntraced(function*(status: v1.TaskStatus) {
        const init = toInit(status)
        const killing = status.state === TaskState.KILLING || status.state === TaskState.KILLED
        yield* report(
          member.groupKill !== undefined && killing
            ? { ...init, message: init.message === "" ? member.groupKill : `${member.groupKill}. ${init.message}` }
            : init
        )
        if (!TaskStates.isTerminal(status.state)) return
        member.terminal = true
        // Mesos' default policy: a task that ends other than FINISHED kills the rest of its group.
        if (status.state !== TaskState.FINISHED && !groupKilled) {
          yield* killGroup(
            status.taskId,
            `Killed with its task group: task ${status.taskId} ${howItEnded(status)}`,
            Reason.EXECUTOR_TERMINATED
          )
        }
      })

    /** Starts one member's command executor; it launches the task or, with `recovered`, takes it over. */
    const startMember = Effect.fnUntraced(function*(member: Member, recovered?: Recovered) {
      const info = member.info
      const outputDir = path.join(options.sandbox, "tasks", info.taskId)
      yield* Effect.sync(() => fs.mkdirSync(outputDir, { recursive: true }))
      const executor = yield* makeInProcess({
        frameworkId: session.frameworkId,
        executorId: session.executorId,
        agentId: session.agentId,
        onUpdate: onMemberUpdate(member)
      })
      member.executor = executor
      const checkpoint = options.checkpoint?.(info)
      yield* runCommand({
        sandbox: options.sandbox,
        outputDir,
        env: options.env,
        defaultGracePeriodSeconds: options.defaultGracePeriodSeconds,
        fetcher: options.fetcher,
        checkpoint,
        recover: recovered,
        user: options.user,
        isolation: options.isolation
      }).pipe(
        Effect.provide(layerInProcess(executor)),
        Effect.andThen(Queue.offer(inputs, { _tag: "MemberDone", taskId: info.taskId })),
        Effect.forkScoped
      )
      if (recovered === undefined) yield* executor.send({ $case: "launch", value: { task: info } })
    })

    const newMember = (info: v1.TaskInfo): Member => ({
      info,
      executor: undefined,
      terminal: false,
      done: false,
      groupKill: undefined
    })

    /** All or nothing: the whole group is checked before any task is started. */
    const launchGroup = Effect.fnUntraced(function*(tasks: ReadonlyArray<v1.TaskInfo>) {
      if (members !== undefined) {
        // A resent launch of the running group starts nothing; another group is refused.
        for (const info of tasks) {
          if (members.has(info.taskId)) continue
          yield* report({
            taskId: info.taskId,
            state: TaskState.ERROR,
            reason: Reason.TASK_INVALID,
            message: "the default executor runs one task group; launch another group under another executor id"
          })
        }
        return false
      }
      const problem = groupProblem(tasks)
      if (problem !== undefined) {
        for (const info of tasks) {
          yield* report({
            taskId: info.taskId,
            state: TaskState.ERROR,
            reason: Reason.TASK_INVALID,
            message: info.taskId === problem.taskId
              ? problem.message
              : `Task group is invalid, no task of it was started: ${problem.message}`
          })
        }
        return true
      }
      members = new Map(tasks.map((info) => [info.taskId, newMember(info)]))
      for (const member of members.values()) yield* startMember(member)
      return false
    })

    const allDone = () => members !== undefined && [...members.values()].every((m) => m.done)

    /** Returns whether the executor is done. */
    const handle = Effect.fnUntraced(function*(input: Input) {
      switch (input._tag) {
        case "MemberDone": {
          const member = members?.get(input.taskId)
          if (member !== undefined) member.done = true
          return allDone()
        }
        case "EventsEnded": {
          // The agent is gone: each member stops its task as for a shutdown.
          if (members === undefined) return true
          for (const member of members.values()) yield* member.executor?.end ?? Effect.void
          return allDone()
        }
        case "Event": {
          const event = input.event
          switch (event.$case) {
            case "launchGroup":
              return yield* launchGroup(event.value.taskGroup?.tasks ?? [])
            case "launch": {
              const info = event.value.task
              if (info !== undefined) {
                yield* report({
                  taskId: info.taskId,
                  state: TaskState.ERROR,
                  reason: Reason.TASK_INVALID,
                  message: "the default executor runs task groups (LAUNCH_GROUP), not single tasks"
                })
              }
              return false
            }
            case "kill": {
              const { killPolicy, taskId } = event.value
              const reason = event.value.reason !== Reason.UNSPECIFIED ? event.value.reason : Reason.KILLED_BY_SCHEDULER
              const member = members?.get(taskId)
              if (member === undefined) {
                yield* report({ taskId, state: TaskState.KILLED, reason, message: "Task was not running" })
                return members === undefined
              }
              if (member.terminal || member.executor === undefined) return false
              // As in Mesos, killing one task of a group kills the whole group.
              if (!groupKilled) {
                yield* killGroup(taskId, `Killed with its task group: task ${taskId} was killed`, reason, killPolicy)
              }
              yield* member.executor.send({
                $case: "kill",
                value: { taskId, reason, ...(killPolicy === undefined ? {} : { killPolicy }) }
              })
              return false
            }
            case "shutdown": {
              if (members === undefined) return true
              groupKilled = true
              for (const member of members.values()) {
                if (!member.terminal) yield* member.executor?.send(event) ?? Effect.void
              }
              return false
            }
            default:
              return false
          }
        }
      }
    })

    let done = false
    const recover = options.recover
    if (recover !== undefined && recover.tasks.length > 0) {
      members = new Map(recover.tasks.map((r) => [r.task.taskId, newMember(r.task)]))
      for (const recovered of recover.tasks) yield* startMember(members.get(recovered.task.taskId)!, recovered)
      // A task that failed while the agent was away, before its siblings were killed: finish the policy.
      const failed = (recover.ended ?? []).find((status) => status.state !== TaskState.FINISHED)
      if (failed !== undefined && !groupKilled) {
        yield* killGroup(
          failed.taskId,
          `Killed with its task group: task ${failed.taskId} ${howItEnded(failed)}`,
          Reason.EXECUTOR_TERMINATED
        )
      }
    }
    while (!done) done = yield* handle(yield* Queue.take(inputs))
  }))
