import type { v1 } from "@berth/proto"
import type { Attempt } from "./types.ts"
import type { Pool } from "./view.ts"

/** Named ports: as many free ports as names must be left in the chosen pool's port ranges. */
export const check = (a: Attempt): string | undefined => {
  const n = a.req.ports.length
  if (n === 0 || a.pool.portCount >= n) return undefined
  const where = a.reservation === undefined ? "unreserved" : `in reservation ${a.reservation.text}`
  return `needs ${n} port${n === 1 ? "" : "s"} (${a.req.ports.join(", ")}), the offer has ${a.pool.portCount} ${where}`
}

/**
 * Takes the lowest free ports, one per name, out of the pool (so no later requirement of the
 * evaluation gets them) and returns the assignment and the port resources, per source entry.
 */
export const take = (pool: Pool, names: ReadonlyArray<string>): { assigned: Record<string, number>; resources: Array<v1.Resource> } => {
  const assigned: Record<string, number> = {}
  const resources: Array<v1.Resource> = []
  let i = 0
  for (const entry of pool.ports) {
    const taken: Array<v1.Range> = []
    while (i < names.length && entry.ranges.length > 0) {
      const first = entry.ranges[0]!
      const port = first[0]
      assigned[names[i]!] = port
      i++
      pool.portCount--
      if (first[0] === first[1]) entry.ranges.shift()
      else first[0] = port + 1
      const last = taken[taken.length - 1]
      if (last !== undefined && last.end + 1 === port) last.end = port
      else taken.push({ begin: port, end: port })
    }
    if (taken.length > 0) resources.push({ ...entry.template, value: { $case: "ranges", value: { range: taken } } })
    if (i === names.length) break
  }
  return { assigned, resources }
}
