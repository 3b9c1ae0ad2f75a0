/**
 * The task lifecycle against a real in-process cluster and a SQLite store: write-ahead launch,
 * acknowledgement after persisting, and a scheduler restart recovered through reconciliation.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { Requirement, TaskLifecycle } from "@berth/sdk-scheduler"
import { StateStore, StoreError, TaskStore } from "@berth/storage"
import { TestCluster } from "@berth/testkit"
import { Effect, Option } from "effect"
import { eventually, startStack } from "./OfferManager.harness.ts"

const spec = (id: string): TaskLifecycle.LaunchSpec => ({
  request: {
    requirement: Requirement.decodeSync({ id, group: "kv", resources: { cpus: 0.25, mem: 32 } }),
    task: { command: { value: "sleep 600", shell: true, arguments: [], environment: [], uris: [], user: "" } }
  },
  goal: "RUNNING"
})

const tmpDb = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-lifecycle-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => path.join(dir, "state.db")))

const taskStore = (store: StateStore.StateStore["Service"]) =>
  TaskStore.make({ info: TaskLifecycle.TaskRecord, status: TaskLifecycle.TaskRecord }).pipe(
    Effect.provideService(StateStore.StateStore, store)
  )

const ofFramework = (state: v1.GetStateResponse, frameworkId: string) => state.tasks.filter((t) => t.frameworkId === frameworkId)

const stateIs = (tasks: TaskLifecycle.Service, taskId: string, state: TaskLifecycle.State) =>
  eventually(
    `${taskId} ${state}`,
    Effect.map(tasks.get(taskId), (r) => (Option.isSome(r) && r.value.state === state ? r.value : undefined))
  )

describe("TaskLifecycle on a real cluster", () => {
  it.live("writes the launch intent before the Accept: no intent stored, no launch", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, master: { allocationIntervalMs: 100 } })
      const real = yield* StateStore.make(StateStore.layerSqlite({ path: yield* tmpDb }))
      let failing = true
      // A store whose transactions (putInfos) fail while `failing`.
      const store: StateStore.StateStore["Service"] = {
        ...real,
        transaction: (ops) =>
          failing
            ? Effect.fail(new StoreError.StoreError({ backend: "test", operation: "transaction", message: "disk full (test)" }))
            : real.transaction(ops)
      }
      const stack = yield* startStack({ master: cluster.master, store, offers: { refuseSecondsPending: 0.1 } })
      const tasks = stack.tasks!
      yield* tasks.launch([spec("wal-0")])
      // Offers come and go (declined because the intent could not be written) ...
      yield* eventually("two declined offers", Effect.map(stack.offers.snapshot, (s) => (s.counters.declinedShort >= 2 ? s : undefined)))
      // ... and nothing was launched.
      expect((yield* cluster.operator.state).tasks).toEqual([])
      expect(yield* stack.offers.pending).toEqual(["wal-0"])
      failing = false
      const running = yield* stateIs(tasks, "wal-0.1", "RUNNING")
      expect(running.attempt).toBe(1)
      // Stored, with the status taken (persisted before it was acknowledged).
      const stored = yield* Effect.flatMap(taskStore(real), (ts) => ts.get("wal-0.1"))
      expect(Option.isSome(stored) && Option.getOrUndefined(stored.value.status)?.state).toBe("RUNNING")
      // The agent got the acknowledgements: the master saw RUNNING (sent only after STARTING was acked).
      yield* cluster.waitFor("wal-0.1 RUNNING at the master", (s) => s.tasks.some((t) => t.info?.taskId === "wal-0.1" && t.state === v1.TaskState.RUNNING))
    }), 60_000)

  it.live("a restarted scheduler fails over to its framework and recovers its tasks by reconciliation, launching nothing twice", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 2, master: { allocationIntervalMs: 100 } })
      const store = yield* StateStore.make(StateStore.layerSqlite({ path: yield* tmpDb }))
      const first = yield* startStack({ master: cluster.master, store })
      yield* first.tasks!.launch([spec("kv-0"), spec("kv-1"), spec("kv-2")])
      for (const id of ["kv-0.1", "kv-1.1", "kv-2.1"]) yield* stateIs(first.tasks!, id, "RUNNING")
      const frameworkId = yield* first.session.frameworkId
      yield* first.stop

      // While no scheduler runs: kv-2's record is lost (the master still runs it), and a launch
      // intent is stored for kv-3 whose Accept never happened (the scheduler died in between).
      const ts = yield* taskStore(store)
      expect(yield* ts.remove("kv-2.1")).toBe(true)
      yield* ts.putInfo("kv-3.1", {
        taskId: "kv-3.1",
        requirementId: "kv-3",
        group: "kv",
        attempt: 1,
        goal: "RUNNING",
        state: "LAUNCHING",
        progress: 0,
        agentId: cluster.agents[0]!.agentId,
        offerId: "offer-gone",
        launchedAtMs: Date.now(),
        updatedAtMs: 0,
        message: "",
        failures: 0
      })

      const second = yield* startStack({ master: cluster.master, store, lifecycle: { unknownTasks: "kill" } })
      const tasks = second.tasks!
      // The stored framework id was used: the same framework, not a new one.
      expect(yield* second.session.frameworkId).toBe(frameworkId)
      yield* tasks.launch([spec("kv-0"), spec("kv-1"), spec("kv-3")])
      // kv-0 and kv-1 are live in storage: nothing is submitted for them.
      expect((yield* second.offers.pending).filter((id) => id !== "kv-3")).toEqual([])
      yield* tasks.reconciled
      // The lost launch is dropped and kv-3 launched again as attempt 2.
      const dropped = yield* stateIs(tasks, "kv-3.1", "DROPPED")
      expect(dropped.message).toContain("launch lost")
      yield* stateIs(tasks, "kv-3.2", "RUNNING")
      // kv-2, unknown to storage, was killed.
      yield* cluster.waitFor("kv-2.1 killed", (s) => s.tasks.some((t) => t.info?.taskId === "kv-2.1" && t.state === v1.TaskState.KILLED))
      const state = yield* cluster.waitFor("kv-0.1, kv-1.1, kv-3.2 running", (s) =>
        ["kv-0.1", "kv-1.1", "kv-3.2"].every((id) => s.tasks.some((t) => t.info?.taskId === id && t.state === v1.TaskState.RUNNING)))
      // No double launch: exactly the four tasks ever launched, and one framework.
      expect(ofFramework(state, frameworkId).map((t) => t.info?.taskId).sort()).toEqual(["kv-0.1", "kv-1.1", "kv-2.1", "kv-3.2"])
      expect(state.frameworks.length).toBe(1)
      expect((yield* tasks.byRequirement("kv-0")).map((r) => r.taskId)).toEqual(["kv-0.1"])
      expect(Option.map(yield* tasks.get("kv-0.1"), (r) => r.state)).toEqual(Option.some("RUNNING"))
    }), 90_000)

  it.live("stop kills with the given grace and launches nothing again; kill restarts by the goal", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, master: { allocationIntervalMs: 100 } })
      const store = yield* StateStore.make(StateStore.layerMemory)
      const stack = yield* startStack({ master: cluster.master, store, lifecycle: { backoff: { initial: "10 millis" } } })
      const tasks = stack.tasks!
      yield* tasks.launch([spec("svc-0"), spec("svc-1")])
      yield* stateIs(tasks, "svc-0.1", "RUNNING")
      yield* stateIs(tasks, "svc-1.1", "RUNNING")
      // kill = restart: goal RUNNING launches attempt 2, without counting a failure.
      yield* tasks.kill("svc-0.1", { gracePeriod: "1 second" })
      yield* stateIs(tasks, "svc-0.1", "KILLED")
      const second = yield* stateIs(tasks, "svc-0.2", "RUNNING")
      expect(second.failures).toBe(0)
      // stop = for good.
      yield* tasks.stop(["svc-1"])
      const stopped = yield* stateIs(tasks, "svc-1.1", "KILLED")
      expect(stopped.killRequested).toBe(true)
      yield* Effect.sleep("500 millis")
      expect((yield* tasks.byRequirement("svc-1")).map((r) => r.taskId)).toEqual(["svc-1.1"])
      expect(yield* stack.offers.pending).toEqual([])
    }), 60_000)
})
