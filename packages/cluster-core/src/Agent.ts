/**
 * The Berth agent: offers a machine's resources to the master and runs tasks in sandboxes under
 * its work directory. Run it with `berth agent`, or in process with {@link start}.
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
  readonly statusUpdateRetrySeconds?: number
  /** Address and port of the agent's own API (default 127.0.0.1, port 0: a free one). */
  readonly host?: string
  readonly port?: number
}

/** Starts an agent that registers with the master and serves until the scope closes. */
export const start = (options: Options): Effect.Effect<Handle, StartupError, Scope.Scope> =>
  Effect.gen(function*() {
    const workDir = path.resolve(options.workDir)
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
    return yield* internal.make({
      master: options.master,
      workDir,
      hostname: options.hostname ?? os.hostname(),
      resources: parsed.resources,
      attributes: parsed.attributes,
      statusUpdateRetrySeconds: options.statusUpdateRetrySeconds ?? 10,
      version: "0.1.0",
      host: options.host ?? "127.0.0.1",
      port: options.port ?? 0
    })
  })
