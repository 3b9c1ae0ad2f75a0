import * as grpc from "@grpc/grpc-js"
import { Cause, Effect, Exit, Scope } from "effect"
import type * as Context from "effect/Context"
import { StartupError, type RequestError } from "../ClusterError.ts"

/**
 * Connect metadata from an agent whose last master failed it outright (no answer naming a
 * leader): that master's endpoint. A standby whose leader it names holds the stream instead of
 * redirecting the agent back to a leader that is probably dead (see the master's `holdAgent`).
 */
export const LOST_MASTER_HEADER = "berth-lost-master"
/**
 * Trailer on a standby's refusal after holding an agent for longer than the leader's lease: the
 * leader it names has kept its lease meanwhile, so it is alive, even if this agent lost it once.
 */
export const LEADER_ALIVE_HEADER = "berth-leader-alive"

/**
 * Keepalive on a client's long-lived stream to a master: an HTTP/2 PING every 10 s, the connection
 * given up when one goes unanswered for 10 s. Without it a silent network cut (no FIN, no RST)
 * leaves the stream open until TCP itself gives up, which can take many minutes. grpc-js servers
 * accept client pings at any rate; the master's server also permits them without calls.
 */
export const keepaliveOptions: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1
}

/** The one place where request errors become gRPC statuses (with structured trailers). */
export const toServiceError = (error: RequestError): Partial<grpc.StatusObject> => {
  const metadata = new grpc.Metadata()
  switch (error._tag) {
    case "InvalidArgument":
      metadata.set("berth-field", error.field)
      metadata.set("berth-rule", error.rule)
      return { code: grpc.status.INVALID_ARGUMENT, details: error.message, metadata }
    case "NotFound":
      metadata.set("berth-field", error.field)
      metadata.set("berth-rule", error.rule)
      return { code: grpc.status.NOT_FOUND, details: error.message, metadata }
    case "StaleSession":
      return { code: grpc.status.FAILED_PRECONDITION, details: error.message, metadata }
    case "NotLeader":
      if (error.leader !== "") metadata.set("berth-leader", error.leader)
      return { code: grpc.status.UNAVAILABLE, details: error.message, metadata }
    case "FrameworkRemoved":
      // PERMISSION_DENIED means two things; `berth-reason` tells them apart for clients.
      metadata.set("berth-reason", "framework-removed")
      return { code: grpc.status.PERMISSION_DENIED, details: error.message, metadata }
    case "Unimplemented":
      metadata.set("berth-field", error.field)
      return { code: grpc.status.UNIMPLEMENTED, details: error.message, metadata }
    case "Unauthenticated":
      metadata.set("berth-reason", "unauthenticated")
      return { code: grpc.status.UNAUTHENTICATED, details: error.message, metadata }
    case "PermissionDenied":
      metadata.set("berth-reason", "unauthorized")
      metadata.set("berth-field", error.field)
      metadata.set("berth-rule", error.rule)
      return { code: grpc.status.PERMISSION_DENIED, details: error.message, metadata }
    case "RateLimited":
      metadata.set("berth-reason", "rate-limited")
      metadata.set("berth-retry-after-ms", String(error.retryAfterMs))
      return { code: grpc.status.RESOURCE_EXHAUSTED, details: error.message, metadata }
  }
}

const internal = (cause: Cause.Cause<unknown>): Partial<grpc.StatusObject> => ({
  code: grpc.status.INTERNAL,
  details: Cause.pretty(cause).split("\n")[0] ?? "internal error"
})

/**
 * Adapts an Effect handler to grpc-js's unary callback style, running it with the daemon's
 * services so handlers keep their Clock, logger and storage. The handler also gets the call (its
 * metadata says who is calling).
 */
export const unary =
  <R, Req, Res>(
    context: Context.Context<R>,
    handler: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Effect.Effect<Res, RequestError, R>
  ) =>
  (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>): void => {
    Effect.runForkWith(context)(handler(call.request, call)).addObserver((exit) => {
      if (Exit.isSuccess(exit)) return callback(null, exit.value)
      const failure = exit.cause.reasons.find(Cause.isFailReason)
      if (failure === undefined) {
        // A defect is a bug in the master or agent: log it whole, answer INTERNAL.
        Effect.runForkWith(context)(Effect.logError("request handler failed", Cause.pretty(exit.cause)))
      }
      callback(failure === undefined ? internal(exit.cause) : toServiceError(failure.error), null)
    })
  }

/**
 * Ends a streaming call with an error status. (grpc-js sends a stream's status only from its
 * 'error' event; `destroy` would drop the status and leave the client waiting.)
 */
export const failStream = (
  call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
  error: RequestError | Partial<grpc.StatusObject>
): void => {
  call.emit("error", "_tag" in error ? toServiceError(error) : error)
}

/**
 * A server interceptor that admits or refuses every call (unary and streaming) from its method
 * path, metadata and peer alone, before the handler runs and before the request is decoded. A
 * refused call ends with the error's status and trailers.
 */
export const admission = (
  check: (path: string, metadata: grpc.Metadata, peer: string) => RequestError | undefined
): grpc.ServerInterceptor =>
(method, call) =>
  new grpc.ServerInterceptingCall(call, {
    start: (next) =>
      next({
        onReceiveMetadata: (metadata, proceed) => {
          const refused = check(method.path, metadata, call.getPeer())
          if (refused === undefined) proceed(metadata)
          else {
            const status = toServiceError(refused)
            call.sendStatus({ code: status.code ?? grpc.status.UNKNOWN, details: status.details ?? "", metadata: status.metadata ?? null })
          }
        }
      })
  })

export interface ServeOptions {
  readonly maxMessageBytes?: number
  /** TLS (and mutual TLS) credentials; plaintext when absent. */
  readonly credentials?: grpc.ServerCredentials | undefined
  readonly interceptors?: ReadonlyArray<grpc.ServerInterceptor> | undefined
}

/** Starts a grpc-js server on `host:port` (port 0 picks a free one) and stops it with the scope. */
export const serve = (
  address: string,
  services: ReadonlyArray<readonly [grpc.ServiceDefinition, grpc.UntypedServiceImplementation]>,
  component: string,
  options: ServeOptions = {}
): Effect.Effect<{ readonly server: grpc.Server; readonly port: number }, StartupError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<{ readonly server: grpc.Server; readonly port: number }, StartupError>((resume) => {
      const server = new grpc.Server({
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_permit_without_calls": 1,
        // Larger requests are refused with RESOURCE_EXHAUSTED before they are decoded.
        "grpc.max_receive_message_length": options.maxMessageBytes ?? 16 * 1024 * 1024,
        interceptors: [...(options.interceptors ?? [])]
      })
      for (const [definition, implementation] of services) server.addService(definition, implementation)
      server.bindAsync(address, options.credentials ?? grpc.ServerCredentials.createInsecure(), (error, port) => {
        if (error !== null) {
          resume(Effect.fail(new StartupError({ component, reason: `cannot listen on ${address}: ${error.message}` })))
        } else {
          resume(Effect.succeed({ server, port }))
        }
      })
    }),
    // Open streams (subscriptions, agent connections) never end by themselves, so a graceful
    // shutdown would wait forever: cut them; clients reconnect with backoff.
    ({ server }) => Effect.sync(() => server.forceShutdown())
  )

/** "host:port" for a bound server, with 0.0.0.0 shown as the loopback address clients can use. */
export const endpoint = (host: string, port: number): string =>
  `${host === "0.0.0.0" || host === "" ? "127.0.0.1" : host}:${port}`
