import { Duration, Effect, Option, Result, Schedule, Schema, SchemaIssue } from "effect"
import { InvalidOptions } from "../SchedulerError.ts"
import type { SchedulerError } from "../SchedulerError.ts"
import type { Options } from "../SchedulerSession.ts"
import * as Transport from "./transport.ts"

/** Options with every default applied: what the session runs on. */
export interface Config {
  readonly master: string
  readonly framework: {
    readonly name: string
    readonly roles: ReadonlyArray<string>
    readonly principal: string
    readonly user: string
    readonly failoverTimeoutSeconds: number
    readonly frameworkId: string
  }
  readonly reconnect: Schedule.Schedule<unknown, SchedulerError>
  readonly heartbeatMissLimit: number
  readonly callTimeout: Duration.Duration
  /** TLS and credentials for every channel the session opens. */
  readonly transport: Transport.Transport
}

/** Mesos keeps a framework this long by default in Berth: long enough for a weekend outage. */
export const defaultFailoverTimeoutSeconds = 7 * 24 * 60 * 60

// Jitter (80-120 %) before the cap, so no wait exceeds 5 s; the jitter already spread the
// schedulers of a restarted master apart by the time they reach the cap.
export const defaultReconnect: Schedule.Schedule<unknown, SchedulerError> = Schedule.min([
  Schedule.exponential("100 millis", 2).pipe(Schedule.jittered),
  Schedule.spaced("5 seconds")
])

const defaultCallTimeout = Duration.seconds(30)

const hostPort = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})$/

const isHostPort = (value: string): boolean => {
  const match = hostPort.exec(value)
  if (match === null) return false
  const port = Number(match[1])
  return port >= 1 && port <= 65535
}

// Mesos' rules (docs/roles.md): "*" alone, or "/"-separated parts usable as directory names.
const isRoleName = (role: string): boolean =>
  role === "*" ||
  role.split("/").every((part) =>
    part !== "" && part !== "." && part !== ".." && !part.startsWith("-") && !/[\s\\*]/.test(part)
  )

const roleRule =
  `must be "*" or a role name: "/"-separated parts, each non-empty, not "." or "..", not starting with "-", ` +
  `without whitespace, "\\" or "*"`

const NonBlank = Schema.String.check(
  Schema.makeFilter((s: string) => s.trim() !== "" || "must not be empty")
)

const Role = Schema.String.check(Schema.makeFilter((s: string) => isRoleName(s) || roleRule))

const Roles = Schema.Array(Role).check(
  Schema.makeFilter((roles: ReadonlyArray<string>) => roles.length > 0 || "must list at least one role"),
  Schema.makeFilter((roles: ReadonlyArray<string>) => new Set(roles).size === roles.length || "must not repeat a role")
)

const OptionsSchema = Schema.Struct({
  master: Schema.String.check(
    Schema.makeFilter((s: string) =>
      s.split(",").every((m) => isHostPort(m.trim())) ||
      "must be \"host:port\" (or several, comma-separated, for HA) with ports from 1 to 65535"
    )
  ),
  framework: Schema.Struct({
    name: NonBlank,
    roles: Schema.optionalKey(Roles),
    principal: Schema.optionalKey(Schema.String),
    user: Schema.optionalKey(Schema.String),
    failoverTimeoutSeconds: Schema.optionalKey(
      Schema.Number.check(
        Schema.makeFilter((n: number) => (Number.isFinite(n) && n >= 0) || "must be a finite number of seconds >= 0")
      )
    ),
    frameworkId: Schema.optionalKey(NonBlank)
  }),
  heartbeatMissLimit: Schema.optionalKey(
    Schema.Number.check(
      Schema.makeFilter((n: number) => (Number.isInteger(n) && n >= 1) || "must be an integer >= 1")
    )
  )
})

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

const fieldPath = (path: ReadonlyArray<unknown>): string =>
  path.reduce<string>((acc, key) => {
    const segment = typeof key === "object" && key !== null && "key" in key ? (key as { key: unknown }).key : key
    return typeof segment === "number" ? `${acc}[${segment}]` : acc === "" ? String(segment) : `${acc}.${String(segment)}`
  }, "")

const invalid = (field: string, rule: string) => new InvalidOptions({ field, rule, message: `${field}: ${rule}` })

/** Checks the options (the first broken rule wins) and fills in the defaults. */
export const validate = (options: Options): Effect.Effect<Config, InvalidOptions> =>
  Effect.suspend(() => {
    const decoded = Schema.decodeUnknownResult(OptionsSchema)(options, { errors: "first" })
    if (Result.isFailure(decoded)) {
      const first = formatter(decoded.failure.issue).issues[0]
      return Effect.fail(invalid(fieldPath(first?.path ?? []), first?.message ?? "is invalid"))
    }
    const callTimeout = options.callTimeout === undefined
      ? Option.some(defaultCallTimeout)
      : Duration.fromInput(options.callTimeout)
    if (Option.isNone(callTimeout) || !Duration.isGreaterThan(callTimeout.value, Duration.zero)) {
      return Effect.fail(invalid("callTimeout", "must be a positive duration"))
    }
    const framework = options.framework
    const credentialsProblem = options.credentials === undefined ? undefined : Transport.credentialsProblem(options.credentials)
    if (credentialsProblem !== undefined) return Effect.fail(invalid(...credentialsProblem))
    const authenticated = options.credentials !== undefined && "principal" in options.credentials
      ? options.credentials.principal
      : undefined
    if (authenticated !== undefined && framework.principal !== undefined && framework.principal !== authenticated) {
      return Effect.fail(invalid("framework.principal", `must be the credentials' principal "${authenticated}" (or be left out)`))
    }
    const transport = Transport.make(options.tls, options.credentials)
    if (!("channel" in transport)) return Effect.fail(invalid(transport[0], transport[1]))
    return Effect.succeed({
      master: options.master,
      transport,
      framework: {
        name: framework.name,
        roles: framework.roles ?? ["*"],
        principal: framework.principal ?? authenticated ?? "",
        user: framework.user ?? "",
        failoverTimeoutSeconds: framework.failoverTimeoutSeconds ?? defaultFailoverTimeoutSeconds,
        frameworkId: framework.frameworkId ?? ""
      },
      reconnect: options.reconnect ?? defaultReconnect,
      heartbeatMissLimit: options.heartbeatMissLimit ?? 5,
      callTimeout: callTimeout.value
    })
  })
