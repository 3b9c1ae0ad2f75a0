/**
 * Which of several masters leads, and an operator client that follows the leader: standbys
 * answer operator calls with UNAVAILABLE, and a killed leader's endpoint refuses connections.
 */
import { Effect, Exit, Scope, Stream } from "effect"
import * as Operator from "../Operator.ts"
import * as EventLog from "./eventLog.ts"

export interface Endpoint {
  readonly name: string
  readonly endpoint: () => string
}

/** Asks every master in turn (on a fresh channel, so no reconnect backoff is in the way). */
export const probe = <M extends Endpoint>(
  masters: ReadonlyArray<M>,
  options: Operator.Options
): Effect.Effect<M | undefined> =>
  Effect.gen(function*() {
    const answers = yield* Effect.forEach(
      masters,
      (master) =>
        Effect.scoped(Effect.flatMap(Operator.make(master.endpoint(), options), (o) => o.master)).pipe(
          Effect.map((response) => (response.master?.leading === true ? master : undefined)),
          Effect.timeoutOrElse({ duration: "2 seconds", orElse: () => Effect.succeed(undefined) }),
          Effect.catch(() => Effect.succeed(undefined))
        ),
      { concurrency: "unbounded" }
    )
    return answers.find((m) => m !== undefined)
  })

const retriable = (error: Operator.OperatorError) => error.code === "UNAVAILABLE" || error.code === "DEADLINE_EXCEEDED" || error.code === "CANCELLED"

/**
 * An operator client whose calls go to the current leader. A call that finds no leader where it
 * looked asks who leads (by default every master, over gRPC; the in-process backend reads its
 * masters' state instead) and tries once more there.
 */
export const following = <M extends Endpoint>(
  masters: ReadonlyArray<M>,
  options: Operator.Options,
  find: Effect.Effect<M | undefined> = probe(masters, options)
): Effect.Effect<Operator.Operator, never, Scope.Scope> =>
  Effect.gen(function*() {
    const outer = yield* Scope.Scope
    let current: { readonly endpoint: string; readonly operator: Operator.Operator; readonly scope: Scope.Closeable } | undefined
    const connect = (endpoint: string) =>
      Effect.gen(function*() {
        if (current !== undefined) yield* Scope.close(current.scope, Exit.void)
        const scope = yield* Scope.fork(outer)
        const operator = yield* Operator.make(endpoint, options).pipe(Scope.provide(scope))
        current = { endpoint, operator, scope }
        return operator
      })
    const reconnect = Effect.gen(function*() {
      const leader = yield* find
      return yield* connect(leader?.endpoint() ?? masters[0]!.endpoint())
    })
    const use = <A>(f: (operator: Operator.Operator) => Effect.Effect<A, Operator.OperatorError>) =>
      Effect.gen(function*() {
        const operator = current?.operator ?? (yield* reconnect)
        return yield* f(operator).pipe(
          Effect.catchIf(retriable, () => Effect.flatMap(reconnect, f))
        )
      })
    return {
      state: use((o) => o.state),
      tasks: (frameworkId) => use((o) => o.tasks(frameworkId)),
      master: use((o) => o.master),
      getRoles: use((o) => o.getRoles),
      getQuota: use((o) => o.getQuota),
      getWeights: use((o) => o.getWeights),
      updateQuota: (r) => use((o) => o.updateQuota(r)),
      updateWeights: (r) => use((o) => o.updateWeights(r)),
      drainAgent: (r) => use((o) => o.drainAgent(r)),
      reactivateAgent: (id) => use((o) => o.reactivateAgent(id)),
      markAgentGone: (id) => use((o) => o.markAgentGone(id)),
      reserveResources: (r) => use((o) => o.reserveResources(r)),
      unreserveResources: (r) => use((o) => o.unreserveResources(r)),
      events: Stream.unwrap(Effect.map(find, (leader) =>
        Stream.unwrap(Effect.map(Operator.make(leader?.endpoint() ?? masters[0]!.endpoint(), options), (o) => o.events))))
    } satisfies Operator.Operator
  })

/**
 * What the backends that run masters as processes or containers derive from their masters: who
 * leads (probed over gRPC), an operator client that follows the leader, and the cluster event
 * log fed from the leader's event stream (with the agent names it learns).
 */
export const observe = <M extends { readonly name: string; readonly endpoint: string }>(
  masters: ReadonlyArray<M>,
  options: Operator.Options,
  events: EventLog.MutableEventLog
): Effect.Effect<{ readonly leader: Effect.Effect<M | undefined>; readonly operator: Operator.Operator; readonly names: Map<string, string> }, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Endpoints read when asked: a restarted master may listen elsewhere.
    const endpoints = masters.map((m, index) => ({ name: m.name, index, endpoint: () => m.endpoint }))
    const leader = Effect.map(probe(endpoints, options), (found) => (found === undefined ? undefined : masters[found.index]))
    const operator = yield* following(endpoints, options)
    const names = new Map<string, string>()
    yield* EventLog.follow(
      events,
      Effect.map(probe(endpoints, options), (found) =>
        found === undefined ? undefined : { name: found.name, operator: Operator.make(found.endpoint(), options) }),
      names
    ).pipe(Effect.forkScoped)
    return { leader, operator, names }
  })
