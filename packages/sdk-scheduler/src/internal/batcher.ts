import { Deferred, Duration, Effect, Exit, Queue } from "effect"
import type { Scope } from "effect"

/**
 * Groups items requested close together into one send: after the first item it waits `window`
 * (unless `maxSize` items are already there) and sends what has gathered, up to `maxSize`.
 * While a send is in flight, new items gather for the next one, so a burst costs a few calls
 * instead of one per item. Each `submit` completes with the outcome of the send its item was in.
 */
export const make = <A, E>(options: {
  readonly maxSize: number
  readonly window: Duration.Input
  readonly send: (items: ReadonlyArray<A>) => Effect.Effect<void, E>
  /** The failure of items still waiting when the scope closes. */
  readonly onClose: () => E
}): Effect.Effect<(item: A) => Effect.Effect<void, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    type Entry = readonly [A, Deferred.Deferred<void, E>]
    const queue = yield* Queue.unbounded<Entry>()

    const complete = (entries: ReadonlyArray<Entry>, exit: Exit.Exit<void, E>) =>
      Effect.forEach(entries, ([, done]) => Deferred.done(done, exit), { discard: true })

    const gather = (batch: Array<Entry>) =>
      Effect.gen(function*() {
        if (batch.length >= options.maxSize) return
        yield* Effect.sleep(options.window)
        // takeBetween with a minimum of 0 takes nothing at all, hence the size check.
        if ((yield* Queue.size(queue)) === 0) return
        batch.push(...(yield* Queue.takeBetween(queue, 1, options.maxSize - batch.length)))
      })

    // Uninterruptible between taking a batch and guarding it, so an interrupt cannot drop items.
    const sendBatch = Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const batch = yield* restore(Queue.takeBetween(queue, 1, options.maxSize))
        yield* restore(
          Effect.gen(function*() {
            yield* gather(batch)
            const exit = yield* Effect.exit(options.send(batch.map(([item]) => item)))
            yield* complete(batch, exit)
          })
        ).pipe(
          // Items taken off the queue are no longer seen by the finalizer below.
          Effect.onInterrupt(() => complete(batch, Exit.fail(options.onClose())))
        )
      })
    )

    yield* Effect.addFinalizer(() =>
      Effect.flatMap(Queue.clear(queue), (left) => complete(left, Exit.fail(options.onClose())))
    )
    yield* Effect.forkScoped(Effect.forever(sendBatch))

    return (item: A) =>
      Effect.gen(function*() {
        const done = yield* Deferred.make<void, E>()
        yield* Queue.offer(queue, [item, done] as const)
        return yield* Deferred.await(done)
      })
  })
