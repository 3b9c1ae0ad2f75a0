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
export * as ServiceSpec from "./ServiceSpec.ts"
export * as Plan from "./Plan.ts"
export * as SchedulerEvents from "./SchedulerEvents.ts"
export * as OfferManager from "./OfferManager.ts"
export * as TaskLifecycle from "./TaskLifecycle.ts"
export * as FrameworkIdentity from "./FrameworkIdentity.ts"
export * as ServiceScheduler from "./ServiceScheduler.ts"
export * as OperatorHttp from "./OperatorHttp.ts"
