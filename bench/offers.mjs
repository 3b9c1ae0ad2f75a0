// Offer manager matching (issue 6, `npm run bench:offers`): how many offers per second the
// offer manager's matching step (`OfferManager.match`: eligibility and backoff, Placement's
// resource + constraint stages, the bounded why-not book, grouping into Accepts and Declines)
// gets through on one core. Pure: no network, no protobuf decode (offers arrive decoded).
//
// 10,000 synthetic offers (cpus:24;mem:4096;disk:4096;ports:[31000-32000], hostname, zone of 3,
// rack of 20); requirements cpus 1, mem 128, one named port, UNIQUE hostname and GROUP_BY zone 3,
// with 1,000 instances of the group already running. `offersPerSecond` is measured with PENDING
// requirements (default 10 pending at once, every offer evaluated against each);
// `many` repeats it with 100 pending at once. Prints one JSON object as its last line.
import { Resources, v1 } from "@berth/proto"
import { OfferManager, Requirement } from "@berth/sdk-scheduler"

const offerCount = Number(process.env.OFFERS ?? 10_000)
const pendingCount = Number(process.env.PENDING ?? 10)
const pendingMany = Number(process.env.PENDING_MANY ?? 100)
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
const running = Array.from({ length: 1_000 }, (_, i) => ({
  id: `app-old-${i}`,
  group: "app",
  agentId: `agent-${i * 7}`,
  attributes: { hostname: `host-${i * 7}.example`, zone: `zone-${(i * 7) % 3}` }
}))
const constraints = [["hostname", "UNIQUE"], ["zone", "GROUP_BY", "3"]]
const pendingOf = (n) =>
  Array.from({ length: n }, (_, i) => ({
    request: {
      requirement: Requirement.decodeSync({ id: `app-${i}`, group: "app", role: "svc", resources: { cpus: 1, mem: 128, ports: ["http"] }, constraints })
    },
    sinceMs: 0
  }))

const measure = (pending) => {
  let best = Infinity
  let placed = 0
  for (let r = 0; r < rounds + 1; r++) {
    const book = OfferManager.makeBook(32)
    const start = performance.now()
    const batch = OfferManager.match(pending, offers, { running }, book, 1_000)
    const seconds = (performance.now() - start) / 1000
    if (r === 0) continue // warm-up
    if (seconds < best) {
      best = seconds
      placed = batch.accepts.reduce((n, a) => n + a.placed.length, 0)
    }
  }
  return { pending: pending.length, placed, seconds: round(best), offersPerSecond: Math.round(offerCount / best), pairsPerSecond: Math.round((offerCount * pending.length) / best) }
}
const round = (n) => Math.round(n * 1000) / 1000

const one = measure(pendingOf(pendingCount))
const many = measure(pendingOf(pendingMany))
console.error(`one: ${JSON.stringify(one)}`)
console.error(`many: ${JSON.stringify(many)}`)
console.log(JSON.stringify({ offers: offerCount, pending: one.pending, offersPerSecond: one.offersPerSecond, target: 50_000, many, node: process.version }))
