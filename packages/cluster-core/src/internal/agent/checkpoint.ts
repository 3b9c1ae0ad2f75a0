import { v1 } from "@berth/proto"
import type { CommandExecutor } from "@berth/sdk-executor"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as UpdateLog from "./updateLog.ts"

/**
 * What the agent checkpoints about the tasks it runs, so that a restarted agent (even after
 * SIGKILL) can take them over. Beside the sandboxes, under `<work-dir>/meta`:
 *
 * ```
 * meta/agent.json                                         agent id and resources (volumes.ts)
 * meta/frameworks/<fid>/executors/<eid>/runs/<run>/
 *   run.json        the framework, the task, its sandbox and containerizer (before the launch)
 *   process.json    the task's process: pid, start time, boot id (before RUNNING is reported)
 *   exit_status     the command's exit status, written by the task's wrapper shell when it ends
 *   updates         the status update log: updates (fsync'd before sending) and acknowledgements
 * ```
 *
 * The sandbox of the same run is `<work-dir>/frameworks/<fid>/executors/<eid>/runs/<run>`.
 *
 * A task group (LAUNCH_GROUP) is one run of its executor: `run.json` holds the executor and every
 * task of the group, and each task has the files above (but run.json) in `tasks/<taskId>/` of the
 * run's checkpoint directory. The group's tasks share the run's sandbox. Further groups launched
 * into the running executor (same executor id) are recorded as `groups/<n>.json` (n = 1, 2, ...;
 * their tasks, written whole before the executor hears of them), so a restarted agent gives every
 * group back to the executor with the group policy per group. A run without `groups/` (written
 * before groups could be added) is one group.
 *
 * A custom executor's run (`kind: "custom"`) holds the executor; `process.json` and `exit_status`
 * are the executor program's; each task it was given has `tasks/<taskId>/task.json` (written
 * before the launch reaches the executor) and its `updates` log.
 */
export interface Run {
  readonly frameworkId: string
  readonly executorId: string
  readonly runId: string
  readonly framework: v1.FrameworkInfo
  readonly task: v1.TaskInfo
  readonly containerizer: "process" | "docker"
}

export const metaDir = (workDir: string) => path.join(workDir, "meta")

export const runDir = (workDir: string, run: Pick<Run, "frameworkId" | "executorId" | "runId">): string =>
  path.join(metaDir(workDir), "frameworks", run.frameworkId, "executors", run.executorId, "runs", run.runId)

export const sandboxDir = (workDir: string, run: Pick<Run, "frameworkId" | "executorId" | "runId">): string =>
  path.join(workDir, "frameworks", run.frameworkId, "executors", run.executorId, "runs", run.runId)

export const exitStatusFile = (dir: string) => path.join(dir, "exit_status")
export const updatesFile = (dir: string) => path.join(dir, "updates")
const runFile = (dir: string) => path.join(dir, "run.json")
const processFile = (dir: string) => path.join(dir, "process.json")

/** Writes `content` to `file` so that a crash leaves the whole file or none of it. */
const writeAtomically = async (file: string, content: string): Promise<void> => {
  const temp = `${file}.tmp`
  const handle = await fs.open(temp, "w")
  try {
    await handle.writeFile(content)
    await handle.sync()
  } finally {
    await handle.close()
  }
  await fs.rename(temp, file)
}

/** Records a run before anything of it starts; returns its checkpoint directory. */
export const writeRun = async (workDir: string, run: Run): Promise<string> => {
  const dir = runDir(workDir, run)
  await fs.mkdir(dir, { recursive: true })
  await writeAtomically(
    runFile(dir),
    JSON.stringify({
      frameworkId: run.frameworkId,
      executorId: run.executorId,
      runId: run.runId,
      containerizer: run.containerizer,
      framework: v1.FrameworkInfo.toJSON(run.framework),
      task: v1.TaskInfo.toJSON(run.task)
    })
  )
  return dir
}

export const writeProcess = (dir: string, process: CommandExecutor.TaskProcess): Promise<void> =>
  writeAtomically(processFile(dir), JSON.stringify({ pid: process.pid, startTime: process.startTime, bootId: process.bootId }))

/** A task group run by one executor (LAUNCH_GROUP). */
export interface GroupRun {
  readonly frameworkId: string
  readonly executorId: string
  readonly runId: string
  readonly framework: v1.FrameworkInfo
  readonly executor: v1.ExecutorInfo
  readonly tasks: ReadonlyArray<v1.TaskInfo>
}

/** The checkpoint directory of one task of a group, inside its group's run directory. */
export const groupTaskDir = (dir: string, taskId: string) => path.join(dir, "tasks", taskId)

/** Records a task group before anything of it starts; returns its checkpoint directory. */
export const writeGroupRun = async (workDir: string, run: GroupRun): Promise<string> => {
  const dir = runDir(workDir, run)
  for (const task of run.tasks) await fs.mkdir(groupTaskDir(dir, task.taskId), { recursive: true })
  await writeAtomically(
    runFile(dir),
    JSON.stringify({
      kind: "group",
      frameworkId: run.frameworkId,
      executorId: run.executorId,
      runId: run.runId,
      framework: v1.FrameworkInfo.toJSON(run.framework),
      executor: v1.ExecutorInfo.toJSON(run.executor),
      tasks: run.tasks.map((task) => v1.TaskInfo.toJSON(task))
    })
  )
  return dir
}

/** The file of the `index`-th group added to a running group executor (run.json holds group 0). */
const addedGroupFile = (dir: string, index: number) => path.join(dir, "groups", `${index}.json`)

/**
 * Records a further task group given to a running group executor (before the executor hears of
 * it), as its `index`-th group (1, 2, ...): the tasks' checkpoint directories, then the group's
 * file, whole or not at all.
 */
export const writeAddedGroup = async (dir: string, index: number, tasks: ReadonlyArray<v1.TaskInfo>): Promise<void> => {
  for (const task of tasks) await fs.mkdir(groupTaskDir(dir, task.taskId), { recursive: true })
  await fs.mkdir(path.dirname(addedGroupFile(dir, index)), { recursive: true })
  await writeAtomically(addedGroupFile(dir, index), JSON.stringify({ tasks: tasks.map((task) => v1.TaskInfo.toJSON(task)) }))
}

/** A custom executor's run: its program, and the tasks given to it (each in `tasks/<taskId>/`). */
export interface CustomRun {
  readonly frameworkId: string
  readonly executorId: string
  readonly runId: string
  readonly framework: v1.FrameworkInfo
  readonly executor: v1.ExecutorInfo
  /** The secret the executor authenticates its calls with (BERTH_EXECUTOR_TOKEN). */
  readonly token: string
}

/** Records a custom executor's run before its program starts; returns its checkpoint directory. */
export const writeCustomRun = async (workDir: string, run: CustomRun): Promise<string> => {
  const dir = runDir(workDir, run)
  await fs.mkdir(path.join(dir, "tasks"), { recursive: true })
  await writeAtomically(
    runFile(dir),
    JSON.stringify({
      kind: "custom",
      frameworkId: run.frameworkId,
      executorId: run.executorId,
      runId: run.runId,
      token: run.token,
      framework: v1.FrameworkInfo.toJSON(run.framework),
      executor: v1.ExecutorInfo.toJSON(run.executor)
    })
  )
  return dir
}

/** Records a task given to a custom executor (before the executor hears of it); returns its directory. */
export const writeCustomTask = async (dir: string, task: v1.TaskInfo): Promise<string> => {
  const taskDir = groupTaskDir(dir, task.taskId)
  await fs.mkdir(taskDir, { recursive: true })
  await writeAtomically(path.join(taskDir, "task.json"), JSON.stringify(v1.TaskInfo.toJSON(task)))
  return taskDir
}

/** A custom executor's run after a restart: its process, and each task with its whole update log. */
export interface RecoveredCustom {
  readonly run: CustomRun
  readonly dir: string
  readonly process: CommandExecutor.TaskProcess | undefined
  readonly tasks: ReadonlyArray<{
    readonly task: v1.TaskInfo
    readonly dir: string
    readonly records: ReadonlyArray<UpdateLog.Record>
    readonly log: UpdateLog.Replayed
  }>
}

/** A task group as the checkpoint has it after a restart: each task with its own log and process. */
export interface RecoveredGroup {
  readonly run: GroupRun
  readonly dir: string
  /** The task ids of each group the executor was given, in launch order (run.json's first). */
  readonly groups: ReadonlyArray<ReadonlyArray<string>>
  readonly tasks: ReadonlyArray<{
    readonly task: v1.TaskInfo
    readonly dir: string
    readonly process: CommandExecutor.TaskProcess | undefined
    readonly log: UpdateLog.Replayed
  }>
}

const readProcess = async (dir: string): Promise<CommandExecutor.TaskProcess | undefined> => {
  const json = await readJson(processFile(dir)) as { pid: number; startTime: number; bootId: string } | undefined
  return json === undefined ? undefined : { pid: json.pid, startTime: json.startTime, bootId: json.bootId ?? "" }
}

/** A run as the checkpoint has it after a restart. */
export interface Recovered {
  readonly run: Run
  readonly dir: string
  readonly process: CommandExecutor.TaskProcess | undefined
  readonly log: UpdateLog.Replayed
}

const readJson = async (file: string): Promise<unknown> => {
  try {
    return JSON.parse(await fs.readFile(file, "utf8"))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw error
  }
}

const listDir = async (dir: string): Promise<Array<string>> => {
  try {
    return (await fs.readdir(dir)).filter((name) => !name.startsWith("."))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return []
    throw error
  }
}

/**
 * Every run in the checkpoint. A run whose record cannot be read (the agent died while writing
 * it: nothing of it was started) is returned in `unreadable`, with why; its updates log, if any,
 * is read and its torn tail cut off like every other.
 */
export const readRuns = async (workDir: string): Promise<{
  readonly runs: ReadonlyArray<Recovered>
  readonly groups: ReadonlyArray<RecoveredGroup>
  readonly customs: ReadonlyArray<RecoveredCustom>
  readonly unreadable: ReadonlyArray<{ readonly dir: string; readonly reason: string }>
  /** Logs that ended in a torn or corrupt record (dropped). */
  readonly repaired: ReadonlyArray<{ readonly dir: string; readonly problem: string }>
}> => {
  const runs: Array<Recovered> = []
  const groups: Array<RecoveredGroup> = []
  const customs: Array<RecoveredCustom> = []
  const unreadable: Array<{ dir: string; reason: string }> = []
  const repaired: Array<{ dir: string; problem: string }> = []
  const frameworksDir = path.join(metaDir(workDir), "frameworks")
  for (const frameworkId of await listDir(frameworksDir)) {
    const executorsDir = path.join(frameworksDir, frameworkId, "executors")
    for (const executorId of await listDir(executorsDir)) {
      const runsDir = path.join(executorsDir, executorId, "runs")
      for (const runId of await listDir(runsDir)) {
        const dir = path.join(runsDir, runId)
        try {
          const group = await readJson(runFile(dir)) as
            | { kind?: string; frameworkId: string; executorId: string; runId: string; framework: unknown; executor: unknown; tasks: Array<unknown>; token?: string }
            | undefined
          if (group?.kind === "custom") {
            const tasks: Array<RecoveredCustom["tasks"][number]> = []
            for (const taskId of await listDir(path.join(dir, "tasks"))) {
              const taskDir = groupTaskDir(dir, taskId)
              const json = await readJson(path.join(taskDir, "task.json"))
              // Not recorded whole: the executor never heard of it.
              if (json === undefined) continue
              const parsed = await UpdateLog.read(updatesFile(taskDir))
              if (parsed.problem !== undefined) repaired.push({ dir: taskDir, problem: parsed.problem })
              tasks.push({ task: v1.TaskInfo.fromJSON(json), dir: taskDir, records: parsed.records, log: UpdateLog.replay(parsed.records) })
            }
            customs.push({
              run: {
                frameworkId: group.frameworkId,
                executorId: group.executorId,
                runId: group.runId,
                framework: v1.FrameworkInfo.fromJSON(group.framework),
                executor: v1.ExecutorInfo.fromJSON(group.executor),
                token: group.token ?? ""
              },
              dir,
              process: await readProcess(dir),
              tasks
            })
            continue
          }
          if (group?.kind === "group") {
            const tasks: Array<RecoveredGroup["tasks"][number]> = []
            // run.json holds the first group; groups added to the running executor follow in order.
            const lists: Array<Array<unknown>> = [group.tasks]
            const added = (await listDir(path.join(dir, "groups")))
              .map((name) => /^(\d+)\.json$/.exec(name))
              .filter((match) => match !== null)
              .map((match) => Number(match[1]))
              .sort((a, b) => a - b)
            for (const index of added) {
              const json = await readJson(addedGroupFile(dir, index)) as { tasks?: Array<unknown> } | undefined
              if (json?.tasks !== undefined && json.tasks.length > 0) lists.push(json.tasks)
            }
            const taskIds: Array<Array<string>> = []
            for (const list of lists) {
              const ids: Array<string> = []
              for (const json of list) {
                const task = v1.TaskInfo.fromJSON(json)
                const taskDir = groupTaskDir(dir, task.taskId)
                const parsed = await UpdateLog.read(updatesFile(taskDir))
                if (parsed.problem !== undefined) repaired.push({ dir: taskDir, problem: parsed.problem })
                tasks.push({ task, dir: taskDir, process: await readProcess(taskDir), log: UpdateLog.replay(parsed.records) })
                ids.push(task.taskId)
              }
              taskIds.push(ids)
            }
            groups.push({
              run: {
                frameworkId: group.frameworkId,
                executorId: group.executorId,
                runId: group.runId,
                framework: v1.FrameworkInfo.fromJSON(group.framework),
                executor: v1.ExecutorInfo.fromJSON(group.executor),
                tasks: tasks.filter((t) => taskIds[0]!.includes(t.task.taskId)).map((t) => t.task)
              },
              dir,
              groups: taskIds,
              tasks
            })
            continue
          }
          const parsed = await UpdateLog.read(updatesFile(dir))
          if (parsed.problem !== undefined) repaired.push({ dir, problem: parsed.problem })
          const json = await readJson(runFile(dir)) as
            | { frameworkId: string; executorId: string; runId: string; containerizer: string; framework: unknown; task: unknown }
            | undefined
          if (json === undefined) {
            unreadable.push({ dir, reason: "no run.json" })
            continue
          }
          const processJson = await readJson(processFile(dir)) as { pid: number; startTime: number; bootId: string } | undefined
          runs.push({
            run: {
              frameworkId: json.frameworkId,
              executorId: json.executorId,
              runId: json.runId,
              containerizer: json.containerizer === "docker" ? "docker" : "process",
              framework: v1.FrameworkInfo.fromJSON(json.framework),
              task: v1.TaskInfo.fromJSON(json.task)
            },
            dir,
            process: processJson === undefined
              ? undefined
              : { pid: processJson.pid, startTime: processJson.startTime, bootId: processJson.bootId ?? "" },
            log: UpdateLog.replay(parsed.records)
          })
        } catch (error) {
          unreadable.push({ dir, reason: (error as Error).message })
        }
      }
    }
  }
  return { runs, groups, customs, unreadable, repaired }
}
