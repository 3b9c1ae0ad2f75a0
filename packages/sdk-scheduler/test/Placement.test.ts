import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Resources, v1 } from "@berth/proto"
import { Placement, Requirement } from "@berth/sdk-scheduler"
import { apply, launchedResources, offer, req, reserved } from "./placementFixtures.ts"

const placed = (e: Placement.Evaluation, i = 0): Placement.Placed => {
  const o = e.outcomes[i]!
  if (o._tag !== "Placed") throw new Error(`requirement ${o.requirementId} was not placed: ${JSON.stringify(o.rejections)}`)
  return o
}
const unplaced = (e: Placement.Evaluation, i = 0): Placement.Unplaced => {
  const o = e.outcomes[i]!
  if (o._tag !== "Unplaced") throw new Error(`requirement ${o.requirementId} was placed on ${o.offerId}`)
  return o
}
const kinds = (ops: ReadonlyArray<v1.Operation>) => ops.map((op) => op.kind!.$case)

describe("Placement constraints", () => {
  const zones = [offer(1, { attributes: { zone: "a", rack: "rack-1" } }), offer(2, { attributes: { zone: "b", rack: "rack-3" } }), offer(3)]

  it("UNIQUE hostname refuses a host that runs an instance of the group, naming it", () => {
    const e = Placement.evaluate([req("kv-0", { constraints: [["hostname", "UNIQUE"]] })], [offer(2), offer(1)], {
      running: [{ id: "kv-1", group: "kv", agentId: "agent-2", attributes: { hostname: "host-2" } }, { id: "other", group: "web", agentId: "agent-1", attributes: { hostname: "host-1" } }]
    })
    expect(placed(e).offerId).toBe("offer-1")
    expect(placed(e).rejections).toEqual([
      { offerId: "offer-2", agentId: "agent-2", hostname: "host-2", stage: "constraints", reason: "hostname:UNIQUE: already runs kv-1 on agent-2 (hostname host-2)" }
    ])
  })

  it("UNIQUE holds within one evaluation: a third instance fits nowhere", () => {
    const reqs = ["kv-0", "kv-1", "kv-2"].map((id) => req(id, { constraints: [["hostname", "UNIQUE"]] }))
    const e = Placement.evaluate(reqs, [offer(1), offer(2)])
    expect([placed(e, 0).hostname, placed(e, 1).hostname].sort()).toEqual(["host-1", "host-2"])
    expect(unplaced(e, 2).rejections.map((r) => [r.stage, r.reason])).toEqual([
      ["constraints", `hostname:UNIQUE: already runs ${placed(e, 0).hostname === "host-1" ? "kv-0" : "kv-1"} on agent-1 (hostname host-1)`],
      ["constraints", `hostname:UNIQUE: already runs ${placed(e, 0).hostname === "host-2" ? "kv-0" : "kv-1"} on agent-2 (hostname host-2)`]
    ])
  })

  it("CLUSTER with a value keeps to that value; a missing attribute fails", () => {
    const e = Placement.evaluate([req("kv-0", { constraints: [["zone", "CLUSTER", "b"]] })], zones)
    expect(placed(e).offerId).toBe("offer-2")
    expect(placed(e).rejections.map((r) => r.reason)).toEqual(["zone:CLUSTER b: zone is a, not b", "zone:CLUSTER b: the agent has no zone attribute"])
  })

  it("CLUSTER without a value follows the first instance", () => {
    const e = Placement.evaluate([req("kv-0", { constraints: [["zone", "CLUSTER"]] })], zones, {
      running: [{ id: "kv-9", group: "kv", agentId: "agent-7", attributes: { hostname: "host-7", zone: "b" } }]
    })
    expect(placed(e).offerId).toBe("offer-2")
    expect(placed(e).rejections[0]).toMatchObject({ offerId: "offer-1", stage: "constraints", reason: "zone:CLUSTER: group kv runs on zone b (kv-9), this agent is a" })
    // Without anything running, the first placement picks the value and the second follows it.
    const two = Placement.evaluate([req("kv-0", { constraints: [["zone", "CLUSTER"]] }), req("kv-1", { constraints: [["zone", "CLUSTER"]], resources: { cpus: 4, mem: 256 } })], zones.slice(0, 2))
    expect(placed(two, 0).offerId).toBe("offer-1")
    expect(unplaced(two, 1).rejections.map((r) => [r.stage, r.reason])).toEqual([
      ["resources", "needs cpus:4, the offer has 3 unreserved"],
      ["constraints", "zone:CLUSTER: group kv runs on zone a (kv-0), this agent is b"]
    ])
  })

  it("GROUP_BY n waits for n values, then only takes the least used", () => {
    const running = (counts: Record<string, number>) =>
      Object.entries(counts).flatMap(([zone, n]) => Array.from({ length: n }, (_, i) => ({ id: `kv-${zone}${i}`, group: "kv", agentId: `x-${zone}${i}`, attributes: { zone } })))
    const c = { constraints: [["zone", "GROUP_BY", "2"]] as const }
    const first = Placement.evaluate([req("kv-0", c as never)], zones.slice(0, 2), { running: running({ a: 1 }) })
    expect(placed(first).offerId).toBe("offer-2")
    expect(placed(first).rejections[0]!.reason).toBe("zone:GROUP_BY 2: zone a already runs 1 of group kv, and only 1 of 2 zone values are used")
    const even = Placement.evaluate([req("kv-0", c as never)], zones.slice(0, 2), { running: running({ a: 1, b: 1 }) })
    expect(placed(even).rejections).toEqual([])
    const skewed = Placement.evaluate([req("kv-0", c as never)], zones.slice(0, 2), { running: running({ a: 2, b: 1 }) })
    expect(placed(skewed).offerId).toBe("offer-2")
    expect(placed(skewed).rejections[0]!.reason).toBe("zone:GROUP_BY 2: zone a already runs 2 of group kv, the least used runs 1")
  })

  it("LIKE matches the whole value; a missing attribute fails", () => {
    const e = Placement.evaluate([req("kv-0", { constraints: [["rack", "LIKE", "rack-[12]"]] })], zones)
    expect(placed(e).offerId).toBe("offer-1")
    expect(placed(e).rejections.map((r) => r.reason)).toEqual(["rack:LIKE rack-[12]: rack rack-3 does not match", "rack:LIKE rack-[12]: the agent has no rack attribute"])
    const partial = Placement.evaluate([req("kv-0", { constraints: [["rack", "LIKE", "rack"]] })], zones)
    expect(unplaced(partial).rejections).toHaveLength(3)
  })

  it("UNLIKE refuses a match and accepts a missing attribute", () => {
    const e = Placement.evaluate([req("kv-0", { constraints: [["rack", "UNLIKE", "rack-[13]"]] })], zones)
    expect(placed(e).offerId).toBe("offer-3")
    expect(placed(e).rejections.map((r) => r.reason)).toEqual(["rack:UNLIKE rack-[13]: rack rack-1 matches", "rack:UNLIKE rack-[13]: rack rack-3 matches"])
  })

  it("MAX_PER n caps the instances per value", () => {
    const running = [1, 2].map((i) => ({ id: `kv-a${i}`, group: "kv", agentId: `x${i}`, attributes: { zone: "a" } }))
    const e = Placement.evaluate([req("kv-0", { constraints: [["zone", "MAX_PER", "2"]] })], zones.slice(0, 2), { running })
    expect(placed(e).offerId).toBe("offer-2")
    expect(placed(e).rejections[0]!.reason).toBe("zone:MAX_PER 2: zone a already runs 2 of group kv (at most 2)")
    const loose = Placement.evaluate([req("kv-0", { constraints: [["zone", "MAX_PER", "3"]] })], zones.slice(0, 2), { running })
    expect(placed(loose).offerId).toBe("offer-1")
  })

  it("IS needs the exact value, over hostname, zone, region and attributes", () => {
    const e = Placement.evaluate([req("kv-0", { constraints: [["@zone", "IS", "b"]] })], zones)
    expect(placed(e).offerId).toBe("offer-2")
    expect(placed(e).rejections.map((r) => r.reason)).toEqual(["zone:IS b: zone is a", "zone:IS b: the agent has no zone attribute"])
    const host = Placement.evaluate([req("kv-0", { constraints: [["hostname", "IS", "host-3"]] })], zones)
    expect(placed(host).offerId).toBe("offer-3")
  })
})

describe("Placement resources and ports", () => {
  it("assigns named ports from the offered ranges, never twice in one evaluation", () => {
    const o = offer(1, { resources: "cpus:8;mem:8192;ports:[31000-31001,31005-31006]" })
    const task = { command: v1.CommandInfo.create({ shell: true, value: "./kv --port $PORT_HTTP" }) }
    const e = Placement.evaluate(
      [{ requirement: req("kv-0", { resources: { cpus: 1, mem: 64, ports: ["http", "admin-api"] } }), task }, req("kv-1", { resources: { cpus: 1, mem: 64, ports: ["http"] } }), req("kv-2", { resources: { cpus: 1, mem: 64, ports: ["http", "admin"] } })],
      [o]
    )
    expect(placed(e, 0).ports).toEqual({ http: 31000, "admin-api": 31001 })
    expect(placed(e, 1).ports).toEqual({ http: 31005 })
    expect(unplaced(e, 2).rejections).toEqual([{ offerId: "offer-1", agentId: "agent-1", hostname: "host-1", stage: "ports", reason: "needs 2 ports (http, admin), the offer has 1 unreserved" }])
    const launch = placed(e, 0).operations[0]!.kind
    if (launch?.$case !== "launch") throw new Error("expected LAUNCH")
    const info = launch.value.taskInfos[0]!
    expect(Resources.rangesOf(info.resources, "ports")).toEqual([{ begin: 31000, end: 31001 }])
    expect(info.command!.environment).toEqual([{ name: "PORT_HTTP", value: "31000" }, { name: "PORT_ADMIN_API", value: "31001" }])
    expect(Resources.rangesOf(launchedResources(placed(e, 1).operations), "ports")).toEqual([{ begin: 31005, end: 31005 }])
  })

  it("places several requirements on one offer, consuming its resources, and merges their Accept", () => {
    const reqs = [0, 1, 2, 3, 4].map((i) => req(`kv-${i}`))
    const e = Placement.evaluate(reqs, [offer(1, { resources: "cpus:4;mem:4096" })])
    expect(e.outcomes.slice(0, 4).map((o) => o._tag === "Placed" && o.offerId)).toEqual(["offer-1", "offer-1", "offer-1", "offer-1"])
    expect(unplaced(e, 4).rejections).toEqual([{ offerId: "offer-1", agentId: "agent-1", hostname: "host-1", stage: "resources", reason: "needs cpus:1, the offer has 0 unreserved" }])
    expect(e.accepts).toHaveLength(1)
    expect(e.accepts[0]!.operations.map((op) => op.kind?.$case === "launch" && op.kind.value.taskInfos[0]!.taskId)).toEqual(["kv-0", "kv-1", "kv-2", "kv-3"])
    expect("left" in apply(offer(1, { resources: "cpus:4;mem:4096" }).resources, e.accepts[0]!.operations)).toBe(true)
    expect(e.unused).toEqual([])
  })

  it("refuses an offer of another role at the role stage", () => {
    const e = Placement.evaluate([req("kv-0", { role: "kv-role" })], [offer(1, { role: "web" }), offer(2)])
    expect(placed(e).offerId).toBe("offer-2")
    expect(placed(e).rejections).toEqual([{ offerId: "offer-1", agentId: "agent-1", hostname: "host-1", stage: "role", reason: "offer is allocated to role \"web\", the requirement needs role \"kv-role\"" }])
    expect(e.unused).toEqual(["offer-1"])
  })

  it("bin-pack and spread choose different offers", () => {
    const offers = [offer("big", { resources: "cpus:16;mem:16384" }), offer("small", { resources: "cpus:2;mem:1024" })]
    expect(placed(Placement.evaluate([req("kv-0")], offers, { fitness: "binpack" })).offerId).toBe("offer-small")
    expect(placed(Placement.evaluate([req("kv-0")], offers, { fitness: "spread" })).offerId).toBe("offer-big")
    // Deterministic: equal offers go to the first.
    expect(placed(Placement.evaluate([req("kv-0")], [offer(1), offer(2)])).offerId).toBe("offer-1")
  })

  it("soft spread and affinity preferences move the choice, weighted", () => {
    const offers = [offer(1, { attributes: { zone: "a" } }), offer(2, { attributes: { zone: "b" } })]
    const running = [{ id: "kv-9", group: "kv", agentId: "x", attributes: { zone: "a" } }]
    expect(placed(Placement.evaluate([req("kv-0")], offers, { running })).offerId).toBe("offer-1")
    expect(placed(Placement.evaluate([req("kv-0", { preferences: [{ field: "zone", kind: "spread", weight: 1 }] })], offers, { running })).offerId).toBe("offer-2")
    expect(placed(Placement.evaluate([req("kv-0", { preferences: [{ field: "zone", kind: "affinity", value: "b", weight: 1 }] })], offers)).offerId).toBe("offer-2")
  })
})

describe("Placement reservations and volumes", () => {
  const stateful = (extra: Partial<Requirement.Encoded> = {}) =>
    req("kv-0", {
      role: "kv-role",
      resources: { cpus: 1, mem: 256, disk: 100, ports: ["http"] },
      reservation: {},
      volumes: [{ persistenceId: "kv-0-data", containerPath: "data", size: 1024 }],
      ...extra
    })

  it("reserves with labels, creates the volume and launches with the reserved resources and the volume", () => {
    const o = offer(1)
    const e = Placement.evaluate([stateful()], [o], { principal: "kv-principal" })
    const p = placed(e)
    expect(kinds(p.operations)).toEqual(["reserve", "create", "launch"])
    expect(p.reserved).toBe(true)
    expect(p.createdVolumes).toEqual(["kv-0-data"])
    const [reserve, create, launch] = p.operations.map((op) => op.kind!)
    if (reserve!.$case !== "reserve" || create!.$case !== "create" || launch!.$case !== "launch") throw new Error("order")
    const label = { labels: [{ key: "berth.requirement", value: "kv-0" }] }
    for (const r of reserve.value.resources) expect(r.reservations).toEqual([{ type: v1.ReservationInfo_Type.DYNAMIC, role: "kv-role", principal: "kv-principal", labels: label }])
    expect(Resources.format(reserve.value.resources)).toBe("cpus(kv-role):1;mem(kv-role):256;disk(kv-role):1124;ports(kv-role):[31000-31000]")
    expect(create.value.volumes).toHaveLength(1)
    expect(create.value.volumes[0]!.disk).toEqual({ persistence: { id: "kv-0-data", principal: "kv-principal" }, volume: { containerPath: "data", hostPath: "", mode: v1.Volume_Mode.RW } })
    expect(Resources.sumScalar(create.value.volumes, "disk")).toBe(1024)
    const task = launch.value.taskInfos[0]!
    expect(task.resources.filter((r) => r.disk?.persistence?.id === "kv-0-data")).toHaveLength(1)
    expect(task.resources.every((r) => r.reservations.length === 1)).toBe(true)
    expect(Resources.sumScalar(task.resources, "disk")).toBe(1124)
    expect("left" in apply(o.resources, p.operations) ? "ok" : apply(o.resources, p.operations)).toBe("ok")
  })

  it("reuses an existing reservation and volume found by label: LAUNCH only, same ports", () => {
    const labels = { "berth.requirement": "kv-0" }
    const volume: v1.Resource = {
      ...reserved("disk:1024", "kv-role", labels)[0]!,
      disk: { persistence: { id: "kv-0-data", principal: "p" }, volume: { containerPath: "data", hostPath: "", mode: v1.Volume_Mode.RW } }
    }
    const withReservation = offer(2, { resources: [...Resources.parse("cpus:4;mem:4096;disk:5000;ports:[31000-31010]"), ...reserved("cpus:1;mem:256;disk:100;ports:[31007-31007]", "kv-role", labels), volume] })
    const e = Placement.evaluate([stateful({ reservation: { existing: true }, volumes: [{ persistenceId: "kv-0-data", containerPath: "data", existing: true }] })], [offer(1), withReservation])
    const p = placed(e)
    expect(p.offerId).toBe("offer-2")
    expect(kinds(p.operations)).toEqual(["launch"])
    expect(p.reserved).toBe(false)
    expect(p.ports).toEqual({ http: 31007 })
    expect(p.rejections).toEqual([{ offerId: "offer-1", agentId: "agent-1", hostname: "host-1", stage: "reservation", reason: "no reservation labelled berth.requirement=kv-0 on agent agent-1" }])
    const res = launchedResources(p.operations)
    expect(res.every((r) => r.reservations[0]?.labels?.labels[0]?.value === "kv-0")).toBe(true)
    expect(res.find((r) => r.disk?.persistence?.id === "kv-0-data")?.disk?.volume?.containerPath).toBe("data")
    expect("left" in apply(withReservation.resources, p.operations)).toBe(true)
  })

  it("a new-volume requirement whose reservation and volume are already offered does not reserve or create again", () => {
    const labels = { "berth.requirement": "kv-0" }
    const volume: v1.Resource = { ...reserved("disk:1024", "kv-role", labels)[0]!, disk: { persistence: { id: "kv-0-data", principal: "" } } }
    const o = offer(1, { resources: [...reserved("cpus:1;mem:256;disk:100;ports:[31000-31000]", "kv-role", labels), volume] })
    expect(kinds(placed(Placement.evaluate([stateful()], [o])).operations)).toEqual(["launch"])
  })

  it("an existing volume missing from the offer fails at the volumes stage", () => {
    const labels = { "berth.requirement": "kv-0" }
    const o = offer(1, { resources: reserved("cpus:1;mem:256;disk:100;ports:[31000-31000]", "kv-role", labels) })
    const e = Placement.evaluate([stateful({ volumes: [{ persistenceId: "kv-0-data", containerPath: "data", existing: true }] })], [o])
    expect(unplaced(e).rejections).toEqual([{ offerId: "offer-1", agentId: "agent-1", hostname: "host-1", stage: "volumes", reason: "volume \"kv-0-data\" is not offered by agent agent-1" }])
    const small = Placement.evaluate([stateful()], [offer(2, { resources: "cpus:4;mem:4096;disk:1000;ports:[1-5]" })])
    expect(unplaced(small).rejections[0]).toMatchObject({ stage: "volumes", reason: "volume \"kv-0-data\" needs disk:1024 in one piece, the largest left unreserved is 900" })
  })

  it("LAUNCH_GROUP puts the requirement's resources and volumes on the group's first task", () => {
    const executor = v1.ExecutorInfo.create({ type: v1.ExecutorInfo_Type.DEFAULT, executorId: "kv-0-exec" })
    const tasks = [v1.TaskInfo.create({ taskId: "kv-0-server", name: "server" }), v1.TaskInfo.create({ taskId: "kv-0-sidecar", name: "sidecar" })]
    const p = placed(Placement.evaluate([{ requirement: stateful(), group: { executor, tasks } }], [offer(1)]))
    expect(kinds(p.operations)).toEqual(["reserve", "create", "launchGroup"])
    const group = p.operations[2]!.kind
    if (group?.$case !== "launchGroup") throw new Error("expected LAUNCH_GROUP")
    expect(group.value.executor!.resources).toEqual([])
    expect(group.value.taskGroup!.tasks.map((t) => [t.taskId, t.agentId, t.resources.length > 0])).toEqual([["kv-0-server", "agent-1", true], ["kv-0-sidecar", "agent-1", false]])
  })

  it("reservation.extra is reserved with the launch but not launched, and must fit when the reservation is made", () => {
    const withExtra = stateful({ reservation: { extra: { cpus: 0.5, mem: 128 } } })
    const p = placed(Placement.evaluate([withExtra], [offer(1)]))
    const reserve = p.operations[0]!.kind
    const launch = p.operations[2]!.kind
    if (reserve?.$case !== "reserve" || launch?.$case !== "launch") throw new Error("expected RESERVE, CREATE, LAUNCH")
    const sum = (rs: ReadonlyArray<v1.Resource>, name: string) =>
      rs.filter((r) => r.name === name).reduce((n, r) => n + (r.value?.$case === "scalar" ? r.value.value : 0), 0)
    expect([sum(reserve.value.resources, "cpus"), sum(reserve.value.resources, "mem")]).toEqual([1.5, 384])
    expect([sum(launch.value.taskInfos[0]!.resources, "cpus"), sum(launch.value.taskInfos[0]!.resources, "mem")]).toEqual([1, 256])
    // Room for the launch but not for what is held beyond it: refused, saying how much is needed.
    const tight = unplaced(Placement.evaluate([withExtra], [offer(2, { resources: "cpus:1.2;mem:4096;disk:2000;ports:[31000-31010]" })]))
    expect(tight.rejections.map((r) => [r.stage, r.reason])).toEqual([["resources", "needs cpus:1.5, the offer has 1.2 unreserved"]])
    // A reused reservation already holds the extra: only the launch must fit in it.
    const labels = { "berth.requirement": "kv-0" }
    const volume: v1.Resource = {
      ...reserved("disk:1024", "kv-role", labels)[0]!,
      disk: { persistence: { id: "kv-0-data", principal: "p" }, volume: { containerPath: "data", hostPath: "", mode: v1.Volume_Mode.RW } }
    }
    const again = Placement.evaluate(
      [stateful({ reservation: { existing: true, extra: { cpus: 0.5 } }, volumes: [{ persistenceId: "kv-0-data", containerPath: "data", existing: true }] })],
      [offer(3, { resources: [...reserved("cpus:1;mem:256;disk:100;ports:[31000-31000]", "kv-role", labels), volume] })]
    )
    expect(kinds(placed(again).operations)).toEqual(["launch"])
  })

  it("LAUNCH_GROUP gives a task that declares scalars its own share, reserved; the rest goes on the first task", () => {
    const executor = v1.ExecutorInfo.create({ type: v1.ExecutorInfo_Type.DEFAULT, executorId: "kv-0-exec" })
    const scalar = (name: string, value: number) => v1.Resource.create({ name, value: { $case: "scalar", value } })
    const tasks = [
      v1.TaskInfo.create({ taskId: "kv-0-server", name: "server", resources: [scalar("cpus", 0.25), scalar("mem", 64)] }),
      v1.TaskInfo.create({ taskId: "kv-0-sidecar", name: "sidecar", resources: [scalar("cpus", 0.5), scalar("mem", 128)] })
    ]
    const p = placed(Placement.evaluate([{ requirement: stateful(), group: { executor, tasks } }], [offer(1)]))
    const group = p.operations[2]!.kind
    if (group?.$case !== "launchGroup") throw new Error("expected LAUNCH_GROUP")
    const [server, sidecar] = group.value.taskGroup!.tasks
    const sum = (t: v1.TaskInfo, name: string) =>
      t.resources.filter((r) => r.name === name && r.disk?.persistence === undefined).reduce((n, r) => n + (r.value?.$case === "scalar" ? r.value.value : 0), 0)
    // The requirement: cpus 1, mem 256, disk 100, a port, a 1024 MB volume.
    expect([sum(sidecar!, "cpus"), sum(sidecar!, "mem"), sum(sidecar!, "disk")]).toEqual([0.5, 128, 0])
    expect([sum(server!, "cpus"), sum(server!, "mem"), sum(server!, "disk")]).toEqual([0.5, 128, 100])
    expect(server!.resources.some((r) => r.name === "ports")).toBe(true)
    expect(server!.resources.some((r) => r.disk?.persistence?.id === "kv-0-data")).toBe(true)
    expect(sidecar!.resources.some((r) => r.name === "ports" || r.disk?.persistence !== undefined)).toBe(false)
    // Every share carries the reservation made by the RESERVE.
    for (const r of [...server!.resources, ...sidecar!.resources]) expect(r.reservations.length).toBe(1)
  })
})

describe("Placement why-not records", () => {
  it("are Schema data: one record per offer, the first stage that refused it", () => {
    const offers = [offer(1, { role: "web" }), offer(2, { resources: "cpus:0.5;mem:4096" }), offer(3, { resources: "cpus:4;mem:4096" }), offer(4)]
    const e = Placement.evaluate([req("kv-0", { role: "kv-role", resources: { cpus: 1, mem: 256, ports: ["http"] }, constraints: [["hostname", "UNIQUE"]] })], offers, {
      running: [{ id: "kv-1", group: "kv", agentId: "agent-4" }]
    })
    const records = Placement.whyNot(e)
    expect(records).toEqual([
      {
        requirementId: "kv-0",
        placed: false,
        rejections: [
          { offerId: "offer-1", agentId: "agent-1", hostname: "host-1", stage: "role", reason: "offer is allocated to role \"web\", the requirement needs role \"kv-role\"" },
          { offerId: "offer-2", agentId: "agent-2", hostname: "host-2", stage: "resources", reason: "needs cpus:1, the offer has 0.5 unreserved" },
          { offerId: "offer-3", agentId: "agent-3", hostname: "host-3", stage: "ports", reason: "needs 1 port (http), the offer has 0 unreserved" },
          { offerId: "offer-4", agentId: "agent-4", hostname: "host-4", stage: "constraints", reason: "hostname:UNIQUE: already runs kv-1 on agent-4 (hostname host-4)" }
        ]
      }
    ])
    const json = Schema.encodeSync(Schema.Array(Placement.WhyNot))(records)
    expect(Schema.decodeUnknownSync(Schema.Array(Placement.WhyNot))(JSON.parse(JSON.stringify(json)))).toEqual(records)
    expect(Placement.summarize(records[0]!.rejections)).toEqual({ role: 1, resources: 1, ports: 1, constraints: 1 })
  })
})

// Property tests: random clusters and requirements, generated from Schemas.
const Int = (minimum: number, maximum: number) => Schema.Int.check(Schema.isBetween({ minimum, maximum }))
const OfferSpec = Schema.Struct({ cpus: Int(0, 8), mem: Int(0, 8), ports: Int(0, 4), host: Int(0, 5), zone: Int(0, 2) })
const ReqSpec = Schema.Struct({ cpus: Int(1, 6), mem: Int(1, 6), ports: Int(0, 3) })
const Offers = Schema.Array(OfferSpec).check(Schema.isMaxLength(12))
const Reqs = Schema.Array(ReqSpec).check(Schema.isMaxLength(12))

const toOffers = (specs: ReadonlyArray<typeof OfferSpec.Type>) =>
  specs.map((s, i) =>
    offer(i, {
      hostname: `h${s.host}`,
      attributes: { zone: `z${s.zone}` },
      resources: `cpus:${s.cpus / 2};mem:${s.mem * 128}${s.ports > 0 ? `;ports:[${31000 + i * 10}-${31000 + i * 10 + s.ports - 1}]` : ""}`
    })
  )
const toReqs = (specs: ReadonlyArray<typeof ReqSpec.Type>, constraints: Partial<Requirement.Encoded>["constraints"] = []) =>
  specs.map((s, i) => req(`kv-${i}`, { resources: { cpus: s.cpus / 4, mem: s.mem * 64, ports: ["a", "b", "c"].slice(0, s.ports) }, constraints }))

describe("Placement properties", () => {
  it.effect.prop("a placement never exceeds the offer's resources, and no port is assigned twice", [Offers, Reqs, Schema.Boolean], ([o, r, spread]) =>
    Effect.sync(() => {
      const offers = toOffers(o)
      const e = Placement.evaluate(toReqs(r), offers, { fitness: spread ? "spread" : "binpack" })
      for (const accept of e.accepts) {
        const result = apply(offers.find((x) => x.offerId === accept.offerId)!.resources, accept.operations)
        expect(result).toHaveProperty("left")
      }
      const ports = e.outcomes.flatMap((x) => (x._tag === "Placed" ? Object.values(x.ports) : []))
      expect(new Set(ports).size).toBe(ports.length)
      // Something that fits an untouched offer is never left unplaced for lack of resources alone.
      for (const x of e.outcomes) if (x._tag === "Unplaced") expect(x.rejections).toHaveLength(offers.length)
    }))

  it.effect.prop("UNIQUE hostname never puts two instances of a group on one host", [Offers, Reqs], ([o, r]) =>
    Effect.sync(() => {
      const e = Placement.evaluate(toReqs(r, [["hostname", "UNIQUE"]]), toOffers(o), { running: [{ id: "old", group: "kv", agentId: "x", attributes: { hostname: "h0" } }] })
      const hosts = e.outcomes.flatMap((x) => (x._tag === "Placed" ? [x.hostname] : []))
      expect(new Set(hosts).size).toBe(hosts.length)
      expect(hosts).not.toContain("h0")
    }))

  it.effect.prop("MAX_PER n never exceeds n per value", [Offers, Reqs, Int(1, 3)], ([o, r, n]) =>
    Effect.sync(() => {
      const e = Placement.evaluate(toReqs(r, [["zone", "MAX_PER", String(n)]]), toOffers(o))
      const perZone = new Map<string, number>()
      for (const x of e.outcomes) {
        if (x._tag !== "Placed") continue
        const zone = toOffers(o).find((y) => y.offerId === x.offerId)!.attributes[0]!
        const key = zone.value?.$case === "text" ? zone.value.value : ""
        perZone.set(key, (perZone.get(key) ?? 0) + 1)
      }
      for (const count of perZone.values()) expect(count).toBeLessThanOrEqual(n)
    }))
})

describe("Placement fixed ports", () => {
  const task = { command: v1.CommandInfo.create({ value: "run" }) }

  it("gives a fixed port exactly, splitting the range around it, next to named ports", () => {
    const o = offer(1, { resources: "cpus:8;mem:8192;ports:[31000-31010]" })
    const e = Placement.evaluate([{ requirement: req("web-0", { resources: { cpus: 1, mem: 64, ports: ["http"], fixedPorts: { metrics: 31005 } } }), task }], [o])
    expect(placed(e).ports).toEqual({ http: 31000, metrics: 31005 })
    const info = placed(e).operations[0]!.kind!.$case === "launch" ? (placed(e).operations[0]!.kind as { value: v1.Operation_Launch }).value.taskInfos[0]! : undefined
    expect(Resources.rangesOf(info!.resources, "ports")).toEqual([{ begin: 31000, end: 31000 }, { begin: 31005, end: 31005 }])
    expect(info!.command!.environment).toEqual(expect.arrayContaining([{ name: "PORT_METRICS", value: "31005" }, { name: "PORT_HTTP", value: "31000" }]))
  })

  it("refuses an offer without the fixed port, naming it; a second requirement for the same port waits", () => {
    const e = Placement.evaluate(
      [req("web-0", { resources: { cpus: 1, mem: 64, fixedPorts: { http: 8080 } } }), req("web-1", { resources: { cpus: 1, mem: 64, fixedPorts: { http: 8080 } } })],
      [offer(1, { resources: "cpus:8;mem:8192;ports:[31000-31010]" }), offer(2, { resources: "cpus:8;mem:8192;ports:[8000-8100]" })]
    )
    expect(placed(e, 0).offerId).toBe("offer-2")
    expect(placed(e, 0).ports).toEqual({ http: 8080 })
    expect(placed(e, 0).rejections).toEqual([
      { offerId: "offer-1", agentId: "agent-1", hostname: "host-1", stage: "ports", reason: "needs port 8080 (http), not free in the offer's ports unreserved" }
    ])
    expect(unplaced(e, 1).rejections.map((r) => [r.offerId, r.stage, r.reason])).toEqual([
      ["offer-1", "ports", "needs port 8080 (http), not free in the offer's ports unreserved"],
      ["offer-2", "ports", "needs port 8080 (http), not free in the offer's ports unreserved"]
    ])
    // The rest of the range is still there for named ports.
    const after = Placement.evaluate([req("a", { resources: { cpus: 1, mem: 64, fixedPorts: { x: 8000 } } }), req("b", { resources: { cpus: 1, mem: 64, ports: ["p", "q"] } })], [offer(3, { resources: "cpus:8;mem:8192;ports:[8000-8002]" })])
    expect(placed(after, 0).ports).toEqual({ x: 8000 })
    expect(placed(after, 1).ports).toEqual({ p: 8001, q: 8002 })
  })

  it("counts named ports besides the fixed ones", () => {
    const e = Placement.evaluate([req("w", { resources: { cpus: 1, mem: 64, ports: ["a", "b"], fixedPorts: { c: 9000 } } })], [offer(1, { resources: "cpus:8;mem:8192;ports:[9000-9001]" })])
    expect(unplaced(e).rejections.map((r) => r.reason)).toEqual(["needs 2 ports (a, b), the offer has 1 unreserved besides the fixed ones"])
  })
})
