/**
 * Releasing what an instance held on an agent it no longer uses (replace, decommission,
 * uninstall): its persistent volumes are destroyed and its reservation unreserved, the next time
 * that agent's resources are offered. The list of what is to be released is stored, so a
 * scheduler restart does not leak it. Released means: the master reported the UNRESERVE
 * FINISHED, or an offer from the agent no longer carries anything with those labels.
 */
import { v1 } from "@berth/proto"
import { StateStore, TypedStore } from "@berth/storage"
import { Clock, Effect, Schema } from "effect"

export const Garbage = Schema.Struct({
  instance: Schema.String,
  agentId: Schema.String,
  /** The reservation's labels (every one must be on a resource for it to be released). */
  labels: Schema.Record(Schema.String, Schema.String),
  /** When it was queued (ms). */
  addedAt: Schema.Number,
  /** When the DESTROY/UNRESERVE was last sent (ms), to avoid sending it twice in a row. */
  sentAt: Schema.optional(Schema.Number),
  operationId: Schema.optional(Schema.String)
})
export type Garbage = typeof Garbage.Type

const keyOf = (g: { readonly agentId: string; readonly labels: Readonly<Record<string, string>> }) =>
  `${encodeURIComponent(g.agentId)}/${encodeURIComponent(Object.entries(g.labels).sort().map(([k, v]) => `${k}=${v}`).join(","))}`

const matches = (r: v1.Resource, labels: Readonly<Record<string, string>>) => {
  const top = r.reservations.at(-1)
  if (top === undefined) return false
  const have = new Map((top.labels?.labels ?? []).map((l) => [l.key, l.value]))
  return Object.entries(labels).every(([k, v]) => have.get(k) === v)
}

/** How long to wait for a sent release before sending it again. */
const RESEND_MS = 10_000
/** How long offers from the agent must lack a never-sent reservation before it counts as never made. */
const NEVER_MADE_MS = 30_000

export interface Releaser {
  readonly add: (garbage: ReadonlyArray<Omit<Garbage, "sentAt" | "operationId" | "addedAt">>) => Effect.Effect<void>
  readonly pending: Effect.Effect<ReadonlyArray<Garbage>>
  /** The operations to accept per offer id (for `OfferManager`'s `onIdleOffers`). */
  readonly onOffers: (offers: ReadonlyArray<v1.Offer>) => Effect.Effect<ReadonlyMap<string, ReadonlyArray<v1.Operation>>>
  readonly onOperationStatus: (status: v1.OperationStatus) => Effect.Effect<void>
}

export const make: Effect.Effect<Releaser, never, StateStore.StateStore> = Effect.gen(function*() {
  const store = yield* TypedStore.make(Garbage, "service/garbage/")
  const list = Effect.map(Effect.orDie(store.list()), (entries) => entries.map((e) => e.value))
  const remove = (g: Garbage) => Effect.orDie(store.delete(keyOf(g))).pipe(Effect.catch(() => Effect.void), Effect.asVoid)
  let sequence = 0
  return {
    add: (garbage) =>
      Effect.gen(function*() {
        const addedAt = yield* Clock.currentTimeMillis
        yield* Effect.forEach(garbage, (g) => Effect.orDie(store.put(keyOf(g), { ...g, addedAt })), { discard: true })
      }),
    pending: list,
    onOffers: (offers) =>
      Effect.gen(function*() {
        const out = new Map<string, ReadonlyArray<v1.Operation>>()
        const all = yield* list
        if (all.length === 0) return out
        const now = yield* Clock.currentTimeMillis
        for (const offer of offers) {
          const operations: Array<v1.Operation> = []
          for (const g of all.filter((x) => x.agentId === offer.agentId)) {
            const held = offer.resources.filter((r) => matches(r, g.labels))
            if (held.length === 0) {
              // Nothing with these labels is offered. After our UNRESERVE, that means released.
              // Before it, the offer may predate the end of the tasks that held them (resources
              // in use are not offered): only a long absence means the reservation was never made.
              if (g.sentAt !== undefined || now - g.addedAt > NEVER_MADE_MS) yield* remove(g)
              continue
            }
            if (g.sentAt !== undefined && now - g.sentAt < RESEND_MS) continue
            const volumes = held.filter((r) => r.disk?.persistence !== undefined)
            const operationId = `berth-release-${now}-${sequence++}`
            if (volumes.length > 0) operations.push({ operationId: "", kind: { $case: "destroy", value: { volumes } } })
            operations.push({
              operationId,
              kind: { $case: "unreserve", value: { resources: held.map((r) => (r.disk?.persistence !== undefined ? { ...r, disk: undefined } : r)) } }
            })
            yield* Effect.orDie(store.put(keyOf(g), { ...g, sentAt: now, operationId }))
          }
          if (operations.length > 0) out.set(offer.offerId, operations)
        }
        return out
      }),
    onOperationStatus: (status) =>
      Effect.gen(function*() {
        if (status.operationId === "") return
        const all = yield* list
        const g = all.find((x) => x.operationId === status.operationId)
        if (g === undefined) return
        if (status.state === v1.OperationState.FINISHED) return yield* remove(g)
        if (status.state === v1.OperationState.PENDING) return
        // Refused or lost: send it again with the agent's next offer.
        yield* Effect.logWarning(`releasing ${g.instance} on agent ${g.agentId} failed (${status.message}); will retry`)
        const { sentAt: _sentAt, operationId: _operationId, ...rest } = g
        yield* Effect.orDie(store.put(keyOf(g), rest))
      })
  } satisfies Releaser
})
