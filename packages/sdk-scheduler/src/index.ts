/**
 * `@berth/sdk-scheduler`: the Effect SDK for Berth framework schedulers.
 *
 * @packageDocumentation
 */
export * as SchedulerSession from "./SchedulerSession.ts"
export * as SchedulerError from "./SchedulerError.ts"
export * as Sandbox from "./Sandbox.ts"
export * as Requirement from "./Requirement.ts"
export * as Placement from "./Placement.ts"
