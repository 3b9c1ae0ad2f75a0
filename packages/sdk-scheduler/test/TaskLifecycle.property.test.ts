/**
 * The task state machine under random delivery: each attempt's true history is a forward path
 * through the states (with partitions), delivered with duplicates, late arrivals and reordering.
 * A scheduler model relaunches (goal RUNNING) only when the latest attempt is terminal.
 */
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { TaskLifecycle } from "@berth/sdk-scheduler"

type State = TaskLifecycle.State
interface Rec {
  readonly taskId: string
  readonly attempt: number
  readonly state: State
  readonly progress: number
  readonly updatedAtMs: number
  readonly agentId: string
  readonly message: string
  readonly healthy?: boolean | undefined
  readonly ready?: boolean | undefined
}

const FORWARD: ReadonlyArray<State> = ["STAGING", "STARTING", "RUNNING", "KILLING"]
const TERMINALS: ReadonlyArray<State> = ["FINISHED", "FAILED", "KILLED", "ERROR", "DROPPED", "GONE", "GONE_BY_OPERATOR"]

/** One attempt's true history: a prefix of the forward path, partitions sprinkled in, maybe an end. */
const history = fc.record({
  forward: fc.integer({ min: 0, max: FORWARD.length }),
  partitions: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
  health: fc.array(fc.boolean(), { maxLength: 3 }),
  terminal: fc.option(fc.constantFrom(...TERMINALS), { nil: undefined })
})

const updatesOf = (h: typeof history extends fc.Arbitrary<infer T> ? T : never): Array<TaskLifecycle.Update> => {
  const out: Array<TaskLifecycle.Update> = []
  let t = 1
  for (let i = 0; i < h.forward; i++) {
    out.push({ state: FORWARD[i]!, timestampMs: t++ })
    if (h.partitions.includes(i)) {
      out.push({ state: "UNREACHABLE", timestampMs: t++ })
      out.push({ state: FORWARD[i]!, timestampMs: t++, message: "back" })
    }
    if (FORWARD[i] === "RUNNING") for (const healthy of h.health) out.push({ state: "RUNNING", timestampMs: t++, healthy })
  }
  if (h.terminal !== undefined) out.push({ state: h.terminal, timestampMs: t++ })
  return out
}

/** Delivery: duplicates and a permutation of the true order. */
const delivery = (n: number) =>
  fc.tuple(
    fc.array(fc.integer({ min: 0, max: Math.max(0, n - 1) }), { maxLength: n }),
    fc.array(fc.nat(), { minLength: n * 2, maxLength: n * 2 })
  )

describe("TaskLifecycle state machine (property)", () => {
  it("never regresses, never leaves a terminal state, never launches twice", () => {
    fc.assert(
      fc.property(
        fc.array(history, { minLength: 1, maxLength: 4 }),
        fc.array(fc.tuple(fc.array(fc.nat(64), { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 40 })), { minLength: 4, maxLength: 4 }),
        (histories, deliveries) => {
          const records = new Map<string, Rec>()
          const launches: Array<number> = []
          const enteredTerminal = new Map<string, number>()
          const launch = () => {
            const live = [...records.values()].filter((r) => !TaskLifecycle.isTerminal(r.state))
            // The model's `ensure`: a new attempt only when every earlier one ended.
            if (live.length > 0) return
            const attempt = launches.length + 1
            if (attempt > histories.length) return
            launches.push(attempt)
            records.set(`t.${attempt}`, { taskId: `t.${attempt}`, attempt, state: "LAUNCHING", progress: 0, updatedAtMs: 0, agentId: "a", message: "" })
          }
          launch()
          for (let attempt = 1; attempt <= histories.length; attempt++) {
            const taskId = `t.${attempt}`
            if (!records.has(taskId)) break
            const updates = updatesOf(histories[attempt - 1]!)
            const [dups, order] = deliveries[attempt - 1] ?? [[], []]
            const stream = [...updates, ...dups.filter((d) => d < updates.length).map((d) => updates[d]!)]
            // A random stable permutation (reordering / late arrivals).
            const keyed = stream.map((u, i) => ({ u, k: order[i] ?? i }))
            keyed.sort((a, b) => a.k - b.k)
            for (const { u } of keyed) {
              const before = records.get(taskId)!
              const t = TaskLifecycle.apply(before, u)
              if (t._tag === "Ignored") continue
              const after = t.next
              // A terminal state is final.
              expect(TaskLifecycle.isTerminal(before.state)).toBe(false)
              // The rank reached never goes down.
              expect(after.progress).toBeGreaterThanOrEqual(before.progress)
              // A non-partition state is never below the rank reached before.
              if (!TaskLifecycle.isPartitioned(after.state) && !TaskLifecycle.isTerminal(after.state)) {
                expect(FORWARD.indexOf(after.state) + 1).toBeGreaterThanOrEqual(before.progress)
              }
              records.set(taskId, after)
              if (TaskLifecycle.isTerminal(after.state)) {
                enteredTerminal.set(taskId, (enteredTerminal.get(taskId) ?? 0) + 1)
                launch()
              }
            }
            // Redelivering everything again changes nothing (idempotence).
            const settled = records.get(taskId)!
            for (const u of stream) {
              const t = TaskLifecycle.apply(settled, u)
              if (TaskLifecycle.isTerminal(settled.state)) expect(t._tag).toBe("Ignored")
            }
            if (!TaskLifecycle.isTerminal(settled.state)) break
          }
          // Each attempt entered a terminal state at most once, so at most one relaunch each.
          for (const n of enteredTerminal.values()) expect(n).toBe(1)
          expect(launches.length).toBeLessThanOrEqual(enteredTerminal.size + 1)
          // Never two live attempts at once.
          expect([...records.values()].filter((r) => !TaskLifecycle.isTerminal(r.state)).length).toBeLessThanOrEqual(1)
        }
      ),
      { numRuns: 500 }
    )
  })

  it("takes a terminal update even when it arrives before the others", () => {
    const r: Rec = { taskId: "t.1", attempt: 1, state: "LAUNCHING", progress: 0, updatedAtMs: 0, agentId: "a", message: "" }
    const failed = TaskLifecycle.apply(r, { state: "FAILED", timestampMs: 9 })
    expect(failed._tag).toBe("Applied")
    const next = failed._tag === "Applied" ? failed.next : r
    expect(TaskLifecycle.apply(next, { state: "RUNNING", timestampMs: 5 })).toEqual({ _tag: "Ignored", reason: "terminal" })
  })

  it("treats UNREACHABLE as alive: the task may come back RUNNING, not STAGING", () => {
    let r: Rec = { taskId: "t.1", attempt: 1, state: "RUNNING", progress: 3, updatedAtMs: 5, agentId: "a", message: "" }
    const u = TaskLifecycle.apply(r, { state: "UNREACHABLE", timestampMs: 6 })
    expect(u._tag).toBe("Applied")
    if (u._tag === "Applied") r = u.next
    expect(TaskLifecycle.isTerminal(r.state)).toBe(false)
    expect(TaskLifecycle.apply(r, { state: "STAGING", timestampMs: 7 })).toEqual({ _tag: "Ignored", reason: "regression" })
    const back = TaskLifecycle.apply(r, { state: "RUNNING", timestampMs: 8 })
    expect(back._tag === "Applied" && back.next.state).toBe("RUNNING")
    expect(TaskLifecycle.apply(r, { state: "UNREACHABLE", timestampMs: 6 })).toEqual({ _tag: "Ignored", reason: "duplicate" })
    expect(TaskLifecycle.apply(r, { state: "RUNNING", timestampMs: 4 })).toEqual({ _tag: "Ignored", reason: "stale" })
  })

  it("grows the launch backoff exponentially up to its maximum", () => {
    expect([0, 1, 2, 3, 4, 10, 50].map((n) => TaskLifecycle.backoffMs(n, 1000, 8000))).toEqual([0, 1000, 2000, 4000, 8000, 8000, 8000])
  })
})
