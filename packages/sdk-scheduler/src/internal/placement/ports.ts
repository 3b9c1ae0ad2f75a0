import type { v1 } from "@berth/proto"
import type { Attempt } from "./types.ts"
import type { Pool } from "./view.ts"

const holds = (pool: Pool, port: number): boolean => {
  for (const entry of pool.ports) for (const [b, e] of entry.ranges) if (b <= port && port <= e) return true
  return false
}

/**
 * Ports: every fixed port must be free in the chosen pool's port ranges, and as many other free
 * ports as names must be left besides them.
 */
export const check = (a: Attempt): string | undefined => {
  const fixed = a.req.fixedPorts
  const n = a.req.ports.length
  if (n === 0 && fixed.length === 0) return undefined
  const where = a.reservation === undefined ? "unreserved" : `in reservation ${a.reservation.text}`
  if (fixed.length > 0) {
    const missing = fixed.filter(([, port]) => !holds(a.pool, port))
    if (missing.length > 0) {
      return `needs port${missing.length === 1 ? "" : "s"} ${missing.map(([name, port]) => `${port} (${name})`).join(", ")}, not free in the offer's ports ${where}`
    }
  }
  if (n === 0 || a.pool.portCount - fixed.length >= n) return undefined
  return `needs ${n} port${n === 1 ? "" : "s"} (${a.req.ports.join(", ")}), the offer has ${a.pool.portCount - fixed.length} ${where}${fixed.length > 0 ? " besides the fixed ones" : ""}`
}

/** Removes one port from the entry's ranges (splitting a range around it); answers whether it was there. */
const takeOne = (ranges: Array<[number, number]>, port: number): boolean => {
  for (let k = 0; k < ranges.length; k++) {
    const [b, e] = ranges[k]!
    if (port < b || port > e) continue
    if (b === e) ranges.splice(k, 1)
    else if (port === b) ranges[k] = [b + 1, e]
    else if (port === e) ranges[k] = [b, e - 1]
    else ranges.splice(k, 1, [b, port - 1], [port + 1, e])
    return true
  }
  return false
}

/** Adds a port to a list of taken ranges kept in ascending order, merging neighbours. */
const addTaken = (taken: Array<v1.Range>, port: number): void => {
  let k = 0
  while (k < taken.length && taken[k]!.end < port) k++
  const prev = taken[k - 1]
  const next = taken[k]
  if (prev !== undefined && prev.end + 1 === port) {
    prev.end = port
    if (next !== undefined && next.begin === port + 1) {
      prev.end = next.end
      taken.splice(k, 1)
    }
  } else if (next !== undefined && next.begin === port + 1) next.begin = port
  else taken.splice(k, 0, { begin: port, end: port })
}

/**
 * Takes the fixed ports, then the lowest free ports, one per name, out of the pool (so no later
 * requirement of the evaluation gets them) and returns the assignment and the port resources,
 * per source entry.
 */
export const take = (
  pool: Pool,
  names: ReadonlyArray<string>,
  fixed: ReadonlyArray<readonly [string, number]> = []
): { assigned: Record<string, number>; resources: Array<v1.Resource> } => {
  const assigned: Record<string, number> = {}
  const taken = new Map<(typeof pool.ports)[number], Array<v1.Range>>()
  const takenOf = (entry: (typeof pool.ports)[number]) => {
    let list = taken.get(entry)
    if (list === undefined) taken.set(entry, (list = []))
    return list
  }
  for (const [name, port] of fixed) {
    for (const entry of pool.ports) {
      if (!takeOne(entry.ranges, port)) continue
      assigned[name] = port
      pool.portCount--
      addTaken(takenOf(entry), port)
      break
    }
  }
  let i = 0
  for (const entry of pool.ports) {
    if (i === names.length) break
    while (i < names.length && entry.ranges.length > 0) {
      const first = entry.ranges[0]!
      const port = first[0]
      assigned[names[i]!] = port
      i++
      pool.portCount--
      if (first[0] === first[1]) entry.ranges.shift()
      else first[0] = port + 1
      addTaken(takenOf(entry), port)
    }
  }
  const resources: Array<v1.Resource> = []
  for (const entry of pool.ports) {
    const list = taken.get(entry)
    if (list !== undefined && list.length > 0) resources.push({ ...entry.template, value: { $case: "ranges", value: { range: list } } })
  }
  return { assigned, resources }
}
