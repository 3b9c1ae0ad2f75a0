import type { Attempt } from "./types.ts"

/** The offer must be allocated to the requirement's role (every resource in it is). */
export const check = (a: Attempt): string | undefined =>
  a.req.role === undefined || a.req.role === a.view.role
    ? undefined
    : `offer is allocated to role "${a.view.role}", the requirement needs role "${a.req.role}"`
