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
import { Agent, ClusterError, Master, type Security } from "@berth/cluster-core"
import { type v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Effect, Exit, Layer, type LogLevel, References, Schedule, Scope } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import * as Certificates from "./Certificates.ts"
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
  /** The operator API, with the `operator` principal's credentials and the cluster's TLS. */
  readonly operator: Operator.Operator
  readonly security: ClusterSecurity
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
): Effect.Effect<TestCluster, ClusterError.StartupError | TimeoutError | Certificates.CertificateError, Scope.Scope> =>
  Effect.gen(function*() {
    const workDir = yield* Effect.acquireRelease(
      Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "berth-cluster-"))),
      (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }))
    )
    const scope = yield* Scope.Scope
    const storeContext = yield* Layer.build(StateStore.layerMemory)
    const quiet = Effect.provideService(References.MinimumLogLevel, options.logLevel ?? "Warn")
    const count = options.agents ?? 3
    const security = yield* secure(workDir, options)
    const master = yield* Master.start({ port: 0, ...options.master, ...security.master }).pipe(
      Effect.provide(storeContext),
      quiet
    )
    const operator = yield* Operator.make(master.endpoint, {
      tls: security.client.tls,
      credentials: security.client.credentials?.operator
    })
    const agents: Array<ClusterAgent> = []
    for (let index = 0; index < count; index++) {
      const agentWorkDir = path.join(workDir, `agent-${index + 1}`)
      const agent = yield* Agent.start({
        master: master.endpoint,
        workDir: agentWorkDir,
        hostname: `agent-${index + 1}.test`,
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
    return { master: master.endpoint, masterHttp: master.httpEndpoint, agents, workDir, operator, security: security.client, waitFor }
  })

const secret = () => randomBytes(18).toString("base64url")

/** Certificates and the credentials file for the options' TLS and authentication. */
const secure = (workDir: string, options: Options) =>
  Effect.gen(function*() {
    const dir = path.join(workDir, "security")
    const certificates = options.tls === undefined || options.tls === false
      ? undefined
      : yield* Certificates.generate(path.join(dir, "tls"))
    const authentication = options.authentication === undefined
      ? undefined
      : options.authentication === true
      ? { frameworks: true, operators: true, agents: true }
      : options.authentication === false
      ? { frameworks: false, operators: false, agents: false }
      : {
        frameworks: options.authentication.frameworks ?? true,
        operators: options.authentication.operators ?? true,
        agents: options.authentication.agents ?? true
      }
    const credentials = authentication === undefined && options.principals === undefined
      ? undefined
      : {
        framework: { principal: "framework", secret: secret() },
        operator: { principal: "operator", secret: secret() },
        agent: { principal: "agent", secret: secret() }
      }
    let credentialsFile: string | undefined
    if (credentials !== undefined) {
      credentialsFile = path.join(dir, "credentials.json")
      const file: Security.CredentialsFile = {
        credentials: [
          { ...credentials.framework, kind: "framework" },
          { ...credentials.operator, kind: "operator" },
          { ...credentials.agent, kind: "agent" },
          ...(options.principals ?? [])
        ]
      }
      yield* Effect.promise(async () => {
        await fs.mkdir(dir, { recursive: true })
        await fs.writeFile(credentialsFile!, JSON.stringify(file, null, 2), { mode: 0o600 })
      })
    }
    const mutual = options.tls === "mutual"
    const master: Partial<Master.Config> = {
      ...(certificates === undefined ? {} : {
        tls: { certFile: certificates.server.cert, keyFile: certificates.server.key, ...(mutual ? { caFile: certificates.ca } : {}) }
      }),
      ...(credentialsFile === undefined ? {} : { credentials: credentialsFile }),
      ...(authentication === undefined ? {} : { authentication }),
      ...(options.acls === undefined ? {} : { acls: options.acls })
    }
    const client: ClusterSecurity = {
      tls: certificates === undefined
        ? undefined
        : { ca: certificates.ca, ...(mutual ? { cert: certificates.client.cert, key: certificates.client.key } : {}) },
      credentials,
      certificates,
      credentialsFile
    }
    return { master, client, authentication, certificates }
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
