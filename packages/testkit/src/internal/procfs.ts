/** What the testkit reads of /proc and of an agent's checkpoint, for cleanup and observation. */
import * as fs from "node:fs"
import * as path from "node:path"

/**
 * SIGKILLs every process group a task of `workDir` leads (what a SIGKILLed agent leaves behind):
 * the task wrappers are found by their command line, which names their run's checkpoint under
 * `<workDir>/meta/`. Returns how many groups were killed.
 */
export const killTasks = (workDir: string): number => {
  const marker = `${workDir}/meta/`
  let killed = 0
  let entries: Array<string>
  try {
    entries = fs.readdirSync("/proc")
  } catch {
    return 0
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (!fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) continue
      process.kill(-Number(entry), "SIGKILL")
      killed++
    } catch {
      // Gone meanwhile, or not a group leader.
    }
  }
  return killed
}

const walk = (dir: string, name: string, out: Array<string>) => {
  let entries: Array<fs.Dirent>
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true })
  } catch {
    return
  }
  for (const entry of entries) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) walk(full, name, out)
    else if (entry.name === name) out.push(full)
  }
}

/**
 * Status updates an agent holds unacknowledged, read from the update logs of its checkpoint
 * (`<workDir>/meta/frameworks/.../updates`: one `<crc> <json>` record per line).
 */
export const pendingUpdates = (workDir: string): number => {
  const files: Array<string> = []
  walk(path.join(workDir, "meta", "frameworks"), "updates", files)
  let pending = 0
  for (const file of files) {
    const sent = new Set<string>()
    let closed = false
    let text = ""
    try {
      text = fs.readFileSync(file, "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n")) {
      const space = line.indexOf(" ")
      if (space < 0) continue
      try {
        const record = JSON.parse(line.slice(space + 1)) as { update?: { uuid?: string }; ack?: string; closed?: string }
        if (record.update?.uuid) sent.add(record.update.uuid)
        if (record.ack !== undefined) sent.delete(record.ack)
        if (record.closed !== undefined) closed = true
      } catch {
        // A torn last record: the agent cuts it off.
      }
    }
    if (!closed) pending += sent.size
  }
  return pending
}
