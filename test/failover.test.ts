import { describe, expect, it } from "@effect/vitest"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Fiber, Layer, Ref, Stream } from "effect"

const session = (master: string, frameworkId?: string) =>
  Effect.map(
    Layer.build(
      SchedulerSession.layer({ master, framework: { name: "failover", ...(frameworkId === undefined ? {} : { frameworkId }) } })
    ),
    (context) => Context.get(context, SchedulerSession.SchedulerSession)
  )

describe("scheduler failover and teardown", () => {
  it.live("a second scheduler with the framework id takes over; the first stops instead of fighting back", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const first = yield* session(cluster.master)
      const firstEnd = yield* first.events.pipe(Stream.runDrain, Effect.flip, Effect.forkScoped)
      const frameworkId = yield* first.frameworkId

      const second = yield* session(cluster.master, frameworkId)
      const subscribed = yield* Ref.make(0)
      yield* second.events.pipe(
        Stream.runForEach((e) => (e.$case === "subscribed" ? Ref.update(subscribed, (n) => n + 1) : Effect.void)),
        Effect.forkScoped
      )
      expect(yield* second.frameworkId).toBe(frameworkId)
      const error = yield* Fiber.join(firstEnd)
      expect(error._tag).toBe("FrameworkRemoved")
      expect(error.message).toMatch(/failed over to another scheduler/)

      // No tug of war: a while later the second still holds the session it got once.
      yield* Effect.sleep("1 second")
      expect(yield* Ref.get(subscribed)).toBe(1)
      const state = yield* cluster.operator.state
      expect(state.frameworks.map((f) => [f.info?.frameworkId, f.connected])).toEqual([[frameworkId, true]])
    }))

  it.live("a torn-down framework id can never subscribe again", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const first = yield* session(cluster.master)
      const frameworkId = yield* first.frameworkId
      yield* first.teardown
      expect((yield* cluster.operator.state).frameworks).toEqual([])

      const again = yield* session(cluster.master, frameworkId)
      const error = yield* again.events.pipe(Stream.runDrain, Effect.flip)
      expect(error._tag).toBe("FrameworkRemoved")
      expect(error.message).toMatch(/torn down/)
      // It did not register a new framework in its place.
      expect((yield* cluster.operator.state).frameworks).toEqual([])
    }))
})
