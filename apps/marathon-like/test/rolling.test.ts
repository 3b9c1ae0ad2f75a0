// The converge math on its own: scaling, rolling restarts under minimumHealthCapacity and
// maximumOverCapacity, killSelection.
import { describe, expect, it } from "@effect/vitest"
import * as Rolling from "../src/internal/rolling.ts"
import * as Backoff from "../src/internal/backoff.ts"

const inst = (id: string, version: string, healthy = true, stagedAt = 0): Rolling.InstanceView => ({ instanceId: id, version, healthy, running: healthy, stagedAt })
const target = (instances: number, mhc: number, moc: number, extra: Partial<Rolling.Target> = {}): Rolling.Target =>
  ({ version: "v2", instances, minimumHealthCapacity: mhc, maximumOverCapacity: moc, killSelection: "YOUNGEST_FIRST", ...extra })

/** Plays a whole rolling restart: each round applies the step, new tasks become healthy next round. */
const simulate = (t: Rolling.Target, start: ReadonlyArray<Rolling.InstanceView>) => {
  let live = [...start]
  const rounds: Array<{ healthy: number; total: number }> = []
  for (let round = 0; round < 50; round++) {
    live = live.map((i) => ({ ...i, healthy: true }))
    const step = Rolling.step(t, live)
    if (step.done) return rounds
    live = live.filter((i) => !step.kill.includes(i.instanceId))
    rounds.push({ healthy: live.filter((i) => i.healthy).length, total: live.length + step.launch })
    for (let k = 0; k < step.launch; k++) live.push(inst(`n${round}-${k}`, "v2", false))
  }
  throw new Error("did not converge")
}

describe("Rolling.step", () => {
  it("scales up and down, killing by killSelection", () => {
    expect(Rolling.step(target(3, 1, 1), [inst("a", "v2")])).toEqual({ launch: 2, kill: [], done: false })
    const three = [inst("a", "v2", true, 1), inst("b", "v2", true, 3), inst("c", "v2", true, 2)]
    expect(Rolling.step(target(1, 1, 1), three).kill).toEqual(["b", "c"])
    expect(Rolling.step(target(1, 1, 1, { killSelection: "OLDEST_FIRST" }), three).kill).toEqual(["a", "c"])
    expect(Rolling.step(target(3, 1, 1), three).done).toBe(true)
  })

  for (const [mhc, moc] of [[1, 1], [0.5, 0.25], [0, 0], [0.7, 0], [1, 0], [0.5, 0]] as const) {
    it(`a rolling restart of 4 at ${mhc}/${moc} keeps ⌈${mhc} × 4⌉ healthy and at most ⌊4 × ${1 + moc}⌋ tasks`, () => {
      const t = target(4, mhc, moc)
      const rounds = simulate(t, ["a", "b", "c", "d"].map((id) => inst(id, "v1")))
      const floor = Math.ceil(4 * mhc)
      const ceiling = Math.floor(4 * (1 + moc))
      const bent = floor >= ceiling
      for (const r of rounds) {
        expect(r.healthy).toBeGreaterThanOrEqual(floor)
        expect(r.total).toBeLessThanOrEqual(bent ? floor + 1 : ceiling)
      }
    })
  }

  it("a resident app at 0.5/0 dips one below the floor instead of going over capacity", () => {
    const step = Rolling.step(target(1, 0.5, 0, { resident: true }), [inst("a", "v1")])
    expect(step).toEqual({ launch: 1, kill: ["a"], done: false })
  })

  it("kills unhealthy old instances first", () => {
    const step = Rolling.step(target(2, 1, 0.5), [inst("a", "v1", true), inst("b", "v1", false)])
    expect(step.kill).toEqual(["b"])
  })
})

describe("Backoff", () => {
  it("grows by backoffFactor from backoffSeconds up to maxLaunchDelaySeconds", () => {
    const app = { backoffSeconds: 1, backoffFactor: 1.15, maxLaunchDelaySeconds: 300 }
    expect(Backoff.delaySeconds(app, 0)).toBe(0)
    expect(Backoff.delaySeconds(app, 1)).toBe(1)
    expect(Backoff.delaySeconds(app, 2)).toBeCloseTo(1.15)
    expect(Backoff.delaySeconds(app, 3)).toBeCloseTo(1.3225)
    expect(Backoff.delaySeconds(app, 100)).toBe(300)
    const b = Backoff.fail(app, Backoff.fail(app, Backoff.initial, 0), 10_000)
    expect(b).toEqual({ failures: 2, until: 10_000 + 1150 })
  })
})
