/** The in-process backend: master and agents inside the test process. */
import { Agent, Master } from "@berth/cluster-core"
import { EtcdServer, StateStore } from "@berth/storage"
import { Clock, Effect, Layer, References, Scope } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import * as Operator from "../Operator.ts"
import type { ClusterAgent, ClusterEtcd, ClusterMaster, MakeError, Options, TestCluster } from "../TestCluster.ts"
import { InvalidOptions, TimeoutError, UnsupportedFault } from "../TestClusterError.ts"
import * as Common from "./common.ts"
import * as EventLog from "./eventLog.ts"
import { secure } from "./security.ts"

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
    const events = EventLog.make(yield* Clock.Clock)
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
    const master = yield* Master.start({ port: 0, ...options.master, ...security.master }).pipe(
      Effect.provide(storeContext),
      quiet
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
    for (let index = 0; index < count; index++) {
      const name = `agent-${index + 1}`
      const agentWorkDir = path.join(workDir, name)
      const agent = yield* Agent.start({
        master: master.endpoint,
        workDir: agentWorkDir,
        hostname: `${name}.test`,
        resources: options.agentResources ?? "cpus:2;mem:2048;disk:4096;ports:[31000-31999]",
        attributes: options.agentAttributes?.(index) ?? `rack:r${(index % 3) + 1}`,
        statusUpdateRetrySeconds: options.statusUpdateRetrySeconds ?? 10,
        ...(security.client.tls === undefined ? {} : { tls: security.client.tls }),
        ...(security.client.credentials?.agent === undefined || security.authentication?.agents === false
          ? {}
          : { credentials: security.client.credentials.agent })
      }).pipe(Scope.provide(scope), quiet)
      const agentId = yield* agent.registered.pipe(
        Effect.timeoutOrElse({
          duration: "20 seconds",
          orElse: () => Effect.fail(new TimeoutError({ description: `agent ${index + 1} to register`, timeoutMs: 20_000 }))
        })
      )
      names.set(agentId, name)
      agents.push({
        index,
        name,
        hostname: `${name}.test`,
        agentId,
        workDir: agentWorkDir,
        pendingUpdates: agent.pendingUpdates,
        pid: () => undefined,
        logFile: undefined,
        kill: unsupported("agent kill"),
        restart: unsupported("agent restart"),
        pause: unsupported("agent pause (SIGSTOP)"),
        resume: unsupported("agent resume (SIGCONT)")
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
      report
    }
  })
