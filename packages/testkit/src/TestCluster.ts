/**
 * Whole Berth clusters for integration tests, with one API over three backends:
 *
 * - `"in-process"` (the default): master and agents inside the test process (real gRPC on
 *   127.0.0.1, real child processes for tasks, temp work dirs). The fastest.
 * - `"processes"`: every master and agent a `berth` child process of its own (the installed
 *   `@berth/cluster-core` binary), so real signals apply: `cluster.agents[i].kill()` (SIGKILL),
 *   `.restart()` (same work dir: the agent recovers its tasks), `.pause()` / `.resume()` (SIGSTOP /
 *   SIGCONT: it looks partitioned), `cluster.masters[i].kill()` / `.restart()`, `cluster.leader`,
 *   `cluster.etcd.stop()` / `.start()`.
 * - `"containers"`: every master, agent and etcd a Docker container (testcontainers) on a network
 *   of the cluster's own; `partition` / `.heal` disconnect and reconnect the agent's container,
 *   `pause` is `docker pause` (see the "Containers backend" section of docs/guide/testing.md).
 *
 * On the first two, agents reach the masters through a fault-injecting proxy: `agents[i].partition` /
 * `.heal` cut and restore the link, `agents[i].statusUpdates({ drop, duplicate, delayMs })` and
 * `cluster.faults.statusUpdates(...)` disturb status updates. In process, `agents[i].kill` /
 * `.restart` and `masters[i].kill` / `.restart` are a simulated crash (the agent's or master's
 * scope closes; an agent's tasks run on, a master's lease is left to expire) and
 * `clock: "virtual"` with `cluster.advance(duration)` skips time. `layer(options)` serves
 * `@effect/vitest`; `Simulation.simulate` runs a framework under seeded faults.
 *
 * Everything lives as long as the enclosing scope (or, for Promise users, until `await using`
 * ends): processes are killed by pid, task processes left by killed agents too, temp dirs removed.
 * `cluster.events` logs what the master reported (its WatchEvents stream) and what the testkit did,
 * in order; when the scope closes with a failure, the log and every process's last log lines are
 * written to stderr.
 *
 * @example
 * ```ts
 * import { TestCluster } from "@berth/testkit"
 *
 * it.live("an agent killed and restarted keeps its tasks", () => Effect.gen(function*() {
 *   const cluster = yield* TestCluster.make({ backend: "processes", agents: 2 })
 *   // point a framework at cluster.master, launch tasks ...
 *   yield* cluster.agents[0].kill
 *   yield* cluster.agents[0].restart
 *   yield* cluster.waitFor("all tasks running", (s) => s.tasks.every((t) => t.state === v1.TaskState.RUNNING))
 * }))
 *
 * // Promise style
 * await using cluster = await TestCluster.start({ backend: "processes", agents: 3 })
 * ```
 */
import type { ClusterError, Master, Security } from "@berth/cluster-core"
import { type v1 } from "@berth/proto"
import type { EtcdServer } from "@berth/storage"
import { Clock, Context, type Duration, Effect, Exit, Layer, type LogLevel, Scope } from "effect"
import type * as Certificates from "./Certificates.ts"
import * as Common from "./internal/common.ts"
import * as Containers from "./internal/containers.ts"
import * as InProcess from "./internal/inProcess.ts"
import * as Processes from "./internal/processes.ts"
import type * as Operator from "./Operator.ts"
import type { InvalidOptions, ProcessError, TimeoutError, UnsupportedFault } from "./TestClusterError.ts"
import type * as Proxy from "./internal/proxy.ts"
import * as VirtualClock from "./internal/virtualClock.ts"

/**
 * How status updates from an agent to the master are disturbed by its proxy: `drop` and
 * `duplicate` take a probability in [0, 1] (drawn from a seeded RNG, so a run replays) or
 * `{ next: n }` (the next n updates); `delayMs` holds each update that long (real time).
 */
export type UpdateFaults = Proxy.UpdateFaults

/** What an agent's proxy has done so far (updates forwarded, dropped, duplicated, delayed, ...). */
export type LinkStats = Proxy.LinkStats

export type Backend = "in-process" | "processes" | "containers"

export interface Options {
  /**
   * Where the masters and agents run: `"in-process"` (default) inside the test process, or
   * `"processes"`, each a `berth` child process of its own (signals, crashes, real recovery), or
   * `"containers"`, each (and etcd) a Docker container on a network of its own (needs a Docker
   * engine; see the "Containers backend" section of `docs/guide/testing.md`).
   */
  readonly backend?: Backend
  /**
   * Number of masters (default 1). Several elect a leader through a store they share, so they
   * need `storage: "sqlite"` or `"etcd"` (in process, SQLite is then the default); in process
   * they cannot run on `clock: "virtual"`.
   */
  readonly masters?: number
  /**
   * The masters' durable registry: `"memory"` (default in process with one master; lost when a master restarts),
   * `"sqlite"` (a file in the cluster's temp dir; the default with the processes backend) or
   * `"etcd"` (a real etcd started for the cluster, see `cluster.etcd`; needs the `etcd` binary).
   */
  readonly storage?: "memory" | "sqlite" | "etcd"
  /**
   * When the cluster's scope closes with a failure, write the event log and every process's last
   * log lines to stderr (default `true`); a function receives the report instead.
   */
  readonly dumpOnFailure?: boolean | ((report: string) => void)
  /** Milliseconds a master or agent process may take to start (processes backend, default 20000). */
  readonly startTimeoutMs?: number
  /** Number of agents (default 3). */
  readonly agents?: number
  /** Resources of every agent (default "cpus:2;mem:2048;disk:4096;ports:[31000-31999]"). */
  readonly agentResources?: string
  /** Attributes of agent `i` (0-based); default "rack:r<i mod 3 + 1>". */
  readonly agentAttributes?: (index: number) => string
  /**
   * Master settings (the allocation interval, offer timeout, ...). With the processes backend only
   * those with a `berth master` flag: `allocationIntervalMs`, `offerTimeoutSeconds`,
   * `frameworkHeartbeatSeconds`, `agentPingSeconds`, `agentPingMisses`, `leaderLeaseSeconds`,
   * `httpPort`, `host`.
   */
  readonly master?: Partial<Master.Config>
  /** Seconds between resends of unacknowledged status updates (default 10). */
  readonly statusUpdateRetrySeconds?: number
  /**
   * The in-process cluster's log level (default "Warn", so test output shows what matters).
   * Processes log at their own level into their log files.
   */
  readonly logLevel?: LogLevel.LogLevel
  /**
   * TLS on the master's gRPC port, with a throwaway CA made by `openssl` for the test: `true`
   * (server certificate) or `"mutual"` (clients must present a certificate the CA signed).
   * Clients find what they need in `cluster.security.tls`.
   */
  readonly tls?: boolean | "mutual"
  /**
   * Authentication on the master. The cluster writes a credentials file with the principals
   * `framework`, `operator` and `agent` (random secrets, in `cluster.security.credentials`) plus
   * `principals`. `true` or `{}`: everyone must authenticate; a key set to false turns one kind
   * off, as in the master's config (`{ agents: false }`).
   */
  readonly authentication?: boolean | Partial<Security.Authentication>
  /** More principals for the credentials file. */
  readonly principals?: Security.CredentialsFile["credentials"]
  /** The master's ACLs (roles per framework principal, operator principals). */
  readonly acls?: Security.AclsFile
  /**
   * Put a fault-injecting proxy between every agent and the masters (default `true` without TLS;
   * not available with TLS). It is what `agent.partition` / `heal` and `agent.statusUpdates(...)`
   * / `cluster.faults.statusUpdates(...)` work through. In-process and processes backends.
   */
  readonly proxy?: boolean
  /**
   * `"virtual"` (in-process backend only): the master and agents take their time from a virtual
   * clock that runs with real time but moves forward at once with `cluster.advance(duration)`, so
   * a week-long failover timeout passes in moments. See `advance` for what moves when.
   */
  readonly clock?: "live" | "virtual"
  /** Seed of the proxies' RNGs (probabilistic status update faults), default 1. */
  readonly seed?: number
}


/** What a client needs to reach a secured test cluster. */
export interface ClusterSecurity {
  /** TLS settings for clients (`tls` of `SchedulerSession.layer` and `Operator.make`); undefined without TLS. */
  readonly tls: Security.ClientTls | undefined
  /** The generated principals' credentials (undefined without authentication). */
  readonly credentials:
    | {
      readonly framework: { readonly principal: string; readonly secret: string }
      readonly operator: { readonly principal: string; readonly secret: string }
      readonly agent: { readonly principal: string; readonly secret: string }
    }
    | undefined
  /** The generated certificate files (undefined without TLS). */
  readonly certificates: Certificates.Certificates | undefined
  /** The credentials file the master runs with. */
  readonly credentialsFile: string | undefined
}

export interface ClusterAgent {
  readonly index: number
  /** "agent-1", "agent-2", ...: the name in the event log and in log file names. */
  readonly name: string
  /** "agent-1.test", ...: the hostname the agent reports. */
  readonly hostname: string
  readonly agentId: string
  readonly workDir: string
  /**
   * Status updates the agent holds because they are not acknowledged yet (with the processes
   * backend, read from the update logs of its checkpoint).
   */
  readonly pendingUpdates: () => number
  /** The agent process's pid while it runs (processes backend). */
  readonly pid: () => number | undefined
  /** The file its stdout and stderr go to (processes backend). */
  readonly logFile: string | undefined
  /** SIGKILL, as a crash: its tasks keep running. Waits until the process is gone. */
  readonly kill: Effect.Effect<void, UnsupportedFault>
  /**
   * Starts it again on the same work dir (SIGKILLing it first if it runs): it recovers its tasks
   * and re-registers under the same id. Completes once it has registered.
   */
  readonly restart: Effect.Effect<void, UnsupportedFault | ProcessError | TimeoutError>
  /** SIGSTOP: the agent falls silent (its tasks run on), so the master sees it as partitioned. */
  readonly pause: Effect.Effect<void, UnsupportedFault | ProcessError>
  /** SIGCONT after `pause`. */
  readonly resume: Effect.Effect<void, UnsupportedFault | ProcessError>
  /**
   * Cuts the network between this agent and the masters (its proxy breaks every open stream and
   * refuses new ones): the master sees it disconnect and, after its ping timeout, marks it and its
   * tasks UNREACHABLE. Its tasks keep running.
   */
  readonly partition: Effect.Effect<void, UnsupportedFault>
  /** Ends a partition: the agent reconnects, re-registers, and its tasks return to RUNNING. */
  readonly heal: Effect.Effect<void, UnsupportedFault>
  /**
   * Disturbs this agent's status updates from now on (replacing earlier rules); `undefined` or
   * `{}` stops disturbing them.
   */
  readonly statusUpdates: (faults: UpdateFaults | undefined) => Effect.Effect<void, UnsupportedFault | InvalidOptions>
  /** What the agent's proxy has done (undefined without a proxy). */
  readonly link: () => LinkStats | undefined
}

export interface ClusterMaster {
  readonly index: number
  /** "master-1", ... */
  readonly name: string
  /** "host:port" (a restarted master keeps its port). */
  readonly endpoint: string
  /** "host:port" of `/metrics` and `/health`, when `master.httpPort` was given. */
  readonly httpEndpoint: string | undefined
  readonly pid: () => number | undefined
  readonly logFile: string | undefined
  /**
   * SIGKILL. Waits until the process is gone. In process, a crash of the master's scope: its store
   * connection is cut first, so it neither resigns nor revokes its lease (a standby leads once the
   * lease expires).
   */
  readonly kill: Effect.Effect<void, UnsupportedFault>
  /**
   * Starts it again (SIGKILLing it first if it runs), on the same port and store. It comes back as
   * a standby while the lease it left behind lasts.
   */
  readonly restart: Effect.Effect<void, UnsupportedFault | ProcessError | TimeoutError>
}

/** The cluster's etcd (with `storage: "etcd"`). */
export interface ClusterEtcd {
  /** Client URL, e.g. "http://127.0.0.1:40123". */
  readonly endpoint: string
  /** SIGTERM; the data is kept. */
  readonly stop: Effect.Effect<void>
  /** SIGKILL, as a crash; the data is kept. */
  readonly kill: Effect.Effect<void>
  /** Starts it again on the same ports with the same data; completes once it is healthy. */
  readonly start: Effect.Effect<void, EtcdServer.EtcdServerError>
}

/** One line of the cluster event log. */
export interface ClusterEvent {
  /** Position in the log, from 0. */
  readonly seq: number
  /** Wall-clock time it was recorded. */
  readonly atMs: number
  /**
   * `"master"`: from the leading master's event stream; `"testkit"`: something the testkit did
   * (a signal, a restart) or saw (a process exiting, the event stream moving to a new leader);
   * `"test"`: recorded by the test with `record`.
   */
  readonly source: "master" | "testkit" | "test"
  /** e.g. "agent-2 SIGKILL", "master-1 restarted", "task web-1 RUNNING on agent-1". */
  readonly text: string
}

export interface EventLog {
  /** Every event so far, in the order recorded. */
  readonly all: () => ReadonlyArray<ClusterEvent>
  /** The texts of every event so far. */
  readonly texts: () => ReadonlyArray<string>
  /** Adds a line of the test's own (a marker to read the log by). */
  readonly record: (text: string) => void
  /** Waits until an event at or after `since` (a `seq`, default 0) matches (default timeout 30 s). */
  readonly waitFor: (
    description: string,
    match: (event: ClusterEvent) => boolean,
    options?: { readonly timeout?: number; readonly since?: number }
  ) => Effect.Effect<ClusterEvent, TimeoutError>
  /** The log as text, one event a line with its time since the cluster started. */
  readonly format: () => string
}

export interface TestCluster {
  readonly backend: Backend
  /** The first master's "host:port": what a framework under test connects to. */
  readonly master: string
  /** The first master's HTTP endpoint (`/metrics`, `/health`) when `master.httpPort` was given. */
  readonly masterHttp: string | undefined
  readonly masters: ReadonlyArray<ClusterMaster>
  /** Asks the masters which one leads now (undefined while none does). */
  readonly leader: Effect.Effect<ClusterMaster | undefined>
  readonly agents: ReadonlyArray<ClusterAgent>
  /** The temp directory holding every work dir and log (removed when the cluster stops). */
  readonly workDir: string
  /**
   * The operator API, with the `operator` principal's credentials and the cluster's TLS. Its
   * calls go to the leading master (found again after a failover).
   */
  readonly operator: Operator.Operator
  readonly security: ClusterSecurity
  /** The cluster event log. */
  readonly events: EventLog
  /** The cluster's etcd, with `storage: "etcd"`. */
  readonly etcd: ClusterEtcd | undefined
  /**
   * Polls the leading master's state until `condition` holds (default timeout 30 s). While no
   * master answers (a failover, a restart) it keeps polling.
   */
  readonly waitFor: (
    description: string,
    condition: (state: v1.GetStateResponse) => boolean,
    options?: { readonly timeout?: number }
  ) => Effect.Effect<v1.GetStateResponse, TimeoutError | Operator.OperatorError>
  /**
   * The failure report: the event log and each process's last log lines (once the cluster has
   * stopped, as they were when it stopped).
   */
  readonly report: () => string
  /** Faults that concern every agent at once. */
  readonly faults: ClusterFaults
  /**
   * With `clock: "virtual"`: moves the cluster's clock forward by `duration`, in steps of at most
   * `step` (default: the whole duration at once). In each step every timer that fell due fires
   * once: the agents' first (their pings then reach the master), then the master's (heartbeats,
   * ping checks, offer expiry, failover timeouts, the allocator). Other clusters fail with
   * UnsupportedFault. See `docs/guide/testing.md`, "Virtual time".
   *
   * @example
   * ```ts
   * const cluster = yield* TestCluster.make({ clock: "virtual" })
   * // a framework with failoverTimeoutSeconds: 7 * 86400 subscribes, then goes away
   * yield* cluster.advance("6 days")  // still there
   * yield* cluster.advance("1 day")   // torn down
   * ```
   */
  readonly advance: (duration: Duration.Input, options?: { readonly step?: Duration.Input }) => Effect.Effect<void, UnsupportedFault>
  /** The cluster's current time in ms (virtual with `clock: "virtual"`). */
  readonly now: () => number
}

export interface ClusterFaults {
  /** `agent.statusUpdates(faults)` for every agent. */
  readonly statusUpdates: (faults: UpdateFaults | undefined) => Effect.Effect<void, UnsupportedFault | InvalidOptions>
  /** Heals every partition and stops disturbing status updates. */
  readonly clear: Effect.Effect<void, UnsupportedFault>
}

export type MakeError =
  | ClusterError.StartupError
  | TimeoutError
  | Certificates.CertificateError
  | ProcessError
  | InvalidOptions
  | EtcdServer.EtcdServerError

/** Starts a cluster that lives as long as the enclosing scope. */
export const make = (options: Options = {}): Effect.Effect<TestCluster, MakeError, Scope.Scope> =>
  options.backend === "containers"
    ? Containers.make(options)
    : (options.backend ?? "in-process") === "processes"
    ? Processes.make(options)
    : InProcess.make(options)

/** The cluster of `layer`, as a service. */
export class Cluster extends Context.Service<Cluster, TestCluster>()("@berth/testkit/TestCluster") {}

/**
 * A cluster as a layer (it stops when the layer's scope closes), for `@effect/vitest`'s `layer`
 * and `it.layer`: one cluster shared by the tests of a block. It is built and runs on the real
 * clock even where the test runs on a `TestClock` (`it.effect`): its waits, faults and restarts
 * take real time; use `clock: "virtual"` and `cluster.advance` to skip time in the cluster.
 *
 * @example
 * ```ts
 * import { layer } from "@effect/vitest"
 *
 * layer(TestCluster.layer({ agents: 3 }), { timeout: "60 seconds" })("my framework", (it) => {
 *   it.effect("sees three agents", () =>
 *     Effect.gen(function*() {
 *       const cluster = yield* TestCluster.Cluster
 *       yield* cluster.waitFor("three agents", (s) => s.agents.length === 3)
 *     }))
 * })
 * ```
 */
export const layer = (options: Options = {}): Layer.Layer<Cluster, MakeError> =>
  Layer.effect(Cluster, Effect.map(make(options), VirtualClock.bindToLiveClock).pipe(Effect.provideService(Clock.Clock, VirtualClock.liveClock)))

/** A cluster for Promise users: stop it with `await cluster.stop()` or `await using`. */
export interface RunningCluster extends TestCluster, AsyncDisposable {
  /**
   * Stops everything. `{ failed: true }` writes the failure report first (as the Effect API does
   * when its scope fails), e.g. from vitest's `onTestFailed`.
   */
  readonly stop: (options?: { readonly failed?: boolean }) => Promise<void>
}

/**
 * Starts a cluster outside Effect. `await using` stops it when the block ends; vitest users get
 * the failure report with `onTestFailed(() => cluster.stop({ failed: true }))`.
 *
 * @example
 * ```ts
 * await using cluster = await TestCluster.start({ backend: "processes", agents: 3 })
 * onTestFailed(() => cluster.stop({ failed: true }))
 * console.log(cluster.master)
 * ```
 */
export const start = async (options: Options = {}): Promise<RunningCluster> => {
  const scope = Effect.runSync(Scope.make())
  const cluster = await Effect.runPromise(make(options).pipe(Scope.provide(scope))).catch(async (error: unknown) => {
    await Effect.runPromise(Scope.close(scope, Exit.fail(error)))
    throw error
  })
  let stopped: Promise<void> | undefined
  let reported = false
  const stop = (stopOptions?: { readonly failed?: boolean }) => {
    const failed = stopOptions?.failed === true
    if (stopped !== undefined) {
      // Already stopped (`await using` ends before vitest's onTestFailed runs): the report taken
      // when the cluster stopped is written now.
      if (failed && !reported) {
        reported = true
        Common.writeReport(options, cluster.report())
      }
      return stopped
    }
    reported ||= failed
    stopped = Effect.runPromise(Scope.close(scope, failed ? Exit.fail(new Error("the test failed")) : Exit.void))
    return stopped
  }
  return { ...cluster, stop, [Symbol.asyncDispose]: () => stop() }
}
