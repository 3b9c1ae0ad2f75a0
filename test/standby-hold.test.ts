import { describe, expect, it } from "@effect/vitest"
import { Master } from "@berth/cluster-core"
import { Resources, v1 } from "@berth/proto"
import { StateStore } from "@berth/storage"
import * as grpc from "@grpc/grpc-js"
import { Effect, Exit, Layer, References, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as TempDir from "./support/tempDir.ts"

const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))
const LEASE_SECONDS = 2

/** A master in this process on the registry file, with a short lease. */
const inProcessMaster = (registry: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const services = yield* Layer.build(Layer.fresh(StateStore.layerSqlite({ path: registry }))).pipe(Scope.provide(scope))
    return yield* Master.start({ port: 0, leaderLeaseSeconds: LEASE_SECONDS }).pipe(Effect.provide(services), Scope.provide(scope))
  })

/** A `berth master` process on the registry file: it can die without resigning (SIGKILL). */
const processMaster = (registry: string) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly child: ChildProcess; readonly endpoint: string }, Error>((resume) => {
      const child = spawn(process.execPath, [
        berth,
        "master",
        "--port",
        "0",
        "--state",
        `sqlite:${registry}`,
        "--leader-lease",
        String(LEASE_SECONDS)
      ], { stdio: ["ignore", "pipe", "ignore"] })
      let out = ""
      child.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        const match = /listening on (\S+)/.exec(out)
        if (match !== null) resume(Effect.succeed({ child, endpoint: match[1]! }))
      })
      child.on("exit", (code, signal) => resume(Effect.fail(new Error(`berth master exited with ${code ?? signal}`))))
    }).pipe(Effect.timeout("20 seconds")),
    ({ child }) => Effect.sync(() => child.kill("SIGKILL"))
  )

interface RawAgent {
  /** Every message the master sent, in order. */
  readonly received: Array<v1.ConnectResponse>
  /** How the stream ended, once it has. */
  readonly ended: () => grpc.ServiceError | "end" | undefined
}

/** A bare agent stream: registers with `lostMaster` named as the master that failed it (if any). */
const rawAgent = (endpoint: string, lostMaster: string | undefined) =>
  Effect.acquireRelease(
    Effect.sync((): RawAgent & { readonly close: () => void } => {
      const client = new v1.AgentServiceClient(endpoint, grpc.credentials.createInsecure())
      const metadata = new grpc.Metadata()
      if (lostMaster !== undefined) metadata.set("berth-lost-master", lostMaster)
      const call = client.connect(metadata)
      const received: Array<v1.ConnectResponse> = []
      let ended: grpc.ServiceError | "end" | undefined
      call.on("data", (message: v1.ConnectResponse) => received.push(message))
      call.on("error", (error: grpc.ServiceError) => (ended ??= error))
      call.on("end", () => (ended ??= "end"))
      call.write({
        message: {
          $case: "register",
          value: {
            agentInfo: {
              agentId: "",
              hostname: "held-agent",
              resources: [Resources.scalar("cpus", 1), Resources.scalar("mem", 256)],
              attributes: [],
              endpoint: "",
              version: "test"
            },
            tasks: [],
            frameworks: [],
            checkpointedResources: [],
            bootId: "boot"
          }
        }
      })
      return {
        received,
        ended: () => ended,
        close: () => {
          call.cancel()
          client.close()
        }
      }
    }),
    (agent) => Effect.sync(agent.close)
  )

const waitFor = <A>(what: string, check: () => A | undefined, seconds = 20) =>
  Effect.gen(function*() {
    while (true) {
      const value = check()
      if (value !== undefined) return value
      yield* Effect.sleep("20 millis")
    }
  }).pipe(Effect.timeoutOrElse({ duration: `${seconds} seconds`, orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) }))

const registered = (agent: RawAgent) => agent.received.find((m) => m.message?.$case === "registered")

describe("a standby holds the agents of a leader they lost", () => {
  it.live("the leader dies: an agent that names it is held (not refused) and registered the moment the standby leads", () =>
    Effect.gen(function*() {
      const dir = yield* TempDir.make("berth-hold-")
      const registry = path.join(dir, "registry.db")
      const leader = yield* processMaster(registry)
      const standby = yield* inProcessMaster(registry)
      expect(standby.info.leading).toBe(false)

      // The leader dies without resigning: its lease names it for up to LEASE_SECONDS more.
      leader.child.kill("SIGKILL")
      const agent = yield* rawAgent(standby.endpoint, leader.endpoint)
      yield* Effect.sleep("300 millis")
      // Still waiting on the same stream, not sent back to the dead leader.
      expect(agent.ended()).toBeUndefined()
      expect(standby.info.leading).toBe(false)

      const answer = yield* waitFor("the registration", () => registered(agent) ?? agent.ended())
      expect(agent.ended()).toBeUndefined()
      expect(answer).toMatchObject({ message: { $case: "registered" } })
      expect(standby.info.leading).toBe(true)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 40_000)

  it.live("the leader lives: a held agent is pointed back at it after two lease TTLs; without the header, at once", () =>
    Effect.gen(function*() {
      const dir = yield* TempDir.make("berth-hold-live-")
      const registry = path.join(dir, "registry.db")
      const leader = yield* inProcessMaster(registry)
      const standby = yield* inProcessMaster(registry)
      expect([leader.info.leading, standby.info.leading]).toEqual([true, false])

      // An agent that did not lose anyone is redirected straight away (no trailer saying "alive").
      const fresh = yield* rawAgent(standby.endpoint, undefined)
      const refused = yield* waitFor("the redirect", () => fresh.ended(), 5)
      expect(refused).not.toBe("end")
      const error = refused as grpc.ServiceError
      expect(error.code).toBe(grpc.status.UNAVAILABLE)
      expect(error.metadata.get("berth-leader")).toEqual([leader.endpoint])
      expect(error.metadata.get("berth-leader-alive")).toEqual([])

      // One that says it lost the leader is held while the leader might be dying ...
      const held = yield* rawAgent(standby.endpoint, leader.endpoint)
      yield* Effect.sleep(`${LEASE_SECONDS} seconds`)
      expect(held.ended()).toBeUndefined()
      // ... and, the leader having kept its lease, sent back to it as alive.
      const back = (yield* waitFor("the redirect of the held agent", () => held.ended(), 4 * LEASE_SECONDS + 5)) as grpc.ServiceError
      expect(back.code).toBe(grpc.status.UNAVAILABLE)
      expect(back.metadata.get("berth-leader")).toEqual([leader.endpoint])
      expect(back.metadata.get("berth-leader-alive")).toEqual(["1"])
      expect(registered(held)).toBeUndefined()
      expect([leader.info.leading, standby.info.leading]).toEqual([true, false])
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 40_000)
})
