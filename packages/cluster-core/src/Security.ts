/**
 * Transport security of the cluster core: the credentials and ACL file formats (Effect Schemas),
 * the master's TLS and authentication settings, and what a client (an agent, an operator tool,
 * the testkit) needs to speak to a secured master.
 *
 * @example
 * ```ts
 * import { Security } from "@berth/cluster-core"
 * import { v1 } from "@berth/proto"
 *
 * // An operator tool over mutual TLS, authenticating with a bearer token.
 * const client = new v1.OperatorServiceClient(
 *   "master.example:5050",
 *   Security.channelCredentials({ ca: "/etc/berth/ca.pem", cert: "/etc/berth/ops.pem", key: "/etc/berth/ops-key.pem" }),
 *   Security.clientOptions({ token: process.env.BERTH_TOKEN! })
 * )
 * ```
 */
import * as internal from "./internal/security.ts"

/** PEM files the master serves with; `caFile` turns on mutual TLS. */
export type ServerTls = internal.ServerTls
/** Whose calls must authenticate, by the service they call. */
export type Authentication = internal.Authentication
/** A token bucket: `perSecond` on average, up to `burst` at once. */
export type Rate = internal.Rate
/** A principal's kind: which service it may call (SchedulerService, AgentService, OperatorService). */
export type Kind = internal.Kind
/** Operator access in the ACLs: `read` (state, metrics, events) or `full` (also drain, gone, quota, weights, reserve). */
export type OperatorAccess = internal.OperatorAccess

/**
 * The credentials file:
 * `{ "credentials": [{ "principal": "marathon", "kind": "framework", "secret": "..." }, { "principal": "ops", "kind": "operator", "token": "..." }] }`.
 */
export const CredentialsFile = internal.CredentialsFile
export type CredentialsFile = internal.CredentialsFile

/**
 * The ACL file:
 * `{ "frameworks": [{ "principal": "marathon", "roles": ["web"], "reserveRoles": ["web"] }], "operators": [{ "principal": "ops", "access": "full" }] }`.
 */
export const AclsFile = internal.AclsFile
export type AclsFile = internal.AclsFile

/** "5/s" or "5/s,burst=20" as a {@link Rate}, or the rule it broke. */
export const parseRate = internal.parseRate

/** TLS for a client: each value a PEM file path or PEM text; `cert` with `key` for mutual TLS. */
export type ClientTls = internal.ClientTls
/** A principal and its secret (Basic), or a bearer token. */
export type ClientCredentials = internal.ClientCredentials

/** Channel credentials for a client (plaintext when `tls` is undefined). Throws an Error naming the bad field. */
export const channelCredentials = internal.channelCredentials
/** The `authorization` metadata value: `Basic base64(principal:secret)` or `Bearer <token>`. */
export const authorization = internal.authorization
/** A grpc-js client interceptor that sends the credentials with every call. */
export const authorizationInterceptor = internal.authorizationInterceptor
/** grpc-js client options carrying the credentials (`{}` when undefined). */
export const clientOptions = internal.clientOptions
