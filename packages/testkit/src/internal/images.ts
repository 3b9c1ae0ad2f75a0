/**
 * The image of the containers backend, built locally (no registry is reachable in CI):
 * `berth-base:bookworm` (the offline debootstrap image of scripts/ci/docker.sh) plus the Node
 * binary running the tests and the `etcd` binary of this machine. The built packages are not
 * copied in: each container mounts the repository read-only at its own path, so a test always
 * runs the current build and no rebuild is needed when the code changes.
 *
 * The tag is a hash of what goes in (`berth-testkit:<sha256 prefix>`), so the image is built
 * once per Node/etcd version and then reused; building a new one removes the older
 * `berth-testkit` images (all labelled `berth.testkit.image`), so one is kept per machine.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { ContainerRuntimeClient } from "testcontainers"

export const REPOSITORY = "berth-testkit"
export const IMAGE_LABEL = "berth.testkit.image"

export interface ImageInputs {
  /** The base image (default `BERTH_DOCKER_IMAGE` or berth-base:bookworm). */
  readonly base: string
  readonly node: string
  readonly etcd: string
}

export const defaultInputs = (): ImageInputs => ({
  base: process.env.BERTH_DOCKER_IMAGE ?? "berth-base:bookworm",
  node: fs.realpathSync(process.execPath),
  etcd: process.env.BERTH_ETCD_BINARY ?? "/usr/bin/etcd"
})

const dockerfile = (inputs: ImageInputs) =>
  [
    `FROM ${inputs.base}`,
    "COPY node /usr/local/bin/node",
    "COPY etcd /usr/local/bin/etcd",
    "ENV HOME=/tmp"
  ].join("\n") + "\n"

/** Hashes already computed in this process, by the binaries' paths, sizes and mtimes. */
const hashes = new Map<string, string>()

/** Hash of the Dockerfile and the two binaries: the image's tag. */
const hashOf = (inputs: ImageInputs): string => {
  const key = JSON.stringify([inputs, ...[inputs.node, inputs.etcd].map((f) => {
    const stat = fs.statSync(f)
    return [stat.size, stat.mtimeMs]
  })])
  const known = hashes.get(key)
  if (known !== undefined) return known
  const hash = createHash("sha256").update(dockerfile(inputs))
  for (const file of [inputs.node, inputs.etcd]) hash.update(fs.readFileSync(file))
  const tag = hash.digest("hex").slice(0, 16)
  hashes.set(key, tag)
  return tag
}

/** Why the image cannot be built, or undefined. */
const missing = (inputs: ImageInputs): string | undefined => {
  for (const [what, file] of [["node", inputs.node], ["etcd", inputs.etcd]] as const) {
    try {
      fs.accessSync(file, fs.constants.X_OK)
    } catch {
      return `the ${what} binary ${file} is missing or not executable${what === "etcd" ? " (apt-get install etcd-server, or set BERTH_ETCD_BINARY)" : ""}`
    }
  }
  return undefined
}

const exists = (client: ContainerRuntimeClient, name: string) =>
  client.container.dockerode.getImage(name).inspect().then(() => true, () => false)

/** One build at a time in this process (several clusters starting at once share it). */
let building: Promise<string> | undefined

/**
 * The image's name, built first if it is not there. Fails with a message saying what is missing
 * (the base image, a binary) or why the build failed.
 */
export const ensure = (client: ContainerRuntimeClient, inputs: ImageInputs = defaultInputs()): Promise<string> => {
  const run = async () => {
    const problem = missing(inputs)
    if (problem !== undefined) throw new Error(problem)
    const name = `${REPOSITORY}:${hashOf(inputs)}`
    if (await exists(client, name)) return name
    if (!(await exists(client, inputs.base))) {
      throw new Error(`the base image ${inputs.base} is missing: build it with scripts/ci/docker.sh`)
    }
    const context = fs.mkdtempSync(path.join(os.tmpdir(), "berth-image-"))
    try {
      fs.writeFileSync(path.join(context, "Dockerfile"), dockerfile(inputs))
      // Hard links when possible: the context is read once by the build, no need to copy 120 MB.
      for (const [name, file] of [["node", inputs.node], ["etcd", inputs.etcd]] as const) {
        try {
          fs.linkSync(file, path.join(context, name))
        } catch {
          fs.copyFileSync(file, path.join(context, name))
        }
      }
      const docker = client.container.dockerode
      const stream = await docker.buildImage({ context, src: ["Dockerfile", "node", "etcd"] }, {
        t: name,
        labels: { [IMAGE_LABEL]: "true" }
      })
      const output = await new Promise<Array<{ error?: string; stream?: string }>>((resolve, reject) =>
        docker.modem.followProgress(stream, (error, result) => (error === null ? resolve(result) : reject(error)))
      )
      const failed = output.find((line) => line.error !== undefined)
      if (failed !== undefined || !(await exists(client, name))) {
        throw new Error(`building ${name} failed: ${failed?.error ?? output.map((l) => l.stream ?? "").join("").slice(-2000)}`)
      }
      // The older images of this repository are superseded: one is kept per machine.
      const older = await docker.listImages({ filters: { label: [IMAGE_LABEL] } })
      for (const image of older) {
        for (const tag of image.RepoTags ?? []) {
          if (tag.startsWith(`${REPOSITORY}:`) && tag !== name) await docker.getImage(tag).remove().catch(() => undefined)
        }
      }
      return name
    } finally {
      fs.rmSync(context, { recursive: true, force: true })
    }
  }
  if (building === undefined) {
    building = run().finally(() => {
      building = undefined
    })
  }
  return building
}
