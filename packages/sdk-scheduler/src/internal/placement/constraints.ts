import type { Attempt, Instance, Prepared, PreparedConstraint } from "./types.ts"

/**
 * Marathon's placement constraints over the instances of the requirement's group: the ones
 * running (from the context) and the ones placed earlier in this evaluation. A missing
 * attribute fails every operator except UNLIKE, as in Marathon.
 */

interface Tally {
  readonly count: number
  /** The first instance seen with this value, to name it in reasons. */
  readonly first: Instance
}

/** Instances per group, and per (group, field) the count of instances per value. */
export class State {
  private readonly byGroup = new Map<string, Array<Instance>>()
  private readonly tallies = new Map<string, Map<string, Tally>>()

  add(group: string, instance: Instance): void {
    let list = this.byGroup.get(group)
    if (list === undefined) this.byGroup.set(group, (list = []))
    list.push(instance)
    for (const [key, tally] of this.tallies) {
      const [g, field] = split(key)
      if (g !== group) continue
      const value = instance.attributes.get(field)
      if (value === undefined) continue
      const t = tally.get(value)
      tally.set(value, t === undefined ? { count: 1, first: instance } : { count: t.count + 1, first: t.first })
    }
  }

  tally(group: string, field: string): Map<string, Tally> {
    const key = `${group}\u0000${field}`
    let tally = this.tallies.get(key)
    if (tally === undefined) {
      tally = new Map()
      for (const instance of this.byGroup.get(group) ?? []) {
        const value = instance.attributes.get(field)
        if (value === undefined) continue
        const t = tally.get(value)
        tally.set(value, t === undefined ? { count: 1, first: instance } : { count: t.count + 1, first: t.first })
      }
      this.tallies.set(key, tally)
    }
    return tally
  }

  instances(group: string): ReadonlyArray<Instance> {
    return this.byGroup.get(group) ?? []
  }
}

const split = (key: string): [string, string] => {
  const i = key.indexOf("\u0000")
  return [key.slice(0, i), key.slice(i + 1)]
}

export const checkOne = (c: PreparedConstraint, req: Prepared, value: string | undefined, state: State): string | undefined => {
  if (value === undefined) {
    return c.operator === "UNLIKE" ? undefined : `${c.text}: the agent has no ${c.field} attribute`
  }
  switch (c.operator) {
    case "UNIQUE": {
      const t = state.tally(req.group, c.field).get(value)
      return t === undefined ? undefined : `${c.text}: already runs ${t.first.id} on ${t.first.agentId} (${c.field} ${value})`
    }
    case "MAX_PER": {
      const t = state.tally(req.group, c.field).get(value)
      return t === undefined || t.count < c.count
        ? undefined
        : `${c.text}: ${c.field} ${value} already runs ${t.count} of group ${req.group} (at most ${c.count})`
    }
    case "CLUSTER": {
      if (c.value !== undefined && c.value !== "") {
        return value === c.value ? undefined : `${c.text}: ${c.field} is ${value}, not ${c.value}`
      }
      const tally = state.tally(req.group, c.field)
      if (tally.size === 0 || tally.has(value)) return undefined
      const [first] = tally.values()
      const chosen = [...tally.keys()][0]
      return `${c.text}: group ${req.group} runs on ${c.field} ${chosen} (${first!.first.id}), this agent is ${value}`
    }
    case "GROUP_BY": {
      // Marathon's rule: a value with no instance yet is always fine; otherwise only once at
      // least `n` values are used, and only the value(s) holding the fewest instances.
      const tally = state.tally(req.group, c.field)
      const mine = tally.get(value)
      if (mine === undefined) return undefined
      let min = Infinity
      for (const t of tally.values()) if (t.count < min) min = t.count
      if (tally.size < c.count) {
        return `${c.text}: ${c.field} ${value} already runs ${mine.count} of group ${req.group}, and only ${tally.size} of ${c.count} ${c.field} values are used`
      }
      return mine.count === min
        ? undefined
        : `${c.text}: ${c.field} ${value} already runs ${mine.count} of group ${req.group}, the least used runs ${min}`
    }
    case "LIKE":
      return c.regex!.test(value) ? undefined : `${c.text}: ${c.field} ${value} does not match`
    case "UNLIKE":
      return c.regex!.test(value) ? `${c.text}: ${c.field} ${value} matches` : undefined
    case "IS":
      return value === c.value ? undefined : `${c.text}: ${c.field} is ${value}`
  }
}

export const check = (a: Attempt, state: State): string | undefined => {
  const constraints = a.req.constraints
  for (let i = 0; i < constraints.length; i++) {
    const c = constraints[i]!
    const reason = checkOne(c, a.req, a.view.attributes.get(c.field), state)
    if (reason !== undefined) return reason
  }
  return undefined
}
