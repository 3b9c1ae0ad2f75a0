import { Resources, type v1 } from "@berth/proto"

/**
 * The master's allocator: hierarchical dominant resource fairness (DRF), first across roles
 * (each role's share divided by its weight), then across the frameworks of a role; role quota
 * limits that are never exceeded; Decline filters; per-role suppression. Pure bookkeeping with no
 * I/O and no clock of its own: the master passes `now` in, so tests and simulations control time.
 *
 * Every resource handed out (offered or used by tasks) is "allocated" to a framework and a role
 * until the master gives it back with `recover`.
 */

/** Scalar quantities by resource name (cpus, mem, disk, gpus, custom scalars). */
export type Quantities = Map<string, number>

export interface MinimumAllocatable {
  readonly cpus: number
  readonly mem: number
}

export interface Allocation {
  readonly frameworkId: string
  readonly agentId: string
  readonly role: string
  readonly resources: Array<v1.Resource>
}

interface AgentEntry {
  readonly id: string
  total: Array<v1.Resource>
  allocated: Array<v1.Resource>
  /** total − allocated, kept up to date so a cycle does not recompute it for idle agents. */
  available: Array<v1.Resource>
  active: boolean
}

interface FrameworkEntry {
  readonly id: string
  roles: ReadonlyArray<string>
  suppressed: Set<string>
  /**
   * Decline filters by agent: until `untilMs`, the framework is not offered resources of that agent
   * that are no more than what it declined (more resources, e.g. freed cpus, lift the filter, as in
   * Mesos). `resources` undefined refuses the agent outright.
   */
  readonly filters: Map<string, { readonly untilMs: number; readonly resources: ReadonlyArray<v1.Resource> | undefined }>
  /** What this framework holds, per role. */
  readonly allocated: Map<string, Quantities>
  active: boolean
}

interface RoleEntry {
  readonly name: string
  weight: number
  quota: Quantities | undefined
  readonly allocated: Quantities
  readonly frameworks: Set<string>
}

const add = (into: Quantities, resources: ReadonlyArray<v1.Resource>, sign: 1 | -1) => {
  for (const r of resources) {
    if (r.value?.$case !== "scalar") continue
    const next = (into.get(r.name) ?? 0) + sign * r.value.value
    into.set(r.name, Math.abs(next) < 0.0005 ? 0 : next)
  }
}

/** Fisher-Yates with a small seeded generator (xorshift32), so a given `now` replays exactly. */
const shuffle = <A>(items: Array<A>, seed: number): Array<A> => {
  let state = (Math.floor(seed) ^ 0x9e3779b9) >>> 0 || 1
  const next = () => {
    state ^= state << 13
    state >>>= 0
    state ^= state >>> 17
    state ^= state << 5
    state >>>= 0
    return state / 0x100000000
  }
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1))
    const t = items[i]!
    items[i] = items[j]!
    items[j] = t
  }
  return items
}

export const make = (options: { readonly minimumAllocatable: MinimumAllocatable }) => {
  const agents = new Map<string, AgentEntry>()
  const frameworks = new Map<string, FrameworkEntry>()
  const roles = new Map<string, RoleEntry>()
  const weights = new Map<string, number>()
  const quotas = new Map<string, Quantities>()
  const totals: Quantities = new Map()

  const role = (name: string): RoleEntry => {
    let entry = roles.get(name)
    if (entry === undefined) {
      entry = { name, weight: weights.get(name) ?? 1, quota: quotas.get(name), allocated: new Map(), frameworks: new Set() }
      roles.set(name, entry)
    }
    return entry
  }

  const allocatable = (resources: ReadonlyArray<v1.Resource>) =>
    Resources.sumScalar(resources, "cpus") >= options.minimumAllocatable.cpus ||
    Resources.sumScalar(resources, "mem") >= options.minimumAllocatable.mem

  const share = (held: Quantities): number => {
    let max = 0
    for (const [name, amount] of held) {
      const total = totals.get(name) ?? 0
      if (total > 0) max = Math.max(max, amount / total)
    }
    return max
  }

  const roleShare = (entry: RoleEntry) => share(entry.allocated) / entry.weight

  /** Offered resources usable by a role: unreserved ones and those reserved for it. */
  const forRole = (resources: ReadonlyArray<v1.Resource>, name: string) =>
    resources.filter((r) => r.reservations.length === 0 || Resources.reservationRole(r) === name)

  /** Trims unreserved scalars to the role's quota headroom (reserved resources count already). */
  const capByQuota = (resources: Array<v1.Resource>, entry: RoleEntry): Array<v1.Resource> => {
    const quota = entry.quota
    if (quota === undefined) return resources
    return resources.flatMap((r) => {
      const limit = quota.get(r.name)
      if (limit === undefined || r.value?.$case !== "scalar" || r.reservations.length > 0) return [r]
      const headroom = Math.max(0, limit - (entry.allocated.get(r.name) ?? 0))
      const amount = Math.min(r.value.value, Math.floor(headroom * 1000) / 1000)
      return amount <= 0 ? [] : [{ ...r, value: { $case: "scalar" as const, value: amount } }]
    })
  }

  const charge = (framework: FrameworkEntry, roleName: string, resources: ReadonlyArray<v1.Resource>, sign: 1 | -1) => {
    let held = framework.allocated.get(roleName)
    if (held === undefined) {
      held = new Map()
      framework.allocated.set(roleName, held)
    }
    add(held, resources, sign)
    add(role(roleName).allocated, resources, sign)
  }

  const setAgentAllocated = (agent: AgentEntry, allocated: Array<v1.Resource>) => {
    agent.allocated = allocated
    agent.available = Resources.subtract(agent.total, allocated)
  }

  return {
    addAgent(id: string, total: ReadonlyArray<v1.Resource>, allocated: ReadonlyArray<v1.Resource> = []): void {
      const existing = agents.get(id)
      if (existing?.active) add(totals, existing.total, -1)
      const entry: AgentEntry = { id, total: Resources.normalize(total), allocated: [], available: [], active: true }
      setAgentAllocated(entry, Resources.normalize(allocated))
      agents.set(id, entry)
      add(totals, entry.total, 1)
    },
    /** Stops offering an agent (disconnected, draining) without forgetting what is allocated on it. */
    deactivateAgent(id: string): void {
      const agent = agents.get(id)
      if (agent === undefined || !agent.active) return
      agent.active = false
      add(totals, agent.total, -1)
    },
    activateAgent(id: string): void {
      const agent = agents.get(id)
      if (agent === undefined || agent.active) return
      agent.active = true
      add(totals, agent.total, 1)
    },
    removeAgent(id: string): void {
      const agent = agents.get(id)
      if (agent === undefined) return
      if (agent.active) add(totals, agent.total, -1)
      agents.delete(id)
    },
    addFramework(id: string, frameworkRoles: ReadonlyArray<string>, suppressed: ReadonlyArray<string> = []): void {
      const existing = frameworks.get(id)
      if (existing !== undefined) {
        for (const r of existing.roles) if (!frameworkRoles.includes(r)) role(r).frameworks.delete(id)
        existing.roles = frameworkRoles
        existing.suppressed = new Set(suppressed)
        existing.filters.clear()
        existing.active = true
      } else {
        frameworks.set(id, {
          id,
          roles: frameworkRoles,
          suppressed: new Set(suppressed),
          filters: new Map(),
          allocated: new Map(),
          active: true
        })
      }
      for (const r of frameworkRoles) role(r).frameworks.add(id)
    },
    /** A disconnected framework keeps its allocation (its tasks run) but gets no offers. */
    deactivateFramework(id: string): void {
      const framework = frameworks.get(id)
      if (framework !== undefined) framework.active = false
    },
    removeFramework(id: string): void {
      const framework = frameworks.get(id)
      if (framework === undefined) return
      for (const [r, held] of framework.allocated) {
        for (const [name, amount] of held) add(role(r).allocated, [{ name, value: { $case: "scalar", value: amount } } as v1.Resource], -1)
      }
      for (const r of framework.roles) role(r).frameworks.delete(id)
      frameworks.delete(id)
    },
    suppress(id: string, suppressedRoles: ReadonlyArray<string>): void {
      const framework = frameworks.get(id)
      if (framework === undefined) return
      for (const r of suppressedRoles.length > 0 ? suppressedRoles : framework.roles) framework.suppressed.add(r)
    },
    /** Clears every filter and un-suppresses the roles (all when none are named). */
    revive(id: string, revivedRoles: ReadonlyArray<string>): void {
      const framework = frameworks.get(id)
      if (framework === undefined) return
      framework.filters.clear()
      if (revivedRoles.length === 0) framework.suppressed.clear()
      for (const r of revivedRoles) framework.suppressed.delete(r)
    },
    filter(id: string, agentId: string, untilMs: number, resources?: ReadonlyArray<v1.Resource>): void {
      frameworks.get(id)?.filters.set(agentId, { untilMs, resources: resources === undefined ? undefined : Resources.normalize(resources) })
    },
    /** Records resources a framework holds that the allocator did not hand out (agent re-registration). */
    track(frameworkId: string, agentId: string, roleName: string, resources: ReadonlyArray<v1.Resource>): void {
      const agent = agents.get(agentId)
      if (agent !== undefined) setAgentAllocated(agent, Resources.add(agent.allocated, resources))
      const framework = frameworks.get(frameworkId)
      if (framework !== undefined) charge(framework, roleName, resources, 1)
      else add(role(roleName).allocated, resources, 1)
    },
    /**
     * `track` for many holdings on one agent at once (an agent re-registering with its tasks): the
     * agent's allocation is summed and re-derived once, not once per task.
     */
    trackAll(
      agentId: string,
      held: ReadonlyArray<{ readonly frameworkId: string; readonly role: string; readonly resources: ReadonlyArray<v1.Resource> }>
    ): void {
      if (held.length === 0) return
      const agent = agents.get(agentId)
      if (agent !== undefined) setAgentAllocated(agent, Resources.add(agent.allocated, held.flatMap((h) => h.resources)))
      for (const { frameworkId, role: roleName, resources } of held) {
        const framework = frameworks.get(frameworkId)
        if (framework !== undefined) charge(framework, roleName, resources, 1)
        else add(role(roleName).allocated, resources, 1)
      }
    },
    /** Gives resources back: a declined or rescinded offer, an Accept's leftovers, a finished task. */
    recover(frameworkId: string, agentId: string, roleName: string, resources: ReadonlyArray<v1.Resource>): void {
      const agent = agents.get(agentId)
      if (agent !== undefined) setAgentAllocated(agent, Resources.subtract(agent.allocated, resources))
      const framework = frameworks.get(frameworkId)
      if (framework !== undefined) charge(framework, roleName, resources, -1)
      else add(role(roleName).allocated, resources, -1)
    },
    /**
     * Turns some of an agent's resources into others of the same quantity (RESERVE, CREATE, ...).
     * `allocated`: whether they are held by a framework (an offer being accepted) or free (an
     * operator's reservation).
     */
    convert(agentId: string, from: ReadonlyArray<v1.Resource>, to: ReadonlyArray<v1.Resource>, allocated = true): void {
      const agent = agents.get(agentId)
      if (agent === undefined) return
      agent.total = Resources.add(Resources.subtract(agent.total, from), to)
      setAgentAllocated(agent, allocated ? Resources.add(Resources.subtract(agent.allocated, from), to) : agent.allocated)
    },
    setWeight(roleName: string, weight: number): void {
      weights.set(roleName, weight)
      role(roleName).weight = weight
    },
    setQuota(roleName: string, limits: ReadonlyArray<v1.Resource> | undefined): void {
      if (limits === undefined || limits.length === 0) {
        quotas.delete(roleName)
        role(roleName).quota = undefined
        return
      }
      const quantities: Quantities = new Map()
      add(quantities, limits, 1)
      quotas.set(roleName, quantities)
      role(roleName).quota = quantities
    },

    /**
     * One allocation cycle: every active agent's available resources, role by role in DRF order,
     * to the eligible framework of that role with the smallest share. Returns the allocations
     * made (already charged); the master turns them into offers.
     */
    cycle(now: number, agentIds?: Iterable<string>): Array<Allocation> {
      const out: Array<Allocation> = []
      // Roles in weighted-DRF order and frameworks in DRF order within each role; both are kept
      // sorted as allocations change the shares, by moving only the entry that changed.
      // Only roles with a framework that may get offers now: with none (every scheduler away, as
      // right after a leader change) a round costs nothing, however many agents register.
      const eligible = (f: FrameworkEntry, roleName: string) => f.active && !f.suppressed.has(roleName)
      const roleOrder = [...roles.values()].filter((r) => {
        for (const id of r.frameworks) if (eligible(frameworks.get(id)!, r.name)) return true
        return false
      })
      if (roleOrder.length === 0) return out
      const roleShares = new Map(roleOrder.map((r) => [r.name, roleShare(r)] as const))
      roleOrder.sort((a, b) => roleShares.get(a.name)! - roleShares.get(b.name)! || (a.name < b.name ? -1 : 1))
      const frameworkOrder = new Map<string, Array<{ framework: FrameworkEntry; share: number }>>()
      for (const r of roleOrder) {
        const list = [...r.frameworks]
          .map((id) => frameworks.get(id)!)
          .filter((f) => eligible(f, r.name))
          .map((framework) => ({ framework, share: share(framework.allocated.get(r.name) ?? new Map()) }))
          .sort((a, b) => a.share - b.share || (a.framework.id < b.framework.id ? -1 : 1))
        frameworkOrder.set(r.name, list)
      }
      const reposition = <T>(list: Array<T>, index: number, key: (t: T) => number) => {
        const [item] = list.splice(index, 1)
        const k = key(item!)
        let lo = 0
        let hi = list.length
        while (lo < hi) {
          const mid = (lo + hi) >> 1
          if (key(list[mid]!) <= k) lo = mid + 1
          else hi = mid
        }
        list.splice(lo, 0, item!)
      }

      // Agents in a fresh random order every cycle (as Mesos does): a fixed order would hand the
      // same agents to the same frameworks cycle after cycle and strand resources on them.
      const ids = shuffle([...(agentIds ?? agents.keys())], now)
      for (const agentId of ids) {
        const agent = agents.get(agentId)
        if (agent === undefined || !agent.active || !allocatable(agent.available)) continue
        for (let ri = 0; ri < roleOrder.length; ri++) {
          const entry = roleOrder[ri]!
          const candidates = capByQuota(forRole(agent.available, entry.name), entry)
          if (!allocatable(candidates)) continue
          const list = frameworkOrder.get(entry.name)!
          const index = list.findIndex(({ framework }) => {
            const filter = framework.filters.get(agentId)
            if (filter === undefined || filter.untilMs <= now) return true
            // Filtered only while what is on offer is no more than what was declined.
            return filter.resources !== undefined && !Resources.contains(filter.resources, candidates)
          })
          if (index < 0) continue
          const { framework } = list[index]!
          const resources = Resources.allocate(candidates, entry.name)
          setAgentAllocated(agent, Resources.add(agent.allocated, candidates))
          charge(framework, entry.name, candidates, 1)
          out.push({ frameworkId: framework.id, agentId, role: entry.name, resources })
          list[index]!.share = share(framework.allocated.get(entry.name)!)
          reposition(list, index, (x) => x.share)
          roleShares.set(entry.name, roleShare(entry))
          reposition(roleOrder, ri, (r) => roleShares.get(r.name)!)
          ri = -1 // reserved resources of other roles may remain: walk the (re-sorted) roles again
          if (!allocatable(agent.available)) break
        }
      }
      return out
    },

    /** Observability: a role's weight, quota and allocation. */
    roleView(name: string) {
      const entry = role(name)
      return { name, weight: entry.weight, quota: entry.quota, allocated: entry.allocated, frameworks: [...entry.frameworks] }
    },
    roleNames: () => [...roles.keys()],
    frameworkShare(id: string, roleName: string): number {
      return share(frameworks.get(id)?.allocated.get(roleName) ?? new Map())
    },
    agentAvailable: (id: string): ReadonlyArray<v1.Resource> => agents.get(id)?.available ?? [],
    agentAllocated: (id: string): ReadonlyArray<v1.Resource> => agents.get(id)?.allocated ?? []
  }
}

export type Allocator = ReturnType<typeof make>
