import { describe, expect, it } from "vitest"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { alive, descendants } from "./support/processes.ts"

const root = fileURLToPath(new URL("..", import.meta.url))

describe("npm start", () => {
  it("starts a cluster and marathon-like with the example app, prints the UI URL, and leaves nothing behind on Ctrl-C", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-start-"))
    // Its own process group, so the test can deliver Ctrl-C the way a terminal does: SIGINT to
    // every process of the foreground group at once.
    const npm = spawn("npm", ["start", "--silent", "--", "--port", "0", "--dir", dir], {
      cwd: root,
      detached: true,
      env: { ...process.env, MARATHON_HTTP_PORT: "0" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    npm.stdout.on("data", (chunk) => (output += chunk))
    npm.stderr.on("data", (chunk) => (output += chunk))
    const exited = new Promise<number | null>((resolve) => npm.on("exit", (code) => resolve(code)))
    try {
      const deadline = Date.now() + 90_000
      while (!output.includes("press Ctrl-C to stop it")) {
        if (Date.now() > deadline) throw new Error(`npm start did not come up in time:\n${output}`)
        await new Promise((r) => setTimeout(r, 100))
      }
      expect(output).toMatch(/cluster ready: master 127\.0\.0\.1:\d+, 3 agents/)
      const url = /marathon-like UI: (http:\/\/127\.0\.0\.1:\d+)\/ui\//.exec(output)?.[1]
      expect(url, output).toBeDefined()
      expect(output).toContain("deployed examples/marathon-apps/hello.json")
      // The example app runs its two instances on the cluster, and the UI is served.
      const runningDeadline = Date.now() + 60_000
      let app: { tasksRunning: number } | undefined
      while (Date.now() < runningDeadline) {
        app = ((await (await fetch(`${url}/v2/apps/hello`)).json()) as { app: { tasksRunning: number } }).app
        if (app?.tasksRunning === 2) break
        await new Promise((r) => setTimeout(r, 200))
      }
      expect(app?.tasksRunning).toBe(2)
      const ui = await fetch(`${url}/ui/`)
      expect(ui.status).toBe(200)
      expect(ui.headers.get("content-type")).toMatch(/text\/html/)
      expect(fs.existsSync(path.join(dir, "master.db"))).toBe(true)
      expect(fs.existsSync(path.join(dir, "marathon-like.db"))).toBe(true)

      const processes = descendants(npm.pid!)
      // npm, the start script, berth dev, a master, three agents and marathon-like at least.
      expect(processes.length).toBeGreaterThanOrEqual(6)
      process.kill(-npm.pid!, "SIGINT")
      await exited
      const deadlineStop = Date.now() + 15_000
      while (processes.some(alive) && Date.now() < deadlineStop) await new Promise((r) => setTimeout(r, 100))
      expect(processes.filter(alive)).toEqual([])
      expect(output).toContain("berth: stopped")
    } finally {
      if (npm.exitCode === null && npm.signalCode === null) {
        try {
          process.kill(-npm.pid!, "SIGKILL")
        } catch {
          // Already gone.
        }
      }
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 120_000)
})
