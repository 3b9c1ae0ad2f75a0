/**
 * The containers backend: every master, agent and etcd a Docker container of its own on a
 * user-defined network, started with testcontainers from the image of `images.ts`.
 *
 * Addresses. A master listens on port P inside its container and P is published on the Docker
 * host's 127.0.0.1 under the same number, so it advertises "127.0.0.1:P". The test process
 * reaches that directly; an agent reaches it through a forwarder its container runs on its own
 * 127.0.0.1:P to the master's container (see `containerSupervisor.ts`). So a standby's "the leader
 * is 127.0.0.1:P" means the same master to everyone, and a failover works as on one machine.
 * etcd is reached by the masters as `<etcd container>:2379` and by the test on a published port.
 *
 * Files. The repository (the built packages and their node_modules) is mounted read-only at its
 * own path, and the cluster's temp dir read-write at its own path: agent work dirs, the SQLite
 * registry, certificates and credentials have the same paths inside and out, so
 * `cluster.agents[i].workDir` can be read from the test.
 *
 * Faults. `kill` SIGKILLs the `berth` process inside its container (the container, like a
 * machine, stays up and its tasks run on); `restart` starts it again there. `pause` is `docker
 * pause`; `partition` disconnects the agent's container from the network and `heal` connects it
 * again. etcd's `stop`, `kill` and `start` are `docker stop`, `docker kill` and `docker start`.
 *
 * Cleanup. Every container and the network carry the labels `berth.testkit=cluster` and
 * `berth.testkit.cluster=<basename of cluster.workDir>`; when the scope closes, whatever carries
 * the cluster's label is removed (even a container whose start failed halfway), then the
 * network, then the temp dir.
 */
import type { Master } from "@berth/cluster-core"
import { Clock, Effect, type Scope } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import {
  type ContainerRuntimeClient,
  GenericContainer,
  getContainerRuntimeClient,
  Wait
} from "testcontainers"
import type * as Operator from "../Operator.ts"
import type { ClusterAgent, ClusterEtcd, ClusterMaster, MakeError, Options, TestCluster } from "../TestCluster.ts"
import { InvalidOptions, ProcessError, TimeoutError, UnsupportedFault } from "../TestClusterError.ts"
import * as Common from "./common.ts"
import type { SupervisorConfig } from "./containerSupervisor.ts"
import { berthBinary } from "./daemon.ts"
import * as EventLog from "./eventLog.ts"
import * as Images from "./images.ts"
import * as Leader from "./leader.ts"
import * as Procfs from "./procfs.ts"
import { commandLineFlags, secure } from "./security.ts"

/** Set on every container and network of every cluster (value "cluster"). */
export const LABEL = "berth.testkit"
/** Set on every container and network of one cluster: the basename of its `workDir`. */
export const CLUSTER_LABEL = "berth.testkit.cluster"

const BACKEND = "containers"
const ETCD_PORT = 2379

/** A container that publishes on the host's loopback only and runs under Docker's init. */
class BerthContainer extends GenericContainer {
  publishLoopback(containerPort: number, hostPort: number): this {
    this.withExposedPorts({ container: containerPort, host: hostPort })
    this.hostConfig.PortBindings = {
      ...this.hostConfig.PortBindings,
      [`${containerPort}/tcp`]: [{ HostIp: "127.0.0.1", HostPort: String(hostPort) }]
    }
    return this
  }
  withInit(): this {
    // Orphaned task processes of a SIGKILLed agent are reaped by it, not left as zombies.
    this.hostConfig.Init = true
    return this
  }
}

/** A free TCP port on the host's loopback (published under the same number). */
const freePort = () =>
  Effect.callback<number>((resume) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resume(Effect.succeed(port)))
    })
  })

/** The directory holding the repository's node_modules, the `berth` binary and this module. */
const repositoryRoot = (): string | undefined => {
  const berth = berthBinary()
  const here = fileURLToPath(import.meta.url)
  let dir = path.dirname(berth)
  while (true) {
    if (fs.existsSync(path.join(dir, "node_modules", "effect")) && here.startsWith(dir + path.sep)) return dir
    const parent = path.dirname(dir)
    if (parent === dir) return undefined
    dir = parent
  }
}

/** The output of one container, kept in memory (for waiting on lines) and in a log file. */
interface Output {
  readonly file: string
  text: string
  readonly attach: (stream: NodeJS.ReadableStream) => void
  readonly close: () => void
}

const output = (file: string): Output => {
  const streams: Array<NodeJS.ReadableStream & { destroy?: () => void }> = []
  const out: Output = {
    file,
    text: "",
    attach: (stream) => {
      streams.push(stream)
      stream.on("data", (chunk: string | Buffer) => {
        const text = chunk.toString()
        out.text += text
        try {
          fs.appendFileSync(file, text)
        } catch {
          // The cluster's directory is being removed.
        }
      })
      stream.on("error", () => undefined)
    },
    close: () => {
      for (const stream of streams) stream.destroy?.()
    }
  }
  return out
}

const tailOf = (text: string, lines = 20) => text.trimEnd().split("\n").slice(-lines).join("\n")

const dockerError = (process: string, what: string) => (error: unknown) =>
  new ProcessError({ process, reason: `${what}: ${error instanceof Error ? error.message : String(error)}`, log: "" })

/** Waits until `out` shows `ready` after `from`; fails when the supervisor says the daemon ended first. */
const waitForLine = (name: string, out: Output, from: number, ready: RegExp, timeoutMs: number) =>
  Effect.gen(function*() {
    const ended = new RegExp(`\\[supervisor\\] ${name} ended \\(([^)]*)\\)`)
    while (true) {
      const text = out.text.slice(from)
      const match = ready.exec(text)
      if (match !== null) return match
      const death = ended.exec(text)
      if (death !== null) {
        return yield* new ProcessError({ process: name, reason: `ended (${death[1]}) before it was ready`, log: tailOf(out.text) })
      }
      yield* Effect.sleep("50 millis")
    }
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeoutMs,
      orElse: () => Effect.fail(new TimeoutError({ description: `${name} to start`, timeoutMs }))
    })
  )

/** `berth master` flags for the master settings that have one (host and ports are the backend's). */
const masterFlags = (config: Partial<Master.Config>): Effect.Effect<Array<string>, InvalidOptions> =>
  Effect.gen(function*() {
    const flags: Array<string> = []
    const named: Record<string, [string, (v: number) => number]> = {
      allocationIntervalMs: ["--allocation-interval", (v) => v / 1000],
      offerTimeoutSeconds: ["--offer-timeout", (v) => v],
      frameworkHeartbeatSeconds: ["--heartbeat-interval", (v) => v],
      agentPingSeconds: ["--agent-ping-interval", (v) => v],
      agentPingMisses: ["--agent-ping-misses", (v) => v],
      leaderLeaseSeconds: ["--leader-lease", (v) => v]
    }
    for (const [key, value] of Object.entries(config)) {
      if (value === undefined || key === "httpPort") continue
      const flag = named[key]
      if (flag === undefined) {
        return yield* new InvalidOptions({
          field: `master.${key}`,
          rule: key === "host"
            ? "is chosen by the containers backend (the master listens on all of its container's addresses)"
            : `has no \`berth master\` flag, so the containers backend cannot set it (use backend "in-process")`
        })
      }
      flags.push(flag[0], String(flag[1](Number(value))))
    }
    return flags
  })

const positiveInteger = (field: string, value: number) =>
  Number.isInteger(value) && value >= 1 ? Effect.void : Effect.fail(new InvalidOptions({ field, rule: `must be an integer >= 1 (got ${value})` }))

/** The Docker client, or a ProcessError saying there is no engine. */
const dockerClient = Effect.tryPromise({
  try: () => getContainerRuntimeClient(),
  catch: (error) =>
    new ProcessError({
      process: "docker",
      reason: `no Docker engine (the containers backend needs one; see docs/guide/testing.md): ${error instanceof Error ? error.message : String(error)}`,
      log: ""
    })
})

/** Removes every container and network carrying `label=value` (what a cluster, or a crashed run, left). */
export const removeLabelled = async (client: ContainerRuntimeClient, label: string, value: string): Promise<void> => {
  const docker = client.container.dockerode
  const filters = { label: [`${label}=${value}`] }
  const containers = await docker.listContainers({ all: true, filters })
  await Promise.all(
    containers.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined))
  )
  const networks = await docker.listNetworks({ filters })
  for (const n of networks) await docker.getNetwork(n.Id).remove().catch(() => undefined)
}

export const make = (options: Options): Effect.Effect<TestCluster, MakeError, Scope.Scope> =>
  Effect.gen(function*() {
    const masterCount = options.masters ?? 1
    const agentCount = options.agents ?? 3
    const storage = options.storage ?? "etcd"
    yield* positiveInteger("masters", masterCount)
    yield* positiveInteger("agents", agentCount)
    if (masterCount > 1 && storage === "memory") {
      return yield* new InvalidOptions({ field: "storage", rule: 'several masters need a store they share: "sqlite" or "etcd"' })
    }
    if (options.clock === "virtual") {
      return yield* new InvalidOptions({ field: "clock", rule: 'virtual time needs backend "in-process" (containers run on real time)' })
    }
    if (options.proxy === true) {
      return yield* new InvalidOptions({
        field: "proxy",
        rule: 'the containers backend has no proxy: partitions are Docker network cuts; status update faults need backend "in-process" or "processes"'
      })
    }
    const extraMasterFlags = yield* masterFlags(options.master ?? {})
    const startTimeoutMs = options.startTimeoutMs ?? 30_000
    const root = repositoryRoot()
    if (root === undefined) {
      return yield* new ProcessError({
        process: "docker",
        reason: "the containers backend mounts the repository holding @berth/cluster-core and @berth/testkit; no directory above them has node_modules",
        log: ""
      })
    }
    const supervisor = fileURLToPath(new URL("./containerSupervisor.js", import.meta.url))
    if (!fs.existsSync(supervisor)) {
      return yield* new ProcessError({ process: "docker", reason: `${supervisor} is missing: build @berth/testkit first`, log: "" })
    }

    const client = yield* dockerClient
    const image = yield* Effect.tryPromise({ try: () => Images.ensure(client), catch: dockerError("docker", "the testkit image") })
    const docker = client.container.dockerode

    const workDir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), "berth-cluster-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }))
    )
    const clusterId = path.basename(workDir)
    const labels = { [LABEL]: "cluster", [CLUSTER_LABEL]: clusterId }
    const logs = path.join(workDir, "logs")
    fs.mkdirSync(logs)
    const clock = yield* Clock.Clock
    const events = EventLog.make(clock)
    const reported: Array<Common.ReportedProcess & { readonly out: Output }> = []
    const report = () => {
      // The log files may be gone (the cluster stopped): the report reads the kept output.
      const base = Common.report(BACKEND, workDir, events, () => [])
      const sections = reported.map((p) => {
        const pid = p.pid()
        return `----- ${p.name} (${pid === undefined ? "not running" : `pid ${pid} in its container`}), last 20 lines of ${p.logFile} -----\n${tailOf(p.out.text) || "(empty)"}`
      })
      return base.replace("===== end of cluster report =====\n", [...sections, "===== end of cluster report =====\n"].join("\n"))
    }
    const reporting = Common.reporting(options, report)
    yield* reporting.finalizer

    const network = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => client.network.create({ Name: `berth-${clusterId}`, Driver: "bridge", CheckDuplicate: true, Labels: labels }),
        catch: dockerError("docker", "cannot create the network")
      }),
      () => Effect.promise(() => removeLabelled(client, CLUSTER_LABEL, clusterId).catch(() => undefined))
    )
    const networkName = `berth-${clusterId}`
    // Containers go before the network (and a half-started one too: found by its label).
    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        for (const p of reported) p.out.close()
        const found = await docker.listContainers({ all: true, filters: { label: [`${CLUSTER_LABEL}=${clusterId}`] } }).catch(() => [])
        await Promise.all(found.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined)))
      })
    )

    const security = yield* secure(workDir, options)
    const uid = process.getuid?.() ?? 0
    const user = uid === 0 ? undefined : `${uid}:${process.getgid?.() ?? 0}`

    /** A container of the cluster, not yet started: image, network, labels, mounts, loopback ports. */
    const container = (name: string, command: ReadonlyArray<string>) => {
      const c = new BerthContainer(image)
        .withName(`${clusterId}-${name}`)
        .withHostname(name)
        // The network by name, without aliases: testcontainers would otherwise attach the
        // default bridge too. Containers find each other by container name.
        .withNetworkMode(networkName)
        .withLabels({ ...labels, "berth.testkit.role": name.replace(/-\d+$/, "") })
        .withBindMounts([
          { source: root, target: root, mode: "ro" },
          { source: workDir, target: workDir, mode: "rw" }
        ])
        .withEnvironment({ HOME: "/tmp" })
        .withCommand([...command])
        .withInit()
        .withStartupTimeout(startTimeoutMs)
      return user === undefined ? c : c.withUser(user)
    }
    const containerName = (name: string) => `${clusterId}-${name}`

    /** Starts a container and follows its output into `<workDir>/logs/<name>.log`. */
    const launch = (name: string, build: BerthContainer, waitFor: RegExp) =>
      Effect.gen(function*() {
        const out = output(path.join(logs, `${name}.log`))
        const started = yield* Effect.tryPromise({
          try: () => build.withLogConsumer((stream) => out.attach(stream)).withWaitStrategy(Wait.forLogMessage(waitFor)).start(),
          catch: (error) =>
            new ProcessError({ process: name, reason: `its container did not start: ${error instanceof Error ? error.message : String(error)}`, log: tailOf(out.text) })
        })
        return { started, out }
      })

    // --------------------------------------------------------------------- etcd
    let etcd: ClusterEtcd | undefined
    let storeUrl = storage === "memory" ? "memory:" : `sqlite:${path.join(workDir, "registry.db")}`
    if (storage === "etcd") {
      const hostPort = yield* freePort()
      const name = "etcd"
      // In the cluster's temp dir: kept across stop and start, writable by the container's user.
      const dataDir = path.join(workDir, "etcd")
      const build = container(name, [
        "etcd",
        "--name", "etcd",
        "--data-dir", dataDir,
        "--listen-client-urls", `http://0.0.0.0:${ETCD_PORT}`,
        "--advertise-client-urls", `http://${containerName(name)}:${ETCD_PORT}`,
        "--listen-peer-urls", "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", "etcd=http://127.0.0.1:2380"
      ]).publishLoopback(ETCD_PORT, hostPort)
      const { started, out } = yield* launch(name, build, /ready to serve client requests/)
      let running = true
      reported.push({ name, pid: () => (running ? 1 : undefined), logFile: out.file, out })
      storeUrl = `etcd:${containerName(name)}:${ETCD_PORT}`
      const endpoint = `http://127.0.0.1:${hostPort}`
      const handle = docker.getContainer(started.getId())
      const healthy = Effect.tryPromise(() => fetch(`${endpoint}/health`).then((r) => r.json() as Promise<{ health?: string }>)).pipe(
        Effect.map((body) => body.health === "true"),
        Effect.orElseSucceed(() => false)
      )
      const waitHealthy = Effect.gen(function*() {
        while (!(yield* healthy)) yield* Effect.sleep("100 millis")
      }).pipe(
        Effect.timeoutOrElse({
          duration: startTimeoutMs,
          orElse: () => Effect.die(new Error(`etcd did not become healthy within ${startTimeoutMs} ms; its log ends with:\n${tailOf(out.text)}`))
        })
      )
      etcd = {
        endpoint,
        stop: Effect.suspend(() => {
          events.add("testkit", "etcd stopped")
          running = false
          return Effect.promise(() => handle.stop({ t: 10 }).catch(() => undefined))
        }),
        kill: Effect.suspend(() => {
          events.add("testkit", "etcd SIGKILL")
          running = false
          return Effect.promise(() => handle.kill({ signal: "SIGKILL" }).catch(() => undefined))
        }),
        start: Effect.gen(function*() {
          const since = Math.floor(Date.now() / 1000)
          yield* Effect.promise(() => handle.start().catch(() => undefined))
          running = true
          out.attach(yield* Effect.promise(() => client.container.logs(handle, { since })))
          yield* waitHealthy
          events.add("testkit", "etcd started")
        })
      }
      events.add("testkit", `etcd started (container ${started.getId().slice(0, 12)}, ${endpoint})`)
    }

    // --------------------------------------------------------------------- security flags
    // Files the container reads are mode 0644: its berth process need not be the owner.
    const securityFlags = commandLineFlags(security, options, workDir, 0o644)

    /** A master or agent container: its supervisor runs `berth <args>`. */
    const supervised = (
      name: string,
      args: ReadonlyArray<string>,
      ready: RegExp,
      extra: { readonly forwards?: SupervisorConfig["forwards"]; readonly publish?: ReadonlyArray<number> } = {}
    ) =>
      Effect.gen(function*() {
        const pingMs = (options.master?.agentPingSeconds ?? 5) * 1000
        const config: SupervisorConfig = {
          name,
          command: ["node", berthBinary(), ...args],
          forwards: extra.forwards ?? [],
          deadAfterMs: Math.max(5000, 3 * pingMs)
        }
        let build = container(name, ["node", supervisor, JSON.stringify(config)])
        for (const port of extra.publish ?? []) build = build.publishLoopback(port, port)
        const { started, out } = yield* launch(name, build, new RegExp(`\\[supervisor\\] ${name} (started|ended)`))
        const match = yield* waitForLine(name, out, 0, ready, startTimeoutMs)
        const handle = docker.getContainer(started.getId())
        const pid = () => {
          const runs = [...out.text.matchAll(new RegExp(`\\[supervisor\\] ${name} (started \\(pid (\\d+)\\)|ended)`, "g"))]
          const last = runs.at(-1)
          return last?.[2] === undefined ? undefined : Number(last[2])
        }
        const signal = (sig: "SIGUSR1" | "SIGUSR2") =>
          Effect.tryPromise({ try: () => handle.kill({ signal: sig }), catch: dockerError(name, `cannot signal its container`) })
        const kill = Effect.gen(function*() {
          if (pid() === undefined) return
          events.add("testkit", `${name} SIGKILL`)
          const from = out.text.length
          yield* signal("SIGUSR1").pipe(Effect.orDie)
          yield* waitForLine(name, out, from, new RegExp(`\\[supervisor\\] ${name} ended`), 10_000).pipe(Effect.orDie)
        })
        const start = Effect.gen(function*() {
          const from = out.text.length
          yield* signal("SIGUSR2")
          return yield* waitForLine(name, out, from, ready, startTimeoutMs)
        })
        const paused = { value: false }
        const reportedProcess = { name, pid, logFile: out.file, out }
        reported.push(reportedProcess)
        return { started, handle, out, match, pid, kill, start, paused }
      })

    // --------------------------------------------------------------------- masters
    const masters: Array<ClusterMaster> = []
    const masterPorts: Array<number> = []
    const wantsHttp = options.master?.httpPort !== undefined
    if (wantsHttp && options.master?.httpPort !== 0) {
      return yield* new InvalidOptions({ field: "master.httpPort", rule: "must be 0 with the containers backend (each master gets a free port)" })
    }
    for (let index = 0; index < masterCount; index++) {
      const name = `master-${index + 1}`
      const port = yield* freePort()
      const httpPort = wantsHttp ? yield* freePort() : undefined
      masterPorts.push(port)
      const s = yield* supervised(
        name,
        [
          "master", "--host", "0.0.0.0", "--port", String(port), "--state", storeUrl,
          ...(httpPort === undefined ? [] : ["--http-port", String(httpPort)]),
          ...extraMasterFlags, ...securityFlags.master
        ],
        /berth master listening on (\S+)\n/,
        { publish: httpPort === undefined ? [port] : [port, httpPort] }
      )
      const endpoint = s.match[1]!
      masters.push({
        index,
        name,
        endpoint,
        httpEndpoint: httpPort === undefined ? undefined : `127.0.0.1:${httpPort}`,
        pid: () => undefined,
        logFile: s.out.file,
        kill: s.kill,
        restart: Effect.gen(function*() {
          yield* s.kill
          yield* s.start
          events.add("testkit", `${name} restarted`)
        })
      })
      events.add("testkit", `${name} started (container ${s.started.getId().slice(0, 12)}, ${endpoint})`)
    }
    const clientOptions: Operator.Options = { tls: security.client.tls, credentials: security.client.credentials?.operator }
    const { leader, operator, names } = yield* Leader.observe(masters, clientOptions, events)

    // --------------------------------------------------------------------- agents
    const agents: Array<ClusterAgent> = []
    const partitioned = new Set<number>()
    const unsupported = (fault: string, reason: string, remedy: string) => Effect.fail(new UnsupportedFault({ fault, backend: BACKEND, reason, remedy }))
    const noProxy = () =>
      unsupported(
        "status update faults",
        "it has no fault proxy (agents reach the masters over a Docker network)",
        'use TestCluster.make({ backend: "in-process" }) or "processes"'
      )
    // Agents start side by side (each waits only for its own registration); their "started" lines
    // go into the event log in index order once all have registered.
    const makeAgent = (index: number) => Effect.gen(function*() {
      const name = `agent-${index + 1}`
      const hostname = `${name}.test`
      const agentWorkDir = path.join(workDir, name)
      fs.mkdirSync(agentWorkDir)
      const s = yield* supervised(
        name,
        [
          "agent",
          "--master", masterPorts.map((p) => `127.0.0.1:${p}`).join(","),
          "--work-dir", agentWorkDir,
          "--hostname", hostname,
          "--resources", options.agentResources ?? "cpus:2;mem:2048;disk:4096;ports:[31000-31999]",
          "--attributes", options.agentAttributes?.(index) ?? `rack:r${(index % 3) + 1}`,
          "--status-update-retry-min", String(options.statusUpdateRetrySeconds ?? 10),
          ...securityFlags.agent
        ],
        /berth agent (\S+) registered/,
        { forwards: masterPorts.map((port, i) => ({ port, host: containerName(`master-${i + 1}`) })) }
      )
      const agentId = s.match[1]!
      names.set(agentId, name)
      const started = `${name} started (container ${s.started.getId().slice(0, 12)}, ${agentId})`
      const dockerCall = (what: string, call: () => Promise<unknown>) =>
        Effect.tryPromise({ try: call, catch: dockerError(name, what) }).pipe(Effect.asVoid)
      const partition = Effect.gen(function*() {
        if (partitioned.has(index)) return
        events.add("testkit", `${name} disconnected from the network`)
        partitioned.add(index)
        yield* dockerCall("docker network disconnect", () => docker.getNetwork(network.id).disconnect({ Container: s.started.getId(), Force: true }))
      }).pipe(Effect.orDie)
      const heal = Effect.gen(function*() {
        if (!partitioned.has(index)) return
        yield* dockerCall("docker network connect", () => docker.getNetwork(network.id).connect({ Container: s.started.getId() }))
        partitioned.delete(index)
        events.add("testkit", `${name} reconnected to the network`)
      }).pipe(Effect.orDie)
      const agent: ClusterAgent = {
        index,
        name,
        hostname,
        agentId,
        workDir: agentWorkDir,
        pendingUpdates: () => Procfs.pendingUpdates(agentWorkDir),
        pid: () => undefined,
        logFile: s.out.file,
        kill: s.kill,
        restart: Effect.gen(function*() {
          yield* s.kill
          const again = (yield* s.start)[1]!
          events.add("testkit", again === agentId ? `${name} restarted` : `${name} restarted as a new agent ${again}`)
          if (again !== agentId) names.set(again, name)
        }),
        pause: Effect.gen(function*() {
          if (s.paused.value) return
          events.add("testkit", `${name} paused (docker pause)`)
          yield* dockerCall("docker pause", () => s.handle.pause())
          s.paused.value = true
        }),
        resume: Effect.gen(function*() {
          if (!s.paused.value) return
          yield* dockerCall("docker unpause", () => s.handle.unpause())
          s.paused.value = false
          events.add("testkit", `${name} resumed (docker unpause)`)
        }),
        partition,
        heal,
        statusUpdates: noProxy,
        link: () => undefined
      }
      return { agent, started }
    })
    const made = yield* Effect.forEach(Array.from({ length: agentCount }, (_, i) => i), makeAgent, { concurrency: "unbounded" })
    for (const { agent, started } of made) {
      agents.push(agent)
      events.add("testkit", started)
    }

    yield* reporting.finalizer
    const cluster: TestCluster = {
      backend: BACKEND,
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
      report: reporting.report,
      faults: {
        statusUpdates: noProxy,
        clear: Effect.forEach(agents, (a) => a.heal, { discard: true })
      },
      advance: () =>
        unsupported("advance", "containers run on the live clock", 'virtual time needs TestCluster.make({ backend: "in-process", clock: "virtual" })'),
      now: () => clock.currentTimeMillisUnsafe()
    }
    return cluster
  })
