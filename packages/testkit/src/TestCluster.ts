/**
 * Whole Berth clusters for integration tests. This first backend runs the master and agents
 * inside the test process (real gRPC on 127.0.0.1, real child processes for tasks, temp work
 * dirs), as a scoped Effect or, for Promise users, with `await using`.
 *
 * @example
 * ```ts
 * import { TestCluster } from "@berth/testkit"
 *
 * it.live("launches on a real cluster", () => Effect.gen(function*() {
 *   const cluster = yield* TestCluster.make({ agents: 3 })
 *   // point a framework at cluster.master ...
 *   yield* cluster.waitFor("all tasks finished", (s) => s.tasks.every((t) => t.state === v1.TaskState.FINISHED))
 * }))
 *
 * // Promise style
 * await using cluster = await TestCluster.start({ agents: 3 })
 * ```
 */
import { Agent, ClusterError, Master } from "@berth/cluster-core"
import { type v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Effect, Exit, Layer, type LogLevel, References, Schedule, Scope } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { TimeoutError } from "./TestClusterError.ts"
import * as Operator from "./Operator.ts"

export interface Options {
  /** Number of agents (default 3). */
  readonly agents?: number
  /** Resources of every agent (default "cpus:2;mem:2048;disk:4096;ports:[31000-31999]"). */
  readonly agentResources?: string
  /** Attributes of agent `i` (0-based); default "rack:r<i mod 3 + 1>". */
  readonly agentAttributes?: (index: number) => string
  /** Master settings (the allocation interval, offer timeout, ...). */
  readonly master?: Partial<Master.Config>
  /** Seconds between resends of unacknowledged status updates (default 10). */
  readonly statusUpdateRetrySeconds?: number
  /** The cluster's own log level (default "Warn", so test output shows what matters). */
  readonly logLevel?: LogLevel.LogLevel
}

export interface ClusterAgent {
  readonly index: number
  readonly agentId: string
  readonly workDir: string
  /** Status updates the agent holds because they are not acknowledged yet. */
  readonly pendingUpdates: () => number
}

export interface TestCluster {
  /** The master's "host:port": what a framework under test connects to. */
  readonly master: string
  /** The master's HTTP endpoint (`/metrics`, `/health`) when `master.httpPort` was given. */
  readonly masterHttp: string | undefined
  readonly agents: ReadonlyArray<ClusterAgent>
  /** The temp directory holding every agent's work dir (removed when the cluster stops). */
  readonly workDir: string
  readonly operator: Operator.Operator
  /** Polls the master's state until `condition` holds (default timeout 30 s). */
  readonly waitFor: (
    description: string,
    condition: (state: v1.GetStateResponse) => boolean,
    options?: { readonly timeout?: number }
  ) => Effect.Effect<v1.GetStateResponse, TimeoutError | Operator.OperatorError>
}

/** Starts a cluster that lives as long as the enclosing scope. */
export const make = (
  options: Options = {}
): Effect.Effect<TestCluster, ClusterError.StartupError | TimeoutError, Scope.Scope> =>
  Effect.gen(function*() {
    const workDir = yield* Effect.acquireRelease(
      Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "berth-cluster-"))),
      (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
    )
    const scope = yield* Scope.Scope
    const storeContext = yield* Layer.build(StateStore.layerMemory)
    const quiet = Effect.provideService(References.MinimumLogLevel, options.logLevel ?? "Warn")
    const master = yield* Master.start({ port: 0, ...options.master }).pipe(Effect.provide(storeContext), quiet)
    const operator = yield* Operator.make(master.endpoint)
    const count = options.agents ?? 3
    const agents: Array<ClusterAgent> = []
    for (let index = 0; index < count; index++) {
      const agentWorkDir = path.join(workDir, `agent-${index + 1}`)
      const agent = yield* Agent.start({
        master: master.endpoint,
        workDir: agentWorkDir,
        hostname: `agent-${index + 1}.test`,
        resources: options.agentResources ?? "cpus:2;mem:2048;disk:4096;ports:[31000-31999]",
        attributes: options.agentAttributes?.(index) ?? `rack:r${(index % 3) + 1}`,
        statusUpdateRetrySeconds: options.statusUpdateRetrySeconds ?? 10
      }).pipe(Scope.provide(scope), quiet)
      const agentId = yield* agent.registered.pipe(
        Effect.timeoutOrElse({
          duration: "20 seconds",
          orElse: () => Effect.fail(new TimeoutError({ description: `agent ${index + 1} to register`, timeoutMs: 20_000 }))
        })
      )
      agents.push({ index, agentId, workDir: agentWorkDir, pendingUpdates: agent.pendingUpdates })
    }
    const waitFor: TestCluster["waitFor"] = (description, condition, waitOptions) => {
      const timeoutMs = waitOptions?.timeout ?? 30_000
      return operator.state.pipe(
        Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: condition }),
        Effect.timeoutOrElse({
          duration: timeoutMs,
          orElse: () => Effect.fail(new TimeoutError({ description, timeoutMs }))
        })
      )
    }
    return { master: master.endpoint, masterHttp: master.httpEndpoint, agents, workDir, operator, waitFor }
  })

/** A cluster for Promise users: stop it with `await cluster.stop()` or `await using`. */
export interface RunningCluster extends TestCluster, AsyncDisposable {
  readonly stop: () => Promise<void>
}

/**
 * Starts a cluster outside Effect.
 *
 * @example
 * ```ts
 * await using cluster = await TestCluster.start({ agents: 3 })
 * console.log(cluster.master)
 * ```
 */
export const start = async (options: Options = {}): Promise<RunningCluster> => {
  const scope = Effect.runSync(Scope.make())
  const cluster = await Effect.runPromise(make(options).pipe(Scope.provide(scope))).catch(async (error: unknown) => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw error
  })
  let stopped: Promise<void> | undefined
  const stop = () => (stopped ??= Effect.runPromise(Scope.close(scope, Exit.void)))
  return { ...cluster, stop, [Symbol.asyncDispose]: stop }
}
