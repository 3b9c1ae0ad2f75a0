// marathon-like at scale: one app scaled to 1,000 instances on 100 simulated agents, then
// GET /v2/apps latency with 1,000 apps stored. A real master, the simulated agents (`berth
// simulate`: the real agent protocol over real gRPC, no task processes) and marathon-like (its
// CLI, state in a SQLite file) each run in a child process; this process is the HTTP client.
// Prints one JSON line:
// {"instances":1000,"agents":100,"deploySeconds":…,"getAppsP99Ms":…} (plus p50/p90/max, and the
// same with Accept-Encoding: gzip).
// Targets (issue 8): deploySeconds ≤ 10 (Marathon 0.15 took 14.2 s for 500), getAppsP99Ms ≤ 20.
// The simulated agents report no health checks, so "healthy" here means RUNNING (the app has none).
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Daemons from "./lib/daemon.mjs"

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? fallback : Number(process.argv[i + 1])
}
const agents = arg("agents", 100)
const instances = arg("instances", 1000)
const apps = arg("apps", 1000)
const samples = arg("samples", 500)
const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))
const marathon = fileURLToPath(new URL("../apps/marathon-like/dist/bin/marathon-like.js", import.meta.url))
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-marathon-"))
const daemons = Daemons.make()
const children = daemons.children
const deadline = setTimeout(() => {
  console.error("marathon bench: deadline reached")
  for (const c of children) c.kill("SIGKILL")
  process.exit(1)
}, 300_000)

const daemon = (args, pattern, bin = berth) => daemons.start(bin, args, pattern)

const call = async (base, method, p, body) => {
  const res = await fetch(base + p, { method, headers: { "Content-Type": "application/json" }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  const text = await res.text()
  return { status: res.status, body: text.length > 0 ? JSON.parse(text) : undefined }
}
/** GET with the body read and dropped chunk by chunk (no 1 MB buffer per sample on the client). */
const agent = new http.Agent({ keepAlive: true })
const getDiscarding = (url, headers = {}) =>
  new Promise((resolve, reject) => {
    http.get(url, { agent, headers }, (res) => {
      res.on("data", () => {})
      res.on("end", resolve)
      res.on("error", reject)
    }).on("error", reject)
  })
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const main = async () => {
  const { match } = await daemon(["master", "--port", "0", "--state", "memory:"], /listening on (\S+)/)
  const master = match[1]
  await daemon(["simulate", "--masters", master, "--agents", String(agents), "--resources", "cpus:64;mem:262144;disk:1000000;ports:[31000-32999]"], /agents registered/)
  const server = await daemon(
    ["serve", "--master", master, "--http-port", "0", "--bind", "127.0.0.1", "--state", `sqlite:${path.join(dir, "state.db")}`],
    /listening on (\S+)/,
    marathon
  )
  const base = server.match[1]
  while ((await call(base, "GET", "/v2/info")).status !== 200) await sleep(100)

  // 1. One app, 1,000 instances: from the POST until every instance is RUNNING and the deployment is done.
  const started = performance.now()
  const created = await call(base, "POST", "/v2/apps", { id: "/bench", cmd: "sleep 3600", cpus: 0.01, mem: 8, instances, portDefinitions: [] })
  if (created.status !== 201) throw new Error(`POST /v2/apps answered ${created.status}: ${JSON.stringify(created.body)}`)
  // The polls during the deployment also measure how long the scheduler's own work (offers,
  // 1,000 launches, status batches, events) holds up an API request: their worst latency.
  const duringDeploy = []
  for (;;) {
    const polled = performance.now()
    const { body } = await call(base, "GET", "/v2/apps?id=/bench")
    duringDeploy.push(performance.now() - polled)
    const app = body.apps[0]
    if (app.tasksRunning === instances && app.deployments.length === 0) break
    await sleep(50)
  }
  const deploySeconds = (performance.now() - started) / 1000

  // 2. 1,000 apps stored (the bench app plus 999 more with no instances), then GET /v2/apps.
  for (let i = 1; i < apps; i++) {
    const r = await call(base, "POST", "/v2/apps", { id: `/group-${i % 10}/app-${i}`, cmd: `sleep ${i}`, cpus: 0.1, mem: 32, instances: 0, labels: { i: String(i) } })
    if (r.status !== 201) throw new Error(`creating app ${i}: ${r.status}`)
  }
  const first = await call(base, "GET", "/v2/apps")
  if (first.body.apps.length !== apps) throw new Error(`GET /v2/apps returned ${first.body.apps.length} apps`)
  const bytes = JSON.stringify(first.body).length
  // The latency of the whole response (until its last byte arrived); parsing it is the client's business.
  const latencies = []
  for (let i = 0; i < samples; i++) {
    const t = performance.now()
    await getDiscarding(base + "/v2/apps")
    latencies.push(performance.now() - t)
  }
  latencies.sort((a, b) => a - b)
  const p = (q, list = latencies) => list[Math.min(list.length - 1, Math.ceil(q * list.length) - 1)]
  // The same with Accept-Encoding: gzip (what browsers and `curl --compressed` send): the cached
  // answer compressed once per revision. Bytes received, not inflated.
  const zipped = []
  for (let i = 0; i < samples; i++) {
    const t = performance.now()
    await getDiscarding(base + "/v2/apps", { "Accept-Encoding": "gzip" })
    zipped.push(performance.now() - t)
  }
  zipped.sort((a, b) => a - b)
  // A control: GET /ping (4 bytes) the same way. Its tail is what the machine's scheduling costs
  // any request here; the difference to the list's tail is the cost of moving ~1 MB.
  const pings = []
  for (let i = 0; i < samples; i++) {
    const t = performance.now()
    await getDiscarding(base + "/ping")
    pings.push(performance.now() - t)
  }
  pings.sort((a, b) => a - b)
  console.log(JSON.stringify({
    instances,
    agents,
    deploySeconds: Number(deploySeconds.toFixed(2)),
    getAppsP99Ms: Number(p(0.99).toFixed(2)),
    pollDuringDeployMaxMs: Number(Math.max(...duringDeploy).toFixed(2)),
    pollDuringDeployCount: duringDeploy.length,
    getAppsP50Ms: Number(p(0.5).toFixed(2)),
    getAppsP90Ms: Number(p(0.9).toFixed(2)),
    getAppsMaxMs: Number(latencies.at(-1).toFixed(2)),
    getAppsGzipP50Ms: Number(p(0.5, zipped).toFixed(2)),
    getAppsGzipP99Ms: Number(p(0.99, zipped).toFixed(2)),
    pingP50Ms: Number(p(0.5, pings).toFixed(2)),
    pingP99Ms: Number(p(0.99, pings).toFixed(2)),
    apps,
    getAppsBytes: bytes,
    store: "sqlite"
  }))
}

main()
  .catch((error) => {
    console.error(error)
    process.exitCode = 1
  })
  .finally(() => {
    clearTimeout(deadline)
    for (const child of children) child.kill("SIGTERM")
    fs.rmSync(dir, { recursive: true, force: true })
  })
