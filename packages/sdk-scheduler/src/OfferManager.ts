/**
 * The offer manager: pending work in, accepted operations out. It queues the session's offers,
 * evaluates them in batches against the pending work with `Placement.evaluate` (several tasks
 * may land on one offer), accepts what was placed and declines the rest: with a long refuse
 * filter when nothing is pending (so an idle framework costs the master nothing) and a short
 * one when work is pending (so the agents come back soon). It suppresses offers when nothing is
 * pending and revives them, rate-limited, when work arrives. Rescinded and expired offers are
 * dropped, an offer id is never used twice, and while a hold is in place (explicit
 * reconciliation) offers are kept, not used.
 *
 * For every pending requirement it keeps a bounded record of why recent offers did not take it,
 * stage by stage and per agent ("why is this not running"), as data: `whyNot(requirementId)`.
 *
 * @example
 * ```ts
 * import { v1 } from "@berth/proto"
 * import { Effect } from "effect"
 * import { OfferManager, Requirement } from "@berth/sdk-scheduler"
 *
 * const program = Effect.gen(function*() {
 *   const offers = yield* OfferManager.OfferManager
 *   yield* offers.submit([{
 *     request: {
 *       requirement: Requirement.decodeSync({ id: "web-0", resources: { cpus: 0.1, mem: 32 } }),
 *       task: { command: v1.CommandInfo.create({ value: "./serve", shell: true }) }
 *     },
 *     // runs before the Accept: write the launch intent here
 *     onPlaced: (placed) => Effect.log(`web-0 goes to ${placed.agentId}`)
 *   }])
 *   const record = yield* offers.whyNot("web-0") // Option<WhyNotRecord>
 * })
 * ```
 *
 * @since 0.1.0
 */
import type { v1 } from "@berth/proto"
import type { Duration, Option, Scope, Stream } from "effect"
import type { Effect } from "effect"
import { Context, Layer, Schema } from "effect"
import * as internal from "./internal/offers/manager.ts"
import * as Matcher from "./internal/offers/matcher.ts"
import * as Placement from "./Placement.ts"
import type { SchedulerEvents } from "./SchedulerEvents.ts"
import type { SchedulerSession } from "./SchedulerSession.ts"

/**
 * One piece of pending work: a placement request (a requirement and the task or task group to
 * launch), with hooks around its Accept.
 *
 * @since 0.1.0
 * @category models
 */
export interface Work {
  readonly request: Placement.Request
  /**
   * Runs once the request is placed, before the Accept that carries its operations (write the
   * launch intent here). When it fails, nothing of that offer is accepted (the offer is declined
   * with the short filter) and the work stays pending.
   */
  readonly onPlaced?: ((placed: Placement.Placed) => Effect.Effect<void, unknown>) | undefined
  /**
   * Runs after the Accept: with `undefined` when the master took it, with the error when it did
   * not (the work is then pending again, and `onPlaced`'s intent is stale).
   */
  readonly onAccepted?: ((placed: Placement.Placed, error: unknown | undefined) => Effect.Effect<void>) | undefined
  /** Not placed before this time (ms since the epoch, from the `Clock`): launch backoff. */
  readonly notBefore?: number | undefined
}

/**
 * What a placed and accepted piece of work became.
 *
 * @since 0.1.0
 * @category models
 */
export interface Accepted {
  readonly placed: Placement.Placed
  /** The Accept failed: the work is pending again. */
  readonly error?: unknown | undefined
}

/**
 * One rejection of a requirement by an offer, with when it happened.
 *
 * @since 0.1.0
 * @category why not
 */
export const RecentRejection = Schema.Struct({
  ...Placement.Rejection.fields,
  /** When the offer was evaluated (ms since the epoch). */
  atMs: Schema.Number
})
/** @since 0.1.0 @category why not */
export type RecentRejection = typeof RecentRejection.Type

/**
 * "Why is this not running", for one pending requirement: the latest rejection per agent (most
 * recent first, at most `whyNotLimit` agents), how often it was evaluated, and what holds it
 * back besides offers (a launch backoff, a hold for reconciliation).
 *
 * @since 0.1.0
 * @category why not
 */
export const WhyNotRecord = Schema.Struct({
  requirementId: Schema.String,
  /** When the work was submitted (ms since the epoch). */
  pendingSinceMs: Schema.Number,
  /** Evaluations of offers against this requirement so far. */
  evaluations: Schema.Number,
  lastEvaluatedAtMs: Schema.optional(Schema.Number),
  /** Not placed before this time (launch backoff). */
  notBeforeMs: Schema.optional(Schema.Number),
  /** Set while offers are held (explicit reconciliation): the reason. */
  heldBy: Schema.optional(Schema.String),
  /** Rejections per stage over the recorded ones, `{ resources: 2, constraints: 1 }`. */
  summary: Schema.Record(Schema.String, Schema.Number),
  recent: Schema.Array(RecentRejection)
})
/** @since 0.1.0 @category why not */
export type WhyNotRecord = typeof WhyNotRecord.Type

/**
 * Counters since the manager started.
 *
 * @since 0.1.0
 * @category models
 */
export interface Counters {
  readonly offersReceived: number
  readonly offersAccepted: number
  readonly declinedShort: number
  readonly declinedLong: number
  readonly rescinded: number
  readonly expired: number
  readonly revives: number
  readonly suppresses: number
  readonly evaluations: number
}

/**
 * The manager's state as data, for `/v1/debug/offers`, logs and tests.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  /** Whether the manager last told the master to suppress offers. */
  readonly suppressed: boolean
  /** The reasons offers are held (not used), empty when none. */
  readonly holds: ReadonlyArray<string>
  /** Offers queued and not yet used or declined. */
  readonly queuedOffers: ReadonlyArray<{ readonly offerId: string; readonly agentId: string; readonly hostname: string }>
  readonly pending: ReadonlyArray<WhyNotRecord>
  readonly counters: Counters
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Refuse seconds of a decline when nothing is pending. Default 3600 (1 h). */
  readonly refuseSecondsIdle?: number | undefined
  /** Refuse seconds of a decline (and of an Accept's unused resources) while work is pending. Default 5. */
  readonly refuseSecondsPending?: number | undefined
  /** The least time between two Revives; a Revive asked for sooner is delayed. Default 5 s. */
  readonly reviveInterval?: Duration.Input | undefined
  /** How long to gather offers and work before evaluating a batch. Default 20 ms. */
  readonly batchWindow?: Duration.Input | undefined
  /** Agents kept per requirement in its why-not record. Default 32. */
  readonly whyNotLimit?: number | undefined
  /**
   * Suppress offers when nothing is pending. Default true; turn it off for a framework that must
   * see offers anyway (to release reservations as they are offered, say).
   */
  readonly suppressWhenIdle?: boolean | undefined
  /**
   * Asked at every pass while nothing is pending: true keeps offers coming (no Suppress, and a
   * Revive if suppressed) for a consumer of idle offers that waits for some (a releaser with old
   * reservations to release, say). Lets a framework suppress when truly idle, yet release.
   */
  readonly wantOffers?: Effect.Effect<boolean> | undefined
  /** Bin-pack (default) or spread. */
  readonly fitness?: Placement.Context["fitness"]
  /** The principal reservations and volumes are made for. */
  readonly principal?: string | undefined
  /** Ids for the operations (UPDATE_OPERATION_STATUS feedback). */
  readonly operationId?: Placement.Context["operationId"]
  /**
   * Offers that arrive while nothing is pending are normally declined at once (long filter).
   * This hook may claim some of them first (to UNRESERVE or DESTROY old resources, say): it
   * returns the operations to accept per offer id; the rest are declined.
   */
  readonly onIdleOffers?: ((offers: ReadonlyArray<v1.Offer>) => Effect.Effect<ReadonlyMap<string, ReadonlyArray<v1.Operation>>>) | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Adds work, or replaces the pending work with the same requirement id (a new `notBefore`, a
   * new task). Revives offers if they were suppressed.
   */
  readonly submit: (work: ReadonlyArray<Work>) => Effect.Effect<void>
  /** Removes pending work (not yet placed); unknown ids are ignored. Suppresses when nothing is left. */
  readonly withdraw: (requirementIds: ReadonlyArray<string>) => Effect.Effect<void>
  /** The ids of the pending requirements. */
  readonly pending: Effect.Effect<ReadonlyArray<string>>
  /** The why-not record of a pending requirement (none once it is placed or withdrawn). */
  readonly whyNot: (requirementId: string) => Effect.Effect<Option.Option<WhyNotRecord>>
  readonly snapshot: Effect.Effect<Snapshot>
  /** Every accepted (or failed) placement from now on. */
  readonly accepted: Stream.Stream<Accepted>
  /**
   * Holds offers for the lifetime of the scope: they are queued (and dropped when they expire or
   * are rescinded), never used. The evaluation resumes when the last hold is released.
   */
  readonly hold: (reason: string) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Adds a source of what already runs (counted by constraints and spread), read before every
   * evaluation, for the lifetime of the scope. The task lifecycle registers its live tasks.
   */
  readonly registerRunning: (source: Effect.Effect<ReadonlyArray<Placement.Running>>) => Effect.Effect<void, never, Scope.Scope>
  /** Evaluates the queued offers now (tests, and after a change the manager cannot see). */
  readonly poke: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category services
 */
export class OfferManager extends Context.Service<OfferManager, Service>()("@berth/sdk-scheduler/OfferManager") {}

/**
 * The offer manager over the current session, fed by the `SchedulerEvents` hub (offers,
 * rescinds, SUBSCRIBED). It registers its handler when built; start the hub afterwards.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<OfferManager, never, SchedulerSession | SchedulerEvents> =>
  Layer.effect(OfferManager, internal.make(options))

/**
 * A pending requirement as the pure matcher sees it.
 *
 * @since 0.1.0
 * @category matching
 */
export type Pending = Matcher.Pending

/**
 * The pure matching step the manager runs on every batch: places the eligible pending work
 * (`notBefore` reached) on the offers, records the rejections into `book` (the why-not records,
 * bounded per requirement) and says which offers to accept (with which operations) and which to
 * decline. No I/O, no clock: `nowMs` is given. `bench:offers` measures this function.
 *
 * @example
 * ```ts
 * const book = OfferManager.makeBook(32)
 * const batch = OfferManager.match(pending, offers, { running }, book, Date.now())
 * batch.accepts   // [{ offerId, agentId, operations, placed: [Placement.Placed] }]
 * batch.declines  // offer ids nothing was placed on
 * OfferManager.recordOf(book, "kv-0")
 * ```
 *
 * @since 0.1.0
 * @category matching
 */
export const match: (
  pending: ReadonlyArray<Pending>,
  offers: ReadonlyArray<v1.Offer>,
  context: Placement.Context,
  book: Book,
  nowMs: number
) => Matcher.Batch = Matcher.match

/**
 * The why-not records of the pending requirements, bounded per requirement.
 *
 * @since 0.1.0
 * @category matching
 */
export type Book = Matcher.Book

/**
 * A new, empty why-not book keeping `limit` agents per requirement.
 *
 * @since 0.1.0
 * @category matching
 */
export const makeBook: (limit?: number) => Book = Matcher.makeBook

/**
 * The why-not record of one requirement in a book, as data.
 *
 * @since 0.1.0
 * @category matching
 */
export const recordOf: (book: Book, requirementId: string) => Option.Option<WhyNotRecord> = Matcher.recordOf

