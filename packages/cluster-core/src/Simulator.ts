/**
 * Simulated agents: many agents in one process that speak the real agent protocol to a real
 * master (register, ping, run, kill, status updates in order per task until acknowledged) but
 * start no task processes. Use them to scale-test a framework or a master: ten thousand agents
 * cost a few hundred MB in one process.
 *
 * Tasks go STARTING → RUNNING at once; with `taskSeconds` they then FINISH after that long
 * (tasks whose command is `exit N` FAIL with that code), otherwise they run until killed.
 *
 * @example
 * ```ts
 * import { Simulator } from "@berth/cluster-core"
 * const agents = yield* Simulator.start({ masters: ["127.0.0.1:5050"], agents: 1000, resources: "cpus:32;mem:65536" })
 * yield* agents.registered // every agent has an id
 * ```
 */
import { Effect, type Scope } from "effect"
import { StartupError } from "./ClusterError.ts"
import * as internal from "./internal/simulator/simulator.ts"

export type Handle = internal.SimulatorHandle

export interface Options {
  /** Masters to try, in order; a standby's answer leads the agent to the leader. */
  readonly masters: ReadonlyArray<string>
  readonly agents: number
  /** Resources of every agent, in the flag syntax (default "cpus:32;mem:65536;disk:65536;ports:[31000-32000]"). */
  readonly resources?: string
  /** Attributes of agent `i` (default "rack:r<i mod 10>;zone:z<i mod 3>"). */
  readonly attributes?: (index: number) => string
  /** Tasks finish after this long; absent: they run until killed. */
  readonly taskSeconds?: number
  /** Agents per HTTP/2 connection (default 200). */
  readonly agentsPerConnection?: number
  /** Hostname prefix: agents are `<prefix>-<i>` (default "sim"). */
  readonly hostnamePrefix?: string
}

/** Starts the simulated agents; they disconnect when the scope closes. */
export const start = (options: Options): Effect.Effect<Handle, StartupError, Scope.Scope> =>
  options.masters.length === 0 || !(options.agents >= 1)
    ? Effect.fail(new StartupError({ component: "simulator", reason: "needs at least one master and one agent" }))
    : internal.make({
      masters: options.masters,
      agents: options.agents,
      resources: options.resources ?? "cpus:32;mem:65536;disk:65536;ports:[31000-32000]",
      attributes: options.attributes ?? ((i) => `rack:r${i % 10};zone:z${i % 3}`),
      taskSeconds: options.taskSeconds,
      agentsPerConnection: options.agentsPerConnection ?? 200,
      hostnamePrefix: options.hostnamePrefix ?? "sim"
    })
