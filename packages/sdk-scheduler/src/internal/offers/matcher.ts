/**
 * The pure part of the offer manager: one batch of offers against the pending work, and the
 * bounded why-not book. No I/O and no clock, so it is benchmarked and unit-tested directly.
 */
import type { v1 } from "@berth/proto"
import { Option } from "effect"
import * as Placement from "../../Placement.ts"

export interface Pending {
  readonly request: Placement.Request
  /** Not placed before this time (ms since the epoch). */
  readonly notBefore?: number | undefined
  /** When the work was submitted (ms since the epoch). */
  readonly sinceMs?: number | undefined
}

export interface BatchAccept {
  readonly offerId: string
  readonly agentId: string
  readonly operations: ReadonlyArray<v1.Operation>
  readonly placed: ReadonlyArray<Placement.Placed>
}

export interface Batch {
  /** One per offer something was placed on, in offer order. */
  readonly accepts: ReadonlyArray<BatchAccept>
  /** Offers nothing was placed on. */
  readonly declines: ReadonlyArray<string>
  /** Requirements considered (notBefore reached). */
  readonly eligible: number
  readonly unplaced: ReadonlyArray<string>
}

interface Recent {
  readonly offerId: string
  readonly agentId: string
  readonly hostname: string
  readonly stage: Placement.Stage
  readonly reason: string
  readonly atMs: number
}

interface Entry {
  readonly requirementId: string
  pendingSinceMs: number
  evaluations: number
  lastEvaluatedAtMs: number | undefined
  notBeforeMs: number | undefined
  heldBy: string | undefined
  /** Latest rejection per agent, oldest first (a Map keeps insertion order). */
  readonly recent: Map<string, Recent>
}

/** The why-not records of the pending requirements. */
export class Book {
  readonly entries = new Map<string, Entry>()
  readonly limit: number
  constructor(limit: number) {
    this.limit = limit
  }

  track(requirementId: string, sinceMs: number, notBeforeMs: number | undefined): Entry {
    let entry = this.entries.get(requirementId)
    if (entry === undefined) {
      entry = { requirementId, pendingSinceMs: sinceMs, evaluations: 0, lastEvaluatedAtMs: undefined, notBeforeMs, heldBy: undefined, recent: new Map() }
      this.entries.set(requirementId, entry)
    } else {
      entry.notBeforeMs = notBeforeMs
    }
    return entry
  }

  forget(requirementId: string): void {
    this.entries.delete(requirementId)
  }

  setHeld(reason: string | undefined): void {
    for (const entry of this.entries.values()) entry.heldBy = reason
  }

  record(entry: Entry, rejections: ReadonlyArray<Placement.Rejection>, atMs: number): void {
    entry.evaluations++
    entry.lastEvaluatedAtMs = atMs
    // Only the newest `limit` distinct agents can survive the trim: take them from the end.
    const picked: Array<Placement.Rejection> = []
    const seen = new Set<string>()
    for (let i = rejections.length - 1; i >= 0 && picked.length < this.limit; i--) {
      const r = rejections[i]!
      if (seen.has(r.agentId)) continue
      seen.add(r.agentId)
      picked.push(r)
    }
    for (let i = picked.length - 1; i >= 0; i--) {
      const r = picked[i]!
      entry.recent.delete(r.agentId)
      entry.recent.set(r.agentId, { offerId: r.offerId, agentId: r.agentId, hostname: r.hostname, stage: r.stage, reason: r.reason, atMs })
    }
    while (entry.recent.size > this.limit) {
      const oldest = entry.recent.keys().next().value as string
      entry.recent.delete(oldest)
    }
  }
}

export const makeBook = (limit = 32): Book => new Book(Math.max(1, Math.floor(limit)))

export interface WhyNotRecord {
  readonly requirementId: string
  readonly pendingSinceMs: number
  readonly evaluations: number
  readonly lastEvaluatedAtMs?: number
  readonly notBeforeMs?: number
  readonly heldBy?: string
  readonly summary: Record<string, number>
  readonly recent: ReadonlyArray<Recent>
}

export const recordOf = (book: Book, requirementId: string): Option.Option<WhyNotRecord> => {
  const entry = book.entries.get(requirementId)
  if (entry === undefined) return Option.none()
  const recent = [...entry.recent.values()].reverse()
  const summary: Record<string, number> = {}
  for (const r of recent) summary[r.stage] = (summary[r.stage] ?? 0) + 1
  return Option.some({
    requirementId,
    pendingSinceMs: entry.pendingSinceMs,
    evaluations: entry.evaluations,
    ...(entry.lastEvaluatedAtMs === undefined ? {} : { lastEvaluatedAtMs: entry.lastEvaluatedAtMs }),
    ...(entry.notBeforeMs === undefined ? {} : { notBeforeMs: entry.notBeforeMs }),
    ...(entry.heldBy === undefined ? {} : { heldBy: entry.heldBy }),
    summary,
    recent
  })
}

export const match = (
  pending: ReadonlyArray<Pending>,
  offers: ReadonlyArray<v1.Offer>,
  context: Placement.Context,
  book: Book,
  nowMs: number
): Batch => {
  const eligible: Array<Pending> = []
  for (const p of pending) {
    const entry = book.track(p.request.requirement.id, p.sinceMs ?? nowMs, p.notBefore)
    if ((p.notBefore ?? 0) <= nowMs) eligible.push(p)
    else entry.notBeforeMs = p.notBefore
  }
  if (eligible.length === 0 || offers.length === 0) {
    return { accepts: [], declines: offers.map((o) => o.offerId), eligible: eligible.length, unplaced: eligible.map((p) => p.request.requirement.id) }
  }
  const evaluation = Placement.evaluate(eligible.map((p) => p.request), offers, context)
  const placedByOffer = new Map<string, Array<Placement.Placed>>()
  const unplaced: Array<string> = []
  for (const outcome of evaluation.outcomes) {
    const entry = book.entries.get(outcome.requirementId)
    if (entry !== undefined) book.record(entry, outcome.rejections, nowMs)
    if (outcome._tag === "Placed") {
      const list = placedByOffer.get(outcome.offerId)
      if (list === undefined) placedByOffer.set(outcome.offerId, [outcome])
      else list.push(outcome)
    } else {
      unplaced.push(outcome.requirementId)
    }
  }
  return {
    accepts: evaluation.accepts.map((a) => ({ ...a, placed: placedByOffer.get(a.offerId) ?? [] })),
    declines: evaluation.unused,
    eligible: eligible.length,
    unplaced
  }
}
