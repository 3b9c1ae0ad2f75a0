// A service deploy at scale: a ServiceSpec of 1,000 pods deployed by the SDK's service runtime
// (`ServiceScheduler.layerStack`: session, offer manager, task lifecycle with its write-ahead,
// plans) on 1,000 simulated agents. A real master and the simulated agents (`berth simulate`: the
// real agent protocol over real gRPC, no task processes) each run in a child process; the
// scheduler runs here, its state in a SQLite file. Timed from the scheduler's start until the
// deploy plan is COMPLETE and every pod's task is RUNNING (and acknowledged: the lifecycle
// acknowledges an update after persisting it). Prints one JSON object as its last line:
// {"pods":…,"agents":…,"seconds":…}. Target (issue 6): ≤ 5 s.
import { ServiceScheduler } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { Context, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Daemons from "./lib/daemon.mjs"

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? fallback : Number(process.argv[i + 1])
}
const agents = arg("agents", 1_000)
const pods = arg("pods", 1_000)
const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-deploy-bench-"))
const daemons = Daemons.make()
const children = daemons.children
const deadline = setTimeout(() => {
  console.error("deploy bench: deadline reached")
  for (const c of children) c.kill("SIGKILL")
  process.exit(1)
}, 300_000)

/** Starts `berth <args>` and resolves with the first stdout line matching `pattern`. */
const daemon = (args, pattern) => daemons.start(berth, args, pattern)

const spec = {
  name: "deploy-bench",
  role: "bench",
  pods: {
    web: {
      count: pods,
      // The deploy plan's phase launches every instance at once (the default is a rolling, serial deploy).
      strategy: "parallel",
      tasks: { server: { goal: "RUNNING", cpus: 0.1, mem: 16, cmd: "exec sleep 100000" } }
    }
  }
}

const main = async () => {
  const { match } = await daemon(["master", "--port", "0", "--state", "memory:"], /listening on (\S+)/)
  const master = match[1]
  await daemon(["simulate", "--masters", master, "--agents", String(agents), "--resources", "cpus:4;mem:8192;disk:10000"], /agents registered/)

  let seconds = 0
  let offers
  const program = Effect.gen(function*() {
    const started = performance.now()
    const context = yield* Layer.build(
      ServiceScheduler.layerStack({ spec, master }).pipe(Layer.provide(process.argv.includes("--memory") ? StateStore.layerMemory : StateStore.layerSqlite({ path: path.join(dir, "state.db") })))
    )
    const service = Context.get(context, ServiceScheduler.ServiceScheduler)
    if (process.argv.includes("--trace")) {
      // Where the time goes: every 250 ms, pods by state, launches pending, offer counters.
      yield* Effect.gen(function*() {
        while (true) {
          const all = yield* service.pods
          const byState = {}
          for (const p of all) byState[p.state ?? "NONE"] = (byState[p.state ?? "NONE"] ?? 0) + 1
          const snapshot = yield* service.offers
          console.error(JSON.stringify({ t: Number(((performance.now() - started) / 1000).toFixed(2)), byState, pending: snapshot.pending.length, queued: snapshot.queuedOffers.length, holds: snapshot.holds, ...snapshot.counters }))
          yield* Effect.sleep("250 millis")
        }
      }).pipe(Effect.forkScoped)
    }
    yield* service.awaitPlan("deploy")
    while (true) {
      const all = yield* service.pods
      if (all.filter((p) => p.state === "RUNNING").length === pods) break
      yield* Effect.sleep("20 millis")
    }
    seconds = (performance.now() - started) / 1000
    offers = (yield* service.offers).counters
  })
  await Effect.runPromise(Effect.scoped(program))
  console.log(JSON.stringify({
    pods,
    agents,
    seconds: Number(seconds.toFixed(2)),
    offersReceived: offers.offersReceived,
    offersAccepted: offers.offersAccepted,
    evaluations: offers.evaluations
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
    fs.rmSync(dir, { recursive: true, force: true })
  })
