/**
 * Launch-to-FINISHED throughput on an in-process TestCluster (master and 3 agents in this process,
 * real gRPC on 127.0.0.1, real `/bin/sh -c true` processes).
 *
 * The framework launches N tasks as fast as offers allow: every offer is filled with as many
 * waiting tasks as fit (Accept with refuseSeconds 0, so the leftover comes back in the next
 * allocation round instead of being refused for the default 5 s), and every update is
 * acknowledged individually, leaving the grouping to the SDK's acknowledgement batcher. Tasks are
 * small (0.1 cpus, 32 MB) on default-sized agents (2 cpus each), so at most 60 run at once and the
 * figure includes the offer cycle: a task's resources must come back before the next one starts.
 *
 * Offers that fit no waiting task (the master also offers "crumbs" such as memory without cpus)
 * are declined with refuseSeconds 0 while tasks wait, because the master's refusal filter covers
 * the whole agent: a longer refusal would also hide the cpus freed on that agent meanwhile. Once
 * nothing waits, offers are declined for 30 s.
 *
 * Reports tasks/s, total seconds, Accept→FINISHED latency (p50/p99/max) and where it goes
 * (Accept→STARTING→RUNNING→FINISHED as the framework saw them), Accept and Decline calls, and
 * whether the cluster was left clean (no pending updates, nothing allocated). A comparison run
 * uses the defaults a naive framework gets (no filters: 5 s refusals) to show their cost.
 *
 * N = 300 always; N = 1000 too when 300 tasks suggest it finishes in under ~2 minutes.
 *
 * Usage: node bench/launch-throughput.mjs [--tasks 300,1000] [--max-seconds 120]
 */
import { Resources, TaskStates, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Duration, Effect, Fiber } from "effect"
import { monitorEventLoopDelay } from "node:perf_hooks"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import * as Framework from "./lib/framework.mjs"
import { quietLogging } from "./lib/logging.mjs"
import * as Proc from "./lib/proc.mjs"

const args = process.argv.slice(2)
const arg = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback)
const sizes = arg("--tasks", "300,1000").split(",").map(Number)
/** A larger run is attempted only if the previous rate projects it under this many seconds. */
const maxSeconds = Number(arg("--max-seconds", "120"))
/** Tasks of the comparison run with default filters (0 to skip it). */
const compareTasks = Number(arg("--compare-defaults", "300"))
const AGENTS = 3
const AGENT_RESOURCES = "cpus:2;mem:2048;disk:4096;ports:[31000-31999]"
const TASK_CPUS = 0.1
const TASK_MEM = 32
/** Hard bound of one run (cluster start to clean state); the whole script has its own below. */
const RUN_TIMEOUT_MS = 180_000
const LOOP_RESOLUTION_MS = 10
const DEADLINE_MS = 8 * 60 * 1000

/** The run in progress: interrupting it closes its scope, which stops its cluster and removes its dir. */
let currentRun
/** Stops the run in progress, waiting at most 10 s for its cluster to shut down. */
const stopCurrentRun = () =>
  currentRun === undefined
    ? Promise.resolve()
    : Proc.within(Effect.runPromise(Fiber.interrupt(currentRun)).catch(() => {}), 10_000)

const watchdog = setTimeout(async () => {
  await stopCurrentRun()
  process.stdout.write(JSON.stringify({ benchmark: "launch-throughput", error: "deadline passed" }) + "\n")
  process.exit(1)
}, DEADLINE_MS)

// Stopped from outside (Ctrl-C, or run.mjs's timeout): shut the cluster down first.
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    await stopCurrentRun()
    process.exit(130)
  })
}

const taskInfo = (id) =>
  v1.TaskInfo.create({
    name: id,
    taskId: id,
    resources: [Resources.scalar("cpus", TASK_CPUS), Resources.scalar("mem", TASK_MEM)],
    command: { shell: true, value: "true" }
  })

// A forced GC makes heap figures comparable; without --expose-gc, turn it on from here.
v8.setFlagsFromString("--expose-gc")
const gc = globalThis.gc ?? vm.runInNewContext("gc")
const heapMB = () => {
  gc()
  return Proc.round(process.memoryUsage().heapUsed / 1024 / 1024)
}

/**
 * One run: a fresh cluster, N tasks, figures. `filters` is the refusal policy: "tuned" as
 * described at the top, or "defaults" (no filters on Accept and Decline: 5 s refusals).
 */
const runOnce = (n, filters) =>
  Effect.gen(function*() {
    const problems = []
    const heapBeforeMB = heapMB()
    // No fault proxy (on by default): the figure is the cluster's, not the proxy's extra hop.
    const cluster = yield* TestCluster.make({ agents: AGENTS, agentResources: AGENT_RESOURCES, proxy: false })

    const waiting = Array.from({ length: n }, (_, i) => taskInfo(`true-${n}-${i}`))
    const ids = waiting.map((t) => t.taskId)
    const acceptedAt = new Map()
    /** state name -> (taskId -> ms when the framework received it) */
    const receivedAt = { STARTING: new Map(), RUNNING: new Map(), FINISHED: new Map() }
    const finishedAt = receivedAt.FINISHED
    const seen = new Set()
    const stats = { declinedExample: undefined, acceptCalls: 0, acceptFailures: 0, acceptMs: [], declines: 0, duplicateUpdates: 0, notFinished: {} }

    /** Fills one offer with as many waiting tasks as fit. */
    const fill = (session, offer) =>
      Effect.gen(function*() {
        const batch = []
        let left = offer.resources
        while (waiting.length > 0 && Resources.contains(left, waiting[0].resources)) {
          left = Resources.subtract(left, waiting[0].resources)
          batch.push(waiting.shift())
        }
        if (batch.length === 0) {
          // Nothing fits: while tasks wait, refuse for 0 s (the filter would hide the whole
          // agent); once nothing waits, keep the agent away for a while.
          stats.declines++
          stats.declinedExample ??= Resources.format(offer.resources)
          const refusal = filters === "defaults" ? undefined : { refuseSeconds: waiting.length > 0 ? 0 : 30 }
          return yield* session.decline([offer.offerId], refusal).pipe(Effect.ignore)
        }
        const at = Date.now()
        for (const task of batch) acceptedAt.set(task.taskId, at)
        stats.acceptCalls++
        const result = yield* Effect.result(
          session.accept([offer.offerId], [Framework.launch(batch)], filters === "defaults" ? undefined : { refuseSeconds: 0 })
        )
        stats.acceptMs.push(Date.now() - at)
        if (result._tag === "Failure" || result.success.launchedTaskIds.length !== batch.length) {
          // Put them back and ask for offers again (declined agents are filtered otherwise).
          stats.acceptFailures++
          if (problems.length < 10) problems.push(`Accept failed: ${result.failure?.message ?? JSON.stringify(result.success)}`)
          waiting.unshift(...batch)
          yield* session.revive().pipe(Effect.ignore)
        }
      })

    const framework = yield* Framework.open(cluster.master, {
      name: `bench-throughput-${n}`,
      onOffers: (offers, session) => Effect.forEach(offers, (offer) => fill(session, offer), { concurrency: "unbounded", discard: true }),
      onUpdate: (status, now) => {
        const key = `${status.taskId}/${status.state}/${status.source}`
        if (seen.has(key)) stats.duplicateUpdates++
        seen.add(key)
        const name = TaskStates.name(status.state)
        if (receivedAt[name] !== undefined && !receivedAt[name].has(status.taskId)) receivedAt[name].set(status.taskId, now)
        if (status.state !== v1.TaskState.FINISHED && TaskStates.isTerminal(status.state)) {
          stats.notFinished[name] = (stats.notFinished[name] ?? 0) + 1
        }
      }
    })

    // How late this process's timers fire while the run is on: master, agents and framework share it.
    const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS })
    loop.enable()
    yield* framework.until(() => framework.allIn(ids, TaskStates.isTerminal))
    loop.disable()
    const firstAccept = Math.min(...acceptedAt.values())
    const lastFinished = Math.max(...finishedAt.values())

    // The cluster should be left clean: every update acknowledged and forgotten by the agents,
    // every task's resources back with its agent.
    const drainStartedAt = Date.now()
    const drained = yield* Effect.gen(function*() {
      while (
        framework.counts.acked + framework.counts.ackFailures < framework.counts.withUuid ||
        cluster.agents.some((a) => a.pendingUpdates() > 0)
      ) yield* Effect.sleep(20)
      return true
    }).pipe(Effect.timeoutOrElse({ duration: Duration.seconds(20), orElse: () => Effect.succeed(false) }))
    const drainMs = Date.now() - drainStartedAt
    const pending = cluster.agents.map((a) => a.pendingUpdates())
    if (!drained) problems.push(`updates still unacknowledged 20 s after the last FINISHED: ${JSON.stringify(pending)}`)
    const state = yield* cluster.operator.state
    const allocatedCpus = state.agents.map((a) => Proc.round(Resources.sumScalar(a.allocated, "cpus"), 3))
    if (allocatedCpus.some((c) => c !== 0)) problems.push(`cpus still allocated on agents: ${JSON.stringify(allocatedCpus)}`)
    if (framework.counts.ackFailures > 0) problems.push(`${framework.counts.ackFailures} acknowledgements failed: ${framework.ackFailures.join("; ")}`)
    if (Object.keys(stats.notFinished).length > 0) problems.push(`tasks not FINISHED: ${JSON.stringify(stats.notFinished)}`)
    const heapAfterMB = heapMB()

    const latencies = ids.filter((id) => finishedAt.has(id)).map((id) => finishedAt.get(id) - acceptedAt.get(id))
    /** p50 of the time from `from` (Accept or a state) to `to`, over the tasks that saw both. */
    const stage = (from, to) => {
      const start = from === "ACCEPT" ? acceptedAt : receivedAt[from]
      return Proc.percentile(ids.filter((id) => start.has(id) && receivedAt[to].has(id)).map((id) => receivedAt[to].get(id) - start.get(id)), 50)
    }
    const totalSeconds = (lastFinished - firstAccept) / 1000
    return {
      tasks: n,
      filters,
      finished: finishedAt.size,
      totalSeconds: Proc.round(totalSeconds, 2),
      tasksPerSecond: Proc.round(finishedAt.size / totalSeconds, 1),
      acceptToFinishedMs: {
        p50: Proc.percentile(latencies, 50),
        p99: Proc.percentile(latencies, 99),
        max: Math.max(...latencies)
      },
      stagesP50Ms: {
        acceptToStarting: stage("ACCEPT", "STARTING"),
        startingToRunning: stage("STARTING", "RUNNING"),
        runningToFinished: stage("RUNNING", "FINISHED")
      },
      acceptCalls: stats.acceptCalls,
      tasksPerAccept: Proc.round(n / stats.acceptCalls, 1),
      acceptRpcMs: { p50: Proc.percentile(stats.acceptMs, 50), p99: Proc.percentile(stats.acceptMs, 99) },
      acceptFailures: stats.acceptFailures,
      offersReceived: framework.counts.offers,
      offerEvents: framework.counts.offerEvents,
      declines: stats.declines,
      declinesPerSecond: Proc.round(stats.declines / totalSeconds, 1),
      declinedOfferExample: stats.declinedExample,
      updatesReceived: framework.counts.updates,
      duplicateUpdates: stats.duplicateUpdates,
      acknowledged: framework.counts.acked,
      drainToNoPendingUpdatesMs: drainMs,
      agentPendingUpdatesAtEnd: pending,
      // Lateness beyond the sampling interval itself.
      eventLoopLagMs: {
        p50: Proc.round(Math.max(0, loop.percentile(50) / 1e6 - LOOP_RESOLUTION_MS)),
        p99: Proc.round(Math.max(0, loop.percentile(99) / 1e6 - LOOP_RESOLUTION_MS)),
        max: Proc.round(Math.max(0, loop.max / 1e6 - LOOP_RESOLUTION_MS))
      },
      masterTasksInState: state.tasks.length,
      // After a forced GC, with the cluster still up (the master keeps finished tasks in its state).
      heapUsedMB: { beforeCluster: heapBeforeMB, afterRun: heapAfterMB, perTaskKB: Proc.round(((heapAfterMB - heapBeforeMB) * 1024) / n) },
      problems
    }
  }).pipe(
    Effect.scoped,
    Effect.timeoutOrElse({
      duration: Duration.millis(RUN_TIMEOUT_MS),
      orElse: () => Effect.succeed({ tasks: n, error: `did not finish within ${RUN_TIMEOUT_MS / 1000} s` })
    })
  )

const runInterruptibly = async (effect) => {
  currentRun = Effect.runFork(effect)
  try {
    return await Effect.runPromise(Fiber.join(currentRun))
  } finally {
    currentRun = undefined
  }
}

const main = async () => {
  const runs = []
  const logs = []
  for (const n of sizes) {
    const previous = runs.at(-1)
    if (previous?.tasksPerSecond !== undefined && n / previous.tasksPerSecond > maxSeconds) {
      runs.push({ tasks: n, skipped: `projected ${Math.round(n / previous.tasksPerSecond)} s > ${maxSeconds} s at ${previous.tasksPerSecond} tasks/s` })
      continue
    }
    if (previous?.error !== undefined) {
      runs.push({ tasks: n, skipped: "the previous run failed" })
      continue
    }
    const wallStartedAt = Date.now()
    const result = await runInterruptibly(runOnce(n, "tuned").pipe(quietLogging(logs)))
    runs.push({ ...result, wallSecondsWithClusterStartAndStop: Proc.round((Date.now() - wallStartedAt) / 1000, 1) })
  }
  let withDefaultFilters
  if (compareTasks > 0) {
    const wallStartedAt = Date.now()
    const result = await runInterruptibly(runOnce(compareTasks, "defaults").pipe(quietLogging(logs)))
    withDefaultFilters = { ...result, wallSecondsWithClusterStartAndStop: Proc.round((Date.now() - wallStartedAt) / 1000, 1) }
  }
  return {
    benchmark: "launch-throughput",
    setup: {
      cluster: "TestCluster, in process",
      agents: AGENTS,
      agentResources: AGENT_RESOURCES,
      task: { command: "true (shell)", cpus: TASK_CPUS, memMB: TASK_MEM },
      concurrentTaskSlots: AGENTS * Math.floor(2 / TASK_CPUS + 1e-9),
      masterConfig: "defaults (allocation interval 1 s, plus a round ~5 ms after resources are freed)",
      accept: "fill every offer, refuseSeconds 0; decline what fits nothing with 0 s while tasks wait, else 30 s",
      acknowledge: "one SchedulerSession.acknowledge per update, concurrently (SDK batching as is)"
    },
    runs,
    withDefaultFilters,
    // "agent disconnected" is expected: each run stops its cluster.
    clusterWarnings: logs.filter((l) => !/agent disconnected/.test(l))
  }
}

let result
try {
  result = await main()
} catch (error) {
  result = { benchmark: "launch-throughput", error: String(error?.stack ?? error) }
  process.exitCode = 1
} finally {
  clearTimeout(watchdog)
}
process.stdout.write(JSON.stringify(result) + "\n")
setTimeout(() => {
  process.stderr.write(`launch-throughput: still alive 3 s after cleanup: ${process.getActiveResourcesInfo().join(", ")}\n`)
  process.exit(process.exitCode ?? 0)
}, 3000).unref()
