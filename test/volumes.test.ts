import { describe, expect, it } from "@effect/vitest"
import { Agent, Master } from "@berth/cluster-core"
import { Resources, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Effect, Exit, References, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"
import * as MasterSupport from "./support/master.ts"
import * as TempDir from "./support/tempDir.ts"

const ROLE = "db"
const reservation: v1.ReservationInfo = {
  type: v1.ReservationInfo_Type.DYNAMIC,
  role: ROLE,
  principal: "",
  labels: { labels: [{ key: "owner", value: "volumes-test" }] }
}
const reserved = (r: v1.Resource): v1.Resource => ({ ...r, reservations: [reservation] })
const cpus = reserved(Resources.scalar("cpus", 0.5))
const mem = reserved(Resources.scalar("mem", 128))
const disk = reserved(Resources.scalar("disk", 256))
const volume: v1.Resource = {
  ...disk,
  disk: { persistence: { id: "data-1", principal: "" }, volume: { containerPath: "data", hostPath: "", mode: v1.Volume_Mode.RW } }
}
const op = (operationId: string, kind: v1.Operation["kind"]): v1.Operation => ({ operationId, kind })
const task = (taskId: string, command: string): v1.TaskInfo =>
  v1.TaskInfo.create({ taskId, name: taskId, resources: [cpus, mem, volume], command: { shell: true, value: command } })
const hasVolume = (offer: v1.Offer) => offer.resources.some((r) => r.disk?.persistence?.id === "data-1")

describe("reservations and persistent volumes", () => {
  it.live("reserve → create → launch → the volume comes back with its data, across an agent restart → destroy → unreserve", () =>
    Effect.gen(function*() {
      const dir = yield* TempDir.make("berth-volumes-")
      const master = yield* MasterSupport.start()
      const workDir = path.join(dir, "agent")
      const startAgent = (scope: Scope.Scope) =>
        Agent.start({ master: master.endpoint, workDir, resources: "cpus:2;mem:1024;disk:2048" }).pipe(Scope.provide(scope))
      const firstAgent = yield* Scope.make()
      const agent = yield* startAgent(firstAgent)
      const agentId = yield* agent.registered
      const framework = yield* Framework.open(master.endpoint, "db", { roles: [ROLE] })

      // 1. Reserve, create a volume and launch a task that writes into it, in one Accept.
      const first = yield* framework.nextOffer
      expect(first.allocationRole).toBe(ROLE)
      yield* framework.session.accept([first.offerId], [
        op("reserve-1", { $case: "reserve", value: { resources: [cpus, mem, disk] } }),
        op("create-1", { $case: "create", value: { volumes: [volume] } }),
        op("", { $case: "launch", value: { taskInfos: [task("writer", "echo kept > data/file")] } })
      ])
      yield* framework.awaitState("writer", v1.TaskState.FINISHED)
      yield* Effect.gen(function*() {
        while (framework.operations.length < 2) yield* Effect.sleep("20 millis")
      }).pipe(Effect.timeout("5 seconds"))
      expect(framework.operations.map((s) => [s.operationId, s.state])).toEqual([
        ["reserve-1", v1.OperationState.FINISHED],
        ["create-1", v1.OperationState.FINISHED]
      ])
      const onDisk = path.join(workDir, "volumes", "roles", ROLE, "data-1", "file")
      expect(fs.readFileSync(onDisk, "utf8")).toBe("kept\n")

      // 2. The agent restarts: same id (checkpoint), same volume, data intact.
      yield* Scope.close(firstAgent, Exit.void)
      const secondAgent = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(secondAgent, Exit.void))
      const restarted = yield* startAgent(secondAgent)
      expect(yield* restarted.registered).toBe(agentId)
      let offer = yield* framework.nextOffer
      while (!hasVolume(offer)) {
        yield* framework.session.decline([offer.offerId], { refuseSeconds: 0 })
        offer = yield* framework.nextOffer
      }
      const offered = offer.resources.find((r) => r.disk?.persistence?.id === "data-1")!
      expect(offered.reservations.at(-1)?.labels?.labels).toEqual([{ key: "owner", value: "volumes-test" }])

      // 3. A task reads what the first one wrote; while it runs, the volume cannot be destroyed.
      yield* framework.session.accept([offer.offerId], [
        op("", { $case: "launch", value: { taskInfos: [task("reader", "cat data/file; sleep 30")] } })
      ])
      yield* framework.awaitState("reader", v1.TaskState.RUNNING)
      const busy = yield* framework.nextOffer
      const refused = yield* framework.session
        .accept([busy.offerId], [op("destroy-early", { $case: "destroy", value: { volumes: [volume] } })])
        .pipe(Effect.flip)
      expect(refused._tag === "InvalidArgument" && [refused.field, refused.rule]).toEqual([
        "operations[0].destroy.volumes[0].disk.persistence.id",
        'volume "data-1" is in use by a running task'
      ])
      yield* framework.session.decline([busy.offerId], { refuseSeconds: 0 })
      yield* framework.session.kill("reader")
      yield* framework.awaitState("reader", v1.TaskState.KILLED)
      const stdout = fs.readFileSync(
        path.join(workDir, "frameworks", framework.frameworkId, "executors", "reader", "runs", "latest", "stdout"),
        "utf8"
      )
      expect(stdout).toBe("kept\n")

      // 4. UNRESERVE under a live volume is refused; DESTROY then UNRESERVE succeed.
      offer = yield* framework.nextOffer
      while (!hasVolume(offer)) {
        yield* framework.session.decline([offer.offerId], { refuseSeconds: 0 })
        offer = yield* framework.nextOffer
      }
      const early = yield* framework.session
        .accept([offer.offerId], [op("", { $case: "unreserve", value: { resources: [volume] } })])
        .pipe(Effect.flip)
      expect(early.message).toMatch(/DESTROY it before UNRESERVE/)
      yield* framework.session.accept([offer.offerId], [
        op("destroy-1", { $case: "destroy", value: { volumes: [volume] } }),
        op("unreserve-1", { $case: "unreserve", value: { resources: [cpus, mem, disk] } })
      ])
      yield* Effect.gen(function*() {
        while (framework.operations.length < 4) yield* Effect.sleep("20 millis")
      }).pipe(Effect.timeout("5 seconds"))
      expect(framework.operations.slice(-2).map((s) => [s.operationId, s.state])).toEqual([
        ["destroy-1", v1.OperationState.FINISHED],
        ["unreserve-1", v1.OperationState.FINISHED]
      ])
      yield* Effect.gen(function*() {
        while (fs.existsSync(path.dirname(onDisk))) yield* Effect.sleep("20 millis")
      }).pipe(Effect.timeout("5 seconds"))
      expect(fs.existsSync(path.dirname(onDisk))).toBe(false)
      const state = yield* Framework.operatorState(master.endpoint)
      expect(state.agents[0]!.info!.resources.every((r) => r.reservations.length === 0)).toBe(true)

      // Reconciliation of operations reports what happened.
      yield* framework.session.reconcile()
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 40_000)

  it.live("rejects invalid reservation and volume orders, naming the field and the rule", () =>
    Effect.gen(function*() {
      const master = yield* MasterSupport.start()
      const dir = yield* TempDir.make("berth-volumes-")
      yield* Agent.start({ master: master.endpoint, workDir: dir, resources: "cpus:2;mem:1024;disk:2048" })
      const framework = yield* Framework.open(master.endpoint, "db", { roles: [ROLE] })
      const offer = yield* framework.nextOffer
      const foreign = { ...cpus, reservations: [{ ...reservation, role: "other" }] }
      const cases: Array<[Array<v1.Operation>, string, RegExp]> = [
        [[op("", { $case: "reserve", value: { resources: [foreign] } })], "operations[0].reserve.resources[0].reservations", /not the role the offer was allocated to/],
        [[op("", { $case: "reserve", value: { resources: [Resources.scalar("cpus", 1)] } })], "operations[0].reserve.resources[0].reservations", /must hold the reservation/],
        [[op("", { $case: "reserve", value: { resources: [reserved(Resources.scalar("cpus", 64))] } })], "operations[0].reserve.resources", /needs cpus:64 but/],
        [[op("", { $case: "create", value: { volumes: [{ ...volume, reservations: [] }] } })], "operations[0].create.volumes[0].reservations", /RESERVE it first/],
        [[op("", { $case: "create", value: { volumes: [{ ...volume, disk: { ...volume.disk!, volume: { containerPath: "../escape", hostPath: "", mode: 1 } } }] } })], "operations[0].create.volumes[0].disk.volume.containerPath", /relative path inside the sandbox/],
        [[op("", { $case: "create", value: { volumes: [{ ...volume, disk: { ...volume.disk!, persistence: { id: "../x", principal: "" } } }] } })], "operations[0].create.volumes[0].disk.persistence.id", /must match/],
        [[op("", { $case: "create", value: { volumes: [volume] } })], "operations[0].create.volumes", /needs disk\(db\):256/],
        [[op("", { $case: "destroy", value: { volumes: [volume] } })], "operations[0].destroy.volumes[0].disk.persistence.id", /no volume "data-1" exists/],
        [[op("bad id!", { $case: "reserve", value: { resources: [cpus] } })], "operations[0].operationId", /must be printable/],
        [[op("", { $case: "unreserve", value: { resources: [cpus] } })], "operations[0].unreserve.resources", /needs cpus\(db\):0\.5/]
      ]
      for (const [operations, field, rule] of cases) {
        const error = yield* framework.session.accept([offer.offerId], operations).pipe(Effect.flip)
        expect(error._tag, `${field}: ${error.message}`).toBe("InvalidArgument")
        if (error._tag !== "InvalidArgument") continue
        expect(error.field).toBe(field)
        expect(error.rule).toMatch(rule)
      }
      // Nothing was reserved by any of them.
      const state = yield* Framework.operatorState(master.endpoint)
      expect(state.agents[0]!.info!.resources.every((r) => r.reservations.length === 0)).toBe(true)
      expect(framework.operations).toEqual([])
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 30_000)
})
