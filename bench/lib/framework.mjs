/**
 * A minimal scripted framework for the benchmarks, over the real `SchedulerSession` (the same
 * shape as test/support/framework.ts, in plain JS so the benchmarks need no build step).
 *
 * It differs from the test helper in one way that matters for throughput: acknowledgements are
 * sent concurrently and off the event loop (as the SchedulerSession docs recommend), so the SDK's
 * batcher can group them; acknowledging one by one inside the event consumer would make every
 * update wait for the previous Acknowledge round trip.
 */
import { TaskStates } from "@berth/proto"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { Context, Deferred, Effect, Layer, Queue, Stream } from "effect"

/**
 * Opens a framework session on `master` for the enclosing scope.
 *
 * - `onOffers(offers, session)`: optional; called for every offers event (its Effect is forked,
 *   so a slow Accept does not hold up updates). It gets the session because the first offers can
 *   arrive before `open` returns. Without it, offers are queued for `nextOffer`.
 * - `onUpdate(status, receivedAtMs)`: optional; called synchronously for every status update,
 *   before it is acknowledged.
 */
export const open = (master, options = {}) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(SchedulerSession.layer({ master, framework: { name: options.name ?? "bench" } }))
    const session = Context.get(context, SchedulerSession.SchedulerSession)
    const offers = yield* Queue.unbounded()
    /** taskId -> latest status; the benchmarks only care about the newest state of each task. */
    const latest = new Map()
    /** `withUuid` counts updates that need an acknowledgement; `acked` those acknowledged. */
    const counts = { offerEvents: 0, offers: 0, updates: 0, withUuid: 0, acked: 0, ackFailures: 0 }
    const waiters = []
    const ackFailures = []

    yield* session.events.pipe(
      Stream.runForEach((event) =>
        Effect.gen(function*() {
          if (event.$case === "offers") {
            counts.offerEvents++
            counts.offers += event.value.offers.length
            if (options.onOffers !== undefined) {
              yield* Effect.forkChild(options.onOffers(event.value.offers, session))
            } else {
              for (const offer of event.value.offers) Queue.offerUnsafe(offers, offer)
            }
          }
          if (event.$case === "update") {
            const now = Date.now()
            for (const status of event.value.statuses) {
              counts.updates++
              if (status.uuid.length > 0) counts.withUuid++
              latest.set(status.taskId, status)
              options.onUpdate?.(status, now)
            }
            // Every update is acknowledged on its own; the SDK batches the calls (≤ 5 ms window).
            yield* Effect.forkChild(
              Effect.forEach(
                event.value.statuses,
                (status) =>
                  session.acknowledge(status).pipe(
                    Effect.tap(() => Effect.sync(() => status.uuid.length > 0 && counts.acked++)),
                    Effect.catch((error) =>
                      Effect.sync(() => {
                        counts.ackFailures++
                        if (ackFailures.length < 5) ackFailures.push(String(error?.message ?? error))
                      })
                    )
                  ),
                { concurrency: "unbounded", discard: true }
              )
            )
            for (const waiter of [...waiters]) {
              if (waiter.check()) {
                waiters.splice(waiters.indexOf(waiter), 1)
                Deferred.doneUnsafe(waiter.done, Effect.void)
              }
            }
          }
        })
      ),
      Effect.forkScoped
    )
    const frameworkId = yield* session.frameworkId

    /** Waits until `check()` holds; it is re-evaluated after every update event. */
    const until = (check) =>
      Effect.gen(function*() {
        if (check()) return
        const done = yield* Deferred.make()
        waiters.push({ check, done })
        yield* Deferred.await(done)
      })

    return {
      session,
      frameworkId,
      nextOffer: Queue.take(offers),
      latest,
      counts,
      ackFailures,
      until,
      /** True when every task id in `ids` has a latest state matching `predicate`. */
      allIn: (ids, predicate) => ids.every((id) => latest.has(id) && predicate(latest.get(id).state)),
      isTerminal: TaskStates.isTerminal
    }
  })

/** A LAUNCH operation for `tasks`. */
export const launch = (tasks) => ({
  operationId: "",
  kind: { $case: "launch", value: { taskInfos: [...tasks] } }
})
