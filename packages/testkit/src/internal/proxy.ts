/**
 * The fault-injecting proxy between one agent and the masters (in-process and processes
 * backends). The agent is given the proxy's addresses as its masters; the proxy serves
 * `AgentService.Connect` itself and forwards each stream to the real master message by message,
 * so it knows what it carries and can:
 *
 * - cut the link (a partition): every open stream is broken on both sides and new ones are
 *   refused until it heals. The master sees the agent disconnect and, after its ping timeout,
 *   marks it UNREACHABLE; once healed the agent reconnects, re-registers and its tasks return to
 *   RUNNING.
 * - drop, duplicate and delay the agent's status updates, by probability (a seeded RNG, so runs
 *   replay) or for the next N updates. Acknowledgements, pings and everything else pass as they
 *   are: the point is to exercise at-least-once delivery (the agent resends until acknowledged)
 *   and idempotence (a duplicate must not move a task backwards).
 *
 * One server per master (same order as the masters): a standby answers with the leader's
 * address in `berth-leader` metadata, which the proxy rewrites to its own server for that master,
 * so a failover keeps the agent behind the proxy. Plaintext only (a TLS cluster gets no proxy).
 * Delays are real time: they model the network, not a timer of the system under test.
 */
import { TaskStates, v1 } from "@berth/proto"
import * as grpc from "@grpc/grpc-js"
import { Effect, type Scope } from "effect"
import type { ClusterAgent, ClusterFaults } from "../TestCluster.ts"
import { InvalidOptions, UnsupportedFault } from "../TestClusterError.ts"
import * as Random from "./random.ts"

/** How status updates going from the agent to the master are disturbed. */
export interface UpdateFaults {
  /** Drop updates: a probability in [0, 1] (seeded), or `{ next: n }` for the next n updates. */
  readonly drop?: number | { readonly next: number } | undefined
  /** Send updates twice (the copy right after the original): a probability, or `{ next: n }`. */
  readonly duplicate?: number | { readonly next: number } | undefined
  /** Hold every update this many milliseconds (real time) before forwarding it. */
  readonly delayMs?: number | undefined
  /** Seed of the RNG behind the probabilities (default: the link's own seed). */
  readonly seed?: number | undefined
}

/** What the proxy of one agent has done so far. */
export interface LinkStats {
  /** Status updates forwarded to a master (a duplicate counts twice). */
  readonly forwarded: number
  readonly dropped: number
  readonly duplicated: number
  readonly delayed: number
  /** Streams the agent opened through the proxy. */
  readonly connections: number
  /** Streams refused because the link was partitioned. */
  readonly refused: number
}

export interface Link {
  /** The proxy's "host:port" for each master, in the masters' order: what the agent connects to. */
  readonly endpoints: ReadonlyArray<string>
  readonly partitioned: () => boolean
  /** Cuts the link: open streams break on both sides, new ones are refused. */
  readonly partition: Effect.Effect<void>
  /** Lets the agent through again. */
  readonly heal: Effect.Effect<void>
  /** Replaces the status-update rules (undefined: forward everything as it is). */
  readonly setUpdateFaults: (faults: UpdateFaults | undefined) => void
  readonly stats: () => LinkStats
  /** Pings forwarded to a master and not answered yet. */
  readonly pingsInFlight: () => number
  /** Pongs the masters sent so far (virtual time waits for a fresh one after a jump). */
  readonly pongs: () => number
  /** Whether a stream to a master is open now. */
  readonly connected: () => boolean
}

export interface LinkOptions {
  /** The agent's name ("agent-1"), for the event log. */
  readonly name: string
  /** The masters' real endpoints. */
  readonly masters: ReadonlyArray<string>
  /** Records what the proxy did (into the cluster event log). */
  readonly log: (text: string) => void
  /** Seed of the link's RNG (probabilistic faults without a seed of their own). */
  readonly seed?: number
}

/** Headers grpc-js manages itself; everything else (authorization) goes upstream unchanged. */
const reserved = (key: string) =>
  key.startsWith(":") || key.startsWith("grpc-") || key === "content-type" || key === "user-agent" || key === "te"

const unavailable = (details: string, metadata = new grpc.Metadata()): Partial<grpc.StatusObject> => ({
  code: grpc.status.UNAVAILABLE,
  details,
  metadata
})

const describeUpdate = (update: v1.StatusUpdate) =>
  `${update.status?.taskId ?? "?"} ${TaskStates.name(update.status?.state ?? v1.TaskState.STAGING)}`

export const make = (options: LinkOptions): Effect.Effect<Link, never, Scope.Scope> =>
  Effect.gen(function*() {
    let partitioned = false
    let faults: UpdateFaults | undefined
    let rng = Random.make(options.seed ?? 1)
    let dropBudget = 0
    let duplicateBudget = 0
    const stats = { forwarded: 0, dropped: 0, duplicated: 0, delayed: 0, connections: 0, refused: 0 }
    let pings = 0
    let pongs = 0
    const timers = new Set<NodeJS.Timeout>()

    interface Connection {
      readonly close: (status: Partial<grpc.StatusObject>) => void
    }
    const connections = new Set<Connection>()

    const decide = (rule: UpdateFaults["drop"], budget: "drop" | "duplicate"): boolean => {
      if (rule === undefined) return false
      if (typeof rule === "number") return rule > 0 && rng.next() < rule
      if (budget === "drop" ? dropBudget > 0 : duplicateBudget > 0) {
        if (budget === "drop") dropBudget--
        else duplicateBudget--
        return true
      }
      return false
    }

    const clients = new Map<string, grpc.Client & v1.AgentServiceClient>()
    const clientFor = (upstream: string) => {
      let client = clients.get(upstream)
      if (client === undefined) {
        client = new v1.AgentServiceClient(upstream, grpc.credentials.createInsecure()) as grpc.Client & v1.AgentServiceClient
        clients.set(upstream, client)
      }
      return client
    }
    /** Real master endpoint → this proxy's server for it (filled once the servers listen). */
    const proxyFor = new Map<string, string>()
    const rewriteLeader = (metadata: grpc.Metadata | undefined) => {
      const out = new grpc.Metadata()
      if (metadata === undefined) return out
      for (const [key, value] of Object.entries(metadata.getMap())) {
        if (reserved(key)) continue
        const text = typeof value === "string" ? value : value.toString("utf8")
        out.set(key, key === "berth-leader" ? (proxyFor.get(text) ?? text) : text)
      }
      return out
    }

    const handler = (upstream: string) => (call: grpc.ServerDuplexStream<v1.ConnectRequest, v1.ConnectResponse>) => {
      if (partitioned) {
        stats.refused++
        call.emit("error", unavailable(`testkit proxy: ${options.name} is partitioned from the masters`))
        return
      }
      stats.connections++
      const metadata = new grpc.Metadata()
      for (const [key, value] of Object.entries(call.metadata.getMap())) if (!reserved(key)) metadata.set(key, value)
      const up = clientFor(upstream).connect(metadata)
      let closed = false
      let inFlight = 0
      const connection: Connection = {
        close: (status) => {
          if (closed) return
          closed = true
          connections.delete(connection)
          pings -= inFlight
          inFlight = 0
          up.cancel()
          call.emit("error", status)
        }
      }
      connections.add(connection)
      const toMaster = (message: v1.ConnectRequest) => {
        if (!closed) up.write(message)
      }
      up.on("data", (message: v1.ConnectResponse) => {
        if (closed) return
        if (message.message?.$case === "pong") {
          pongs++
          if (inFlight > 0) {
            inFlight--
            pings--
          }
        }
        call.write(message)
      })
      up.on("error", (error: grpc.ServiceError) => {
        connection.close({ code: error.code, details: error.details, metadata: rewriteLeader(error.metadata) })
      })
      up.on("end", () => {
        if (closed) return
        closed = true
        connections.delete(connection)
        pings -= inFlight
        call.end()
      })
      call.on("data", (message: v1.ConnectRequest) => {
        if (closed) return
        const body = message.message
        if (body?.$case === "ping") {
          inFlight++
          pings++
        }
        if (body?.$case !== "statusUpdates" || faults === undefined) {
          if (body?.$case === "statusUpdates") stats.forwarded += body.value.updates.length
          return toMaster(message)
        }
        const rules = faults
        const kept: Array<v1.StatusUpdate> = []
        const copies: Array<v1.StatusUpdate> = []
        for (const update of body.value.updates) {
          if (decide(rules.drop, "drop")) {
            stats.dropped++
            options.log(`${options.name} proxy dropped status update ${describeUpdate(update)}`)
            continue
          }
          kept.push(update)
          if (decide(rules.duplicate, "duplicate")) {
            stats.duplicated++
            copies.push(update)
            options.log(`${options.name} proxy duplicated status update ${describeUpdate(update)}`)
          }
        }
        const send = () => {
          if (kept.length > 0) toMaster({ message: { $case: "statusUpdates", value: { updates: kept } } })
          if (copies.length > 0) toMaster({ message: { $case: "statusUpdates", value: { updates: copies } } })
          stats.forwarded += kept.length + copies.length
        }
        const delay = rules.delayMs ?? 0
        if (delay > 0 && kept.length > 0) {
          stats.delayed += kept.length
          const timer = setTimeout(() => {
            timers.delete(timer)
            send()
          }, delay)
          timers.add(timer)
        } else {
          send()
        }
      })
      call.on("end", () => {
        if (!closed) up.end()
      })
      call.on("cancelled", () => connection.close(unavailable("the agent went away")))
      call.on("error", () => connection.close(unavailable("the agent went away")))
    }

    const servers: Array<grpc.Server> = []
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const timer of timers) clearTimeout(timer)
        for (const connection of [...connections]) connection.close(unavailable("testkit proxy stopped"))
        for (const server of servers) server.forceShutdown()
        for (const client of clients.values()) client.close()
      })
    )
    const endpoints: Array<string> = []
    for (const master of options.masters) {
      const server = new grpc.Server()
      server.addService(v1.AgentServiceService, { connect: handler(master) })
      servers.push(server)
      const port = yield* Effect.callback<number>((resume) => {
        server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) =>
          resume(error === null ? Effect.succeed(port) : Effect.die(error)))
      })
      const endpoint = `127.0.0.1:${port}`
      endpoints.push(endpoint)
      proxyFor.set(master, endpoint)
    }

    return {
      endpoints,
      partitioned: () => partitioned,
      partition: Effect.sync(() => {
        if (partitioned) return
        partitioned = true
        options.log(`${options.name} partitioned from the masters`)
        for (const connection of [...connections]) {
          connection.close(unavailable(`testkit proxy: ${options.name} is partitioned from the masters`))
        }
      }),
      heal: Effect.sync(() => {
        if (!partitioned) return
        partitioned = false
        options.log(`${options.name} partition healed`)
      }),
      setUpdateFaults: (next) => {
        faults = next
        if (next?.seed !== undefined) rng = Random.make(next.seed)
        dropBudget = typeof next?.drop === "object" ? next.drop.next : 0
        duplicateBudget = typeof next?.duplicate === "object" ? next.duplicate.next : 0
      },
      stats: () => ({ ...stats }),
      pingsInFlight: () => Math.max(0, pings),
      pongs: () => pongs,
      connected: () => connections.size > 0
    } satisfies Link
  })

const checkRule = (field: string, rule: UpdateFaults["drop"]) => {
  if (rule === undefined) return undefined
  if (typeof rule === "number") return rule >= 0 && rule <= 1 ? undefined : `${field}: must be a probability in [0, 1] (got ${rule})`
  return Number.isInteger(rule.next) && rule.next >= 0 ? undefined : `${field}.next: must be an integer >= 0 (got ${rule.next})`
}

/** Checks update-fault rules; a bad one names its field and changes nothing. */
export const validate = (faults: UpdateFaults | undefined): Effect.Effect<void, InvalidOptions> => {
  if (faults === undefined) return Effect.void
  const problem = checkRule("statusUpdates.drop", faults.drop) ??
    checkRule("statusUpdates.duplicate", faults.duplicate) ??
    (faults.delayMs === undefined || (Number.isFinite(faults.delayMs) && faults.delayMs >= 0)
      ? undefined
      : `statusUpdates.delayMs: must be a number of milliseconds >= 0 (got ${faults.delayMs})`) ??
    (faults.seed === undefined || Number.isInteger(faults.seed) ? undefined : `statusUpdates.seed: must be an integer (got ${faults.seed})`)
  if (problem === undefined) return Effect.void
  const colon = problem.indexOf(": ")
  return Effect.fail(new InvalidOptions({ field: problem.slice(0, colon), rule: problem.slice(colon + 2) }))
}

/** The proxy-backed members of a `ClusterAgent`; without a link they fail with UnsupportedFault. */
export const agentFaults = (
  link: Link | undefined,
  backend: string,
  /** Why there is no link, for the error: the cluster speaks TLS, or was started with proxy: false. */
  noProxy?: "tls" | "proxy: false"
): Pick<ClusterAgent, "partition" | "heal" | "statusUpdates" | "link"> => {
  const without = (fault: string) =>
    Effect.fail(
      new UnsupportedFault({
        fault,
        backend,
        ...(noProxy === "tls"
          ? {
            reason: "it has no fault proxy (it was started with tls, which the proxy does not speak)",
            remedy: "start it without tls"
          }
          : noProxy === "proxy: false"
          ? { reason: "it has no fault proxy (it was started with proxy: false)", remedy: "start it without proxy: false" }
          : { reason: "it has no fault proxy (it was started with tls or proxy: false)", remedy: "start it without either" })
      })
    )
  return {
    partition: link === undefined ? without("partition") : link.partition,
    heal: link === undefined ? without("heal") : link.heal,
    statusUpdates: (faults) =>
      link === undefined
        ? without("status update faults")
        : Effect.andThen(validate(faults), Effect.sync(() => link.setUpdateFaults(isEmpty(faults) ? undefined : faults))),
    link: () => link?.stats()
  }
}

const isEmpty = (faults: UpdateFaults | undefined) =>
  faults === undefined || (faults.drop === undefined && faults.duplicate === undefined && (faults.delayMs ?? 0) === 0)

/** `cluster.faults`: the agents' faults applied to all of them. */
export const clusterFaults = (agents: ReadonlyArray<ClusterAgent>): ClusterFaults => ({
  statusUpdates: (faults) =>
    Effect.andThen(validate(faults), Effect.forEach(agents, (agent) => agent.statusUpdates(faults), { discard: true })),
  clear: Effect.forEach(agents, (agent) => Effect.andThen(agent.heal, agent.statusUpdates(undefined)), { discard: true }).pipe(
    Effect.catchTag("InvalidOptions", () => Effect.void)
  )
})
