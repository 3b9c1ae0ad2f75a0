/**
 * A mutex across processes (and machines, on etcd): a key created only if
 * absent and bound to a lease. `lock` waits (etcd's own lock recipe in the
 * `etcd3` client only tries once); a holder that dies releases the lock when
 * its lease lapses.
 *
 * @since 0.1.0
 */
import { randomUUID } from "node:crypto"
import type { Duration, Scope } from "effect"
import { Effect, Option } from "effect"
import * as claim from "./internal/claim.ts"
import type { Lease } from "./StateStore.ts"
import type { StateStore } from "./StateStore.ts"
import type { LeaseExpired, StoreError } from "./StoreError.ts"

/**
 * A held lock. `lost` completes if the lock ends before the scope does (the
 * lease lapsed, or an operator deleted the key): stop the guarded work then.
 *
 * @since 0.1.0
 * @category models
 */
export interface MutexLock {
  readonly key: string
  /** Who holds it, as written in the key. */
  readonly owner: string
  readonly lease: Lease
  readonly lost: Effect.Effect<void>
  readonly isHeld: Effect.Effect<boolean>
  readonly unlock: Effect.Effect<void, StoreError>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface LockOptions {
  /** The lease TTL: how long a dead holder keeps the lock. */
  readonly ttl: Duration.Input
  /** Written in the key, to tell operators who holds it. Defaults to a random id. */
  readonly owner?: string | undefined
}

const toLock = (owner: string) => (held: claim.Claim): MutexLock => ({
  key: held.key,
  owner,
  lease: held.lease,
  lost: held.lost,
  isHeld: held.isHeld,
  unlock: held.release
})

/**
 * Waits for the lock on `key` and holds it until the scope closes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Mutex } from "@berth/storage"
 *
 * const migrateOnce = Effect.scoped(Effect.gen(function*() {
 *   yield* Mutex.lock("locks/migrations", { ttl: "30 seconds" })
 *   yield* Effect.log("only one process at a time gets here")
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const lock = (
  key: string,
  options: LockOptions
): Effect.Effect<MutexLock, StoreError | LeaseExpired, StateStore | Scope.Scope> => {
  const owner = options.owner ?? randomUUID()
  return claim.acquire(key, new TextEncoder().encode(owner), { ttl: options.ttl }).pipe(
    Effect.map(toLock(owner)),
    Effect.catchTag("RevisionCompacted", (error) => Effect.die(error))
  )
}

/**
 * Takes the lock only if it is free: None when someone holds it.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { Mutex } from "@berth/storage"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const held = yield* Mutex.tryLock("locks/backup", { ttl: "1 minute" })
 *   if (Option.isNone(held)) return "someone else is backing up"
 *   return "backing up"
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const tryLock = (
  key: string,
  options: LockOptions
): Effect.Effect<Option.Option<MutexLock>, StoreError | LeaseExpired, StateStore | Scope.Scope> => {
  const owner = options.owner ?? randomUUID()
  return Effect.map(claim.tryAcquire(key, new TextEncoder().encode(owner), { ttl: options.ttl }), Option.map(toLock(owner)))
}

/**
 * Runs `effect` while holding the lock on `key`, waiting for it first.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Mutex } from "@berth/storage"
 *
 * const compact = Effect.log("compacting").pipe(Mutex.withLock("locks/compaction", { ttl: "15 seconds" }))
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const withLock = (key: string, options: LockOptions) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError | LeaseExpired, Exclude<R, Scope.Scope> | StateStore> =>
  Effect.scoped(Effect.andThen(lock(key, options), effect))
