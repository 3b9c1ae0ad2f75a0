import type { Range } from "../gen/berth/v1/resources.ts"

/** Sorts and merges overlapping or adjacent ranges. */
export const normalize = (ranges: ReadonlyArray<Range>): Array<Range> => {
  const sorted = [...ranges].filter((r) => r.begin <= r.end).sort((a, b) => a.begin - b.begin)
  const out: Array<Range> = []
  for (const range of sorted) {
    const last = out.at(-1)
    if (last !== undefined && range.begin <= last.end + 1) {
      last.end = Math.max(last.end, range.end)
    } else {
      out.push({ begin: range.begin, end: range.end })
    }
  }
  return out
}

export const union = (a: ReadonlyArray<Range>, b: ReadonlyArray<Range>): Array<Range> => normalize([...a, ...b])

export const difference = (a: ReadonlyArray<Range>, b: ReadonlyArray<Range>): Array<Range> => {
  let current = normalize(a)
  for (const cut of normalize(b)) {
    const next: Array<Range> = []
    for (const range of current) {
      if (cut.end < range.begin || cut.begin > range.end) {
        next.push(range)
        continue
      }
      if (cut.begin > range.begin) next.push({ begin: range.begin, end: cut.begin - 1 })
      if (cut.end < range.end) next.push({ begin: cut.end + 1, end: range.end })
    }
    current = next
  }
  return current
}

export const contains = (have: ReadonlyArray<Range>, want: ReadonlyArray<Range>): boolean =>
  difference(want, have).length === 0
