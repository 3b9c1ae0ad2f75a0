// `npm start`: a local cluster (`berth dev`: one master, three agents as child processes, state
// under ./.berth/) plus the hello framework, which launches tasks and prints their output. The
// cluster keeps running until Ctrl-C, which stops every process it started.
// Extra arguments go to `berth dev` (e.g. `npm start -- --port 0 --dir /tmp/berth`).
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const berth = `${root}packages/cluster-core/dist/bin/berth.js`
const hello = `${root}examples/hello-framework/dist/main.js`
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

const dev = run([berth, "dev", ...process.argv.slice(2)], (line) => {
  console.log(line)
  const ready = /cluster ready: master (\S+),/.exec(line)
  if (ready === null || stopping) return
  const master = ready[1].replace(/,$/, "")
  console.log(`berth: running examples/hello-framework against ${master}`)
  const example = run([hello, "--master", master, "--tasks", "6"], (l) => console.log(`[hello-framework] ${l}`))
  example.on("exit", (code) => {
    if (stopping) return
    console.log(`berth: hello-framework exited with code ${code}`)
    console.log(`berth: the cluster keeps running at ${master}; press Ctrl-C to stop it`)
  })
})
dev.on("exit", (code) => {
  if (!stopping) {
    console.error(`berth: berth dev exited unexpectedly with code ${code}`)
    for (const child of children) child.kill("SIGTERM")
    process.exit(1)
  }
})
