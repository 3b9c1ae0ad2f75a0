// Scheduler SDK offer evaluation (docs: reference/performance.md §2.3): how many offers per
// second `Placement.evaluate` gets through on one core (Node is single-threaded here; run it
// under `taskset -c 0` to pin it), including protobuf decode of the offers.
//
// 10,000 synthetic offers (cpus:24;mem:4096;disk:4096;ports:[31000-32000], hostname, zone of 3,
// rack of 20). Two profiles:
//   simple       cpus 1, mem 128, one named port; no constraints
//   constraints  the same plus Marathon's UNIQUE hostname and GROUP_BY zone 3, with 1,000
//                instances of the group already running
// Each round decodes the offers' bytes and evaluates PENDING requirements against all of them
// (every requirement scans every offer and takes the fittest). `offersPerSecond` = offers
// decoded and evaluated per second of a round with one pending requirement per round (the
// steady state of a framework); `pairsPerSecond` = requirement × offer evaluations per second
// with many pending. Prints one JSON object as its last line.
import { Resources, v1 } from "@berth/proto"
import { Placement, Requirement } from "@berth/sdk-scheduler"

const offerCount = Number(process.env.OFFERS ?? 10_000)
const pendingMany = Number(process.env.PENDING ?? 100)
const rounds = Number(process.env.ROUNDS ?? 10)

const resources = Resources.allocate(Resources.parse("cpus:24;mem:4096;disk:4096;ports:[31000-32000]"), "svc")
const text = (name, value) => ({ name, value: { $case: "text", value } })
const offers = Array.from({ length: offerCount }, (_, i) =>
  v1.Offer.create({
    offerId: `offer-${i}`,
    frameworkId: "fw",
    agentId: `agent-${i}`,
    hostname: `host-${i}.example`,
    resources,
    attributes: [text("zone", `zone-${i % 3}`), text("rack", `rack-${i % 20}`)],
    allocationRole: "svc"
  })
)
const encoded = offers.map((o) => v1.Offer.encode(o).finish())
const running = Array.from({ length: 1_000 }, (_, i) => ({
  id: `app-old-${i}`,
  group: "app",
  agentId: `agent-${i * 7}`,
  attributes: { hostname: `host-${i * 7}.example`, zone: `zone-${(i * 7) % 3}` }
}))

const requirement = (i, constraints) =>
  Requirement.decodeSync({ id: `app-${i}`, group: "app", role: "svc", resources: { cpus: 1, mem: 128, ports: ["http"] }, constraints })

const profiles = {
  simple: { constraints: [], context: {} },
  constraints: { constraints: [["hostname", "UNIQUE"], ["zone", "GROUP_BY", "3"]], context: { running } }
}

const measure = (profile, pending) => {
  const reqs = Array.from({ length: pending }, (_, i) => requirement(i, profile.constraints))
  let best = Infinity
  let placed = 0
  let decodeSeconds = 0
  for (let r = 0; r < rounds + 1; r++) {
    const start = performance.now()
    const decoded = encoded.map((bytes) => v1.Offer.decode(bytes))
    const afterDecode = performance.now()
    const evaluation = Placement.evaluate(reqs, decoded, profile.context)
    const seconds = (performance.now() - start) / 1000
    if (r === 0) continue // warm-up
    if (seconds < best) {
      best = seconds
      decodeSeconds = (afterDecode - start) / 1000
      placed = evaluation.outcomes.filter((o) => o._tag === "Placed").length
    }
  }
  return { pending, placed, seconds: round(best), decodeShare: round(decodeSeconds / best), offersPerSecond: Math.round(offerCount / best), pairsPerSecond: Math.round((offerCount * pending) / best) }
}
const round = (n) => Math.round(n * 1000) / 1000

const result = { bench: "placement", offers: offerCount, node: process.version }
for (const [name, profile] of Object.entries(profiles)) {
  const one = measure(profile, 1)
  const many = measure(profile, pendingMany)
  result[name] = { offersPerSecond: one.offersPerSecond, one, many }
  console.error(`${name}: ${JSON.stringify(result[name])}`)
}
result.targets = { simple: 50_000, constraints: 10_000 }
result.met = { simple: result.simple.offersPerSecond >= 50_000, constraints: result.constraints.offersPerSecond >= 10_000 }
console.log(JSON.stringify(result))
