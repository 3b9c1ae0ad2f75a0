/**
 * Transport security for the daemons: TLS material from PEM files, the credentials and ACL files
 * (Effect Schemas, so a bad file is answered with the field and the rule), authentication of
 * every call from its `authorization` metadata, authorisation by principal, and the token
 * buckets that stop Subscribe and Revive storms.
 */
import * as grpc from "@grpc/grpc-js"
import type { v1 } from "@berth/proto"
import { Clock, Context, Effect, Result, Schema, SchemaIssue } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import { PermissionDenied, RateLimited, StartupError, Unauthenticated, type RequestError } from "../ClusterError.ts"
import * as Grpc from "./grpc.ts"

// ---------------------------------------------------------------- file formats

const ROLE = /^(\*|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$/
// A principal travels as "principal:secret" in Basic authentication and names reservations.
const PRINCIPAL = /^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$/

const rule = <A>(predicate: (a: A) => boolean, message: string) => Schema.makeFilter((a: A) => predicate(a) || message)

const Principal = Schema.String.check(
  rule((s: string) => PRINCIPAL.test(s), `must match ${PRINCIPAL.source} (letters, digits and _.@-, no ":")`)
)
const Secret = Schema.String.check(
  rule((s: string) => s.length > 0, "must not be empty"),
  rule((s: string) => !/[\r\n]/.test(s), "must be one line")
)
const Token = Schema.String.check(
  rule((s: string) => s.length > 0, "must not be empty"),
  rule((s: string) => /^[\x21-\x7e]+$/.test(s), "must be printable ASCII without spaces (it travels as `Bearer <token>`)")
)
const Role = Schema.String.check(rule((s: string) => ROLE.test(s), `must be "*" or match ${ROLE.source}`))
const Roles = Schema.Array(Role).check(
  rule((roles: ReadonlyArray<string>) => new Set(roles).size === roles.length, "must not repeat a role")
)

export const Kind = Schema.Literals(["framework", "agent", "operator"])
export type Kind = typeof Kind.Type

/** One principal of the credentials file: who it is, what it is, and how it proves it. */
export const CredentialEntry = Schema.Struct({
  principal: Principal,
  kind: Kind,
  secret: Schema.optionalKey(Secret),
  token: Schema.optionalKey(Token)
}).check(
  rule(
    (c: { readonly secret?: string; readonly token?: string }) => c.secret !== undefined || c.token !== undefined,
    "needs a secret (Basic authentication) or a token (Bearer), or both"
  )
)

/**
 * The credentials file (`--credentials`), in the spirit of Mesos's `--credentials`:
 * `{ "credentials": [{ "principal": "marathon", "kind": "framework", "secret": "..." }] }`.
 */
export const CredentialsFile = Schema.Struct({ credentials: Schema.Array(CredentialEntry) })
export type CredentialsFile = typeof CredentialsFile.Type

export const OperatorAccess = Schema.Literals(["read", "full"])
export type OperatorAccess = typeof OperatorAccess.Type

/**
 * The ACL file (`--acls`): which roles each framework principal may subscribe with and reserve
 * for (`reserveRoles` defaults to `roles`), and which principals are operators, with read-only
 * or full access.
 */
export const AclsFile = Schema.Struct({
  frameworks: Schema.optionalKey(Schema.Array(Schema.Struct({
    principal: Principal,
    roles: Roles,
    reserveRoles: Schema.optionalKey(Roles)
  }))),
  operators: Schema.optionalKey(Schema.Array(Schema.Struct({
    principal: Principal,
    access: OperatorAccess
  })))
})
export type AclsFile = typeof AclsFile.Type

// ---------------------------------------------------------------- configuration

/** PEM files the master serves gRPC with. With `caFile`, clients must present a certificate it signed. */
export interface ServerTls {
  readonly certFile: string
  readonly keyFile: string
  readonly caFile?: string | undefined
}

/** Whose calls must carry valid credentials, by the service they call. */
export interface Authentication {
  readonly frameworks: boolean
  readonly operators: boolean
  readonly agents: boolean
}

/** A token bucket: `perSecond` on average, up to `burst` at once. */
export interface Rate {
  readonly perSecond: number
  readonly burst: number
}

export interface Config {
  readonly tls?: ServerTls | undefined
  /** A JSON file's path, or its content already parsed. */
  readonly credentials?: string | CredentialsFile | undefined
  readonly acls?: string | AclsFile | undefined
  /** Missing keys default to on when credentials are given (off otherwise). */
  readonly authentication?: Partial<Authentication> | undefined
  /** Subscribe and Revive calls per principal (or per address for anonymous callers). */
  readonly subscribeRate?: Rate | undefined
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

const fieldPath = (path: ReadonlyArray<unknown>): string =>
  path.reduce<string>((acc, key) => {
    const segment = typeof key === "object" && key !== null && "key" in key ? (key as { key: unknown }).key : key
    return typeof segment === "number" ? `${acc}[${segment}]` : acc === "" ? String(segment) : `${acc}.${String(segment)}`
  }, "")

/** Decodes a file's JSON against its schema: the first broken rule, as `field: rule`, or the value. */
export const decode = <S extends Schema.ConstraintDecoder<unknown>>(schema: S, input: unknown): Result.Result<S["Type"], string> => {
  const decoded = Schema.decodeUnknownResult(schema)(input, { errors: "first", onExcessProperty: "error" })
  if (Result.isSuccess(decoded)) return Result.succeed(decoded.success)
  const first = formatter(decoded.failure.issue).issues[0]
  const field = fieldPath(first?.path ?? [])
  return Result.fail(`${field === "" ? "(top level)" : field}: ${first?.message ?? "is invalid"}`)
}

const readText = (path: string): Result.Result<string, string> => {
  try {
    return Result.succeed(fs.readFileSync(path, "utf8"))
  } catch (error) {
    return Result.fail(`cannot read: ${(error as Error).message}`)
  }
}

/** Reads and decodes a JSON file (or takes an inline value): the value, or "<file>: <field>: <rule>". */
export const loadFile = <S extends Schema.ConstraintDecoder<unknown>>(
  schema: S,
  source: string | S["Type"]
): Result.Result<S["Type"], string> => {
  if (typeof source !== "string") return Result.mapError(decode(schema, source), (problem) => `(inline): ${problem}`)
  const text = readText(source)
  if (Result.isFailure(text)) return Result.fail(`${source}: ${text.failure}`)
  let json: unknown
  try {
    json = JSON.parse(text.success)
  } catch (error) {
    return Result.fail(`${source}: is not valid JSON: ${(error as Error).message}`)
  }
  return Result.mapError(decode(schema, json), (problem) => `${source}: ${problem}`)
}

/** The rules a credentials file must keep beyond its schema: one entry per principal, one principal per token. */
const checkCredentials = (file: CredentialsFile): string | undefined => {
  const principals = new Map<string, number>()
  const tokens = new Map<string, number>()
  for (const [i, entry] of file.credentials.entries()) {
    const before = principals.get(entry.principal)
    if (before !== undefined) return `credentials[${i}].principal: "${entry.principal}" is already listed at credentials[${before}]`
    principals.set(entry.principal, i)
    if (entry.token !== undefined) {
      const other = tokens.get(entry.token)
      if (other !== undefined) return `credentials[${i}].token: is also the token of credentials[${other}]; a token names one principal`
      tokens.set(entry.token, i)
    }
  }
  return undefined
}

const checkAcls = (file: AclsFile, credentials: CredentialsFile | undefined): string | undefined => {
  const kinds = new Map(credentials?.credentials.map((c) => [c.principal, c.kind]) ?? [])
  for (const [section, entries, kind] of [
    ["frameworks", file.frameworks ?? [], "framework"],
    ["operators", file.operators ?? [], "operator"]
  ] as const) {
    const seen = new Map<string, number>()
    for (const [i, entry] of entries.entries()) {
      const before = seen.get(entry.principal)
      if (before !== undefined) return `${section}[${i}].principal: "${entry.principal}" is already listed at ${section}[${before}]`
      seen.set(entry.principal, i)
      const actual = kinds.get(entry.principal)
      if (actual !== undefined && actual !== kind) {
        return `${section}[${i}].principal: "${entry.principal}" is a${actual === "agent" ? "n" : ""} ${actual} principal in the credentials file, not a${kind === "operator" ? "n" : ""} ${kind}`
      }
    }
  }
  return undefined
}

export const checkRate = (rate: Rate): string | undefined =>
  !(Number.isFinite(rate.perSecond) && rate.perSecond > 0)
    ? `subscribeRate.perSecond: must be a finite number > 0 (got ${rate.perSecond})`
    : !(Number.isInteger(rate.burst) && rate.burst >= 1)
    ? `subscribeRate.burst: must be an integer >= 1 (got ${rate.burst})`
    : undefined

/** "5/s" or "5/s,burst=20" (the burst defaults to the rate, at least 1). */
export const parseRate = (text: string): Result.Result<Rate, string> => {
  const match = /^(\d+(?:\.\d+)?)\/s(?:,burst=(\d+))?$/.exec(text.trim())
  if (match === null) return Result.fail(`must be "<n>/s" or "<n>/s,burst=<m>", e.g. "2/s,burst=10"`)
  const perSecond = Number(match[1])
  const rate = { perSecond, burst: match[2] === undefined ? Math.max(1, Math.ceil(perSecond)) : Number(match[2]) }
  const problem = checkRate(rate)
  return problem === undefined ? Result.succeed(rate) : Result.fail(problem.replace(/^subscribeRate\.\w+: /, ""))
}

interface Pem {
  readonly text: string
}

const readPem = (field: string, path: string, what: "certificate" | "key" | "ca"): Result.Result<Pem, string> => {
  const text = readText(path)
  if (Result.isFailure(text)) return Result.fail(`${field} ${path}: ${text.failure}`)
  try {
    if (what === "key") crypto.createPrivateKey(text.success)
    else new crypto.X509Certificate(text.success)
  } catch (error) {
    return Result.fail(`${field} ${path}: is not a PEM ${what === "key" ? "private key" : "certificate"}: ${(error as Error).message}`)
  }
  return Result.succeed({ text: text.success })
}

/** Checks the TLS files (readable, PEM, key matching the certificate, not expired) and builds the credentials. */
export const serverTls = (tls: ServerTls, nowMs: number): Result.Result<grpc.ServerCredentials, string> => {
  const cert = readPem("tls.certFile", tls.certFile, "certificate")
  if (Result.isFailure(cert)) return Result.fail(cert.failure)
  const key = readPem("tls.keyFile", tls.keyFile, "key")
  if (Result.isFailure(key)) return Result.fail(key.failure)
  const x509 = new crypto.X509Certificate(cert.success.text)
  if (!x509.checkPrivateKey(crypto.createPrivateKey(key.success.text))) {
    return Result.fail(`tls.keyFile ${tls.keyFile}: is not the private key of the certificate in ${tls.certFile}`)
  }
  if (Date.parse(x509.validTo) < nowMs) return Result.fail(`tls.certFile ${tls.certFile}: the certificate expired on ${x509.validTo}`)
  let ca: Buffer | null = null
  if (tls.caFile !== undefined) {
    const read = readPem("tls.caFile", tls.caFile, "ca")
    if (Result.isFailure(read)) return Result.fail(read.failure)
    ca = Buffer.from(read.success.text)
  }
  return Result.succeed(grpc.ServerCredentials.createSsl(
    ca,
    [{ private_key: Buffer.from(key.success.text), cert_chain: Buffer.from(cert.success.text) }],
    ca !== null
  ))
}

// ---------------------------------------------------------------- callers

/** Who is calling: the authenticated principal (if any) and the peer address. */
export interface Caller {
  readonly principal: string | undefined
  readonly kind: Kind | undefined
  readonly peer: string
}

/** The caller of the request being handled; the master provides it to every guarded handler. */
export const Caller = Context.Reference<Caller>("@berth/cluster-core/Caller", {
  defaultValue: () => ({ principal: undefined, kind: undefined, peer: "" })
})

const sha256 = (text: string) => crypto.createHash("sha256").update(text, "utf8").digest()

/** The host part of a grpc-js peer ("127.0.0.1:5555", "[::1]:5555", "ipv4:..."). */
const peerHost = (peer: string) => peer.replace(/^ipv[46]:/, "").replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1")

const SCHEDULER = "berth.v1.SchedulerService"
const AGENT = "berth.v1.AgentService"
const OPERATOR = "berth.v1.OperatorService"
/** Operator calls any authenticated principal may make: where the leader is, whether it lives. */
const OPEN_OPERATOR_CALLS = new Set(["GetMaster", "GetHealth"])
const READ_OPERATOR_CALLS = new Set([
  "GetMetrics",
  "GetState",
  "GetAgents",
  "GetFrameworks",
  "GetTasks",
  "GetRoles",
  "WatchEvents",
  "GetQuota",
  "GetWeights"
])

const howToAuthenticate = "send the metadata `authorization: Basic base64(principal:secret)` or `authorization: Bearer <token>`"

interface FrameworkAcl {
  readonly roles: ReadonlySet<string>
  readonly reserveRoles: ReadonlySet<string>
}

export interface Security {
  /** TLS credentials for the gRPC server (plaintext when undefined). */
  readonly serverCredentials: grpc.ServerCredentials | undefined
  /** Authenticates and admits every call (installed only when a credentials file is given). */
  readonly interceptors: ReadonlyArray<grpc.ServerInterceptor>
  readonly authentication: Authentication
  /** Who made a call, from its metadata (already admitted by the interceptor). */
  readonly caller: (metadata: grpc.Metadata, peer: string) => Caller
  /**
   * Checks a Subscribe's principal and roles. Returns the principal to record (the authenticated
   * one fills an empty `frameworkInfo.principal`).
   */
  readonly authorizeSubscribe: (caller: Caller, info: v1.FrameworkInfo) => Result.Result<string, PermissionDenied>
  /** A scheduler call (or a failover) on a framework registered by another principal is refused. */
  readonly authorizeFramework: (caller: Caller, field: string, framework: v1.FrameworkInfo) => PermissionDenied | undefined
  /** RESERVE, UNRESERVE, CREATE and DESTROY only for roles the framework's principal may reserve for. */
  readonly authorizeOperations: (
    principal: string,
    offerRole: string,
    operations: ReadonlyArray<v1.Operation>
  ) => PermissionDenied | undefined
  /** Takes a token from the bucket of (call, key); a RateLimited when it is empty. */
  readonly limit: (call: "Subscribe" | "Revive", key: string) => Effect.Effect<RateLimited | undefined>
  /** The rate-limit key of a caller: its principal, or its address when anonymous. */
  readonly rateKey: (caller: Caller, claimedPrincipal: string) => string
}

interface Loaded {
  readonly serverCredentials: grpc.ServerCredentials | undefined
  readonly credentials: CredentialsFile | undefined
  readonly acls: AclsFile | undefined
  readonly authentication: Authentication
}

/**
 * Reads and checks every file of the security configuration (the CLI runs this before starting):
 * the loaded configuration, or one line naming the file, the field and the rule.
 */
export const load = (config: Config, nowMs: number): Result.Result<Loaded, string> => {
  let serverCredentials: grpc.ServerCredentials | undefined
  if (config.tls !== undefined) {
    const tls = serverTls(config.tls, nowMs)
    if (Result.isFailure(tls)) return Result.fail(tls.failure)
    serverCredentials = tls.success
  }
  let credentials: CredentialsFile | undefined
  if (config.credentials !== undefined) {
    const loaded = loadFile(CredentialsFile, config.credentials)
    if (Result.isFailure(loaded)) return Result.fail(`credentials file ${loaded.failure}`)
    const problem = checkCredentials(loaded.success)
    if (problem !== undefined) {
      return Result.fail(`credentials file ${typeof config.credentials === "string" ? config.credentials : "(inline)"}: ${problem}`)
    }
    credentials = loaded.success
  }
  let acls: AclsFile | undefined
  if (config.acls !== undefined) {
    const loaded = loadFile(AclsFile, config.acls)
    if (Result.isFailure(loaded)) return Result.fail(`ACL file ${loaded.failure}`)
    const problem = checkAcls(loaded.success, credentials)
    if (problem !== undefined) return Result.fail(`ACL file ${typeof config.acls === "string" ? config.acls : "(inline)"}: ${problem}`)
    acls = loaded.success
  }
  const on = credentials !== undefined
  const authentication: Authentication = {
    frameworks: config.authentication?.frameworks ?? on,
    operators: config.authentication?.operators ?? on,
    agents: config.authentication?.agents ?? on
  }
  for (const [key, kind] of [["frameworks", "framework"], ["operators", "operator"], ["agents", "agent"]] as const) {
    if (!authentication[key]) continue
    if (credentials === undefined) return Result.fail(`authentication.${key}: needs a credentials file listing the principals`)
    if (!credentials.credentials.some((c) => c.kind === kind)) {
      return Result.fail(
        `authentication.${key}: is on${config.authentication?.[key] === undefined ? " (the default with a credentials file)" : ""} ` +
          `but the credentials file lists no principal of kind "${kind}": add one, or turn authentication of ${key} off`
      )
    }
  }
  if (config.subscribeRate !== undefined) {
    const problem = checkRate(config.subscribeRate)
    if (problem !== undefined) return Result.fail(problem)
  }
  return Result.succeed({ serverCredentials, credentials, acls, authentication })
}

/**
 * Loads and checks the security configuration; a bad file fails with the file and the problem.
 * `onRefused` hears of every call the interceptor refuses (for the daemon's log).
 */
export const make = (
  config: Config,
  component: string,
  onRefused: (call: string, peer: string, error: RequestError) => void = () => {}
): Effect.Effect<Security, StartupError> =>
  Effect.gen(function*() {
    const loaded = load(config, yield* Clock.currentTimeMillis)
    if (Result.isFailure(loaded)) return yield* Effect.fail(new StartupError({ component, reason: loaded.failure }))
    const { serverCredentials, credentials, acls, authentication } = loaded.success

    // Secrets are kept as SHA-256 digests: equal length, so they compare in constant time.
    const byPrincipal = new Map(
      (credentials?.credentials ?? []).map((c) => [c.principal, { kind: c.kind, secret: c.secret === undefined ? undefined : sha256(c.secret) }])
    )
    const byToken = new Map(
      (credentials?.credentials ?? []).flatMap((c) => c.token === undefined ? [] : [[sha256(c.token).toString("hex"), c] as const])
    )
    const decoy = sha256("decoy")

    /** The principal that authenticated, undefined for a call without credentials, or why not. */
    const authenticate = (metadata: grpc.Metadata): Result.Result<{ principal: string; kind: Kind } | undefined, Unauthenticated> => {
      const values = metadata.get("authorization")
      if (values.length === 0) return Result.succeed(undefined)
      if (values.length > 1) return Result.fail(new Unauthenticated({ reason: "authorization: send exactly one authorization header" }))
      const header = String(values[0]).trim()
      const space = header.indexOf(" ")
      const scheme = space < 0 ? header : header.slice(0, space)
      const value = space < 0 ? "" : header.slice(space + 1).trim()
      const invalid = Result.fail(new Unauthenticated({ reason: `authorization: invalid credentials (${scheme.toLowerCase()})` }))
      switch (scheme.toLowerCase()) {
        case "basic": {
          const decoded = Buffer.from(value, "base64").toString("utf8")
          const colon = decoded.indexOf(":")
          if (colon <= 0) return Result.fail(new Unauthenticated({ reason: "authorization: Basic credentials must be base64(principal:secret)" }))
          const principal = decoded.slice(0, colon)
          const entry = byPrincipal.get(principal)
          // Compare even for an unknown principal, so timing does not tell which principals exist.
          const equal = crypto.timingSafeEqual(sha256(decoded.slice(colon + 1)), entry?.secret ?? decoy)
          return equal && entry?.secret !== undefined ? Result.succeed({ principal, kind: entry.kind }) : invalid
        }
        case "bearer": {
          const entry = value === "" ? undefined : byToken.get(sha256(value).toString("hex"))
          return entry === undefined ? invalid : Result.succeed({ principal: entry.principal, kind: entry.kind })
        }
        default:
          return Result.fail(new Unauthenticated({ reason: `authorization: unsupported scheme "${scheme}"; ${howToAuthenticate}` }))
      }
    }

    const frameworkAcls = acls === undefined ? undefined : new Map(
      (acls.frameworks ?? []).map((f): [string, FrameworkAcl] => [
        f.principal,
        { roles: new Set(f.roles), reserveRoles: new Set(f.reserveRoles ?? f.roles) }
      ])
    )
    const operatorAcls = acls === undefined ? undefined : new Map((acls.operators ?? []).map((o) => [o.principal, o.access]))

    const kindName = (kind: Kind) => (kind === "framework" ? "a framework" : kind === "agent" ? "an agent" : "an operator")

    /** Which calls need which kind of principal; undefined: admitted. */
    const admit = (path: string, metadata: grpc.Metadata): RequestError | undefined => {
      const [, service = "", method = ""] = path.split("/")
      const identity = authenticate(metadata)
      if (Result.isFailure(identity)) return identity.failure
      const who = identity.success
      const required = service === SCHEDULER
        ? authentication.frameworks
        : service === OPERATOR
        ? authentication.operators
        : service === AGENT
        ? authentication.agents
        : false
      if (who === undefined) {
        return required ? new Unauthenticated({ reason: `${method}: authentication is required; ${howToAuthenticate}` }) : undefined
      }
      const denied = (rule: string) => new PermissionDenied({ principal: who.principal, field: method, rule })
      switch (service) {
        case SCHEDULER:
          return who.kind === "framework"
            ? undefined
            : denied(`principal "${who.principal}" is ${kindName(who.kind)} principal; scheduler calls need a framework principal`)
        case AGENT:
          return who.kind === "agent"
            ? undefined
            : denied(`principal "${who.principal}" is ${kindName(who.kind)} principal; agents must authenticate as an agent principal`)
        case OPERATOR: {
          if (OPEN_OPERATOR_CALLS.has(method)) return undefined
          const needs = READ_OPERATOR_CALLS.has(method) ? "read" : "full"
          if (who.kind !== "operator") {
            return denied(`principal "${who.principal}" is ${kindName(who.kind)} principal; ${method} is an operator call (needs an operator principal)`)
          }
          const access = operatorAcls === undefined ? "full" : operatorAcls.get(who.principal)
          if (access === undefined) return denied(`operator principal "${who.principal}" is not listed in the ACLs' operators`)
          if (needs === "full" && access !== "full") {
            return denied(`operator principal "${who.principal}" has read access only; ${method} needs access "full"`)
          }
          return undefined
        }
        default:
          return undefined
      }
    }

    const caller = (metadata: grpc.Metadata, peer: string): Caller => {
      const identity = authenticate(metadata)
      const who = Result.isSuccess(identity) ? identity.success : undefined
      return { principal: who?.principal, kind: who?.kind, peer }
    }

    const authorizeSubscribe = (caller: Caller, info: v1.FrameworkInfo): Result.Result<string, PermissionDenied> => {
      const claimed = info.principal
      const denied = (principal: string, field: string, rule: string) => Result.fail(new PermissionDenied({ principal, field, rule }))
      let principal = claimed
      if (caller.principal !== undefined) {
        if (claimed !== "" && claimed !== caller.principal) {
          return denied(caller.principal, "frameworkInfo.principal", `"${claimed}" is not the authenticated principal "${caller.principal}"`)
        }
        principal = caller.principal
      }
      if (frameworkAcls === undefined) return Result.succeed(principal)
      if (principal === "") return denied("", "frameworkInfo.principal", "is required: the master's ACLs authorise roles by principal")
      const acl = frameworkAcls.get(principal)
      if (acl === undefined) {
        return denied(principal, "frameworkInfo.principal", `principal "${principal}" is not listed in the ACLs' frameworks, so it may not subscribe`)
      }
      const allowed = [...acl.roles].join(", ") || "none"
      if (info.roles.length === 0 && !acl.roles.has("*")) {
        return denied(principal, "frameworkInfo.roles", `no roles means role "*", which principal "${principal}" may not use (its roles: ${allowed})`)
      }
      for (const [i, role] of info.roles.entries()) {
        if (!acl.roles.has(role)) {
          return denied(principal, `frameworkInfo.roles[${i}]`, `principal "${principal}" may not subscribe with role "${role}" (its roles: ${allowed})`)
        }
      }
      return Result.succeed(principal)
    }

    const authorizeFramework = (caller: Caller, field: string, framework: v1.FrameworkInfo): PermissionDenied | undefined =>
      caller.principal === undefined || framework.principal === "" || framework.principal === caller.principal
        ? undefined
        : new PermissionDenied({
          principal: caller.principal,
          field,
          rule: `framework ${framework.frameworkId} belongs to principal "${framework.principal}", not "${caller.principal}"`
        })

    const verbs = { reserve: "reserve resources", unreserve: "unreserve resources", create: "create volumes", destroy: "destroy volumes" } as const

    const authorizeOperations = (
      principal: string,
      offerRole: string,
      operations: ReadonlyArray<v1.Operation>
    ): PermissionDenied | undefined => {
      if (frameworkAcls === undefined) return undefined
      const acl = frameworkAcls.get(principal)
      for (const [i, operation] of operations.entries()) {
        const kind = operation.kind
        if (kind === undefined || kind.$case === "launch" || kind.$case === "launchGroup") continue
        const resources = kind.$case === "reserve" || kind.$case === "unreserve" ? kind.value.resources : kind.value.volumes
        const list = kind.$case === "reserve" || kind.$case === "unreserve" ? "resources" : "volumes"
        for (const [j, resource] of resources.entries()) {
          const last = resource.reservations.length - 1
          const role = last < 0 ? offerRole : resource.reservations[last]!.role
          if (acl?.reserveRoles.has(role) === true) continue
          const field = `operations[${i}].${kind.$case}.${list}[${j}]${last < 0 ? "" : `.reservations[${last}].role`}`
          const allowed = [...(acl?.reserveRoles ?? [])].join(", ") || "none"
          return new PermissionDenied({
            principal,
            field,
            rule: principal === ""
              ? `the framework has no principal, and the master's ACLs authorise ${verbs[kind.$case]} by principal`
              : `principal "${principal}" may not ${verbs[kind.$case]} for role "${role}" (its reserveRoles: ${allowed})`
          })
        }
      }
      return undefined
    }

    // Token buckets per (call, key); full buckets are forgotten so the map stays small.
    const buckets = new Map<string, { tokens: number; atMs: number }>()
    const rate = config.subscribeRate
    const limitText = rate === undefined ? "" : `${rate.perSecond}/s (burst ${rate.burst})`
    const limit = (call: "Subscribe" | "Revive", key: string): Effect.Effect<RateLimited | undefined> =>
      rate === undefined ? Effect.succeed(undefined) : Effect.map(Clock.currentTimeMillis, (nowMs) => {
        const id = `${call}\u0000${key}`
        const bucket = buckets.get(id) ?? { tokens: rate.burst, atMs: nowMs }
        bucket.tokens = Math.min(rate.burst, bucket.tokens + ((nowMs - bucket.atMs) / 1000) * rate.perSecond)
        bucket.atMs = nowMs
        if (buckets.size > 10_000) {
          for (const [k, b] of buckets) if (b.tokens + ((nowMs - b.atMs) / 1000) * rate.perSecond >= rate.burst) buckets.delete(k)
        }
        if (bucket.tokens >= 1) {
          bucket.tokens -= 1
          buckets.set(id, bucket)
          return undefined
        }
        buckets.set(id, bucket)
        const retryAfterMs = Math.max(1, Math.ceil(((1 - bucket.tokens) / rate.perSecond) * 1000))
        return new RateLimited({ call, key, limit: limitText, retryAfterMs })
      })

    const rateKey = (caller: Caller, claimedPrincipal: string) =>
      caller.principal !== undefined
        ? `principal "${caller.principal}"`
        : claimedPrincipal !== ""
        ? `principal "${claimedPrincipal}" (unauthenticated) at ${peerHost(caller.peer)}`
        : `address ${peerHost(caller.peer)}`

    return {
      serverCredentials,
      interceptors: credentials === undefined ? [] : [
        Grpc.admission((path, metadata, peer) => {
          const refused = admit(path, metadata)
          if (refused !== undefined) onRefused(path, peer, refused)
          return refused
        })
      ],
      authentication,
      caller,
      authorizeSubscribe,
      authorizeFramework,
      authorizeOperations,
      limit,
      rateKey
    } satisfies Security
  })

// ---------------------------------------------------------------- clients

/** TLS for a client: each a PEM file path or PEM text. `cert` and `key` go together (mutual TLS). */
export interface ClientTls {
  /** The CA that signed the server's certificate (default: the system's roots). */
  readonly ca?: string | undefined
  readonly cert?: string | undefined
  readonly key?: string | undefined
}

/** How a client proves who it is: a principal and its secret (Basic), or a bearer token. */
export type ClientCredentials =
  | { readonly principal: string; readonly secret: string }
  | { readonly token: string }

const pemOrFile = (field: string, value: string): Buffer => {
  if (value.includes("-----BEGIN ")) return Buffer.from(value)
  try {
    return fs.readFileSync(value)
  } catch (error) {
    throw new Error(`${field}: cannot read ${value}: ${(error as Error).message}`)
  }
}

/** Channel credentials for `tls` (plaintext when undefined). Throws an Error naming the field. */
export const channelCredentials = (tls: ClientTls | undefined): grpc.ChannelCredentials => {
  if (tls === undefined) return grpc.credentials.createInsecure()
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new Error(`tls.${tls.cert === undefined ? "cert" : "key"}: is required with tls.${tls.cert === undefined ? "key" : "cert"} (a client certificate needs its key)`)
  }
  return grpc.credentials.createSsl(
    tls.ca === undefined ? null : pemOrFile("tls.ca", tls.ca),
    tls.key === undefined ? null : pemOrFile("tls.key", tls.key),
    tls.cert === undefined ? null : pemOrFile("tls.cert", tls.cert)
  )
}

/** The `authorization` metadata value for `credentials`. */
export const authorization = (credentials: ClientCredentials): string =>
  "token" in credentials
    ? `Bearer ${credentials.token}`
    : `Basic ${Buffer.from(`${credentials.principal}:${credentials.secret}`, "utf8").toString("base64")}`

/**
 * A client interceptor adding the `authorization` metadata to every call. (grpc-js refuses call
 * credentials on plaintext channels; an interceptor works on both.)
 */
export const authorizationInterceptor = (credentials: ClientCredentials): grpc.Interceptor => {
  const value = authorization(credentials)
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        metadata.set("authorization", value)
        next(metadata, listener)
      }
    })
}

/** Client options carrying `credentials` (none when undefined), to merge into a client's options. */
export const clientOptions = (credentials: ClientCredentials | undefined): grpc.ClientOptions =>
  credentials === undefined ? {} : { interceptors: [authorizationInterceptor(credentials)] }
