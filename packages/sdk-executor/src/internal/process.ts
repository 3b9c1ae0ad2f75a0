import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import { constants as osConstants } from "node:os"
import * as path from "node:path"
import { Duration, Effect } from "effect"
import type { v1 } from "@berth/proto"
import { LaunchError } from "../ExecutorError.ts"

/**
 * How a process ended: `code` or `signal`, or neither when nobody could tell (a re-attached task
 * whose wrapper was killed outright, so it wrote no exit status).
 */
export interface Termination {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** The status message Mesos users know, e.g. "Command exited with status 3". */
export const describeTermination = (termination: Termination): string =>
  termination.signal !== null
    ? `Command terminated with signal ${termination.signal}`
    : termination.code !== null
    ? `Command exited with status ${termination.code}`
    : "Command ended without an exit status (its process group was killed while the agent was away)"

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals])
)

/**
 * A shell's `$?`: 128 + N when the command died of signal N (the shell cannot tell that from an
 * exit with that status; a death by signal is by far the likelier).
 */
export const fromShellStatus = (status: number): Termination => {
  const signal = status > 128 ? signalNames.get(status - 128) : undefined
  return signal === undefined ? { code: status, signal: null } : { code: null, signal }
}

/** Why `command` cannot be run, if it cannot. */
export const commandProblem = (command: v1.CommandInfo | undefined): string | undefined => {
  if (command === undefined) return "the command executor needs a task with a command"
  if (command.value === "") {
    return command.shell ? "command.value: the shell command is empty" : "command.value: the executable is empty"
  }
  return undefined
}

const errorMessage = (error: unknown): string => error instanceof Error ? error.message : String(error)

/**
 * Sends `signal` to the process group led by `pid`. A group that is already gone (ESRCH) is what
 * we wanted; anything else is logged rather than failing, because the caller is usually cleaning up.
 */
export const signalGroup = (pid: number, signal: NodeJS.Signals): Effect.Effect<void> =>
  Effect.suspend(() => {
    try {
      process.kill(-pid, signal)
      return Effect.void
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "ESRCH"
        ? Effect.void
        : Effect.logWarning(`cannot send ${signal} to process group ${pid}: ${errorMessage(error)}`)
    }
  })

// ------------------------------------------------------------------ /proc

/**
 * A task's process as a checkpoint records it, so that a later agent can find it again and tell
 * it from an unrelated process that was given the same pid since.
 */
export interface TaskProcess {
  /** The pid of the task's group leader (its wrapper shell); also the process group id. */
  readonly pid: number
  /** When the process started, in clock ticks since boot (`/proc/<pid>/stat` field 22). */
  readonly startTime: number
  /** The boot it started in (`/proc/sys/kernel/random/boot_id`); "" where unknown. */
  readonly bootId: string
}

let cachedBootId: string | undefined
export const currentBootId = (): string => {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()
    } catch {
      cachedBootId = ""
    }
  }
  return cachedBootId
}

interface ProcStat {
  readonly state: string
  readonly pgrp: number
  readonly startTime: number
}

/** The fields of `/proc/<pid>/stat` we use, or undefined when there is no such process. */
export const procStat = (pid: number): ProcStat | undefined => {
  let stat: string
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  } catch {
    return undefined
  }
  // The command name may hold spaces and ")": the fields resume after the last ")". After it come
  // field 3 (state), 4 (ppid), 5 (pgrp), ... 22 (starttime).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return { state: fields[0]!, pgrp: Number(fields[2]), startTime: Number(fields[19]) }
}

/** `pid` as a checkpoint should record it, read right after the spawn. */
export const taskProcessOf = (pid: number): TaskProcess | undefined => {
  const stat = procStat(pid)
  return stat === undefined ? undefined : { pid, startTime: stat.startTime, bootId: currentBootId() }
}

/** Whether `process` still runs: same boot, same start time (not a recycled pid), not a zombie. */
export const isRunning = (process: TaskProcess): boolean => {
  const boot = currentBootId()
  if (process.bootId !== "" && boot !== "" && process.bootId !== boot) return false
  const stat = procStat(process.pid)
  return stat !== undefined && stat.startTime === process.startTime && stat.state !== "Z" && stat.state !== "X"
}

/**
 * Kills what is left of the group of a task whose leader is gone. Only while no process has the
 * leader's pid: the kernel does not hand out a pid still in use as a group id, so the members
 * found then are the task's own; once the pid is in use again it may lead somebody else's group.
 */
export const killLeftovers = (process: TaskProcess): Effect.Effect<void> =>
  Effect.suspend(() => {
    const stat = procStat(process.pid)
    // No process with that pid, or still our own leader (a zombie nobody reaped yet).
    return stat === undefined || stat.startTime === process.startTime ? signalGroup(process.pid, "SIGKILL") : Effect.void
  })

/** SIGKILLs a recorded task's group: the running task, or what its gone leader left behind. */
export const killGroup = (process: TaskProcess): Effect.Effect<void> =>
  Effect.suspend(() => {
    const boot = currentBootId()
    if (process.bootId !== "" && boot !== "" && process.bootId !== boot) return Effect.void
    return killLeftovers(process)
  })

/**
 * The wrapper of a task launched with `exitStatusFile`, found by its command line (which names
 * that file, unique to the run) among the group leaders on this machine: for a task whose pid
 * never reached the checkpoint because the agent stopped right after spawning it.
 */
export const findWrapper = (exitStatusFile: string): TaskProcess | undefined => {
  const needle = `\0${exitStatusFile}\0`
  let entries: Array<string>
  try {
    entries = fs.readdirSync("/proc")
  } catch {
    return undefined
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    let cmdline: string
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8")
    } catch {
      continue
    }
    if (!cmdline.includes(needle)) continue
    const stat = procStat(pid)
    if (stat !== undefined && stat.pgrp === pid && stat.state !== "Z") {
      return { pid, startTime: stat.startTime, bootId: currentBootId() }
    }
  }
  return undefined
}

/**
 * The exit status the wrapper wrote: undefined while there is none (the command still runs, or
 * the wrapper was killed before it could write; a half-written file counts as none).
 */
export const readExitStatus = (exitStatusFile: string): Termination | undefined => {
  let text: string
  try {
    text = fs.readFileSync(exitStatusFile, "utf8")
  } catch {
    return undefined
  }
  return /^\d{1,3}\n$/.test(text) ? fromShellStatus(Number(text.trim())) : undefined
}

// ------------------------------------------------------------------ launching

/**
 * The wrapper a checkpointed task runs under: a POSIX shell that leads the task's process group,
 * runs the command, writes its exit status to the file named by `$1` and exits with it. It traps
 * the signals a kill sends to the group (the command itself gets the default handlers back), so
 * that it outlives the command and can record how it ended; SIGKILL ends it too, and then there
 * is no status file. Costs one small shell process (about 1.7 MB RSS, 0.3 MB PSS with dash).
 */
const WRAPPER = [
  "trap : HUP INT QUIT TERM USR1 USR2",
  "f=$1",
  "shift",
  "\"$@\"",
  "s=$?",
  "printf '%s\\n' \"$s\" > \"$f\"",
  "exit \"$s\""
].join("\n")

/**
 * The wrapper for a task with resource limits: before the command, it moves itself into the
 * cgroups named after the exit status file (`$2` gives how many `cgroup.procs` files follow), so
 * that the command and everything it forks start inside. A failed move ends the task with
 * status 125 before the command runs.
 */
const JOINING_WRAPPER = [
  "trap : HUP INT QUIT TERM USR1 USR2",
  "f=$1",
  "shift",
  "n=$1",
  "shift",
  "while [ \"$n\" -gt 0 ]; do",
  "  echo $$ > \"$1\" || { printf '125\\n' > \"$f\"; exit 125; }",
  "  shift",
  "  n=$((n - 1))",
  "done",
  "\"$@\"",
  "s=$?",
  "printf '%s\\n' \"$s\" > \"$f\"",
  "exit \"$s\""
].join("\n")

/**
 * Mirrors the spawn errors Node reports for a missing or non-executable program, for a task that
 * runs behind the wrapper (whose shell would only report it later, as exit status 127 or 126).
 */
const checkExecutable = (file: string, cwd: string, env: Record<string, string>): string | undefined => {
  const usable = (candidate: string): "ok" | "ENOENT" | "EACCES" => {
    try {
      if (!fs.statSync(candidate).isFile()) return "EACCES"
      fs.accessSync(candidate, fs.constants.X_OK)
      return "ok"
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "EACCES" ? "EACCES" : "ENOENT"
    }
  }
  if (file.includes("/")) {
    const result = usable(path.resolve(cwd, file))
    return result === "ok" ? undefined : `spawn ${file} ${result}`
  }
  let denied = false
  for (const dir of (env.PATH ?? "/usr/bin:/bin").split(":")) {
    const result = usable(path.resolve(cwd, dir, file))
    if (result === "ok") return undefined
    if (result === "EACCES") denied = true
  }
  return `spawn ${file} ${denied ? "EACCES" : "ENOENT"}`
}

/** A Unix user a task runs as. */
export interface User {
  readonly name: string
  readonly uid: number
  readonly gid: number
  readonly home: string
}

const parsePasswd = (line: string): User | undefined => {
  const fields = line.trim().split(":")
  if (fields.length < 7) return undefined
  const uid = Number(fields[2])
  const gid = Number(fields[3])
  return Number.isInteger(uid) && Number.isInteger(gid) ? { name: fields[0]!, uid, gid, home: fields[5]! } : undefined
}

/** Looks `name` up (NSS through `getent`, else `/etc/passwd`); undefined when there is no such user. */
export const lookupUser = (name: string): User | undefined => {
  try {
    return parsePasswd(execFileSync("getent", ["passwd", name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }))
  } catch (error) {
    // getent exits 2 for "no such user"; anything else (no getent) falls back to the file.
    if ((error as { status?: number }).status === 2) return undefined
  }
  try {
    for (const line of fs.readFileSync("/etc/passwd", "utf8").split("\n")) {
      const user = parsePasswd(line)
      if (user?.name === name) return user
    }
  } catch {
    // No passwd file: no such user.
  }
  return undefined
}

let setprivPath: string | undefined | null = null
const findSetpriv = (): string | undefined => {
  if (setprivPath === null) {
    setprivPath = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"].find((candidate) => fs.existsSync(candidate))
  }
  return setprivPath
}

/**
 * How to spawn `file args` as `user` outside the exit-status wrapper (a task's health and
 * readiness commands): through setpriv with the user's groups, as the task itself runs, else
 * (no setpriv) with Node's uid and gid (which drops the supplementary groups). The environment
 * gets the user's USER, LOGNAME and HOME unless it names them.
 */
export const spawnAsUser = (
  user: User,
  file: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>
): { readonly file: string; readonly args: ReadonlyArray<string>; readonly env: Record<string, string>; readonly ids: { readonly uid?: number; readonly gid?: number } } => {
  const userEnv = { USER: user.name, LOGNAME: user.name, HOME: user.home, ...env }
  const setpriv = findSetpriv()
  return setpriv === undefined
    ? { file, args, env: userEnv, ids: { uid: user.uid, gid: user.gid } }
    : { file: setpriv, args: [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--init-groups", "--", file, ...args], env: userEnv, ids: {} }
}

/**
 * The user to run a task as, from `command.user` or else `fallback` (the framework's user), or
 * undefined to run as the agent's own user (no user named, or the agent's user named). Refused,
 * naming the field, when the user does not exist or the agent cannot switch to it.
 */
export const resolveUser = (command: v1.CommandInfo, fallback: string | undefined): User | undefined | string => {
  const field = command.user !== "" ? "command.user" : "framework.user"
  const name = command.user !== "" ? command.user : fallback ?? ""
  if (name === "") return undefined
  const user = lookupUser(name)
  if (user === undefined) return `${field}: no user "${name}" exists on this agent`
  const self = process.getuid?.()
  if (self === user.uid) return undefined
  if (self !== 0) return `${field}: the agent cannot run tasks as "${name}": it does not run as root`
  return user
}

/** A task's process: one this executor spawned, or one an earlier executor did (re-attached). */
export interface TaskHandle {
  /** The group leader's pid (the process group id). */
  readonly pid: number
  /** Whether the group leader is known to have ended. */
  readonly hasExited: () => boolean
  /** Waits for the group leader to end. */
  readonly awaitExit: Effect.Effect<Termination>
  /** Once the leader ended: kills whatever it left behind in its group. */
  readonly killLeftovers: Effect.Effect<void>
}

/** Whether the process has ended; Node sets these before it emits "exit". */
const childExited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null

const spawnedHandle = (child: ChildProcess, wrapped: boolean): TaskHandle => {
  const termination = (code: number | null, signal: NodeJS.Signals | null): Termination =>
    wrapped && code !== null ? fromShellStatus(code) : { code, signal }
  return {
    pid: child.pid!,
    hasExited: () => childExited(child),
    awaitExit: Effect.callback<Termination>((resume) => {
      if (childExited(child)) {
        resume(Effect.succeed(termination(child.exitCode, child.signalCode)))
        return
      }
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => resume(Effect.succeed(termination(code, signal)))
      child.once("exit", onExit)
      return Effect.sync(() => child.off("exit", onExit))
    }),
    killLeftovers: signalGroup(child.pid!, "SIGKILL")
  }
}

/**
 * A handle on a task started by an earlier executor (before an agent restart): its parent is
 * gone, so nobody here can wait() for it; its end is noticed by polling /proc, and how it ended is
 * read from the status file its wrapper writes.
 */
export const attach = (
  process: TaskProcess,
  exitStatusFile: string,
  pollInterval: Duration.Input,
  /** Whether this executor sent the group SIGKILL (which leaves no status file). */
  sentKill: () => boolean
): TaskHandle => {
  let exited = false
  const hasExited = () => exited || (exited = !isRunning(process))
  return {
    pid: process.pid,
    hasExited,
    awaitExit: Effect.gen(function*() {
      while (!hasExited()) yield* Effect.sleep(pollInterval)
      return readExitStatus(exitStatusFile) ?? (sentKill() ? { code: null, signal: "SIGKILL" } : { code: null, signal: null })
    }),
    killLeftovers: killLeftovers(process)
  }
}

/**
 * Starts `command` in `sandbox` as the leader of a new process group (so one signal reaches
 * everything it starts), with its output appended to the sandbox files `stdout` and `stderr`.
 * With `exitStatusFile` the command runs behind the wrapper shell (see WRAPPER), so that its exit
 * status outlives this process; `arguments[0]` is then not passed as argv[0] (a POSIX shell
 * cannot set it). Succeeds once the process runs.
 */
export const start = (options: {
  readonly taskId: string
  readonly sandbox: string
  readonly command: v1.CommandInfo
  readonly env: Record<string, string>
  readonly exitStatusFile?: string | undefined
  /** Where the files `stdout` and `stderr` go (default the sandbox; a task of a group has its own). */
  readonly outputDir?: string | undefined
  /** Run the command as this user (the agent runs as root); its sandbox is handed to the user. */
  readonly user?: User | undefined
  /** `cgroup.procs` files the task joins before its command runs (resource limits). */
  readonly joinFiles?: ReadonlyArray<string> | undefined
}): Effect.Effect<{ readonly child: ChildProcess; readonly handle: TaskHandle }, LaunchError> =>
  Effect.callback<{ readonly child: ChildProcess; readonly handle: TaskHandle }, LaunchError>((resume) => {
    const { command, sandbox, taskId, exitStatusFile } = options
    const fail = (error: unknown) => resume(Effect.fail(new LaunchError({ taskId, message: errorMessage(error) })))
    const fds: Array<number> = []
    let child: ChildProcess
    try {
      const outputDir = options.outputDir ?? sandbox
      const user = options.user
      fds.push(fs.openSync(path.join(outputDir, "stdout"), "a"), fs.openSync(path.join(outputDir, "stderr"), "a"))
      let env = options.env
      if (user !== undefined) {
        // The task works in its sandbox as its user: the directory and its output files are its.
        for (const owned of new Set([sandbox, outputDir, path.join(outputDir, "stdout"), path.join(outputDir, "stderr")])) {
          fs.chownSync(owned, user.uid, user.gid)
        }
        env = { USER: user.name, LOGNAME: user.name, HOME: user.home, ...options.env }
      }
      const [file, args] = command.shell
        ? ["/bin/sh", ["-c", command.value]]
        : [command.value, command.arguments.slice(1)]
      const spawnOptions = {
        cwd: sandbox,
        env,
        detached: true,
        stdio: ["ignore", fds[0]!, fds[1]!] as Array<"ignore" | number>
      }
      if (exitStatusFile !== undefined) {
        const problem = command.shell ? undefined : checkExecutable(file, sandbox, env)
        if (problem !== undefined) throw new Error(problem)
        fs.rmSync(exitStatusFile, { force: true })
        // The wrapper stays root so that it can write the exit status where the task cannot
        // touch it; only the command drops to the user (setpriv, with the user's groups).
        let switchUser: Array<string> = []
        if (user !== undefined) {
          const setpriv = findSetpriv()
          if (setpriv === undefined) throw new Error(`running a task as "${user.name}" needs setpriv (util-linux) on the agent`)
          switchUser = [setpriv, `--reuid=${user.uid}`, `--regid=${user.gid}`, "--init-groups", "--"]
        }
        const join = options.joinFiles ?? []
        child = join.length === 0
          ? spawn("/bin/sh", ["-c", WRAPPER, "berth-task", exitStatusFile, ...switchUser, file, ...args], spawnOptions)
          : spawn("/bin/sh", ["-c", JOINING_WRAPPER, "berth-task", exitStatusFile, String(join.length), ...join, ...switchUser, file, ...args], spawnOptions)
      } else {
        const argv0 = command.shell ? undefined : command.arguments[0]
        child = spawn(file, args, {
          ...spawnOptions,
          ...(user === undefined ? {} : { uid: user.uid, gid: user.gid }),
          ...(argv0 !== undefined && argv0 !== "" ? { argv0 } : {})
        })
      }
    } catch (error) {
      fail(error)
      return
    } finally {
      // The child has its own copies once spawn() returns.
      for (const fd of fds) fs.closeSync(fd)
    }
    // Without an "error" listener a later error event would crash the whole agent.
    child.on("error", (error) => {
      if (child.pid === undefined) fail(error)
    })
    // A task may outlive this process (a checkpointing agent that stops): never wait for it.
    child.unref()
    child.once("spawn", () => {
      // Unwrapped, the task joins its cgroups just after the spawn (the wrapper does it before).
      if (exitStatusFile === undefined) {
        for (const file of options.joinFiles ?? []) {
          try {
            fs.writeFileSync(file, String(child.pid))
          } catch {
            // The cgroup went away meanwhile: the task runs without its limits.
          }
        }
      }
      resume(Effect.succeed({ child, handle: spawnedHandle(child, exitStatusFile !== undefined) }))
    })
    return Effect.suspend(() => child.pid === undefined ? Effect.void : signalGroup(child.pid, "SIGKILL"))
  })

/** The default interval at which a re-attached task is polled for its exit. */
export const defaultPollInterval: Duration.Input = Duration.seconds(1)
