import { describe, expect, it } from "@effect/vitest"
import { Resources, type v1 } from "@berth/proto"
import * as Allocator from "../src/internal/master/allocator.ts"

interface Demand {
  readonly id: string
  readonly role: string
  readonly task: Array<v1.Resource>
}

/**
 * Drives an allocator the way a framework and the master do: each framework launches as many of
 * its tasks as fit in an offer (up to `tasksPerOffer`) and hands the rest back; an offer it cannot
 * use at all is declined with a refusal of a few cycles, so others get it. Stops once several
 * cycles in a row launch nothing.
 */
const simulate = (
  allocator: Allocator.Allocator,
  demands: ReadonlyArray<Demand>,
  options: { maxCycles?: number; tasksPerOffer?: number } = {}
) => {
  const maxCycles = options.maxCycles ?? 5000
  const tasksPerOffer = options.tasksPerOffer ?? Number.POSITIVE_INFINITY
  const launched = new Map<string, number>(demands.map((d) => [d.id, 0]))
  let idle = 0
  for (let cycle = 0; cycle < maxCycles && idle < 10; cycle++) {
    let progress = false
    for (const a of allocator.cycle(cycle)) {
      const demand = demands.find((d) => d.id === a.frameworkId)!
      let left = a.resources
      let count = 0
      while (count < tasksPerOffer && Resources.contains(left, demand.task)) {
        left = Resources.subtract(left, demand.task)
        count++
      }
      launched.set(demand.id, launched.get(demand.id)! + count)
      allocator.recover(a.frameworkId, a.agentId, a.role, left)
      if (count > 0) progress = true
      else allocator.filter(a.frameworkId, a.agentId, cycle + 5)
    }
    idle = progress ? 0 : idle + 1
  }
  return launched
}

const cluster = (allocator: Allocator.Allocator, agents: number, resources: string) => {
  for (let i = 0; i < agents; i++) allocator.addAgent(`agent-${i}`, Resources.parse(resources))
}

const share = (count: number, task: Array<v1.Resource>, totals: { cpus: number; mem: number }) =>
  Math.max((count * Resources.sumScalar(task, "cpus")) / totals.cpus, (count * Resources.sumScalar(task, "mem")) / totals.mem)

const minimum = { minimumAllocatable: { cpus: 0.01, mem: 32 } }

describe("allocator", () => {
  it("converges to DRF: frameworks with different dominant resources end within 5% of DRF's dominant shares", () => {
    const allocator = Allocator.make(minimum)
    cluster(allocator, 50, "cpus:32;mem:65536")
    const a: Demand = { id: "a", role: "*", task: Resources.parse("cpus:0.25;mem:2048") } // memory-dominant
    const b: Demand = { id: "b", role: "*", task: Resources.parse("cpus:1;mem:256") } // cpu-dominant
    allocator.addFramework("a", ["*"])
    allocator.addFramework("b", ["*"])
    // Frameworks take one task per offer: progressive filling, as DRF is defined.
    const launched = simulate(allocator, [a, b], { tasksPerOffer: 1 })
    const totals = { cpus: 50 * 32, mem: 50 * 65536 }
    const shareA = share(launched.get("a")!, a.task, totals)
    const shareB = share(launched.get("b")!, b.task, totals)
    // DRF's answer: equal dominant shares s with cpus binding,
    // 0.25·(s·50·65536/2048) + 1·(s·50·32) = 50·32  =>  s = 0.8.
    const drf = 0.8
    expect(Math.abs(shareA - drf) / drf).toBeLessThanOrEqual(0.05)
    expect(Math.abs(shareB - drf) / drf).toBeLessThanOrEqual(0.05)
  })

  it("respects role weights: a role of weight 3 gets three times the share of weight 1", () => {
    const allocator = Allocator.make(minimum)
    cluster(allocator, 100, "cpus:4;mem:4096")
    allocator.setWeight("gold", 3)
    allocator.setWeight("bronze", 1)
    const task = Resources.parse("cpus:1;mem:1024")
    allocator.addFramework("g", ["gold"])
    allocator.addFramework("z", ["bronze"])
    const launched = simulate(allocator, [{ id: "g", role: "gold", task }, { id: "z", role: "bronze", task }])
    const ratio = launched.get("g")! / launched.get("z")!
    expect(launched.get("g")! + launched.get("z")!).toBe(400)
    expect(ratio).toBeGreaterThan(2.85)
    expect(ratio).toBeLessThan(3.15)
  })

  it("never allocates beyond a role's quota limit, even to a framework that wants everything", () => {
    const allocator = Allocator.make(minimum)
    cluster(allocator, 10, "cpus:8;mem:8192")
    allocator.setQuota("capped", Resources.parse("cpus:10;mem:100000"))
    allocator.addFramework("greedy", ["capped"])
    let allocatedCpus = 0
    for (let cycle = 0; cycle < 20; cycle++) {
      for (const a of allocator.cycle(cycle)) allocatedCpus += Resources.sumScalar(a.resources, "cpus")
      expect(allocatedCpus).toBeLessThanOrEqual(10)
      expect(allocator.roleView("capped").allocated.get("cpus")).toBeLessThanOrEqual(10)
    }
    expect(allocatedCpus).toBe(10)
  })

  it("honours filters until they expire, suppression until revive, and revive clears filters", () => {
    const allocator = Allocator.make(minimum)
    cluster(allocator, 1, "cpus:2;mem:1024")
    allocator.addFramework("f", ["*"])
    const [first] = allocator.cycle(0)
    expect(first?.agentId).toBe("agent-0")
    allocator.recover("f", "agent-0", "*", first!.resources)
    allocator.filter("f", "agent-0", 5000)
    expect(allocator.cycle(4999)).toEqual([])
    expect(allocator.cycle(5000)).toHaveLength(1)
    allocator.recover("f", "agent-0", "*", Resources.parse("cpus:2;mem:1024"))

    allocator.suppress("f", [])
    expect(allocator.cycle(10_000)).toEqual([])
    allocator.filter("f", "agent-0", 1e12)
    allocator.revive("f", [])
    expect(allocator.cycle(10_001)).toHaveLength(1)
  })

  it("offers reserved resources only to their role, unreserved ones to anyone", () => {
    const allocator = Allocator.make(minimum)
    allocator.addAgent("agent-0", Resources.parse("cpus(db):2;mem(db):512;cpus:1;mem:256"))
    allocator.addFramework("web", ["web"])
    allocator.addFramework("db", ["db"])
    const allocations = allocator.cycle(0)
    const byFramework = Object.fromEntries(allocations.map((a) => [a.frameworkId, Resources.format(a.resources)]))
    expect(byFramework.db).toContain("cpus(db):2")
    expect(byFramework.web ?? "").not.toContain("(db)")
    expect(Object.values(byFramework).join(";")).toContain("cpus:1")
  })

  it("does not offer a deactivated agent or to a deactivated framework", () => {
    const allocator = Allocator.make(minimum)
    cluster(allocator, 2, "cpus:1;mem:256")
    allocator.addFramework("f", ["*"])
    allocator.deactivateAgent("agent-0")
    expect(allocator.cycle(0).map((a) => a.agentId)).toEqual(["agent-1"])
    allocator.deactivateFramework("f")
    allocator.activateAgent("agent-0")
    expect(allocator.cycle(1)).toEqual([])
  })
})
