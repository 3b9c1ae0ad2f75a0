// Marathon's launch backoff: after a failed (or finished) task the next launch of that app waits
// backoffSeconds × backoffFactor^(failures-1), capped at maxLaunchDelaySeconds. A new version
// or DELETE /v2/queue/{id}/delay resets it.

export interface Backoff {
  readonly failures: number
  /** Epoch millis before which no new task of the app is launched. */
  readonly until: number
}

export const initial: Backoff = { failures: 0, until: 0 }

export const delaySeconds = (app: { readonly backoffSeconds: number; readonly backoffFactor: number; readonly maxLaunchDelaySeconds: number }, failures: number): number =>
  failures <= 0 ? 0 : Math.min(app.maxLaunchDelaySeconds, app.backoffSeconds * Math.pow(app.backoffFactor, failures - 1))

export const fail = (
  app: { readonly backoffSeconds: number; readonly backoffFactor: number; readonly maxLaunchDelaySeconds: number },
  current: Backoff,
  now: number
): Backoff => {
  const failures = current.failures + 1
  return { failures, until: now + delaySeconds(app, failures) * 1000 }
}
