/**
 * The pure matching step and the why-not book (no I/O).
 */
import { describe, expect, it } from "@effect/vitest"
import { OfferManager } from "@berth/sdk-scheduler"
import { Option } from "effect"
import { offer, req } from "./placementFixtures.ts"

const pending = (id: string, extra: Parameters<typeof req>[1] = {}, notBefore?: number): OfferManager.Pending => ({
  request: { requirement: req(id, extra) },
  sinceMs: 10,
  ...(notBefore === undefined ? {} : { notBefore })
})

describe("OfferManager.match", () => {
  it("places several requirements on one offer, one Accept per offer, and declines the rest", () => {
    const book = OfferManager.makeBook()
    const batch = OfferManager.match([pending("kv-0"), pending("kv-1")], [offer(1), offer(2, { resources: "cpus:0.5;mem:64" })], {}, book, 100)
    expect(batch.accepts.map((a) => [a.offerId, a.placed.map((p) => p.requirementId)])).toEqual([["offer-1", ["kv-0", "kv-1"]]])
    expect(batch.declines).toEqual(["offer-2"])
    expect(batch.unplaced).toEqual([])
  })

  it("leaves work in backoff out and declines every offer", () => {
    const book = OfferManager.makeBook()
    const batch = OfferManager.match([pending("kv-0", {}, 500)], [offer(1)], {}, book, 100)
    expect(batch.accepts).toEqual([])
    expect(batch.declines).toEqual(["offer-1"])
    expect(Option.map(OfferManager.recordOf(book, "kv-0"), (r) => r.notBeforeMs)).toEqual(Option.some(500))
  })

  it("keeps the latest rejection per agent, newest first, bounded by the limit", () => {
    const book = OfferManager.makeBook(3)
    const huge = pending("big-0", { resources: { cpus: 64, mem: 1 } })
    OfferManager.match([huge], [1, 2, 3, 4, 5].map((n) => offer(n)), {}, book, 100)
    let record = Option.getOrThrow(OfferManager.recordOf(book, "big-0"))
    expect(record.recent.map((r) => r.agentId)).toEqual(["agent-5", "agent-4", "agent-3"])
    expect(record.summary).toEqual({ resources: 3 })
    expect(record.recent[0]).toMatchObject({ stage: "resources", atMs: 100, offerId: "offer-5" })
    expect(record.recent[0]!.reason).toContain("needs cpus:64")
    // A later offer from agent-4 moves it to the front; the oldest falls out.
    OfferManager.match([huge], [offer(4, { attributes: { zone: "z" } })], {}, book, 200)
    record = Option.getOrThrow(OfferManager.recordOf(book, "big-0"))
    expect(record.recent.map((r) => [r.agentId, r.atMs])).toEqual([["agent-4", 200], ["agent-5", 100], ["agent-3", 100]])
    expect(record.evaluations).toBe(2)
    expect(record.lastEvaluatedAtMs).toBe(200)
    expect(record.pendingSinceMs).toBe(10)
  })
})
