/**
 * `npm run bench:testkit`: how long `TestCluster` takes to give a test a ready cluster.
 *
 * - `inProcessStartSeconds`: 1 master and 3 agents in this process (memory store), from
 *   `TestCluster.start` to every agent registered. Budget (issue 7): <= 1 s.
 * - `containerStartSeconds`: 1 master, 3 agents and etcd, each a Docker container (the containers
 *   backend), with the image already built, from `TestCluster.start` to every agent registered.
 *   Budget: <= 30 s. The image is built first, untimed (`imageBuildSeconds` says how long that
 *   took; about 0 once it is cached). Skipped (null, with the reason on stderr) without a Docker
 *   engine.
 *
 * Each figure is the median of `--runs` starts (default 3). Every cluster is stopped, and the
 * containers backend's cleanup is checked: no container or network with the testkit's label may
 * remain.
 *
 * Prints one JSON line: {"inProcessStartSeconds":…,"containerStartSeconds":…,"imageBuildSeconds":…}
 *
 * Usage: node bench/testkit.mjs [--runs 3]
 */
import { TestCluster } from "@berth/testkit"
import { execFileSync } from "node:child_process"

process.env.TESTCONTAINERS_RYUK_DISABLED ??= "true"
const args = process.argv.slice(2)
const RUNS = Number(args.includes("--runs") ? args[args.indexOf("--runs") + 1] : "3")

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}
const seconds = (ms) => Math.round(ms) / 1000

/** Starts a cluster, checks it is whole, stops it; returns the start time in ms. */
const timeStart = async (options) => {
  const started = performance.now()
  const cluster = await TestCluster.start({ ...options, dumpOnFailure: true })
  const elapsed = performance.now() - started
  try {
    if (cluster.agents.length !== 3 || cluster.agents.some((a) => a.agentId === "")) throw new Error("not every agent registered")
  } finally {
    await cluster.stop()
  }
  return elapsed
}

const docker = (...argv) => execFileSync("docker", argv, { encoding: "utf8", timeout: 30_000, stdio: ["ignore", "pipe", "pipe"] }).trim()

const inProcess = []
// One untimed warm-up: module loading and JIT are not what a test waits for twice.
await timeStart({ backend: "in-process", agents: 3 })
for (let i = 0; i < RUNS; i++) inProcess.push(await timeStart({ backend: "in-process", agents: 3 }))

let containerStartSeconds = null
let imageBuildSeconds = null
let dockerProblem
try {
  docker("info", "--format", "{{.ServerVersion}}")
} catch (error) {
  dockerProblem = `no Docker engine: ${String(error.stderr ?? error).split("\n")[0]}`
}
if (dockerProblem === undefined) {
  // The first start builds the image when it is missing: timed apart.
  const first = performance.now()
  await timeStart({ backend: "containers", agents: 3, storage: "etcd" })
  const firstMs = performance.now() - first
  const containers = []
  for (let i = 0; i < RUNS; i++) containers.push(await timeStart({ backend: "containers", agents: 3, storage: "etcd" }))
  containerStartSeconds = seconds(median(containers))
  imageBuildSeconds = Math.max(0, seconds(firstMs - median(containers)))
  const left = [docker("ps", "-aq", "--filter", "label=berth.testkit"), docker("network", "ls", "-q", "--filter", "label=berth.testkit")]
    .join("\n").trim()
  if (left !== "") throw new Error(`containers or networks left behind: ${left}`)
} else {
  process.stderr.write(`bench:testkit: containerStartSeconds skipped: ${dockerProblem}\n`)
}

console.log(JSON.stringify({ inProcessStartSeconds: seconds(median(inProcess)), containerStartSeconds, imageBuildSeconds }))
// Every cluster is stopped, but the in-process backend leaves a few timers armed after its scope
// closes (reported to the testkit's maintainers): do not wait for them.
process.exit(0)
