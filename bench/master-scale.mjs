// Master memory at scale, and how fast a new leader has every agent back.
// A leading master and a standby share one SQLite registry; 10,000 simulated agents (in
// `berth simulate` processes of their own, speaking the real agent protocol) and a framework
// running 100,000 tasks. Then the leader is SIGKILLed and we time until the standby leads with
// every agent re-registered. Prints one JSON object as its last line:
// {"agents":10000,"tasks":100000,"rssBytes":…,"failoverSeconds":…}
// Targets (issue 3): rssBytes ≤ 1 GiB, failoverSeconds ≤ 10.
// Flags: --agents, --tasks, --simulators, --leader-lease (sizes and the lease; defaults as above,
// lease 5 s, the master's default), --profile DIR (CPU profiles of the new leader and the
// simulators). Stderr gets a failover timeline and the masters' leadership lines.
import * as grpc from "@grpc/grpc-js"
import { Resources, v1 } from "@berth/proto"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { Context, Effect, Layer, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Daemons from "./lib/daemon.mjs"

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? fallback : Number(process.argv[i + 1])
}
const agents = arg("agents", 10_000)
const tasks = arg("tasks", 100_000)
const simulators = arg("simulators", 4)
const lease = arg("leader-lease", 5)
// `--profile DIR`: the standby (the new leader) and the simulators write V8 CPU profiles there
// (named by pid) when the bench ends.
const profileIndex = process.argv.indexOf("--profile")
const profileDir = profileIndex < 0 ? undefined : path.resolve(process.argv[profileIndex + 1])
const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-scale-"))
const daemons = Daemons.make()
const children = daemons.children
const log = (...a) => console.error(`[master-scale ${new Date().toISOString().slice(11, 19)}]`, ...a)
const deadline = setTimeout(() => {
  log("deadline reached")
  cleanup()
  process.exit(1)
}, 480_000)
const cleanup = () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL")
  fs.rmSync(dir, { recursive: true, force: true })
}

// MASTER_SCALE_NODE_FLAGS: extra node flags for every berth process (diagnosis, e.g. `--require`).
const extraFlags = (process.env.MASTER_SCALE_NODE_FLAGS ?? "").split(" ").filter((a) => a !== "")
const daemon = (args, pattern, nodeFlags = []) =>
  daemons.start(berth, args, pattern, {
    nodeFlags: ["--max-old-space-size=4096", ...extraFlags, ...nodeFlags],
    // Leadership changes (and how many agents a standby held) go to stderr with the timings.
    onChunk: (chunk) => {
      if (args[0] === "master" && /leading|held|leadership/.test(chunk)) process.stderr.write(chunk)
    }
  })

const rssBytes = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1]) * 1024
const agentCount = (endpoint) =>
  new Promise((resolve) => {
    const client = new v1.OperatorServiceClient(endpoint, grpc.credentials.createInsecure())
    client.getAgents({}, (error, response) => {
      client.close()
      resolve(error === null ? response.agents.filter((a) => a.state === v1.Agent_State.ACTIVE).length : -1)
    })
  })

const main = async () => {
  const state = `sqlite:${path.join(dir, "registry.db")}`
  const masterArgs = ["--port", "0", "--state", state, "--leader-lease", String(lease), "--agent-ping-interval", "15"]
  const leader = await daemon(["master", ...masterArgs], /listening on (\S+)/)
  const profile = profileDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", profileDir]
  const standby = await daemon(["master", ...masterArgs], /listening on (\S+)/, profile)
  const masters = `${leader.match[1]},${standby.match[1]}`
  log("masters", masters)
  const per = Math.ceil(agents / simulators)
  await Promise.all(Array.from({ length: simulators }, (_, i) =>
    daemon(["simulate", "--masters", masters, "--agents", String(Math.min(per, agents - i * per)), "--hostname-prefix", `sim${i}`,
      "--resources", "cpus:64;mem:262144;disk:1000000"], /agents registered/, profile)))
  log("agents registered")

  const need = [Resources.scalar("cpus", 0.01), Resources.scalar("mem", 8)]
  let launched = 0
  let running = 0
  const program = Effect.gen(function*() {
    const session = Context.get(
      yield* Layer.build(SchedulerSession.layer({ master: leader.match[1], framework: { name: "scale" } })),
      SchedulerSession.SchedulerSession
    )
    const perAgent = Math.ceil(tasks / agents)
    const onOffer = (offer) => {
      const infos = []
      let left = offer.resources
      while (launched < tasks && infos.length < perAgent && Resources.contains(left, need)) {
        left = Resources.subtract(left, need)
        const taskId = `t-${launched++}`
        infos.push({ ...v1.TaskInfo.create({ taskId, name: taskId, command: { shell: true, value: "sleep 3600" } }), resources: need })
      }
      return infos.length === 0
        ? session.decline([offer.offerId], { refuseSeconds: 3600 })
        : session.accept([offer.offerId], [{ operationId: "", kind: { $case: "launch", value: { taskInfos: infos } } }], { refuseSeconds: 3600 })
          // A leader change voids outstanding offers; their tasks are launched from later offers.
          .pipe(Effect.catch(() => Effect.sync(() => (launched -= infos.length))))
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
  })
  const launchStart = performance.now()
  await Effect.runPromise(Effect.scoped(program))
  const launchSeconds = (performance.now() - launchStart) / 1000
  log(`${tasks} tasks running after ${launchSeconds.toFixed(1)} s`)
  await new Promise((r) => setTimeout(r, 3000))
  const rss = rssBytes(leader.child.pid)

  const killedAt = performance.now()
  leader.child.kill("SIGKILL")
  let count = 0
  // Where the seconds go (stderr): when the standby first answers as leader, then its progress.
  const timeline = []
  while ((count = await agentCount(standby.match[1])) < agents) {
    if (performance.now() - killedAt > 120_000) throw new Error(`only ${count} agents re-registered after 120 s`)
    if (count >= 0 && (timeline.length === 0 || timeline.at(-1)[1] !== count)) {
      timeline.push([Number(((performance.now() - killedAt) / 1000).toFixed(2)), count])
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  const failoverSeconds = (performance.now() - killedAt) / 1000
  log("failover timeline [seconds after the kill, agents active]:", JSON.stringify(timeline))
  const standbyRss = rssBytes(standby.child.pid)
  if (profileDir !== undefined) {
    // A profile is written when the process exits cleanly.
    await Promise.all(children.filter((c) => c.exitCode === null && c.signalCode === null).map((c) =>
      new Promise((resolve) => {
        c.once("exit", resolve)
        c.kill("SIGTERM")
      })
    ))
    log("CPU profile written to", profileDir)
  }
  console.log(JSON.stringify({
    agents,
    tasks,
    rssBytes: rss,
    failoverSeconds: Number(failoverSeconds.toFixed(2)),
    leaderLeaseSeconds: lease,
    newLeaderRssBytes: standbyRss,
    launchSeconds: Number(launchSeconds.toFixed(1))
  }))
}

main()
  .catch((error) => {
    console.error(error)
    process.exitCode = 1
  })
  .finally(() => {
    clearTimeout(deadline)
    cleanup()
  })
