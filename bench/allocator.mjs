// One allocation cycle of the master's allocator in the Mesos `DeclineOffers` benchmark profile
// (HierarchicalAllocator_BENCHMARK_Test.DeclineOffers): 10,000 agents of
// cpus:24;mem:4096;disk:4096;ports:[31000-32000], each with 16 cpus, 2014 MB, 1024 disk and 16
// ports already in use; 1,000 frameworks in role "*" that decline everything with an endless
// refusal. Mesos 1.7 took 1.06 s for one cycle (10,000 offers) on one core.
//
// The allocator is pure code (no I/O), so like the Mesos benchmark this drives it in process.
// Prints one JSON object as its last line.
import { Resources } from "@berth/proto"
import * as Allocator from "../packages/cluster-core/dist/internal/master/allocator.js"

const agents = Number(process.env.AGENTS ?? 10_000)
const frameworkCount = Number(process.env.FRAMEWORKS ?? 1_000)
const cycles = Number(process.env.CYCLES ?? 3)

const allocator = Allocator.make({ minimumAllocatable: { cpus: 0.01, mem: 32 } })
const total = Resources.parse("cpus:24;mem:4096;disk:4096;ports:[31000-32000]")
// 16 fragments of ports in use, as in the Mesos profile.
const usedPorts = Array.from({ length: 16 }, (_, i) => [31000 + i * 2, 31000 + i * 2])
const used = [...Resources.parse("cpus:16;mem:2014;disk:1024"), Resources.ranges("ports", usedPorts)]

const setupStart = performance.now()
for (let f = 0; f < frameworkCount; f++) allocator.addFramework(`framework-${f}`, ["*"])
for (let a = 0; a < agents; a++) {
  allocator.addAgent(`agent-${a}`, total)
  allocator.track(`framework-${a % frameworkCount}`, `agent-${a}`, "*", used)
}
const setupSeconds = (performance.now() - setupStart) / 1000

const timings = []
let offers = 0
let now = 1
for (let c = 0; c < cycles; c++) {
  const start = performance.now()
  const allocations = allocator.cycle(now)
  timings.push((performance.now() - start) / 1000)
  offers = allocations.length
  // Every framework declines what it got, refusing the agent for good.
  for (const a of allocations) {
    allocator.recover(a.frameworkId, a.agentId, a.role, a.resources)
    allocator.filter(a.frameworkId, a.agentId, Number.MAX_SAFE_INTEGER)
  }
  now += 1000
}

console.log(JSON.stringify({
  agents,
  frameworks: frameworkCount,
  offers,
  cycleSeconds: Number(timings[0].toFixed(3)),
  cycleSecondsAll: timings.map((t) => Number(t.toFixed(3))),
  setupSeconds: Number(setupSeconds.toFixed(3))
}))
