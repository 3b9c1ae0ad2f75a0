/**
 * The processes backend: every master and agent a `berth` child process of its own, with its
 * output in a log file, so that a test can SIGKILL, restart, SIGSTOP and SIGCONT them.
 */
import type { Master } from "@berth/cluster-core"
import { EtcdServer } from "@berth/storage"
import { Clock, Effect, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type * as Operator from "../Operator.ts"
import type { ClusterAgent, ClusterEtcd, ClusterMaster, MakeError, Options, TestCluster } from "../TestCluster.ts"
import { InvalidOptions, ProcessError, UnsupportedFault } from "../TestClusterError.ts"
import * as Common from "./common.ts"
import * as Daemon from "./daemon.ts"
import * as EventLog from "./eventLog.ts"
import * as Leader from "./leader.ts"
import * as Procfs from "./procfs.ts"
import * as Proxy from "./proxy.ts"
import { commandLineFlags, secure } from "./security.ts"

/** `berth master` flags for the master settings that have one. */
const masterFlags = (config: Partial<Master.Config>): Effect.Effect<Array<string>, InvalidOptions> =>
  Effect.gen(function*() {
    const flags: Array<string> = []
    for (const [key, value] of Object.entries(config)) {
      if (value === undefined) continue
      switch (key) {
        case "host":
          flags.push("--host", String(value))
          break
        case "allocationIntervalMs":
          flags.push("--allocation-interval", String(Number(value) / 1000))
          break
        case "offerTimeoutSeconds":
          flags.push("--offer-timeout", String(value))
          break
        case "frameworkHeartbeatSeconds":
          flags.push("--heartbeat-interval", String(value))
          break
        case "agentPingSeconds":
          flags.push("--agent-ping-interval", String(value))
          break
        case "agentPingMisses":
          flags.push("--agent-ping-misses", String(value))
          break
        case "leaderLeaseSeconds":
          flags.push("--leader-lease", String(value))
          break
        case "httpPort":
          flags.push("--http-port", String(value))
          break
        default:
          return yield* new InvalidOptions({
            field: `master.${key}`,
            rule: `has no \`berth master\` flag, so the processes backend cannot set it (use backend "in-process")`
          })
      }
    }
    return flags
  })

const positiveInteger = (field: string, value: number) =>
  Number.isInteger(value) && value >= 1 ? Effect.void : Effect.fail(new InvalidOptions({ field, rule: `must be an integer >= 1 (got ${value})` }))

export const make = (options: Options): Effect.Effect<TestCluster, MakeError, Scope.Scope> =>
  Effect.gen(function*() {
    const masterCount = options.masters ?? 1
    const agentCount = options.agents ?? 3
    const storage = options.storage ?? "sqlite"
    yield* positiveInteger("masters", masterCount)
    yield* positiveInteger("agents", agentCount)
    if (masterCount > 1 && storage === "memory") {
      return yield* new InvalidOptions({ field: "storage", rule: 'several masters need a store they share: "sqlite" or "etcd"' })
    }
    if (options.master?.httpPort !== undefined && options.master.httpPort !== 0 && masterCount > 1) {
      return yield* new InvalidOptions({ field: "master.httpPort", rule: "must be 0 (a free port each) with several masters" })
    }
    if (options.clock === "virtual") {
      return yield* new InvalidOptions({ field: "clock", rule: 'virtual time needs backend "in-process" (child processes keep their own clocks)' })
    }
    if (options.proxy === true && options.tls !== undefined && options.tls !== false) {
      return yield* new InvalidOptions({ field: "proxy", rule: "the fault-injecting proxy speaks plaintext only: it cannot be used with tls" })
    }
    const extraMasterFlags = yield* masterFlags(options.master ?? {})
    const startTimeoutMs = options.startTimeoutMs ?? 20_000

    // Realpath: agents find their task wrappers by the absolute work dir in their command line.
    const workDir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), "berth-cluster-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }))
    )
    const logs = path.join(workDir, "logs")
    fs.mkdirSync(logs)
    const clock = yield* Clock.Clock
    const events = EventLog.make(clock)
    const daemons: Array<Daemon.Daemon> = []
    const reporting = Common.reporting(options, () => Common.report("processes", workDir, events, () => daemons))
    const report = reporting.report
    yield* reporting.finalizer

    const security = yield* secure(workDir, options)
    let etcd: ClusterEtcd | undefined
    let storeUrl = storage === "memory" ? "memory:" : `sqlite:${path.join(workDir, "registry.db")}`
    if (storage === "etcd") {
      const server = yield* EtcdServer.start()
      storeUrl = `etcd:${server.endpoint}`
      etcd = {
        endpoint: server.endpoint,
        stop: Effect.andThen(Effect.sync(() => events.add("testkit", "etcd stopped")), server.stop),
        kill: Effect.andThen(Effect.sync(() => events.add("testkit", "etcd SIGKILL")), server.kill),
        start: Effect.tap(server.restart, () => Effect.sync(() => events.add("testkit", "etcd started")))
      }
    }

    // Processes die before etcd stops and the temp dir goes; so do the tasks killed agents left.
    const agentDirs: Array<string> = []
    yield* Effect.addFinalizer(() =>
      Effect.forEach(daemons, (d) => d.kill({ quiet: true }), { concurrency: "unbounded", discard: true }).pipe(
        Effect.andThen(Effect.sync(() => {
          for (const dir of agentDirs) Procfs.killTasks(dir)
        }))
      )
    )

    const securityFlags = commandLineFlags(security, options, workDir, 0o600)

    const daemon = (name: string, args: () => ReadonlyArray<string>, ready: RegExp) => {
      const d = Daemon.make({
        name,
        logFile: path.join(logs, `${name}.log`),
        cwd: workDir,
        args,
        ready,
        readyTimeoutMs: startTimeoutMs,
        onUnexpectedExit: (text) => events.add("testkit", text)
      })
      daemons.push(d)
      return d
    }

    // Masters: the first starts on a free port and leads; a restarted master keeps its port.
    const masters: Array<ClusterMaster> = []
    const wantsHttp = options.master?.httpPort !== undefined
    for (let index = 0; index < masterCount; index++) {
      const name = `master-${index + 1}`
      let port = 0
      const d = daemon(
        name,
        () => ["master", "--state", storeUrl, "--port", String(port), ...extraMasterFlags, ...securityFlags.master],
        wantsHttp ? /listening on (\S+)\n[\s\S]*metrics on http:\/\/(\S+)\/metrics/ : /listening on (\S+)\n/
      )
      const match = yield* d.start
      const endpoint = match[1]!
      port = Number(endpoint.slice(endpoint.lastIndexOf(":") + 1))
      const kill = Effect.suspend(() => {
        if (!d.running()) return Effect.void
        events.add("testkit", `${name} SIGKILL`)
        return d.kill()
      })
      masters.push({
        index,
        name,
        endpoint,
        httpEndpoint: match[2],
        pid: d.pid,
        logFile: d.logFile,
        kill,
        restart: Effect.gen(function*() {
          yield* kill
          yield* d.start
          events.add("testkit", `${name} restarted`)
        })
      })
      events.add("testkit", `${name} started (pid ${d.pid()}, ${endpoint})`)
    }
    const masterList = masters.map((m) => m.endpoint).join(",")
    const clientOptions: Operator.Options = { tls: security.client.tls, credentials: security.client.credentials?.operator }
    const { leader, operator, names } = yield* Leader.observe(masters, clientOptions, events)

    const agents: Array<ClusterAgent> = []
    for (let index = 0; index < agentCount; index++) {
      const name = `agent-${index + 1}`
      const hostname = `${name}.test`
      const agentWorkDir = path.join(workDir, name)
      agentDirs.push(agentWorkDir)
      // The agent talks to the masters through its proxy (one proxy port per master), which
      // outlives the agent's restarts.
      const link = (options.proxy ?? true) && security.client.tls === undefined
        ? yield* Proxy.make({ name, masters: masters.map((m) => m.endpoint), log: (text) => events.add("testkit", text), seed: (options.seed ?? 1) + index })
        : undefined
      const args = [
        "agent",
        "--master", link?.endpoints.join(",") ?? masterList,
        "--work-dir", agentWorkDir,
        "--hostname", hostname,
        "--resources", options.agentResources ?? "cpus:2;mem:2048;disk:4096;ports:[31000-31999]",
        "--attributes", options.agentAttributes?.(index) ?? `rack:r${(index % 3) + 1}`,
        "--status-update-retry-min", String(options.statusUpdateRetrySeconds ?? 10),
        ...securityFlags.agent
      ]
      const d = daemon(name, () => args, /berth agent (\S+) registered/)
      const agentId = (yield* d.start)[1]!
      names.set(agentId, name)
      events.add("testkit", `${name} started (pid ${d.pid()}, ${agentId})`)
      const kill = Effect.suspend(() => {
        if (!d.running()) return Effect.void
        events.add("testkit", `${name} SIGKILL`)
        return d.kill()
      })
      const signal = (sig: "SIGSTOP" | "SIGCONT") =>
        Effect.suspend(() => {
          if (!d.running()) return Effect.fail(new ProcessError({ process: name, reason: `is not running, so it cannot get ${sig}`, log: "" }))
          events.add("testkit", `${name} ${sig}`)
          d.signal(sig)
          return d.settle(sig === "SIGSTOP")
        })
      agents.push({
        index,
        name,
        hostname,
        agentId,
        workDir: agentWorkDir,
        pendingUpdates: () => Procfs.pendingUpdates(agentWorkDir),
        pid: d.pid,
        logFile: d.logFile,
        kill,
        restart: Effect.gen(function*() {
          yield* kill
          const again = (yield* d.start)[1]!
          events.add("testkit", again === agentId ? `${name} restarted` : `${name} restarted as a new agent ${again}`)
          if (again !== agentId) names.set(again, name)
        }),
        pause: signal("SIGSTOP"),
        resume: signal("SIGCONT"),
        ...Proxy.agentFaults(link, "processes", security.client.tls !== undefined ? "tls" : "proxy: false")
      })
    }

    yield* reporting.finalizer
    return {
      backend: "processes",
      master: masters[0]!.endpoint,
      masterHttp: masters[0]!.httpEndpoint,
      masters,
      leader,
      agents,
      workDir,
      operator,
      security: security.client,
      events,
      etcd,
      waitFor: Common.waitFor(operator),
      report,
      faults: Proxy.clusterFaults(agents),
      advance: () =>
        Effect.fail(
          new UnsupportedFault({
            fault: "advance",
            backend: "processes",
            reason: "its masters and agents are processes of their own, on the live clock",
            remedy: 'virtual time needs TestCluster.make({ backend: "in-process", clock: "virtual" })'
          })
        ),
      now: () => clock.currentTimeMillisUnsafe()
    } satisfies TestCluster
  })
