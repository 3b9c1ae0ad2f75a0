/**
 * Reads files from task sandboxes (stdout, stderr, anything a task wrote), the way a UI or a
 * CLI shows a task's output: the master's operator API says where the agent is, and the agent's
 * own API serves the bytes. Only paths inside sandboxes can be read.
 *
 * @example
 * ```ts
 * import { Sandbox } from "@berth/sdk-scheduler"
 * const bytes = yield* Sandbox.readFile({
 *   master: "127.0.0.1:5050", agentId: status.agentId, frameworkId, executorId: status.taskId, file: "stdout"
 * })
 * console.log(new TextDecoder().decode(bytes))
 * ```
 */
import * as grpc from "@grpc/grpc-js"
import { v1 } from "@berth/proto"
import { Cause, Effect, Queue, Schema, Stream } from "effect"
import type { Credentials, Tls } from "./SchedulerSession.ts"
import * as Transport from "./internal/transport.ts"

/** A sandbox file could not be read: the agent is unknown, the file missing, or the call failed. */
export class SandboxError extends Schema.TaggedError<SandboxError>()("SandboxError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.path}: ${this.reason}`
  }
}

export interface ReadFileOptions {
  /** The master's "host:port". */
  readonly master: string
  readonly agentId: string
  readonly frameworkId: string
  /** For tasks run by the command executor, the executor id is the task id. */
  readonly executorId: string
  /** A path inside the sandbox; default "stdout". */
  readonly file?: string
  /** Read at most this many bytes from `offset` (0, the default, reads to the end, up to 4 MB). */
  readonly offset?: number
  readonly length?: number
  /**
   * For a master that authenticates operator calls: an operator principal with at least read
   * access (GetAgents), and TLS to the master. The agent's own API is secured on its own: see
   * `agent`.
   */
  readonly credentials?: Credentials | undefined
  readonly tls?: Tls | undefined
  /**
   * For an agent whose own API is secured (`--api-tls-cert`, `--api-credentials`): the CA of its
   * certificate, and an operator principal it knows. Separate from the master's, so that no
   * secret goes to an agent in plaintext unless asked.
   */
  readonly agent?: { readonly tls?: Tls | undefined; readonly credentials?: Credentials | undefined } | undefined
}

/** How the agent's file API is reached, as `options.agent` says (plaintext and anonymous by default). */
const agentTransport = (options: ReadFileOptions): Effect.Effect<Transport.Transport, SandboxError> =>
  Effect.suspend(() => {
    const transport = Transport.make(options.agent?.tls, options.agent?.credentials)
    return "channel" in transport
      ? Effect.succeed(transport)
      : Effect.fail(new SandboxError({ path: `agent.${transport[0]}`, reason: transport[1] }))
  })

const agentClient = (endpoint: string, transport: Transport.Transport): v1.AgentOperatorServiceClient =>
  new v1.AgentOperatorServiceClient(endpoint, transport.channel(), transport.options)

const withClient = <C extends grpc.Client, A>(
  make: () => C,
  use: (client: C) => Effect.Effect<A, SandboxError>
): Effect.Effect<A, SandboxError> =>
  Effect.acquireUseRelease(Effect.sync(make), use, (client) => Effect.sync(() => client.close()))

/** Where an agent's own API listens, from the master's operator API. */
export const agentEndpoint = (
  master: string,
  agentId: string,
  security: { readonly credentials?: Credentials | undefined; readonly tls?: Tls | undefined } = {}
): Effect.Effect<string, SandboxError> =>
  Effect.suspend(() => {
    const transport = Transport.make(security.tls, security.credentials)
    return "channel" in transport
      ? Effect.succeed(transport)
      : Effect.fail(new SandboxError({ path: transport[0], reason: transport[1] }))
  }).pipe(Effect.flatMap((transport) => withClient(
    () => new v1.OperatorServiceClient(master, transport.channel(), transport.options),
    (client) =>
      Effect.callback<string, SandboxError>((resume) => {
        client.getAgents({}, (error, response) => {
          if (error !== null) return resume(Effect.fail(new SandboxError({ path: agentId, reason: error.message })))
          const agent = response.agents.find((a) => a.info?.agentId === agentId)
          resume(
            agent?.info?.endpoint
              ? Effect.succeed(agent.info.endpoint)
              : Effect.fail(new SandboxError({ path: agentId, reason: "the master knows no agent with this id" }))
          )
        })
      })
  )))

/** Reads one sandbox file of the latest run of an executor. */
export const readFile = (options: ReadFileOptions): Effect.Effect<Uint8Array, SandboxError> =>
  Effect.gen(function*() {
    const endpoint = yield* agentEndpoint(options.master, options.agentId, options)
    const transport = yield* agentTransport(options)
    const file = `frameworks/${options.frameworkId}/executors/${options.executorId}/runs/latest/${options.file ?? "stdout"}`
    return yield* withClient(
      () => agentClient(endpoint, transport),
      (client) =>
        Effect.callback<Uint8Array, SandboxError>((resume) => {
          const chunks: Array<Uint8Array> = []
          const call = client.readFile({ path: file, offset: options.offset ?? 0, length: options.length ?? 0, follow: false })
          call.on("data", (chunk: v1.ReadFileResponse) => chunks.push(chunk.data))
          call.on("error", (error: grpc.ServiceError) =>
            resume(Effect.fail(new SandboxError({ path: file, reason: error.details || error.message }))))
          call.on("end", () => resume(Effect.succeed(Buffer.concat(chunks))))
        })
    )
  })

/**
 * Follows one sandbox file of the latest run of an executor (tail -f): the bytes from `offset`
 * on, then those appended later, until the stream is interrupted (the call is cancelled) or the
 * sandbox is gone (the stream then ends). `length`, when given, ends it after that many bytes.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Sandbox } from "@berth/sdk-scheduler"
 *
 * const tail = Sandbox.followFile({ master: "127.0.0.1:5050", agentId, frameworkId, executorId: "t1" }).pipe(
 *   Stream.runForEach((bytes) => Effect.sync(() => process.stdout.write(bytes)))
 * )
 * ```
 */
export const followFile = (options: ReadFileOptions): Stream.Stream<Uint8Array, SandboxError> =>
  Stream.unwrap(Effect.map(Effect.all([agentEndpoint(options.master, options.agentId, options), agentTransport(options)]), ([endpoint, transport]) => {
    const file = `frameworks/${options.frameworkId}/executors/${options.executorId}/runs/latest/${options.file ?? "stdout"}`
    return Stream.callback<Uint8Array, SandboxError>((queue) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const client = agentClient(endpoint, transport)
          const call = client.readFile({ path: file, offset: options.offset ?? 0, length: options.length ?? 0, follow: true })
          // Copied: the bytes may be a view into a larger received buffer.
          call.on("data", (chunk: v1.ReadFileResponse) => Queue.offerUnsafe(queue, Uint8Array.from(chunk.data)))
          call.on("error", (error: grpc.ServiceError) => {
            if (error.code !== grpc.status.CANCELLED) Queue.failCauseUnsafe(queue, Cause.fail(new SandboxError({ path: file, reason: error.details || error.message })))
          })
          call.on("end", () => Queue.endUnsafe(queue))
          return { client, call }
        }),
        ({ call, client }) => Effect.sync(() => {
          call.cancel()
          client.close()
        })
      )
    )
  }))
