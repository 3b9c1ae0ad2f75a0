/**
 * The task lifecycle's runtime: records in memory mirrored to the `TaskStore`, the status
 * handler (persist, then acknowledge), launches through the offer manager (intent written in
 * `onPlaced`, before the Accept), the staging sweeper, and reconciliation.
 */
import { v1 } from "@berth/proto"
import { TaskStore, type StateStore, type StoreError } from "@berth/storage"
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, Latch, Option, PubSub, Schedule, Scope, Stream } from "effect"
import type * as Placement from "../../Placement.ts"
import { OfferManager } from "../../OfferManager.ts"
import { SchedulerEvents } from "../../SchedulerEvents.ts"
import { SchedulerSession } from "../../SchedulerSession.ts"
import * as TaskLifecycle from "../../TaskLifecycle.ts"
import * as Machine from "./machine.ts"

type TaskRecord = TaskLifecycle.TaskRecord

const ms = (input: Duration.Input | undefined, fallback: Duration.Input): number =>
  Duration.toMillis(Duration.fromInputUnsafe(input ?? fallback))

// `<requirement>.<attempt>`, or `<requirement>.<attempt>.<task>` for a task of a group.
const ATTEMPT = /^(.+)\.(\d+)(?:\.[A-Za-z_][A-Za-z0-9_-]*)?$/

export const make = (
  options: TaskLifecycle.Options
): Effect.Effect<
  TaskLifecycle.Service,
  StoreError.StoreError,
  SchedulerSession | SchedulerEvents | OfferManager | StateStore.StateStore | Scope.Scope
> =>
  Effect.gen(function*() {
    const session = yield* SchedulerSession
    const hub = yield* SchedulerEvents
    const offers = yield* OfferManager
    const store = yield* TaskStore.make({ info: TaskLifecycle.TaskRecord, status: TaskLifecycle.TaskRecord })
    const scope = yield* Effect.scope

    const stagingTimeoutMs = ms(options.stagingTimeout, "5 minutes")
    const backoffInitialMs = ms(options.backoff?.initial, "1 second")
    const backoffMaxMs = ms(options.backoff?.max, "5 minutes")
    const backoffFactor = options.backoff?.factor ?? 2
    const reconcileInitialMs = ms(options.reconcile?.initial, "4 seconds")
    const reconcileMaxMs = ms(options.reconcile?.max, "30 seconds")
    const implicitMs = ms(options.implicitReconcileInterval, "15 minutes")
    const unknownPolicy = options.unknownTasks ?? "kill"
    const defaultGraceSeconds = options.killGracePeriod === undefined ? undefined : ms(options.killGracePeriod, 0) / 1000
    // A task that ran this long before it ended starts its requirement's backoff over.
    const backoffResetMs = Math.max(backoffMaxMs, 60_000)

    const records = new Map<string, TaskRecord>()
    const specs = new Map<string, TaskLifecycle.LaunchSpec>()
    const submitted = new Set<string>()
    const stagingKilled = new Set<string>()
    const changes = yield* Effect.acquireRelease(PubSub.unbounded<TaskLifecycle.Change>(), PubSub.shutdown)

    for (const stored of yield* store.list) {
      records.set(stored.taskId, Option.getOrElse(stored.status, () => stored.info))
    }

    const fork = <A, E>(what: string, effect: Effect.Effect<A, E>) =>
      effect.pipe(
        Effect.catchCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.logWarning(`${what} failed`, cause)),
        Effect.forkIn(scope),
        Effect.asVoid
      )

    const emit = (previous: Machine.State | undefined, record: TaskRecord) => PubSub.publish(changes, { previous, record })

    const attemptsOf = (requirementId: string): Array<TaskRecord> =>
      [...records.values()].filter((r) => r.requirementId === requirementId).sort((a, b) => a.attempt - b.attempt || (a.taskId < b.taskId ? -1 : 1))

    const latestAttempt = (requirementId: string): Array<TaskRecord> => {
      const all = attemptsOf(requirementId)
      if (all.length === 0) return []
      const last = all[all.length - 1]!.attempt
      return all.filter((r) => r.attempt === last)
    }

    const groupOf = (request: Placement.Request) => request.requirement.group

    // --------------------------------------------------------------- launching

    /** The task ids of one attempt, and the request with them set. */
    const withTaskIds = (request: Placement.Request, taskId: string): { request: Placement.Request; taskIds: Array<string> } => {
      if (request.group !== undefined) {
        const tasks = request.group.tasks.map((t, i) => ({ ...t, taskId: `${taskId}.${t.taskId || t.name || String(i)}` }))
        // An executor id left empty names the attempt: each attempt's group runs under its own executor.
        const executor = request.group.executor.executorId === "" ? { ...request.group.executor, executorId: taskId } : request.group.executor
        return { request: { ...request, group: { executor, tasks } }, taskIds: tasks.map((t) => t.taskId) }
      }
      return {
        request: { ...request, task: { ...request.task, taskId, name: request.task?.name ?? request.requirement.id } },
        taskIds: [taskId]
      }
    }

    const ensure = (requirementId: string): Effect.Effect<void> =>
      Effect.gen(function*() {
        const spec = specs.get(requirementId)
        if (spec === undefined || submitted.has(requirementId)) return
        const goal = spec.goal ?? "RUNNING"
        const latest = latestAttempt(requirementId)
        if (latest.some((r) => !Machine.isTerminal(r.state))) return
        const last = latest[0]
        if (last !== undefined) {
          if (goal === "ONCE") return
          if (goal === "FINISH" && latest.every((r) => r.state === "FINISHED")) return
        }
        const now = yield* Clock.currentTimeMillis
        const failures = last === undefined
          ? 0
          : latest.every((r) => r.state === "FINISHED") || latest.some((r) => r.killRequested === true)
          ? 0
          : last.progress >= 3 && last.updatedAtMs - last.launchedAtMs >= backoffResetMs
          ? 1
          : last.failures + 1
        const attempt = (attemptsOf(requirementId).at(-1)?.attempt ?? 0) + 1
        const taskId = TaskLifecycle.taskIdOf(requirementId, attempt)
        const delay = Machine.backoffMs(failures, backoffInitialMs, backoffMaxMs, backoffFactor)
        const { request, taskIds } = withTaskIds(spec.request, taskId)
        submitted.add(requirementId)
        yield* offers.submit([{
          request,
          ...(delay > 0 ? { notBefore: now + delay } : {}),
          onPlaced: (placed) =>
            Effect.gen(function*() {
              const at = yield* Clock.currentTimeMillis
              const intents: Array<TaskRecord> = taskIds.map((id) => ({
                taskId: id,
                requirementId,
                ...(groupOf(spec.request) === undefined ? {} : { group: groupOf(spec.request)! }),
                attempt,
                goal,
                state: "LAUNCHING",
                progress: 0,
                agentId: placed.agentId,
                offerId: placed.offerId,
                launchedAtMs: at,
                updatedAtMs: 0,
                message: "",
                failures
              }))
              // Write-ahead: the intent is durable before the Accept can launch anything.
              yield* store.putInfos(intents.map((r) => [r.taskId, r] as const))
              for (const r of intents) {
                records.set(r.taskId, r)
                yield* emit(undefined, r)
              }
            }),
          onAccepted: (_placed, error) =>
            Effect.gen(function*() {
              submitted.delete(requirementId)
              if (error === undefined) {
                // Stopped while its offer was being accepted: it must not keep running.
                if (!specs.has(requirementId)) {
                  for (const id of taskIds) {
                    const r = records.get(id)
                    if (r !== undefined && !Machine.isTerminal(r.state)) yield* fork("Kill of a stopped task", killOne(r))
                  }
                }
                return
              }
              // The Accept may or may not have reached the master: never place the work again
              // (that could launch it twice); ask the master instead. UNKNOWN drops the intent,
              // and the requirement is launched again from there.
              yield* offers.withdraw([requirementId])
              yield* fork(
                "Reconcile after a failed Accept",
                session.reconcile(taskIds.map((id) => ({ taskId: id, agentId: _placed.agentId })))
              )
            })
        }])
      })

    // --------------------------------------------------------------- statuses

    let reconcileRemaining: Set<string> | undefined
    let reconcileDone: Deferred.Deferred<void> | undefined

    const adopt = (status: v1.TaskStatus, update: Machine.Update) =>
      Effect.gen(function*() {
        const m = ATTEMPT.exec(status.taskId)
        const record: TaskRecord = {
          taskId: status.taskId,
          requirementId: m === null ? status.taskId : m[1]!,
          attempt: m === null ? 1 : Number(m[2]),
          goal: "ONCE",
          state: update.state,
          progress: Machine.isPartitioned(update.state) ? 0 : Machine.rank(update.state),
          agentId: status.agentId,
          offerId: "",
          launchedAtMs: update.timestampMs,
          updatedAtMs: update.timestampMs,
          message: `adopted: ${status.message}`,
          failures: 0
        }
        yield* store.putInfo(record.taskId, record)
        records.set(record.taskId, record)
        yield* emit(undefined, record)
      })

    const onStatus = (status: v1.TaskStatus) =>
      Effect.gen(function*() {
        reconcileRemaining?.delete(status.taskId)
        if (reconcileRemaining !== undefined && reconcileRemaining.size === 0 && reconcileDone !== undefined) {
          yield* Deferred.succeed(reconcileDone, undefined)
        }
        let update = Machine.toUpdate(status)
        const record = records.get(status.taskId)
        if (update === undefined) return true
        if (record === undefined) {
          if (Machine.isTerminal(update.state) || update.state === "UNKNOWN") return true
          if (unknownPolicy === "adopt") {
            const adopted = yield* Effect.result(adopt(status, update))
            if (adopted._tag === "Failure") {
              yield* Effect.logError(`could not adopt task ${status.taskId}; not acknowledging it`, adopted.failure)
              return false
            }
          } else {
            yield* Effect.logWarning(`killing task ${status.taskId}: the master reports it, storage does not know it`)
            yield* fork("Kill of an unknown task", session.kill(status.taskId, { agentId: status.agentId }))
          }
          return true
        }
        if (update.state === "UNKNOWN" && record.state === "LAUNCHING") {
          // The master never heard of a task whose intent is stored: the Accept was lost.
          update = { ...update, state: "DROPPED", message: `launch lost: ${update.message ?? ""}`.trim() }
        }
        const t = Machine.apply(record, update)
        if (t._tag === "Ignored") return true
        // Persist, then acknowledge: once acknowledged the update is never sent again.
        const saved = yield* Effect.result(store.putStatus(record.taskId, t.next))
        if (saved._tag === "Failure") {
          yield* Effect.logError(`could not store the status of ${record.taskId}; not acknowledging it`, saved.failure)
          return false
        }
        records.set(record.taskId, t.next)
        yield* emit(t.previous, t.next)
        if (Machine.isTerminal(t.next.state)) {
          stagingKilled.delete(record.taskId)
          yield* ensure(record.requirementId)
        }
        return true
      })

    yield* hub.register("TaskLifecycle", (event) => {
      switch (event.$case) {
        case "update": {
          // Each status is persisted before it is acknowledged, one store write each: tasks are
          // handled concurrently so their writes share the store's group commits (one fsync for
          // many), while one task's updates stay in order.
          const byTask = new Map<string, Array<v1.TaskStatus>>()
          for (const status of event.value.statuses) {
            const list = byTask.get(status.taskId)
            if (list === undefined) byTask.set(status.taskId, [status])
            else list.push(status)
          }
          return Effect.forEach(byTask.values(), (statuses) =>
            Effect.forEach(statuses, (status) =>
              Effect.flatMap(onStatus(status), (ok) =>
                ok && status.uuid.length > 0 ? fork("Acknowledge", session.acknowledge(status)) : Effect.void), { discard: true }),
            { concurrency: 64, discard: true })
        }
        case "subscribed":
          return startReconciliation
        default:
          return Effect.void
      }
    })

    // --------------------------------------------------------------- reconciliation

    const reconciledLatch = yield* Latch.make(true)
    let reconciling: Fiber.Fiber<void> | undefined
    let currentHold: Scope.Closeable | undefined

    const live = () => [...records.values()].filter((r) => !Machine.isTerminal(r.state))

    /** Holds offers now (before the next event is dispatched) and reconciles in the background. */
    const startReconciliation: Effect.Effect<void> = Effect.gen(function*() {
      if (reconciling !== undefined) yield* Fiber.interrupt(reconciling)
      // Released here too: a fiber interrupted before it ran never ran its own release.
      if (currentHold !== undefined) yield* Scope.close(currentHold, Exit.void)
      yield* reconciledLatch.close
      const holdScope = yield* Scope.make()
      currentHold = holdScope
      yield* Scope.provide(holdScope)(offers.hold("explicit task reconciliation"))
      reconciling = yield* Effect.gen(function*() {
        const remaining = new Set(live().map((r) => r.taskId))
        let delay = reconcileInitialMs
        while (remaining.size > 0) {
          const done = yield* Deferred.make<void>()
          reconcileRemaining = remaining
          reconcileDone = done
          const tasks = [...remaining].map((taskId) => ({ taskId, agentId: records.get(taskId)?.agentId }))
          yield* session.reconcile(tasks).pipe(
            Effect.catchCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.logWarning("explicit reconciliation failed", cause))
          )
          yield* Effect.timeoutOption(Deferred.await(done), Duration.millis(delay))
          delay = Math.min(delay * 2, reconcileMaxMs)
        }
        // Then everything the master knows: tasks storage does not know meet `unknownTasks`.
        yield* session.reconcile().pipe(
          Effect.catchCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.logWarning("implicit reconciliation failed", cause))
        )
        yield* Effect.logDebug("explicit reconciliation done")
      }).pipe(
        Effect.ensuring(Effect.suspend(() => {
          // A newer reconciliation replaced this one: its state and latch are not ours to end.
          if (currentHold !== holdScope) return Scope.close(holdScope, Exit.void)
          reconcileRemaining = undefined
          reconcileDone = undefined
          currentHold = undefined
          return Effect.andThen(Scope.close(holdScope, Exit.void), reconciledLatch.open)
        })),
        Effect.forkIn(scope)
      )
    })

    // Periodic implicit reconciliation.
    yield* session.reconcile().pipe(
      Effect.catchCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.logWarning("implicit reconciliation failed", cause)),
      Effect.delay(Duration.millis(implicitMs)),
      Effect.repeat(Schedule.forever),
      Effect.forkIn(scope)
    )

    // --------------------------------------------------------------- staging timeout

    const sweepMs = Math.min(5_000, Math.max(100, Math.floor(stagingTimeoutMs / 5)))
    yield* Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      for (const r of records.values()) {
        if ((r.state !== "LAUNCHING" && r.state !== "STAGING") || stagingKilled.has(r.taskId)) continue
        if (now - r.launchedAtMs < stagingTimeoutMs) continue
        stagingKilled.add(r.taskId)
        yield* Effect.logWarning(`task ${r.taskId} stayed ${r.state} longer than the staging timeout; killing it`)
        yield* fork("Kill after the staging timeout", session.kill(r.taskId, { agentId: r.agentId }))
        if (r.state === "LAUNCHING") yield* fork("Reconcile after the staging timeout", session.reconcile([{ taskId: r.taskId, agentId: r.agentId }]))
      }
    }).pipe(Effect.delay(Duration.millis(sweepMs)), Effect.repeat(Schedule.forever), Effect.forkIn(scope))

    // What runs, for constraints and spread.
    yield* offers.registerRunning(Effect.sync(() =>
      live().map((r) => ({ id: r.requirementId, ...(r.group === undefined ? {} : { group: r.group }), agentId: r.agentId }))
    ))

    // --------------------------------------------------------------- service

    const killOne = (record: TaskRecord, options?: TaskLifecycle.KillOptions) =>
      Effect.gen(function*() {
        const next: TaskRecord = { ...record, killRequested: true }
        yield* store.putStatus(record.taskId, next).pipe(Effect.catchTag("SchemaError", Effect.die))
        records.set(record.taskId, next)
        yield* emit(record.state, next)
        const graceSeconds = options?.gracePeriod === undefined ? defaultGraceSeconds : ms(options.gracePeriod, 0) / 1000
        yield* session.kill(record.taskId, {
          ...(record.agentId === "" ? {} : { agentId: record.agentId }),
          ...(graceSeconds === undefined ? {} : { killPolicy: { gracePeriodSeconds: graceSeconds } })
        })
        // A task still LAUNCHING may be unknown to the master: its answer drops the intent.
        if (record.state === "LAUNCHING") yield* session.reconcile([{ taskId: record.taskId, agentId: record.agentId }])
      })

    return {
      launch: (list) =>
        Effect.gen(function*() {
          for (const spec of list) {
            specs.set(spec.request.requirement.id, spec)
            yield* ensure(spec.request.requirement.id)
          }
        }),
      stop: (ids, options) =>
        Effect.gen(function*() {
          for (const id of ids) {
            specs.delete(id)
            submitted.delete(id)
          }
          yield* offers.withdraw(ids)
          for (const id of ids) {
            for (const r of attemptsOf(id)) if (!Machine.isTerminal(r.state)) yield* killOne(r, options)
          }
        }),
      kill: (taskId, options) =>
        Effect.suspend(() => {
          const record = records.get(taskId)
          if (record === undefined || Machine.isTerminal(record.state)) return Effect.void
          return killOne(record, options)
        }),
      changes: Stream.fromPubSub(changes),
      get: (taskId) => Effect.sync(() => Option.fromNullishOr(records.get(taskId))),
      tasks: Effect.sync(() => [...records.values()].sort((a, b) => (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0))),
      byRequirement: (id) => Effect.sync(() => attemptsOf(id)),
      reconciled: reconciledLatch.await,
      reconcile: Effect.andThen(startReconciliation, reconciledLatch.await),
      forget: (id) =>
        Effect.gen(function*() {
          for (const r of attemptsOf(id)) {
            if (!Machine.isTerminal(r.state)) continue
            yield* store.remove(r.taskId)
            records.delete(r.taskId)
          }
        })
    } satisfies TaskLifecycle.Service
  })
