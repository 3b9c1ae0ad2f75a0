import { v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import { Effect } from "effect"

/**
 * The master's durable registry in `StateStore` (invariant 5): what must survive a master restart
 * or a leader change. Task state is deliberately absent: it is rebuilt from re-registering agents.
 * Values are JSON (the proto JSON mapping), so `berth state` shows them readably.
 */
const PREFIX = "berth/master/"
const FRAMEWORKS = `${PREFIX}frameworks/`
const AGENTS = `${PREFIX}agents/`
const REMOVED = `${PREFIX}removed-frameworks/`
const GONE = `${PREFIX}gone-agents/`
const WEIGHTS = `${PREFIX}weights/`
const QUOTAS = `${PREFIX}quotas/`
const DRAINING = `${PREFIX}draining-agents/`

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const json = (value: unknown) => encoder.encode(JSON.stringify(value))

export interface FrameworkRecord {
  readonly info: v1.FrameworkInfo
  /** When the framework is torn down unless its scheduler re-subscribes (absent while connected). */
  readonly failoverDeadlineMs?: number | undefined
}

export interface Snapshot {
  readonly frameworks: ReadonlyArray<FrameworkRecord>
  readonly agents: ReadonlyArray<v1.AgentInfo>
  readonly removedFrameworks: ReadonlyArray<string>
  readonly goneAgents: ReadonlyArray<string>
  readonly weights: ReadonlyArray<{ readonly role: string; readonly weight: number }>
  readonly quotas: ReadonlyArray<{ readonly role: string; readonly limits: ReadonlyArray<v1.Resource> }>
  readonly draining: ReadonlyArray<DrainRecord>
}

export interface DrainRecord {
  readonly agentId: string
  readonly maxGracePeriodSeconds: number | undefined
  readonly markGone: boolean
}

export const make = Effect.gen(function*() {
  const store = yield* StateStore.StateStore
  const list = (prefix: string) =>
    Effect.map(store.list(prefix), (entries) =>
      entries.map((e) => ({ key: e.key.slice(prefix.length), value: JSON.parse(decoder.decode(e.value)) as unknown })))
  // A registry write that fails is a master that cannot keep its promises: it dies loudly rather
  // than answer as if the change were durable.
  const put = (key: string, value: unknown) => Effect.orDie(store.put(key, json(value)))
  const remove = (key: string) => Effect.orDie(Effect.asVoid(store.delete(key)))

  return {
    load: Effect.gen(function*() {
      const frameworks = (yield* list(FRAMEWORKS)).map(({ value }) => {
        const record = value as { info: unknown; failoverDeadlineMs?: number }
        return { info: v1.FrameworkInfo.fromJSON(record.info), failoverDeadlineMs: record.failoverDeadlineMs }
      })
      const snapshot: Snapshot = {
        frameworks,
        agents: (yield* list(AGENTS)).map(({ value }) => v1.AgentInfo.fromJSON(value)),
        removedFrameworks: (yield* list(REMOVED)).map(({ key }) => key),
        goneAgents: (yield* list(GONE)).map(({ key }) => key),
        weights: (yield* list(WEIGHTS)).map(({ key, value }) => ({ role: key, weight: Number(value) })),
        quotas: (yield* list(QUOTAS)).map(({ key, value }) => ({
          role: key,
          limits: (value as Array<unknown>).map((r) => v1.Resource.fromJSON(r))
        })),
        draining: (yield* list(DRAINING)).map(({ key, value }) => {
          const plan = value as { maxGracePeriodSeconds?: number; markGone?: boolean }
          return { agentId: key, maxGracePeriodSeconds: plan.maxGracePeriodSeconds, markGone: plan.markGone === true }
        })
      }
      return snapshot
    }).pipe(Effect.orDie),
    putFramework: (record: FrameworkRecord) =>
      put(FRAMEWORKS + record.info.frameworkId, {
        info: v1.FrameworkInfo.toJSON(record.info),
        ...(record.failoverDeadlineMs === undefined ? {} : { failoverDeadlineMs: record.failoverDeadlineMs })
      }),
    removeFramework: (info: v1.FrameworkInfo) =>
      Effect.andThen(put(REMOVED + info.frameworkId, v1.FrameworkInfo.toJSON(info)), remove(FRAMEWORKS + info.frameworkId)),
    putAgent: (info: v1.AgentInfo) => put(AGENTS + info.agentId, v1.AgentInfo.toJSON(info)),
    markAgentGone: (agentId: string) =>
      Effect.andThen(put(GONE + agentId, true), Effect.andThen(remove(AGENTS + agentId), remove(DRAINING + agentId))),
    putDraining: (agentId: string, plan: Omit<DrainRecord, "agentId"> | undefined) =>
      plan === undefined ? remove(DRAINING + agentId) : put(DRAINING + agentId, plan),
    putWeight: (role: string, weight: number) => put(WEIGHTS + role, weight),
    putQuota: (role: string, limits: ReadonlyArray<v1.Resource>) =>
      limits.length === 0 ? remove(QUOTAS + role) : put(QUOTAS + role, limits.map((r) => v1.Resource.toJSON(r)))
  }
})

export type Registry = Effect.Success<typeof make>
