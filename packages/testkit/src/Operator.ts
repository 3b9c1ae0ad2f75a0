/**
 * An Effect client for the master's operator API, for tests and tools.
 *
 * @example
 * ```ts
 * const operator = yield* Operator.make("127.0.0.1:5050")
 * yield* operator.updateQuota({ role: "web", limits: [Resources.scalar("cpus", 4)] })
 * const { roles } = yield* operator.getRoles
 * ```
 */
import * as grpc from "@grpc/grpc-js"
import { Security } from "@berth/cluster-core"
import { v1 } from "@berth/proto"
import { Cause, Effect, Queue, Schema, Scope, Stream } from "effect"

/**
 * A failed operator call, with the gRPC status name and, for bad or refused requests, the field
 * and rule, and the `berth-reason` trailer (`unauthorized`, `unauthenticated`, ...).
 */
export class OperatorError extends Schema.TaggedError<OperatorError>()("OperatorError", {
  call: Schema.String,
  code: Schema.String,
  field: Schema.String,
  rule: Schema.String,
  reason: Schema.String,
  message: Schema.String
}) {}

const fromGrpc = (call: string, error: grpc.ServiceError) =>
  new OperatorError({
    call,
    code: grpc.status[error.code] ?? String(error.code),
    field: String(error.metadata?.get("berth-field")[0] ?? ""),
    rule: String(error.metadata?.get("berth-rule")[0] ?? ""),
    reason: String(error.metadata?.get("berth-reason")[0] ?? ""),
    message: error.details || error.message
  })

/** How the client reaches a secured master. */
export interface Options {
  /** A principal and its secret, or a bearer token, sent with every call. */
  readonly credentials?: Security.ClientCredentials | undefined
  /** TLS: the CA (and a client certificate for mutual TLS), PEM file paths or PEM text. */
  readonly tls?: Security.ClientTls | undefined
}

export interface Operator {
  readonly state: Effect.Effect<v1.GetStateResponse, OperatorError>
  readonly tasks: (frameworkId?: string) => Effect.Effect<ReadonlyArray<v1.Task>, OperatorError>
  readonly master: Effect.Effect<v1.GetMasterResponse, OperatorError>
  readonly getRoles: Effect.Effect<v1.GetRolesResponse, OperatorError>
  readonly getQuota: Effect.Effect<v1.GetQuotaResponse, OperatorError>
  readonly getWeights: Effect.Effect<v1.GetWeightsResponse, OperatorError>
  readonly updateQuota: (request: v1.UpdateQuotaRequest) => Effect.Effect<void, OperatorError>
  readonly updateWeights: (request: v1.UpdateWeightsRequest) => Effect.Effect<void, OperatorError>
  readonly drainAgent: (request: v1.DrainAgentRequest) => Effect.Effect<void, OperatorError>
  readonly reactivateAgent: (agentId: string) => Effect.Effect<void, OperatorError>
  readonly markAgentGone: (agentId: string) => Effect.Effect<void, OperatorError>
  readonly reserveResources: (request: v1.ReserveResourcesRequest) => Effect.Effect<void, OperatorError>
  readonly unreserveResources: (request: v1.UnreserveResourcesRequest) => Effect.Effect<void, OperatorError>
  /** The cluster event stream: a snapshot first, then every change. */
  readonly events: Stream.Stream<NonNullable<v1.WatchEventsResponse["event"]>, OperatorError>
}

type Unary<Req, Res> = (request: Req, callback: (error: grpc.ServiceError | null, response: Res) => void) => unknown

const call = <Req, Res>(name: string, invoke: Unary<Req, Res>, request: Req) =>
  Effect.callback<Res, OperatorError>((resume) => {
    invoke(request, (error, response) => resume(error === null ? Effect.succeed(response) : Effect.fail(fromGrpc(name, error))))
  })

/**
 * Connects to a master's operator API; the channel closes with the scope. Unreadable TLS files
 * are a defect (the test's own setup is wrong).
 */
export const make = (endpoint: string, options: Options = {}): Effect.Effect<Operator, never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* Effect.acquireRelease(
      Effect.sync(() =>
        new v1.OperatorServiceClient(endpoint, Security.channelCredentials(options.tls), Security.clientOptions(options.credentials))
      ),
      (c) => Effect.sync(() => c.close())
    )
    const unary = <Req, Res>(name: string, invoke: Unary<Req, Res>) => (request: Req) =>
      call(name, invoke.bind(client) as Unary<Req, Res>, request)
    return {
      state: unary<v1.GetStateRequest, v1.GetStateResponse>("GetState", client.getState)({}),
      tasks: (frameworkId = "") =>
        Effect.map(unary<v1.GetTasksRequest, v1.GetTasksResponse>("GetTasks", client.getTasks)({ frameworkId }), (r) => r.tasks),
      master: unary<v1.GetMasterRequest, v1.GetMasterResponse>("GetMaster", client.getMaster)({}),
      getRoles: unary<v1.GetRolesRequest, v1.GetRolesResponse>("GetRoles", client.getRoles)({}),
      getQuota: unary<v1.GetQuotaRequest, v1.GetQuotaResponse>("GetQuota", client.getQuota)({}),
      getWeights: unary<v1.GetWeightsRequest, v1.GetWeightsResponse>("GetWeights", client.getWeights)({}),
      updateQuota: (r) => Effect.asVoid(unary<v1.UpdateQuotaRequest, v1.UpdateQuotaResponse>("UpdateQuota", client.updateQuota)(r)),
      updateWeights: (r) =>
        Effect.asVoid(unary<v1.UpdateWeightsRequest, v1.UpdateWeightsResponse>("UpdateWeights", client.updateWeights)(r)),
      drainAgent: (r) => Effect.asVoid(unary<v1.DrainAgentRequest, v1.DrainAgentResponse>("DrainAgent", client.drainAgent)(r)),
      reactivateAgent: (agentId) =>
        Effect.asVoid(
          unary<v1.ReactivateAgentRequest, v1.ReactivateAgentResponse>("ReactivateAgent", client.reactivateAgent)({ agentId })
        ),
      markAgentGone: (agentId) =>
        Effect.asVoid(unary<v1.MarkAgentGoneRequest, v1.MarkAgentGoneResponse>("MarkAgentGone", client.markAgentGone)({ agentId })),
      reserveResources: (r) =>
        Effect.asVoid(unary<v1.ReserveResourcesRequest, v1.ReserveResourcesResponse>("ReserveResources", client.reserveResources)(r)),
      unreserveResources: (r) =>
        Effect.asVoid(unary<v1.UnreserveResourcesRequest, v1.UnreserveResourcesResponse>("UnreserveResources", client.unreserveResources)(r)),
      events: Stream.callback<NonNullable<v1.WatchEventsResponse["event"]>, OperatorError>((queue) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            const stream = client.watchEvents({})
            stream.on("data", (response: v1.WatchEventsResponse) => {
              if (response.event !== undefined) Queue.offerUnsafe(queue, response.event)
            })
            stream.on("error", (error: grpc.ServiceError) => {
              if (error.code !== grpc.status.CANCELLED) Queue.failCauseUnsafe(queue, Cause.fail(fromGrpc("WatchEvents", error)))
            })
            stream.on("end", () => Queue.endUnsafe(queue))
            return stream
          }),
          (stream) => Effect.sync(() => stream.cancel())
        ))
    }
  })
