import { Effect, Schedule } from "effect"

/**
 * Completes once the process that started this one has died. A dead parent's children are
 * re-parented (to init or a subreaper), so `process.ppid` — read afresh from the kernel on every
 * access — changes; polling it needs no cooperation from the parent (a SIGKILLed one cannot send
 * anything) and no pipe that every spawner would have to set up.
 *
 * `parent` is the pid read when the process started (see startingParent.ts): a parent that died
 * before this runs is noticed on the first poll.
 *
 * `berth <daemon> --exit-with-parent` races its program against this: when it wins, the program is
 * interrupted, its scope closes (agents stop their tasks and executors as on SIGTERM) and the
 * process exits 0.
 */
export const parentDied = (parent: number, pollMillis = 500): Effect.Effect<number> =>
  Effect.sync(() => process.ppid).pipe(
    Effect.repeat({ schedule: Schedule.spaced(`${pollMillis} millis`), until: (ppid) => ppid !== parent }),
    Effect.as(parent)
  )
