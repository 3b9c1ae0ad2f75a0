/**
 * Throwaway certificates for TLS tests: a CA, a server certificate for `localhost` and
 * `127.0.0.1`, and a client certificate, all valid for one day, generated with the machine's
 * `openssl` (Node cannot sign certificates by itself). `TestCluster.make({ tls: true })` uses it;
 * tests can call it too, e.g. for a second, foreign CA.
 *
 * @example
 * ```ts
 * const certs = yield* Certificates.generate(dir)
 * // certs.ca, certs.server.cert, certs.server.key, certs.client.cert, certs.client.key: PEM file paths
 * ```
 */
import { Effect, Schema } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/** `openssl` is missing or refused to make a certificate. */
export class CertificateError extends Schema.TaggedError<CertificateError>()("CertificateError", {
  step: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `generating test certificates (${this.step}): ${this.reason}`
  }
}

/** A certificate and its private key (PEM file paths). */
export interface KeyPair {
  readonly cert: string
  readonly key: string
}

export interface Certificates {
  /** The directory holding every file. */
  readonly dir: string
  /** The CA certificate (PEM file path): what clients trust and, for mutual TLS, the master too. */
  readonly ca: string
  /** Signed by the CA for DNS:localhost and IP:127.0.0.1 (server authentication). */
  readonly server: KeyPair
  /** Signed by the CA (client authentication), for mutual TLS. */
  readonly client: KeyPair
}

const openssl = (step: string, args: ReadonlyArray<string>, cwd: string) =>
  Effect.callback<void, CertificateError>((resume) => {
    execFile("openssl", [...args], { cwd, timeout: 20_000 }, (error, _stdout, stderr) => {
      if (error === null) return resume(Effect.void)
      const reason = (error as NodeJS.ErrnoException).code === "ENOENT"
        ? "the openssl command was not found on PATH (TLS tests need it)"
        : (stderr.trim().split("\n").at(-1) ?? error.message)
      resume(Effect.fail(new CertificateError({ step, reason })))
    })
  })

const write = (file: string, text: string) =>
  Effect.tryPromise({
    try: () => fs.writeFile(file, text),
    catch: (error) => new CertificateError({ step: `write ${file}`, reason: (error as Error).message })
  })

// P-256 keys: quick to make, and every TLS stack speaks them.
const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

const leaf = (dir: string, name: string, commonName: string, extensions: string, caName: string) =>
  Effect.gen(function*() {
    yield* write(path.join(dir, `${name}.ext`), extensions)
    yield* openssl(`${name} key and request`, ["req", ...newKey, "-keyout", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", `/CN=${commonName}`], dir)
    yield* openssl(`${name} certificate`, [
      "x509", "-req", "-in", `${name}.csr`, "-CA", `${caName}.pem`, "-CAkey", `${caName}-key.pem`, "-CAcreateserial",
      "-out", `${name}.pem`, "-days", "1", "-sha256", "-extfile", `${name}.ext`
    ], dir)
    return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}-key.pem`) }
  })

/**
 * Generates a CA and a server and a client certificate it signed into `dir` (created if needed).
 * `name` prefixes the files and the CA's common name, so one directory can hold several CAs.
 */
export const generate = (dir: string, name = "berth-test"): Effect.Effect<Certificates, CertificateError> =>
  Effect.gen(function*() {
    yield* Effect.tryPromise({
      try: () => fs.mkdir(dir, { recursive: true }),
      catch: (error) => new CertificateError({ step: `mkdir ${dir}`, reason: (error as Error).message })
    })
    const caName = `${name}-ca`
    yield* openssl("CA", [
      "req", "-x509", ...newKey, "-keyout", `${caName}-key.pem`, "-out", `${caName}.pem`, "-days", "1", "-sha256",
      "-subj", `/CN=${caName}`,
      "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign"
    ], dir)
    const server = yield* leaf(
      dir,
      `${name}-server`,
      "localhost",
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n",
      caName
    )
    const client = yield* leaf(
      dir,
      `${name}-client`,
      `${name}-client`,
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
      caName
    )
    return { dir, ca: path.join(dir, `${caName}.pem`), server, client }
  })
