/**
 * Leader election on one key: the leader is whoever created the key, bound to
 * a lease it keeps alive. When the leader resigns, or its lease lapses (the
 * process died, hung, or lost the store for a whole TTL), the key is deleted
 * and the next candidate's create succeeds. The same algorithm runs on every
 * backend: on etcd it uses etcd's own transactions, leases and watches.
 *
 * @since 0.1.0
 */
import type { Duration, Scope, Stream } from "effect"
import { Effect, Option } from "effect"
import * as claim from "./internal/claim.ts"
import type { Entry, Lease } from "./StateStore.ts"
import { StateStore } from "./StateStore.ts"
import type { LeaseExpired, RevisionCompacted, StoreError } from "./StoreError.ts"

/**
 * Leadership won by `campaign`, held until its scope closes (or `resign`).
 * `lost` completes when leadership ends for any reason: resignation, the
 * lease lapsing, or someone deleting the key. A leader must stop leading then.
 *
 * @since 0.1.0
 * @category models
 */
export interface Leadership {
  readonly key: string
  /** The leader key as written: its `version` and `revision` identify this term. */
  readonly entry: Entry
  readonly lease: Lease
  readonly lost: Effect.Effect<void>
  readonly isLeader: Effect.Effect<boolean>
  /** Gives up leadership now (the key is deleted only if it is still ours). */
  readonly resign: Effect.Effect<void, StoreError>
}

/**
 * How the leader key's lease is obtained: `{ ttl }` grants one and keeps it
 * alive for the scope; `{ lease }` uses one the caller keeps alive itself.
 *
 * @since 0.1.0
 * @category models
 */
export type LeaseSource = { readonly ttl: Duration.Input } | { readonly lease: Lease }

/**
 * Waits until this candidate is the leader of `key`, publishing `value` (an
 * address, say) as the leader's identity. Leadership lasts until the scope
 * closes, which resigns.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Election, StateStore } from "@berth/storage"
 *
 * const runMaster = (address: string, serve: Effect.Effect<void>) =>
 *   Effect.scoped(Effect.gen(function*() {
 *     const leadership = yield* Election.campaign("master/leader", new TextEncoder().encode(address), {
 *       ttl: "10 seconds"
 *     })
 *     // serve until leadership is lost, then stop serving
 *     yield* Effect.raceFirst(serve, leadership.lost)
 *   }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const campaign = (
  key: string,
  value: Uint8Array,
  source: LeaseSource
): Effect.Effect<Leadership, StoreError | LeaseExpired, StateStore | Scope.Scope> =>
  claim.acquire(key, value, source).pipe(
    Effect.map(toLeadership),
    Effect.catchTag("RevisionCompacted", (error) => Effect.die(error))
  )

/**
 * Becomes the leader only if nobody is: None when another candidate leads.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { Election } from "@berth/storage"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const won = yield* Election.tryCampaign("cron/leader", new Uint8Array(), { ttl: "30 seconds" })
 *   if (Option.isSome(won)) yield* Effect.log("running the nightly job")
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const tryCampaign = (
  key: string,
  value: Uint8Array,
  source: LeaseSource
): Effect.Effect<Option.Option<Leadership>, StoreError | LeaseExpired, StateStore | Scope.Scope> =>
  Effect.map(claim.tryAcquire(key, value, source), Option.map(toLeadership))

const toLeadership = (held: claim.Claim): Leadership => ({
  key: held.key,
  entry: held.entry,
  lease: held.lease,
  lost: held.lost,
  isLeader: held.isHeld,
  resign: held.release
})

/**
 * The current leader of `key` (None if there is none), without campaigning.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { Election } from "@berth/storage"
 *
 * const leaderAddress = Election.leader("master/leader").pipe(
 *   Effect.map(Option.map((entry) => new TextDecoder().decode(entry.value)))
 * )
 * ```
 *
 * @since 0.1.0
 * @category getters
 */
export const leader = (key: string): Effect.Effect<Option.Option<Entry>, StoreError, StateStore> =>
  StateStore.use((store) => store.get(key))

/**
 * The leader of `key` now, then every change of leader (None while there is
 * none). Clients use it to follow the leader's address.
 *
 * @example
 * ```ts
 * import { Option, Stream } from "effect"
 * import { Election } from "@berth/storage"
 *
 * const addresses = Election.observe("master/leader").pipe(
 *   Stream.map(Option.map((entry) => new TextDecoder().decode(entry.value)))
 * )
 * ```
 *
 * @since 0.1.0
 * @category getters
 */
export const observe = (key: string): Stream.Stream<Option.Option<Entry>, StoreError | RevisionCompacted, StateStore> =>
  claim.observe(key)
