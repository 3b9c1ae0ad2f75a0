import type { v1 } from "@berth/proto"

/**
 * An offer as the placement stages read it: its resources split into the pools a requirement
 * can draw from, with running totals so that a stage is a few comparisons. Views are mutated
 * only by `commit.ts`, as requirements are placed, so later requirements see what is left.
 */

/** Scalar quantity left in one resource entry (one kind: name + reservation + disk source). */
export interface ScalarEntry {
  readonly template: v1.Resource
  amount: number
}

/** Free ranges (ports) of one resource entry, as inclusive `[begin, end]` pairs in order. */
export interface RangeEntry {
  readonly template: v1.Resource
  ranges: Array<[number, number]>
}

export interface Pool {
  /** Totals per scalar name, kept in step with `entries`. */
  readonly amounts: Map<string, number>
  readonly entries: Map<string, Array<ScalarEntry>>
  readonly ports: Array<RangeEntry>
  portCount: number
}

export interface ReservedPool extends Pool {
  readonly labels: ReadonlyMap<string, string>
  /** A readable name for reasons: `berth.requirement=kv-0`. */
  readonly text: string
}

export interface OfferView {
  readonly index: number
  readonly offer: v1.Offer
  readonly role: string
  /** hostname plus every attribute, as Marathon compares them (text; scalars to 3 decimals). */
  readonly attributes: ReadonlyMap<string, string>
  /** Unreserved resources, static reservations and unlabelled dynamic ones. */
  readonly free: Pool
  /** Labelled dynamic reservations. */
  readonly reserved: Array<ReservedPool>
  /** Persistent volumes offered and not yet used in this evaluation, by persistence id. */
  readonly volumes: Map<string, v1.Resource>
  /** What the offer held of cpus and mem when the evaluation started (for fitness). */
  readonly totalCpus: number
  readonly totalMem: number
  usedCpus: number
  usedMem: number
  /** The operations placed on this offer so far, in order. */
  readonly operations: Array<v1.Operation>
}

export const emptyPool = (): Pool => ({ amounts: new Map(), entries: new Map(), ports: [], portCount: 0 })

export const round = (n: number): number => Math.round(n * 1000) / 1000

export const attributeText = (a: v1.Attribute): string | undefined => {
  const v = a.value
  if (v === undefined) return undefined
  switch (v.$case) {
    case "text":
      return v.value
    case "scalar":
      return formatScalar(v.value)
    case "ranges":
      return `[${v.value.range.map((r) => `${r.begin}-${r.end}`).join(",")}]`
    case "set":
      return `{${v.value.item.join(",")}}`
  }
}

/** Marathon compares scalars to the nearest thousandth (half-even). */
export const formatScalar = (n: number): string => {
  const scaled = n * 1000
  const floor = Math.floor(scaled)
  const diff = scaled - floor
  const rounded = diff > 0.5 + 1e-9 ? floor + 1 : diff < 0.5 - 1e-9 ? floor : floor % 2 === 0 ? floor : floor + 1
  return String(rounded / 1000)
}

const addTo = (pool: Pool, r: v1.Resource): void => {
  const v = r.value
  if (v === undefined) return
  if (v.$case === "scalar") {
    let list = pool.entries.get(r.name)
    if (list === undefined) pool.entries.set(r.name, (list = []))
    list.push({ template: r, amount: v.value })
    pool.amounts.set(r.name, round((pool.amounts.get(r.name) ?? 0) + v.value))
  } else if (v.$case === "ranges" && r.name === "ports") {
    const ranges: Array<[number, number]> = v.value.range.map((x) => [Number(x.begin), Number(x.end)])
    ranges.sort((a, b) => a[0] - b[0])
    pool.ports.push({ template: r, ranges })
    for (const [b, e] of ranges) pool.portCount += e - b + 1
  }
}

const labelsOf = (r: v1.Resource): ReadonlyArray<v1.Label> | undefined => {
  const last = r.reservations[r.reservations.length - 1]
  if (last === undefined || last.type !== 2 /* DYNAMIC */) return undefined
  const labels = last.labels?.labels
  return labels === undefined || labels.length === 0 ? undefined : labels
}

export const makeView = (offer: v1.Offer, index: number): OfferView => {
  const attributes = new Map<string, string>()
  attributes.set("hostname", offer.hostname)
  for (const a of offer.attributes) {
    const text = attributeText(a)
    if (text !== undefined) attributes.set(a.name, text)
  }
  const free = emptyPool()
  const reserved: Array<ReservedPool> = []
  const volumes = new Map<string, v1.Resource>()
  let totalCpus = 0
  let totalMem = 0
  for (const r of offer.resources) {
    if (r.value?.$case === "scalar") {
      if (r.name === "cpus") totalCpus += r.value.value
      else if (r.name === "mem") totalMem += r.value.value
    }
    const pid = r.disk?.persistence?.id
    if (pid !== undefined && pid !== "") {
      volumes.set(pid, r)
      continue
    }
    const labels = labelsOf(r)
    if (labels === undefined) {
      addTo(free, r)
      continue
    }
    const text = labels.map((l) => `${l.key}=${l.value}`).sort().join(",")
    let pool = reserved.find((p) => p.text === text)
    if (pool === undefined) {
      pool = { ...emptyPool(), labels: new Map(labels.map((l) => [l.key, l.value])), text }
      reserved.push(pool)
    }
    addTo(pool, r)
  }
  return {
    index,
    offer,
    role: offer.allocationRole,
    attributes,
    free,
    reserved,
    volumes,
    totalCpus: round(totalCpus),
    totalMem: round(totalMem),
    usedCpus: 0,
    usedMem: 0,
    operations: []
  }
}
