/**
 * Per-task memory overhead of the agent.
 *
 * The agent runs each task through the built-in command executor as a fiber inside the agent
 * process, so a task should cost the agent a few KB of bookkeeping, not a Node process. This
 * measures that: a master in this process, ONE `berth agent` as a child process (so its RSS can
 * be read from /proc/<pid>/status), and a framework that launches `exec sleep 600` tasks in steps
 * (100, then 200 in total), kills them all, then runs one more launch-and-kill cycle of the same
 * size to tell per-task leftovers from one-off warm-up. After each step, once every task is
 * RUNNING and every update is acknowledged, the agent's RSS is sampled a few times and the median
 * taken. RSS also counts
 * garbage not collected yet, so the agent runs with a small preloaded probe (lib/agent-probe.mjs)
 * that forces a GC and reports the live heap before each RSS sampling: the heap figure shows what
 * a task really keeps, and the RSS figures all start from a collected heap.
 *
 * Prints one JSON object on stdout. Budget (from the issue): <= 5 MB of agent memory per task,
 * beyond the task's own process.
 *
 * Usage: node bench/task-overhead.mjs [--steps 100,200] [--cycles 1]
 */
import { Master } from "@berth/cluster-core"
import { Resources, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Duration, Effect, Exit, Layer, Result, Scope } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Framework from "./lib/framework.mjs"
import { quietLogging } from "./lib/logging.mjs"
import * as Proc from "./lib/proc.mjs"

const args = process.argv.slice(2)
const stepsArg = args.includes("--steps") ? args[args.indexOf("--steps") + 1] : "100,200"
/** Cumulative task counts: each step launches the difference to the previous one. */
const steps = stepsArg.split(",").map(Number)
/** Extra launch-and-kill cycles after the steps (see below). */
const cycles = Math.max(1, Number(args.includes("--cycles") ? args[args.indexOf("--cycles") + 1] : "1"))
const AGENT_RESOURCES = "cpus:64;mem:65536;disk:65536"
const TASK_CPUS = 0.01
const TASK_MEM = 16
const TASK_COMMAND = "exec sleep 600"
const BUDGET_KB_PER_TASK = 5 * 1024
/** Time for the agent's heap to settle after a burst, then how to sample it. */
const SETTLE_MS = 3000
const SAMPLES = 7
const SAMPLE_EVERY_MS = 500
/** The whole benchmark must end by itself: past this, everything is killed and it fails. */
const DEADLINE_MS = 4 * 60 * 1000

const probe = fileURLToPath(new URL("./lib/agent-probe.mjs", import.meta.url))
const berth = path.join(path.dirname(fileURLToPath(import.meta.resolve("@berth/cluster-core/package.json"))), "dist/bin/berth.js")
const problems = []
const clusterLogs = []
/** The agent's own log lines (its stdout and stderr). */
const agentLog = []

// ------------------------------------------------------------------ resources we own

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "berth-bench-overhead-"))
const scope = Effect.runSync(Scope.make())
/** Runs an Effect in the benchmark's scope, with cluster logs kept off stdout. */
const run = (effect) => Effect.runPromise(effect.pipe(Scope.provide(scope), quietLogging(clusterLogs)))
let agent
/** Every task pid we saw, so a leftover can be reported (and killed) by pid. */
const taskPids = new Set()

const killLeftovers = () => {
  const left = [...taskPids].filter(Proc.alive)
  for (const pid of left) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // Already gone.
    }
  }
  return left
}

/**
 * Stops everything we started. The agent gets SIGTERM first, because it then kills its tasks'
 * process groups; if it does not exit in time it is SIGKILLed and the task pids we know of
 * (recorded just before) are killed one by one.
 */
const cleanup = async () => {
  if (agent !== undefined && agent.exitCode === null && agent.signalCode === null) {
    for (const pid of Proc.descendants(agent.pid)) taskPids.add(pid)
    const exited = new Promise((resolve) => agent.once("exit", resolve))
    agent.kill("SIGTERM")
    if ((await Proc.within(exited.then(() => true), 5000)) === undefined) agent.kill("SIGKILL")
  }
  killLeftovers()
  await Effect.runPromise(Scope.close(scope, Exit.void)).catch(() => {})
  fs.rmSync(tmp, { recursive: true, force: true })
}

const watchdog = setTimeout(async () => {
  process.stderr.write(`task-overhead: deadline of ${DEADLINE_MS / 1000}s passed; cleaning up\n`)
  await cleanup()
  process.stdout.write(JSON.stringify({ benchmark: "task-overhead", error: "deadline passed", problems }) + "\n")
  process.exit(1)
}, DEADLINE_MS)

// Stopped from outside (Ctrl-C, or run.mjs's timeout): take the agent and its tasks down first.
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    clearTimeout(watchdog)
    await cleanup()
    process.exit(130)
  })
}

// ------------------------------------------------------------------ helpers

/**
 * Live heap of the agent after a forced GC, the heap V8 keeps reserved, and the memory held outside
 * the JS heap (buffers), in KB, from the preloaded probe (see agent-probe.mjs).
 */
let probeWaiter
const onProbeLine = (line) => {
  if (!line.startsWith("BENCH_PROBE ")) return false
  probeWaiter?.(JSON.parse(line.slice("BENCH_PROBE ".length)))
  probeWaiter = undefined
  return true
}
const heapAfterGcKB = async () => {
  const reply = new Promise((resolve) => (probeWaiter = resolve))
  agent.kill("SIGUSR2")
  const figures = await Proc.within(reply, 5000)
  if (figures === undefined) problems.push("the agent's heap probe did not answer within 5 s")
  return figures === undefined
    ? {}
    : {
      heapUsedKB: Math.round(figures.heapUsed / 1024),
      heapTotalKB: Math.round(figures.heapTotal / 1024),
      externalKB: Math.round(figures.external / 1024)
    }
}

/**
 * The agent's figures once it has settled: its live heap after a forced GC, then the median of a
 * few RSS samples. The GC comes first at every measurement (the idle one included), so the RSS
 * figures all describe an agent without a backlog of garbage and compare like with like.
 */
const sampleAgent = async () => {
  await Proc.sleep(SETTLE_MS)
  const memory = await heapAfterGcKB()
  await Proc.sleep(1000)
  const rss = []
  for (let i = 0; i < SAMPLES; i++) {
    rss.push(Proc.rssKB(agent.pid))
    await Proc.sleep(SAMPLE_EVERY_MS)
  }
  return {
    rssKB: Proc.median(rss),
    rssSamplesKB: rss,
    openFds: Proc.openFds(agent.pid),
    threads: Proc.threads(agent.pid),
    heapAfterGcKB: memory.heapUsedKB,
    heapTotalKB: memory.heapTotalKB,
    externalKB: memory.externalKB
  }
}

/**
 * What runs under the agent: task processes by name, and how many of them are Node. A Node
 * process is recognised by its executable, not its comm: Node 24 names its main thread
 * "MainThread", so `comm` of a Node process is not "node".
 */
const processesUnderAgent = () => {
  const pids = Proc.descendants(agent.pid)
  const byComm = {}
  let node = 0
  for (const pid of pids) {
    const name = Proc.comm(pid) ?? "?"
    byComm[name] = (byComm[name] ?? 0) + 1
    if (Proc.isNode(pid)) node++
  }
  return { pids, byComm, node }
}

const taskInfo = (id) =>
  v1.TaskInfo.create({
    name: id,
    taskId: id,
    resources: [Resources.scalar("cpus", TASK_CPUS), Resources.scalar("mem", TASK_MEM)],
    command: { shell: true, value: TASK_COMMAND }
  })

const withTimeout = (what, ms) => (effect) =>
  effect.pipe(
    Effect.timeoutOrElse({ duration: Duration.millis(ms), orElse: () => Effect.fail(new Error(`timed out after ${ms} ms: ${what}`)) })
  )

// ------------------------------------------------------------------ the benchmark

const main = async () => {
  // The store must live as long as the master, so it is built in the benchmark's scope: with
  // `Effect.provide(StateStore.layerMemory)` around `Master.start` alone, the store is closed as
  // soon as start returns and every later registration fails ("the store was closed").
  const master = await run(
    Effect.gen(function*() {
      const store = yield* Layer.build(StateStore.layerMemory)
      return yield* Master.start({ port: 0 }).pipe(Effect.provide(store))
    })
  )

  // The agent as a real process. Its logs (logfmt, one line each) are kept to report warnings.
  agentLog.length = 0
  agent = spawn(
    process.execPath,
    ["--expose-gc", "--import", probe, berth, "agent", "--master", master.endpoint, "--work-dir", path.join(tmp, "agent"), "--resources", AGENT_RESOURCES, "--kill-tasks-on-stop",
      "--hostname", "bench-agent", "--host", "127.0.0.1", "--port", "0"],
    { stdio: ["ignore", "pipe", "pipe"] }
  )
  let registered
  const registeredPromise = new Promise((resolve) => (registered = resolve))
  for (const stream of [agent.stdout, agent.stderr]) {
    let buffer = ""
    stream.setEncoding("utf8")
    stream.on("data", (chunk) => {
      buffer += chunk
      let newline
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline)
        buffer = buffer.slice(newline + 1)
        if (onProbeLine(line)) continue
        agentLog.push(line)
        if (/registered with/.test(line)) registered()
      }
    })
  }
  const agentExit = new Promise((resolve) => agent.once("exit", (code, signal) => resolve({ code, signal })))
  if ((await Proc.within(registeredPromise.then(() => true), 20_000)) === undefined) {
    throw new Error("the agent did not register within 20 s")
  }

  // A freshly started Node process is still warming up: measure the idle agent after it settles.
  const baseline = await sampleAgent()

  const framework = await run(Framework.open(master.endpoint, { name: "bench-task-overhead" }))

  /** Waits until the agent has had every update acknowledged, so it holds no pending ones. */
  const acknowledged = (what) =>
    run(
      Effect.gen(function*() {
        while (framework.counts.acked + framework.counts.ackFailures < framework.counts.withUuid) yield* Effect.sleep(20)
      }).pipe(withTimeout(`acknowledgements (${what})`, 30_000))
    )

  /** Launches `ids` in one Accept and waits until all of them are RUNNING; returns the ms it took. */
  const launchAll = async (ids) => {
    const startedAt = Date.now()
    // All of a step goes out in one Accept, on an offer that holds it. Right after kills, offers
    // may hold only what was freed so far: those are declined for 0.2 s so that the master offers
    // the agent again, whole, a moment later. The leftover of the Accept comes back after 1 s.
    const tasks = ids.map(taskInfo)
    const needed = Resources.add([], tasks.flatMap((t) => t.resources))
    await run(
      Effect.gen(function*() {
        while (true) {
          const offer = yield* framework.nextOffer
          if (!Resources.contains(offer.resources, needed)) {
            yield* framework.session.decline([offer.offerId], { refuseSeconds: 0.2 })
            continue
          }
          const accepted = yield* Effect.result(
            framework.session.accept([offer.offerId], [Framework.launch(tasks)], { refuseSeconds: 1 })
          )
          if (Result.isSuccess(accepted)) return
          problems.push(`Accept failed, retrying on the next offer: ${accepted.failure?.message ?? accepted.failure}`)
        }
      }).pipe(withTimeout("an offer that fits the step", 30_000))
    )
    await run(
      framework.until(() => framework.allIn(ids, (s) => s === v1.TaskState.RUNNING || framework.isTerminal(s))).pipe(
        withTimeout(`${ids.length} tasks RUNNING`, 60_000)
      )
    )
    const tookMs = Date.now() - startedAt
    const notRunning = ids.filter((id) => framework.latest.get(id).state !== v1.TaskState.RUNNING)
    if (notRunning.length > 0) {
      problems.push(`${notRunning.length} tasks ended instead of running, e.g. ${JSON.stringify(framework.latest.get(notRunning[0]))}`)
    }
    await acknowledged("launch")
    return tookMs
  }

  /** Kills `ids` through the scheduler API and waits until all are terminal; returns the ms it took. */
  const killAll = async (ids) => {
    for (const pid of Proc.descendants(agent.pid)) taskPids.add(pid)
    const startedAt = Date.now()
    await run(
      Effect.forEach(ids, (id) => framework.session.kill(id), { concurrency: 16, discard: true }).pipe(
        Effect.andThen(framework.until(() => framework.allIn(ids, framework.isTerminal))),
        withTimeout("every task KILLED", 60_000)
      )
    )
    const tookMs = Date.now() - startedAt
    await acknowledged("kill")
    const notKilled = ids.filter((id) => framework.latest.get(id).state !== v1.TaskState.KILLED)
    if (notKilled.length > 0) problems.push(`${notKilled.length} tasks did not end KILLED`)
    return tookMs
  }

  const results = []
  const allIds = []
  for (const target of steps) {
    const ids = Array.from({ length: target - allIds.length }, (_, i) => `sleep-${allIds.length + i}`)
    allIds.push(...ids)
    const runningAfterMs = await launchAll(ids)
    const sample = await sampleAgent()
    const procs = processesUnderAgent()
    for (const pid of procs.pids) taskPids.add(pid)
    const sleeps = procs.pids.filter((pid) => Proc.comm(pid) === "sleep")
    const taskRss = sleeps.map(Proc.rssKB).filter((kb) => kb !== undefined)
    const delta = sample.rssKB - baseline.rssKB
    // Growth since the previous step: less sensitive to the one-off heap growth of the first burst.
    const previous = results.at(-1)
    const marginal = previous === undefined ? undefined : Proc.round((sample.rssKB - previous.agentRssKB) / (target - previous.tasks))
    const heapDelta = sample.heapAfterGcKB - baseline.heapAfterGcKB
    results.push({
      tasks: target,
      launchToAllRunningMs: runningAfterMs,
      agentRssKB: sample.rssKB,
      agentRssSamplesKB: sample.rssSamplesKB,
      agentRssDeltaKB: delta,
      agentRssDeltaPerTaskKB: Proc.round(delta / target),
      ...(marginal === undefined ? {} : { agentRssMarginalPerTaskKB: marginal }),
      agentHeapAfterGcKB: sample.heapAfterGcKB,
      agentHeapAfterGcDeltaPerTaskKB: Proc.round(heapDelta / target),
      agentHeapTotalKB: sample.heapTotalKB,
      agentExternalKB: sample.externalKB,
      agentOpenFds: sample.openFds,
      agentThreads: sample.threads,
      processesUnderAgent: procs.byComm,
      nodeProcessesUnderAgent: procs.node,
      taskProcessRssKB: { median: Proc.median(taskRss), min: Math.min(...taskRss), max: Math.max(...taskRss) }
    })
    if (procs.node > 0) problems.push(`${procs.node} Node processes under the agent with ${target} tasks`)
    if (sleeps.length !== target) problems.push(`expected ${target} sleep processes under the agent, found ${sleeps.length}`)
  }

  // Kill every task through the scheduler API and see whether the agent gives the memory back.
  const killedAfterMs = await killAll(allIds)
  const afterKill = await sampleAgent()
  const leftAfterKill = processesUnderAgent()

  // A second full cycle (launch as many again, kill them): memory a finished task leaves behind
  // shows up as growth from the first "all killed" figure to this one; one-off warm-up does not.
  // `--cycles N` repeats it, to see whether what is left grows with every cycle.
  const cycleIds = Array.from({ length: allIds.length }, (_, i) => `sleep-again-${i}`)
  const heapAfterCyclesKB = []
  let afterCycle
  for (let cycle = 1; cycle <= cycles; cycle++) {
    const ids = cycleIds.map((id) => `${id}-${cycle}`)
    await launchAll(ids)
    await killAll(ids)
    afterCycle = await sampleAgent()
    heapAfterCyclesKB.push(afterCycle.heapAfterGcKB)
  }

  // Stop the agent the way an operator would; it must take its tasks' process groups with it.
  const stopStartedAt = Date.now()
  const logsBeforeStop = clusterLogs.length
  agent.kill("SIGTERM")
  const exit = await Proc.within(agentExit, 15_000)
  if (exit === undefined) {
    problems.push("the agent did not exit within 15 s of SIGTERM; SIGKILLed")
    agent.kill("SIGKILL")
    await agentExit
  }
  const agentStopMs = Date.now() - stopStartedAt
  const leftovers = killLeftovers()
  if (leftovers.length > 0) problems.push(`${leftovers.length} task processes outlived the agent (SIGKILLed by the benchmark)`)
  const agentComplaints = agentLog.filter((line) => /level=(WARN|ERROR|FATAL)/i.test(line))
  if (agentComplaints.length > 0) problems.push(...agentComplaints.slice(0, 10).map((l) => `agent log: ${l}`))
  // The master warning that the agent went away is expected once we stopped it; anything else is not.
  const unexpected = clusterLogs.filter((l, i) => !(i >= logsBeforeStop && /agent disconnected/.test(l)))
  if (unexpected.length > 0) problems.push(...unexpected.map((l) => `in-process log: ${l}`))
  if (framework.counts.ackFailures > 0) problems.push(`${framework.counts.ackFailures} acknowledgements failed: ${framework.ackFailures.join("; ")}`)

  const worst = Math.max(...results.map((r) => r.agentRssDeltaPerTaskKB))
  return {
    benchmark: "task-overhead",
    setup: {
      agent: "berth agent (child process, with the heap probe preloaded)",
      agentResources: AGENT_RESOURCES,
      task: { command: TASK_COMMAND, cpus: TASK_CPUS, memMB: TASK_MEM },
      settleMs: SETTLE_MS,
      samples: SAMPLES
    },
    agentIdle: {
      rssKB: baseline.rssKB,
      rssSamplesKB: baseline.rssSamplesKB,
      heapAfterGcKB: baseline.heapAfterGcKB,
      heapTotalKB: baseline.heapTotalKB,
      externalKB: baseline.externalKB,
      openFds: baseline.openFds,
      threads: baseline.threads
    },
    steps: results,
    afterKillingAll: {
      killToAllKilledMs: killedAfterMs,
      agentRssKB: afterKill.rssKB,
      agentRssDeltaKB: afterKill.rssKB - baseline.rssKB,
      agentHeapAfterGcKB: afterKill.heapAfterGcKB,
      agentHeapAfterGcDeltaKB: afterKill.heapAfterGcKB - baseline.heapAfterGcKB,
      agentHeapTotalKB: afterKill.heapTotalKB,
      agentExternalKB: afterKill.externalKB,
      agentOpenFds: afterKill.openFds,
      processesUnderAgent: leftAfterKill.byComm
    },
    afterAnotherCycle: {
      cycles,
      tasksLaunchedAndKilledInTotal: allIds.length * (1 + cycles),
      agentHeapAfterGcAfterEachCycleKB: heapAfterCyclesKB,
      agentRssKB: afterCycle.rssKB,
      agentHeapAfterGcKB: afterCycle.heapAfterGcKB,
      // Per task of the second cycle: what each finished task left behind in the agent's heap.
      agentHeapGrowthSinceFirstKillPerTaskKB: Proc.round((afterCycle.heapAfterGcKB - afterKill.heapAfterGcKB) / (cycleIds.length * cycles), 2),
      agentRssGrowthSinceFirstKillPerTaskKB: Proc.round((afterCycle.rssKB - afterKill.rssKB) / (cycleIds.length * cycles), 1),
      agentHeapTotalKB: afterCycle.heapTotalKB,
      agentExternalKB: afterCycle.externalKB,
      agentOpenFds: afterCycle.openFds
    },
    agentStop: { exit: exit ?? "SIGKILL", sigtermToExitMs: agentStopMs, taskProcessesLeft: leftovers.length },
    budget: { kbPerTask: BUDGET_KB_PER_TASK, worstKbPerTask: worst, within: worst <= BUDGET_KB_PER_TASK },
    problems
  }
}

let result
try {
  result = await main()
} catch (error) {
  result = { benchmark: "task-overhead", error: String(error?.stack ?? error), problems, clusterLogs, agentLogTail: agentLog.slice(-30) }
  process.exitCode = 1
} finally {
  clearTimeout(watchdog)
  await cleanup()
}
process.stdout.write(JSON.stringify(result, null, 2) + "\n")
// Everything we opened is closed; if a handle still holds the process, say so and leave anyway.
setTimeout(() => {
  process.stderr.write(`task-overhead: still alive 3 s after cleanup: ${process.getActiveResourcesInfo().join(", ")}\n`)
  process.exit(process.exitCode ?? 0)
}, 3000).unref()
