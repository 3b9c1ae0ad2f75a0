import type * as grpc from "@grpc/grpc-js"
import { Result } from "effect"
import * as crypto from "node:crypto"
import { PermissionDenied, Unauthenticated } from "../../ClusterError.ts"
import * as Grpc from "../grpc.ts"
import { CredentialsFile, loadFile, serverTls } from "../security.ts"

/**
 * Security of the agent's own gRPC API (the operator file API and the executor API):
 *
 * - TLS with the agent's certificate (`certFile`, `keyFile`); `caFile` is the CA that signed it,
 *   handed to custom executors (`BERTH_AGENT_CA_FILE`) so that they can verify the agent.
 * - With a credentials file (the master's format), every `AgentOperatorService` call must carry an
 *   operator principal's credentials (`authorization: Basic base64(principal:secret)` or
 *   `Bearer <token>`); executors authenticate with the token the agent gave each of them.
 */
export interface Config {
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly caFile?: string | undefined } | undefined
  /** A JSON file's path, or its content already parsed. */
  readonly credentials?: string | CredentialsFile | undefined
}

export interface ApiSecurity {
  readonly serverCredentials: grpc.ServerCredentials | undefined
  readonly interceptors: ReadonlyArray<grpc.ServerInterceptor>
  /** Whether executor calls must carry their executor's token. */
  readonly authenticateExecutors: boolean
  /** The CA custom executors trust the agent with, when it serves TLS. */
  readonly caFile: string | undefined
}

const OPERATOR_SERVICE = "berth.v1.AgentOperatorService"
const sha256 = (text: string) => crypto.createHash("sha256").update(text, "utf8").digest()
const howTo = "send the metadata `authorization: Basic base64(principal:secret)` or `authorization: Bearer <token>` of an operator principal"

/** Loads the configuration: the security, or one line naming the file, the field and the rule. */
export const make = (config: Config, nowMs: number): Result.Result<ApiSecurity, string> => {
  let serverCredentials: grpc.ServerCredentials | undefined
  if (config.tls !== undefined) {
    const tls = serverTls({ certFile: config.tls.certFile, keyFile: config.tls.keyFile }, nowMs)
    if (Result.isFailure(tls)) return Result.fail(tls.failure.replace(/^tls\./, "apiTls."))
    serverCredentials = tls.success
  }
  if (config.credentials === undefined) {
    return Result.succeed({ serverCredentials, interceptors: [], authenticateExecutors: false, caFile: config.tls?.caFile })
  }
  const loaded = loadFile(CredentialsFile, config.credentials)
  if (Result.isFailure(loaded)) return Result.fail(`apiCredentials: credentials file ${loaded.failure}`)
  const operators = loaded.success.credentials.filter((c) => c.kind === "operator")
  if (operators.length === 0) {
    return Result.fail(`apiCredentials: the credentials file lists no principal of kind "operator": nobody could read sandbox files`)
  }
  // Secrets are kept as SHA-256 digests: equal length, so they compare in constant time.
  const byPrincipal = new Map(loaded.success.credentials.map((c) => [c.principal, { kind: c.kind, secret: c.secret === undefined ? undefined : sha256(c.secret) }]))
  const byToken = new Map(loaded.success.credentials.flatMap((c) => (c.token === undefined ? [] : [[sha256(c.token).toString("hex"), c] as const])))
  const decoy = sha256("decoy")

  const check = (path: string, metadata: grpc.Metadata) => {
    const [, service = "", method = ""] = path.split("/")
    // Executor calls are checked by their handlers, which know the executor the token belongs to.
    if (service !== OPERATOR_SERVICE) return undefined
    const values = metadata.get("authorization")
    if (values.length === 0) return new Unauthenticated({ reason: `${method}: authentication is required; ${howTo}` })
    if (values.length > 1) return new Unauthenticated({ reason: "authorization: send exactly one authorization header" })
    const header = String(values[0]).trim()
    const space = header.indexOf(" ")
    const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase()
    const value = space < 0 ? "" : header.slice(space + 1).trim()
    let who: { principal: string; kind: string } | undefined
    if (scheme === "basic") {
      const decoded = Buffer.from(value, "base64").toString("utf8")
      const colon = decoded.indexOf(":")
      const entry = colon <= 0 ? undefined : byPrincipal.get(decoded.slice(0, colon))
      const equal = crypto.timingSafeEqual(sha256(colon <= 0 ? "" : decoded.slice(colon + 1)), entry?.secret ?? decoy)
      if (equal && entry?.secret !== undefined) who = { principal: decoded.slice(0, colon), kind: entry.kind }
    } else if (scheme === "bearer") {
      const entry = value === "" ? undefined : byToken.get(sha256(value).toString("hex"))
      if (entry !== undefined) who = { principal: entry.principal, kind: entry.kind }
    } else {
      return new Unauthenticated({ reason: `authorization: unsupported scheme "${scheme}"; ${howTo}` })
    }
    if (who === undefined) return new Unauthenticated({ reason: `authorization: invalid credentials (${scheme})` })
    if (who.kind !== "operator") {
      return new PermissionDenied({ principal: who.principal, field: method, rule: `principal "${who.principal}" is not an operator principal; the agent's file API needs one` })
    }
    return undefined
  }
  return Result.succeed({ serverCredentials, interceptors: [Grpc.admission(check)], authenticateExecutors: true, caFile: config.tls?.caFile })
}
