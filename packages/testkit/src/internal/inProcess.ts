/**
 * The in-process backend: masters and agents inside the test process. Each master and each agent
 * runs in a scope of its own, so `kill` (its scope closed as a crash: an agent's tasks run on, a
 * master's lease is left to expire) and `restart` (the same work dir, port or store) work here
 * too. Several masters share a SQLite file or an etcd and elect a leader through it; agents are
 * given every master and follow the leader. Agents reach the masters through a fault-injecting
 * proxy (`proxy.ts`); with `clock: "virtual"` (one master) master and agents take their time from
 * a virtual clock (`virtualClock.ts`).
 */
import { Agent, Master } from "@berth/cluster-core"
import { DockerExecutor } from "@berth/sdk-executor"
import { EtcdServer, StateStore, StoreError } from "@berth/storage"
import { Clock, Duration, Effect, Exit, type Layer, References, Schedule, Scope, Stream } from "effect"
import { existsSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import * as Operator from "../Operator.ts"
import type { ClusterAgent, ClusterEtcd, ClusterMaster, MakeError, Options, TestCluster } from "../TestCluster.ts"
import { InvalidOptions, ProcessError, TimeoutError, UnsupportedFault } from "../TestClusterError.ts"
import * as Common from "./common.ts"
import * as EventLog from "./eventLog.ts"
import * as Leader from "./leader.ts"
import * as Procfs from "./procfs.ts"
import * as Proxy from "./proxy.ts"
import { secure } from "./security.ts"
import * as VirtualClock from "./virtualClock.ts"

/** Faults that need a process of their own: the master and agents here share the test's process. */
const unsupported = (fault: string) =>
  Effect.fail(
    new UnsupportedFault({
      fault,
      backend: "in-process",
      reason: "the master and agents run inside the test process, so no signal can reach one of them alone",
      remedy: 'use TestCluster.make({ backend: "processes" })'
    })
  )

/**
 * A master's store that a crash cuts off: after `crash()` every call fails at once. Closing a
 * master's scope would otherwise resign its leadership and revoke its lease on the way out, which
 * a SIGKILLed process never does; cut off, it leaves its lease to expire, and a standby takes over
 * a lease TTL later, as on the other backends.
 */
const crashable = (store: StateStore.StateStore["Service"], name: string) => {
  let crashed = false
  const down = (operation: string) =>
    new StoreError.StoreError({ backend: "testkit", operation, message: `${name} was killed: its store connection is gone` })
  const guard = <A, E>(operation: string, call: () => Effect.Effect<A, E>): Effect.Effect<A, E | StoreError.StoreError> =>
    Effect.suspend((): Effect.Effect<A, E | StoreError.StoreError> => (crashed ? Effect.fail(down(operation)) : call()))
  const cut: StateStore.StateStore["Service"] = {
    get: (key) => guard("get", () => store.get(key)),
    getMany: (keys) => guard("getMany", () => store.getMany(keys)),
    list: (prefix, options) => guard("list", () => store.list(prefix, options)),
    put: (key, value, options) => guard("put", () => store.put(key, value, options)),
    compareAndSet: (key, expected, value, options) => guard("compareAndSet", () => store.compareAndSet(key, expected, value, options)),
    delete: (key, options) => guard("delete", () => store.delete(key, options)),
    transaction: (ops) => guard("transaction", () => store.transaction(ops)),
    watch: (prefix, options) => Stream.suspend(() => (crashed ? Stream.fail(down("watch")) : store.watch(prefix, options))),
    revision: guard("revision", () => store.revision),
    grantLease: (ttl) => guard("grantLease", () => store.grantLease(ttl)),
    keepAlive: (lease) => guard("keepAlive", () => store.keepAlive(lease)),
    revokeLease: (lease) => guard("revokeLease", () => store.revokeLease(lease))
  }
  return { store: cut, crash: () => void (crashed = true) }
}

export const make = (options: Options): Effect.Effect<TestCluster, MakeError, Scope.Scope> =>
  Effect.gen(function*() {
    const masterCount = options.masters ?? 1
    if (!Number.isInteger(masterCount) || masterCount < 1) {
      return yield* new InvalidOptions({ field: "masters", rule: `must be an integer >= 1 (got ${masterCount})` })
    }
    // Several masters elect a leader through a store they share; a memory store is a master's own.
    const storage = options.storage ?? (masterCount > 1 ? "sqlite" : "memory")
    if (masterCount > 1) {
      if (storage === "memory") {
        return yield* new InvalidOptions({ field: "storage", rule: 'several masters need a store they share: "sqlite" or "etcd"' })
      }
      if (options.clock === "virtual") {
        return yield* new InvalidOptions({
          field: "clock",
          rule: '"virtual" drives a single master (masters: 1): leader leases expire on the store\'s real time, so several masters need clock "live"'
        })
      }
      for (const key of ["port", "httpPort"] as const) {
        const value = options.master?.[key]
        if (value !== undefined && value !== 0) {
          return yield* new InvalidOptions({ field: `master.${key}`, rule: "must be 0 (a free port each) with several masters" })
        }
      }
    }
    if (options.proxy === true && options.tls !== undefined && options.tls !== false) {
      return yield* new InvalidOptions({ field: "proxy", rule: "the fault-injecting proxy speaks plaintext only: it cannot be used with tls" })
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
    let etcd: ClusterEtcd | undefined
    if (storage === "etcd") {
      const server = yield* EtcdServer.start()
      etcd = {
        endpoint: server.endpoint,
        stop: Effect.andThen(Effect.sync(() => events.add("testkit", "etcd stopped")), server.stop),
        kill: Effect.andThen(Effect.sync(() => events.add("testkit", "etcd SIGKILL")), server.kill),
        start: Effect.tap(server.restart, () => Effect.sync(() => events.add("testkit", "etcd started")))
      }
    }
    // Each master opens the store for itself (a connection of its own, as a master process would),
    // so that a killed master's connection goes with it. A memory store is lost when it restarts.
    const etcdEndpoint = etcd?.endpoint
    const storeLayer = (): Layer.Layer<StateStore.StateStore, unknown> =>
      storage === "sqlite"
        ? StateStore.layerSqlite({ path: path.join(workDir, "registry.db") })
        : etcdEndpoint !== undefined
        ? StateStore.layerEtcd({ endpoints: [etcdEndpoint] })
        : StateStore.layerMemory
    const quiet = Effect.provideService(References.MinimumLogLevel, options.logLevel ?? "Warn")
    const count = options.agents ?? 3
    const security = yield* secure(workDir, options)

    // Masters: each in a scope of its own. `kill` cuts its store off and closes the scope (a crash:
    // no resignation, no lease revoked, so a standby leads once the lease expires); `restart`
    // starts it again on the same port and store.
    interface RunningMaster {
      readonly handle: Master.Handle
      readonly scope: Scope.Closeable
      readonly crash: () => void
    }
    const running: Array<RunningMaster | undefined> = []
    const masters: Array<ClusterMaster> = []
    for (let index = 0; index < masterCount; index++) {
      const name = `master-${index + 1}`
      let port = options.master?.port ?? 0
      let httpPort = options.master?.httpPort
      const startMaster = Effect.gen(function*() {
        const masterScope = yield* Scope.fork(scope)
        return yield* Effect.gen(function*() {
          // The store stays on real time: leases outlive a clock jump (the master's keep-alive
          // fires once per step, and the store judges expiry by the time that really passed).
          const store = yield* StateStore.make(storeLayer()).pipe(
            Effect.mapError((error) => new ProcessError({ process: name, reason: `cannot open its ${storage} store: ${String(error)}`, log: "" }))
          )
          const cut = crashable(store, name)
          const handle = yield* Master.start({
            ...options.master,
            port,
            ...(httpPort === undefined ? {} : { httpPort }),
            ...security.master
          }).pipe(Effect.provideService(StateStore.StateStore, cut.store), quiet, onClock("master"))
          // A restart keeps the ports: agents, proxies and frameworks know it by them.
          port = handle.port
          if (handle.httpEndpoint !== undefined) httpPort = Number(handle.httpEndpoint.slice(handle.httpEndpoint.lastIndexOf(":") + 1))
          return { handle, scope: masterScope, crash: cut.crash } satisfies RunningMaster
        }).pipe(Scope.provide(masterScope), Effect.onError(() => Scope.close(masterScope, Exit.void)))
      })
      const first = yield* startMaster
      running[index] = first
      const kill = Effect.suspend(() => {
        const current = running[index]
        if (current === undefined) return Effect.void
        running[index] = undefined
        // The same line as a SIGKILL of the processes backend: to the cluster it is the same crash.
        events.add("testkit", `${name} SIGKILL`)
        current.crash()
        return Scope.close(current.scope, Exit.void)
      })
      masters.push({
        index,
        name,
        endpoint: first.handle.endpoint,
        httpEndpoint: first.handle.httpEndpoint,
        pid: () => undefined,
        logFile: undefined,
        kill,
        restart: Effect.gen(function*() {
          yield* kill
          running[index] = yield* startMaster.pipe(
            // The port was just closed; the kernel may take a moment to let it go.
            Effect.retry({ times: 20, schedule: Schedule.spaced("100 millis"), while: (error) => error._tag === "StartupError" }),
            Effect.catchTag("StartupError", (error) => Effect.fail(new ProcessError({ process: name, reason: `cannot start again: ${error.message}`, log: "" })))
          )
          events.add("testkit", `${name} restarted`)
        })
      })
      events.add("testkit", `${name} started (${first.handle.endpoint})`)
    }
    const masterList = masters.map((m) => m.endpoint).join(",")
    const leaderNow = (): ClusterMaster | undefined => masters.find((m) => running[m.index]?.handle.info.leading === true)
    const clientOptions = { tls: security.client.tls, credentials: security.client.credentials?.operator }
    const endpoints = masters.map((m) => ({ index: m.index, name: m.name, endpoint: () => m.endpoint }))
    // One master: a plain client (it reconnects to the same port after a restart). Several: a
    // client that follows whichever leads, read from the masters themselves.
    const operator = masterCount === 1
      ? yield* Operator.make(masters[0]!.endpoint, clientOptions)
      : yield* Leader.following(endpoints, clientOptions, Effect.sync(() => endpoints.find((e) => e.index === leaderNow()?.index)))
    const names = new Map<string, string>()
    yield* EventLog.follow(
      events,
      Effect.sync(() => {
        const leader = leaderNow()
        return leader === undefined ? undefined : { name: leader.name, operator: Operator.make(leader.endpoint, clientOptions) }
      }),
      names
    ).pipe(Effect.forkScoped)
    const agents: Array<ClusterAgent> = []
    const links: Array<Proxy.Link> = []
    const useProxy = (options.proxy ?? true) && security.client.tls === undefined
    // Tasks a killed agent left running (and every task, when the cluster stops) end with it.
    const agentDirs: Array<string> = []
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        for (const dir of agentDirs) Procfs.killTasks(dir)
        // Docker tasks are not the agents' descendants: their containers are found by the agent
        // label instead (only when this machine has a Docker engine).
        if (!existsSync("/var/run/docker.sock")) return
        yield* Effect.forEach([...names.keys()], (agentId) => Effect.ignore(DockerExecutor.removeContainers({ agentId })), { discard: true })
      })
    )
    for (let index = 0; index < count; index++) {
      const name = `agent-${index + 1}`
      const agentWorkDir = path.join(workDir, name)
      agentDirs.push(agentWorkDir)
      const link = useProxy
        ? yield* Proxy.make({ name, masters: masters.map((m) => m.endpoint), log: (text) => events.add("testkit", text), seed: (options.seed ?? 1) + index })
        : undefined
      if (link !== undefined) links.push(link)
      const startAgent = Effect.gen(function*() {
        const agentScope = yield* Scope.fork(scope)
        const agent = yield* Agent.start({
          // Every master: the agent follows whichever leads (through its proxy's port for each).
          master: link?.endpoints.join(",") ?? masterList,
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
        ...Proxy.agentFaults(link, "in-process", security.client.tls !== undefined ? "tls" : "proxy: false")
      })
    }
    const pingMs = (options.master?.agentPingSeconds ?? Master.defaults.agentPingSeconds) * 1000
    const advance: TestCluster["advance"] = (duration, advanceOptions) => {
      if (virtual === undefined) {
        return Effect.fail(
          new UnsupportedFault({
            fault: "advance",
            backend: "in-process",
            reason: "the cluster runs on the live clock",
            remedy: 'start it with TestCluster.make({ clock: "virtual" })'
          })
        )
      }
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
      master: masters[0]!.endpoint,
      masterHttp: masters[0]!.httpEndpoint,
      masters,
      leader: Effect.sync(leaderNow),
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
