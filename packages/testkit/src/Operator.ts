/**
 * A small Effect client for the master's operator API, for tests and tools.
 */
import * as grpc from "@grpc/grpc-js"
import { v1 } from "@berth/proto"
import { Effect, Schema, Scope } from "effect"

export class OperatorError extends Schema.TaggedError<OperatorError>()("OperatorError", {
  call: Schema.String,
  message: Schema.String
}) {}

export interface Operator {
  readonly state: Effect.Effect<v1.GetStateResponse, OperatorError>
  readonly tasks: (frameworkId?: string) => Effect.Effect<ReadonlyArray<v1.Task>, OperatorError>
  readonly master: Effect.Effect<v1.GetMasterResponse, OperatorError>
}

const call = <Req, Res>(
  name: string,
  invoke: (request: Req, callback: (error: grpc.ServiceError | null, response: Res) => void) => unknown,
  request: Req
) =>
  Effect.callback<Res, OperatorError>((resume) => {
    invoke(request, (error, response) =>
      resume(error === null ? Effect.succeed(response) : Effect.fail(new OperatorError({ call: name, message: error.message }))))
  })

/** Connects to a master's operator API; the channel closes with the scope. */
export const make = (endpoint: string): Effect.Effect<Operator, never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => new v1.OperatorServiceClient(endpoint, grpc.credentials.createInsecure())),
      (c) => Effect.sync(() => c.close())
    )
    return {
      state: call<v1.GetStateRequest, v1.GetStateResponse>("GetState", client.getState.bind(client), {}),
      tasks: (frameworkId = "") =>
        Effect.map(call<v1.GetTasksRequest, v1.GetTasksResponse>("GetTasks", client.getTasks.bind(client), { frameworkId }), (r) => r.tasks),
      master: call<v1.GetMasterRequest, v1.GetMasterResponse>("GetMaster", client.getMaster.bind(client), {})
    }
  })
