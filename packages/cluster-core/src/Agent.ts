/**
 * The Berth agent: offers a machine's resources to the master and runs tasks in sandboxes under
 * its work directory. Run it with `berth agent`, or in process with {@link start}.
 *
 * Tasks outlive the agent: everything about them is checkpointed under `<work-dir>/meta` (the
 * task, its process, every status update before it is sent, every acknowledgement), so an agent
 * restarted on the same work dir, even after SIGKILL, re-attaches to the tasks still running,
 * reports those that ended meanwhile with their exit status, resends what was not acknowledged in
 * order, and re-registers under the same id. See docs/operations.md.
 *
 * @example
 * ```ts
 * import { Agent } from "@berth/cluster-core"
 * const program = Effect.gen(function*() {
 *   const agent = yield* Agent.start({ master: "127.0.0.1:5050", workDir: "/tmp/agent-1", resources: "cpus:2;mem:1024" })
 *   const agentId = yield* agent.registered
 * }).pipe(Effect.scoped)
 * ```
 */
import { Resources, type v1 } from "@berth/proto"
import { Effect, type Scope } from "effect"
import * as os from "node:os"
import * as path from "node:path"
import { StartupError } from "./ClusterError.ts"
import * as internal from "./internal/agent/agent.ts"
import type * as Security from "./Security.ts"
import * as SecurityInternal from "./internal/security.ts"
import * as Detect from "./internal/agent/detect.ts"

export type Handle = internal.AgentHandle

export interface Options {
  /** The master's "host:port". */
  readonly master: string
  readonly workDir: string
  readonly hostname?: string
  /** Declared resources, replacing detected ones of the same name: "cpus:2;mem:1024;ports:[31000-31100]". */
  readonly resources?: string | ReadonlyArray<v1.Resource>
  /** Attributes for placement: "rack:r1;zone:z1". */
  readonly attributes?: string | ReadonlyArray<v1.Attribute>
  /**
   * Seconds before an unacknowledged status update is sent again (default 10); each further
   * retry of the same update waits twice as long, up to `statusUpdateRetryMaxSeconds`.
   */
  readonly statusUpdateRetrySeconds?: number
  /** The longest wait between two sends of an unacknowledged update (default 600: 10 minutes). */
  readonly statusUpdateRetryMaxSeconds?: number
  /** Address and port of the agent's own API (default 127.0.0.1, port 0: a free one). */
  readonly host?: string
  readonly port?: number
  /**
   * What to do at start with the tasks the work dir's checkpoint holds (left by an agent that
   * stopped or crashed): "reconnect" (default) re-attaches to those still running, reports those
   * that ended meanwhile with their exit status and resends unacknowledged updates in order;
   * "cleanup" kills them and starts without tasks (the master then reports them GONE). Either way
   * the agent keeps its id, reservations and volumes.
   */
  readonly recover?: "reconnect" | "cleanup"
  /**
   * Seconds a finished run's sandbox (and checkpoint) is kept after its terminal update was
   * acknowledged (default 604800: one week, Mesos' `--gc_delay`). Persistent volumes are never
   * collected.
   */
  readonly gcDelaySeconds?: number
  /**
   * Whether closing the agent's scope kills its tasks: each gets SHUTDOWN (SIGTERM, then SIGKILL
   * after its grace period) and its KILLED update is checkpointed. Without it they keep running,
   * and the next agent on the same work dir re-attaches to them (Mesos' semantics: the agent does
   * not own its tasks). Default true here, for agents embedded in a process (tests, tools);
   * `berth agent` leaves its tasks running unless given `--kill-tasks-on-stop`.
   */
  readonly killTasksOnStop?: boolean
  /** Milliseconds between polls of a re-attached task for its end (default 1000). */
  readonly reattachPollMs?: number
  /**
   * Seconds a custom executor has to subscribe after its start (default 60, Mesos'
   * `--executor_registration_timeout`); then it is killed and its tasks fail with
   * REASON_EXECUTOR_REGISTRATION_TIMEOUT.
   */
  readonly executorRegistrationTimeoutSeconds?: number
  /**
   * Seconds a custom executor still running after an agent restart has to subscribe again
   * (default 10; Mesos' `--executor_reregistration_timeout` is 2 s, but executors here back off
   * up to 1 s between attempts and a busy machine restarts slowly); then it is killed and its
   * tasks fail with REASON_EXECUTOR_REREGISTRATION_TIMEOUT.
   */
  readonly executorReregistrationTimeoutSeconds?: number
  /**
   * Seconds a custom executor keeps trying to re-subscribe while its agent is away (default 900,
   * Mesos' `--recovery_timeout`); it is told so in `BERTH_RECOVERY_TIMEOUT_MS`.
   */
  readonly recoveryTimeoutSeconds?: number
  /**
   * "auto" (default): process tasks get cpu and memory limits through Linux cgroups (v2, else
   * v1) where the machine allows them, and a task that outgrows its memory ends FAILED with
   * REASON_CONTAINER_LIMITATION_MEMORY; the agent logs at startup which it found. "off": none.
   */
  readonly cgroups?: "auto" | "off"
  /**
   * TLS for the agent's own API (sandbox files, the executor API): PEM files of its certificate
   * and key, and the CA that signed them (given to custom executors, `BERTH_AGENT_CA_FILE`, to
   * verify the agent). Plaintext when absent.
   */
  readonly apiTls?: { readonly certFile: string; readonly keyFile: string; readonly caFile?: string }
  /**
   * A credentials file (the master's `--credentials` format; path or parsed) for the agent's own
   * API: every file call must then carry an operator principal's credentials, and custom executors
   * authenticate with the token the agent gives each (`BERTH_EXECUTOR_TOKEN`).
   */
  readonly apiCredentials?: string | Security.CredentialsFile
  /** TLS to the master (the master's CA; a certificate and key when it requires mutual TLS). */
  readonly tls?: Security.ClientTls
  /** The agent principal's credentials, when the master authenticates agents. */
  readonly credentials?: Security.ClientCredentials
}

/** Starts an agent that registers with the master and serves until the scope closes. */
export const start = (options: Options): Effect.Effect<Handle, StartupError, Scope.Scope> =>
  Effect.gen(function*() {
    const workDir = path.resolve(options.workDir)
    const invalid = (reason: string) => Effect.fail(new StartupError({ component: "agent", reason }))
    const minSeconds = options.statusUpdateRetrySeconds ?? 10
    const maxSeconds = options.statusUpdateRetryMaxSeconds ?? Math.max(600, minSeconds)
    if (!(Number.isFinite(minSeconds) && minSeconds > 0)) {
      return yield* invalid(`statusUpdateRetrySeconds: must be a number of seconds > 0 (got ${minSeconds})`)
    }
    if (!(Number.isFinite(maxSeconds) && maxSeconds >= minSeconds)) {
      return yield* invalid(`statusUpdateRetryMaxSeconds: must be a number of seconds >= statusUpdateRetrySeconds (got ${maxSeconds})`)
    }
    const recover = options.recover ?? "reconnect"
    if (recover !== "reconnect" && recover !== "cleanup") {
      return yield* invalid(`recover: must be "reconnect" or "cleanup" (got "${String(recover)}")`)
    }
    const gcDelaySeconds = options.gcDelaySeconds ?? 7 * 24 * 3600
    if (!(Number.isFinite(gcDelaySeconds) && gcDelaySeconds >= 0)) {
      return yield* invalid(`gcDelaySeconds: must be a number of seconds >= 0 (got ${gcDelaySeconds})`)
    }
    const timeouts = {
      executorRegistrationTimeoutSeconds: options.executorRegistrationTimeoutSeconds ?? 60,
      executorReregistrationTimeoutSeconds: options.executorReregistrationTimeoutSeconds ?? 10,
      recoveryTimeoutSeconds: options.recoveryTimeoutSeconds ?? 15 * 60
    }
    for (const [name, value] of Object.entries(timeouts)) {
      if (!(Number.isFinite(value) && value > 0)) return yield* invalid(`${name}: must be a number of seconds > 0 (got ${value})`)
    }
    const cgroups = options.cgroups ?? "auto"
    if (cgroups !== "auto" && cgroups !== "off") return yield* invalid(`cgroups: must be "auto" or "off" (got "${String(cgroups)}")`)
    const parsed = yield* Effect.try({
      try: () => ({
        resources: Detect.resources(
          workDir,
          typeof options.resources === "string" ? Resources.parse(options.resources) : options.resources ?? []
        ),
        attributes: typeof options.attributes === "string" ? Detect.attributes(options.attributes) : [...(options.attributes ?? [])]
      }),
      catch: (error) => new StartupError({ component: "agent", reason: error instanceof Error ? error.message : String(error) })
    })
    const channel = yield* Effect.try({
      try: () => SecurityInternal.channelCredentials(options.tls),
      catch: (error) => new StartupError({ component: "agent", reason: (error as Error).message })
    })
    return yield* internal.make({
      channelCredentials: channel,
      clientOptions: SecurityInternal.clientOptions(options.credentials),
      master: options.master,
      workDir,
      hostname: options.hostname ?? os.hostname(),
      resources: parsed.resources,
      attributes: parsed.attributes,
      statusUpdateBackoff: { minMs: minSeconds * 1000, maxMs: maxSeconds * 1000 },
      version: "0.1.0",
      host: options.host ?? "127.0.0.1",
      port: options.port ?? 0,
      recover,
      gcDelayMs: gcDelaySeconds * 1000,
      killTasksOnStop: options.killTasksOnStop ?? true,
      reattachPollMs: options.reattachPollMs ?? 1000,
      executorRegistrationTimeoutMs: timeouts.executorRegistrationTimeoutSeconds * 1000,
      executorReregistrationTimeoutMs: timeouts.executorReregistrationTimeoutSeconds * 1000,
      recoveryTimeoutMs: timeouts.recoveryTimeoutSeconds * 1000,
      cgroups,
      apiSecurity: {
        ...(options.apiTls === undefined ? {} : { tls: options.apiTls }),
        ...(options.apiCredentials === undefined ? {} : { credentials: options.apiCredentials })
      }
    })
  })
