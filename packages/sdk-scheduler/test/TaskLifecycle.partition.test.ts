/**
 * Partitions, unknown tasks and periodic reconciliation, against the scripted test master (the
 * test decides which updates arrive).
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

let ts = 1_000
const update = (master: TestMaster.TestMaster, taskId: string, state: v1.TaskState) =>
  Effect.sync(() =>
    master.send({ $case: "update", value: { statuses: [v1.TaskStatus.create({ taskId, state, agentId: "agent-1", timestampMs: ts++ })] } })
  )

const until = (description: string, condition: () => boolean) =>
  eventually(description, Effect.sync(() => (condition() ? true : undefined)))

const stateIs = (tasks: TaskLifecycle.Service, taskId: string, state: TaskLifecycle.State) =>
  eventually(`${taskId} ${state}`, Effect.map(tasks.get(taskId), (r) => (Option.isSome(r) && r.value.state === state ? r.value : undefined)))

describe("TaskLifecycle partitions and unknown tasks", () => {
  it.live("does not relaunch an UNREACHABLE task, and takes it back when it returns", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const store = yield* StateStore.make(StateStore.layerMemory)
      const stack = yield* startStack({ master: master.address, store, lifecycle: { backoff: { initial: "10 millis" } } })
      const tasks = stack.tasks!
      yield* until("subscribed", () => master.subscriptions.length > 0)
      yield* tasks.reconciled
      yield* tasks.launch([spec("p-0")])
      yield* Effect.sync(() => master.send({ $case: "offers", value: { offers: [offer(1, { role: "*" })] } }))
      yield* until("p-0.1 accepted", () => launchedIds(master).includes("p-0.1"))
      yield* update(master, "p-0.1", v1.TaskState.RUNNING)
      yield* stateIs(tasks, "p-0.1", "RUNNING")
      yield* update(master, "p-0.1", v1.TaskState.UNREACHABLE)
      yield* stateIs(tasks, "p-0.1", "UNREACHABLE")
      // Offers keep coming; nothing is launched in its place.
      yield* Effect.sync(() => master.send({ $case: "offers", value: { offers: [offer(2, { role: "*" })] } }))
      yield* Effect.sleep("300 millis")
      expect(yield* stack.offers.pending).toEqual([])
      expect(launchedIds(master)).toEqual(["p-0.1"])
      // A late STAGING is ignored; RUNNING brings it back.
      yield* update(master, "p-0.1", v1.TaskState.STAGING)
      yield* update(master, "p-0.1", v1.TaskState.RUNNING)
      const back = yield* stateIs(tasks, "p-0.1", "RUNNING")
      expect(back.progress).toBe(3)
    }), 30_000)

  it.live("kills a task the master reports that storage does not know, or adopts it by policy", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const killer = yield* startStack({ master: master.address, store: yield* StateStore.make(StateStore.layerMemory), name: "killer" })
      yield* until("subscribed", () => master.subscriptions.length === 1)
      yield* killer.tasks!.reconciled
      yield* update(master, "stray.4", v1.TaskState.RUNNING)
      yield* until("stray.4 killed", () => master.callsOf("kill").some((r: v1.KillRequest) => r.kills.some((k) => k.taskId === "stray.4")))
      expect(Option.isNone(yield* killer.tasks!.get("stray.4"))).toBe(true)
      yield* killer.stop

      const adopter = yield* startStack({
        master: master.address,
        store: yield* StateStore.make(StateStore.layerMemory),
        lifecycle: { unknownTasks: "adopt" },
        name: "adopter"
      })
      yield* until("subscribed again", () => master.subscriptions.length === 2)
      yield* adopter.tasks!.reconciled
      const kills = master.callsOf("kill").length
      yield* update(master, "stray.4", v1.TaskState.RUNNING)
      const adopted = yield* stateIs(adopter.tasks!, "stray.4", "RUNNING")
      expect(adopted).toMatchObject({ requirementId: "stray", attempt: 4, goal: "ONCE" })
      expect(master.callsOf("kill").length).toBe(kills)
    }), 30_000)

  it.live("reconciles implicitly at the configured period", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const stack = yield* startStack({
        master: master.address,
        store: yield* StateStore.make(StateStore.layerMemory),
        lifecycle: { implicitReconcileInterval: "200 millis" }
      })
      yield* stack.tasks!.reconciled
      const implicit = () => master.callsOf("reconcile").filter((r: v1.ReconcileRequest) => r.tasks.length === 0).length
      const start = implicit()
      yield* until("two more implicit reconciliations", () => implicit() >= start + 2)
    }), 30_000)
})
