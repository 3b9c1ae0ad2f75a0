/**
 * Leases kept alive, and claims: a key created only if absent and bound to a
 * lease, which is what both leader election and the mutex are. Written once,
 * on top of the `StateStore` operations, so that every backend behaves alike:
 * on etcd those are etcd's own transactions, leases and watches.
 */
import { Clock, Deferred, Duration, Effect, Exit, Option, Ref, Stream } from "effect"
import type { Scope } from "effect"
import type { Entry, Lease } from "../StateStore.ts"
import { StateStore } from "../StateStore.ts"
import type { LeaseExpired, RevisionCompacted, StoreError } from "../StoreError.ts"

export interface KeptLease {
  readonly lease: Lease
  readonly lost: Effect.Effect<void>
  readonly isLost: Effect.Effect<boolean>
}

export const keepLease = (
  ttl: Duration.Input,
  every: Duration.Input | undefined
): Effect.Effect<KeptLease, StoreError, StateStore | Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const lost = yield* Deferred.make<void>()
    const lease = yield* Effect.acquireRelease(
      store.grantLease(ttl),
      // Revoking deletes the lease's keys at once instead of a TTL later; if that fails they expire anyway.
      (lease) => Effect.ignore(store.revokeLease(lease))
    )
    const interval = every === undefined
      ? Math.max(1, Math.floor(lease.ttlMillis / 3))
      : Duration.toMillis(Duration.fromInputUnsafe(every))
    const lastRenewal = yield* Ref.make(yield* Clock.currentTimeMillis)
    const renew = Effect.gen(function*() {
      yield* Effect.sleep(Duration.millis(interval))
      const outcome = yield* Effect.exit(store.keepAlive(lease))
      const now = yield* Clock.currentTimeMillis
      if (Exit.isSuccess(outcome)) {
        yield* Ref.set(lastRenewal, now)
        return true
      }
      const expired = Exit.findErrorOption(outcome).pipe(Option.exists((error) => error._tag === "LeaseExpired"))
      // Unreachable for a whole TTL: the store has surely expired it, so act as if it had.
      if (expired || now - (yield* Ref.get(lastRenewal)) >= lease.ttlMillis) {
        yield* Deferred.succeed(lost, undefined)
        return false
      }
      return true
    })
    yield* Effect.forkScoped(Effect.repeat(renew, { while: (alive) => alive }))
    return { lease, lost: Deferred.await(lost), isLost: Deferred.isDone(lost) }
  })

export interface Claim {
  readonly key: string
  readonly entry: Entry
  readonly lease: Lease
  readonly lost: Effect.Effect<void>
  readonly isHeld: Effect.Effect<boolean>
  readonly release: Effect.Effect<void, StoreError>
}

export type LeaseSource = { readonly ttl: Duration.Input } | { readonly lease: Lease }

/**
 * Waits until `key` is absent, watching from the revision at which it was
 * last seen present, so that a deletion between the read and the watch is not
 * missed.
 */
/**
 * How often a candidate looks again without a watch event. A watch opened around a restart of
 * etcd can miss the deletion (or stay silent on a connection being re-established), and a
 * candidate waiting only on it would never lead again: it happened in CI, a master standing by
 * for good after etcd came back.
 */
const VACANCY_RECHECK = "1 second"

const awaitVacancy = (key: string) =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const current = yield* store.get(key)
    if (Option.isNone(current)) return
    yield* Effect.raceFirst(
      store.watch(key, { fromRevision: current.value.revision + 1 }).pipe(
        Stream.filter((event) => event._tag === "Delete" && event.key === key),
        Stream.take(1),
        Stream.runDrain
      ),
      Effect.sleep(VACANCY_RECHECK)
    )
  })

/** Tries once to create `key` bound to the lease; None if someone holds it. */
const tryCreate = (key: string, value: Uint8Array, lease: Lease) =>
  Effect.gen(function*() {
    const store = yield* StateStore
    return yield* store.compareAndSet(key, 0, value, { lease }).pipe(
      Effect.map(Option.some),
      Effect.catchTag("VersionConflict", () => Effect.succeedNone)
    )
  })

const hold = (key: string, entry: Entry, lease: Lease, leaseLost: Effect.Effect<void>) =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const lost = yield* Deferred.make<void>()
    const released = yield* Ref.make(false)
    // Any change to the key after our write means someone else now owns it (or nobody does).
    const changed = store.watch(key, { fromRevision: entry.revision + 1 }).pipe(
      Stream.filter((event) => (event._tag === "Delete" ? event.key : event.entry.key) === key),
      Stream.take(1),
      Stream.runDrain,
      // If the watch itself fails for good, we can no longer vouch for the claim.
      Effect.ignore
    )
    yield* Effect.forkScoped(
      Effect.raceFirst(changed, leaseLost).pipe(Effect.andThen(Deferred.succeed(lost, undefined)))
    )
    const release = Effect.gen(function*() {
      if (yield* Ref.getAndSet(released, true)) return
      yield* Deferred.succeed(lost, undefined)
      // Guarded: never delete a successor's claim.
      yield* store.delete(key, { expectedVersion: entry.version }).pipe(
        Effect.catchTag("VersionConflict", () => Effect.void)
      )
    })
    yield* Effect.addFinalizer(() => Effect.ignore(release))
    return {
      key,
      entry,
      lease,
      lost: Deferred.await(lost),
      isHeld: Effect.map(Deferred.isDone(lost), (done) => !done),
      release
    } satisfies Claim
  })

const leaseFor = (source: LeaseSource) =>
  "lease" in source
    ? Effect.succeed({ lease: source.lease, lost: Effect.never as Effect.Effect<void> })
    : keepLease(source.ttl, undefined)

export const acquire = (
  key: string,
  value: Uint8Array,
  source: LeaseSource
): Effect.Effect<Claim, StoreError | LeaseExpired | RevisionCompacted, StateStore | Scope.Scope> =>
  Effect.gen(function*() {
    const { lease, lost } = yield* leaseFor(source)
    while (true) {
      const created = yield* tryCreate(key, value, lease)
      if (Option.isSome(created)) return yield* hold(key, created.value, lease, lost)
      yield* awaitVacancy(key).pipe(
        // A compacted history only means we missed the moment: look again.
        Effect.catchTag("RevisionCompacted", () => Effect.void)
      )
    }
  })

export const tryAcquire = (
  key: string,
  value: Uint8Array,
  source: LeaseSource
): Effect.Effect<Option.Option<Claim>, StoreError | LeaseExpired, StateStore | Scope.Scope> =>
  Effect.gen(function*() {
    const { lease, lost } = yield* leaseFor(source)
    const created = yield* tryCreate(key, value, lease)
    if (Option.isNone(created)) return Option.none()
    return Option.some(yield* hold(key, created.value, lease, lost))
  })

/** The current holder of `key`, then every change of holder; None while nobody holds it. */
export const observe = (key: string): Stream.Stream<Option.Option<Entry>, StoreError | RevisionCompacted, StateStore> =>
  Stream.unwrap(Effect.gen(function*() {
    const store = yield* StateStore
    // The revision first: a change between the two reads is replayed by the watch, and deduplicated below.
    const revision = yield* store.revision
    const current = yield* store.get(key)
    const changes = store.watch(key, { fromRevision: revision + 1 }).pipe(
      Stream.filter((event) => (event._tag === "Delete" ? event.key : event.entry.key) === key),
      Stream.map((event) => event._tag === "Delete" ? Option.none<Entry>() : Option.some(event.entry))
    )
    return Stream.concat(Stream.make(current), changes).pipe(
      Stream.changesWith((a, b) =>
        Option.isNone(a) ? Option.isNone(b) : Option.isSome(b) && a.value.revision === b.value.revision
      )
    )
  }))
