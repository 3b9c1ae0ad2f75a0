// `npm start`: a local cluster (`berth dev`: one master, three agents as child processes, state
// under ./.berth/) plus marathon-like (apps/marathon-like: the Marathon-compatible scheduler, its
// REST API and web UI), which gets the example app examples/marathon-apps/hello.json and prints
// the UI's URL. Everything keeps running until Ctrl-C, which stops every process it started.
// Extra arguments go to `berth dev` (e.g. `npm start -- --port 0 --dir /tmp/berth`); the
// marathon-like port is MARATHON_HTTP_PORT (default 8080, 0 for any free port).
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const berth = `${root}packages/cluster-core/dist/bin/berth.js`
const marathon = `${root}apps/marathon-like/dist/bin/marathon-like.js`
const helloApp = `${root}examples/marathon-apps/hello.json`
const args = process.argv.slice(2)
const dirFlag = args.indexOf("--dir")
const stateDir = path.resolve(dirFlag >= 0 && args[dirFlag + 1] !== undefined ? args[dirFlag + 1] : ".berth")
const children = new Set()

const run = (args, onLine) => {
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] })
  children.add(child)
  child.on("exit", () => children.delete(child))
  let buffered = ""
  child.stdout.on("data", (chunk) => {
    buffered += chunk
    let i
    while ((i = buffered.indexOf("\n")) >= 0) {
      onLine(buffered.slice(0, i))
      buffered = buffered.slice(i + 1)
    }
  })
  return child
}

let stopping = false
const stop = (signal) => {
  if (stopping) return
  stopping = true
  console.log(`\nberth: ${signal}: stopping the cluster...`)
  for (const child of children) child.kill("SIGTERM")
  const check = setInterval(() => {
    if (children.size === 0) {
      clearInterval(check)
      console.log("berth: stopped")
      process.exit(0)
    }
  }, 50)
}
process.on("SIGINT", () => stop("SIGINT"))
process.on("SIGTERM", () => stop("SIGTERM"))

const dev = run([berth, "dev", ...args], (line) => {
  console.log(line)
  const ready = /cluster ready: master (\S+),/.exec(line)
  if (ready === null || stopping) return
  const master = ready[1].replace(/,$/, "")
  console.log(`berth: starting marathon-like against ${master}`)
  fs.mkdirSync(stateDir, { recursive: true })
  const server = run(
    [marathon, "serve", "--master", master, "--http-port", process.env.MARATHON_HTTP_PORT ?? "8080", "--bind", "127.0.0.1", "--state", `sqlite:${path.join(stateDir, "marathon-like.db")}`],
    (l) => {
      console.log(`[marathon-like] ${l}`)
      const listening = /listening on (\S+)/.exec(l)
      if (listening === null || stopping) return
      deployHello(listening[1], master)
    }
  )
  server.on("exit", (code) => {
    if (!stopping) console.error(`berth: marathon-like exited unexpectedly with code ${code}`)
  })
})

/** Deploys the example app (once: a second `npm start` finds it in the stored state) and prints where to look. */
const deployHello = async (url, master) => {
  try {
    const res = await fetch(`${url}/v2/apps`, { method: "POST", headers: { "Content-Type": "application/json" }, body: fs.readFileSync(helloApp) })
    if (res.status === 201) console.log(`berth: deployed examples/marathon-apps/hello.json (${res.headers.get("Marathon-Deployment-Id")})`)
    else if (res.status !== 409) console.log(`berth: deploying the example app answered ${res.status}: ${await res.text()}`)
  } catch (e) {
    console.log(`berth: could not deploy the example app: ${e.message}`)
  }
  console.log(`berth: marathon-like UI: ${url}/ui/  (REST API ${url}/v2/apps)`)
  console.log(`berth: the cluster keeps running at ${master}; press Ctrl-C to stop it`)
}

dev.on("exit", (code) => {
  if (!stopping) {
    console.error(`berth: berth dev exited unexpectedly with code ${code}`)
    for (const child of children) child.kill("SIGTERM")
    process.exit(1)
  }
})
