// Resident apps give back what they hold: `wipe=true` on a task kill destroys the instance's
// volume and unreserves its resources (through offers, DESTROY then UNRESERVE), and deleting
// the app releases every reservation and volume. Checked against the master's own state.
import { describe, expect, it } from "@effect/vitest"
import { Resources, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect } from "effect"
import { releaseOperations } from "../src/internal/core.ts"
import { client, eventually, serve } from "./support/harness.ts"

/** What the master says the agents hold for instances: reservation labels and volume ids. */
const held = (cluster: TestCluster.TestCluster) =>
  Effect.map(cluster.operator.state, (state) => {
    const labels = new Set<string>()
    const volumes = new Set<string>()
    let reserved = 0
    for (const agent of state.agents) {
      for (const r of agent.info?.resources ?? []) {
        if (r.reservations.length > 0) reserved++
        for (const res of r.reservations) {
          if (res.type !== v1.ReservationInfo_Type.DYNAMIC) continue
          for (const l of res.labels?.labels ?? []) if (l.key === "marathon.instance") labels.add(l.value)
        }
        const id = r.disk?.persistence?.id
        if (id !== undefined && id !== "") volumes.add(id)
      }
    }
    return { labels: [...labels].sort(), volumes: [...volumes].sort(), reserved }
  }).pipe(Effect.orDie)

const instanceOf = (taskId: string) => taskId.slice(0, taskId.indexOf("._app."))

describe("resident apps release what they hold", () => {
  it.live("wipe=true destroys the volume and unreserves; deleting the app leaves no reservation and no volume", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const server = yield* serve(cluster.master)
      const api = client(server.url)
      const created = yield* api.post("/v2/apps", {
        id: "/store", cmd: "echo hi >> data/log && sleep 1000", cpus: 0.1, mem: 16,
        container: { type: "MESOS", volumes: [{ containerPath: "data", mode: "RW", persistent: { size: 8 } }] }
      })
      expect(created.status, created.text).toBe(201)
      const first = yield* eventually(Effect.map(api.get("/v2/apps/store"), (r) => (r.body.app.tasksRunning === 1 ? r.body.app.tasks[0] : undefined)), 60_000, "resident running")
      const firstInstance = instanceOf(first.id)
      const before = yield* held(cluster)
      expect(before.labels).toEqual([firstInstance])
      expect(before.volumes).toEqual([first.localVolumes[0].persistenceId])

      // Wipe: the task is killed, the slot forgotten, a new instance made with a new reservation
      // and volume, and the old ones destroyed and unreserved at the master.
      const wiped = yield* api.del(`/v2/apps/store/tasks/${first.id}?wipe=true`)
      expect(wiped.status, wiped.text).toBe(200)
      const second = yield* eventually(Effect.map(api.get("/v2/apps/store"), (r) => {
        const t = r.body.app.tasks[0]
        return t !== undefined && r.body.app.tasksRunning === 1 && instanceOf(t.id) !== firstInstance ? t : undefined
      }), 60_000, "a new instance after the wipe")
      expect(second.localVolumes[0].persistenceId).not.toBe(first.localVolumes[0].persistenceId)
      const afterWipe = yield* eventually(Effect.map(held(cluster), (h) => (h.labels.length === 1 && h.volumes.length === 1 && h.labels[0] !== firstInstance ? h : undefined)), 60_000, "old reservation released")
      expect(afterWipe.labels).toEqual([instanceOf(second.id)])
      expect(afterWipe.volumes).toEqual([second.localVolumes[0].persistenceId])

      // Destroying the app releases everything.
      expect((yield* api.del("/v2/apps/store")).status).toBe(200)
      const after = yield* eventually(Effect.map(held(cluster), (h) => (h.reserved === 0 && h.volumes.length === 0 ? h : undefined)), 60_000, "nothing reserved")
      expect(after).toEqual({ labels: [], volumes: [], reserved: 0 })
      expect((yield* api.get("/v2/apps/store")).status).toBe(404)
    }), 180_000)
})

describe("releaseOperations", () => {
  const reserved = (r: v1.Resource, instance: string, principal = "marathon-like"): v1.Resource => ({
    ...r,
    reservations: [{ type: v1.ReservationInfo_Type.DYNAMIC, role: "marathon", principal, labels: { labels: [{ key: "marathon.instance", value: instance }] } }]
  })
  const volume = (instance: string, principal?: string): v1.Resource => ({
    ...reserved(Resources.scalar("disk", 8, "marathon"), instance, principal),
    disk: { persistence: { id: `${instance}.data`, principal: "marathon-like" }, volume: { containerPath: "data", hostPath: "", mode: v1.Volume_Mode.RW } }
  })

  it("destroys and unreserves only what this framework reserved for instances it no longer keeps", () => {
    const offer = v1.Offer.create({
      offerId: "o", agentId: "a", hostname: "h", allocationRole: "marathon",
      resources: [
        Resources.scalar("cpus", 4),
        reserved(Resources.scalar("cpus", 0.1, "marathon"), "kept"), volume("kept"),
        reserved(Resources.scalar("cpus", 0.2, "marathon"), "gone"), volume("gone"),
        reserved(Resources.scalar("mem", 16, "marathon"), "theirs", "another-framework"), volume("theirs", "another-framework")
      ]
    })
    const ops = releaseOperations(offer, new Set(["kept"]), "marathon-like")!
    expect(ops.map((o) => o.kind!.$case)).toEqual(["destroy", "unreserve"])
    const destroyed = (ops[0]!.kind as { value: v1.Operation_Destroy }).value.volumes
    expect(destroyed.map((r) => r.disk?.persistence?.id)).toEqual(["gone.data"])
    const unreserved = (ops[1]!.kind as { value: v1.Operation_Unreserve }).value.resources
    expect(unreserved.map((r) => [r.name, r.disk?.persistence])).toEqual([["cpus", undefined], ["disk", undefined]])
    expect(unreserved.every((r) => r.reservations[0]!.labels!.labels[0]!.value === "gone")).toBe(true)
    // Nothing to release: no operations.
    expect(releaseOperations(offer, new Set(["kept", "gone"]), "marathon-like")).toBeUndefined()
  })
})
