/**
 * Seeded fault simulation: run a framework against an in-process cluster while a schedule of
 * faults drawn from a seed (agents killed and restarted, partitions and heals through the proxy,
 * scheduler restarts, dropped and duplicated status updates) plays out, and check the invariants
 * of ARCHITECTURE §3 after every step.
 *
 * Checked after every step, from the master's event stream:
 * - **no terminal state regresses**: once the master reports a task FINISHED, FAILED, KILLED, ...
 *   it never reports it in a non-terminal state again;
 * - **no double launch**: a task id is never added while a task of that id is still live.
 *
 * Checked after every step once it has settled (the step's duration has passed), whenever the
 * master answered both before and after it:
 * - **no task vanishes**: a task RUNNING before the step (at the master, or in the framework's
 *   durable record) is, after it, RUNNING, UNREACHABLE (a partition, a killed agent), KILLING, or
 *   in a terminal state the master reports (what reconciliation would answer); not unknown to the
 *   master, and not back in STAGING or STARTING. Each such task is reported once, at the step it
 *   vanished in.
 *
 * Checked once the schedule is over, every fault healed and every killed agent restarted, when the
 * cluster has settled (no agent holds an unacknowledged update):
 * - **no task lost**: every task the framework's durable record holds as live is live at the
 *   master, and every task the master holds as live is in the framework's record (the framework
 *   persisted its intent before launching). A task the master saw end while the framework's record
 *   says it runs was lost: the update that said so was acknowledged but never persisted.
 *
 * The fault schedule is a pure function of the seed, and the report's `hash` covers the schedule,
 * the violations found and the settled outcome (each task ended or still live, sorted; the exact
 * final states are in `outcome` but not hashed, as a fault may catch a task mid-run or not depending
 * on real timing): ordered semantic events only, no timestamps, ports or ids. The interleaving of real processes in between is not
 * hashed (real gRPC and child processes are not deterministic), so two runs of a seed agree on the
 * hash whenever they agree on what happened.
 *
 * How each task ended is in the report's `tasks` (not hashed): its final state with the reason,
 * source and message of the master's latest status, and the states the master reported on the
 * way, so that a run where a task ended unexpectedly (FAILED where FINISHED was due) can be
 * explained from the test output alone.
 *
 * @example
 * ```ts
 * const report = yield* Simulation.simulate({
 *   seed: 7,
 *   steps: 12,
 *   faults: ["restart-scheduler", "kill-agent", "restart-agent", "partition", "heal"],
 *   framework: { name: "jobs", run: (ctx) => myScheduler(ctx) }
 * })
 * expect(report.violations).toEqual([])
 * ```
 */
import { TaskStates, v1 } from "@berth/proto"
import { Clock, Duration, Effect, Exit, Fiber, References, Scope, Stream } from "effect"
import { createHash } from "node:crypto"
import * as Random from "./internal/random.ts"
import * as VirtualClock from "./internal/virtualClock.ts"
import type * as Operator from "./Operator.ts"
import type { UnsupportedFault } from "./TestClusterError.ts"
import * as TestCluster from "./TestCluster.ts"

/** The faults a schedule draws from. */
export type Fault =
  | "kill-agent"
  | "restart-agent"
  | "partition"
  | "heal"
  | "restart-scheduler"
  | "drop-updates"
  | "duplicate-updates"

export const allFaults: ReadonlyArray<Fault> = [
  "kill-agent",
  "restart-agent",
  "partition",
  "heal",
  "restart-scheduler",
  "drop-updates",
  "duplicate-updates"
]

/**
 * The framework's durable storage: what survives a scheduler restart (its "database"). The
 * simulation reads the task records to check that no task is lost, so a framework records every
 * task it launches (before it launches it) and every state it learns.
 */
export interface DurableStore {
  /** Records what the framework knows of a task. */
  readonly putTask: (taskId: string, state: v1.TaskState) => Effect.Effect<void>
  /** Forgets a task (one the master never heard of, to be launched again). */
  readonly removeTask: (taskId: string) => Effect.Effect<void>
  readonly task: (taskId: string) => v1.TaskState | undefined
  readonly tasks: () => ReadonlyMap<string, v1.TaskState>
  /** Any other value (the framework id, say). */
  readonly put: (key: string, value: string) => Effect.Effect<void>
  readonly get: (key: string) => string | undefined
}

export interface FrameworkContext {
  readonly cluster: TestCluster.TestCluster
  /** The leading master's "host:port". */
  readonly master: string
  readonly store: DurableStore
  /** Seeded randomness for the framework's own choices (derived from the simulation's seed). */
  readonly random: Random.Random
  /** Adds a line to the cluster event log. */
  readonly log: (text: string) => void
  /** How many times the scheduler has been (re)started before this run (0 the first time). */
  readonly incarnation: number
}

export interface Framework {
  readonly name: string
  /**
   * Runs the scheduler until its scope closes; a scheduler restart closes the scope and calls
   * `run` again with the same store. It may return once its work is launched: it is kept running
   * by the scope it was given, and its background fibers end with it.
   */
  readonly run: (context: FrameworkContext) => Effect.Effect<void, unknown, Scope.Scope>
  /**
   * Whether the framework's work is done, from its durable task records (default: it recorded
   * tasks and all of them ended). The simulation waits for it (and for the master to agree)
   * before the final checks.
   */
  readonly done?: (tasks: ReadonlyMap<string, v1.TaskState>) => boolean
}

export interface Options {
  readonly seed: number
  /** Number of fault steps (default 10). */
  readonly steps?: number
  /** The faults to draw from (default all of them). */
  readonly faults?: ReadonlyArray<Fault>
  readonly framework: Framework
  /** Real time between two steps (default 300 ms). */
  readonly stepDuration?: Duration.Input
  /** How long the cluster may take to settle at the end (default 30 s). */
  readonly settleTimeout?: Duration.Input
  /** Cluster options (in-process backend; default 3 agents, fast pings and resends). */
  readonly cluster?: Omit<TestCluster.Options, "backend">
}

export interface Step {
  readonly step: number
  /** e.g. "partition agent-2", "restart scheduler", "nothing". */
  readonly action: string
  readonly violations: ReadonlyArray<string>
}

/** How a task stood at the master once the run settled (from its latest status). */
export interface TaskOutcome {
  readonly taskId: string
  /** The cluster's name of its agent ("agent-2"). */
  readonly agent: string
  /** "FINISHED", "FAILED", ... or a live state ("RUNNING") when it had not ended. */
  readonly state: string
  /** The status' reason ("EXECUTOR_TERMINATED"); "" when it gives none. */
  readonly reason: string
  /** Who produced the status: "MASTER", "AGENT" or "EXECUTOR" ("" when unknown). */
  readonly source: string
  readonly message: string
  /** The exit code of the task's process, when the status gives one. */
  readonly exitCode?: number | undefined
  /**
   * The states the master reported for the task, in order, each with its reason when it gave one
   * ("STAGING", "RUNNING", "UNREACHABLE(AGENT_DISCONNECTED)", "FINISHED"); repeats collapsed.
   */
  readonly history: ReadonlyArray<string>
}

/** One line for a task outcome, e.g. `job-3 FAILED (EXECUTOR_TERMINATED, from EXECUTOR on agent-3): ... [STAGING > FAILED(...)]`. */
export const formatTask = (task: TaskOutcome): string => {
  const why = [task.reason, task.source === "" ? "" : `from ${task.source}`, `on ${task.agent}`].filter((part) => part !== "").join(", ")
  const exit = task.exitCode === undefined ? "" : ` exit ${task.exitCode}`
  return `${task.taskId} ${task.state} (${why})${exit}: ${task.message === "" ? "(no message)" : task.message} [${task.history.join(" > ")}]`
}

export interface Report {
  readonly seed: number
  readonly steps: ReadonlyArray<Step>
  /** Every invariant violation found, in order. */
  readonly violations: ReadonlyArray<string>
  readonly ok: boolean
  /** Each task's final state at the master ("job-1 FINISHED"), sorted. */
  readonly outcome: ReadonlyArray<string>
  /** How each task ended (state, reason, source, message, history), sorted by task id; not hashed. */
  readonly tasks: ReadonlyArray<TaskOutcome>
  /** The semantic events hashed, in order. */
  readonly events: ReadonlyArray<string>
  /** sha256 of `events`. */
  readonly hash: string
  /** The cluster's own event log (timings included; not hashed). */
  readonly clusterLog: string
}

const makeStore = (): DurableStore => {
  const tasks = new Map<string, v1.TaskState>()
  const values = new Map<string, string>()
  return {
    putTask: (taskId, state) => Effect.sync(() => void tasks.set(taskId, state)),
    removeTask: (taskId) => Effect.sync(() => void tasks.delete(taskId)),
    task: (taskId) => tasks.get(taskId),
    tasks: () => new Map(tasks),
    put: (key, value) => Effect.sync(() => void values.set(key, value)),
    get: (key) => values.get(key)
  }
}

/** Runs one seeded simulation; see the module documentation. */
export const simulate = (
  options: Options
): Effect.Effect<Report, TestCluster.MakeError | Operator.OperatorError | UnsupportedFault, Scope.Scope> =>
  Effect.gen(function*() {
    const random = Random.make(options.seed)
    const faults = options.faults ?? allFaults
    const steps = options.steps ?? 10
    const stepMs = Duration.toMillis(Duration.fromInputUnsafe(options.stepDuration ?? "300 millis"))
    const settleMs = Duration.toMillis(Duration.fromInputUnsafe(options.settleTimeout ?? "30 seconds"))
    const cluster = yield* TestCluster.make({
      agents: 3,
      statusUpdateRetrySeconds: 0.2,
      seed: options.seed,
      dumpOnFailure: false,
      logLevel: "Error",
      ...options.cluster,
      master: { agentPingSeconds: 0.5, agentPingMisses: 2, allocationIntervalMs: 200, ...options.cluster?.master },
      backend: "in-process"
    })
    const store = makeStore()
    const semantic: Array<string> = [`seed ${options.seed}`, `framework ${options.framework.name}`]
    const violations: Array<string> = []
    const found = (text: string) => {
      if (!violations.includes(text)) violations.push(text)
    }

    // The master's view of every task, from its event stream: checked as it arrives.
    const masterStates = new Map<string, v1.TaskState>()
    // What the master reported for each task, in order (for the report only).
    const histories = new Map<string, Array<string>>()
    const remember = (taskId: string, state: v1.TaskState, reason: v1.TaskStatus_Reason | undefined) => {
      const entry = reason === undefined || reason === v1.TaskStatus_Reason.UNSPECIFIED
        ? TaskStates.name(state)
        : `${TaskStates.name(state)}(${reasonName(reason)})`
      const history = histories.get(taskId) ?? []
      if (history[history.length - 1] !== entry) history.push(entry)
      histories.set(taskId, history)
    }
    const watch = yield* Effect.gen(function*() {
      yield* cluster.operator.events.pipe(
        Stream.runForEach((event) =>
          Effect.sync(() => {
            if (event?.$case === "taskAdded") {
              const taskId = event.value.task?.info?.taskId ?? ""
              const before = masterStates.get(taskId)
              if (before !== undefined && !TaskStates.isTerminal(before)) {
                found(`double launch: task ${taskId} was added again while ${TaskStates.name(before)}`)
              }
              masterStates.set(taskId, event.value.task?.state ?? v1.TaskState.STAGING)
              remember(taskId, event.value.task?.state ?? v1.TaskState.STAGING, event.value.task?.status?.reason)
            }
            if (event?.$case === "taskUpdated") {
              const taskId = event.value.status?.taskId ?? ""
              const before = masterStates.get(taskId)
              if (before !== undefined && TaskStates.isTerminal(before) && !TaskStates.isTerminal(event.value.state)) {
                found(`terminal state regressed: task ${taskId} went from ${TaskStates.name(before)} to ${TaskStates.name(event.value.state)}`)
              }
              if (before === undefined || !TaskStates.isTerminal(before)) masterStates.set(taskId, event.value.state)
              remember(taskId, event.value.state, event.value.status?.reason)
            }
          })
        ),
        Effect.catch(() => Effect.void)
      )
    }).pipe(Effect.forkScoped)

    // The scheduler, restartable.
    let incarnation = 0
    let scheduler: { readonly scope: Scope.Closeable; readonly fiber: Fiber.Fiber<void, unknown> } | undefined
    const startScheduler = Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context: FrameworkContext = {
        cluster,
        master: cluster.master,
        store,
        random: Random.make(options.seed * 7919 + incarnation),
        log: (text) => cluster.events.record(text),
        incarnation
      }
      incarnation++
      const fiber = yield* options.framework.run(context).pipe(
        Effect.provideService(References.MinimumLogLevel, options.cluster?.logLevel ?? "Error"),
        Effect.catchCause((cause) => Effect.sync(() => cluster.events.record(`scheduler ended: ${cause}`))),
        Scope.provide(scope),
        Effect.forkDetach
      )
      scheduler = { scope, fiber }
    })
    const stopScheduler = Effect.gen(function*() {
      const current = scheduler
      if (current === undefined) return
      scheduler = undefined
      yield* Fiber.interrupt(current.fiber)
      yield* Scope.close(current.scope, Exit.void)
    })
    yield* Effect.addFinalizer(() => stopScheduler)
    yield* startScheduler

    const killed = new Set<number>()
    const partitioned = new Set<number>()
    const pickAgent = (from: ReadonlyArray<number>) => (from.length === 0 ? undefined : random.pick(from))
    const agentIndexes = cluster.agents.map((a) => a.index)

    const apply = (fault: Fault): Effect.Effect<string, unknown> =>
      Effect.gen(function*() {
        switch (fault) {
          case "kill-agent": {
            const i = pickAgent(agentIndexes.filter((k) => !killed.has(k)))
            if (i === undefined) return "nothing (every agent is down)"
            killed.add(i)
            yield* cluster.agents[i]!.kill
            return `kill agent-${i + 1}`
          }
          case "restart-agent": {
            const down = [...killed].sort()
            const i = pickAgent(down.length > 0 ? down : agentIndexes)!
            killed.delete(i)
            yield* cluster.agents[i]!.restart
            return `restart agent-${i + 1}`
          }
          case "partition": {
            const i = pickAgent(agentIndexes.filter((k) => !partitioned.has(k)))
            if (i === undefined) return "nothing (every agent is partitioned)"
            partitioned.add(i)
            yield* cluster.agents[i]!.partition
            return `partition agent-${i + 1}`
          }
          case "heal": {
            const i = pickAgent([...partitioned].sort())
            if (i === undefined) return "nothing (no partition to heal)"
            partitioned.delete(i)
            yield* cluster.agents[i]!.heal
            return `heal agent-${i + 1}`
          }
          case "restart-scheduler":
            yield* stopScheduler
            yield* startScheduler
            return "restart scheduler"
          case "drop-updates": {
            const i = random.int(agentIndexes.length)
            const n = 1 + random.int(3)
            yield* cluster.agents[i]!.statusUpdates({ drop: { next: n } })
            return `drop the next ${n} updates of agent-${i + 1}`
          }
          case "duplicate-updates": {
            const i = random.int(agentIndexes.length)
            const n = 1 + random.int(3)
            yield* cluster.agents[i]!.statusUpdates({ duplicate: { next: n } })
            return `duplicate the next ${n} updates of agent-${i + 1}`
          }
        }
      })

    // The scheduler gets one step to subscribe and launch before the first fault.
    yield* Effect.sleep(stepMs)
    const report: Array<Step> = []
    const reportedVanished = new Set<string>()
    for (let step = 1; step <= steps; step++) {
      const fault = random.pick(faults)
      const before = violations.length
      const runningBefore = yield* runningTasks(cluster.operator, store)
      const action = yield* apply(fault).pipe(Effect.catch((error) => Effect.succeed(`${fault} failed: ${String(error)}`)))
      cluster.events.record(`simulation step ${step}: ${action}`)
      semantic.push(`step ${step}: ${action}`)
      yield* Effect.sleep(stepMs)
      if (runningBefore !== undefined) {
        const after = yield* cluster.operator.state.pipe(Effect.option)
        // Each vanished task once, at the step it vanished in.
        const fresh = runningBefore.filter((taskId) => !reportedVanished.has(taskId))
        if (after._tag === "Some") {
          for (const [taskId, v] of vanished(fresh, after.value, step, action)) {
            reportedVanished.add(taskId)
            found(v)
          }
        }
      }
      const fresh = violations.slice(before)
      for (const v of fresh) semantic.push(`step ${step}: violation: ${v}`)
      report.push({ step, action, violations: fresh })
    }

    // Heal everything, bring every agent back, and let the cluster settle.
    for (const i of [...partitioned].sort()) yield* cluster.agents[i]!.heal
    for (const i of [...killed].sort()) yield* cluster.agents[i]!.restart.pipe(Effect.ignore)
    yield* cluster.faults.clear.pipe(Effect.ignore)
    semantic.push("healed")
    // Settled when the framework is done (by default: every task it recorded has ended) and its
    // record agrees with the master; or when nothing can change any more: every task at the master
    // has ended and no agent has held an unacknowledged update for a second (a lost update stays
    // lost).
    const done = options.framework.done ?? ((tasks: ReadonlyMap<string, v1.TaskState>) =>
      tasks.size > 0 && [...tasks.values()].every((s) => TaskStates.isTerminal(s)))
    const settle = Effect.gen(function*() {
      let quiet = 0
      for (let waited = 0; waited < settleMs; waited += 100) {
        const state = yield* cluster.operator.state.pipe(Effect.option)
        if (state._tag === "Some") {
          if (done(store.tasks()) && agrees(state.value, store)) return
          const ended = state.value.tasks.every((t) => TaskStates.isTerminal(t.state))
          quiet = ended && cluster.agents.every((a) => a.pendingUpdates() === 0) ? quiet + 1 : 0
          if (quiet >= 10) return
        }
        yield* Effect.sleep("100 millis")
      }
    })
    yield* settle
    const state = yield* cluster.operator.state
    const master = new Map(state.tasks.map((t) => [t.info?.taskId ?? "", t.state]))
    for (const [taskId, recorded] of [...store.tasks()].sort(([a], [b]) => a.localeCompare(b))) {
      const actual = master.get(taskId)
      if (TaskStates.isTerminal(recorded)) continue
      if (actual === undefined) found(`task lost: ${taskId} is ${TaskStates.name(recorded)} in the framework's record, unknown to the master`)
      else if (TaskStates.isTerminal(actual)) {
        found(`task lost: ${taskId} is ${TaskStates.name(recorded)} in the framework's record, but it ended ${TaskStates.name(actual)} and nothing is left to deliver`)
      }
    }
    for (const [taskId, actual] of master) {
      if (!TaskStates.isTerminal(actual) && store.task(taskId) === undefined) found(`orphan: ${taskId} is ${TaskStates.name(actual)} at the master, not in the framework's record`)
    }
    // The event stream may trail the state just read by a few events: let it catch up (bounded)
    // before it stops, so that each task's history ends where the master says the task is.
    const historyState = (taskId: string) => histories.get(taskId)?.at(-1)?.split("(")[0]
    const behind = () => state.tasks.some((t) => historyState(t.info?.taskId ?? "") !== TaskStates.name(t.state))
    for (let waited = 0; waited < 2_000 && behind(); waited += 50) yield* Effect.sleep("50 millis")
    yield* Fiber.interrupt(watch)
    const outcome = [...master].map(([taskId, s]) => `${taskId} ${TaskStates.name(s)}`).sort()
    const agentNames = new Map(cluster.agents.map((a) => [a.agentId, a.name]))
    const tasks: Array<TaskOutcome> = state.tasks
      .map((t) => {
        const taskId = t.info?.taskId ?? ""
        const status = t.status
        return {
          taskId,
          agent: agentNames.get(t.agentId) ?? t.agentId,
          state: TaskStates.name(t.state),
          reason: status === undefined || status.reason === v1.TaskStatus_Reason.UNSPECIFIED ? "" : reasonName(status.reason),
          source: status === undefined || status.source === v1.TaskStatus_Source.UNSPECIFIED ? "" : sourceName(status.source),
          message: status?.message ?? "",
          ...(status?.exitCode === undefined ? {} : { exitCode: status.exitCode }),
          // Still behind (an event lost with a master's stream): the state read ends it.
          history: historyState(taskId) === TaskStates.name(t.state)
            ? histories.get(taskId) ?? []
            : [...histories.get(taskId) ?? [], status === undefined || status.reason === v1.TaskStatus_Reason.UNSPECIFIED ? TaskStates.name(t.state) : `${TaskStates.name(t.state)}(${reasonName(status.reason)})`]
        }
      })
      .sort((a, b) => (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0))
    for (const v of violations) if (!semantic.some((line) => line.endsWith(`violation: ${v}`))) semantic.push(`final: violation: ${v}`)
    // Hashed: whether each task ended or still runs, not how it ended. Under injected faults a
    // task's exit (FINISHED, or FAILED when a fault caught it mid-run) depends on real timing, which
    // the seed does not fix; the invariants above are what a run must get right. `outcome` keeps
    // the exact states for the report.
    for (const [taskId, s] of [...master].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      semantic.push(`outcome: ${taskId} ${TaskStates.isTerminal(s) ? "ended" : TaskStates.name(s)}`)
    }
    return {
      seed: options.seed,
      steps: report,
      violations,
      ok: violations.length === 0,
      outcome,
      tasks,
      events: semantic,
      hash: createHash("sha256").update(semantic.join("\n")).digest("hex"),
      clusterLog: cluster.events.format()
    }
  }).pipe(
    // Steps and settling take real time, also when the caller runs on a TestClock (`it.effect`).
    Effect.provideService(Clock.Clock, VirtualClock.liveClock)
  )

const reasonNames = new Map<number, string>(Object.entries(v1.TaskStatus_Reason).map(([name, value]) => [value, name]))
const reasonName = (reason: v1.TaskStatus_Reason): string => reasonNames.get(reason) ?? `REASON(${reason})`
const sourceNames = new Map<number, string>(Object.entries(v1.TaskStatus_Source).map(([name, value]) => [value, name]))
const sourceName = (source: v1.TaskStatus_Source): string => sourceNames.get(source) ?? `SOURCE(${source})`

/**
 * The tasks RUNNING now, at the master or in the framework's durable record (sorted); undefined
 * when the master does not answer (nothing can be said about the step then).
 */
const runningTasks = (operator: Operator.Operator, store: DurableStore) =>
  Effect.map(Effect.option(operator.state), (state) => {
    if (state._tag === "None") return undefined
    const ids = new Set(state.value.tasks.filter((t) => t.state === v1.TaskState.RUNNING).map((t) => t.info?.taskId ?? ""))
    for (const [taskId, recorded] of store.tasks()) if (recorded === v1.TaskState.RUNNING) ids.add(taskId)
    ids.delete("")
    return [...ids].sort()
  })

/** States a task RUNNING before a step may be in after it (terminal states are checked apart). */
const stillAccounted = new Set<v1.TaskState>([v1.TaskState.RUNNING, v1.TaskState.UNREACHABLE, v1.TaskState.KILLING])

/** Tasks RUNNING before a step that the master, once the step settled, no longer accounts for. */
const vanished = (before: ReadonlyArray<string>, state: v1.GetStateResponse, step: number, action: string) => {
  const master = new Map(state.tasks.map((t) => [t.info?.taskId ?? "", t.state]))
  const out: Array<readonly [string, string]> = []
  for (const taskId of before) {
    const now = master.get(taskId)
    if (now === undefined || now === v1.TaskState.UNKNOWN) {
      out.push([taskId, `task lost: ${taskId} was RUNNING before step ${step} (${action}) and the master no longer knows it`])
    } else if (!stillAccounted.has(now) && !TaskStates.isTerminal(now)) {
      out.push([taskId, `task lost: ${taskId} was RUNNING before step ${step} (${action}) and is ${TaskStates.name(now)} after it`])
    }
  }
  return out
}

/** The framework's record and the master agree on every task either knows. */
const agrees = (state: v1.GetStateResponse, store: DurableStore) => {
  const master = new Map(state.tasks.map((t) => [t.info?.taskId ?? "", t.state]))
  for (const [taskId, actual] of master) {
    const recorded = store.task(taskId)
    if (recorded === undefined ? !TaskStates.isTerminal(actual) : recorded !== actual) return false
  }
  for (const taskId of store.tasks().keys()) if (!master.has(taskId)) return false
  return true
}
