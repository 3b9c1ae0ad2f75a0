// What the suites against the real Docker engine share: the image, a `docker` CLI call, and
// whether the engine is usable (a suite is skipped, with a warning, only when the engine is
// missing, BERTH_SKIP_DOCKER_TESTS=1 is set, and it is not CI).
import { execFileSync } from "node:child_process"

export const IMAGE = process.env.BERTH_DOCKER_IMAGE ?? "berth-base:bookworm"

/** Runs the docker CLI; its trimmed stdout. */
export const docker = (...args: Array<string>): string =>
  execFileSync("docker", args, { encoding: "utf8", timeout: 30_000, stdio: ["ignore", "pipe", "pipe"] }).trim()

/** Why the engine (or the image) cannot be used here, or undefined when it can. */
export const engineProblem: string | undefined = (() => {
  try {
    docker("info", "--format", "{{.ServerVersion}}")
    docker("image", "inspect", "--format", "{{.Id}}", IMAGE)
    return undefined
  } catch (error) {
    const detail = (error as { stderr?: string }).stderr?.trim() || (error as Error).message
    return detail.split("\n")[0]
  }
})()

export const optedOut = engineProblem !== undefined && process.env.BERTH_SKIP_DOCKER_TESTS === "1" && process.env.CI !== "true"
