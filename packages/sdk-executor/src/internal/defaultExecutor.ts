import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Queue, Stream } from "effect"
import { TaskStates, v1 } from "@berth/proto"
import type { Recovered } from "../CommandExecutor.ts"
import type { RecoveredGroup, RunOptions } from "../DefaultExecutor.ts"
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
 * The default executor is a composition, not a copy: each task of a group is run by a command
 * executor of its own (same fetch, process, health-check and checkpoint machinery) over an
 * in-process sub-session. This loop owns the groups: it validates each as a whole, starts its
 * members together, forwards their updates to the real session, and applies the group policy
 * per group, as Mesos does (a member that fails or is killed takes the rest of its own group
 * with it; other groups of the executor run on). Further groups may arrive while it runs: they
 * share the sandbox, which is how a sidecar (a backup) reads a running pod's volumes.
 */

type Input =
  | { readonly _tag: "Event"; readonly event: ExecutorEvent }
  | { readonly _tag: "EventsEnded" }
  | { readonly _tag: "MemberDone"; readonly taskId: string }

/** One LAUNCH_GROUP: the unit of the group policy. */
interface Group {
  readonly members: Array<Member>
  /** Set once the group policy (or a kill) ends the group: it happens once per group. */
  killed: boolean
}

interface Member {
  readonly info: v1.TaskInfo
  readonly group: Group
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
    /** Every task of every group this executor was given (or recovered), by id. */
    const members = new Map<string, Member>()
    /** Set by a shutdown (or the end of the events): no further group is started. */
    let shuttingDown = false

    /** Kills every live member of `group` but `except`, saying why on their KILLED updates. */
    const killGroup = Effect.fnUntraced(function*(
      group: Group,
      except: string,
      why: string,
      reason: v1.TaskStatus_Reason,
      killPolicy?: v1.KillPolicy
    ) {
      group.killed = true
      for (const member of group.members) {
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
        // Mesos' default policy: a task that ends other than FINISHED kills the rest of its group
        // (its own group only: the executor's other groups keep running).
        if (status.state !== TaskState.FINISHED && !member.group.killed) {
          yield* killGroup(
            member.group,
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

    /** A new group of `infos`, its members registered (not started yet). */
    const newGroup = (infos: ReadonlyArray<v1.TaskInfo>): Group => {
      const group: Group = { members: [], killed: false }
      for (const info of infos) {
        const member: Member = { info, group, executor: undefined, terminal: false, done: false, groupKill: undefined }
        group.members.push(member)
        members.set(info.taskId, member)
      }
      return group
    }

    /** Reports ERROR (REASON_TASK_INVALID) for each of `tasks`, with its own message. */
    const refuse = (tasks: ReadonlyArray<v1.TaskInfo>, message: (info: v1.TaskInfo) => string) =>
      Effect.forEach(
        tasks,
        (info) => report({ taskId: info.taskId, state: TaskState.ERROR, reason: Reason.TASK_INVALID, message: message(info) }),
        { discard: true }
      )

    /**
     * All or nothing: the whole group is checked before any task is started. A group arriving
     * while others run joins them in the shared sandbox. Returns whether the executor is done.
     */
    const launchGroup = Effect.fnUntraced(function*(tasks: ReadonlyArray<v1.TaskInfo>) {
      // A resent launch of a group this executor runs (or ran) starts nothing again.
      if (tasks.length > 0 && tasks.every((info) => members.has(info.taskId))) return false
      if (shuttingDown) {
        for (const info of tasks) {
          yield* report({
            taskId: info.taskId,
            state: TaskState.DROPPED,
            reason: Reason.EXECUTOR_TERMINATED,
            message: "the executor is shutting down: no task of the group was started; launch it again"
          })
        }
        return false
      }
      // A task id names its directory in the shared sandbox: one id, one task per executor.
      const reused = tasks.findIndex((info) => members.has(info.taskId))
      const problem = reused >= 0
        ? {
          taskId: tasks[reused]!.taskId,
          message: `task_group.tasks[${reused}].task_id: "${tasks[reused]!.taskId}" is already a task of this executor (in another group); give the task a new id`
        }
        : groupProblem(tasks)
      if (problem !== undefined) {
        yield* refuse(
          tasks.filter((info) => !members.has(info.taskId)),
          (info) => info.taskId === problem.taskId ? problem.message : `Task group is invalid, no task of it was started: ${problem.message}`
        )
        return members.size === 0
      }
      const group = newGroup(tasks)
      for (const member of group.members) yield* startMember(member)
      return false
    })

    const allDone = () => members.size > 0 && [...members.values()].every((m) => m.done)

    /** Returns whether the executor is done. */
    const handle = Effect.fnUntraced(function*(input: Input) {
      switch (input._tag) {
        case "MemberDone": {
          const member = members.get(input.taskId)
          if (member !== undefined) member.done = true
          return allDone()
        }
        case "EventsEnded": {
          // The agent is gone: each member stops its task as for a shutdown.
          if (members.size === 0) return true
          shuttingDown = true
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
              const member = members.get(taskId)
              if (member === undefined) {
                yield* report({ taskId, state: TaskState.KILLED, reason, message: "Task was not running" })
                return members.size === 0
              }
              if (member.terminal || member.executor === undefined) return false
              // As in Mesos, killing one task of a group kills its group (and only its group).
              if (!member.group.killed) {
                yield* killGroup(member.group, taskId, `Killed with its task group: task ${taskId} was killed`, reason, killPolicy)
              }
              yield* member.executor.send({
                $case: "kill",
                value: { taskId, reason, ...(killPolicy === undefined ? {} : { killPolicy }) }
              })
              return false
            }
            case "shutdown": {
              if (members.size === 0) return true
              shuttingDown = true
              for (const member of members.values()) {
                member.group.killed = true
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
    const recovering = options.recover === undefined
      ? []
      : Array.isArray(options.recover)
      ? options.recover as ReadonlyArray<RecoveredGroup>
      : [options.recover as RecoveredGroup]
    for (const recover of recovering) {
      if (recover.tasks.length === 0) continue
      const group = newGroup(recover.tasks.map((r) => r.task))
      for (const recovered of recover.tasks) yield* startMember(members.get(recovered.task.taskId)!, recovered)
      // A task that failed while the agent was away, before its siblings were killed: finish the policy.
      const failed = (recover.ended ?? []).find((status) => status.state !== TaskState.FINISHED)
      if (failed !== undefined && !group.killed) {
        yield* killGroup(
          group,
          failed.taskId,
          `Killed with its task group: task ${failed.taskId} ${howItEnded(failed)}`,
          Reason.EXECUTOR_TERMINATED
        )
      }
    }
    while (!done) done = yield* handle(yield* Queue.take(inputs))
  }))
