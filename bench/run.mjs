/**
 * Runs every benchmark and prints one JSON object: the machine, then each benchmark's figures.
 *
 * Each benchmark runs as its own child process (on this same Node binary), so one cannot skew
 * the other's memory or event loop, and a hung one can be stopped by its pid. Their stderr (logs)
 * passes through; their stdout is the JSON we collect.
 *
 * Usage: npm run bench -w bench   (or: node bench/run.mjs)
 */
import { execFileSync, spawn } from "node:child_process"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { machine } from "./lib/proc.mjs"

const major = Number(process.versions.node.split(".")[0])
if (major < 22) {
  process.stderr.write(`bench: Node ${process.versions.node} is too old (Berth needs >= 22); run it with npm run bench -w bench\n`)
  process.exit(1)
}

const here = path.dirname(fileURLToPath(import.meta.url))
/** Each benchmark bounds itself; these are a second line of defence against a hang. */
const benchmarks = [
  { key: "taskOverhead", script: "task-overhead.mjs", timeoutMs: 5 * 60 * 1000 },
  { key: "launchThroughput", script: "launch-throughput.mjs", timeoutMs: 9 * 60 * 1000 }
]

let current
const stopCurrent = (signal) => {
  if (current !== undefined && current.exitCode === null && current.signalCode === null) current.kill(signal)
}
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    // Let the child clean up its own processes and temp dirs first.
    stopCurrent("SIGTERM")
    setTimeout(() => process.exit(130), 5000).unref()
  })
}

const runScript = ({ script, timeoutMs }) =>
  new Promise((resolve) => {
    const startedAt = Date.now()
    const child = spawn(process.execPath, [path.join(here, script)], { cwd: here, stdio: ["ignore", "pipe", "inherit"] })
    current = child
    let stdout = ""
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", (chunk) => (stdout += chunk))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill("SIGTERM")
      setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"), 10_000).unref()
    }, timeoutMs)
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      current = undefined
      const seconds = Math.round((Date.now() - startedAt) / 100) / 10
      try {
        resolve({ ...JSON.parse(stdout), exitCode: code, wallSeconds: seconds })
      } catch {
        resolve({ error: timedOut ? `timed out after ${timeoutMs / 1000} s` : "no JSON on stdout", exitCode: code, signal, stdout: stdout.slice(0, 2000), wallSeconds: seconds })
      }
    })
  })

/** Which code was measured: the commit, and how many files differed from it (the dist is built from the tree). */
const code = () => {
  try {
    const git = (...args) => execFileSync("git", args, { cwd: here, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()
    const dirty = git("status", "--porcelain").split("\n").filter((l) => l !== "").length
    return { commit: git("rev-parse", "--short", "HEAD"), uncommittedFiles: dirty }
  } catch {
    return undefined
  }
}

const result = {
  machine: machine(),
  code: code(),
  startedAt: new Date().toISOString(),
  // Other work on the machine skews the figures (both benchmarks are CPU-bound on few cores).
  loadAverageAtStart: os.loadavg().map((l) => Math.round(l * 100) / 100)
}
for (const benchmark of benchmarks) {
  process.stderr.write(`bench: running ${benchmark.script}\n`)
  result[benchmark.key] = await runScript(benchmark)
}
process.stdout.write(JSON.stringify(result, null, 2) + "\n")
if (benchmarks.some((b) => result[b.key].error !== undefined)) process.exitCode = 1
