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
 * Reports tasks/s, total seconds, Accept→FINISHED latency (p50/p99/max), Accept calls, and
 * whether the cluster was left clean (no pending updates, nothing allocated).
 *
 * N = 300 always; N = 1000 too when 300 tasks suggest it finishes in under ~2 minutes.
 *
 * Usage: node bench/launch-throughput.mjs [--tasks 300,1000] [--max-seconds 120]
 */
import { Resources, TaskStates, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Duration, Effect } from "effect"
import { monitorEventLoopDelay } from "node:perf_hooks"
import * as Framework from "./lib/framework.mjs"
import { quietLogging } from "./lib/logging.mjs"
import * as Proc from "./lib/proc.mjs"

const args = process.argv.slice(2)
const arg = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback)
const sizes = arg("--tasks", "300,1000").split(",").map(Number)
/** A larger run is attempted only if the previous rate projects it under this many seconds. */
const maxSeconds = Number(arg("--max-seconds", "120"))
/** Refusal when an offer has room for no waiting task (see the note at `fill`). */
const declineRefuseSeconds = Number(arg("--decline-refuse-seconds", "0"))
const AGENTS = 3
const AGENT_RESOURCES = "cpus:2;mem:2048;disk:4096;ports:[31000-31999]"
const TASK_CPUS = 0.1
const TASK_MEM = 32
/** Hard bound of one run (cluster start to clean state); the whole script has its own below. */
const RUN_TIMEOUT_MS = 180_000
const DEADLINE_MS = 8 * 60 * 1000

const watchdog = setTimeout(() => {
  // The in-process cluster dies with this process; its temp dir may be left behind in this case.
  process.stdout.write(JSON.stringify({ benchmark: "launch-throughput", error: "deadline passed" }) + "\n")
  process.exit(1)
}, DEADLINE_MS)

const taskInfo = (id) =>
  v1.TaskInfo.create({
    name: id,
    taskId: id,
    resources: [Resources.scalar("cpus", TASK_CPUS), Resources.scalar("mem", TASK_MEM)],
    command: { shell: true, value: "true" }
  })

const heapMB = () => {
  globalThis.gc?.()
  return Proc.round(process.memoryUsage().heapUsed / 1024 / 1024)
}

/** One run: a fresh cluster, N tasks, figures. */
const runOnce = (n) =>
  Effect.gen(function*() {
    const problems = []
    const heapBeforeMB = heapMB()
    const cluster = yield* TestCluster.make({ agents: AGENTS, agentResources: AGENT_RESOURCES })

    const waiting = Array.from({ length: n }, (_, i) => taskInfo(`true-${n}-${i}`))
    const ids = waiting.map((t) => t.taskId)
    const acceptedAt = new Map()
    const finishedAt = new Map()
    const seen = new Set()
    const stats = { acceptCalls: 0, acceptFailures: 0, acceptMs: [], declines: 0, duplicateUpdates: 0, notFinished: {} }

    /** Fills one offer with as many waiting tasks as fit. */
    const fill = (framework, offer) =>
      Effect.gen(function*() {
        const batch = []
        let left = offer.resources
        while (waiting.length > 0 && Resources.contains(left, waiting[0].resources)) {
          left = Resources.subtract(left, waiting[0].resources)
          batch.push(waiting.shift())
        }
        if (batch.length === 0) {
          // Nothing left to launch (or nothing fits): keep the agent away for a while.
          stats.declines++
          return yield* framework.session.decline([offer.offerId], { refuseSeconds: declineRefuseSeconds }).pipe(Effect.ignore)
        }
        const at = Date.now()
        for (const task of batch) acceptedAt.set(task.taskId, at)
        stats.acceptCalls++
        const result = yield* Effect.result(
          framework.session.accept([offer.offerId], [Framework.launch(batch)], { refuseSeconds: 0 })
        )
        stats.acceptMs.push(Date.now() - at)
        if (result._tag === "Failure" || result.success.launchedTaskIds.length !== batch.length) {
          // Put them back and ask for offers again (declined agents are filtered otherwise).
          stats.acceptFailures++
          if (problems.length < 10) problems.push(`Accept failed: ${result.failure?.message ?? JSON.stringify(result.success)}`)
          waiting.unshift(...batch)
          yield* framework.session.revive().pipe(Effect.ignore)
        }
      })

    let framework
    framework = yield* Framework.open(cluster.master, {
      name: `bench-throughput-${n}`,
      onOffers: (offers) => Effect.forEach(offers, (offer) => fill(framework, offer), { concurrency: "unbounded", discard: true }),
      onUpdate: (status, now) => {
        const key = `${status.taskId}/${status.state}/${status.source}`
        if (seen.has(key)) stats.duplicateUpdates++
        seen.add(key)
        if (status.state === v1.TaskState.FINISHED) finishedAt.set(status.taskId, now)
        else if (TaskStates.isTerminal(status.state)) {
          const name = TaskStates.name(status.state)
          stats.notFinished[name] = (stats.notFinished[name] ?? 0) + 1
        }
      }
    })

    const loop = monitorEventLoopDelay({ resolution: 10 })
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
    const totalSeconds = (lastFinished - firstAccept) / 1000
    return {
      tasks: n,
      finished: finishedAt.size,
      totalSeconds: Proc.round(totalSeconds, 2),
      tasksPerSecond: Proc.round(finishedAt.size / totalSeconds, 1),
      acceptToFinishedMs: {
        p50: Proc.percentile(latencies, 50),
        p99: Proc.percentile(latencies, 99),
        max: Math.max(...latencies)
      },
      acceptCalls: stats.acceptCalls,
      tasksPerAccept: Proc.round(n / stats.acceptCalls, 1),
      acceptRpcMs: { p50: Proc.percentile(stats.acceptMs, 50), p99: Proc.percentile(stats.acceptMs, 99) },
      acceptFailures: stats.acceptFailures,
      offersReceived: framework.counts.offers,
      offerEvents: framework.counts.offerEvents,
      declines: stats.declines,
      updatesReceived: framework.counts.updates,
      duplicateUpdates: stats.duplicateUpdates,
      acknowledged: framework.counts.acked,
      drainToNoPendingUpdatesMs: drainMs,
      agentPendingUpdatesAtEnd: pending,
      eventLoopDelayMs: { p50: Proc.round(loop.percentile(50) / 1e6), p99: Proc.round(loop.percentile(99) / 1e6), max: Proc.round(loop.max / 1e6) },
      masterTasksInState: state.tasks.length,
      heapUsedMB: { beforeCluster: heapBeforeMB, afterRun: heapAfterMB, gcForced: globalThis.gc !== undefined },
      problems
    }
  }).pipe(
    Effect.scoped,
    Effect.timeoutOrElse({
      duration: Duration.millis(RUN_TIMEOUT_MS),
      orElse: () => Effect.succeed({ tasks: n, error: `did not finish within ${RUN_TIMEOUT_MS / 1000} s` })
    })
  )

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
    const result = await Effect.runPromise(runOnce(n).pipe(quietLogging(logs)))
    runs.push({ ...result, wallSecondsWithClusterStartAndStop: Proc.round((Date.now() - wallStartedAt) / 1000, 1) })
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
      accept: "fill every offer, refuseSeconds 0",
      acknowledge: "one SchedulerSession.acknowledge per update, concurrently (SDK batching as is)"
    },
    runs,
    clusterWarnings: logs
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
process.stdout.write(JSON.stringify(result, null, 2) + "\n")
setTimeout(() => {
  process.stderr.write(`launch-throughput: still alive 3 s after cleanup: ${process.getActiveResourcesInfo().join(", ")}\n`)
  process.exit(process.exitCode ?? 0)
}, 3000).unref()
