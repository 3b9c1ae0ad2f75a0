/**
 * `npm run bench:agent`: how fast one agent launches 1,000 trivial process tasks, and what each
 * costs beyond the task itself.
 *
 * A master in this process, ONE `berth agent` as a child process (with the heap probe preloaded,
 * see lib/agent-probe.mjs), and a framework that launches 1,000 `sleep 600` tasks in one Accept.
 * `launchSeconds` runs from the Accept to the moment the framework has seen every task RUNNING.
 * `perTaskRssBytes` is what a task costs beyond its own processes: the agent's RSS growth per task
 * (sampled as task-overhead.mjs does: a forced GC, then the median of a few samples, against the
 * idle agent measured the same way) plus the RSS of the task's wrapper shell (the POSIX `sh` that
 * leads the task's process group and records its exit status, so that tasks outlive the agent).
 * Budget (issue 4): <= 15 s and <= 5 MB per task. Everything it starts is stopped at the end
 * (tasks killed through the scheduler API, the agent with SIGTERM and --kill-tasks-on-stop, any
 * leftover task process group SIGKILLed by pid), also on Ctrl-C.
 *
 * Prints the breakdown as JSON on stderr and, as its last line on stdout, one JSON object:
 * {"tasks":1000,"launchSeconds":…,"perTaskRssBytes":…}
 *
 * Usage: node bench/agent.mjs [--tasks 1000]
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
const TASKS = Number(args.includes("--tasks") ? args[args.indexOf("--tasks") + 1] : "1000")
const AGENT_RESOURCES = "cpus:64;mem:65536;disk:65536"
const TASK_CPUS = 0.01
const TASK_MEM = 16
const TASK_COMMAND = "sleep 600"
const SETTLE_MS = 3000
const SAMPLES = 7
const SAMPLE_EVERY_MS = 300
const DEADLINE_MS = 3 * 60 * 1000

const probe = fileURLToPath(new URL("./lib/agent-probe.mjs", import.meta.url))
const berth = path.join(path.dirname(fileURLToPath(import.meta.resolve("@berth/cluster-core/package.json"))), "dist/bin/berth.js")
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "berth-bench-agent-"))
const workDir = path.join(tmp, "agent")
const scope = Effect.runSync(Scope.make())
const clusterLogs = []
const problems = []
const run = (effect) => Effect.runPromise(effect.pipe(Scope.provide(scope), quietLogging(clusterLogs)))
let agent

/** SIGKILLs the process group of every task wrapper of our work dir (found by its command line). */
const killTaskGroups = () => {
  let killed = 0
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (!fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(`${workDir}/meta/`)) continue
      process.kill(-Number(entry), "SIGKILL")
      killed++
    } catch {
      // Gone meanwhile.
    }
  }
  return killed
}

const cleanup = async () => {
  if (agent !== undefined && agent.exitCode === null && agent.signalCode === null) {
    const exited = new Promise((resolve) => agent.once("exit", resolve))
    agent.kill("SIGTERM")
    if ((await Proc.within(exited.then(() => true), 15_000)) === undefined) agent.kill("SIGKILL")
  }
  const left = killTaskGroups()
  await Effect.runPromise(Scope.close(scope, Exit.void)).catch(() => {})
  fs.rmSync(tmp, { recursive: true, force: true })
  return left
}

const watchdog = setTimeout(async () => {
  process.stderr.write(`bench:agent: deadline of ${DEADLINE_MS / 1000}s passed; cleaning up\n`)
  await cleanup()
  process.stdout.write(JSON.stringify({ tasks: TASKS, error: "deadline passed" }) + "\n")
  process.exit(1)
}, DEADLINE_MS)
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    clearTimeout(watchdog)
    await cleanup()
    process.exit(130)
  })
}

let probeWaiter
const heapAfterGc = async () => {
  const reply = new Promise((resolve) => (probeWaiter = resolve))
  agent.kill("SIGUSR2")
  const figures = await Proc.within(reply, 5000)
  if (figures === undefined) problems.push("the agent's heap probe did not answer")
  return figures
}

/** The settled agent: a forced GC, then the median of a few RSS samples. */
const sampleAgent = async () => {
  await Proc.sleep(SETTLE_MS)
  const heap = await heapAfterGc()
  await Proc.sleep(500)
  const rss = []
  for (let i = 0; i < SAMPLES; i++) {
    rss.push(Proc.rssKB(agent.pid))
    await Proc.sleep(SAMPLE_EVERY_MS)
  }
  return { rssKB: Proc.median(rss), heapUsedKB: heap === undefined ? undefined : Math.round(heap.heapUsed / 1024) }
}

/** KB of a field of /proc/<pid>/smaps_rollup (Pss, Private_Dirty, ...). */
const smapsKB = (pid, field) => {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))
    return match === null ? undefined : Number(match[1])
  } catch {
    return undefined
  }
}

const withTimeout = (what, ms) => (effect) =>
  effect.pipe(Effect.timeoutOrElse({ duration: Duration.millis(ms), orElse: () => Effect.fail(new Error(`timed out after ${ms} ms: ${what}`)) }))

const main = async () => {
  const master = await run(
    Effect.gen(function*() {
      const store = yield* Layer.build(StateStore.layerMemory)
      return yield* Master.start({ port: 0 }).pipe(Effect.provide(store))
    })
  )
  agent = spawn(
    process.execPath,
    ["--expose-gc", "--import", probe, berth, "agent", "--master", master.endpoint, "--work-dir", workDir,
      "--resources", AGENT_RESOURCES, "--hostname", "bench-agent", "--kill-tasks-on-stop"],
    { stdio: ["ignore", "pipe", "pipe"] }
  )
  const agentLog = []
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
        if (line.startsWith("BENCH_PROBE ")) {
          probeWaiter?.(JSON.parse(line.slice("BENCH_PROBE ".length)))
          probeWaiter = undefined
          continue
        }
        agentLog.push(line)
        if (/registered with/.test(line)) registered()
      }
    })
  }
  if ((await Proc.within(registeredPromise.then(() => true), 20_000)) === undefined) throw new Error("the agent did not register within 20 s")
  const idle = await sampleAgent()

  const framework = await run(Framework.open(master.endpoint, { name: "bench-agent" }))
  const ids = Array.from({ length: TASKS }, (_, i) => `sleep-${i}`)
  const tasks = ids.map((id) =>
    v1.TaskInfo.create({
      name: id,
      taskId: id,
      resources: [Resources.scalar("cpus", TASK_CPUS), Resources.scalar("mem", TASK_MEM)],
      command: { shell: true, value: TASK_COMMAND }
    })
  )
  const needed = Resources.add([], tasks.flatMap((t) => t.resources))
  let acceptedAt
  await run(
    Effect.gen(function*() {
      while (true) {
        const offer = yield* framework.nextOffer
        if (!Resources.contains(offer.resources, needed)) {
          yield* framework.session.decline([offer.offerId], { refuseSeconds: 0.2 })
          continue
        }
        acceptedAt = performance.now()
        const accepted = yield* Effect.result(framework.session.accept([offer.offerId], [Framework.launch(tasks)], { refuseSeconds: 1 }))
        if (Result.isSuccess(accepted)) return
        problems.push(`Accept failed, retrying: ${accepted.failure?.message ?? accepted.failure}`)
      }
    }).pipe(withTimeout("an offer that fits", 30_000))
  )
  await run(
    framework.until(() => framework.allIn(ids, (s) => s === v1.TaskState.RUNNING || framework.isTerminal(s))).pipe(
      withTimeout(`${TASKS} tasks RUNNING`, 120_000)
    )
  )
  const launchMs = performance.now() - acceptedAt
  const notRunning = ids.filter((id) => framework.latest.get(id).state !== v1.TaskState.RUNNING)
  if (notRunning.length > 0) problems.push(`${notRunning.length} tasks ended instead of running: ${JSON.stringify(framework.latest.get(notRunning[0]))}`)
  await run(
    Effect.gen(function*() {
      while (framework.counts.acked + framework.counts.ackFailures < framework.counts.withUuid) yield* Effect.sleep(20)
    }).pipe(withTimeout("acknowledgements", 30_000))
  )
  const loaded = await sampleAgent()

  // The wrappers: the task process groups' leaders, children of the agent.
  const children = Proc.descendants(agent.pid)
  const wrappers = children.filter((pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) === pid
    } catch {
      return false
    }
  })
  if (wrappers.length !== TASKS) problems.push(`expected ${TASKS} task wrappers under the agent, found ${wrappers.length}`)
  const nodeChildren = children.filter(Proc.isNode).length
  if (nodeChildren > 0) problems.push(`${nodeChildren} Node processes under the agent`)
  const sample = wrappers.slice(0, 50)
  const wrapperRssKB = Proc.median(sample.map(Proc.rssKB).filter((kb) => kb !== undefined))
  const wrapperPssKB = Proc.median(sample.map((pid) => smapsKB(pid, "Pss")).filter((kb) => kb !== undefined))
  const agentPerTaskKB = (loaded.rssKB - idle.rssKB) / TASKS

  // Clean up through the API: every task killed and acknowledged, then the agent stopped.
  const killStartedAt = performance.now()
  await run(
    Effect.forEach(ids, (id) => framework.session.kill(id), { concurrency: 32, discard: true }).pipe(
      Effect.andThen(framework.until(() => framework.allIn(ids, framework.isTerminal))),
      withTimeout("every task KILLED", 60_000)
    )
  )
  const killMs = performance.now() - killStartedAt
  const left = await cleanup()
  if (left > 0) problems.push(`${left} task process groups outlived the benchmark's kills (SIGKILLed)`)
  const complaints = agentLog.filter((line) => /level=(WARN|ERROR|FATAL)/i.test(line) && !/connection to master lost/.test(line))
  problems.push(...complaints.slice(0, 5).map((line) => `agent log: ${line}`))

  const perTaskRssBytes = Math.round((agentPerTaskKB + wrapperRssKB) * 1024)
  const detail = {
    benchmark: "agent",
    machine: Proc.machine(),
    tasks: TASKS,
    task: { command: TASK_COMMAND, cpus: TASK_CPUS, memMB: TASK_MEM },
    launchSeconds: Proc.round(launchMs / 1000, 2),
    tasksPerSecond: Proc.round(TASKS / (launchMs / 1000), 0),
    agentIdle: idle,
    agentWithTasks: loaded,
    agentRssPerTaskKB: Proc.round(agentPerTaskKB, 1),
    agentHeapPerTaskKB: idle.heapUsedKB === undefined || loaded.heapUsedKB === undefined
      ? undefined
      : Proc.round((loaded.heapUsedKB - idle.heapUsedKB) / TASKS, 1),
    wrapperRssKB,
    wrapperPssKB,
    perTaskRssBytes,
    killAllSeconds: Proc.round(killMs / 1000, 2),
    budget: { launchSeconds: 15, perTaskRssBytes: 5 * 1024 * 1024 },
    within: launchMs <= 15_000 && perTaskRssBytes <= 5 * 1024 * 1024,
    problems
  }
  process.stderr.write(JSON.stringify(detail, null, 2) + "\n")
  return { tasks: TASKS, launchSeconds: Proc.round(launchMs / 1000, 2), perTaskRssBytes }
}

let result
try {
  result = await main()
} catch (error) {
  process.stderr.write(`bench:agent failed: ${error?.stack ?? error}\n${problems.join("\n")}\n${clusterLogs.slice(-20).join("\n")}\n`)
  await cleanup()
  result = { tasks: TASKS, error: String(error?.message ?? error) }
  process.exitCode = 1
} finally {
  clearTimeout(watchdog)
}
process.stdout.write(JSON.stringify(result) + "\n")
setTimeout(() => process.exit(process.exitCode ?? 0), 3000).unref()
