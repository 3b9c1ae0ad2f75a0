/**
 * Facts about task states that every side of the API agrees on.
 */
import { TaskState } from "./gen/berth/v1/tasks.ts"

const terminal: ReadonlySet<TaskState> = new Set<TaskState>([
  TaskState.FINISHED,
  TaskState.FAILED,
  TaskState.KILLED,
  TaskState.ERROR,
  TaskState.DROPPED,
  TaskState.GONE,
  TaskState.GONE_BY_OPERATOR
])

/**
 * A terminal state never changes again. UNREACHABLE and UNKNOWN are not terminal: a partitioned
 * task may come back.
 *
 * @example
 * ```ts
 * TaskStates.isTerminal(v1.TaskState.KILLED) // true
 * ```
 */
export const isTerminal = (state: TaskState): boolean => terminal.has(state)

const names = Object.fromEntries(Object.entries(TaskState).map(([name, value]) => [value, name])) as Record<
  number,
  string
>

/** The state's name as in the proto, such as "TASK_RUNNING" style "RUNNING". */
export const name = (state: TaskState): string => names[state] ?? `UNKNOWN(${state})`
