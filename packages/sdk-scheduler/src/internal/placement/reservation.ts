import type { Attempt } from "./types.ts"
import type { ReservedPool } from "./view.ts"

/**
 * Chooses the pool the resources come from: a dynamic reservation carrying every label the
 * requirement names (reused as is, no RESERVE), or the unreserved pool (RESERVE first when the
 * requirement wants a reservation, unless it must reuse an existing one).
 */
export const check = (a: Attempt): string | undefined => {
  const req = a.req
  a.reservation = undefined
  a.reserve = false
  a.pool = a.view.free
  if (req.labels === undefined) return undefined
  const found = find(a.view.reserved, req.labels)
  if (found !== undefined) {
    a.reservation = found
    a.pool = found
    return undefined
  }
  if (req.existingReservation) return `no reservation labelled ${req.labelsText} on agent ${a.view.offer.agentId}`
  a.reserve = true
  return undefined
}

const find = (pools: ReadonlyArray<ReservedPool>, labels: ReadonlyArray<readonly [string, string]>) => {
  for (const pool of pools) {
    let all = true
    for (const [k, v] of labels) {
      if (pool.labels.get(k) !== v) {
        all = false
        break
      }
    }
    if (all) return pool
  }
  return undefined
}
