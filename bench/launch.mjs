// Launch throughput through the real gRPC APIs: offer → Accept → launch → RUNNING acknowledged.
// A master and the simulated agents (`berth simulate`: the real agent protocol, no task
// processes) each run in a process of their own; the framework runs here, on the SDK. Prints one
// JSON object as its last line: {"agents":…,"tasks":…,"tasksPerSecond":…}.
// Target (issue 3): ≥ 3,750 tasks/s on a 2-core machine (Nomad's C1M placed 3,750 containers/s).
import { Resources, TaskStates, v1 } from "@berth/proto"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { Context, Effect, Layer, Stream } from "effect"
import { fileURLToPath } from "node:url"
import * as Daemons from "./lib/daemon.mjs"

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? fallback : Number(process.argv[i + 1])
}
const agents = arg("agents", 100)
const tasks = arg("tasks", 20_000)
const perAccept = arg("per-accept", 500)
const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))
const daemons = Daemons.make()
const children = daemons.children
const deadline = setTimeout(() => {
  console.error("launch bench: deadline reached")
  for (const c of children) c.kill("SIGKILL")
  process.exit(1)
}, 240_000)

/** Starts `berth <args>` and resolves with the first stdout line matching `pattern`. */
const daemon = (args, pattern) => daemons.start(berth, args, pattern)

const main = async () => {
  const { match } = await daemon(["master", "--port", "0", "--state", "memory:"], /listening on (\S+)/)
  const master = match[1]
  const started = performance.now()
  await daemon(["simulate", "--masters", master, "--agents", String(agents), "--resources", "cpus:64;mem:262144;disk:1000000"], /agents registered/)
  const agentsUpSeconds = (performance.now() - started) / 1000

  const need = [Resources.scalar("cpus", 0.01), Resources.scalar("mem", 8)]
  let launched = 0
  let running = 0
  let accepts = 0
  let firstAccept = 0
  let lastRunning = 0
  const program = Effect.gen(function*() {
    const session = Context.get(
      yield* Layer.build(SchedulerSession.layer({ master, framework: { name: "launch-bench" } })),
      SchedulerSession.SchedulerSession
    )
    const onOffer = (offer) => {
      const infos = []
      let left = offer.resources
      while (launched < tasks && infos.length < perAccept && Resources.contains(left, need)) {
        left = Resources.subtract(left, need)
        const taskId = `t-${launched++}`
        infos.push({ ...v1.TaskInfo.create({ taskId, name: taskId, command: { shell: true, value: "true" } }), resources: need })
      }
      if (infos.length === 0) return session.decline([offer.offerId], { refuseSeconds: 30 })
      if (firstAccept === 0) firstAccept = performance.now()
      accepts++
      return session.accept([offer.offerId], [{ operationId: "", kind: { $case: "launch", value: { taskInfos: infos } } }], { refuseSeconds: 0 })
    }
    yield* session.events.pipe(
      Stream.mapEffect((event) => {
        if (event.$case === "offers") return Effect.forEach(event.value.offers, onOffer, { concurrency: "unbounded", discard: true })
        if (event.$case === "update") {
          for (const s of event.value.statuses) if (s.state === v1.TaskState.RUNNING) running++
          return Effect.forEach(event.value.statuses, session.acknowledge, { concurrency: "unbounded", discard: true })
        }
        return Effect.void
      }),
      Stream.takeUntil(() => running >= tasks),
      Stream.runDrain
    )
    lastRunning = performance.now()
    yield* session.teardown.pipe(Effect.ignore)
  })
  await Effect.runPromise(Effect.scoped(program))
  const seconds = (lastRunning - firstAccept) / 1000
  console.log(JSON.stringify({
    agents,
    tasks,
    tasksPerSecond: Math.round(tasks / seconds),
    seconds: Number(seconds.toFixed(2)),
    accepts,
    tasksPerAccept: Math.round(tasks / accepts),
    agentsRegisterSeconds: Number(agentsUpSeconds.toFixed(2))
  }))
}

main()
  .catch((error) => {
    console.error(error)
    process.exitCode = 1
  })
  .finally(() => {
    clearTimeout(deadline)
    for (const child of children) child.kill("SIGTERM")
  })
