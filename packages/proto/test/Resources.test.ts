import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"

describe("Resources", () => {
  it("parses and formats the flag syntax", () => {
    const parsed = Resources.parse("cpus:4; mem:2048 ;disk:100;ports:[31000-31005,31003-31010,40000-40000];zones:{b,a}")
    expect(Resources.format(parsed)).toBe("cpus:4;mem:2048;disk:100;ports:[31000-31010,40000-40000];zones:{a,b}")
    expect(Resources.sumScalar(parsed, "cpus")).toBe(4)
    expect(Resources.rangesOf(parsed, "ports")).toEqual([{ begin: 31000, end: 31010 }, { begin: 40000, end: 40000 }])
  })

  it("parses static reservations for a role", () => {
    const [cpus] = Resources.parse("cpus(db):2")
    expect(cpus!.reservations.map((r) => [r.type, r.role])).toEqual([[v1.ReservationInfo_Type.STATIC, "db"]])
    expect(Resources.format([cpus!])).toBe("cpus(db):2")
  })

  it.each([
    ["cpus", /expected name:value/],
    ["cpus:-1", /scalar must be a finite number >= 0/],
    ["cpus:abc", /scalar must be a finite number >= 0/],
    ["ports:[5-3]", /begin <= end/],
    ["ports:[1-2", /ranges must be written/],
    ["9cpus:1", /resource name must match/],
    ["cpus(bad role):1", /role must match/]
  ])("rejects %j naming the part and the rule", (text, rule) => {
    expect(() => Resources.parse(text)).toThrow(rule)
  })

  it("adds, subtracts and compares kind by kind", () => {
    const agent = Resources.parse("cpus:2;mem:1024;ports:[31000-31009]")
    const task = Resources.parse("cpus:0.5;mem:128;ports:[31002-31003]")
    const left = Resources.subtract(agent, task)
    expect(Resources.format(left)).toBe("cpus:1.5;mem:896;ports:[31000-31001,31004-31009]")
    expect(Resources.contains(agent, task)).toBe(true)
    expect(Resources.contains(left, task)).toBe(false)
    expect(Resources.format(Resources.add(left, task))).toBe(Resources.format(agent))
    // Reserved and unreserved cpus are different kinds: one cannot stand in for the other.
    expect(Resources.contains(Resources.parse("cpus(db):4"), Resources.parse("cpus:1"))).toBe(false)
  })

  it("ignores the allocation role when comparing offers with task resources", () => {
    const offered = Resources.allocate(Resources.parse("cpus:1;mem:64"), "web")
    expect(Resources.contains(offered, [Resources.scalar("cpus", 1)])).toBe(true)
  })

  it("keeps scalar sums exact to three decimals over many small steps", () => {
    let left = Resources.parse("cpus:1")
    for (let i = 0; i < 10; i++) left = Resources.subtract(left, [Resources.scalar("cpus", 0.1)])
    expect(left).toEqual([])
    let sum: Array<v1.Resource> = []
    for (let i = 0; i < 30; i++) sum = Resources.add(sum, [Resources.scalar("cpus", 0.1)])
    expect(Resources.sumScalar(sum, "cpus")).toBe(3)
  })
})

describe("TaskStates", () => {
  it("knows which states are terminal", () => {
    const terminal = Object.values(v1.TaskState).filter((s) => TaskStates.isTerminal(s)).map(TaskStates.name)
    expect(terminal.sort()).toEqual(["DROPPED", "ERROR", "FAILED", "FINISHED", "GONE", "GONE_BY_OPERATOR", "KILLED"])
  })
})

describe("wire format", () => {
  it("round-trips an Offer with oneof values through protobuf bytes", () => {
    const offer: v1.Offer = v1.Offer.create({
      offerId: "o1",
      agentId: "a1",
      resources: Resources.parse("cpus:1.5;ports:[31000-31001]"),
      attributes: [{ name: "rack", value: { $case: "text", value: "r1" } }]
    })
    const bytes = v1.Offer.encode(offer).finish()
    expect(v1.Offer.decode(bytes)).toEqual(offer)
  })
})
