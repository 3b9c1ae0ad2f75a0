/**
 * The lifecycle's timers against the scripted test master (real gRPC on loopback): a task that
 * never leaves LAUNCHING is killed after the staging timeout and launched again, and the launch
 * backoff grows exponentially up to its maximum. The test master lets the test decide which
 * status updates arrive, which a real cluster would not.
 */
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { Requirement, TaskLifecycle } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { Effect, Option } from "effect"
import { eventually, startStack } from "./OfferManager.harness.ts"
import { offer } from "./placementFixtures.ts"
import * as TestMaster from "./testMaster.ts"

const spec = (id: string): TaskLifecycle.LaunchSpec => ({
  request: { requirement: Requirement.decodeSync({ id, resources: { cpus: 1, mem: 32 } }), task: { command: { value: "true", shell: true, arguments: [], environment: [], uris: [], user: "" } } },
  goal: "RUNNING"
})

const launchedIds = (master: TestMaster.TestMaster) =>
  master.callsOf("accept").flatMap((r: v1.AcceptRequest) =>
    r.operations.flatMap((op) => (op.kind?.$case === "launch" ? op.kind.value.taskInfos.map((t) => t.taskId) : []))
  )

const status = (taskId: string, state: v1.TaskState, uuid?: number): v1.TaskStatus =>
  v1.TaskStatus.create({
    taskId,
    state,
    agentId: "agent-1",
    timestampMs: Date.now(),
    source: v1.TaskStatus_Source.MASTER,
    ...(uuid === undefined ? {} : { uuid: new Uint8Array([7, uuid]) })
  })

const sendOffer = (master: TestMaster.TestMaster, n: number | string) =>
  Effect.sync(() => master.send({ $case: "offers", value: { offers: [offer(n, { role: "*" })] } }))

const until = (description: string, condition: () => boolean) =>
  eventually(description, Effect.sync(() => (condition() ? true : undefined)))

describe("TaskLifecycle timers", () => {
  it.live("kills a task stuck in LAUNCHING after the staging timeout and launches it again", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const store = yield* StateStore.make(StateStore.layerMemory)
      const stack = yield* startStack({
        master: master.address,
        store,
        lifecycle: { stagingTimeout: "300 millis", backoff: { initial: "50 millis" } }
      })
      const tasks = stack.tasks!
      yield* until("subscribed", () => master.subscriptions.length > 0)
      yield* tasks.reconciled
      yield* tasks.launch([spec("st-0")])
      yield* sendOffer(master, 1)
      yield* until("st-0.1 accepted", () => launchedIds(master).includes("st-0.1"))
      // No status ever comes: the staging timeout kills it and asks the master about it.
      yield* until("st-0.1 killed", () => master.callsOf("kill").some((r: v1.KillRequest) => r.kills.some((k) => k.taskId === "st-0.1")))
      yield* until("st-0.1 reconciled", () => master.callsOf("reconcile").some((r: v1.ReconcileRequest) => r.tasks.some((t) => t.taskId === "st-0.1")))
      // The master never heard of it: the intent is dropped and a second attempt is placed.
      yield* Effect.sync(() => master.send({ $case: "update", value: { statuses: [status("st-0.1", v1.TaskState.UNKNOWN)] } }))
      const dropped = yield* eventually("st-0.1 dropped", Effect.map(tasks.get("st-0.1"), (r) => (Option.isSome(r) && r.value.state === "DROPPED" ? r.value : undefined)))
      expect(dropped.message).toContain("launch lost")
      yield* eventually("st-0 pending again", Effect.map(stack.offers.pending, (p) => (p.includes("st-0") ? p : undefined)))
      yield* Effect.sleep("100 millis") // past the 50 ms backoff
      yield* sendOffer(master, 2)
      yield* until("st-0.2 accepted", () => launchedIds(master).includes("st-0.2"))
      const second = yield* eventually("st-0.2 recorded", Effect.map(tasks.get("st-0.2"), Option.getOrUndefined))
      expect(second.failures).toBe(1)
      expect(launchedIds(master)).toEqual(["st-0.1", "st-0.2"])
    }), 30_000)

  it.live("backs off exponentially between failed launches, up to the maximum, and acknowledges what it stored", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const store = yield* StateStore.make(StateStore.layerMemory)
      const initialMs = 200
      const maxMs = 800
      const stack = yield* startStack({
        master: master.address,
        store,
        lifecycle: { backoff: { initial: `${initialMs} millis`, max: `${maxMs} millis` } }
      })
      const tasks = stack.tasks!
      yield* until("subscribed", () => master.subscriptions.length > 0)
      yield* tasks.reconciled
      yield* tasks.launch([spec("b-0")])
      const delays: Array<number> = []
      // The record of the previous attempt's wait may still be there when the failure is sent:
      // only a newer `notBeforeMs` is this attempt's.
      let previousNotBefore = -1
      for (let k = 1; k <= 5; k++) {
        yield* sendOffer(master, k)
        yield* until(`b-0.${k} accepted`, () => launchedIds(master).includes(`b-0.${k}`))
        const before = Date.now()
        yield* Effect.sync(() => master.send({ $case: "update", value: { statuses: [status(`b-0.${k}`, v1.TaskState.FAILED, k)] } }))
        const record = yield* eventually(
          `b-0 waiting for attempt ${k + 1}`,
          Effect.map(stack.offers.whyNot("b-0"), (r) =>
            Option.isSome(r) && r.value.notBeforeMs !== undefined && r.value.notBeforeMs > previousNotBefore ? r.value : undefined)
        )
        previousNotBefore = record.notBeforeMs!
        const after = Date.now()
        const expected = TaskLifecycle.backoffMs(k, initialMs, maxMs)
        delays.push(expected)
        // notBefore was set between sending the failure and seeing the record, `expected` later.
        expect(record.notBeforeMs!).toBeGreaterThanOrEqual(before + expected)
        expect(record.notBeforeMs!).toBeLessThanOrEqual(after + expected)
        if (k === 2) {
          // An offer inside the backoff is declined, not used.
          yield* sendOffer(master, "early")
          yield* until("early offer declined", () => master.callsOf("decline").some((r: v1.DeclineRequest) => r.offerIds.includes("offer-early")))
          expect(launchedIds(master)).not.toContain("b-0.3")
        }
        yield* Effect.sleep(`${Math.max(0, record.notBeforeMs! - Date.now()) + 50} millis`)
      }
      expect(delays).toEqual([200, 400, 800, 800, 800])
      expect((yield* tasks.byRequirement("b-0")).map((r) => r.failures)).toEqual([0, 1, 2, 3, 4])
      // Each FAILED was stored and then acknowledged.
      const acked = master.callsOf("acknowledge").flatMap((r: v1.AcknowledgeRequest) => r.acknowledgements.map((a) => a.taskId))
      expect(acked).toEqual(["b-0.1", "b-0.2", "b-0.3", "b-0.4", "b-0.5"])
    }), 30_000)
})
