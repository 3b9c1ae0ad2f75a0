/**
 * The offer queue's rules against the scripted test master (real gRPC on loopback): holds,
 * rescinds, expiry, offer ids never used twice, and offers held while the task lifecycle's
 * explicit reconciliation has not been answered.
 */
import { status as GrpcStatus } from "@grpc/grpc-js"
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { OfferManager, Requirement, TaskLifecycle } from "@berth/sdk-scheduler"
import { StateStore, TaskStore } from "@berth/storage"
import { Effect, Option, Scope, Exit } from "effect"
import { eventually, startStack } from "./OfferManager.harness.ts"
import { offer } from "./placementFixtures.ts"
import * as TestMaster from "./testMaster.ts"

const work = (id: string): OfferManager.Work => ({
  request: { requirement: Requirement.decodeSync({ id, resources: { cpus: 1, mem: 32 } }), task: { command: { value: "true", shell: true, arguments: [], environment: [], uris: [], user: "" } } }
})

const acceptedOffers = (master: TestMaster.TestMaster) => master.callsOf("accept").flatMap((r: v1.AcceptRequest) => r.offerIds)

const until = (description: string, condition: () => boolean) =>
  eventually(description, Effect.sync(() => (condition() ? true : undefined)))

describe("OfferManager queue", () => {
  it.live("keeps offers while held, drops rescinded and expired ones, and never uses an offer id twice", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const store = yield* StateStore.make(StateStore.layerMemory)
      const stack = yield* startStack({ master: master.address, store, lifecycle: false })
      yield* until("subscribed", () => master.subscriptions.length > 0)
      const holdScope = yield* Scope.make()
      yield* stack.offers.hold("test hold").pipe(Scope.provide(holdScope))
      yield* stack.offers.submit([work("q-0")])
      const soon = Date.now() + 700 // used only up to 500 ms before it expires
      yield* Effect.sync(() =>
        master.send({
          $case: "offers",
          value: { offers: [{ ...offer(1, { role: "*" }), expiresAtMs: soon }, offer(2, { role: "*" }), offer(3, { role: "*" })] }
        })
      )
      yield* Effect.sync(() => master.send({ $case: "rescind", value: { offerIds: ["offer-3"] } }))
      const held = yield* eventually(
        "held with offers",
        Effect.map(stack.offers.snapshot, (s) => (s.counters.rescinded === 1 && s.queuedOffers.some((o) => o.offerId === "offer-2") ? s : undefined))
      )
      expect(held.queuedOffers.map((o) => o.offerId)).not.toContain("offer-3")
      expect(held.holds).toEqual(["test hold"])
      expect(Option.map(yield* stack.offers.whyNot("q-0"), (r) => r.heldBy)).toEqual(Option.some("test hold"))
      yield* Effect.sleep("600 millis")
      // Still held: nothing accepted; offer-1 has expired meanwhile.
      expect(acceptedOffers(master)).toEqual([])
      yield* Scope.close(holdScope, Exit.void)
      yield* until("accepted", () => acceptedOffers(master).length === 1)
      expect(acceptedOffers(master)).toEqual(["offer-2"])
      const snapshot = yield* stack.offers.snapshot
      expect(snapshot.counters.expired).toBe(1)
      expect(snapshot.counters.rescinded).toBe(1)
      // offer-2 again (a replayed event): ignored, even with new work pending.
      yield* stack.offers.submit([work("q-1")])
      yield* Effect.sync(() => master.send({ $case: "offers", value: { offers: [offer(2, { role: "*" })] } }))
      yield* Effect.sleep("300 millis")
      expect(acceptedOffers(master)).toEqual(["offer-2"])
      yield* Effect.sync(() => master.send({ $case: "offers", value: { offers: [offer(4, { role: "*" })] } }))
      yield* until("q-1 accepted on offer-4", () => acceptedOffers(master).includes("offer-4"))
      expect(acceptedOffers(master)).toEqual(["offer-2", "offer-4"])
    }), 30_000)

  it.live("uses no offer until the explicit reconciliation after SUBSCRIBED is answered", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const store = yield* StateStore.make(StateStore.layerMemory)
      // A task stored by an earlier run: reconciliation must ask about it.
      const ts = yield* TaskStore.make({ info: TaskLifecycle.TaskRecord, status: TaskLifecycle.TaskRecord }).pipe(
        Effect.provideService(StateStore.StateStore, store)
      )
      yield* ts.putInfo("old-0.1", {
        taskId: "old-0.1", requirementId: "old-0", attempt: 1, goal: "RUNNING", state: "RUNNING", progress: 3,
        agentId: "agent-1", offerId: "offer-x", launchedAtMs: 1, updatedAtMs: 1, message: "", failures: 0
      })
      const stack = yield* startStack({ master: master.address, store, lifecycle: { reconcile: { initial: "200 millis", max: "400 millis" } } })
      const tasks = stack.tasks!
      yield* until("explicit reconcile sent", () =>
        master.callsOf("reconcile").some((r: v1.ReconcileRequest) => r.tasks.some((t) => t.taskId === "old-0.1")))
      yield* tasks.launch([{ request: work("new-0").request }])
      yield* Effect.sync(() => master.send({ $case: "offers", value: { offers: [offer(1, { role: "*" })] } }))
      // Unanswered: retried with backoff, and the offer is held, not used.
      yield* until("reconcile retried", () =>
        master.callsOf("reconcile").filter((r: v1.ReconcileRequest) => r.tasks.some((t) => t.taskId === "old-0.1")).length >= 2)
      expect(acceptedOffers(master)).toEqual([])
      expect((yield* stack.offers.snapshot).holds).toEqual(["explicit task reconciliation"])
      // The answer comes: the hold ends and the offer is used.
      yield* Effect.sync(() =>
        master.send({
          $case: "update",
          value: { statuses: [v1.TaskStatus.create({ taskId: "old-0.1", state: v1.TaskState.RUNNING, agentId: "agent-1", timestampMs: Date.now(), reason: v1.TaskStatus_Reason.RECONCILIATION })] }
        })
      )
      yield* tasks.reconciled
      yield* until("offer used", () => acceptedOffers(master).includes("offer-1"))
      expect((yield* stack.offers.snapshot).holds).toEqual([])
      // Every re-subscription reconciles again, the task just launched included.
      const before = master.callsOf("reconcile").length
      yield* Effect.sync(() => master.subscriptions[0]!.stream.end())
      yield* until("re-subscribed", () => master.subscriptions.length === 2)
      yield* until("explicit reconcile after re-subscribing", () =>
        master.callsOf("reconcile").slice(before).some((r: v1.ReconcileRequest) =>
          ["old-0.1", "new-0.1"].every((id) => r.tasks.some((t) => t.taskId === id))))
      expect((yield* stack.offers.snapshot).holds).toEqual(["explicit task reconciliation"])
    }), 30_000)

  it.live("retries a Revive the master refused instead of staying suppressed", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const store = yield* StateStore.make(StateStore.layerMemory)
      const stack = yield* startStack({ master: master.address, store, lifecycle: false, offers: { reviveInterval: "100 millis" } })
      yield* eventually("suppressed", Effect.map(stack.offers.snapshot, (s) => (s.suppressed ? s : undefined)))
      master.failures.set("revive", { code: GrpcStatus.FAILED_PRECONDITION, details: "refused (test)" })
      yield* stack.offers.submit([work("r-0")])
      yield* until("a refused revive", () => master.callsOf("revive").length >= 1)
      yield* Effect.sleep("50 millis")
      expect((yield* stack.offers.snapshot).suppressed).toBe(true)
      master.failures.delete("revive")
      const refused = master.callsOf("revive").length
      yield* eventually("revived", Effect.map(stack.offers.snapshot, (s) => (!s.suppressed ? s : undefined)))
      expect(master.callsOf("revive").length).toBeGreaterThan(refused)
    }), 30_000)
})
