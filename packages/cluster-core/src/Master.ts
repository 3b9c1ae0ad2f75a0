/**
 * The Berth master: admits agents, keeps framework sessions, offers resources and tracks tasks.
 * Run it with `berth master`, or in process (tests, `TestCluster`) with {@link start}.
 *
 * @example
 * ```ts
 * import { Master } from "@berth/cluster-core"
 * import { StateStore } from "@berth/storage"
 * const program = Effect.gen(function*() {
 *   const master = yield* Master.start({ port: 0 })
 *   console.log(master.endpoint) // "127.0.0.1:40123"
 * }).pipe(Effect.scoped, Effect.provide(StateStore.layerSqlite({ path: ".berth/master.db" })))
 * ```
 */
import type { StateStore } from "@berth/storage"
import type { Effect, Scope } from "effect"
import type { StartupError } from "./ClusterError.ts"
import * as internal from "./internal/master/master.ts"

export type Config = internal.MasterConfig
export type Handle = internal.MasterHandle

/** Mesos-like defaults: port 5050, 1 s allocation interval, 5 s decline refusal, 60 s offer expiry. */
export const defaults: Config = internal.defaults

/** Starts a master that serves until the scope closes. Its durable registry lives in `StateStore`. */
export const start = (
  config: Partial<Config> = {}
): Effect.Effect<Handle, StartupError, Scope.Scope | StateStore.StateStore> =>
  internal.make({ ...internal.defaults, ...config })
