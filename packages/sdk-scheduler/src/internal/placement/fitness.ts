import type { State } from "./constraints.ts"
import type { Attempt } from "./types.ts"

export type Strategy = "binpack" | "spread"

/**
 * The fitness of a passing offer: the share of the offer's cpus and mem it would hold after the
 * placement (bin-pack: fuller is better; spread: emptier is better), in [0, 1], plus each soft
 * preference's weight × score in [0, 1]. The highest wins; the first offer wins a tie.
 */
export const score = (a: Attempt, strategy: Strategy, state: State): number => {
  const view = a.view
  const cpuShare = view.totalCpus > 0 ? Math.min(1, (view.usedCpus + a.req.cpus) / view.totalCpus) : 1
  const memShare = view.totalMem > 0 ? Math.min(1, (view.usedMem + a.req.mem) / view.totalMem) : 1
  const utilisation = (cpuShare + memShare) / 2
  let total = strategy === "binpack" ? utilisation : 1 - utilisation
  const prefs = a.req.preferences
  for (let i = 0; i < prefs.length; i++) {
    const p = prefs[i]!
    const field = p.field.startsWith("@") ? p.field.slice(1) : p.field
    const value = view.attributes.get(field)
    if (value === undefined) continue
    if (p.kind === "spread") {
      const t = state.tally(a.req.group, field).get(value)
      total += p.weight / (1 + (t?.count ?? 0))
    } else if (p.value !== undefined) {
      if (value === p.value) total += p.weight
    } else {
      const tally = state.tally(a.req.group, field)
      if (tally.size === 0 || tally.has(value)) total += p.weight
    }
  }
  return total
}
