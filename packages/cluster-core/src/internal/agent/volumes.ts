import { Resources, v1 } from "@berth/proto"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/**
 * Persistent volumes on the agent's disk (invariant 4): a volume is a directory under the work
 * dir, keyed by role and persistence id, created by CREATE and removed only by DESTROY. Tasks see
 * it at their volume's container path inside their sandbox (a symlink: it needs no privileges).
 */
export const volumeDir = (workDir: string, volume: v1.Resource): string =>
  path.join(workDir, "volumes", "roles", encodeURIComponent(Resources.reservationRole(volume)), volume.disk?.persistence?.id ?? "")

export const apply = async (workDir: string, operation: v1.Operation, inUse: ReadonlySet<string>): Promise<void> => {
  const kind = operation.kind
  if (kind?.$case === "create") {
    for (const volume of kind.value.volumes) await fs.mkdir(volumeDir(workDir, volume), { recursive: true })
  }
  if (kind?.$case === "destroy") {
    for (const volume of kind.value.volumes) {
      // The master refuses this already; the agent never deletes data a task is using either.
      if (inUse.has(volume.disk?.persistence?.id ?? "")) continue
      await fs.rm(volumeDir(workDir, volume), { recursive: true, force: true })
    }
  }
}

/** Links every volume among a task's resources into its sandbox, refusing paths that escape it. */
export const mount = async (workDir: string, sandbox: string, resources: ReadonlyArray<v1.Resource>): Promise<void> => {
  for (const r of resources) {
    const id = r.disk?.persistence?.id
    const containerPath = r.disk?.volume?.containerPath
    if (id === undefined || id === "" || containerPath === undefined) continue
    const target = path.resolve(sandbox, containerPath)
    if (!target.startsWith(sandbox + path.sep)) throw new Error(`volume ${id}: container path "${containerPath}" escapes the sandbox`)
    const dir = volumeDir(workDir, r)
    await fs.mkdir(dir, { recursive: true })
    await fs.mkdir(path.dirname(target), { recursive: true })
    await fs.symlink(dir, target)
  }
}

export interface Checkpoint {
  readonly agentId: string
  readonly resources: ReadonlyArray<v1.Resource>
}

const checkpointFile = (workDir: string) => path.join(workDir, "meta", "agent.json")

/** The agent's identity and total resources, as it last checkpointed them (none on a fresh work dir). */
export const readCheckpoint = async (workDir: string): Promise<Checkpoint | undefined> => {
  try {
    const json = JSON.parse(await fs.readFile(checkpointFile(workDir), "utf8")) as { agentId: string; resources: Array<unknown> }
    return { agentId: json.agentId, resources: json.resources.map((r) => v1.Resource.fromJSON(r)) }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw new Error(`cannot read the agent checkpoint ${checkpointFile(workDir)}: ${(error as Error).message}`)
  }
}

/** Writes the checkpoint atomically (a crash leaves the old or the new one, never half of one). */
export const writeCheckpoint = async (workDir: string, checkpoint: Checkpoint): Promise<void> => {
  const file = checkpointFile(workDir)
  await fs.mkdir(path.dirname(file), { recursive: true })
  const temp = `${file}.${process.pid}.tmp`
  const handle = await fs.open(temp, "w")
  try {
    await handle.writeFile(JSON.stringify({ agentId: checkpoint.agentId, resources: checkpoint.resources.map((r) => v1.Resource.toJSON(r)) }))
    await handle.sync()
  } finally {
    await handle.close()
  }
  await fs.rename(temp, file)
}
