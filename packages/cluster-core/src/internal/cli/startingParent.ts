/**
 * The parent `--exit-with-parent` watches, read when the process starts: `berth` imports this
 * module first, so the read happens before the daemons' modules load (a parent that dies while
 * they load has already been replaced by init by the time the watch begins).
 *
 * A launcher can close the remaining window (a parent that dies before this child's Node even
 * runs) by naming itself in `BERTH_PARENT_PID`, as `berth dev` does: when that pid is no longer
 * the parent, the parent is already gone. The variable is removed so that tasks and executors
 * the daemon starts do not inherit it.
 */
const named = Number(process.env.BERTH_PARENT_PID)
delete process.env.BERTH_PARENT_PID

export const startingParent: number = Number.isInteger(named) && named > 0 ? named : process.ppid
