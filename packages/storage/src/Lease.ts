/**
 * A lease kept alive for as long as a scope is open: the building block of
 * leader election, locks and any "this key lives while I do" record.
 *
 * @since 0.1.0
 */
import type { Duration, Effect, Scope } from "effect"
import * as internal from "./internal/claim.ts"
import type { Lease, StateStore } from "./StateStore.ts"
import type { StoreError } from "./StoreError.ts"

/**
 * A lease this process keeps alive. `lost` completes (and `isLost` turns
 * true) when it ended anyway: a keep-alive found it expired, or the store
 * could not be reached for a whole TTL, after which it must be presumed
 * expired. Whoever relies on the lease (a leader, a lock holder) must stop
 * acting on it then.
 *
 * @since 0.1.0
 * @category models
 */
export interface KeptLease {
  readonly lease: Lease
  readonly lost: Effect.Effect<void>
  readonly isLost: Effect.Effect<boolean>
}

/**
 * Grants a lease of `ttl` and keeps it alive every `ttl / 3` (or
 * `keepAliveEvery`) on the `Clock` until the scope closes, then revokes it,
 * which deletes the keys bound to it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lease, StateStore } from "@berth/storage"
 *
 * // The agent's presence record lives exactly as long as the agent.
 * const announce = Effect.gen(function*() {
 *   const store = yield* StateStore.StateStore
 *   const kept = yield* Lease.make("10 seconds")
 *   yield* store.put("agents/live/a1", new TextEncoder().encode("10.0.0.5"), { lease: kept.lease })
 *   yield* kept.lost // returns if the lease could not be kept
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  ttl: Duration.Input,
  options?: { readonly keepAliveEvery?: Duration.Input | undefined }
): Effect.Effect<KeptLease, StoreError, StateStore | Scope.Scope> => internal.keepLease(ttl, options?.keepAliveEvery)
