/**
 * The in-process backend: master and agents inside the test process. Each agent runs in a scope
 * of its own, so `kill` (its scope closed without stopping its tasks, as a crash) and `restart`
 * (a new agent on the same work dir, which re-attaches to them) work here too. Agents reach the
 * master through a fault-injecting proxy (`proxy.ts`); with `clock: "virtual"` master and agents
 * take their time from a virtual clock (`virtualClock.ts`).
 */
import { Agent, Master } from "@berth/cluster-core"
import { EtcdServer, StateStore } from "@berth/storage"
import { Clock, Duration, Effect, Exit, Layer, References, Scope } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import * as Operator from "../Operator.ts"
import type { ClusterAgent, ClusterEtcd, ClusterMaster, MakeError, Options, TestCluster } from "../TestCluster.ts"
import { InvalidOptions, ProcessError, TimeoutError, UnsupportedFault } from "../TestClusterError.ts"
import * as Common from "./common.ts"
import * as EventLog from "./eventLog.ts"
import * as Procfs from "./procfs.ts"
import * as Proxy from "./proxy.ts"
import { secure } from "./security.ts"
import * as VirtualClock from "./virtualClock.ts"

const unsupported = (fault: string) => Effect.fail(new UnsupportedFault({ fault, backend: "in-process" }))

export const make = (options: Options): Effect.Effect<TestCluster, MakeError, Scope.Scope> =>
  Effect.gen(function*() {
    if ((options.masters ?? 1) !== 1) {
      return yield* new InvalidOptions({ field: "masters", rule: 'several masters need backend "processes"' })
    }
    const workDir = yield* Effect.acquireRelease(
      Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "berth-cluster-"))),
      (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }))
    )
    const liveClock = yield* Clock.Clock
    const virtual = options.clock === "virtual" ? VirtualClock.make(liveClock) : undefined
    const onClock = (phase: VirtualClock.Phase) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      virtual === undefined ? effect : Effect.provideService(effect, Clock.Clock, virtual.view(phase))
    const events = EventLog.make(virtual?.view("master") ?? liveClock)
    const reporting = Common.reporting(options, () => Common.report("in-process", workDir, events, () => []))
    const report = reporting.report
    yield* reporting.finalizer
    const scope = yield* Scope.Scope
    const storage = options.storage ?? "memory"
    let etcd: ClusterEtcd | undefined
    let storeLayer: Layer.Layer<StateStore.StateStore, unknown> = StateStore.layerMemory
    if (storage === "sqlite") storeLayer = StateStore.layerSqlite({ path: path.join(workDir, "registry.db") })
    if (storage === "etcd") {
      const server = yield* EtcdServer.start()
      storeLayer = StateStore.layerEtcd({ endpoints: [server.endpoint] })
      etcd = {
        endpoint: server.endpoint,
        stop: Effect.andThen(Effect.sync(() => events.add("testkit", "etcd stopped")), server.stop),
        kill: Effect.andThen(Effect.sync(() => events.add("testkit", "etcd SIGKILL")), server.kill),
        start: Effect.tap(server.restart, () => Effect.sync(() => events.add("testkit", "etcd started")))
      }
    }
    const storeContext = yield* Layer.build(storeLayer).pipe(Effect.orDie)
    const quiet = Effect.provideService(References.MinimumLogLevel, options.logLevel ?? "Warn")
    const count = options.agents ?? 3
    const security = yield* secure(workDir, options)
    // The store stays on real time: leases outlive a clock jump (the master's keep-alive fires once
    // per step, and the store judges expiry by the time that really passed).
    const master = yield* Master.start({ port: 0, ...options.master, ...security.master }).pipe(
      Effect.provide(storeContext),
      quiet,
      onClock("master")
    )
    const clientOptions = { tls: security.client.tls, credentials: security.client.credentials?.operator }
    const operator = yield* Operator.make(master.endpoint, clientOptions)
    const clusterMaster: ClusterMaster = {
      index: 0,
      name: "master-1",
      endpoint: master.endpoint,
      httpEndpoint: master.httpEndpoint,
      pid: () => undefined,
      logFile: undefined,
      kill: unsupported("master kill"),
      restart: unsupported("master restart")
    }
    const names = new Map<string, string>()
    yield* EventLog.follow(
      events,
      Effect.succeed({ name: "master-1", operator: Operator.make(master.endpoint, clientOptions) }),
      names
    ).pipe(Effect.forkScoped)
    const agents: Array<ClusterAgent> = []
    const links: Array<Proxy.Link> = []
    const useProxy = (options.proxy ?? true) && security.client.tls === undefined
    if (options.proxy === true && security.client.tls !== undefined) {
      return yield* new InvalidOptions({ field: "proxy", rule: "the fault-injecting proxy speaks plaintext only: it cannot be used with tls" })
    }
    // Tasks a killed agent left running (and every task, when the cluster stops) end with it.
    const agentDirs: Array<string> = []
    yield* Effect.addFinalizer(() => Effect.sync(() => {
      for (const dir of agentDirs) Procfs.killTasks(dir)
    }))
    for (let index = 0; index < count; index++) {
      const name = `agent-${index + 1}`
      const agentWorkDir = path.join(workDir, name)
      agentDirs.push(agentWorkDir)
      const link = useProxy
        ? yield* Proxy.make({ name, masters: [master.endpoint], log: (text) => events.add("testkit", text), seed: (options.seed ?? 1) + index })
        : undefined
      if (link !== undefined) links.push(link)
      const startAgent = Effect.gen(function*() {
        const agentScope = yield* Scope.fork(scope)
        const agent = yield* Agent.start({
          master: link?.endpoints[0] ?? master.endpoint,
          workDir: agentWorkDir,
          hostname: `${name}.test`,
          resources: options.agentResources ?? "cpus:2;mem:2048;disk:4096;ports:[31000-31999]",
          attributes: options.agentAttributes?.(index) ?? `rack:r${(index % 3) + 1}`,
          statusUpdateRetrySeconds: options.statusUpdateRetrySeconds ?? 10,
          // Closing the scope is then a crash: the tasks run on for the next agent to re-attach.
          killTasksOnStop: false,
          ...(security.client.tls === undefined ? {} : { tls: security.client.tls }),
          ...(security.client.credentials?.agent === undefined || security.authentication?.agents === false
            ? {}
            : { credentials: security.client.credentials.agent })
        }).pipe(Scope.provide(agentScope), quiet, onClock("agent"))
        const agentId = yield* agent.registered.pipe(
          Effect.timeoutOrElse({
            duration: "20 seconds",
            orElse: () => Effect.fail(new TimeoutError({ description: `${name} to register`, timeoutMs: 20_000 }))
          })
        )
        return { agent, agentId, scope: agentScope }
      })
      let running: { readonly agent: Agent.Handle; readonly agentId: string; readonly scope: Scope.Closeable } | undefined = yield* startAgent
      const agentId = running.agentId
      names.set(agentId, name)
      events.add("testkit", `${name} started (${agentId})`)
      const kill = Effect.suspend(() => {
        const current = running
        if (current === undefined) return Effect.void
        running = undefined
        // The same line as a SIGKILL of the processes backend: to the cluster it is the same crash.
        events.add("testkit", `${name} SIGKILL`)
        return Scope.close(current.scope, Exit.void)
      })
      agents.push({
        index,
        name,
        hostname: `${name}.test`,
        agentId,
        workDir: agentWorkDir,
        pendingUpdates: () => running?.agent.pendingUpdates() ?? Procfs.pendingUpdates(agentWorkDir),
        pid: () => undefined,
        logFile: undefined,
        kill,
        restart: Effect.gen(function*() {
          yield* kill
          running = yield* startAgent.pipe(
            Effect.catchTag("StartupError", (error) => Effect.fail(new ProcessError({ process: name, reason: `cannot start again: ${error.message}`, log: "" })))
          )
          events.add("testkit", running.agentId === agentId ? `${name} restarted` : `${name} restarted as a new agent ${running.agentId}`)
          if (running.agentId !== agentId) names.set(running.agentId, name)
        }),
        pause: unsupported("agent pause (SIGSTOP)"),
        resume: unsupported("agent resume (SIGCONT)"),
        ...Proxy.agentFaults(link, "in-process")
      })
    }
    const pingMs = (options.master?.agentPingSeconds ?? Master.defaults.agentPingSeconds) * 1000
    const advance: TestCluster["advance"] = (duration, advanceOptions) => {
      if (virtual === undefined) return Effect.fail(new UnsupportedFault({ fault: 'advance (start the cluster with clock: "virtual")', backend: "in-process" }))
      const ms = Duration.toMillis(Duration.fromInputUnsafe(duration))
      const stepMs = advanceOptions?.step === undefined ? ms : Duration.toMillis(Duration.fromInputUnsafe(advanceOptions.step))
      return Effect.gen(function*() {
        events.add("testkit", `clock advanced by ${Duration.format(Duration.millis(ms))}`)
        yield* virtual.advance(ms, Math.max(1, stepMs), {
          // A step at least a ping interval long woke every agent's ping: wait (real time, at most
          // 5 s) until each connected agent has a pong from after the step, so the master's
          // ping check that comes next sees it alive.
          agents: (step) =>
            Effect.gen(function*() {
              const before = links.map((l) => (l.connected() ? l.pongs() : undefined))
              yield* Effect.sleep("5 millis")
              if (step < pingMs) return
              for (let i = 0; i < 1000; i++) {
                if (links.every((l, k) => before[k] === undefined || !l.connected() || l.pongs() > before[k]!)) return
                yield* Effect.sleep("5 millis")
              }
            }).pipe(Effect.provideService(Clock.Clock, liveClock)),
          master: Effect.sleep("5 millis").pipe(Effect.provideService(Clock.Clock, liveClock))
        })
      })
    }
    yield* reporting.finalizer
    return {
      backend: "in-process",
      master: master.endpoint,
      masterHttp: master.httpEndpoint,
      masters: [clusterMaster],
      leader: Effect.sync(() => (master.info.leading ? clusterMaster : undefined)),
      agents,
      workDir,
      operator,
      security: security.client,
      events,
      etcd,
      waitFor: Common.waitFor(operator),
      report,
      faults: Proxy.clusterFaults(agents),
      advance,
      now: () => virtual?.now() ?? liveClock.currentTimeMillisUnsafe()
    }
  })
