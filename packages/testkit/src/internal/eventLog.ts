/**
 * The cluster event log: the master's WatchEvents stream, described one line per event, merged in
 * arrival order with what the testkit itself did (signals, restarts), so a failing test shows what
 * happened around it.
 */
import { TaskStates, v1 } from "@berth/proto"
import { Clock, Effect, type Scope, Stream } from "effect"
import type { ClusterEvent, EventLog } from "../TestCluster.ts"
import { TimeoutError } from "../TestClusterError.ts"
import type * as Operator from "../Operator.ts"

const reasons = Object.fromEntries(Object.entries(v1.TaskStatus_Reason).map(([name, value]) => [value, name])) as Record<number, string>

export interface MutableEventLog extends EventLog {
  readonly add: (source: ClusterEvent["source"], text: string) => void
}

/** Timestamps come from the given Clock, so a test on virtual time gets virtual timestamps. */
export const make = (clock: Clock.Clock): MutableEventLog => {
  const entries: Array<ClusterEvent> = []
  const started = clock.currentTimeMillisUnsafe()
  const add = (source: ClusterEvent["source"], text: string) => {
    entries.push({ seq: entries.length, atMs: clock.currentTimeMillisUnsafe(), source, text })
  }
  const format = () =>
    entries
      .map((e) => `${`+${((e.atMs - started) / 1000).toFixed(3)}s`.padStart(10)} ${e.source.padEnd(7)} ${e.text}`)
      .join("\n")
  const waitFor: EventLog["waitFor"] = (description, match, options) =>
    Effect.gen(function*() {
      const since = options?.since ?? 0
      while (true) {
        const found = entries.find((e) => e.seq >= since && match(e))
        if (found !== undefined) return found
        yield* Effect.sleep("20 millis")
      }
    }).pipe(
      Effect.timeoutOrElse({
        duration: options?.timeout ?? 30_000,
        orElse: () => Effect.fail(new TimeoutError({ description: `the event log to show ${description}`, timeoutMs: options?.timeout ?? 30_000 }))
      })
    )
  return {
    all: () => entries.slice(),
    texts: () => entries.map((e) => e.text),
    record: (text) => add("test", text),
    add,
    waitFor,
    format
  }
}

type WatchEvent = NonNullable<v1.WatchEventsResponse["event"]>

/** One line for an event of the master's stream; undefined for heartbeats. */
export const describe = (event: WatchEvent, agentName: (agentId: string) => string): string | undefined => {
  switch (event.$case) {
    case "snapshot": {
      const state = event.value.state
      return `snapshot: ${state?.agents.length ?? 0} agents, ${state?.frameworks.length ?? 0} frameworks, ${state?.tasks.length ?? 0} tasks`
    }
    case "taskAdded": {
      const task = event.value.task
      return `task ${task?.info?.taskId ?? "?"} added on ${agentName(task?.agentId ?? "")}`
    }
    case "taskUpdated": {
      const status = event.value.status
      const reason = status?.reason ? ` (${reasons[status.reason] ?? status.reason})` : ""
      return `task ${status?.taskId ?? "?"} ${TaskStates.name(event.value.state)}${reason} on ${agentName(status?.agentId ?? "")}`
    }
    case "agentAdded": {
      const info = event.value.agent?.info
      return `agent ${agentName(info?.agentId ?? "")} added (${info?.agentId ?? "?"})`
    }
    case "agentRemoved":
      return `agent ${agentName(event.value.agentId)} removed`
    case "frameworkAdded":
      return `framework ${event.value.framework?.info?.name ?? "?"} added (${event.value.framework?.info?.frameworkId ?? "?"})`
    case "frameworkUpdated": {
      const framework = event.value.framework
      return `framework ${framework?.info?.name ?? "?"} ${framework?.connected ? "connected" : "disconnected"}`
    }
    case "frameworkRemoved":
      return `framework ${event.value.frameworkInfo?.name ?? "?"} removed`
    case "heartbeat":
      return undefined
  }
}

/**
 * Follows the leading master's event stream for as long as the enclosing fiber runs: when the
 * stream ends or fails (the leader died, stepped down), it finds the new leader and subscribes
 * again. Meant to be forked into the cluster's scope.
 */
export const follow = (
  log: MutableEventLog,
  leader: Effect.Effect<{ readonly name: string; readonly operator: Effect.Effect<Operator.Operator, never, Scope.Scope> } | undefined>,
  /** Agent ids to names ("agent-2"); learnt from the stream's hostnames ("agent-2.test") too. */
  names: Map<string, string>
): Effect.Effect<never> =>
  Effect.gen(function*() {
    const learn = (agent: v1.Agent | undefined) => {
      const info = agent?.info
      if (info !== undefined && info.agentId !== "" && !names.has(info.agentId)) names.set(info.agentId, info.hostname.replace(/\.test$/, ""))
    }
    const agentName = (agentId: string) => names.get(agentId) ?? (agentId === "" ? "?" : agentId)
    let leaderless = false
    while (true) {
      const current = yield* leader
      if (current === undefined) {
        if (!leaderless) log.add("testkit", "no master leads")
        leaderless = true
        yield* Effect.sleep("100 millis")
        continue
      }
      leaderless = false
      // A master that steps down may keep the stream open: watch who leads as well.
      const steppedDown = Effect.gen(function*() {
        while (true) {
          yield* Effect.sleep("300 millis")
          const now = yield* leader
          if (now?.name !== current.name) return now === undefined ? "ended: no master leads" : `ended: ${now.name} leads`
        }
      })
      const outcome = yield* Effect.scoped(Effect.gen(function*() {
        const operator = yield* current.operator
        let first = true
        yield* operator.events.pipe(
          Stream.runForEach((event) =>
            Effect.sync(() => {
              if (event.$case === "snapshot") for (const agent of event.value.state?.agents ?? []) learn(agent)
              if (event.$case === "agentAdded") learn(event.value.agent)
              const text = describe(event, agentName)
              if (text === undefined) return
              log.add("master", first && event.$case === "snapshot" ? `${current.name} (leader) ${text}` : text)
              first = false
            })
          )
        )
        return "ended"
      })).pipe(
        Effect.catch((error) => Effect.succeed(`lost (${error.code})`)),
        Effect.raceFirst(steppedDown)
      )
      log.add("testkit", `event stream of ${current.name} ${outcome}`)
      if (outcome === "ended: no master leads") {
        log.add("testkit", "no master leads")
        leaderless = true
      }
      yield* Effect.sleep("100 millis")
    }
  })
