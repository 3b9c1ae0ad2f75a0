/**
 * Pure arithmetic on lists of `v1.Resource`: the one place where the master, agents and
 * schedulers agree on how resources add up, subtract and compare. No I/O and no state.
 *
 * Two resources are "the same kind" when their name, reservation stack, disk identity and
 * shared flag are equal; `allocationRole` is ignored, because it only says to which role an
 * offer hands the resources out.
 *
 * @example
 * ```ts
 * import { Resources } from "@berth/proto"
 * const agent = Resources.parse("cpus:4;mem:2048;ports:[31000-32000]")
 * const task = [Resources.scalar("cpus", 1), Resources.scalar("mem", 128)]
 * Resources.contains(agent, task) // true
 * Resources.format(Resources.subtract(agent, task)) // "cpus:3;mem:1920;ports:[31000-32000]"
 * ```
 */
import type { Range, Resource } from "./gen/berth/v1/resources.ts"
import * as RangeSet from "./internal/rangeSet.ts"

/** Scalars are compared at this precision, as Mesos does (three decimal places). */
const EPSILON = 0.0005

/** A resource of a scalar kind (cpus, mem, disk, gpus). */
export const scalar = (name: string, value: number, role?: string): Resource => ({
  name,
  value: { $case: "scalar", value },
  allocationRole: role ?? "",
  reservations: [],
  shared: false
})

/** A resource of ranges (ports), from inclusive `[begin, end]` pairs. */
export const ranges = (name: string, pairs: ReadonlyArray<readonly [number, number]>, role?: string): Resource => ({
  name,
  value: { $case: "ranges", value: { range: RangeSet.normalize(pairs.map(([begin, end]) => ({ begin, end }))) } },
  allocationRole: role ?? "",
  reservations: [],
  shared: false
})

/** A resource of a set of items. */
export const set = (name: string, items: ReadonlyArray<string>, role?: string): Resource => ({
  name,
  value: { $case: "set", value: { item: [...new Set(items)].sort() } },
  allocationRole: role ?? "",
  reservations: [],
  shared: false
})

/** The identity of a resource kind, ignoring its quantity and allocation role. */
export const kindKey = (resource: Resource): string => {
  // The common case (unreserved, no disk info, not shared) is on every allocation's hot path:
  // keep it to a string concatenation.
  if (resource.reservations.length === 0 && resource.disk === undefined && !resource.shared) {
    return `${resource.name}|${resource.value?.$case ?? "none"}`
  }
  return JSON.stringify([
    resource.name,
    resource.value?.$case ?? "none",
    resource.reservations.map((r) => [r.type, r.role, r.principal, r.labels?.labels ?? []]),
    resource.disk?.persistence?.id ?? "",
    resource.disk?.source?.type ?? 0,
    resource.disk?.source?.root ?? "",
    resource.shared
  ])
}

/** The role a resource is reserved for, or "*" when unreserved. */
export const reservationRole = (resource: Resource): string => resource.reservations.at(-1)?.role ?? "*"

const isEmpty = (resource: Resource): boolean => {
  const value = resource.value
  if (value === undefined) return true
  switch (value.$case) {
    case "scalar":
      return value.value < EPSILON
    case "ranges":
      return value.value.range.length === 0
    case "set":
      return value.value.item.length === 0
  }
}

const combine = (a: Resource, b: Resource, sign: 1 | -1): Resource => {
  const av = a.value
  const bv = b.value
  if (av?.$case === "scalar" && bv?.$case === "scalar") {
    return { ...a, value: { $case: "scalar", value: round(av.value + sign * bv.value) } }
  }
  if (av?.$case === "ranges" && bv?.$case === "ranges") {
    const range = sign === 1 ? RangeSet.union(av.value.range, bv.value.range) : RangeSet.difference(av.value.range, bv.value.range)
    return { ...a, value: { $case: "ranges", value: { range } } }
  }
  if (av?.$case === "set" && bv?.$case === "set") {
    const items = new Set(av.value.item)
    for (const item of bv.value.item) sign === 1 ? items.add(item) : items.delete(item)
    return { ...a, value: { $case: "set", value: { item: [...items].sort() } } }
  }
  return a
}

const round = (value: number): number => Math.round(value * 1000) / 1000

/** Merges resources of the same kind into one entry each and drops empty ones. */
export const normalize = (resources: ReadonlyArray<Resource>): Array<Resource> => {
  const byKind = new Map<string, Resource>()
  for (const resource of resources) {
    const key = kindKey(resource)
    const existing = byKind.get(key)
    byKind.set(key, existing === undefined ? combine({ ...resource, value: zeroOf(resource) }, resource, 1) : combine(existing, resource, 1))
  }
  return [...byKind.values()].filter((r) => !isEmpty(r))
}

const zeroOf = (resource: Resource): Resource["value"] => {
  switch (resource.value?.$case) {
    case "ranges":
      return { $case: "ranges", value: { range: [] } }
    case "set":
      return { $case: "set", value: { item: [] } }
    default:
      return { $case: "scalar", value: 0 }
  }
}

/** `a + b`. */
export const add = (a: ReadonlyArray<Resource>, b: ReadonlyArray<Resource>): Array<Resource> => normalize([...a, ...b])

/** `a - b`, dropping what becomes empty. Subtracting more than `a` holds leaves nothing of that kind. */
export const subtract = (a: ReadonlyArray<Resource>, b: ReadonlyArray<Resource>): Array<Resource> => {
  const byKind = new Map(normalize(a).map((r) => [kindKey(r), r] as const))
  for (const resource of normalize(b)) {
    const key = kindKey(resource)
    const existing = byKind.get(key)
    if (existing !== undefined) byKind.set(key, combine(existing, resource, -1))
  }
  return [...byKind.values()].filter((r) => !isEmpty(r) && !(r.value?.$case === "scalar" && r.value.value < 0))
}

/** Whether `a` holds at least everything in `b`, kind by kind. */
export const contains = (a: ReadonlyArray<Resource>, b: ReadonlyArray<Resource>): boolean => {
  const have = new Map(normalize(a).map((r) => [kindKey(r), r] as const))
  return normalize(b).every((wanted) => {
    const held = have.get(kindKey(wanted))
    if (held === undefined) return false
    const hv = held.value
    const wv = wanted.value
    if (hv?.$case === "scalar" && wv?.$case === "scalar") return hv.value + EPSILON >= wv.value
    if (hv?.$case === "ranges" && wv?.$case === "ranges") return RangeSet.contains(hv.value.range, wv.value.range)
    if (hv?.$case === "set" && wv?.$case === "set") return wv.value.item.every((item) => hv.value.item.includes(item))
    return false
  })
}

/** The total scalar quantity of `name` across every kind (all reservations). */
export const sumScalar = (resources: ReadonlyArray<Resource>, name: string): number =>
  round(resources.reduce((sum, r) => (r.name === name && r.value?.$case === "scalar" ? sum + r.value.value : sum), 0))

/** Every port (or other range item) of `name`, as inclusive ranges. */
export const rangesOf = (resources: ReadonlyArray<Resource>, name: string): Array<Range> =>
  RangeSet.normalize(resources.flatMap((r) => (r.name === name && r.value?.$case === "ranges" ? r.value.value.range : [])))

/** Sets the allocation role on every resource (what an offer does). */
export const allocate = (resources: ReadonlyArray<Resource>, role: string): Array<Resource> =>
  resources.map((r) => ({ ...r, allocationRole: role }))

const ORDER = ["cpus", "gpus", "mem", "disk", "ports"]
/** Well-known resources first, in the order people read them, then the rest by name. */
const rank = (name: string) => {
  const i = ORDER.indexOf(name)
  return i < 0 ? ORDER.length : i
}

/** Text form used by flags and logs: `cpus:4;mem:2048;ports:[31000-32000];tags:{a,b}`; a role in parentheses. */
export const format = (resources: ReadonlyArray<Resource>): string =>
  normalize(resources)
    .sort((a, b) => rank(a.name) - rank(b.name) || a.name.localeCompare(b.name) || reservationRole(a).localeCompare(reservationRole(b)))
    .map((r) => {
      const role = r.reservations.at(-1)?.role
      const name = role === undefined ? r.name : `${r.name}(${role})`
      const v = r.value
      if (v?.$case === "ranges") return `${name}:[${v.value.range.map((x) => `${x.begin}-${x.end}`).join(",")}]`
      if (v?.$case === "set") return `${name}:{${v.value.item.join(",")}}`
      return `${name}:${v?.value ?? 0}`
    })
    .join(";")

/** Why a resource text could not be parsed: the offending part and the rule it breaks. */
export class ParseError extends Error {
  override readonly name = "ResourceParseError"
}

const NAME = /^[A-Za-z][A-Za-z0-9_.-]*$/

/**
 * Parses the text form (`cpus:4;mem:2048;ports:[31000-32000]`, `cpus(db):2` for a static
 * reservation for role `db`). Throws {@link ParseError} naming the part and the rule.
 */
export const parse = (text: string): Array<Resource> => {
  const out: Array<Resource> = []
  for (const part of text.split(";").map((p) => p.trim()).filter((p) => p.length > 0)) {
    const colon = part.indexOf(":")
    if (colon < 0) throw new ParseError(`"${part}": expected name:value`)
    const head = part.slice(0, colon).trim()
    const body = part.slice(colon + 1).trim()
    const match = /^([^()]+)(?:\(([^()]+)\))?$/.exec(head)
    const name = match?.[1]?.trim() ?? ""
    const role = match?.[2]?.trim()
    if (!NAME.test(name)) throw new ParseError(`"${part}": resource name must match ${NAME.source}`)
    if (role !== undefined && !NAME.test(role)) throw new ParseError(`"${part}": role must match ${NAME.source}`)
    let resource: Resource
    if (body.startsWith("[")) {
      if (!body.endsWith("]")) throw new ParseError(`"${part}": ranges must be written [begin-end,...]`)
      const pairs = body
        .slice(1, -1)
        .split(",")
        .map((p) => p.trim())
        .filter((p) => p.length > 0)
        .map((p): [number, number] => {
          const m = /^(\d+)-(\d+)$/.exec(p)
          if (m === null) throw new ParseError(`"${part}": range "${p}" must be begin-end with integers`)
          const begin = Number(m[1])
          const end = Number(m[2])
          if (begin > end) throw new ParseError(`"${part}": range "${p}" must have begin <= end`)
          return [begin, end]
        })
      resource = ranges(name, pairs)
    } else if (body.startsWith("{")) {
      if (!body.endsWith("}")) throw new ParseError(`"${part}": sets must be written {a,b,...}`)
      resource = set(name, body.slice(1, -1).split(",").map((s) => s.trim()).filter((s) => s.length > 0))
    } else {
      const value = Number(body)
      if (body === "" || !Number.isFinite(value) || value < 0) {
        throw new ParseError(`"${part}": scalar must be a finite number >= 0`)
      }
      resource = scalar(name, value)
    }
    out.push(
      role === undefined || role === "*"
        ? resource
        : { ...resource, reservations: [{ type: 1, role, principal: "" }] }
    )
  }
  return normalize(out)
}
