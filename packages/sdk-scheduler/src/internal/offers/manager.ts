/**
 * The offer manager's runtime. The event handler only records (offers in, rescinds, SUBSCRIBED)
 * and wakes one loop fiber; the loop does every call to the master (accept, decline, suppress,
 * revive), so the calls are ordered and a hold can wait for the batch in flight.
 */
import type { v1 } from "@berth/proto"
import type { Scope } from "effect"
import { Cause, Clock, Duration, Effect, Option, PubSub, Queue, Semaphore, Stream } from "effect"
import type * as OfferManager from "../../OfferManager.ts"
import type * as Placement from "../../Placement.ts"
import { SchedulerEvents } from "../../SchedulerEvents.ts"
import { SchedulerSession } from "../../SchedulerSession.ts"
import * as Matcher from "./matcher.ts"

interface Entry {
  work: OfferManager.Work
  readonly sinceMs: number
}

/** Offer ids remembered as used, declined or rescinded, so that none is used twice. */
class SeenIds {
  private readonly set = new Set<string>()
  private readonly ring: Array<string | undefined>
  private next = 0
  constructor(capacity: number) {
    this.ring = new Array(capacity)
  }
  has(id: string): boolean {
    return this.set.has(id)
  }
  add(id: string): void {
    if (this.set.has(id)) return
    const old = this.ring[this.next]
    if (old !== undefined) this.set.delete(old)
    this.ring[this.next] = id
    this.next = (this.next + 1) % this.ring.length
    this.set.add(id)
  }
}

// Offers that expire within this margin are not used: the Accept would race the expiry.
const EXPIRY_MARGIN_MS = 500

export const make = (
  options: OfferManager.Options
): Effect.Effect<OfferManager.Service, never, SchedulerSession | SchedulerEvents | Scope.Scope> =>
  Effect.gen(function*() {
    const session = yield* SchedulerSession
    const hub = yield* SchedulerEvents
    const refuseIdle = options.refuseSecondsIdle ?? 3600
    const refusePending = options.refuseSecondsPending ?? 5
    const reviveIntervalMs = Duration.toMillis(Duration.fromInputUnsafe(options.reviveInterval ?? "5 seconds"))
    const batchWindow = options.batchWindow ?? "20 millis"
    const suppressWhenIdle = options.suppressWhenIdle ?? true

    const offers = new Map<string, v1.Offer>()
    const seen = new SeenIds(65_536)
    const pending = new Map<string, Entry>()
    const book = Matcher.makeBook(options.whyNotLimit ?? 32)
    const holds = new Map<number, string>()
    let holdIds = 0
    const runningSources = new Set<Effect.Effect<ReadonlyArray<Placement.Running>>>()
    let suppressed = false
    let resubscribed = false
    let lastReviveAtMs = -Infinity
    /** Some agent was declined with the long (idle) filter since the last Revive: new work must revive. */
    let longFiltered = false
    const counters = {
      offersReceived: 0,
      offersAccepted: 0,
      declinedShort: 0,
      declinedLong: 0,
      rescinded: 0,
      expired: 0,
      revives: 0,
      suppresses: 0,
      evaluations: 0
    }

    const wake = yield* Queue.sliding<void>(1)
    const poke = Effect.sync(() => {
      Queue.offerUnsafe(wake, undefined)
    })
    const mutex = yield* Semaphore.make(1)
    const acceptedHub = yield* Effect.acquireRelease(PubSub.unbounded<OfferManager.Accepted>(), PubSub.shutdown)

    const logged = <A, E>(what: string, effect: Effect.Effect<A, E>) =>
      effect.pipe(
        Effect.asVoid,
        Effect.catchCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.logWarning(`${what} failed`, cause))
      )

    const decline = (ids: ReadonlyArray<string>, refuseSeconds: number) =>
      ids.length === 0 ? Effect.void : Effect.suspend(() => {
        if (refuseSeconds === refuseIdle) {
          counters.declinedLong += ids.length
          longFiltered = true
        } else counters.declinedShort += ids.length
        return logged("Decline", session.decline(ids, { refuseSeconds }))
      })

    const take = (ids: ReadonlyArray<string>): Array<v1.Offer> => {
      const out: Array<v1.Offer> = []
      for (const id of ids) {
        const offer = offers.get(id)
        if (offer === undefined) continue
        offers.delete(id)
        seen.add(id)
        out.push(offer)
      }
      return out
    }

    // Suspended: sources register after the manager is built (TaskLifecycle's among them), so
    // the set is read at every evaluation, not copied once while still empty.
    const running = Effect.map(
      Effect.suspend(() => Effect.forEach([...runningSources], (source) => source)),
      (lists) => lists.flat()
    )

    const publish = (accepted: OfferManager.Accepted) => PubSub.publish(acceptedHub, accepted)

    /** Accepts one offer's placements: the `onPlaced` hooks first (launch intents), then the Accept. */
    const acceptOne = (accept: Matcher.BatchAccept) =>
      Effect.gen(function*() {
        take([accept.offerId])
        // The hooks run concurrently: each writes a launch intent, and concurrent writes share
        // the store's group commit (one offer can carry dozens of tasks). All must succeed.
        const oks = yield* Effect.forEach(accept.placed, (placed) => {
          const hook = pending.get(placed.requirementId)?.work.onPlaced
          if (hook === undefined) return Effect.succeed(true)
          return hook(placed).pipe(
            Effect.as(true),
            Effect.catchCause((cause) =>
              Cause.hasInterruptsOnly(cause)
                ? Effect.interrupt
                : Effect.as(Effect.logWarning(`onPlaced of ${placed.requirementId} failed; declining offer ${accept.offerId}`, cause), false)
            )
          )
        }, { concurrency: "unbounded" })
        if (oks.includes(false)) return yield* decline([accept.offerId], refusePending)
        const result = yield* Effect.result(session.accept([accept.offerId], accept.operations, { refuseSeconds: refusePending }))
        const error = result._tag === "Failure" ? result.failure : undefined
        if (error === undefined) counters.offersAccepted++
        else yield* Effect.logWarning(`Accept of offer ${accept.offerId} failed; its work stays pending`, error)
        for (const placed of accept.placed) {
          const entry = pending.get(placed.requirementId)
          if (error === undefined) {
            pending.delete(placed.requirementId)
            book.forget(placed.requirementId)
          }
          if (entry?.work.onAccepted !== undefined) yield* logged("onAccepted", entry.work.onAccepted(placed, error))
          yield* publish(error === undefined ? { placed } : { placed, error })
        }
      })

    /** Whether a Suppress/Revive call went through (a failed one is retried on a later pass). */
    const called = (what: string, effect: Effect.Effect<void, unknown>) =>
      effect.pipe(
        Effect.as(true),
        Effect.catchCause((cause) =>
          Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.as(Effect.logWarning(`${what} failed; retrying later`, cause), false)
        )
      )

    const adjustSuppression = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const wanted = pending.size > 0 || (options.wantOffers !== undefined && (yield* options.wantOffers))
      // New work after an idle spell revives: while suppressed, or when agents sit behind the
      // long filter of idle declines (a Revive also clears the master's decline filters).
      if (wanted && (suppressed || resubscribed || (pending.size > 0 && longFiltered))) {
        if (!resubscribed && now - lastReviveAtMs < reviveIntervalMs) return now + (reviveIntervalMs - (now - lastReviveAtMs))
        lastReviveAtMs = now
        counters.revives++
        // Only a Revive the master took ends the suppression: a lost one would starve the work.
        if (yield* called("Revive", session.revive())) {
          resubscribed = false
          suppressed = false
          longFiltered = false
        } else return now + reviveIntervalMs
      } else if (!wanted && suppressWhenIdle && (!suppressed || resubscribed)) {
        counters.suppresses++
        if (yield* called("Suppress", session.suppress())) {
          resubscribed = false
          suppressed = true
        } else return now + reviveIntervalMs
      } else {
        resubscribed = false
      }
      return undefined
    })

    /** One pass; returns the next time the loop must look again by itself, if any. */
    const runBatch: Effect.Effect<number | undefined> = mutex.withPermits(1)(Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      let nextAt: number | undefined
      const soonest = (t: number) => {
        if (nextAt === undefined || t < nextAt) nextAt = t
      }
      for (const [id, offer] of offers) {
        if (offer.expiresAtMs > 0 && offer.expiresAtMs - EXPIRY_MARGIN_MS <= now) {
          offers.delete(id)
          seen.add(id)
          counters.expired++
        } else if (offer.expiresAtMs > 0) soonest(offer.expiresAtMs - EXPIRY_MARGIN_MS)
      }
      const reviveAt = yield* adjustSuppression
      if (reviveAt !== undefined) soonest(reviveAt)
      const held = holds.size > 0 ? [...holds.values()].join(", ") : undefined
      book.setHeld(held)
      if (held !== undefined) return nextAt
      for (const entry of pending.values()) {
        const nb = entry.work.notBefore
        if (nb !== undefined && nb > now) soonest(nb)
      }
      if (offers.size === 0) return nextAt
      if (pending.size === 0) {
        const all = [...offers.values()]
        let claimed: ReadonlyMap<string, ReadonlyArray<v1.Operation>> = new Map()
        if (options.onIdleOffers !== undefined) {
          claimed = yield* options.onIdleOffers(all).pipe(
            Effect.catchCause((cause) =>
              Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.as(Effect.logWarning("onIdleOffers failed", cause), new Map())
            )
          )
        }
        for (const [offerId, operations] of claimed) {
          if (take([offerId]).length === 0 || operations.length === 0) continue
          counters.offersAccepted++
          yield* logged("Accept", session.accept([offerId], operations, { refuseSeconds: refuseIdle }))
        }
        yield* decline(take([...offers.keys()]).map((o) => o.offerId), refuseIdle)
        return nextAt
      }
      const list = [...offers.values()]
      const work: Array<Matcher.Pending> = []
      for (const entry of pending.values()) {
        work.push({ request: entry.work.request, notBefore: entry.work.notBefore, sinceMs: entry.sinceMs })
      }
      const context: Placement.Context = {
        running: yield* running,
        ...(options.fitness === undefined ? {} : { fitness: options.fitness }),
        ...(options.principal === undefined ? {} : { principal: options.principal }),
        ...(options.operationId === undefined ? {} : { operationId: options.operationId })
      }
      counters.evaluations++
      const batch = Matcher.match(work, list, context, book, now)
      // Offers are independent: their intents and Accepts overlap (a large deploy places many).
      yield* Effect.forEach(batch.accepts, acceptOne, { concurrency: 16, discard: true })
      yield* decline(take(batch.declines).map((o) => o.offerId), refusePending)
      // Placements just accepted may have emptied the queue of work.
      const after = yield* adjustSuppression
      if (after !== undefined) soonest(after)
      return nextAt
    }))

    const loop = Effect.gen(function*() {
      let nextAt: number | undefined
      while (true) {
        if (nextAt === undefined) yield* Queue.take(wake)
        else {
          const now = yield* Clock.currentTimeMillis
          yield* Effect.timeoutOption(Queue.take(wake), Duration.millis(Math.max(1, nextAt - now)))
        }
        yield* Effect.sleep(batchWindow)
        nextAt = yield* runBatch.pipe(
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.as(Effect.logError("offer batch failed", cause), undefined)
          )
        )
      }
    })
    yield* Effect.forkScoped(loop)

    yield* hub.register("OfferManager", (event) =>
      Effect.suspend(() => {
        switch (event.$case) {
          case "subscribed":
            // Offers of an earlier subscription are void.
            for (const id of offers.keys()) seen.add(id)
            offers.clear()
            resubscribed = true
            return poke
          case "offers":
            for (const offer of event.value.offers) {
              if (seen.has(offer.offerId) || offers.has(offer.offerId)) continue
              counters.offersReceived++
              offers.set(offer.offerId, offer)
            }
            return poke
          case "rescind":
            for (const id of event.value.offerIds) {
              if (offers.delete(id)) counters.rescinded++
              seen.add(id)
            }
            return Effect.void
          default:
            return Effect.void
        }
      })
    )

    const recordOf = (requirementId: string) => {
      const entry = pending.get(requirementId)
      if (entry === undefined) return Option.none()
      book.track(requirementId, entry.sinceMs, entry.work.notBefore)
      return Matcher.recordOf(book, requirementId) as Option.Option<OfferManager.WhyNotRecord>
    }

    return {
      submit: (works) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          for (const work of works) {
            const id = work.request.requirement.id
            const existing = pending.get(id)
            if (existing !== undefined) existing.work = work
            else pending.set(id, { work, sinceMs: now })
            book.track(id, existing?.sinceMs ?? now, work.notBefore)
          }
          yield* poke
        }),
      withdraw: (ids) =>
        Effect.gen(function*() {
          for (const id of ids) {
            pending.delete(id)
            book.forget(id)
          }
          yield* poke
        }),
      pending: Effect.sync(() => [...pending.keys()]),
      whyNot: (requirementId) => Effect.sync(() => recordOf(requirementId)),
      snapshot: Effect.sync(() => ({
        suppressed,
        holds: [...holds.values()],
        queuedOffers: [...offers.values()].map((o) => ({ offerId: o.offerId, agentId: o.agentId, hostname: o.hostname })),
        pending: [...pending.keys()].flatMap((id) => Option.toArray(recordOf(id))),
        counters: { ...counters }
      })),
      accepted: Stream.fromPubSub(acceptedHub),
      hold: (reason) =>
        Effect.acquireRelease(
          // Waits for the batch in flight: once this returns, no offer is used until release.
          mutex.withPermits(1)(Effect.sync(() => {
            const id = holdIds++
            holds.set(id, reason)
            book.setHeld([...holds.values()].join(", "))
            return id
          })),
          (id) =>
            Effect.suspend(() => {
              holds.delete(id)
              return poke
            })
        ).pipe(Effect.asVoid),
      registerRunning: (source) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            runningSources.add(source)
          }),
          () =>
            Effect.sync(() => {
              runningSources.delete(source)
            })
        ),
      poke
    } satisfies OfferManager.Service
  })
