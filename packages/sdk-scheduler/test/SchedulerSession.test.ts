import { status } from "@grpc/grpc-js"
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { SchedulerError, SchedulerSession } from "@berth/sdk-scheduler"
import { Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Queue, Schedule, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as TestMaster from "./testMaster.ts"

type Event = SchedulerSession.Event

const within = "3 seconds"

/** Fails the test after `within` (wrap in `TestClock.withLive` under TestClock). */
const inTime = <A, E>(what: string, effect: Effect.Effect<A, E>) =>
  effect.pipe(Effect.timeoutOrElse({ duration: within, orElse: () => Effect.die(new Error(`${what}: not within ${within}`)) }))

/** Builds the session in the test's scope (or the given one) and returns the service. */
const open = (options: SchedulerSession.Options, scope?: Scope.Scope) => {
  const build = Layer.build(SchedulerSession.layer(options)).pipe(
    Effect.map((context) => Context.get(context, SchedulerSession.SchedulerSession))
  )
  return scope === undefined ? build : build.pipe(Scope.provide(scope))
}

/** The session's only consumer: hands out events one by one and keeps how the stream ended. */
const readEvents = (session: SchedulerSession.Service) =>
  Effect.gen(function*() {
    const inbox = yield* Queue.unbounded<Event>()
    const outcome = yield* Deferred.make<Exit.Exit<void, SchedulerError.SchedulerError>>()
    yield* Effect.forkScoped(
      Stream.runForEach(session.events, (event) => Queue.offer(inbox, event)).pipe(
        Effect.exit,
        Effect.flatMap((exit) => Deferred.succeed(outcome, exit))
      )
    )
    const next = inTime("the next event", Queue.take(inbox))
    return {
      next,
      /** The next event that is not a heartbeat. */
      nextNonHeartbeat: Effect.gen(function*() {
        while (true) {
          const event = yield* next
          if (event.$case !== "heartbeat") return event
        }
      }),
      pending: Queue.size(inbox),
      end: inTime("the end of events", Deferred.await(outcome))
    }
  })

const waitUntil = (what: string, condition: () => boolean) =>
  inTime(
    what,
    Effect.gen(function*() {
      while (!condition()) yield* Effect.sleep("5 millis")
    })
  )

const expectSubscribed = (event: Event) => {
  expect(event.$case).toBe("subscribed")
  if (event.$case !== "subscribed") throw new Error("unreachable")
  return event.value
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

const offer = (id: string): v1.Offer => v1.Offer.create({ offerId: id, frameworkId: "fw-1", agentId: "agent-1", hostname: "h1" })

const framework = { name: "hello" }

describe("SchedulerSession", () => {
  it.live("subscribes with the framework info, then emits SUBSCRIBED and the master's events in order", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const session = yield* open({ master: master.address, framework: { name: "hello", roles: ["web", "batch"], principal: "p1" } })
      const events = yield* readEvents(session)

      const subscribed = expectSubscribed(yield* events.next)
      expect(subscribed).toMatchObject({ frameworkId: "fw-1", streamId: "stream-1" })
      expect(yield* session.frameworkId).toBe("fw-1")
      expect(Option.map(yield* session.info, (i) => i.streamId)).toEqual(Option.some("stream-1"))

      const info = master.subscriptions[0]!.request.frameworkInfo!
      expect(info).toMatchObject({
        frameworkId: "",
        name: "hello",
        principal: "p1",
        roles: ["web", "batch"],
        failoverTimeoutSeconds: 7 * 24 * 3600
      })
      expect(info.capabilities).toEqual(expect.arrayContaining([
        v1.FrameworkInfo_Capability.PARTITION_AWARE,
        v1.FrameworkInfo_Capability.MULTI_ROLE
      ]))

      master.send({ $case: "offers", value: { offers: [offer("o1"), offer("o2")] } })
      master.send({ $case: "rescind", value: { offerIds: ["o1"] } })
      master.send({ $case: "heartbeat", value: {} })
      master.send({ $case: "offers", value: { offers: [offer("o3")] } })

      const received = [yield* events.next, yield* events.next, yield* events.next, yield* events.next]
      expect(received.map((e) => e.$case)).toEqual(["offers", "rescind", "heartbeat", "offers"])
      const [first, , , last] = received
      expect(first?.$case === "offers" && first.value.offers.map((o) => o.offerId)).toEqual(["o1", "o2"])
      expect(last?.$case === "offers" && last.value.offers.map((o) => o.offerId)).toEqual(["o3"])
    }))

  it.live("calls carry the session's framework id and stream id, and their arguments", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const session = yield* open({ master: master.address, framework })
      const events = yield* readEvents(session)
      expectSubscribed(yield* events.next)
      const sessionRef = { frameworkId: "fw-1", streamId: "stream-1" }

      const launch = v1.Operation.create({
        operationId: "op-1",
        kind: { $case: "launch", value: { taskInfos: [{ taskId: "t1", name: "web-0", agentId: "agent-1" }] } }
      })
      const accepted = yield* session.accept(["o1"], [launch], { refuseSeconds: 10 })
      expect(accepted.launchedTaskIds).toEqual(["t1"])
      const accept = master.callsOf("accept")[0] as v1.AcceptRequest
      expect(accept.session).toEqual(sessionRef)
      expect(accept.offerIds).toEqual(["o1"])
      expect(accept.filters).toEqual({ refuseSeconds: 10 })
      expect(accept.operations).toHaveLength(1)
      expect(accept.operations[0]!.operationId).toBe("op-1")
      expect(accept.operations[0]!.kind?.$case === "launch" && accept.operations[0]!.kind.value.taskInfos[0]!.taskId)
        .toBe("t1")

      yield* session.decline(["o2", "o3"], { refuseSeconds: 60 })
      const decline = master.callsOf("decline")[0] as v1.DeclineRequest
      expect(decline).toMatchObject({ session: sessionRef, offerIds: ["o2", "o3"], filters: { refuseSeconds: 60 } })

      yield* session.kill("t1", { agentId: "agent-1", killPolicy: { gracePeriodSeconds: 3 } })
      expect(master.callsOf("kill")[0]).toMatchObject({
        session: sessionRef,
        kills: [{ taskId: "t1", agentId: "agent-1", killPolicy: { gracePeriodSeconds: 3 } }]
      })

      yield* session.reconcile([{ taskId: "t1" }, { taskId: "t2", agentId: "agent-2" }])
      yield* session.reconcile()
      expect(master.callsOf("reconcile")).toMatchObject([
        { session: sessionRef, tasks: [{ taskId: "t1", agentId: "" }, { taskId: "t2", agentId: "agent-2" }] },
        { session: sessionRef, tasks: [] }
      ])

      yield* session.revive(["web"])
      yield* session.suppress()
      expect(master.callsOf("revive")[0]).toMatchObject({ session: sessionRef, roles: ["web"] })
      expect(master.callsOf("suppress")[0]).toMatchObject({ session: sessionRef, roles: [] })
    }))

  it.live("a burst of acknowledgements goes out in fewer Acknowledge calls that carry every uuid", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const session = yield* open({ master: master.address, framework })
      const events = yield* readEvents(session)
      expectSubscribed(yield* events.next)

      const count = 300
      const statuses = Array.from({ length: count }, (_, i) =>
        v1.TaskStatus.create({
          taskId: `t${i}`,
          agentId: "agent-1",
          state: v1.TaskState.RUNNING,
          uuid: Buffer.from(`uuid-${i}`)
        }))
      yield* Effect.forEach(statuses, session.acknowledge, { concurrency: "unbounded", discard: true })

      const calls = master.callsOf("acknowledge") as Array<v1.AcknowledgeRequest>
      expect(calls.length).toBeGreaterThanOrEqual(2) // at most 256 per call
      expect(calls.length).toBeLessThan(count)
      for (const call of calls) {
        expect(call.session).toEqual({ frameworkId: "fw-1", streamId: "stream-1" })
        expect(call.acknowledgements.length).toBeLessThanOrEqual(256)
      }
      const sent = calls.flatMap((c) => c.acknowledgements.map((a) => `${a.agentId}/${a.taskId}/${hex(a.uuid)}`))
      expect(sent).toHaveLength(count)
      expect(new Set(sent)).toEqual(new Set(statuses.map((s) => `agent-1/${s.taskId}/${hex(s.uuid)}`)))

      // A status without a uuid (from the master) must not be acknowledged at all.
      yield* session.acknowledge(v1.TaskStatus.create({ taskId: "t0", state: v1.TaskState.RUNNING }))
      yield* Effect.sleep("50 millis")
      expect(master.callsOf("acknowledge")).toHaveLength(calls.length)

      // Each acknowledgement completes with the outcome of its batch.
      master.failures.set("acknowledge", { code: status.INTERNAL, details: "disk full" })
      const failed = yield* Effect.forEach(
        statuses.slice(0, 3),
        (s) => Effect.flip(session.acknowledge(s)),
        { concurrency: "unbounded" }
      )
      expect(failed.map((e) => e._tag)).toEqual(["CallFailed", "CallFailed", "CallFailed"])
    }))

  // TestClock drives the batching window (gRPC stays real), so the test does not race the clock.
  it.effect("an acknowledgement waits out the batching window for others, and completes when its batch is sent", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const session = yield* open({ master: master.address, framework })
      const events = yield* readEvents(session)
      expectSubscribed(yield* TestClock.withLive(events.next))
      const statuses = Array.from({ length: 3 }, (_, i) =>
        v1.TaskStatus.create({ taskId: `t${i}`, agentId: "agent-1", uuid: Buffer.from(`u${i}`) }))

      const first = yield* Effect.forkChild(session.acknowledge(statuses[0]!))
      yield* TestClock.withLive(Effect.sleep("100 millis"))
      expect(master.callsOf("acknowledge")).toHaveLength(0)
      expect(first.pollUnsafe()).toBeUndefined()

      const others = yield* Effect.forEach(statuses.slice(1), (status) => Effect.forkChild(session.acknowledge(status)))
      yield* TestClock.withLive(Effect.sleep("50 millis"))
      yield* TestClock.adjust("10 millis")
      yield* TestClock.withLive(inTime("the acknowledgements", Effect.forEach([first, ...others], Fiber.join)))
      const calls = master.callsOf("acknowledge") as Array<v1.AcknowledgeRequest>
      expect(calls).toHaveLength(1)
      expect(calls[0]!.acknowledgements.map((a) => a.taskId).sort()).toEqual(["t0", "t1", "t2"])
    }))

  it.live("acknowledgeOperation batches operation status acknowledgements the same way", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const session = yield* open({ master: master.address, framework })
      const events = yield* readEvents(session)
      expectSubscribed(yield* events.next)
      const statuses = Array.from({ length: 20 }, (_, i) =>
        v1.OperationStatus.create({ operationId: `op${i}`, agentId: "agent-1", uuid: Buffer.from(`u${i}`) }))
      yield* Effect.forEach(statuses, session.acknowledgeOperation, { concurrency: "unbounded", discard: true })
      const calls = master.callsOf("acknowledgeOperationStatus") as Array<v1.AcknowledgeOperationStatusRequest>
      expect(calls.length).toBeLessThan(statuses.length)
      expect(new Set(calls.flatMap((c) => c.acknowledgements.map((a) => a.operationId))))
        .toEqual(new Set(statuses.map((s) => s.operationId)))
    }))

  it.live("maps the master's failures: InvalidArgument with field and rule, NotLeader, SessionLost, CallFailed", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const session = yield* open({ master: master.address, framework })
      const events = yield* readEvents(session)
      expectSubscribed(yield* events.next)

      master.failures.set("accept", {
        code: status.INVALID_ARGUMENT,
        details: "operations[0].launch.task_infos[0].task_id: must not be empty",
        trailers: { "berth-field": "operations[0].launch.task_infos[0].task_id", "berth-rule": "must not be empty" }
      })
      const invalid = yield* Effect.flip(session.accept(["o1"], []))
      expect(invalid).toBeInstanceOf(SchedulerError.InvalidArgument)
      expect(invalid).toMatchObject({
        _tag: "InvalidArgument",
        call: "Accept",
        field: "operations[0].launch.task_infos[0].task_id",
        rule: "must not be empty"
      })

      master.failures.set("decline", {
        code: status.UNAVAILABLE,
        details: "not the leader",
        trailers: { "berth-leader": "10.1.2.3:5050" }
      })
      expect(yield* Effect.flip(session.decline(["o1"]))).toMatchObject({
        _tag: "NotLeader",
        call: "Decline",
        leader: "10.1.2.3:5050"
      })

      master.failures.set("revive", { code: status.FAILED_PRECONDITION, details: "stale stream id" })
      expect(yield* Effect.flip(session.revive())).toMatchObject({ _tag: "SessionLost", call: "Revive" })

      master.failures.set("suppress", { code: status.RESOURCE_EXHAUSTED, details: "slow down" })
      expect(yield* Effect.flip(session.suppress())).toMatchObject({
        _tag: "CallFailed",
        call: "Suppress",
        code: "RESOURCE_EXHAUSTED",
        message: "slow down"
      })
    }))

  it.live("re-subscribes with the framework id after the master restarts, and emits SUBSCRIBED again", () =>
    Effect.gen(function*() {
      const firstScope = yield* Scope.make()
      const first = yield* TestMaster.start({ name: "m1" }).pipe(Scope.provide(firstScope))
      const session = yield* open({ master: first.address, framework })
      const events = yield* readEvents(session)
      expect(expectSubscribed(yield* events.next)).toMatchObject({ frameworkId: "fw-1", streamId: "m1-stream-1" })

      yield* Scope.close(firstScope, Exit.void)
      const second = yield* TestMaster.start({ port: first.port, name: "m2" })
      // Would show up if the client subscribed without its id, as a new framework.
      second.newFrameworkId = "fw-new"

      expect(expectSubscribed(yield* events.nextNonHeartbeat)).toMatchObject({
        frameworkId: "fw-1",
        streamId: "m2-stream-1"
      })
      expect(second.subscriptions[0]!.request.frameworkInfo?.frameworkId).toBe("fw-1")

      // Calls now go to the new master, with the new stream id.
      yield* session.decline(["o9"])
      expect(second.callsOf("decline")[0]).toMatchObject({ session: { frameworkId: "fw-1", streamId: "m2-stream-1" } })
    }))

  it.live("re-subscribes when the master ends the stream", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const session = yield* open({ master: master.address, framework })
      const events = yield* readEvents(session)
      expectSubscribed(yield* events.next)
      master.subscriptions[0]!.stream.end()
      expect(expectSubscribed(yield* events.next)).toMatchObject({ frameworkId: "fw-1", streamId: "stream-2" })
      expect(master.subscriptions[1]!.request.frameworkInfo?.frameworkId).toBe("fw-1")
    }))

  it.live("re-subscribes when heartbeats stop, and not while they arrive", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      master.heartbeatIntervalSeconds = 0.1
      const session = yield* open({ master: master.address, framework, heartbeatMissLimit: 3 })
      const events = yield* readEvents(session)
      expectSubscribed(yield* events.next)

      // Heartbeats every 30 ms keep the 300 ms watchdog quiet.
      const beating = yield* Effect.forkScoped(
        Effect.sync(() => master.send({ $case: "heartbeat", value: {} })).pipe(Effect.repeat(Schedule.spaced("30 millis")))
      )
      yield* Effect.sleep("400 millis")
      expect(master.subscriptions).toHaveLength(1)
      expect(master.subscriptions[0]!.cancelled).toBe(false)

      yield* Fiber.interrupt(beating)
      yield* waitUntil("a second subscription", () => master.subscriptions.length >= 2)
      expect(master.subscriptions[0]!.cancelled).toBe(true)
      expect(master.subscriptions[1]!.request.frameworkInfo?.frameworkId).toBe("fw-1")
      expect(expectSubscribed(yield* events.nextNonHeartbeat).streamId).toBe("stream-2")
    }))

  it.live("an ERROR event fails events with FrameworkRemoved and stops subscribing", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const session = yield* open({ master: master.address, framework })
      const events = yield* readEvents(session)
      expectSubscribed(yield* events.next)

      master.send({ $case: "offers", value: { offers: [offer("o1")] } })
      master.send({ $case: "error", value: { message: "framework fw-1 was torn down" } })

      expect((yield* events.next).$case).toBe("offers")
      const end = yield* events.end
      expect(Exit.isFailure(end)).toBe(true)
      const error = Exit.isFailure(end) ? Option.getOrThrow(Exit.findErrorOption(end)) : undefined
      expect(error).toBeInstanceOf(SchedulerError.FrameworkRemoved)
      expect(error).toMatchObject({ frameworkId: "fw-1", message: "framework fw-1 was torn down" })

      yield* Effect.sleep("400 millis")
      expect(master.subscriptions).toHaveLength(1)
      expect(yield* Effect.flip(session.decline(["o1"]))).toMatchObject({ _tag: "FrameworkRemoved" })
      expect(master.callsOf("decline")).toHaveLength(0)
    }))

  it.live("PERMISSION_DENIED on Subscribe fails events with FrameworkRemoved, without registering anew", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      master.onSubscribe = (subscription) =>
        subscription.stream.emit("error", { code: status.PERMISSION_DENIED, details: "framework fw-old was removed" })
      const session = yield* open({ master: master.address, framework: { name: "hello", frameworkId: "fw-old" } })
      const events = yield* readEvents(session)

      const end = yield* events.end
      const error = Exit.isFailure(end) ? Option.getOrThrow(Exit.findErrorOption(end)) : undefined
      expect(error).toMatchObject({ _tag: "FrameworkRemoved", frameworkId: "fw-old", message: "framework fw-old was removed" })
      expect(yield* Effect.flip(session.frameworkId)).toMatchObject({ _tag: "FrameworkRemoved" })
      yield* Effect.sleep("300 millis")
      expect(master.subscriptions.map((s) => s.request.frameworkInfo?.frameworkId)).toEqual(["fw-old"])
    }))

  it.live("refuses to continue when the master answers a failover with another framework id", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      master.onSubscribe = (subscription, m) =>
        m.send({ $case: "subscribed", value: { ...m.subscribed(subscription), frameworkId: "fw-other" } }, subscription)
      const session = yield* open({ master: master.address, framework: { name: "hello", frameworkId: "fw-mine" } })
      const events = yield* readEvents(session)
      const end = yield* events.end
      const error = Exit.isFailure(end) ? Option.getOrThrow(Exit.findErrorOption(end)) : undefined
      expect(error).toMatchObject({ _tag: "FrameworkRemoved", frameworkId: "fw-mine" })
      expect(yield* events.pending).toBe(0) // the foreign SUBSCRIBED was not emitted
    }))

  it.live("follows a non-leading master's redirect to the leader", () =>
    Effect.gen(function*() {
      const leader = yield* TestMaster.start({ name: "leader" })
      const follower = yield* TestMaster.start({ name: "follower" })
      follower.onSubscribe = (subscription) =>
        subscription.stream.emit("error", {
          code: status.UNAVAILABLE,
          details: "not the leader",
          metadata: TestMaster.trailers({ "berth-leader": leader.address })
        })
      const session = yield* open({ master: follower.address, framework })
      const events = yield* readEvents(session)
      expect(expectSubscribed(yield* events.next).streamId).toBe("leader-stream-1")
      expect(follower.subscriptions).toHaveLength(1)
      yield* session.revive()
      expect(leader.callsOf("revive")).toHaveLength(1)
      expect(follower.callsOf("revive")).toHaveLength(0)
    }))

  it.live("a call made while not subscribed waits for SUBSCRIBED, up to callTimeout", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      let release: () => void = () => {}
      master.onSubscribe = (subscription, m) => {
        release = () => TestMaster.defaultOnSubscribe(subscription, m)
      }
      const session = yield* open({ master: master.address, framework })
      const decline = yield* Effect.forkChild(session.decline(["o1"]))
      yield* waitUntil("the subscription", () => master.subscriptions.length === 1)
      yield* Effect.sleep("100 millis")
      expect(decline.pollUnsafe()).toBeUndefined()
      expect(master.callsOf("decline")).toHaveLength(0)

      release()
      yield* Fiber.join(decline)
      expect(master.callsOf("decline")[0]).toMatchObject({ session: { frameworkId: "fw-1", streamId: "stream-1" } })

      const silent = yield* TestMaster.start()
      silent.onSubscribe = () => {}
      const waiting = yield* open({ master: silent.address, framework, callTimeout: "200 millis" })
      const [elapsed, error] = yield* Effect.timed(Effect.flip(waiting.decline(["o1"])))
      expect(error).toMatchObject({ _tag: "Unavailable", call: "Decline" })
      expect(Duration.toMillis(elapsed)).toBeGreaterThanOrEqual(190)
      expect(Duration.toMillis(elapsed)).toBeLessThan(2000)
    }))

  it.live("teardown ends the framework, then events end and calls fail", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const session = yield* open({ master: master.address, framework })
      const events = yield* readEvents(session)
      expectSubscribed(yield* events.next)
      yield* session.teardown
      expect(master.callsOf("teardown")[0]).toMatchObject({ session: { frameworkId: "fw-1", streamId: "stream-1" } })
      expect(Exit.isSuccess(yield* events.end)).toBe(true)
      yield* waitUntil("the stream to be cancelled", () => master.subscriptions[0]!.cancelled)
      expect(yield* Effect.flip(session.revive())).toMatchObject({ _tag: "FrameworkRemoved", frameworkId: "fw-1" })
      yield* Effect.sleep("200 millis")
      expect(master.subscriptions).toHaveLength(1)
    }))

  it.live("closing the layer's scope cancels the stream and ends events", () =>
    Effect.gen(function*() {
      const master = yield* TestMaster.start()
      const scope = yield* Scope.make()
      const session = yield* open({ master: master.address, framework }, scope)
      const events = yield* readEvents(session)
      expectSubscribed(yield* events.next)
      yield* Scope.close(scope, Exit.void)
      yield* waitUntil("the stream to be cancelled", () => master.subscriptions[0]!.cancelled)
      expect(Exit.isSuccess(yield* events.end)).toBe(true)
      expect(yield* Effect.flip(session.decline(["o1"]))).toMatchObject({ _tag: "Unavailable", call: "Decline" })
    }))

  it.effect.each([
    [{ master: "localhost", framework }, "master"],
    [{ master: "127.0.0.1:99999", framework }, "master"],
    [{ master: "127.0.0.1:5050", framework: { name: " " } }, "framework.name"],
    [{ master: "127.0.0.1:5050", framework: { name: "x", roles: [] } }, "framework.roles"],
    [{ master: "127.0.0.1:5050", framework: { name: "x", roles: ["web", "-bad"] } }, "framework.roles[1]"],
    [{ master: "127.0.0.1:5050", framework: { name: "x", roles: ["a/../b"] } }, "framework.roles[0]"],
    [{ master: "127.0.0.1:5050", framework: { name: "x", failoverTimeoutSeconds: -1 } }, "framework.failoverTimeoutSeconds"],
    [{ master: "127.0.0.1:5050", framework, heartbeatMissLimit: 0 }, "heartbeatMissLimit"],
    [{ master: "127.0.0.1:5050", framework, callTimeout: Duration.zero }, "callTimeout"],
    [{ master: "127.0.0.1:5050", framework, credentials: { principal: "a:b", secret: "s" } }, "credentials.principal"],
    [{ master: "127.0.0.1:5050", framework, credentials: { principal: "a", secret: "" } }, "credentials.secret"],
    [{ master: "127.0.0.1:5050", framework, credentials: { token: "two words" } }, "credentials.token"],
    [{ master: "127.0.0.1:5050", framework: { name: "x", principal: "b" }, credentials: { principal: "a", secret: "s" } }, "framework.principal"],
    [{ master: "127.0.0.1:5050", framework, tls: { cert: "-----BEGIN CERTIFICATE-----" } }, "tls.key"],
    [{ master: "127.0.0.1:5050", framework, tls: { ca: "/no/such/ca.pem" } }, "tls.ca"]
  ] as const)("refuses bad options, naming the field: %j", ([options, field]) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(open(options as SchedulerSession.Options))
      expect(error).toBeInstanceOf(SchedulerError.InvalidOptions)
      expect(error.field).toBe(field)
      expect(error.rule.length).toBeGreaterThan(0)
      expect(error.message).toBe(`${field}: ${error.rule}`)
    }))

  it.effect("accepts good options: hierarchical roles, \"*\", an IPv6 master", () =>
    Effect.gen(function*() {
      const session = yield* open({
        master: "[::1]:5050",
        framework: { name: "x", roles: ["*", "eng/backend"], failoverTimeoutSeconds: 0 }
      })
      expect(Option.isNone(yield* session.info)).toBe(true)
    }))
})
