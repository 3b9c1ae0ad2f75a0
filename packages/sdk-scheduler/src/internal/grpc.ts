import type { ClientUnaryCall, ServiceError } from "@grpc/grpc-js"
import type { v1 } from "@berth/proto"
import { Cause, Effect, Queue, Stream } from "effect"
import { fromGrpc } from "../SchedulerError.ts"
import type { SchedulerError } from "../SchedulerError.ts"

/**
 * One unary call. Interrupting the effect cancels the call, so timeouts and scope closes do not
 * leave requests running on the channel.
 */
export const unary = <A>(
  call: string,
  frameworkId: string,
  invoke: (callback: (error: ServiceError | null, response: A) => void) => ClientUnaryCall
): Effect.Effect<A, SchedulerError> =>
  Effect.callback<A, SchedulerError>((resume) => {
    let pending: ClientUnaryCall
    try {
      pending = invoke((error, response) =>
        resume(error === null ? Effect.succeed(response) : Effect.fail(fromGrpc(error, call, frameworkId)))
      )
    } catch (error) {
      // grpc-js throws synchronously when it cannot serialise the request.
      resume(Effect.fail(fromGrpc(error, call, frameworkId)))
      return
    }
    return Effect.sync(() => pending.cancel())
  })

/**
 * The Subscribe server stream as a Stream: it ends when the master ends the call with OK and
 * fails with the mapped status otherwise. Closing the stream's scope cancels the call, which is
 * how the master learns the scheduler went away.
 */
export const subscribe = (
  client: v1.SchedulerServiceClient,
  request: v1.SubscribeRequest,
  frameworkId: string
): Stream.Stream<v1.SubscribeResponse, SchedulerError> =>
  Stream.callback<v1.SubscribeResponse, SchedulerError>((queue) =>
    Effect.gen(function*() {
      const call = client.subscribe(request)
      call.on("data", (response: v1.SubscribeResponse) => {
        Queue.offerUnsafe(queue, response)
      })
      // Stays attached after cancel(): grpc-js then emits CANCELLED, and an EventEmitter without
      // an "error" listener would throw it. The queue is done by then, so it is dropped.
      call.on("error", (error: unknown) => {
        Queue.failCauseUnsafe(queue, Cause.fail(fromGrpc(error, "Subscribe", frameworkId)))
      })
      call.on("end", () => {
        Queue.endUnsafe(queue)
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => call.cancel()))
    })
  )
