/**
 * A master the test drives by hand, on real gRPC over loopback: it speaks the agent protocol
 * (`AgentService.Connect`), registers the agent, acknowledges every status update at once (as a
 * scheduler would), and records what the agent sends. Tests of agent features the real master
 * does not route yet (custom executors, framework messages) use it to send run orders and
 * framework messages directly.
 */
import * as grpc from "@grpc/grpc-js"
import { v1 } from "@berth/proto"
import { Effect, type Scope } from "effect"

export interface ScriptedMaster {
  readonly endpoint: string
  /** Sends a message to the connected agent (the latest connection). */
  readonly send: (message: NonNullable<v1.ConnectResponse["message"]>) => void
  /** Every status update received, in order. */
  readonly updates: Array<v1.TaskStatus>
  /** Messages executors sent to their schedulers. */
  readonly executorMessages: Array<{ readonly executorId: string; readonly data: string }>
  readonly executorsExited: Array<v1.ConnectRequest_ExecutorExited>
  /** The tasks each registration reported, in order of registrations. */
  readonly registrations: Array<ReadonlyArray<v1.TaskReport>>
  /** Whether updates are acknowledged (on by default): off, the agent keeps resending them. */
  readonly setAcknowledging: (on: boolean) => void
  /** Polls (real time) until `predicate` holds; dies naming `what` after `ms`. */
  readonly waitFor: <A>(what: string, find: () => A | undefined, ms?: number) => Effect.Effect<A>
}

export const start = (agentId = "agent-1"): Effect.Effect<ScriptedMaster, never, Scope.Scope> =>
  Effect.gen(function*() {
    const updates: Array<v1.TaskStatus> = []
    const executorMessages: Array<{ executorId: string; data: string }> = []
    const executorsExited: Array<v1.ConnectRequest_ExecutorExited> = []
    const registrations: Array<ReadonlyArray<v1.TaskReport>> = []
    let current: grpc.ServerDuplexStream<v1.ConnectRequest, v1.ConnectResponse> | undefined
    let acknowledging = true
    const server = new grpc.Server()
    server.addService(v1.AgentServiceService, {
      connect: (call: grpc.ServerDuplexStream<v1.ConnectRequest, v1.ConnectResponse>) => {
        current = call
        call.on("data", (request: v1.ConnectRequest) => {
          const message = request.message
          switch (message?.$case) {
            case "register":
              registrations.push(message.value.tasks)
              call.write({ message: { $case: "registered", value: { agentId, pingIntervalSeconds: 5 } } })
              return
            case "statusUpdates":
              for (const { frameworkId, status } of message.value.updates) {
                if (status === undefined) continue
                updates.push(status)
                if (!acknowledging) continue
                call.write({
                  message: {
                    $case: "acknowledgements",
                    value: { acknowledgements: [{ frameworkId, taskId: status.taskId, uuid: Buffer.from(status.uuid) }] }
                  }
                })
              }
              return
            case "executorMessage":
              executorMessages.push({ executorId: message.value.executorId, data: Buffer.from(message.value.data).toString("utf8") })
              return
            case "executorExited":
              executorsExited.push(message.value)
              return
            default:
              return
          }
        })
        call.on("error", () => {})
        call.on("end", () => call.end())
      }
    })
    const port = yield* Effect.acquireRelease(
      Effect.callback<number>((resume) => {
        server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => {
          if (error !== null) resume(Effect.die(error))
          else resume(Effect.succeed(port))
        })
      }),
      () => Effect.sync(() => server.forceShutdown())
    )
    return {
      endpoint: `127.0.0.1:${port}`,
      send: (message) => current?.write({ message }),
      setAcknowledging: (on) => (acknowledging = on),
      updates,
      executorMessages,
      executorsExited,
      registrations,
      waitFor: (what, find, ms = 20_000) =>
        Effect.gen(function*() {
          const deadline = Date.now() + ms
          while (true) {
            const found = find()
            if (found !== undefined) return found
            if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
            yield* Effect.sleep("25 millis")
          }
        })
    }
  })
