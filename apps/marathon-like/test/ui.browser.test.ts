// The web UI in a real headless Chromium (Debian's `chromium`, driven by playwright-core) against
// the real marathon-like server on a real in-process testkit cluster: create an app from the
// form (after the server's 422 is shown next to the field it names), see it Running, scale it,
// destroy it, checking the cluster agrees at each step. Screenshots of every step go to
// apps/marathon-like/test-artifacts/ui/ (gitignored); a failure also saves `failure.png`.
import { Server } from "@berth/marathon-like"
import { v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect, Exit, Scope } from "effect"
import { existsSync, mkdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { chromium, type Browser, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest"

const executable = process.env.BERTH_CHROMIUM ?? "/usr/bin/chromium"
const haveChromium = existsSync(executable)
const artifacts = fileURLToPath(new URL("../test-artifacts/ui/", import.meta.url))

if (!haveChromium) {
  // In CI the browser is part of the environment (scripts/ci/chromium.sh): missing is a failure.
  if (process.env.CI === "true") {
    throw new Error(`No Chromium at ${executable}: CI installs it with scripts/ci/chromium.sh (apt-get install chromium)`)
  }
  console.log(`[marathon-like ui.browser] skipped: no Chromium at ${executable} (apt-get install chromium, or set BERTH_CHROMIUM)`)
}

interface AppView {
  readonly instances: number
  readonly tasksRunning: number
  readonly tasks: ReadonlyArray<{ readonly id: string; readonly host: string }>
}

describe.skipIf(!haveChromium)("marathon-like web UI in headless Chromium", () => {
  let cluster: TestCluster.RunningCluster
  let scope: Scope.Closeable
  let baseUrl: string
  let browser: Browser
  let page: Page
  const pageErrors: Array<string> = []

  const shot = (name: string) => page.screenshot({ path: `${artifacts}${name}.png`, fullPage: true })

  /** The app as the API reports it, or the HTTP status when it is not there. */
  const getApp = async (id: string): Promise<AppView | number> => {
    const response = await fetch(`${baseUrl}/v2/apps${id}?embed=app.tasks`)
    if (response.status !== 200) return response.status
    return ((await response.json()) as { app: AppView }).app
  }
  /** The master's view: how many of these tasks are RUNNING on the cluster. */
  const runningOnCluster = async (taskIds: ReadonlyArray<string>) => {
    const state = await Effect.runPromise(cluster.operator.state)
    return state.tasks.filter((t) => taskIds.includes(t.info?.taskId ?? "") && t.state === v1.TaskState.RUNNING).length
  }

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true })
    cluster = await TestCluster.start({ agents: 3 })
    scope = Effect.runSync(Scope.make())
    const server = await Effect.runPromise(
      Server.serve({ master: cluster.master, httpPort: 0, bind: "127.0.0.1", store: "memory:" }).pipe(Scope.provide(scope))
    )
    baseUrl = server.url
    // /dev/shm is small in many CI containers; Chromium then falls back to /tmp instead of crashing.
    browser = await chromium.launch({ executablePath: executable, headless: true, args: ["--disable-dev-shm-usage"] })
    page = await browser.newPage({ viewport: { width: 1440, height: 900 } })
    page.on("pageerror", (e) => pageErrors.push(e.message))
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    await cluster?.stop()
  }, 60_000)

  it("creates an app from the form, sees it Running, scales it and destroys it", async () => {
    onTestFailed(async () => {
      await shot("failure").catch(() => undefined)
      await cluster.stop({ failed: true })
    })
    const id = "/ui-browser/web"
    const appRow = page.locator(`tr[data-app-id="${id}"]`)
    const status = page.getByTestId("app-status").first()
    const instances = page.getByTestId("app-instances").first()

    // `/` redirects to the UI, which lists no apps and is connected to /v2/events.
    await page.goto(`${baseUrl}/`)
    await page.waitForURL(/\/ui\/(#.*)?$/)
    await page.getByTestId("apps-table").waitFor()
    await page.locator('[data-testid="live-indicator"][data-live="live"]').waitFor({ timeout: 30_000 })
    await shot("01-apps-empty")

    // The simple form with cpus 0: the server's 422 for /cpus is shown under the CPUs field,
    // and nothing is created.
    await page.getByTestId("create-app").click()
    await page.getByTestId("field-id").fill(id)
    await page.getByTestId("field-cmd").fill("sleep 3600")
    await page.getByTestId("field-cpus").fill("0")
    await page.getByTestId("field-mem").fill("32")
    await page.getByTestId("field-instances").fill("1")
    await page.getByTestId("submit-app").click()
    await page.getByTestId("form-error").waitFor({ timeout: 15_000 })
    const cpusField = page.getByTestId("field-cpus")
    await expect.poll(() => cpusField.getAttribute("aria-invalid")).toBe("true")
    const describedBy = (await cpusField.getAttribute("aria-describedby")) ?? ""
    const errorId = describedBy.split(" ").find((s) => s.endsWith("-error"))
    expect(errorId, `aria-describedby="${describedBy}"`).toBeDefined()
    expect(await page.locator(`[id="${errorId}"]`).textContent()).toMatch(/0\.001/)
    await shot("02-create-422")
    expect(await getApp(id)).toBe(404)

    // Fixed, it is created; the UI opens the app page, which turns Running with 1 / 1.
    await cpusField.fill("0.1")
    await page.getByTestId("submit-app").click()
    await page.waitForURL(/#\/apps\/%2Fui-browser%2Fweb$/)
    await expect.poll(() => instances.textContent(), { timeout: 60_000, interval: 250 }).toBe("1 / 1")
    await expect.poll(() => status.textContent(), { timeout: 60_000, interval: 250 }).toBe("Running")
    const created = await getApp(id)
    if (typeof created === "number") throw new Error(`GET ${id} answered ${created}`)
    expect(created.tasksRunning).toBe(1)
    expect(await runningOnCluster(created.tasks.map((t) => t.id))).toBe(1)
    // The instances table shows the task on its agent.
    const firstRow = page.getByTestId("instances-table").locator("tbody tr").first()
    await expect.poll(() => firstRow.textContent(), { timeout: 15_000 }).toContain(created.tasks[0]!.host)
    await shot("03-running")

    // Scale to 3 from the app page; the page follows the event stream without a reload.
    await page.getByTestId("scale-app").click()
    await page.getByTestId("scale-input").fill("3")
    await page.getByTestId("scale-submit").click()
    await expect.poll(() => instances.textContent(), { timeout: 60_000, interval: 250 }).toBe("3 / 3")
    await expect.poll(() => status.textContent(), { timeout: 60_000, interval: 250 }).toBe("Running")
    await expect.poll(() => page.getByTestId("instances-table").locator("tbody tr").count(), { timeout: 30_000 }).toBe(3)
    const scaled = await getApp(id)
    if (typeof scaled === "number") throw new Error(`GET ${id} answered ${scaled}`)
    expect(scaled).toMatchObject({ instances: 3, tasksRunning: 3 })
    const taskIds = scaled.tasks.map((t) => t.id)
    expect(await runningOnCluster(taskIds)).toBe(3)
    await shot("04-scaled")

    // The list shows it Running with 3 / 3.
    await page.getByTestId("nav-apps").click()
    await expect.poll(() => appRow.getByTestId("app-status").textContent(), { timeout: 30_000 }).toBe("Running")
    expect(await appRow.getByTestId("app-instances").textContent()).toBe("3 / 3")
    await shot("05-apps-list")

    // Destroy from the app page, typing the id to confirm: gone from the UI, the API and the cluster.
    await appRow.locator("a").first().click()
    await page.getByTestId("destroy-app").click()
    await page.getByTestId("destroy-confirm").fill(id)
    await page.getByTestId("destroy-submit").click()
    await page.waitForURL(/#\/apps$/)
    await expect.poll(() => appRow.count(), { timeout: 60_000, interval: 250 }).toBe(0)
    await expect.poll(() => getApp(id), { timeout: 60_000, interval: 250 }).toBe(404)
    await expect.poll(() => runningOnCluster(taskIds), { timeout: 60_000, interval: 250 }).toBe(0)
    await shot("06-destroyed")

    expect(pageErrors).toEqual([])
  }, 300_000)

  it("shows an app that cannot be fully placed as Waiting, with the reasons and its deployment", async () => {
    onTestFailed(async () => {
      await shot("failure-waiting").catch(() => undefined)
    })
    // 5 instances, one per host, on 3 agents: 3 run, 2 wait for offers that never fit.
    const id = "/ui-browser/unique"
    const created = await fetch(`${baseUrl}/v2/apps`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id, cmd: "sleep 3600", cpus: 0.1, mem: 32, instances: 5, constraints: [["hostname", "UNIQUE"]] })
    })
    expect(created.status).toBe(201)

    // A fresh load, so the first test's notifications do not cover the screenshots.
    await page.goto(`${baseUrl}/ui/#/apps`)
    await page.reload()
    const row = page.locator(`tr[data-app-id="${id}"]`)
    await expect.poll(() => row.getByTestId("app-instances").textContent(), { timeout: 60_000, interval: 250 }).toBe("3 / 5")
    await expect.poll(() => row.getByTestId("app-status").textContent(), { timeout: 60_000, interval: 250 }).toBe("Waiting")

    // The Placement tab says why: the constraint stage declined the offers.
    await page.goto(`${baseUrl}/ui/#/apps/${encodeURIComponent(id)}/placement`)
    const panel = page.getByTestId("placement-panel")
    await expect.poll(() => panel.textContent(), { timeout: 30_000 }).toContain("2 instances waiting for placement")
    await expect.poll(() => page.getByTestId("placement-stages").textContent(), { timeout: 30_000 }).toMatch(/UnfulfilledConstraint\s*[1-9]\d* \/ [1-9]/)
    await shot("07-waiting-placement")

    // The deployment that started it is listed with its progress.
    await page.getByTestId("nav-deployments").click()
    const deployments = page.getByTestId("deployments-table")
    await expect.poll(() => deployments.textContent(), { timeout: 30_000 }).toContain(id)
    expect(await deployments.getByTestId("deployment-progress").first().textContent()).toContain(`${id}: 3 of 5 running`)
    await shot("08-deployments")

    const removed = await fetch(`${baseUrl}/v2/apps${id}?force=true`, { method: "DELETE" })
    expect(removed.status).toBe(200)
    expect(pageErrors).toEqual([])
  }, 180_000)
})
