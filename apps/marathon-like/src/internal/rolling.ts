// What an app needs right now to converge on its target: how many tasks to launch and which to
// kill. One pure function serves scaling, rolling restarts and replacement of lost tasks, and
// it enforces Marathon's upgrade math: at least ⌈minimumHealthCapacity × instances⌉ healthy
// instances stay up, and at most ⌊instances × (1 + maximumOverCapacity)⌋ run at once.

export interface InstanceView {
  readonly instanceId: string
  readonly version: string
  readonly healthy: boolean
  readonly running: boolean
  /** Epoch millis the task was staged, for killSelection. */
  readonly stagedAt: number
}

export interface Target {
  readonly version: string
  readonly instances: number
  readonly minimumHealthCapacity: number
  readonly maximumOverCapacity: number
  readonly killSelection: "YOUNGEST_FIRST" | "OLDEST_FIRST"
  /** Resident apps cannot go over capacity (their reservations are the capacity): they dip below instead. */
  readonly resident?: boolean | undefined
}

export interface Step {
  readonly launch: number
  readonly kill: ReadonlyArray<string>
  readonly done: boolean
}

const bySelection = (selection: Target["killSelection"]) => (a: InstanceView, b: InstanceView) =>
  selection === "YOUNGEST_FIRST" ? b.stagedAt - a.stagedAt : a.stagedAt - b.stagedAt

/** Unhealthy ones first (killing them costs no capacity), then by killSelection. */
const killOrder = (selection: Target["killSelection"]) => {
  const sel = bySelection(selection)
  return (a: InstanceView, b: InstanceView) => (a.healthy === b.healthy ? sel(a, b) : a.healthy ? 1 : -1)
}

export const minimumHealthy = (t: Target): number => Math.ceil(t.instances * t.minimumHealthCapacity - 1e-9)
export const maximumTotal = (t: Target): number => Math.max(t.instances, Math.floor(t.instances * (1 + t.maximumOverCapacity) + 1e-9))

/**
 * @param live the app's instances whose tasks are not ended and not being killed
 */
export const step = (t: Target, live: ReadonlyArray<InstanceView>): Step => {
  const newer = live.filter((i) => i.version === t.version)
  const older = live.filter((i) => i.version !== t.version)
  const kill: Array<string> = []
  if (newer.length > t.instances) {
    for (const i of [...newer].sort(killOrder(t.killSelection)).slice(0, newer.length - t.instances)) kill.push(i.instanceId)
  }
  const keptNew = newer.length - kill.length
  // When the floor leaves no room to move (e.g. 1 instance at 0.5/0, or 1/0), Marathon bends one
  // rule by one instance: a resident app dips one below the floor, others go one over capacity.
  let floor = minimumHealthy(t)
  let ceiling = maximumTotal(t)
  if (older.length > 0 && floor >= ceiling) {
    if (t.resident === true) floor = ceiling - 1
    else ceiling = floor + 1
  }
  if (older.length > 0) {
    let healthy = live.filter((i) => i.healthy && !kill.includes(i.instanceId)).length
    for (const i of [...older].sort(killOrder(t.killSelection))) {
      if (!i.healthy) kill.push(i.instanceId)
      else if (healthy - 1 >= floor) {
        kill.push(i.instanceId)
        healthy--
      }
    }
  }
  const remaining = live.length - kill.length
  const launch = Math.max(0, Math.min(t.instances - keptNew, ceiling - remaining))
  const done = older.length === 0 && newer.length === t.instances && newer.every((i) => i.healthy)
  return { launch, kill, done }
}

/**
 * A canary phase: `canary` new instances run next to all the old ones (nothing old is killed),
 * and the deployment waits for a promote.
 */
export const canaryStep = (t: Target, live: ReadonlyArray<InstanceView>, canary: number): Step => {
  const newer = live.filter((i) => i.version === t.version)
  const kill = newer.length > canary ? [...newer].sort(killOrder(t.killSelection)).slice(0, newer.length - canary).map((i) => i.instanceId) : []
  return { launch: Math.max(0, canary - newer.length), kill, done: false }
}
