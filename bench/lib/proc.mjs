/**
 * Small /proc readers and statistics helpers shared by the benchmarks (Linux only).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

/** The fields of /proc/<pid>/stat after the command name (which may hold spaces and ")"). */
const statFields = (pid) => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")
}

/** Every live descendant of `root` (children, grandchildren, ...). */
export const descendants = (root) => {
  const children = new Map()
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const ppid = Number(statFields(entry)[1])
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)])
    } catch {
      // The process ended while we looked.
    }
  }
  const out = []
  const walk = (pid) => {
    for (const child of children.get(pid) ?? []) {
      out.push(child)
      walk(child)
    }
  }
  walk(root)
  return out
}

/** The short command name (what `ps -o comm` shows), or undefined when the process is gone. */
export const comm = (pid) => {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim()
  } catch {
    return undefined
  }
}

/** Whether the process runs a Node binary (its executable's name starts with "node"). */
export const isNode = (pid) => {
  try {
    return /^node/.test(path.basename(fs.readlinkSync(`/proc/${pid}/exe`)))
  } catch {
    return false
  }
}

/** Whether a process exists and is not a zombie. */
export const alive = (pid) => {
  try {
    return statFields(pid)[0] !== "Z"
  } catch {
    return false
  }
}

/** A "VmRSS: 1234 kB"-style field of /proc/<pid>/status, in KB (undefined when gone). */
export const statusKB = (pid, field) => {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)
    return match === null ? undefined : Number(match[1])
  } catch {
    return undefined
  }
}

export const rssKB = (pid) => statusKB(pid, "VmRSS")

/** Threads and open file descriptors: two other things that could grow per task. */
export const threads = (pid) => {
  try {
    return Number(/^Threads:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1])
  } catch {
    return undefined
  }
}
export const openFds = (pid) => {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return undefined
  }
}

export const median = (values) => percentile(values, 50)

/** Nearest-rank percentile of `values` (undefined for an empty list). */
export const percentile = (values, p) => {
  if (values.length === 0) return undefined
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]
}

export const round = (value, digits = 1) => (value === undefined ? undefined : Number(value.toFixed(digits)))

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** `promise`'s value, or undefined once `ms` passed (the timer is cleared either way). */
export const within = (promise, ms) => {
  let timer
  return Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() => clearTimeout(timer))
}

/** The machine the figures were taken on, as docs/performance.md wants it recorded. */
export const machine = () => {
  let cpuModel = os.cpus()[0]?.model
  try {
    cpuModel = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpuModel
  } catch {
    // Not Linux: keep what os.cpus() said.
  }
  return {
    cpuModel,
    cores: os.availableParallelism(),
    totalMemoryMB: Math.round(os.totalmem() / 1024 / 1024),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`
  }
}
