/**
 * The in-process cluster's virtual clock: real time plus an offset that only grows. Time flows as
 * usual (a cluster talking over real gRPC cannot stop: a frozen `TestClock` would stall every
 * timer, even a 5 ms batching delay), and `advance(d)` moves it forward at once: every sleep whose
 * deadline has passed wakes, in deadline order, and periodic work (pings, heartbeats, the
 * allocator, failover checks) runs once per step rather than once per period skipped.
 *
 * The master and the agents get separate views of the same time, so that a step can wake the
 * agents first (their pings, status update resends), let the real I/O they cause reach the master,
 * and only then wake the master's timers: a master that checks its agents right after a jump sees
 * pings from after the jump, and does not take a week of silence for a dead agent.
 */
import { Clock, Duration, Effect } from "effect"
import type { ClusterAgent, TestCluster } from "../TestCluster.ts"

export type Phase = "agent" | "master"

interface Sleeper {
  readonly deadline: number
  readonly phase: Phase
  readonly wake: () => void
}

export interface VirtualClock {
  /** The view the master (`"master"`) or the agents (`"agent"`) take their time from. */
  readonly view: (phase: Phase) => Clock.Clock
  readonly now: () => number
  /** Milliseconds skipped so far. */
  readonly skipped: () => number
  /**
   * Moves time forward by `ms`, in steps of at most `stepMs`. Each step: the agents' due sleeps
   * wake, `settleAgents` waits for the I/O they cause, then the master's due sleeps wake and
   * `settleMaster` waits in turn.
   */
  readonly advance: (
    ms: number,
    stepMs: number,
    settle: { readonly agents: (stepMs: number) => Effect.Effect<void>; readonly master: Effect.Effect<void> }
  ) => Effect.Effect<void>
}

const MAX_TIMER_MS = 2 ** 31 - 1

export const make = (live: Clock.Clock): VirtualClock => {
  let offset = 0
  const now = () => live.currentTimeMillisUnsafe() + offset
  const sleepers = new Set<Sleeper>()

  const view = (phase: Phase): Clock.Clock => {
    const sleep = (duration: Duration.Duration): Effect.Effect<void> => {
      const ms = Duration.toMillis(duration)
      if (!(ms > 0)) return Effect.yieldNow
      return Effect.callback<void>((resume) => {
        let timer: NodeJS.Timeout | undefined
        let done = false
        const fire = () => {
          if (done) return
          done = true
          if (timer !== undefined) clearTimeout(timer)
          sleepers.delete(sleeper)
          resume(Effect.void)
        }
        const sleeper: Sleeper = { deadline: now() + ms, phase, wake: fire }
        // A real timer covers the time that flows by itself; `advance` covers the skips. The timer
        // re-arms because a skip may have moved the deadline closer than it was armed for.
        const arm = () => {
          const left = sleeper.deadline - now()
          if (left <= 0) return fire()
          if (Number.isFinite(left)) timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS))
        }
        sleepers.add(sleeper)
        arm()
        return Effect.sync(() => {
          done = true
          if (timer !== undefined) clearTimeout(timer)
          sleepers.delete(sleeper)
        })
      })
    }
    return {
      currentTimeMillisUnsafe: now,
      currentTimeMillis: Effect.sync(now),
      currentTimeNanosUnsafe: () => BigInt(now()) * 1_000_000n,
      currentTimeNanos: Effect.sync(() => BigInt(now()) * 1_000_000n),
      monotonicTimeNanosUnsafe: () => live.monotonicTimeNanosUnsafe() + BigInt(offset) * 1_000_000n,
      monotonicTimeNanos: Effect.sync(() => live.monotonicTimeNanosUnsafe() + BigInt(offset) * 1_000_000n),
      sleep
    }
  }

  const wakeDue = (phase: Phase) => {
    const at = now()
    const due = [...sleepers].filter((s) => s.phase === phase && s.deadline <= at).sort((a, b) => a.deadline - b.deadline)
    for (const sleeper of due) sleeper.wake()
  }

  const advance: VirtualClock["advance"] = (ms, stepMs, settle) =>
    Effect.gen(function*() {
      let left = ms
      while (left > 0) {
        const step = Math.min(left, stepMs)
        left -= step
        offset += step
        wakeDue("agent")
        yield* settle.agents(step)
        wakeDue("master")
        yield* settle.master
      }
    })

  return { view, now, skipped: () => offset, advance }
}

/** The real clock, whatever the caller's context holds (a `TestClock` under `it.effect`). */
export const liveClock: Clock.Clock = Clock.Clock.defaultValue()

const onLive = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provideService(effect, Clock.Clock, liveClock)

/**
 * The cluster with every effect it hands out (waits, faults, restarts) bound to the real clock: a
 * cluster of real processes and sockets cannot run on a frozen `TestClock`, and a `waitFor` in a
 * test under `it.effect` must not wait for someone to move it. Virtual time is the cluster's own
 * (`clock: "virtual"` and `advance`), independent of the test's clock.
 */
export const bindToLiveClock = (cluster: TestCluster): TestCluster => ({
  ...cluster,
  leader: onLive(cluster.leader),
  masters: cluster.masters.map((m) => ({ ...m, kill: onLive(m.kill), restart: onLive(m.restart) })),
  agents: cluster.agents.map((a): ClusterAgent => ({
    ...a,
    kill: onLive(a.kill),
    restart: onLive(a.restart),
    pause: onLive(a.pause),
    resume: onLive(a.resume),
    partition: onLive(a.partition),
    heal: onLive(a.heal),
    statusUpdates: (faults) => onLive(a.statusUpdates(faults))
  })),
  etcd: cluster.etcd === undefined
    ? undefined
    : { ...cluster.etcd, stop: onLive(cluster.etcd.stop), kill: onLive(cluster.etcd.kill), start: onLive(cluster.etcd.start) },
  events: { ...cluster.events, waitFor: (d, m, o) => onLive(cluster.events.waitFor(d, m, o)) },
  waitFor: (d, c, o) => onLive(cluster.waitFor(d, c, o)),
  faults: { statusUpdates: (f) => onLive(cluster.faults.statusUpdates(f)), clear: onLive(cluster.faults.clear) },
  advance: (d, o) => onLive(cluster.advance(d, o))
})
