/** Certificates and the credentials file of a test cluster, for its TLS and authentication options. */
import type { Master, Security } from "@berth/cluster-core"
import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as fsSync from "node:fs"
import * as path from "node:path"
import * as Certificates from "../Certificates.ts"
import type { ClusterSecurity, Options } from "../TestCluster.ts"

const secret = () => randomBytes(18).toString("base64url")

/** Certificates and the credentials file for the options' TLS and authentication. */
export interface Secured {
  readonly master: Partial<Master.Config>
  readonly client: ClusterSecurity
  readonly authentication: Security.Authentication | undefined
  readonly certificates: Certificates.Certificates | undefined
}

export const secure = (workDir: string, options: Options): Effect.Effect<Secured, Certificates.CertificateError> =>
  Effect.gen(function*() {
    const dir = path.join(workDir, "security")
    const certificates = options.tls === undefined || options.tls === false
      ? undefined
      : yield* Certificates.generate(path.join(dir, "tls"))
    const authentication = options.authentication === undefined
      ? undefined
      : options.authentication === true
      ? { frameworks: true, operators: true, agents: true }
      : options.authentication === false
      ? { frameworks: false, operators: false, agents: false }
      : {
        frameworks: options.authentication.frameworks ?? true,
        operators: options.authentication.operators ?? true,
        agents: options.authentication.agents ?? true
      }
    const credentials = authentication === undefined && options.principals === undefined
      ? undefined
      : {
        framework: { principal: "framework", secret: secret() },
        operator: { principal: "operator", secret: secret() },
        agent: { principal: "agent", secret: secret() }
      }
    let credentialsFile: string | undefined
    if (credentials !== undefined) {
      credentialsFile = path.join(dir, "credentials.json")
      const file: Security.CredentialsFile = {
        credentials: [
          { ...credentials.framework, kind: "framework" },
          { ...credentials.operator, kind: "operator" },
          { ...credentials.agent, kind: "agent" },
          ...(options.principals ?? [])
        ]
      }
      yield* Effect.promise(async () => {
        await fs.mkdir(dir, { recursive: true })
        await fs.writeFile(credentialsFile!, JSON.stringify(file, null, 2), { mode: 0o600 })
      })
    }
    const mutual = options.tls === "mutual"
    const master: Partial<Master.Config> = {
      ...(certificates === undefined ? {} : {
        tls: { certFile: certificates.server.cert, keyFile: certificates.server.key, ...(mutual ? { caFile: certificates.ca } : {}) }
      }),
      ...(credentialsFile === undefined ? {} : { credentials: credentialsFile }),
      ...(authentication === undefined ? {} : { authentication }),
      ...(options.acls === undefined ? {} : { acls: options.acls })
    }
    const client: ClusterSecurity = {
      tls: certificates === undefined
        ? undefined
        : { ca: certificates.ca, ...(mutual ? { cert: certificates.client.cert, key: certificates.client.key } : {}) },
      credentials,
      certificates,
      credentialsFile
    }
    return { master, client, authentication, certificates }
  })


/**
 * The `berth master` and `berth agent` flags for a secured cluster (TLS material, credentials,
 * authentication, ACLs), for the backends that start `berth` commands. Secrets are written under
 * `workDir/security` with mode 0600; the ACL file with `aclMode` (a container may read it as
 * another user).
 */
export const commandLineFlags = (security: Secured, options: Options, workDir: string, aclMode: number) => {
  const master: Array<string> = []
  const agent: Array<string> = []
  const tls = security.master.tls
  if (tls !== undefined) {
    master.push("--tls-cert", tls.certFile, "--tls-key", tls.keyFile)
    if (tls.caFile !== undefined) master.push("--tls-ca", tls.caFile)
  }
  if (security.client.credentialsFile !== undefined) master.push("--credentials", security.client.credentialsFile)
  const auth = security.authentication
  if (auth !== undefined) {
    const kinds = (["frameworks", "operators", "agents"] as const).filter((k) => auth[k])
    master.push("--authenticate", kinds.length === 0 ? "none" : kinds.join(","))
  }
  if (options.acls !== undefined) {
    const file = path.join(workDir, "security", "acls.json")
    fsSync.mkdirSync(path.dirname(file), { recursive: true })
    fsSync.writeFileSync(file, JSON.stringify(options.acls, null, 2), { mode: aclMode })
    master.push("--acls", file)
  }
  const clientTls = security.client.tls
  if (clientTls !== undefined) {
    agent.push("--tls-ca", String(clientTls.ca))
    if (clientTls.cert !== undefined && clientTls.key !== undefined) agent.push("--tls-cert", String(clientTls.cert), "--tls-key", String(clientTls.key))
  }
  const agentCredentials = security.client.credentials?.agent
  if (agentCredentials !== undefined && auth?.agents !== false) {
    const file = path.join(workDir, "security", "agent-secret")
    fsSync.mkdirSync(path.dirname(file), { recursive: true })
    fsSync.writeFileSync(file, agentCredentials.secret, { mode: 0o600 })
    agent.push("--principal", agentCredentials.principal, "--secret-file", file)
  }
  return { master, agent }
}
