/**
 * A test double of the master's SchedulerService: a real grpc-js server on 127.0.0.1 that records
 * every request and lets a test script the events and failures, so the client is exercised over
 * real HTTP/2 without the cluster core.
 */
import * as grpc from "@grpc/grpc-js"
import { v1 } from "@berth/proto"
import type { SchedulerSession } from "@berth/sdk-scheduler"
import { Effect } from "effect"
import type { Scope } from "effect"

export type Event = SchedulerSession.Event

export interface Subscription {
  readonly index: number
  readonly request: v1.SubscribeRequest
  readonly stream: grpc.ServerWritableStream<v1.SubscribeRequest, v1.SubscribeResponse>
  /** The client cancelled the call (scope closed, heartbeat watchdog, ...). */
  cancelled: boolean
}

export interface UnaryCall {
  readonly method: string
  readonly request: any
}

export interface Failure {
  readonly code: grpc.status
  readonly details: string
  readonly trailers?: Record<string, string>
}

export interface TestMaster {
  readonly port: number
  readonly address: string
  readonly subscriptions: Array<Subscription>
  readonly calls: Array<UnaryCall>
  /** What a new subscription gets; by default SUBSCRIBED (the requested id or a new one). */
  onSubscribe: (subscription: Subscription, master: TestMaster) => void
  /** Answers to the unary calls, by method name (`accept`, `acknowledge`, ...). */
  readonly failures: Map<string, Failure>
  /** The id handed to a framework that subscribes without one. */
  newFrameworkId: string
  heartbeatIntervalSeconds: number
  send: (event: Event, subscription?: Subscription) => void
  subscribed: (subscription: Subscription) => v1.SubscribeResponse_Subscribed
  callsOf: (method: string) => Array<any>
  /** Drops every connection at once, as a crashing master does. */
  kill: Effect.Effect<void>
}

export const defaultOnSubscribe = (subscription: Subscription, master: TestMaster): void => {
  master.send({ $case: "subscribed", value: master.subscribed(subscription) }, subscription)
}

export const trailers = (values: Record<string, string> | undefined): grpc.Metadata => {
  const metadata = new grpc.Metadata()
  for (const [key, value] of Object.entries(values ?? {})) metadata.set(key, value)
  return metadata
}

/**
 * Starts a test master on `port` (0: any free port); it is killed when the scope closes. Stream
 * ids are `<name>-stream-<n>` (`stream-<n>` without a name), so tests can tell masters apart.
 */
export const start = (
  options: { readonly port?: number; readonly name?: string } = {}
): Effect.Effect<TestMaster, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<TestMaster>((resume) => {
      const server = new grpc.Server()
      const master: TestMaster = {
        port: 0,
        address: "",
        subscriptions: [],
        calls: [],
        onSubscribe: defaultOnSubscribe,
        failures: new Map(),
        newFrameworkId: "fw-1",
        heartbeatIntervalSeconds: 0,
        send: (event, subscription) => {
          const target = subscription ?? master.subscriptions.at(-1)
          if (target === undefined) throw new Error("no subscription to send to")
          target.stream.write(v1.SubscribeResponse.create({ event }))
        },
        subscribed: (subscription) =>
          v1.SubscribeResponse_Subscribed.create({
            frameworkId: subscription.request.frameworkInfo?.frameworkId || master.newFrameworkId,
            streamId: `${options.name === undefined ? "" : `${options.name}-`}stream-${subscription.index}`,
            heartbeatIntervalSeconds: master.heartbeatIntervalSeconds,
            masterInfo: { masterId: "test-master", endpoint: master.address, leading: true }
          }),
        callsOf: (method) => master.calls.filter((c) => c.method === method).map((c) => c.request),
        kill: Effect.sync(() => server.forceShutdown())
      }
      const implementation: Record<string, grpc.UntypedHandleCall> = {}
      for (const [method, definition] of Object.entries(v1.SchedulerServiceService)) {
        implementation[method] = definition.responseStream
          ? (stream: grpc.ServerWritableStream<v1.SubscribeRequest, v1.SubscribeResponse>) => {
            const subscription: Subscription = {
              index: master.subscriptions.length + 1,
              request: stream.request,
              stream,
              cancelled: false
            }
            stream.on("cancelled", () => {
              subscription.cancelled = true
            })
            master.subscriptions.push(subscription)
            master.onSubscribe(subscription, master)
          }
          : (call: grpc.ServerUnaryCall<any, any>, callback: grpc.sendUnaryData<any>) => {
            master.calls.push({ method, request: call.request })
            const failure = master.failures.get(method)
            if (failure !== undefined) {
              callback({ code: failure.code, details: failure.details, metadata: trailers(failure.trailers) }, null)
              return
            }
            const launched = method === "accept"
              ? (call.request as v1.AcceptRequest).operations.flatMap((op) =>
                op.kind?.$case === "launch" ? op.kind.value.taskInfos.map((t) => t.taskId) : []
              )
              : []
            callback(null, method === "accept" ? { launchedTaskIds: launched } : {})
          }
      }
      server.addService(v1.SchedulerServiceService, implementation)
      server.bindAsync(`127.0.0.1:${options.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (error, port) => {
        if (error !== null) {
          resume(Effect.die(error))
          return
        }
        Object.assign(master, { port, address: `127.0.0.1:${port}` })
        resume(Effect.succeed(master))
      })
    }),
    (master) => master.kill
  )
